//! Everything a new device needs, written to a folder: the agent's configuration with its id,
//! broker list and keys (its MAC key and the master's public keys, which the master's API hands
//! out: there is no offline provisioning), and (optionally) fresh broker credentials with the
//! line the broker's password file needs. `tetherctl provision` calls this; the folder is
//! copied to the device (see `tests/hil/`) or packed with `--tar`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use tether_core::topic::{validate_id, validate_prefix};

use crate::passwords::MASTER_USER;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    /// `host:port`, in the order the agent tries them.
    pub brokers: Vec<String>,
    pub prefix: String,
    /// Generate a broker user (the agent id) and password.
    pub credentials: bool,
    pub keys: AgentKeys,
}

/// The keys an agent is configured with, as the master's API returns them (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKeys {
    pub agent_key: String,
    pub master_keys: Vec<String>,
}

#[derive(Debug)]
pub enum ProvisionError {
    Invalid(String),
    Io(io::Error),
}

impl std::fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(why) => f.write_str(why),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProvisionError {}

impl From<io::Error> for ProvisionError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub files: Vec<PathBuf>,
    /// The generated password, if credentials were asked for (also in the files).
    pub password: Option<String>,
}

fn check(req: &Request) -> Result<(), ProvisionError> {
    validate_id(&req.id)
        .map_err(|e| ProvisionError::Invalid(format!("agent id `{}`: {e}", req.id)))?;
    if req.id == MASTER_USER {
        return Err(ProvisionError::Invalid(format!(
            "agent id `{}` is the master's own broker user",
            req.id
        )));
    }
    validate_prefix(&req.prefix)
        .map_err(|e| ProvisionError::Invalid(format!("prefix `{}`: {e}", req.prefix)))?;
    tether_core::auth::parse_hex::<32>(&req.keys.agent_key)
        .map_err(|e| ProvisionError::Invalid(format!("agent key: {e}")))?;
    if req.keys.master_keys.is_empty() {
        return Err(ProvisionError::Invalid(
            "at least one master key is needed".into(),
        ));
    }
    for key in &req.keys.master_keys {
        let key = tether_core::auth::parse_hex::<32>(key)
            .map_err(|e| ProvisionError::Invalid(format!("master key: {e}")))?;
        tether_core::auth::MasterKeys::from_keys(&[key])
            .map_err(|e| ProvisionError::Invalid(format!("master key: {e}")))?;
    }
    if req.brokers.is_empty() {
        return Err(ProvisionError::Invalid(
            "at least one --broker HOST:PORT is needed".into(),
        ));
    }
    for b in &req.brokers {
        let ok = b.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok || b.contains(['"', '\\', '\n']) {
            return Err(ProvisionError::Invalid(format!(
                "broker `{b}` is not HOST:PORT"
            )));
        }
    }
    Ok(())
}

/// A password from the kernel's random pool: 24 characters of [a-z0-9].
fn password() -> io::Result<String> {
    let bytes: [u8; 24] = crate::keys::random_bytes()?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// The agent configuration for `req`, as `/etc/tether/agent.toml`.
pub fn agent_toml(req: &Request, password: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Tether agent configuration for {}, written by `tetherctl provision`.",
        req.id
    );
    let _ = writeln!(s, "id = \"{}\"", req.id);
    let brokers: Vec<String> = req.brokers.iter().map(|b| format!("\"{b}\"")).collect();
    let _ = writeln!(s, "brokers = [{}]", brokers.join(", "));
    let _ = writeln!(s, "prefix = \"{}\"", req.prefix);
    s.push_str("state_dir = \"/var/lib/tether\"\nwork_dir = \"/var/lib/tether/work\"\n");
    let masters: Vec<String> = req
        .keys
        .master_keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect();
    let _ = writeln!(s, "master_keys = [{}]", masters.join(", "));
    let _ = writeln!(s, "agent_key = \"{}\"", req.keys.agent_key);
    if let Some(pw) = password {
        let _ = writeln!(s, "username = \"{}\"\npassword = \"{pw}\"", req.id);
    }
    s
}

/// Writes the device folder under `dir` (created if missing).
pub fn write(dir: &Path, req: &Request) -> Result<Provisioned, ProvisionError> {
    check(req)?;
    let password = req.credentials.then(password).transpose()?;
    let etc = dir.join("etc/tether");
    std::fs::create_dir_all(&etc)?;
    let mut files = Vec::new();
    let config = etc.join("agent.toml");
    std::fs::write(&config, agent_toml(req, password.as_deref()))?;
    restrict(&config)?;
    files.push(config);
    if let Some(pw) = &password {
        let broker = dir.join("broker");
        std::fs::create_dir_all(&broker)?;
        // Plain `user:password`: `mosquitto_passwd -U FILE` hashes it in place; for the
        // embedded broker, append it to the file `tether-master --broker-passwords` reads.
        let entry = broker.join("passwd-entry");
        std::fs::write(&entry, format!("{}:{pw}\n", req.id))?;
        restrict(&entry)?;
        files.push(entry);
    }
    Ok(Provisioned { files, password })
}

/// Credentials inside: readable by the owner only.
fn restrict(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            id: "pi-7".into(),
            brokers: vec!["10.0.0.2:1883".into(), "backup.lan:1883".into()],
            prefix: "tether".into(),
            credentials: true,
            keys: AgentKeys {
                agent_key: "ab".repeat(32),
                master_keys: vec![
                    tether_core::auth::Hex(
                        &tether_core::auth::SigningKey::from_seed([5; 32])
                            .unwrap()
                            .public_key(),
                    )
                    .to_string(),
                ],
            },
        }
    }

    #[test]
    fn writes_config_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let out = write(dir.path(), &req()).unwrap();
        let pw = out.password.unwrap();
        assert_eq!(pw.len(), 24);
        let toml = std::fs::read_to_string(dir.path().join("etc/tether/agent.toml")).unwrap();
        assert!(toml.contains("id = \"pi-7\""));
        assert!(toml.contains("brokers = [\"10.0.0.2:1883\", \"backup.lan:1883\"]"));
        assert!(toml.contains(&format!("password = \"{pw}\"")));
        assert!(toml.contains(&format!("agent_key = \"{}\"", "ab".repeat(32))));
        assert!(toml.contains("master_keys = [\""));
        let entry = std::fs::read_to_string(dir.path().join("broker/passwd-entry")).unwrap();
        assert_eq!(entry, format!("pi-7:{pw}\n"));
    }

    #[test]
    fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            Request {
                id: "pi/7".into(),
                ..req()
            },
            Request {
                id: MASTER_USER.into(),
                ..req()
            },
            Request {
                brokers: vec![],
                ..req()
            },
            Request {
                brokers: vec!["nohost".into()],
                ..req()
            },
            Request {
                brokers: vec!["h:0".into()],
                ..req()
            },
            Request {
                prefix: "a/#".into(),
                ..req()
            },
            Request {
                keys: AgentKeys {
                    agent_key: "xyz".into(),
                    ..req().keys
                },
                ..req()
            },
            Request {
                keys: AgentKeys {
                    master_keys: vec![],
                    ..req().keys
                },
                ..req()
            },
        ] {
            assert!(
                matches!(write(dir.path(), &bad), Err(ProvisionError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}

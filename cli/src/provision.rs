//! Everything a new device needs, written to a folder: the agent's configuration with its id,
//! broker list and keys (its MAC key and the master's public keys, which the master's API hands
//! out: there is no offline provisioning), and (optionally) fresh broker credentials with the
//! line the broker's password file needs (the password hashed as `mosquitto_passwd` does: the
//! clear one is only in the agent's config); for `mqtts://` brokers, a copy of the CA that
//! signed their certificates. `tetherctl provision` calls this; the folder is copied to the device (see
//! `tests/hil/`) or packed with `--tar`.
//!
//! Broker addresses follow [`tether_core::broker_addr`], the rules the agent checks them with.
//! Files holding secrets are created 0600, so they are never readable by others, not even
//! for a moment; no file is overwritten (a second run needs a fresh folder).

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tether_core::broker_addr::BrokerAddr;
use tether_core::topic::{validate_id, validate_prefix};

use tether_core::topic::MASTER_CLIENT_ID as MASTER_USER;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: String,
    /// `host:port`, `mqtt://host[:port]` or `mqtts://host[:port]`, in the order the agent
    /// tries them.
    pub brokers: Vec<String>,
    /// The CA (PEM) that signed the `mqtts://` brokers' certificates: copied to [`CA_PATH`].
    /// Required with an `mqtts://` broker, refused without one (as the agent does).
    pub ca: Option<PathBuf>,
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

/// Where the agent finds the CA copy (`tls_ca_file`); the folder mirrors the device's root.
pub const CA_PATH: &str = "/etc/tether/ca.pem";

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
    check_brokers(&req.brokers, req.ca.as_deref())
}

/// The broker addresses and the CA flag, by the agent's rules: what `write` would refuse, told
/// before anything else happens (`tetherctl` calls it before asking the master for keys).
pub fn check_brokers(brokers: &[String], ca: Option<&Path>) -> Result<(), ProvisionError> {
    if brokers.is_empty() {
        return Err(ProvisionError::Invalid(
            "at least one --broker HOST:PORT is needed".into(),
        ));
    }
    let mut tls = None;
    for b in brokers {
        let addr = BrokerAddr::parse(b)
            .map_err(|e| ProvisionError::Invalid(format!("broker `{b}`: {e}")))?;
        if addr.tls && tls.is_none() {
            tls = Some(b);
        }
    }
    match (tls, ca) {
        (Some(b), None) => Err(ProvisionError::Invalid(format!(
            "broker `{b}` uses TLS: pass --ca FILE, the CA (PEM) that signed its certificate, \
             for the agent to verify it with"
        ))),
        (None, Some(_)) => Err(ProvisionError::Invalid(
            "--ca is only for mqtts:// brokers, and no --broker is mqtts://".into(),
        )),
        _ => Ok(()),
    }
}

fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    use std::io::Read as _;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A password from the kernel's random pool: 24 characters of [a-z0-9].
fn password() -> io::Result<String> {
    let bytes: [u8; 24] = random_bytes()?;
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
    // Checked addresses hold no quote, backslash or control character; the trim drops the
    // whitespace the parser ignores.
    let brokers: Vec<String> = req
        .brokers
        .iter()
        .map(|b| format!("\"{}\"", b.trim()))
        .collect();
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
    if req.ca.is_some() {
        let _ = writeln!(s, "tls_ca_file = \"{CA_PATH}\"");
    }
    s
}

/// Writes the device folder under `dir` (created if missing).
pub fn write(dir: &Path, req: &Request) -> Result<Provisioned, ProvisionError> {
    check(req)?;
    // Read and checked before anything is written, so a bad CA leaves no half-made folder.
    let ca = match &req.ca {
        Some(path) => {
            tether_tls::load_ca(path).map_err(|e| ProvisionError::Invalid(format!("--ca: {e}")))?;
            Some(
                std::fs::read(path).map_err(|e| {
                    ProvisionError::Invalid(format!("--ca {}: {e}", path.display()))
                })?,
            )
        }
        None => None,
    };
    let password = req.credentials.then(password).transpose()?;
    let etc = dir.join("etc/tether");
    std::fs::create_dir_all(&etc)?;
    let mut files = Vec::new();
    // The agent key (and the password, if any) are in the config.
    let config = etc.join("agent.toml");
    create(
        &config,
        SECRET,
        agent_toml(req, password.as_deref()).as_bytes(),
    )?;
    files.push(config);
    if let Some(ca) = &ca {
        let copy = etc.join("ca.pem");
        create(&copy, PUBLIC, ca)?;
        files.push(copy);
    }
    if let Some(pw) = &password {
        let broker = dir.join("broker");
        std::fs::create_dir_all(&broker)?;
        // `user:$7$...`, one line for mosquitto's `password_file` and the embedded broker's
        // `--broker-passwords` alike. Still 0600: a hash can be attacked offline.
        let salt: [u8; tether_passwd::SALT_LEN] = random_bytes()?;
        let line = format!("{}:{}\n", req.id, tether_passwd::hashed(pw, &salt));
        let entry = broker.join("passwd-entry");
        create(&entry, SECRET, line.as_bytes())?;
        files.push(entry);
    }
    Ok(Provisioned { files, password })
}

/// Readable by the owner only.
const SECRET: u32 = 0o600;
/// A certificate: no secret in it.
const PUBLIC: u32 = 0o644;

/// A new file with `mode` from its creation on (an existing file, or a link planted in its
/// place, is an error rather than overwritten or followed).
fn create(path: &Path, mode: u32, contents: &[u8]) -> Result<(), ProvisionError> {
    let mut file = open_new(path, mode)?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

fn open_new(path: &Path, mode: u32) -> Result<std::fs::File, ProvisionError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ProvisionError::Invalid(format!(
                "{} exists: provision into a new folder",
                path.display()
            )),
            _ => ProvisionError::Io(e),
        })
}

/// `tetherctl provision`: the folder (default `./provision-ID`), and a `.tar.gz` of it when
/// asked; what was written, as `{"files": [...], "broker_user": ...}`.
pub(crate) fn write_folder(
    request: &Request,
    out: Option<PathBuf>,
    tar: Option<PathBuf>,
) -> Result<serde_json::Value, crate::client::Failure> {
    use crate::client::Failure;
    let dir = out.unwrap_or_else(|| format!("provision-{}", request.id).into());
    let done = write(&dir, request).map_err(|e| Failure(e.to_string()))?;
    let mut files: Vec<String> = done.files.iter().map(|f| f.display().to_string()).collect();
    if let Some(tar) = tar {
        let status = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&tar)
            .arg("-C")
            .arg(&dir)
            .arg(".")
            .status()
            .map_err(|e| Failure(format!("cannot run tar: {e}")))?;
        if !status.success() {
            return Err(Failure(format!("tar failed ({status})")));
        }
        files.push(tar.display().to_string());
    }
    Ok(serde_json::json!({
        "files": files,
        "broker_user": done.password.is_some().then_some(&request.id),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            id: "pi-7".into(),
            brokers: vec!["10.0.0.2:1883".into(), "backup.lan:1883".into()],
            ca: None,
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
        assert!(!entry.contains(&pw), "{entry}");
        let stored = entry
            .strip_prefix("pi-7:")
            .and_then(|e| e.strip_suffix('\n'));
        let stored = stored.unwrap_or_else(|| panic!("{entry}"));
        assert!(stored.starts_with("$7$101$"), "{entry}");
        assert!(tether_passwd::Stored::parse(stored).unwrap().verify(&pw));
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_created_owner_only_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let out = write(dir.path(), &req()).unwrap();
        assert_eq!(out.files.len(), 2);
        for file in &out.files {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
        // A planted file (or a link to one) is refused, not rewritten and not followed.
        let again = write(dir.path(), &req()).unwrap_err().to_string();
        assert!(again.contains("provision into a new folder"), "{again}");

        // The mode comes with the creating open: the file is owner-only while still empty.
        let file = open_new(&dir.path().join("probe"), SECRET).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let meta = file.metadata().unwrap();
        assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (0, 0o600));
    }

    /// A self-signed CA made with the `openssl` command, or `None` where it is missing.
    fn test_ca(dir: &Path) -> Option<PathBuf> {
        let ca = dir.join("test-ca.pem");
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-nodes", "-days", "1", "-newkey", "ec"])
            .args([
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-subj",
                "/CN=provision test",
            ])
            .arg("-keyout")
            .arg(dir.join("test-ca.key"))
            .arg("-out")
            .arg(&ca)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(ca)
    }

    #[test]
    fn mqtts_brokers_get_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls = |ca: Option<PathBuf>| Request {
            brokers: vec!["mqtts://broker.lan".into(), "10.0.0.2:1883".into()],
            ca,
            ..req()
        };
        let out = dir.path().join("out");
        let err = write(&out, &tls(None)).unwrap_err().to_string();
        assert!(
            err.contains("mqtts://broker.lan") && err.contains("--ca"),
            "{err}"
        );
        let err = write(&out, &tls(Some(dir.path().join("missing.pem"))))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ca"), "{err}");
        let plain_with_ca = Request {
            ca: Some(dir.path().join("missing.pem")),
            ..req()
        };
        let err = write(&out, &plain_with_ca).unwrap_err().to_string();
        assert!(err.contains("no --broker is mqtts://"), "{err}");
        assert!(!out.exists(), "a refused request writes nothing");

        let Some(ca) = test_ca(dir.path()) else {
            eprintln!("no openssl: the CA copy is left to the end-to-end test");
            return;
        };
        let done = write(&out, &tls(Some(ca.clone()))).unwrap();
        let toml = std::fs::read_to_string(out.join("etc/tether/agent.toml")).unwrap();
        assert!(
            toml.contains(&format!("tls_ca_file = \"{CA_PATH}\"")),
            "{toml}"
        );
        assert!(
            toml.contains("brokers = [\"mqtts://broker.lan\", \"10.0.0.2:1883\"]"),
            "{toml}"
        );
        let copy = out.join("etc/tether/ca.pem");
        assert!(done.files.contains(&copy));
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&ca).unwrap());
        assert_eq!(mode(&copy) & 0o600, 0o600);
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
                brokers: vec!["h:1\"".into()],
                ..req()
            },
            Request {
                brokers: vec!["mqtt://u:p@h:1".into()],
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

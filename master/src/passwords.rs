//! Who may connect to the embedded broker: a password file of `user:secret` lines, checked by
//! rumqttd's authentication hook at every CONNECT. The secrets are mosquitto's hashes
//! ([`tether_passwd`]: `$7$` PBKDF2, what `tetherctl provision --credentials` writes to
//! `broker/passwd-entry` and `mosquitto_passwd` writes; `$6$`, older mosquitto's), so the same
//! file serves a real mosquitto.
//!
//! - A password in clear is still accepted, so files from before hashing keep working, but each
//!   read of the file names its users stored in clear in a warning (mosquitto 2.x refuses them).
//! - A client's id must equal its user name, so one agent's credentials cannot take over
//!   another agent's session (rumqttd has no ACLs to stop that).
//! - The master's own client (`tether-master`) logs in with a secret made at start and kept in
//!   memory. A `tether-master` line (the master's login at a mosquitto sharing the file) is
//!   checked like any other but never used here.
//! - The file is read again when it changes, so a newly provisioned agent is admitted without
//!   restarting the master; a file that became invalid keeps the last good entries (logged).

use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use log::{info, warn};
use tether_passwd::Stored;

/// The master's own MQTT client id and user name.
pub(crate) const MASTER_USER: &str = tether_core::topic::MASTER_CLIENT_ID;

/// Why a password file was refused.
#[derive(Debug)]
pub(crate) enum PasswordFileError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A line that is not `user:secret`, with its 1-based number.
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl fmt::Display for PasswordFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Invalid { path, line, reason } => {
                write!(f, "{} line {line}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for PasswordFileError {}

/// What the check of one CONNECT found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Accepted,
    UnknownUser,
    WrongPassword,
    /// The client id is not the user name.
    ClientIdMismatch,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Accepted => "accepted",
            Self::UnknownUser => "unknown user",
            Self::WrongPassword => "wrong password",
            Self::ClientIdMismatch => "client id differs from the user name",
        })
    }
}

/// When the file was read: modification time and length tell a change.
type Stamp = (Option<SystemTime>, u64);

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    users: HashMap<String, Stored>,
}

/// The password file and the master's own secret.
#[derive(Debug)]
pub(crate) struct Passwords {
    path: PathBuf,
    master_secret: String,
    /// [`Self::master_secret`] as checked.
    master_stored: Stored,
    loaded: Mutex<Loaded>,
}

impl Passwords {
    /// Reads `path`; an unreadable file or a bad line is an error (at start nothing is known
    /// to fall back on).
    pub(crate) fn load(path: &Path) -> Result<Self, PasswordFileError> {
        let (stamp, users) = read(path)?;
        let master_secret = secret().map_err(|error| PasswordFileError::Read {
            path: "/dev/urandom".into(),
            error,
        })?;
        Ok(Self {
            path: path.to_owned(),
            master_stored: Stored::Plain(master_secret.clone()),
            master_secret,
            loaded: Mutex::new(Loaded { stamp, users }),
        })
    }

    /// The credentials of the master's own client.
    pub(crate) fn master_credentials(&self) -> (String, String) {
        (MASTER_USER.to_owned(), self.master_secret.clone())
    }

    /// Decides one CONNECT; re-reads the file first if it changed. A hashed entry costs a
    /// key derivation (see [`tether_passwd::MAX_ITERATIONS`]): call it off the broker's thread.
    pub(crate) fn check(&self, client_id: &str, user: &str, password: &str) -> Verdict {
        if client_id != user {
            return Verdict::ClientIdMismatch;
        }
        if user == MASTER_USER {
            return verdict(Some(&self.master_stored), password);
        }
        let stored = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if stamp(&self.path).is_ok_and(|s| s != loaded.stamp) {
                match read(&self.path) {
                    Ok((stamp, users)) => {
                        info!("{}: reloaded, {} user(s)", self.path.display(), users.len());
                        *loaded = Loaded { stamp, users };
                    }
                    Err(e) => warn!("{e}; keeping the previous entries"),
                }
            }
            loaded.users.get(user).cloned()
        };
        // Derived outside the lock, so one slow check does not queue the others.
        verdict(stored.as_ref(), password)
    }
}

fn verdict(stored: Option<&Stored>, password: &str) -> Verdict {
    match stored {
        None => Verdict::UnknownUser,
        Some(s) if s.verify(password) => Verdict::Accepted,
        Some(_) => Verdict::WrongPassword,
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

fn read(path: &Path) -> Result<(Stamp, HashMap<String, Stored>), PasswordFileError> {
    let io = |error| PasswordFileError::Read {
        path: path.to_owned(),
        error,
    };
    let stamp = stamp(path).map_err(io)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut users = parse(&text).map_err(|(line, reason)| PasswordFileError::Invalid {
        path: path.to_owned(),
        line,
        reason,
    })?;
    if users.remove(MASTER_USER).is_some() {
        info!(
            "{}: the `{MASTER_USER}` line is for an external broker; the embedded broker's own \
             client logs in with a secret made at start",
            path.display()
        );
    }
    let mut plain: Vec<&str> = users
        .iter()
        .filter(|(_, s)| s.is_plain())
        .map(|(u, _)| u.as_str())
        .collect();
    if !plain.is_empty() {
        plain.sort_unstable();
        warn!(
            "{}: password(s) stored in clear for {} (mosquitto refuses them): hash each with \
             `mosquitto_passwd -b FILE USER PASSWORD` (not `-U` on a file with hashes: it hashes \
             them again)",
            path.display(),
            plain.join(", ")
        );
    }
    Ok((stamp, users))
}

/// `user:secret` lines (the secret a mosquitto hash or a clear password); blank lines and `#`
/// comments are skipped.
pub(crate) fn parse(text: &str) -> Result<HashMap<String, Stored>, (usize, String)> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, secret)) = line.split_once(':') else {
            return Err((n, "expected `user:secret`".into()));
        };
        if tether_core::topic::validate_id(user).is_err() {
            return Err((
                n,
                format!("user `{user}` must be an agent id ([A-Za-z0-9._-], at most 32 bytes)"),
            ));
        }
        if secret.is_empty() {
            return Err((n, format!("user `{user}` has an empty password")));
        }
        let stored = Stored::parse(secret).map_err(|e| (n, format!("user `{user}`: {e}")))?;
        if users.insert(user.to_owned(), stored).is_some() {
            return Err((n, format!("user `{user}` is listed twice")));
        }
    }
    Ok(users)
}

/// 32 random characters for the master's own login.
fn secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mosquitto_passwd -b -c FILE pi-1 secret`.
    const PI1_HASHED: &str = "pi-1:$7$101$p3whw26mBGuFqGf0$y6a5hGEjxQpCc3DlXZv/9RCp8sTskX2C9DsuDH4DenyBGwHzTqYbXXzCjUUoI52WuVZZEsJvaji/CfK8iWeePA==\n";

    #[test]
    fn lines_and_their_errors() {
        let text = format!("# fleet\n{PI1_HASHED}\n  # x\npi-2:d:e\n");
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["pi-2"], Stored::Plain("d:e".into()));
        assert!(users["pi-1"].verify("secret"));
        let bad_hash = format!("{PI1_HASHED}pi-2:$7$0$p3whw26mBGuFqGf0$AAAA\n");
        for (text, line, what) in [
            ("pi-1\n", 1, "user:secret"),
            ("ok:x\nbad/id:x\n", 2, "agent id"),
            ("pi-1:\n", 1, "empty password"),
            ("pi-1:a\npi-1:b\n", 2, "twice"),
            (&bad_hash, 2, "user `pi-2`: iterations must be at least 1"),
            ("#\npi-3:$7$101$!$AAAA\n", 2, "salt is not base64"),
            ("pi-3:$2y$10$abc\n", 1, "unknown hash scheme"),
        ] {
            let (n, reason) = parse(text).unwrap_err();
            assert_eq!(n, line, "{text:?}");
            assert!(reason.contains(what), "{text:?}: {reason}");
        }
    }

    #[test]
    fn check_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "pi-1:one\n").unwrap();
        let p = Passwords::load(&path).unwrap();
        assert_eq!(p.check("pi-1", "pi-1", "one"), Verdict::Accepted);
        assert_eq!(p.check("pi-1", "pi-1", "two"), Verdict::WrongPassword);
        // A hashed entry, as provision and mosquitto_passwd write it.
        std::fs::write(&path, PI1_HASHED).unwrap();
        assert_eq!(p.check("pi-1", "pi-1", "secret"), Verdict::Accepted);
        assert_eq!(p.check("pi-1", "pi-1", "one"), Verdict::WrongPassword);
        std::fs::write(&path, "pi-1:one\n").unwrap();
        assert_eq!(p.check("pi-2", "pi-1", "one"), Verdict::ClientIdMismatch);
        assert_eq!(p.check("pi-2", "pi-2", "x"), Verdict::UnknownUser);
        let (user, secret) = p.master_credentials();
        assert_eq!(p.check(&user, &user, &secret), Verdict::Accepted);
        assert_eq!(p.check(&user, &user, "guess"), Verdict::WrongPassword);
        // The master's line for a mosquitto sharing the file opens nothing here.
        std::fs::write(&path, "pi-1:one\ntether-master:guess\n").unwrap();
        assert_eq!(p.check("pi-1", "pi-1", "one"), Verdict::Accepted);
        assert_eq!(p.check(&user, &user, "guess"), Verdict::WrongPassword);
        assert_eq!(p.check(&user, &user, &secret), Verdict::Accepted);

        // A new agent is admitted without a restart (the length differs, so the change is
        // seen even within the file system's timestamp granularity).
        std::fs::write(&path, "pi-1:one\npi-2:two\n").unwrap();
        assert_eq!(p.check("pi-2", "pi-2", "two"), Verdict::Accepted);
        // A broken file keeps the last good entries.
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(p.check("pi-2", "pi-2", "two"), Verdict::Accepted);

        assert!(matches!(
            Passwords::load(&dir.path().join("none")),
            Err(PasswordFileError::Read { .. })
        ));
        std::fs::write(&path, "x\n").unwrap();
        let err = Passwords::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}

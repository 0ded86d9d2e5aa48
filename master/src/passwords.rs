//! Who may connect to the embedded broker: a password file of `user:password` lines (the line
//! `tetherctl provision --credentials` writes to `broker/passwd-entry`), checked by rumqttd's
//! authentication hook at every CONNECT.
//!
//! - A client's id must equal its user name, so one agent's credentials cannot take over
//!   another agent's session (rumqttd has no ACLs to stop that).
//! - The master's own client (`tether-master`) logs in with a secret made at start and kept in
//!   memory; the file cannot name that user.
//! - The file is read again when it changes, so a newly provisioned agent is admitted without
//!   restarting the master; a file that became invalid keeps the last good entries (logged).

use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use log::{info, warn};

/// The master's own MQTT client id and user name.
pub(crate) const MASTER_USER: &str = tether_core::topic::MASTER_CLIENT_ID;

/// Why a password file was refused.
#[derive(Debug)]
pub(crate) enum PasswordFileError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A line that is not `user:password`, with its 1-based number.
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
    users: HashMap<String, String>,
}

/// The password file and the master's own secret.
#[derive(Debug)]
pub(crate) struct Passwords {
    path: PathBuf,
    master_secret: String,
    loaded: Mutex<Loaded>,
}

impl Passwords {
    /// Reads `path`; an unreadable file or a bad line is an error (at start nothing is known
    /// to fall back on).
    pub(crate) fn load(path: &Path) -> Result<Self, PasswordFileError> {
        let (stamp, users) = read(path)?;
        Ok(Self {
            path: path.to_owned(),
            master_secret: secret().map_err(|error| PasswordFileError::Read {
                path: "/dev/urandom".into(),
                error,
            })?,
            loaded: Mutex::new(Loaded { stamp, users }),
        })
    }

    /// The credentials of the master's own client.
    pub(crate) fn master_credentials(&self) -> (String, String) {
        (MASTER_USER.to_owned(), self.master_secret.clone())
    }

    /// Decides one CONNECT; re-reads the file first if it changed.
    pub(crate) fn check(&self, client_id: &str, user: &str, password: &str) -> Verdict {
        if client_id != user {
            return Verdict::ClientIdMismatch;
        }
        if user == MASTER_USER {
            return verdict(Some(&self.master_secret), password);
        }
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
        verdict(loaded.users.get(user), password)
    }
}

fn verdict(stored: Option<&String>, password: &str) -> Verdict {
    match stored {
        None => Verdict::UnknownUser,
        Some(p) if constant_time_eq(p.as_bytes(), password.as_bytes()) => Verdict::Accepted,
        Some(_) => Verdict::WrongPassword,
    }
}

/// Equal bytes, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified().ok(), meta.len()))
}

fn read(path: &Path) -> Result<(Stamp, HashMap<String, String>), PasswordFileError> {
    let io = |error| PasswordFileError::Read {
        path: path.to_owned(),
        error,
    };
    let stamp = stamp(path).map_err(io)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    let users = parse(&text).map_err(|(line, reason)| PasswordFileError::Invalid {
        path: path.to_owned(),
        line,
        reason,
    })?;
    Ok((stamp, users))
}

/// `user:password` lines; blank lines and `#` comments are skipped.
pub(crate) fn parse(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            return Err((n, "expected `user:password`".into()));
        };
        if tether_core::topic::validate_id(user).is_err() {
            return Err((
                n,
                format!("user `{user}` must be an agent id ([A-Za-z0-9._-], at most 32 bytes)"),
            ));
        }
        if user == MASTER_USER {
            return Err((n, format!("user `{MASTER_USER}` is the master's own")));
        }
        if password.is_empty() {
            return Err((n, format!("user `{user}` has an empty password")));
        }
        if users.insert(user.to_owned(), password.to_owned()).is_some() {
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

    #[test]
    fn lines_and_their_errors() {
        let users = parse("# fleet\npi-1:abc\n\n  # x\npi-2:d:e\n").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["pi-2"], "d:e");
        for (text, line, what) in [
            ("pi-1\n", 1, "user:password"),
            ("ok:x\nbad/id:x\n", 2, "agent id"),
            ("tether-master:x\n", 1, "master's own"),
            ("pi-1:\n", 1, "empty password"),
            ("pi-1:a\npi-1:b\n", 2, "twice"),
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
        assert_eq!(p.check("pi-2", "pi-1", "one"), Verdict::ClientIdMismatch);
        assert_eq!(p.check("pi-2", "pi-2", "x"), Verdict::UnknownUser);
        let (user, secret) = p.master_credentials();
        assert_eq!(p.check(&user, &user, &secret), Verdict::Accepted);
        assert_eq!(p.check(&user, &user, "guess"), Verdict::WrongPassword);

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

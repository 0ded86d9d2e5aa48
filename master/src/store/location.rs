//! Where the master's store is: a SQLite file (the default, `<data_dir>/master.db`) or a
//! PostgreSQL database named by a `postgres://` / `postgresql://` URL. Parsed when the
//! configuration is read, so a bad URL stops the start with the reason; shown (logs,
//! `check-config`) without its password.

use std::fmt;
use std::path::{Path, PathBuf};

/// The store a master opens.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: the URL as given (it may hold a password: never print it whole,
    /// print the location, whose `Display` hides it).
    Postgres(String),
}

impl StoreLocation {
    /// The default: `master.db` in the data directory.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::Sqlite(data_dir.join("master.db"))
    }

    /// Reads `--store`: a `postgres://` or `postgresql://` URL (checked here), or else a
    /// path of a SQLite file.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if is_postgres_url(text) {
            text.parse::<postgres::Config>()
                .map_err(|e| format!("not a PostgreSQL URL ({}): {e}", redact(text)))?;
            return Ok(Self::Postgres(text.to_owned()));
        }
        if text.contains("://") {
            return Err(format!(
                "`{}`: unknown scheme (a path, or postgres://user@host/db)",
                redact(text)
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(text)))
    }
}

fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// The URL with its password (the part after `user:` before `@`, and any `password=`
/// parameter) replaced by `***`.
pub fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let params: Vec<String> = tail
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out = format!("{head}{}", params.join("&"));
    }
    out
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite {}", path.display()),
            Self::Postgres(url) => write!(f, "PostgreSQL {}", redact(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            StoreLocation::parse("/var/lib/t/master.db"),
            Ok(StoreLocation::Sqlite("/var/lib/t/master.db".into()))
        );
        let url = "postgresql://tether:s3cret@db.example:5433/tether";
        assert_eq!(
            StoreLocation::parse(url),
            Ok(StoreLocation::Postgres(url.into()))
        );
        assert!(StoreLocation::parse("").is_err());
        assert!(
            StoreLocation::parse("mysql://x/y")
                .unwrap_err()
                .contains("unknown scheme")
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        let url = "postgres://tether:s3cret@db:5432/tether?password=other&sslmode=disable";
        let shown = StoreLocation::parse(url).unwrap().to_string();
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
        assert_eq!(
            shown,
            "PostgreSQL postgres://tether:***@db:5432/tether?password=***&sslmode=disable"
        );
        assert!(!format!("{:?}", StoreLocation::parse(url).unwrap()).contains("s3cret"));
        let bad =
            StoreLocation::parse("postgres://u:s3cret@h/db?connect_timeout=soon").unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
        assert_eq!(
            redact("postgres:///tether?host=/run/pg"),
            "postgres:///tether?host=/run/pg"
        );
    }
}

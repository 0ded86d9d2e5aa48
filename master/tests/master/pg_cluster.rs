//! A throwaway PostgreSQL cluster for the tests: `initdb` and `pg_ctl` from Debian's
//! `postgresql` package in a temporary directory, listening only on a unix socket in that
//! directory (no TCP port), stopped when dropped. As root (CI), the server runs as `nobody`:
//! PostgreSQL refuses to run as root. Without PostgreSQL the tests that need it are skipped
//! with the reason, except under `TETHER_CI=1`, where that is a failure.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tether_master::store::{PostgresStore, Store, StoreError};

pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_nobody: bool,
}

/// Where Debian puts the newest installed PostgreSQL's programs.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|b| {
        b.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
    });
    found.pop()
}

/// Whether the PostgreSQL tests can run here; says why not (and fails under CI).
pub(crate) fn available() -> bool {
    if bin_dir().is_some() {
        return true;
    }
    let why = "PostgreSQL is not installed (apt-get install postgresql)";
    assert!(
        std::env::var("TETHER_CI").as_deref() != Ok("1"),
        "TETHER_CI=1: {why}"
    );
    eprintln!("skipped: {why}");
    false
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PgCluster {
    /// Creates and starts a cluster (`fast`: without fsync, for the store tests).
    pub(crate) fn start(fast: bool) -> Self {
        let bin = bin_dir().expect("PostgreSQL installed (see available())");
        let dir = tempfile::tempdir().unwrap();
        let as_nobody = is_root();
        if as_nobody {
            check(
                "chown",
                Command::new("chown").arg("nobody").arg(dir.path()).output(),
            );
        }
        let cluster = Self {
            dir,
            bin,
            as_nobody,
        };
        let data = cluster.data();
        check(
            "initdb",
            cluster
                .command("initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "tether",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-N",
                ])
                .arg("-D")
                .arg(&data)
                .output(),
        );
        let mut options = format!(
            "-k {} -c listen_addresses=''",
            cluster.socket_dir().display()
        );
        if fast {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        std::fs::write(data.join("tether-options"), &options).ok();
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// `pg_ctl start`, waiting (bounded by pg_ctl's own 60 s) until it takes connections.
    pub(crate) fn pg_ctl_start(&self) {
        let options = std::fs::read_to_string(self.data().join("tether-options")).unwrap();
        check(
            "pg_ctl start",
            self.command("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .args(["-o", &options, "start"])
                .output(),
        );
    }

    /// `pg_ctl stop -m fast`: clients are disconnected, the server is down when it returns.
    pub(crate) fn pg_ctl_stop(&self) {
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .args(["-w", "-t", "60", "-m", "fast", "-D"])
                .arg(self.data())
                .arg("stop")
                .output(),
        );
    }

    /// The URL of database `name`, created if missing. (On a thread of its own: the
    /// synchronous client may not run inside the async tests' runtime.)
    pub(crate) fn database(&self, name: &str) -> String {
        std::thread::scope(|s| s.spawn(|| self.create_database(name)).join().unwrap())
    }

    fn create_database(&self, name: &str) -> String {
        let url = |db: &str| {
            format!(
                "postgresql://tether@localhost/{db}?host={}",
                self.socket_dir().display()
            )
        };
        let mut admin = postgres::Client::connect(&url("postgres"), postgres::NoTls)
            .expect("connecting to the test cluster");
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .unwrap()
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .unwrap();
        }
        url(name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }
}

thread_local! {
    /// The calling test's cluster: each test runs on its own thread, and the cluster is
    /// stopped when that thread ends, passed or failed.
    static CLUSTER: RefCell<Option<PgCluster>> = const { RefCell::new(None) };
}

/// The store suite's opener: the database named after `path` (so opening the same path again
/// reopens the same database) on this test's cluster.
pub(crate) fn open(path: &Path) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(PostgresStore::open(&url_of(path))?))
}

/// The store suite's raw access: runs `sql` on the database [`open`] opens for `path`.
pub(crate) fn execute(path: &Path, sql: &str) {
    let url = url_of(path);
    std::thread::scope(|s| {
        s.spawn(|| {
            postgres::Client::connect(&url, postgres::NoTls)
                .expect("connecting to the test cluster")
                .batch_execute(sql)
                .unwrap();
        })
        .join()
        .unwrap();
    });
}

/// The URL of the database named after `path` on this test's cluster (started if needed).
fn url_of(path: &Path) -> String {
    let name: String = path
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("t{}", &name[name.len().saturating_sub(40)..]);
    CLUSTER.with(|c| {
        c.borrow_mut()
            .get_or_insert_with(|| PgCluster::start(true))
            .database(&name)
    })
}

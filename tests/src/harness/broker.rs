//! The brokers an end-to-end test runs against: the master's embedded rumqttd
//! ([`tether_master::broker::EmbeddedBroker`], in this process) or a real mosquitto
//! (`/usr/sbin/mosquitto`, a child process with a generated config). Both on a free port of
//! 127.0.0.1.

use std::fmt;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tether_master::broker::{EmbeddedBroker, pick_free_port, wait_for_listener};

use super::WAIT;
use super::tempdir::TempDir;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Rumqttd,
    Mosquitto,
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rumqttd => "rumqttd",
            Self::Mosquitto => "mosquitto",
        })
    }
}

#[derive(Debug)]
pub enum TestBroker {
    /// rumqttd has no shutdown: it lives until the test process ends.
    Rumqttd(EmbeddedBroker),
    Mosquitto(Mosquitto),
}

impl TestBroker {
    /// Starts a broker of `kind`; `None` (with a line saying why) when mosquitto is not
    /// installed, so the test passes as skipped rather than failing on a bare machine.
    pub async fn start(kind: BrokerKind) -> Option<TestBroker> {
        match kind {
            BrokerKind::Rumqttd => {
                // Blocking (it probes the port until rumqttd listens).
                let broker = tokio::task::spawn_blocking(EmbeddedBroker::start_local)
                    .await
                    .expect("broker start task")
                    .unwrap_or_else(|e| panic!("embedded rumqttd: {e}"));
                Some(Self::Rumqttd(broker))
            }
            BrokerKind::Mosquitto => {
                if !Path::new(MOSQUITTO).exists() {
                    eprintln!("SKIPPED: {MOSQUITTO} is not installed (apt-get install mosquitto)");
                    return None;
                }
                let broker = tokio::task::spawn_blocking(Mosquitto::start)
                    .await
                    .expect("broker start task");
                Some(Self::Mosquitto(broker))
            }
        }
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            Self::Rumqttd(_) => BrokerKind::Rumqttd,
            Self::Mosquitto(_) => BrokerKind::Mosquitto,
        }
    }

    /// Where clients connect (always a loopback address).
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Rumqttd(b) => {
                let a = b.broker_addr();
                SocketAddr::new(a.host.parse().expect("loopback ip"), a.port)
            }
            Self::Mosquitto(m) => m.addr,
        }
    }

    /// `host:port`, as `tether-agent --broker` takes it.
    pub fn host_port(&self) -> String {
        self.addr().to_string()
    }
}

/// A mosquitto process, killed when dropped; its log is printed if a test fails meanwhile.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Mosquitto {
    /// Starts mosquitto on a free loopback port and waits (bounded) until it listens.
    pub fn start() -> Self {
        Self::start_on(IpAddr::from([127, 0, 0, 1]))
    }

    /// Starts mosquitto on a free port of `ip`; `0.0.0.0` listens on every interface, for
    /// agents in a network namespace that reach the host over a veth pair.
    pub fn start_on(ip: IpAddr) -> Self {
        let dir = TempDir::new("mosquitto").expect("temp dir");
        // Free a moment ago; if another process takes it first, the wait below fails and
        // prints mosquitto's log.
        let addr = pick_free_port(ip).expect("free port");
        let config = format!(
            "listener {} {ip}\nallow_anonymous true\npersistence false\n\
             max_packet_size 8192\nlog_dest stderr\nlog_type all\n",
            addr.port()
        );
        Self::start_with_config(dir, addr, &config)
    }

    /// Starts mosquitto with `config` (a whole mosquitto.conf, which must log to stderr) in
    /// `dir`, which the broker keeps, and waits (bounded) until it listens on `addr`.
    pub fn start_with_config(dir: TempDir, addr: SocketAddr, config: &str) -> Self {
        std::fs::write(dir.join("mosquitto.conf"), config).expect("mosquitto.conf");
        let mut broker = Self {
            child: None,
            addr,
            dir,
        };
        broker.restart();
        broker
    }

    /// Stops the broker abruptly (SIGKILL): every connection drops without a goodbye and
    /// sessions and retained messages are gone (`persistence false`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`Self::stop`]), waiting until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .expect("mosquitto.log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        if !wait_for_listener(self.addr, WAIT) {
            self.stop();
            panic!("mosquitto did not listen on {}:\n{}", self.addr, self.log());
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- mosquitto log ({}) ----\n{}", self.addr, self.log());
        }
    }
}

/// Files made here (mode 0600) belong to root when the tests run as root, and mosquitto then
/// drops to its own user before reading its password file and key: give them to its group as
/// broker-config/README.md says (root:mosquitto 0640), or to everyone when there is no such
/// group.
pub fn readable_by_mosquitto(files: &[&Path]) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // /proc/self belongs to the process's effective user.
    if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return;
    }
    let group = mosquitto_gid();
    for f in files {
        let grouped = group.is_some_and(|g| std::os::unix::fs::chown(f, None, Some(g)).is_ok());
        let mode = if grouped { 0o640 } else { 0o644 };
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", f.display()));
    }
}

/// The `mosquitto` group's id, from /etc/group.
fn mosquitto_gid() -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == "mosquitto").then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// Runs one async scenario against each broker, as one `#[tokio::test]` per broker:
///
/// ```ignore
/// both_brokers!(exit_codes);   // async fn exit_codes(broker: &TestBroker)
/// ```
/// gives tests `exit_codes::rumqttd` and `exit_codes::mosquitto`.
#[macro_export]
macro_rules! both_brokers {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            use $crate::harness::broker::{BrokerKind, TestBroker};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rumqttd() {
                let broker = TestBroker::start(BrokerKind::Rumqttd).await.expect("rumqttd");
                super::$scenario(&broker).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto() {
                let Some(broker) = TestBroker::start(BrokerKind::Mosquitto).await else {
                    return;
                };
                super::$scenario(&broker).await;
            }
        }
    )+};
}

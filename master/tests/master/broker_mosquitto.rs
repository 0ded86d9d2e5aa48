//! The same broker scenarios against a real mosquitto, the reference external broker.
//! Skipped, with a message, where `/usr/sbin/mosquitto` is not installed.

use crate::broker_util;

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tether_master::broker::{BrokerAddr, pick_free_port, wait_for_listener};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto process on a free loopback port, killed when dropped (also on test failure).
pub(crate) struct Mosquitto {
    child: Child,
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub(crate) fn start() -> Option<Self> {
        if !Path::new(MOSQUITTO).exists() {
            eprintln!("SKIPPED: {MOSQUITTO} is not installed (apt-get install mosquitto)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // The port was free a moment ago; another process could take it before mosquitto
        // binds, in which case the wait below fails with mosquitto's log.
        let addr = pick_free_port(IpAddr::from([127, 0, 0, 1])).unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_packet_size 8192\nlog_dest stderr\n",
                addr.port()
            ),
        )
        .unwrap();
        let log = dir.path().join("mosquitto.log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("mosquitto starts");
        let mut broker = Self {
            child,
            addr,
            _dir: dir,
        };
        if !wait_for_listener(addr, broker_util::WAIT) {
            let _ = broker.child.kill();
            panic!(
                "mosquitto did not listen on {addr}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Some(broker)
    }

    fn broker_addr(&self) -> BrokerAddr {
        BrokerAddr::from(self.addr)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn publish_reaches_subscriber() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    broker_util::publish_reaches_subscriber(&broker.broker_addr()).await;
}

#[tokio::test]
async fn retained_reaches_late_subscriber() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    broker_util::retained_reaches_late_subscriber(&broker.broker_addr()).await;
}

#[tokio::test]
async fn killed_client_fires_its_will() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    broker_util::killed_client_fires_its_will(&broker.broker_addr()).await;
}

//! The embedded rumqttd: started from Tether's config on a free port, used by real rumqttc
//! clients, and refusing bad configurations with errors that say what is wrong.

use crate::broker_util;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};

use tether_master::broker::{BrokerConfig, BrokerError, EmbeddedBroker};

fn start() -> EmbeddedBroker {
    EmbeddedBroker::start_local().expect("embedded broker starts on a free port")
}

#[tokio::test]
async fn publish_reaches_subscriber() {
    let broker = start();
    assert!(broker.is_running());
    broker_util::publish_reaches_subscriber(&broker.broker_addr()).await;
}

#[tokio::test]
async fn retained_reaches_late_subscriber() {
    let broker = start();
    broker_util::retained_reaches_late_subscriber(&broker.broker_addr()).await;
}

#[tokio::test]
async fn killed_client_fires_its_will() {
    let broker = start();
    broker_util::killed_client_fires_its_will(&broker.broker_addr()).await;
}

#[test]
fn port_in_use_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut config = BrokerConfig::builtin().unwrap();
    config.set_listen(addr);
    match EmbeddedBroker::start(config) {
        Err(BrokerError::Bind { addr: a, source }) => {
            assert_eq!(a, addr);
            assert_eq!(source.kind(), ErrorKind::AddrInUse);
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
}

#[test]
fn listen_port_zero_gets_a_real_port() {
    let mut config = BrokerConfig::builtin().unwrap();
    config.set_listen(SocketAddr::from(([127, 0, 0, 1], 0)));
    let broker = EmbeddedBroker::start(config).unwrap();
    assert_ne!(broker.addr.port(), 0);
    assert!(std::net::TcpStream::connect(broker.addr).is_ok());
}

/// Writes `text` to a file, loads it, and returns the error's message.
fn load_error(text: &str) -> (BrokerError, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rumqttd.toml");
    std::fs::write(&path, text).unwrap();
    let err = BrokerConfig::from_path(&path).expect_err("config must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    (err, msg)
}

fn builtin_with(from: &str, to: &str) -> String {
    let text = tether_master::broker::BUILTIN_CONFIG;
    assert!(text.contains(from), "built-in config lacks {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn bad_config_files_name_the_problem() {
    let (err, msg) = load_error(&builtin_with("max_segment_size = 65536\n", ""));
    assert!(matches!(err, BrokerError::Parse { .. }), "{err:?}");
    assert!(msg.contains("max_segment_size"), "{msg}");

    let (err, msg) = load_error(&builtin_with("\n[router]\n", "\n[router\n"));
    assert!(matches!(err, BrokerError::Parse { .. }), "{err:?}");
    assert!(msg.contains("line"), "{msg}");

    let (err, msg) = load_error(&builtin_with(
        "max_segment_size = 65536",
        "max_segment_size = 100",
    ));
    assert!(matches!(err, BrokerError::Invalid { .. }), "{err:?}");
    assert!(
        msg.contains("router.max_segment_size must be at least 1024"),
        "{msg}"
    );

    let (_, msg) = load_error(&builtin_with(
        "dynamic_filters = true",
        "dynamic_filters = false",
    ));
    assert!(msg.contains("dynamic_filters must be true"), "{msg}");

    let (_, msg) =
        load_error(&builtin_with("\n[v4.1]\n", "\n[v5.1]\n").replace("[v4.1.", "[v5.1."));
    assert!(msg.contains("exactly one [v4.*] listener"), "{msg}");

    let (_, msg) = load_error(&builtin_with(
        "\n[v4.1]\n",
        "\n[v4.2]\nname = \"b\"\nlisten = \"127.0.0.1:1\"\nnext_connection_delay_ms = 1\n\
         [v4.2.connections]\nconnection_timeout_ms = 1\nmax_payload_size = 2048\n\
         max_inflight_count = 1\ndynamic_filters = true\n[v4.1]\n",
    ));
    assert!(msg.contains("found 2"), "{msg}");

    let (_, msg) = load_error(&builtin_with("max_inflight_count", "max_inflight_cuont"));
    assert!(msg.contains("missing field `max_inflight_count`"), "{msg}");

    let (_, msg) = load_error(&builtin_with(
        "dynamic_filters = true",
        "dynamic_filters = true\n    max_conection_buffer = 5",
    ));
    assert!(
        msg.contains("unknown key(s) v4.1.connections.max_conection_buffer"),
        "{msg}"
    );

    let (_, msg) = load_error(&format!(
        "{}\n[consle]\nlisten = \"x\"\n",
        tether_master::broker::BUILTIN_CONFIG
    ));
    assert!(msg.contains("unknown key(s) consle"), "{msg}");

    let missing = std::path::Path::new("/nonexistent/tether/rumqttd.toml");
    let err = BrokerConfig::from_path(missing).unwrap_err();
    assert!(matches!(err, BrokerError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/tether/rumqttd.toml"));
}

#[test]
fn config_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rumqttd.toml");
    std::fs::write(
        &path,
        builtin_with("listen = \"0.0.0.0:1883\"", "listen = \"127.0.0.1:0\""),
    )
    .unwrap();
    let config = BrokerConfig::from_path(&path).unwrap();
    assert_eq!(config.listen(), SocketAddr::from(([127, 0, 0, 1], 0)));
    let broker = EmbeddedBroker::start(config).unwrap();
    assert!(
        broker
            .broker_addr()
            .to_string()
            .starts_with("mqtt://127.0.0.1:")
    );
}

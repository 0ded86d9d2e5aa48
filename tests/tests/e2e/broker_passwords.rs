//! One password file for both brokers: the hashed line `tetherctl provision --credentials`
//! writes, beside lines `mosquitto_passwd` made (the master's login for mosquitto, and an older
//! `$6$` hash), read by a real mosquitto (`password_file`) and by the master's embedded broker
//! (`--broker-passwords`). The provisioned agent connects to both with its password; the same
//! agent with a wrong password is refused by both.
//!
//! Skipped (passes with a line saying so) when mosquitto or mosquitto_passwd is missing.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use tether_master::broker::pick_free_port;
use tether_tests::harness::bins::binary;
use tether_tests::harness::broker::{MOSQUITTO, Mosquitto, readable_by_mosquitto};
use tether_tests::harness::master_proc::{MasterHome, MasterOptions};
use tether_tests::harness::tempdir::TempDir;

const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// `mosquitto_passwd OPTIONS FILE USER PASSWORD` (batch mode: it reads nothing).
fn mosquitto_passwd(options: &[&str], file: &Path, user: &str, password: &str) {
    let status = Command::new(MOSQUITTO_PASSWD)
        .args(options)
        .arg(file)
        .args([user, password])
        .stdin(std::process::Stdio::null())
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success(), "mosquitto_passwd {options:?} {user}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_password_file_serves_mosquitto_and_the_embedded_broker() {
    if ![MOSQUITTO, MOSQUITTO_PASSWD]
        .iter()
        .all(|p| Path::new(p).exists())
    {
        eprintln!(
            "SKIPPED: mosquitto or mosquitto_passwd not installed (apt-get install mosquitto)"
        );
        return;
    }
    let dir = TempDir::new("one-passwd").expect("temp dir");
    let passwd = dir.join("passwd");
    // The master's login at mosquitto (the embedded broker ignores that line), and an agent
    // hashed the way mosquitto 1.x did.
    mosquitto_passwd(&["-b", "-c"], &passwd, "tether-master", "master-secret");
    mosquitto_passwd(&["-H", "sha512", "-b"], &passwd, "pw-old", "old-secret");

    let mut home = MasterHome::new(MasterOptions {
        extra_args: vec!["--broker-passwords".into(), passwd.display().to_string()],
        ..MasterOptions::default()
    });
    let master = home.start();

    // Provisioned: the clear password only in the agent's config, its hash appended to the
    // shared file (the master re-reads it; mosquitto starts after).
    let device = dir.join("pw-a");
    let out = Command::new(binary("tetherctl").expect("tetherctl"))
        .env("TETHER_MASTER", format!("http://{}", master.http))
        .env("TETHER_TOKEN", &master.token)
        .args([
            "provision",
            "pw-a",
            "--broker",
            "127.0.0.1:1",
            "--credentials",
        ])
        .arg("--out")
        .arg(&device)
        .output()
        .expect("tetherctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = device.join("etc/tether/agent.toml");
    master.keep_key("pw-a", &config);
    let entry = std::fs::read_to_string(device.join("broker/passwd-entry")).unwrap();
    assert!(entry.starts_with("pw-a:$7$101$"), "{entry}");
    let mut file = std::fs::read_to_string(&passwd).unwrap();
    file.push_str(&entry);
    std::fs::write(&passwd, &file).unwrap();
    readable_by_mosquitto(&[&passwd]);

    let mosquitto_dir = TempDir::new("one-passwd-mosquitto").expect("temp dir");
    let addr = pick_free_port(IpAddr::from([127, 0, 0, 1])).expect("free port");
    let mosquitto = Mosquitto::start_with_config(
        mosquitto_dir,
        addr,
        &format!(
            "listener {} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             persistence false\nlog_dest stderr\nlog_type all\n",
            addr.port(),
            passwd.display()
        ),
    );
    let at_mosquitto = addr.to_string();
    let config = config.display().to_string();

    // A wrong password: refused by both, and neither connection counts.
    let wrong = ["--username", "pw-a", "--password", "not-the-password"];
    let (_h1, to_master) = master.start_agent("pw-a", &master.mqtt, &wrong);
    let (_h2, to_mosquitto) = master.start_agent("pw-a", &at_mosquitto, &wrong);
    for agent in [&to_master, &to_mosquitto] {
        agent
            .wait_log(&["connect refused", "username or password"])
            .await;
    }
    master
        .wait_log(&["broker refused client `pw-a`", "wrong password"])
        .await;
    assert!(
        mosquitto.log().contains("disconnected, not authorised"),
        "{}",
        mosquitto.log()
    );
    for agent in [&to_master, &to_mosquitto] {
        assert!(!agent.log().contains("connected to"), "{}", agent.log());
    }
    assert_eq!(master.agent("pw-a"), None);
    drop((to_master, to_mosquitto));

    // The provisioned config, password and all: admitted by both.
    let (_h3, to_master) = master.start_agent("pw-a", &master.mqtt, &["--config", &config]);
    let (_h4, to_mosquitto) = master.start_agent("pw-a", &at_mosquitto, &["--config", &config]);
    master.wait_available("pw-a").await;
    to_mosquitto
        .wait_log(&["connected to", &at_mosquitto])
        .await;
    assert!(mosquitto.log().contains("u'pw-a'"), "{}", mosquitto.log());

    // The `$6$` line works with the embedded broker too; nothing in the file is in clear.
    let old = ["--username", "pw-old", "--password", "old-secret"];
    let (_h5, _old) = master.start_agent("pw-old", &master.mqtt, &old);
    master.wait_available("pw-old").await;
    assert!(!master.log().contains("in clear"), "{}", master.log());
    drop(to_master);
}

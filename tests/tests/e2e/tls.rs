//! TLS and broker credentials with the real binaries: the master's TLS listener in front of its
//! embedded rumqttd, its password file (the line `tetherctl provision --credentials` writes),
//! client certificates, and an agent over TLS to a real mosquitto. Certificates are made per
//! test with `openssl`. Every refusal is seen in the logs with its reason, and nothing runs.

use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tether_master::broker::pick_free_port;
use tether_tests::harness::agent::{AgentHome, AgentOptions, AgentProcess};
use tether_tests::harness::bins::binary;
use tether_tests::harness::broker::{MOSQUITTO, Mosquitto};
use tether_tests::harness::certs::{CertPair, Pki, master_tls_listener as tls_listener};
use tether_tests::harness::fleet::task;
use tether_tests::harness::master_proc::{
    ApiError, MasterHome, MasterOptions, MasterProcess, task_state,
};
use tether_tests::harness::tempdir::TempDir;

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn start_master(extra_args: Vec<String>) -> (MasterHome, MasterProcess) {
    let mut home = MasterHome::new(MasterOptions {
        extra_args,
        ..MasterOptions::default()
    });
    let master = home.start();
    (home, master)
}

/// Runs `tetherctl provision ID --credentials` against `master` into `dir`; returns the agent
/// config and the broker's password-file line.
fn provision(master: &MasterProcess, id: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new(binary("tetherctl").expect("tetherctl"))
        .env("TETHER_MASTER", format!("http://{}", master.http))
        .env("TETHER_TOKEN", &master.token)
        .args([
            "provision",
            id,
            "--broker",
            "127.0.0.1:1",
            "--credentials",
            "--out",
        ])
        .arg(dir)
        .output()
        .expect("tetherctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    master.keep_key(id, &dir.join("etc/tether/agent.toml"));
    (
        dir.join("etc/tether/agent.toml"),
        dir.join("broker/passwd-entry"),
    )
}

/// An agent of `master` to `broker` verifying it with `ca`, with more flags.
fn start_agent(
    master: &MasterProcess,
    id: &str,
    broker: &str,
    ca: &Path,
    more: &[String],
) -> (AgentHome, AgentProcess) {
    let mut options = AgentOptions::new(id, &format!("mqtts://{broker}"));
    master.provision(&mut options);
    options.extra_args = vec!["--tls-ca-file".into(), arg(ca)];
    options.extra_args.extend_from_slice(more);
    let mut home = AgentHome::new(options);
    let process = home.start();
    (home, process)
}

fn client_cert_args(pair: &CertPair) -> Vec<String> {
    vec![
        "--tls-cert-file".into(),
        arg(&pair.cert),
        "--tls-key-file".into(),
        arg(&pair.key),
    ]
}

/// Submits a task that creates `marker` to agent `id`.
fn submit_touch(master: &MasterProcess, id: &str, marker: &Path) -> u64 {
    master.submit(&touch(id, marker))
}

fn touch(id: &str, marker: &Path) -> serde_json::Value {
    task(
        json!({ "agent": id }),
        &["/bin/sh", "-c", &format!("echo ran > {}", marker.display())],
        json!({}),
    )
}

/// After a refusal was seen: the agent never connected, so the master has never heard of it
/// and takes no task for it.
fn assert_never_connected(master: &MasterProcess, agent: &AgentProcess, id: &str) {
    assert!(
        !agent.log().contains("connected to"),
        "the agent connected:\n{}",
        agent.log()
    );
    assert_eq!(master.agent(id), None);
    match master.call(
        "POST",
        "/api/tasks",
        Some(&touch(id, Path::new("/nonexistent"))),
    ) {
        Err(ApiError::Status(404, body)) => assert!(body.contains("never connected"), "{body}"),
        other => panic!("a task for a refused agent: {other:?}"),
    }
}

/// Everything on: TLS with client certificates required, the provisioned password, and a
/// client stalled mid-handshake that must not hold the listener up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_over_tls_with_client_cert_and_provisioned_password_runs_a_task() {
    let pki = Pki::new("fleet");
    let server = pki.server();
    let device = pki.path("tls-a");
    // The broker's password file starts empty; the master reads it again when it changes.
    let passwords = pki.path("passwd");
    std::fs::write(&passwords, "").unwrap();
    let mut args = tls_listener(&server, Some(&pki.ca.cert));
    args.extend(["--broker-passwords".into(), arg(&passwords)]);
    let (_home, master) = start_master(args);
    let (agent_toml, entry) = provision(&master, "tls-a", &device);
    std::fs::write(&passwords, std::fs::read(&entry).unwrap()).unwrap();
    let mqtts = master.mqtts.clone().expect("mqtts= in the ready line");

    // Connected, never says hello: rumqttd's own TLS listener would wait on it forever.
    let _stalled = TcpStream::connect(&mqtts).expect("tcp connect");

    let mut more = client_cert_args(&pki.client("tls-a"));
    more.extend(["--config".into(), arg(&agent_toml)]);
    let (home, _agent) = start_agent(&master, "tls-a", &mqtts, &pki.ca.cert, &more);
    master.wait_available("tls-a").await;
    let marker = home.path().join("ran");
    let id = submit_touch(&master, "tls-a", &marker);
    let t = master.wait_finished(id).await;
    assert_eq!(task_state(&t), "succeeded", "{t}");
    assert!(marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ca_is_refused_and_nothing_runs() {
    let pki = Pki::new("real");
    let other = Pki::new("other");
    let (_home_m, master) = start_master(tls_listener(&pki.server(), None));
    let mqtts = master.mqtts.clone().expect("mqtts");
    let (_home, agent) = start_agent(&master, "tls-b", &mqtts, &other.ca.cert, &[]);
    let line = agent
        .wait_log(&["connect refused", "TLS refused", "UnknownIssuer"])
        .await;
    assert!(line.contains(&mqtts), "{line}");
    assert_never_connected(&master, &agent, "tls-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_server_certificate_is_refused() {
    let pki = Pki::new("exp");
    let (_home_m, master) = start_master(tls_listener(&pki.expired_server(), None));
    let mqtts = master.mqtts.clone().expect("mqtts");
    let (_home, agent) = start_agent(&master, "tls-c", &mqtts, &pki.ca.cert, &[]);
    agent.wait_log(&["TLS refused", "xpired"]).await;
    assert_never_connected(&master, &agent, "tls-c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_broker_password_is_refused() {
    let pki = Pki::new("pw");
    let passwd = pki.path("passwd");
    std::fs::write(&passwd, "# fleet\ntls-d:right-password\n").unwrap();
    let mut args = tls_listener(&pki.server(), None);
    args.extend(["--broker-passwords".into(), arg(&passwd)]);
    let (_home_m, master) = start_master(args);
    let mqtts = master.mqtts.clone().expect("mqtts");
    let creds = ["--username", "tls-d", "--password", "wrong-password"].map(String::from);
    let (_home, agent) = start_agent(&master, "tls-d", &mqtts, &pki.ca.cert, &creds);
    agent
        .wait_log(&["connect refused", "wrong username or password"])
        .await;
    master
        .wait_log(&["broker refused client `tls-d`", "wrong password"])
        .await;
    assert_never_connected(&master, &agent, "tls-d");

    // The plain listener asks for the same credentials: no way around them.
    let (_home2, plain) = {
        let mut options = AgentOptions::new("tls-d2", &master.mqtt);
        master.provision(&mut options);
        options.extra_args = ["--username", "tls-d2", "--password", "guess"]
            .map(String::from)
            .to_vec();
        let mut home = AgentHome::new(options);
        let p = home.start();
        (home, p)
    };
    plain
        .wait_log(&["connect refused", "wrong username or password"])
        .await;
    master
        .wait_log(&["broker refused client `tls-d2`", "unknown user"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate_is_refused() {
    let pki = Pki::new("mtls");
    let (_home_m, master) = start_master(tls_listener(&pki.server(), Some(&pki.ca.cert)));
    let mqtts = master.mqtts.clone().expect("mqtts");
    let (_home, agent) = start_agent(&master, "tls-e", &mqtts, &pki.ca.cert, &[]);
    agent
        .wait_log(&["TLS refused", "CertificateRequired"])
        .await;
    master.wait_log(&["TLS handshake from", "refused"]).await;
    assert_never_connected(&master, &agent, "tls-e");
}

/// The agent and the master's own client, both over TLS to a real mosquitto (its TLS listener
/// with client certificates required).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_master_over_tls_to_mosquitto() {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("SKIPPED: {MOSQUITTO} is not installed");
        return;
    }
    let pki = Pki::new("mosq");
    let server = pki.server();
    // mosquitto started as root reads its files after dropping to its own user.
    set_mode(&server.key, 0o644);
    let mosquitto = tokio::task::spawn_blocking(move || {
        let addr = pick_free_port(IpAddr::from([127, 0, 0, 1])).expect("free port");
        let config = format!(
            "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate true\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type all\n",
            addr.port(),
            pki.ca.cert.display(),
            server.cert.display(),
            server.key.display()
        );
        let dir = TempDir::new("mosquitto-tls").expect("temp dir");
        (Mosquitto::start_with_config(dir, addr, &config), pki)
    })
    .await
    .expect("mosquitto start");
    let (mosquitto, pki) = mosquitto;
    let broker = mosquitto.addr.to_string();
    let master_cert = pki.client("tether-master");
    let (_home_m, master) = start_master(vec![
        "--broker".into(),
        format!("mqtts://{broker}"),
        "--broker-ca".into(),
        arg(&pki.ca.cert),
        "--broker-cert".into(),
        arg(&master_cert.cert),
        "--broker-key".into(),
        arg(&master_cert.key),
    ]);
    let (home, _agent) = start_agent(
        &master,
        "tls-f",
        &broker,
        &pki.ca.cert,
        &client_cert_args(&pki.client("tls-f")),
    );
    master.wait_available("tls-f").await;
    let marker = home.path().join("ran");
    let id = submit_touch(&master, "tls-f", &marker);
    let t = master.wait_finished(id).await;
    assert_eq!(task_state(&t), "succeeded", "{t}");
    assert!(marker.exists());
}

/// Bad TLS or password files stop the master at start with one line naming the file.
#[test]
fn master_refuses_bad_tls_and_password_files() {
    let pki = Pki::new("badfiles");
    let server = pki.server();
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").unwrap();
    let passwd = pki.path("passwd");
    std::fs::write(&passwd, "pi-1\n").unwrap();
    let data = TempDir::new("master-badfiles").expect("temp dir");
    let run = |extra: &[String], expect: &[&str]| {
        let out = Command::new(binary("tether-master").expect("tether-master"))
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data.path())
            .args(extra)
            .output()
            .expect("tether-master runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(expect.iter().all(|e| err.contains(e)), "{expect:?}: {err}");
    };
    let mut bad_cert = tls_listener(&server, None);
    bad_cert[3] = arg(&garbage);
    run(
        &bad_cert,
        &["--tls-listen", "garbage.pem", "no usable certificate"],
    );
    let bad_ca = tls_listener(&server, Some(&garbage));
    run(&bad_ca, &["garbage.pem", "no usable CA certificate"]);
    run(
        &["--broker-passwords".into(), arg(&passwd)],
        &["--broker-passwords", "passwd line 1", "user:secret"],
    );
}

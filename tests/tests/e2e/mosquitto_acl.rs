//! The shipped mosquitto configuration (broker-config/mosquitto.conf and tether.acl) run by the
//! real mosquitto, with only its ports and file paths changed: TLS with a CA made here by
//! `openssl` (harness::certs), a password for every client (mosquitto_passwd), and each agent
//! confined to its own topics. The clients are mosquitto_pub and mosquitto_sub over TLS.
//!
//! mosquitto drops a denied publish without telling the client (it still sends the PUBACK)
//! and grants a denied subscription but delivers nothing on it, so "never arrives" is shown by
//! order rather than by a timeout: the forbidden messages go first, then a permitted marker
//! through the same broker to the same subscriber; mosquitto handles one client's packets in
//! order and queues a subscriber's messages in order, so once the marker is there, anything
//! sent before it would be too. The marker arriving also shows that the permitted path works.
//!
//! Skipped (passes with a line saying so) when mosquitto, its clients or openssl are missing.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Instant;

use tether_master::broker::{pick_free_port, wait_for_listener};
use tether_tests::harness::WAIT;
use tether_tests::harness::agent::{AgentHome, AgentOptions};
use tether_tests::harness::bins::workspace_root;
use tether_tests::harness::broker::{MOSQUITTO, Mosquitto, readable_by_mosquitto};
use tether_tests::harness::certs::Pki;
use tether_tests::harness::tempdir::TempDir;

const MASTER: (&str, &str) = ("tether-master", "master-secret");
const PI1: (&str, &str) = ("pi-1", "pi-1-secret");
const PI2: (&str, &str) = ("pi-2", "pi-2-secret");

/// The shipped files, with the broker running them.
struct Broker {
    mosquitto: Mosquitto,
    /// The loopback listener without TLS (for a master on the broker's host).
    plain: SocketAddr,
    /// The TLS listener the boards use.
    tls: SocketAddr,
    ca: PathBuf,
    /// A CA that signed nothing this broker has.
    other_ca: PathBuf,
}

fn tools_present() -> bool {
    let missing: Vec<&str> = [
        MOSQUITTO,
        "/usr/bin/mosquitto_pub",
        "/usr/bin/mosquitto_sub",
        "/usr/bin/mosquitto_passwd",
        "/usr/bin/openssl",
    ]
    .into_iter()
    .filter(|p| !Path::new(p).exists())
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {} not installed (apt-get install mosquitto mosquitto-clients openssl)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// Runs a command to completion (bounded by [`WAIT`]) and returns its output.
fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{what} still running after {WAIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn run_ok(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, and an unrelated CA, under
/// the names the shipped config uses.
fn make_pki(dir: &Path) {
    let fleet = Pki::new("fleet");
    let server = fleet.server();
    let other = Pki::new("other");
    for (from, to) in [
        (&fleet.ca.cert, "ca.crt"),
        (&server.cert, "server.crt"),
        (&server.key, "server.key"),
        (&other.ca.cert, "other-ca.crt"),
    ] {
        std::fs::copy(from, dir.join(to)).expect("copy a certificate");
    }
}

/// broker-config/mosquitto.conf with its listeners moved to free loopback ports and its files
/// to `dir`. Every substitution must match, so a reshaped shipped file fails here.
fn adapt_config(shipped: &str, dir: &Path, plain: SocketAddr, tls: SocketAddr) -> String {
    let dir = dir.display();
    let mut config = shipped.to_owned();
    for (from, to) in [
        (
            "listener 1883 127.0.0.1\n".to_owned(),
            format!("listener {} 127.0.0.1\n", plain.port()),
        ),
        (
            "listener 8883\n".to_owned(),
            format!("listener {} 127.0.0.1\n", tls.port()),
        ),
        ("/etc/mosquitto/tether/".to_owned(), format!("{dir}/")),
        (
            "persistence_location /var/lib/mosquitto/".to_owned(),
            format!("persistence_location {dir}/"),
        ),
    ] {
        assert!(
            config.contains(&from),
            "broker-config/mosquitto.conf has no `{}`",
            from.trim()
        );
        config = config.replace(&from, &to);
    }
    assert!(
        config.contains("log_dest stderr"),
        "the harness reads mosquitto's stderr"
    );
    config
}

impl Broker {
    fn start() -> Option<Self> {
        if !tools_present() {
            return None;
        }
        let shipped = workspace_root().join("broker-config");
        let dir = TempDir::new("mosquitto-acl").expect("temp dir");
        make_pki(dir.path());
        let passwd = dir.join("passwd");
        run_ok(
            Command::new("mosquitto_passwd")
                .args(["-b", "-c"])
                .arg(&passwd)
                .args([MASTER.0, MASTER.1]),
        );
        for (user, pass) in [PI1, PI2] {
            run_ok(
                Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg(&passwd)
                    .args([user, pass]),
            );
        }
        std::fs::copy(shipped.join("tether.acl"), dir.join("tether.acl")).expect("tether.acl");
        readable_by_mosquitto(&[&dir.join("server.key"), &passwd]);

        let loopback = IpAddr::from([127, 0, 0, 1]);
        let plain = pick_free_port(loopback).expect("free port");
        let tls = pick_free_port(loopback).expect("free port");
        let shipped_conf =
            std::fs::read_to_string(shipped.join("mosquitto.conf")).expect("mosquitto.conf");
        let config = adapt_config(&shipped_conf, dir.path(), plain, tls);
        let ca = dir.join("ca.crt");
        let other_ca = dir.join("other-ca.crt");
        let mosquitto = Mosquitto::start_with_config(dir, tls, &config);
        assert!(
            wait_for_listener(plain, WAIT),
            "no loopback listener:\n{}",
            mosquitto.log()
        );
        Some(Self {
            mosquitto,
            plain,
            tls,
            ca,
            other_ca,
        })
    }

    /// `cmd` (mosquitto_pub or mosquitto_sub) as a client of the TLS listener, verifying the
    /// server against `ca`, logging in as `user`, at QoS 1.
    fn client(&self, mut cmd: Command, ca: &Path, (user, pass): (&str, &str)) -> Command {
        cmd.args(["-h", "127.0.0.1", "-p", &self.tls.port().to_string()])
            .arg("--cafile")
            .arg(ca)
            .args(["-u", user, "-P", pass, "-q", "1"]);
        cmd
    }

    /// Publishes one QoS 1 message (waiting for its PUBACK) as `user`; the output says
    /// whether the connection was accepted, not whether the ACL let the message through.
    fn publish(&self, user: (&str, &str), topic: &str, payload: &str) -> Output {
        run(self
            .client(Command::new("mosquitto_pub"), &self.ca, user)
            .args(["-t", topic, "-m", payload]))
    }

    fn publish_ok(&self, user: (&str, &str), topic: &str, payload: &str) {
        let out = self.publish(user, topic, payload);
        assert!(
            out.status.success(),
            "{} could not publish on {topic}: {}\n{}",
            user.0,
            String::from_utf8_lossy(&out.stderr),
            self.mosquitto.log()
        );
    }

    /// Subscribes as `user` to `filters` and waits (bounded) for the SUBACK.
    fn subscribe(&self, user: (&str, &str), filters: &[&str]) -> Subscriber {
        // Line-buffered: mosquitto_sub's debug lines are not flushed into a pipe otherwise.
        let mut sub = Command::new("stdbuf");
        sub.args(["-oL", "mosquitto_sub"]);
        let mut cmd = self.client(sub, &self.ca, user);
        // -d prints the SUBACK (the subscription is in place), -v each message as
        // `topic payload`; the client id is the user's, as an agent's is its id.
        cmd.args(["-d", "-v", "-i", user.0]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            // Lossy: a payload need not be text.
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut subscriber = Subscriber {
            user: user.0.to_owned(),
            child,
            lines,
            seen: Vec::new(),
            connacks: 0,
        };
        subscriber.wait_for(|l| l.starts_with("Subscribed (mid:"), &self.mosquitto);
        subscriber
    }
}

/// A running mosquitto_sub; killed when dropped.
struct Subscriber {
    user: String,
    child: Child,
    lines: Receiver<String>,
    /// Every message (`topic payload`) received so far.
    seen: Vec<String>,
    /// How many times it connected (mosquitto_sub reconnects when its session is taken).
    connacks: usize,
}

impl Subscriber {
    /// Reads output until a line matches `done` (bounded by [`WAIT`]), keeping the messages.
    fn wait_for(&mut self, done: impl Fn(&str) -> bool, broker: &Mosquitto) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let matched = done(&line);
                    if line.contains("received CONNACK") {
                        self.connacks += 1;
                    }
                    if line.starts_with("tether/") {
                        self.seen.push(line);
                    }
                    if matched {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no expected line within {WAIT:?}; messages: {:?}\n{}",
                    self.user,
                    self.seen,
                    broker.log()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: mosquitto_sub ended; messages: {:?}\n{}",
                    self.user,
                    self.seen,
                    broker.log()
                ),
            }
        }
    }

    fn wait_message(&mut self, message: &str, broker: &Mosquitto) {
        self.wait_for(|l| l == message, broker);
    }

    fn saw_topic(&self, topic: &str) -> bool {
        self.seen
            .iter()
            .any(|l| l.split_once(' ').is_some_and(|(t, _)| t == topic))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wrong_password_unknown_user_and_anonymous_are_refused() {
    let Some(b) = Broker::start() else { return };
    let topic = "tether/agent/pi-1/event";
    for user in [("pi-1", "wrong"), ("pi-1", PI2.1), ("pi-9", "pi-9-secret")] {
        let err = refused(&b.publish(user, topic, "x"));
        assert!(err.contains("not authorised"), "{user:?}: {err}");
    }
    let anonymous = run(Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.tls.port().to_string()])
        .arg("--cafile")
        .arg(&b.ca)
        .args(["-t", topic, "-m", "x", "-q", "1"]));
    assert!(refused(&anonymous).contains("not authorised"));
    // The loopback listener wants the password too.
    let plain = |pass: &str| {
        run(Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &b.plain.port().to_string()])
            .args(["-u", "pi-1", "-P", pass, "-t", topic, "-m", "x", "-q", "1"]))
    };
    assert!(refused(&plain("wrong")).contains("not authorised"));
    // The right password is accepted on both listeners: the refusals are about the password.
    assert!(plain(PI1.1).status.success());
    b.publish_ok(PI1, topic, "x");
}

#[test]
fn a_server_not_signed_by_the_configured_ca_is_refused() {
    let Some(b) = Broker::start() else { return };
    let topic = "tether/agent/pi-1/event";
    let wrong_ca = run(b
        .client(Command::new("mosquitto_pub"), &b.other_ca, PI1)
        .args(["-t", topic, "-m", "x"]));
    let err = refused(&wrong_ca);
    assert!(err.contains("TLS"), "{err}");
    // Plain MQTT on the TLS port gets nowhere either.
    let no_tls = run(Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.tls.port().to_string()])
        .args(["-u", PI1.0, "-P", PI1.1, "-t", topic, "-m", "x", "-q", "1"]));
    refused(&no_tls);
    // The same client with the right CA gets through.
    b.publish_ok(PI1, topic, "x");
}

#[test]
fn an_agent_publishes_only_its_own_events_heartbeats_and_presence() {
    let Some(b) = Broker::start() else { return };
    let mut master = b.subscribe(MASTER, &["tether/#"]);
    let forbidden = [
        "tether/agent/pi-2/event",
        "tether/agent/pi-2/heartbeat",
        "tether/agent/pi-2/presence",
        "tether/agent/pi-1/cmd",
        "tether/agent/pi-2/cmd",
        "tether/master/heartbeat",
        "tether/master/presence",
        "tether/elsewhere",
    ];
    for topic in forbidden {
        // Accepted at the protocol level (PUBACK), dropped by the ACL.
        b.publish_ok(PI1, topic, "forged");
    }
    for (leaf, payload) in [
        ("heartbeat", "hb"),
        ("presence", "online 0000abcd"),
        ("event", "marker"),
    ] {
        b.publish_ok(PI1, &format!("tether/agent/pi-1/{leaf}"), payload);
    }
    master.wait_message("tether/agent/pi-1/event marker", &b.mosquitto);
    for topic in forbidden {
        assert!(
            !master.saw_topic(topic),
            "pi-1 published on {topic}: {:?}",
            master.seen
        );
    }
    for leaf in ["heartbeat", "presence", "event"] {
        assert!(
            master.saw_topic(&format!("tether/agent/pi-1/{leaf}")),
            "pi-1's own {leaf} did not arrive: {:?}",
            master.seen
        );
    }
}

#[test]
fn an_agent_reads_only_its_own_commands_and_the_masters_topics() {
    let Some(b) = Broker::start() else { return };
    // pi-1 asks for pi-2's commands and events, by name and by wildcard, beside its own.
    // (One connection per user: the client id is the user name.)
    let mut pi1 = b.subscribe(
        PI1,
        &[
            "tether/agent/pi-2/cmd",
            "tether/agent/+/cmd",
            "tether/agent/pi-2/event",
            "tether/master/#",
        ],
    );
    let mut pi2 = b.subscribe(PI2, &["tether/agent/pi-2/cmd"]);

    b.publish_ok(MASTER, "tether/agent/pi-2/cmd", "for-pi-2");
    b.publish_ok(PI2, "tether/agent/pi-2/event", "pi-2-event");
    b.publish_ok(MASTER, "tether/master/heartbeat", "master-hb");
    b.publish_ok(MASTER, "tether/agent/pi-1/cmd", "for-pi-1");

    // The master wrote a command and pi-2 reads its own.
    pi2.wait_message("tether/agent/pi-2/cmd for-pi-2", &b.mosquitto);
    // pi-1 gets its own command (the marker) and the master's heartbeat, never pi-2's
    // command or event, which reached the broker before either.
    pi1.wait_message("tether/agent/pi-1/cmd for-pi-1", &b.mosquitto);
    assert!(
        pi1.seen
            .contains(&"tether/master/heartbeat master-hb".to_owned()),
        "{:?}",
        pi1.seen
    );
    assert!(
        !pi1.saw_topic("tether/agent/pi-2/cmd"),
        "pi-1 read pi-2's command: {:?}",
        pi1.seen
    );
    assert!(
        !pi1.saw_topic("tether/agent/pi-2/event"),
        "pi-1 read pi-2's event: {:?}",
        pi1.seen
    );
}

#[test]
fn the_master_reads_and_writes_everything() {
    let Some(b) = Broker::start() else { return };
    // Writes: what each agent may read arrives. (The master publishes and subscribes in turn:
    // its user name is its client id, so a second connection would replace the first.)
    let mut pi1 = b.subscribe(PI1, &["tether/master/#"]);
    let mut pi2 = b.subscribe(PI2, &["tether/agent/pi-2/cmd"]);
    b.publish_ok(MASTER, "tether/master/presence", "online 00000001");
    b.publish_ok(MASTER, "tether/master/heartbeat", "hb");
    b.publish_ok(MASTER, "tether/agent/pi-2/cmd", "start");
    pi1.wait_message("tether/master/presence online 00000001", &b.mosquitto);
    pi1.wait_message("tether/master/heartbeat hb", &b.mosquitto);
    pi2.wait_message("tether/agent/pi-2/cmd start", &b.mosquitto);
    drop((pi1, pi2));

    // Reads: every agent's events, heartbeats and presence.
    let mut master = b.subscribe(MASTER, &["tether/#"]);
    for (user, leaf) in [(PI1, "event"), (PI2, "heartbeat"), (PI2, "presence")] {
        let topic = format!("tether/agent/{}/{leaf}", user.0);
        b.publish_ok(user, &topic, "x");
        master.wait_message(&format!("{topic} x"), &b.mosquitto);
    }
}

#[test]
fn the_client_id_is_the_user_name() {
    let Some(b) = Broker::start() else { return };
    let mut pi2 = b.subscribe(PI2, &["tether/agent/pi-2/cmd"]);
    // pi-1 connects claiming pi-2's client id: mosquitto replaces it with pi-1, so pi-2's
    // session is not taken over and pi-2 stays connected.
    run_ok(b.client(Command::new("mosquitto_pub"), &b.ca, PI1).args([
        "-i",
        "pi-2",
        "-t",
        "tether/agent/pi-1/event",
        "-m",
        "x",
    ]));
    b.publish_ok(MASTER, "tether/agent/pi-2/cmd", "still-here");
    pi2.wait_message("tether/agent/pi-2/cmd still-here", &b.mosquitto);
    let log = b.mosquitto.log();
    assert_eq!(
        pi2.connacks, 1,
        "pi-2 was disconnected and reconnected:\n{log}"
    );
    assert!(
        !log.contains("already connected, closing old connection"),
        "a session was taken over:\n{log}"
    );
}

#[test]
fn the_real_agent_works_within_its_acl_over_tls() {
    let Some(b) = Broker::start() else { return };
    let mut master = b.subscribe(MASTER, &["tether/#"]);
    let mut options = AgentOptions::new(PI1.0, &format!("mqtts://{}", b.tls));
    options.extra_args = ["--tls-ca-file", &b.ca.to_string_lossy()]
        .into_iter()
        .chain(["--username", PI1.0, "--password", PI1.1])
        .map(String::from)
        .collect();
    let mut home = AgentHome::new(options);
    let agent = home.start();
    // Its presence (a permitted publish, and the will it registered) reaches the master, and
    // it subscribed (cmd, master topics, its presence) without being cut off.
    master.wait_for(
        |l| l.starts_with("tether/agent/pi-1/presence online "),
        &b.mosquitto,
    );
    let online = master.seen.last().expect("the presence line").clone();
    // `topic online <incarnation> <mac>`
    let incarnation = online.split(' ').nth(2).expect("an incarnation").to_owned();
    agent.sigterm();
    let offline = format!("tether/agent/pi-1/presence offline {incarnation} stopped");
    master.wait_for(|l| l.starts_with(&offline), &b.mosquitto);
    assert!(
        !b.mosquitto
            .log()
            .contains("pi-1 disconnected, not authorised"),
        "{}",
        b.mosquitto.log()
    );
}

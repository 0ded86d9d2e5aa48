//! The `tether-master` binary for real: its embedded broker, its HTTP API and `tetherctl`, with
//! the test playing an agent over rumqttc (presence, heartbeats, events in the wire format).
//! Ports are 0, every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, Packet, QoS};
use serde_json::{Value, json};
use tether_core::auth::{AgentKey, MasterKeys, Verifier, parse_hex};
use tether_core::message::{
    AgentHeartbeat, CommandBody, Echo, Event, EventKind, Exit, Message, Report, Stream, TaskRef,
};
use tether_core::presence::{Presence, State};
use tether_core::topic::{Topic, validate_id};
use tether_core::wire::{self, Signer};
use tether_master::broker::{BrokerAddr, ClientSettings, EmbeddedBroker};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct MasterProc {
    pub(crate) child: Child,
    mqtt: BrokerAddr,
    pub(crate) http: String,
    /// The admin token the master wrote on first start.
    pub(crate) token: String,
    keys: MasterKeys,
}

impl MasterProc {
    pub(crate) fn start(data: &Path) -> Self {
        Self::start_with(data, &[])
    }

    /// [`Self::start`] with more `run` options (e.g. `--api-tls-cert`). With HTTPS, `http` is
    /// the address of the ready line's `https=`.
    pub(crate) fn start_with(data: &Path, extra: &[&std::ffi::OsStr]) -> Self {
        // `--config /dev/null`: these flags only, whatever /etc/tether/master.toml holds.
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-master"))
            .args(["run", "--config", "/dev/null", "--listen", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0"])
            .args(["--heartbeat-period-ms", "500", "--data-dir"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("the ready line");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_owned()
        };
        assert!(line.starts_with("tether-master ready "), "{line:?}");
        let mqtt = BrokerAddr::parse(&format!("mqtt://{}", field("mqtt="))).unwrap();
        let http = if line.contains(" https=") {
            field("https=")
        } else {
            field("http=")
        };
        let keys = MasterKeys::from_keys(&[parse_hex(&field("key=")).unwrap()]).unwrap();
        let token = std::fs::read_to_string(data.join("admin.token"))
            .expect("the admin token of the first start")
            .trim()
            .to_owned();
        Self {
            child,
            mqtt,
            http,
            token,
            keys,
        }
    }

    /// The agent's MAC key from the master's API (created on first ask, then the same).
    pub(crate) fn agent_key(&self, id: &str) -> AgentKey {
        let (status, v) = self.post(&format!("/api/agents/{id}/key"), json!({}));
        assert_eq!(status, 200, "{v}");
        parse_hex(v["agent_key"].as_str().unwrap()).unwrap()
    }

    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body.to_string()))
    }

    pub(crate) fn call(&self, method: &str, path: &str, body: Option<String>) -> (u16, Value) {
        let (status, text) = crate::plain_http::request(
            &self.http,
            Some(&self.token),
            method,
            path,
            body.as_deref(),
        )
        .unwrap();
        // `/metrics` is text; everything else is JSON.
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Polls `path` until `f` accepts the answer.
    pub(crate) fn wait_for(&self, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (_, v) = self.get(path);
            if f(&v) {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: last {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for MasterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's agent: a rumqttc connection with Tether's options.
/// The journal every fake agent names (each keeps its journal across restarts).
const FAKE_JOURNAL: u32 = 0xf00d;

pub(crate) struct FakeAgent {
    id: String,
    inc: u32,
    key: AgentKey,
    master_keys: MasterKeys,
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Packet>,
    /// The newest master heartbeat heard, which the agent's heartbeats echo.
    echo: watch::Receiver<Option<Echo>>,
    heartbeats: AtomicU32,
}

impl FakeAgent {
    /// A new agent, heartbeating and available for tasks.
    pub(crate) async fn online(master: &MasterProc, id: &str, inc: u32) -> Self {
        let agent = Self::connect(master, id, inc).await;
        agent.heartbeat(0, &[]).await;
        master.wait_for("/api/agents", "available", |v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|a| a["id"] == id && a["available"] == true)
        });
        agent
    }

    /// A new agent: its key made by the master's API.
    pub(crate) async fn connect(master: &MasterProc, id: &str, inc: u32) -> Self {
        Self::connect_with_key(master, id, inc, master.agent_key(id)).await
    }

    /// An agent that already has its key (the master hands a key out only when it makes it).
    pub(crate) async fn connect_with_key(
        master: &MasterProc,
        id: &str,
        inc: u32,
        key: AgentKey,
    ) -> Self {
        let presence_topic = format!("tether/agent/{id}/presence");
        let will = Presence {
            state: State::Lost,
            incarnation: inc,
        }
        .render_signed(&presence_topic, Signer::Agent(&key));
        let settings = ClientSettings {
            client_id: id.to_owned(),
            prefix: "tether".into(),
            presence: Topic::AgentPresence(validate_id(id).unwrap()),
            incarnation: inc,
            heartbeat_period: Duration::from_secs(1),
            credentials: None,
            tls: None,
            will: Some(will.as_str().to_owned()),
        };
        let broker = &master.mqtt;
        let (client, mut eventloop) = settings.connect(broker, 64).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (echo_tx, echo) = watch::channel(None);
        tokio::spawn(async move {
            while let Ok(ev) = eventloop.poll().await {
                let MqttEvent::Incoming(p) = ev else { continue };
                if let Packet::Publish(p) = &p
                    && let Ok(Message::MasterHeartbeat(hb)) = wire::decode(&p.payload)
                {
                    echo_tx.send_replace(Some(hb.echo()));
                }
                if tx.send(p).is_err() {
                    return;
                }
            }
        });
        let mut agent = Self {
            id: id.to_owned(),
            inc,
            key,
            master_keys: master.keys.clone(),
            client,
            rx,
            echo,
            heartbeats: AtomicU32::new(0),
        };
        agent
            .next("CONNACK", |p| matches!(p, Packet::ConnAck(_)).then_some(()))
            .await;
        agent
            .client
            .subscribe(format!("tether/agent/{id}/cmd"), QoS::AtLeastOnce)
            .await
            .unwrap();
        agent
            .next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
        agent
            .client
            .subscribe("tether/master/heartbeat", QoS::AtMostOnce)
            .await
            .unwrap();
        agent
            .next("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
            .await;
        let online = Presence {
            state: State::Online,
            incarnation: inc,
        }
        .render_signed(&presence_topic, Signer::Agent(&key));
        agent
            .publish("presence", true, online.as_bytes().to_vec())
            .await;
        agent.heartbeat(0, &[]).await;
        agent
    }

    pub(crate) async fn next<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Packet) -> Option<T>,
    ) -> T {
        timeout(WAIT, async {
            loop {
                let p = self.rx.recv().await.expect("event loop alive");
                if let Some(v) = f(&p) {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }

    pub(crate) async fn command(
        &mut self,
        what: &str,
        mut f: impl FnMut(&CommandBody) -> bool,
    ) -> CommandBody {
        let keys = self.master_keys.clone();
        self.next(what, |p| match p {
            // Only what the master signed for this topic.
            Packet::Publish(p) => {
                match wire::decode_verified(&p.payload, &p.topic, Verifier::Master(&keys)) {
                    Ok(Message::Command(c)) if f(&c.body) => Some(c.body),
                    _ => None,
                }
            }
            _ => None,
        })
        .await
    }

    /// Waits for the next Start and gives its task spec.
    pub(crate) async fn start(&mut self) -> tether_core::message::TaskSpec {
        match self
            .command("Start", |c| matches!(c, CommandBody::Start(_)))
            .await
        {
            CommandBody::Start(spec) => spec,
            _ => unreachable!("only a Start matches"),
        }
    }

    /// Reports `task` accepted, started and exited 0, as events `first`, `first + 1` and
    /// `first + 2`.
    pub(crate) async fn succeed(&self, first: u64, task: TaskRef) {
        self.event(first, EventKind::Accepted { task }).await;
        self.event(first + 1, EventKind::Started { task, pid: 9 })
            .await;
        let finished = EventKind::Finished {
            task,
            exit: tether_core::message::Exit::Code(0),
            cause: None,
            output_dropped: 0,
        };
        self.event(first + 2, finished).await;
    }

    /// Says goodbye as a draining agent does: presence `stopped`, retained.
    pub(crate) async fn stop(&self) {
        let stopped = Presence {
            state: State::Stopped,
            incarnation: self.inc,
        }
        .render_signed(&self.topic("presence"), Signer::Agent(&self.key));
        self.publish("presence", true, stopped.as_bytes().to_vec())
            .await;
    }

    async fn publish(&self, leaf: &str, retain: bool, payload: Vec<u8>) {
        let topic = self.topic(leaf);
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }

    /// A heartbeat echoing the master's newest (waiting for one: the master counts no other).
    pub(crate) async fn heartbeat(&self, last_seq: u64, tasks: &[TaskRef]) {
        let mut echo = self.echo.clone();
        let echo = *timeout(WAIT, echo.wait_for(Option::is_some))
            .await
            .expect("a master heartbeat within the wait")
            .expect("event loop alive");
        let hb = Message::AgentHeartbeat(AgentHeartbeat {
            incarnation: self.inc,
            journal: FAKE_JOURNAL,
            counter: self.heartbeats.fetch_add(1, Ordering::Relaxed) + 1,
            echo,
            last_seq,
            tasks: heapless::Vec::from_slice(tasks).unwrap(),
            more_tasks: false,
            journal_bytes: 0,
        });
        let bytes = self.mac(&hb, "heartbeat");
        self.publish("heartbeat", false, bytes).await;
    }

    pub(crate) async fn event(&self, seq: u64, kind: EventKind) {
        self.event_at(seq, 0, kind).await;
    }

    /// An event that happened at `at_unix_ms` by the agent's clock (0: the agent has none).
    pub(crate) async fn event_at(&self, seq: u64, at_unix_ms: u64, kind: EventKind) {
        let ev = Message::Event(Report {
            journal: FAKE_JOURNAL,
            event: Event {
                seq,
                at_unix_ms,
                kind,
            },
        });
        let bytes = self.mac(&ev, "event");
        self.publish("event", false, bytes).await;
    }

    fn topic(&self, leaf: &str) -> String {
        format!("tether/agent/{}/{leaf}", self.id)
    }

    fn mac(&self, msg: &Message, leaf: &str) -> Vec<u8> {
        let mut buf = [0u8; wire::MAX_MESSAGE];
        wire::encode_mac(msg, &self.topic(leaf), &self.key, &mut buf)
            .unwrap()
            .to_vec()
    }
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = [0u8; wire::MAX_MESSAGE];
    wire::encode(msg, &mut buf).unwrap().to_vec()
}

/// `tetherctl` is another package's binary (tether-cli), so cargo does not build it for these
/// tests: built here once, beside `tether-master`, in the same profile.
/// Runs a `tether-master` command until its first stdout line (the ready line, or nothing
/// within [`WAIT`]), then kills it: that line and its stderr.
pub(crate) trait ReadyThenStop {
    fn spawn_ready_then_stop(&mut self) -> (String, String);
}

impl ReadyThenStop for Command {
    fn spawn_ready_then_stop(&mut self) -> (String, String) {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        (line, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub(crate) fn tetherctl_bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // scripts/test.sh builds it once for every test process (each asking cargo again
        // would rebuild it with this package's features, minutes on two cores).
        if let Some(path) = std::env::var_os("TETHER_TETHERCTL_BIN") {
            return path.into();
        }
        let master = std::path::Path::new(env!("CARGO_BIN_EXE_tether-master"));
        let release = master.parent().is_some_and(|d| d.ends_with("release"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "--quiet", "-p", "tether-cli", "--bin", "tetherctl"]);
        if release {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building tetherctl failed"
        );
        master.with_file_name("tetherctl")
    })
}

/// `tetherctl` for the master at `http` with `token`, to be given its arguments.
pub(crate) fn tetherctl_command(http: &str, token: &str) -> Command {
    let mut command = Command::new(tetherctl_bin());
    command
        .env("TETHER_MASTER", format!("http://{http}"))
        .env("TETHER_TOKEN", token);
    command
}

/// Runs `tetherctl` as the master's admin: whether it succeeded, its stdout and stderr.
pub(crate) fn tetherctl(master: &MasterProc, args: &[&str]) -> (bool, String, String) {
    tetherctl_at(&master.http, &master.token, args)
}

fn tetherctl_at(http: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = tetherctl_command(http, token).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_round_trip_api_cli_and_kill9_restart() {
    // Built before the fake agent connects: a build blocks this thread, and with it the
    // agent's heartbeats.
    tetherctl_bin();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(dir.path());
    let mut agent = FakeAgent::connect(&master, "pi-1", 0x11).await;
    master.wait_for("/api/agents", "pi-1 available", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "pi-1" && a["available"] == true)
    });

    // Errors are JSON with a status.
    let (status, v) = master.post("/api/tasks", json!({ "agent": "ghost", "argv": ["true"] }));
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("ghost"));
    let (status, v) = master.post(
        "/api/tasks",
        json!({ "agent": "pi-1", "argv": ["true"], "policy": { "heartbeat_period_ms": 1000, "heartbeat_timeout_ms": 1500 } }),
    );
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["code"], "invalid");
    assert!(v["error"].as_str().unwrap().contains("multiple"));
    let (status, v) = master.post("/api/tasks", json!({ "argv": "not a list" }));
    assert_eq!(status, 422, "{v}");
    let (status, v) = master.call("POST", "/api/tasks", Some("{\"argv\": [".into()));
    assert_eq!((status, &v["code"]), (400, &json!("bad_request")), "{v}");
    assert_eq!(master.get("/api/tasks/999").0, 404);

    // Submitted through tetherctl; the agent gets the start and reports.
    let (ok, out, err) = tetherctl(
        &master,
        &[
            "submit",
            "--agent",
            "pi-1",
            "--heartbeat-period",
            "1s",
            "--heartbeat-timeout",
            "3s",
            "--",
            "echo",
            "hi",
        ],
    );
    assert!(ok, "{err}");
    let id: u64 = out.trim().parse().unwrap();
    let spec = agent.start().await;
    let task = spec.task;
    assert_eq!(task.task, id);
    // Who submitted it is in its history.
    let (_, v) = master.get(&format!("/api/tasks/{id}"));
    assert_eq!(v["history"][0]["who"], "admin", "{v}");
    assert_eq!(v["history"][0]["action"], "submit", "{v}");
    agent.event(1, EventKind::Accepted { task }).await;
    agent.event(2, EventKind::Started { task, pid: 9 }).await;
    agent
        .event(
            3,
            EventKind::Output {
                task,
                stream: Stream::Stdout,
                offset: 0,
                data: heapless::Vec::from_slice(b"hi\n").unwrap(),
            },
        )
        .await;
    agent
        .event(
            4,
            EventKind::Finished {
                task,
                exit: Exit::Code(0),
                cause: None,
                output_dropped: 0,
            },
        )
        .await;
    agent
        .command("Ack 4", |c| matches!(c, CommandBody::Ack { up_to: 4 }))
        .await;
    let v = master.wait_for(&format!("/api/tasks/{id}"), "succeeded", |v| {
        v["task"]["state"] == "succeeded"
    });
    assert_eq!(v["attempts"][0]["agent_id"], "pi-1");
    assert_eq!(v["events"].as_array().unwrap().len(), 4);
    let (ok, out, _) = tetherctl(&master, &["logs", &id.to_string()]);
    assert!(ok);
    assert_eq!(out, "hi\n");
    // `show` is for people: state, who submitted it, the attempt's exit, output as text.
    let (ok, out, err) = tetherctl(&master, &["show", &id.to_string()]);
    assert!(ok, "{err}");
    for needle in [
        "succeeded",
        "submit by admin",
        "exit 0",
        "   hi",
        "attempt ",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    let (ok, out, _) = tetherctl(&master, &["show", "--json", &id.to_string()]);
    assert!(ok && serde_json::from_str::<Value>(&out).is_ok(), "{out}");
    let (ok, out, _) = tetherctl(&master, &["tasks"]);
    assert!(
        ok && out.contains("succeeded") && out.contains("echo hi"),
        "{out}"
    );
    let (ok, _, err) = tetherctl(&master, &["kill", &id.to_string()]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1);
    assert!(
        err.contains("already finished") && err.contains("409"),
        "{err}"
    );
    let (ok, _, err) = tetherctl_at("127.0.0.1:1", "", &["agents"]);
    assert!(!ok && err.starts_with("tetherctl: cannot reach"), "{err}");

    // kill -9 and restart on the same data: nothing lost, the replay is a duplicate.
    master.kill9();
    let key = agent.key;
    drop(agent);
    let master = MasterProc::start(dir.path());
    // The key is kept but never handed out again; the agent's MAC'd event below is taken, so
    // the restarted master still has it.
    let (status, v) = master.post("/api/agents/pi-1/key", json!({}));
    assert_eq!((status, &v["code"]), (409, &json!("conflict")), "{v}");
    let mut agent = FakeAgent::connect_with_key(&master, "pi-1", 0x11, key).await;
    agent
        .event(
            4,
            EventKind::Finished {
                task,
                exit: Exit::Code(0),
                cause: None,
                output_dropped: 0,
            },
        )
        .await;
    agent
        .command("Ack 4 again", |c| {
            matches!(c, CommandBody::Ack { up_to: 4 })
        })
        .await;
    let (_, v) = master.get(&format!("/api/tasks/{id}"));
    assert_eq!(v["task"]["state"], "succeeded");
    assert_eq!(v["events"].as_array().unwrap().len(), 4);
    master.wait_for("/api/agents", "pi-1 back", |v| v[0]["available"] == true);
    let (status, v) = master.post("/api/tasks", json!({ "agent": "pi-1", "argv": ["true"] }));
    assert_eq!(status, 201);
    assert!(v["id"].as_u64().unwrap() > id);
    let CommandBody::Start(spec) = agent
        .command("second Start", |c| matches!(c, CommandBody::Start(_)))
        .await
    else {
        unreachable!()
    };
    assert!(spec.task.attempt > task.attempt);
    // The presence of the master is retained text.
    let (_, status) = master.get("/api/status");
    assert_eq!(status["connected"], true);
}

#[test]
fn decode_reads_mosquitto_sub_lines() {
    if !std::path::Path::new("/usr/bin/mosquitto_sub").exists() {
        // CI installs mosquitto-clients; a machine without it skips with the reason.
        assert!(
            std::env::var_os("TETHER_CI").is_none(),
            "TETHER_CI is set but mosquitto_sub is not installed"
        );
        eprintln!("SKIPPED: no mosquitto_sub (apt-get install mosquitto-clients)");
        return;
    }
    let broker = EmbeddedBroker::start_local().unwrap();
    let addr = broker.broker_addr();
    let dir = tempfile::tempdir().unwrap();
    let hb = encode(&Message::AgentHeartbeat(AgentHeartbeat {
        incarnation: 7,
        journal: 9,
        counter: 12,
        echo: Some(Echo {
            epoch: 3,
            counter: 40,
        }),
        last_seq: 3,
        tasks: heapless::Vec::new(),
        more_tasks: false,
        journal_bytes: 10,
    }));
    // Retained, so a subscriber started afterwards gets all three without a race.
    let messages: [(&str, Vec<u8>); 3] = [
        ("tether/agent/pi-1/heartbeat", hb),
        (
            "tether/agent/pi-1/presence",
            b"offline 00000007 lost".to_vec(),
        ),
        ("tether/agent/pi-1/event", b"\x09garbage".to_vec()),
    ];
    for (topic, payload) in &messages {
        let file = dir.path().join("payload");
        std::fs::write(&file, payload).unwrap();
        let status = Command::new("/usr/bin/mosquitto_pub")
            .args([
                "-h",
                &addr.host,
                "-p",
                &addr.port.to_string(),
                "-q",
                "1",
                "-r",
                "-t",
                topic,
                "-f",
            ])
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut sub = Command::new("/usr/bin/mosquitto_sub")
        .args([
            "-h",
            &addr.host,
            "-p",
            &addr.port.to_string(),
            "-t",
            "tether/#",
        ])
        .args(["-C", "3", "-W", "20", "-F", "%t %x"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let decode = Command::new(tetherctl_bin())
        .arg("decode")
        .stdin(sub.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(sub.wait().unwrap().success());
    assert!(decode.status.success());
    let lines: Vec<Value> = String::from_utf8(decode.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let by_topic = |t: &str| lines.iter().find(|l| l["topic"] == t).unwrap().clone();
    let hb = by_topic("tether/agent/pi-1/heartbeat");
    assert_eq!(hb["message"]["AgentHeartbeat"]["last_seq"], 3);
    assert_eq!(hb["auth"], "None", "decode names the scheme: {hb}");
    assert_eq!(hb["message"]["AgentHeartbeat"]["journal_bytes"], 10);
    let p = by_topic("tether/agent/pi-1/presence");
    assert_eq!(p["presence"], "offline 00000007 lost");
    assert_eq!(p["state"], "lost");
    let bad = by_topic("tether/agent/pi-1/event");
    assert!(bad["error"].as_str().unwrap().contains("version"), "{bad}");
}

/// `--signing-key FILE` signs with that seed (the ready line shows its public key); a file that
/// is not a key stops the master with one line naming it.
#[test]
fn signing_key_file_is_used_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("signing.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let expected = tether_core::auth::SigningKey::from_seed([0x5a; 32])
        .unwrap()
        .public_key();
    let run = |data: &str| {
        Command::new(env!("CARGO_BIN_EXE_tether-master"))
            .args(["run", "--config", "/dev/null", "--listen", "127.0.0.1:0"])
            .args(["--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join(data))
            .arg("--signing-key")
            .arg(&key_file)
            .env("RUST_LOG", "off")
            .spawn_ready_then_stop()
    };
    let (line, _) = run("a");
    let key = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("key="))
        .unwrap_or_else(|| panic!("no key in {line:?}"));
    assert_eq!(parse_hex::<32>(key).unwrap(), expected);
    assert!(
        !dir.path().join("a/master.key").exists(),
        "no key of its own"
    );

    std::fs::write(&key_file, "not a key\n").unwrap();
    let (line, err) = run("b");
    assert!(line.is_empty(), "{line}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("signing.key") && err.contains("hex digits"),
        "{err}"
    );
}

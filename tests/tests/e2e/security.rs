//! An intruder on the broker: any MQTT client can publish anywhere (rumqttd has no topic ACLs),
//! so the real master and real agents must refuse what it publishes. It captures real commands
//! and publishes them again, moves them to another agent's topic, signs commands with its own
//! key or not at all, forges events, heartbeats and presence for an agent, and replays the
//! master's heartbeats to keep a `kill` task alive. Nothing it sends runs or is stored; every
//! refusal is logged and counted; valid commands still run after agent and master restarts.
//! Over the master's embedded rumqttd and over mosquitto.

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde_json::json;
use tether_core::auth::SigningKey;
use tether_core::message::{
    AgentHeartbeat, Command, CommandBody, Event, EventKind, Exit, KillCause, Message, Report,
    TaskRef,
};
use tether_core::presence::{Presence, State};
use tether_core::wire;
use tether_tests::both_brokers;
use tether_tests::harness::WAIT;
use tether_tests::harness::agent::{AgentHome, AgentOptions, AgentProcess};
use tether_tests::harness::broker::{BrokerKind, TestBroker};
use tether_tests::harness::fleet::{fast_policy, task};
use tether_tests::harness::master::{scripted_pair, sh, task_ref};
use tether_tests::harness::master_proc::{MasterHome, MasterOptions, MasterProcess, task_state};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A broker client with no business here: it subscribes and publishes as it likes.
struct Intruder {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Intruder {
    async fn connect(broker: &str, subscribe: &[&str]) -> Self {
        let (host, port) = broker.rsplit_once(':').expect("host:port");
        let mut options = MqttOptions::new("intruder", host, port.parse().expect("port"));
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subacks, mut subacked) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        let _ = subacks.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        for filter in subscribe {
            client
                .subscribe(*filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe queued");
            timeout(WAIT, subacked.recv())
                .await
                .expect("SUBACK in time")
                .expect("event loop alive");
        }
        Self { client, rx }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }

    /// The next captured message on `topic` that `f` accepts.
    async fn capture(&mut self, topic: &str, mut f: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
        timeout(WAIT, async {
            loop {
                let (t, payload) = self.rx.recv().await.expect("event loop alive");
                if t == topic && f(&payload) {
                    return payload;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing captured on {topic} within {WAIT:?}"))
    }
}

fn cmd_topic(id: &str) -> String {
    format!("tether/agent/{id}/cmd")
}

fn is_start_of(payload: &[u8], task: u64) -> bool {
    matches!(
        wire::decode(payload),
        Ok(Message::Command(Command { body: CommandBody::Start(ref s), .. })) if s.task.task == task
    )
}

/// A start of `task`/`attempt` that appends to `marker`, as the intruder would write it.
fn forged_start(epoch: u32, counter: u64, task: u64, marker: &Path) -> Message {
    let mut spec = sh(task, &format!("echo forged >> {}", marker.display()));
    spec.task = TaskRef {
        task,
        attempt: task + 1_000,
    };
    Message::Command(Command {
        epoch,
        counter,
        journal: 0,
        body: CommandBody::Start(spec),
    })
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut buf = [0u8; wire::MAX_MESSAGE];
    wire::encode(msg, &mut buf).unwrap().to_vec()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn start_agent(master: &MasterProcess, id: &str) -> (AgentHome, AgentProcess) {
    let mut options = AgentOptions::new(id, &master.mqtt);
    master.provision(&mut options);
    let mut home = AgentHome::new(options);
    let process = home.start();
    (home, process)
}

/// Submits to `agent` a task appending a line to `marker`; waits for its success.
async fn run_marker(master: &MasterProcess, agent: &str, marker: &Path) -> u64 {
    let body = task(
        json!({ "agent": agent }),
        &[
            "/bin/sh",
            "-c",
            &format!("echo ran >> {}", marker.display()),
        ],
        fast_policy("kill"),
    );
    let id = master.submit(&body);
    let t = master.wait_finished(id).await;
    assert_eq!(task_state(&t), "succeeded", "{t}");
    id
}

fn epoch(master: &MasterProcess) -> u32 {
    u32::from_str_radix(&master.epoch, 16).expect("hex epoch")
}

async fn intruder_is_refused(external: Option<&TestBroker>) {
    let mut master_home = MasterHome::new(MasterOptions {
        external_broker: external.map(|b| format!("mqtt://{}", b.host_port())),
        ..MasterOptions::default()
    });
    let mut master = master_home.start();
    let (mut home_a, mut agent_a) = start_agent(&master, "sec-a");
    let (home_b, agent_b) = start_agent(&master, "sec-b");
    master.wait_available("sec-a").await;
    master.wait_available("sec-b").await;
    let mut intruder = Intruder::connect(&master.mqtt, &["tether/agent/+/cmd"]).await;

    // A real command, captured on its way to sec-a.
    let ran = home_a.path().join("ran");
    let first = run_marker(&master, "sec-a", &ran).await;
    let captured = intruder
        .capture(&cmd_topic("sec-a"), |p| is_start_of(p, first))
        .await;
    assert_eq!(lines(&ran), 1);

    // Published again as it was; moved to sec-b's topic; signed by another key; not signed.
    intruder
        .publish(&cmd_topic("sec-a"), captured.clone())
        .await;
    intruder
        .publish(&cmd_topic("sec-b"), captured.clone())
        .await;
    let forged = home_a.path().join("forged");
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let impostor = SigningKey::from_seed([0x66; 32]).unwrap();
    let signed = wire::encode_signed(
        &forged_start(epoch(&master), 1 << 40, 900, &forged),
        &cmd_topic("sec-a"),
        &impostor,
        &mut buf,
    )
    .unwrap()
    .to_vec();
    intruder.publish(&cmd_topic("sec-a"), signed).await;
    let unsigned = encode(&forged_start(epoch(&master), 1 << 41, 901, &forged));
    intruder.publish(&cmd_topic("sec-a"), unsigned).await;

    agent_a
        .wait_log(&["refused a message on tether/agent/sec-a/cmd", "replayed"])
        .await;
    agent_a
        .wait_log(&[
            "refused a message on tether/agent/sec-a/cmd",
            "bad signature",
        ])
        .await;
    agent_a
        .wait_log(&[
            "refused a message on tether/agent/sec-a/cmd",
            "unauthenticated",
        ])
        .await;
    agent_b
        .wait_log(&[
            "refused a message on tether/agent/sec-b/cmd",
            "bad signature",
        ])
        .await;
    // Reported to the master (coalesced: the first at once, the rest with a heartbeat).
    master
        .wait_for("bad commands reported", "/api/status", |s| {
            (s["stats"]["bad_commands_reported"].as_u64() >= Some(4)).then_some(())
        })
        .await;

    // Speaking for sec-a: an event MAC'd with sec-b's key, an unauthenticated heartbeat, a
    // forged will for sec-b.
    let b_key = tether_tests::harness::master_proc::find_agent(&master.get("/api/agents"), "sec-b")
        .expect("sec-b known");
    assert_eq!(b_key["keyed"], true);
    // The master hands a key out once; the harness kept sec-b's, as its device does.
    let sec_b_secret: [u8; 32] =
        tether_core::auth::parse_hex(&master.kept_key("sec-b").expect("sec-b provisioned"))
            .unwrap();
    let event = Message::Event(Report {
        journal: 1,
        event: Event {
            seq: 999,
            at_unix_ms: 0,
            kind: EventKind::Accepted {
                task: TaskRef {
                    task: 777,
                    attempt: 777,
                },
            },
        },
    });
    let forged_event =
        wire::encode_mac(&event, "tether/agent/sec-a/event", &sec_b_secret, &mut buf)
            .unwrap()
            .to_vec();
    intruder
        .publish("tether/agent/sec-a/event", forged_event)
        .await;
    let heartbeat = Message::AgentHeartbeat(AgentHeartbeat {
        incarnation: 1,
        journal: 1,
        counter: 1,
        echo: None,
        last_seq: 0,
        tasks: heapless::Vec::new(),
        more_tasks: false,
        journal_bytes: 0,
    });
    intruder
        .publish("tether/agent/sec-a/heartbeat", encode(&heartbeat))
        .await;
    let inc_b = master.agent("sec-b").unwrap()["incarnation"]
        .as_str()
        .map(|i| u32::from_str_radix(i, 16).unwrap())
        .unwrap();
    let will = Presence {
        state: State::Lost,
        incarnation: inc_b,
    };
    intruder
        .publish(
            "tether/agent/sec-b/presence",
            will.render().as_bytes().to_vec(),
        )
        .await;
    let security = master
        .wait_for("forgeries counted", "/api/security", |s| {
            let a = &s["agents"]["sec-a"];
            let b = &s["agents"]["sec-b"];
            (a["bad_signature"].as_u64() >= Some(1)
                && a["unauthenticated"].as_u64() >= Some(1)
                && b["unauthenticated"].as_u64() >= Some(1))
            .then(|| s.clone())
        })
        .await;
    assert!(
        security["agents"]["sec-a"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unauthenticated") || e.contains("bad signature")),
        "{security}"
    );
    master
        .wait_log(&[
            "dropped a message on tether/agent/sec-a/event",
            "bad signature",
        ])
        .await;
    // Nothing of it was believed: sec-b is still available, no task 777 anywhere.
    master.wait_available("sec-b").await;
    assert!(master.get("/api/tasks").as_array().unwrap().len() == 1);

    // Nothing ran twice, nothing forged ran, on either agent.
    assert_eq!(lines(&ran), 1);
    assert!(!forged.exists());

    // sec-a restarts: the captured command is still refused, a new one runs.
    agent_a.sigterm();
    assert!(agent_a.wait_exit(WAIT).await.is_some_and(|s| s.success()));
    agent_a = home_a.start();
    master.wait_available("sec-a").await;
    intruder
        .publish(&cmd_topic("sec-a"), captured.clone())
        .await;
    agent_a
        .wait_log(&["refused a message on tether/agent/sec-a/cmd", "replayed"])
        .await;
    run_marker(&master, "sec-a", &ran).await;
    assert_eq!(lines(&ran), 2);

    // The master restarts: a larger epoch, commands run, the old capture is still refused.
    let before = epoch(&master);
    master.kill9();
    let master = master_home.start();
    assert!(epoch(&master) > before, "{} > {before}", master.epoch);
    master.wait_available("sec-a").await;
    run_marker(&master, "sec-a", &ran).await;
    assert_eq!(lines(&ran), 3);
    intruder.publish(&cmd_topic("sec-a"), captured).await;
    // Give it the time to arrive, then look: still three lines, and counted as a replay.
    master
        .wait_for("the replay reported", "/api/status", |s| {
            (s["stats"]["bad_commands_reported"].as_u64() >= Some(1)).then_some(())
        })
        .await;
    assert_eq!(lines(&ran), 3);
    drop((home_b, agent_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intruder_is_refused_embedded_rumqttd() {
    intruder_is_refused(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intruder_is_refused_mosquitto() {
    let Some(broker) = TestBroker::start(BrokerKind::Mosquitto).await else {
        return;
    };
    intruder_is_refused(Some(&broker)).await;
}

both_brokers!(replayed_master_heartbeats_do_not_keep_a_kill_task_alive);

/// The master falls silent; the intruder replays the heartbeats it recorded. The agent counts
/// none of them as contact and terminates its `kill` task on time.
async fn replayed_master_heartbeats_do_not_keep_a_kill_task_alive(broker: &TestBroker) {
    let (master, _home, agent) =
        scripted_pair(broker, "sec-hb", Duration::from_millis(300), |_| {}).await;
    let mut intruder = Intruder::connect(&broker.host_port(), &["tether/master/heartbeat"]).await;
    let mut spec = sh(1, "echo up; exec sleep 60");
    spec.policy.heartbeat_period_ms = 500;
    spec.policy.heartbeat_timeout_ms = 2_000;
    master.start_task(spec);
    master.wait_started(task_ref(1)).await;
    let mut recorded = Vec::new();
    for _ in 0..3 {
        recorded.push(intruder.capture("tether/master/heartbeat", |_| true).await);
    }
    master.set_silent(true);
    let replays = {
        let client = intruder.client.clone();
        tokio::spawn(async move {
            loop {
                for hb in &recorded {
                    let _ = client
                        .publish(
                            "tether/master/heartbeat",
                            QoS::AtMostOnce,
                            false,
                            hb.clone(),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let (exit, cause, _) = master.wait_finished(task_ref(1)).await;
    replays.abort();
    assert_eq!(cause, Some(KillCause::MasterLost), "{exit:?}");
    assert!(matches!(exit, Exit::Signal(_)), "{exit:?}");
    agent
        .wait_log(&["refused a message on tether/master/heartbeat", "replayed"])
        .await;
    master.assert_consistent();
}

both_brokers!(recorded_agent_heartbeats_do_not_keep_a_dead_agent_alive);

/// The intruder records an agent's heartbeats and its retained `online`, the agent dies
/// (kill -9, its will arrives), and the intruder keeps publishing the recordings. The master
/// takes none of them as a sign of life: the agent stays unavailable and its `kill` task is
/// failed once the task's timeout has passed, as if nobody had spoken for it.
async fn recorded_agent_heartbeats_do_not_keep_a_dead_agent_alive(broker: &TestBroker) {
    let mut master_home = MasterHome::new(MasterOptions {
        external_broker: Some(format!("mqtt://{}", broker.host_port())),
        ..MasterOptions::default()
    });
    let master = master_home.start();
    let (_home, mut agent) = start_agent(&master, "sec-dead");
    master.wait_available("sec-dead").await;
    let heartbeat = "tether/agent/sec-dead/heartbeat";
    let presence = "tether/agent/sec-dead/presence";
    let mut intruder = Intruder::connect(&broker.host_port(), &[heartbeat, presence]).await;
    let online = intruder
        .capture(presence, |p| p.starts_with(b"online"))
        .await;
    let id = master.submit(&task(
        json!({ "agent": "sec-dead" }),
        &["/bin/sh", "-c", "exec sleep 30"],
        fast_policy("kill"),
    ));
    master.wait_state(id, "running").await;
    let mut recorded = Vec::new();
    for _ in 0..3 {
        recorded.push(intruder.capture(heartbeat, |_| true).await);
    }

    agent.kill9();
    master.wait_presence("sec-dead", "lost").await;
    let replays = {
        let client = intruder.client.clone();
        tokio::spawn(async move {
            loop {
                for (topic, payload) in recorded
                    .iter()
                    .map(|hb| (heartbeat, hb))
                    .chain([(presence, &online)])
                {
                    let _ = client
                        .publish(topic, QoS::AtLeastOnce, false, payload.clone())
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let t = master.wait_finished(id).await;
    let status = master.get("/api/status");
    let agents = master.get("/api/agents");
    replays.abort();
    assert_eq!(task_state(&t), "failed", "{t}");
    let dead = tether_tests::harness::master_proc::find_agent(&agents, "sec-dead").unwrap();
    assert_eq!(dead["available"], false, "{dead}");
    assert!(
        status["stats"]["stale_heartbeats"].as_u64() >= Some(3),
        "{status}"
    );
}

/// Secure by default: an agent without keys does not start; the explicit opt-out runs, loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_keys_refuses_to_start() {
    let mut options = AgentOptions::new("keyless", "127.0.0.1:9");
    options.master_keys = vec![tether_tests::keys::master_public_hex()];
    options.agent_key = None;
    let mut home = AgentHome::new(options);
    let mut agent = home.start();
    let status = agent.wait_exit(WAIT).await.expect("the agent exits");
    assert!(!status.success());
    let log = agent.log();
    assert!(
        log.contains("missing key `agent_key`") && log.contains("tetherctl provision"),
        "{log}"
    );

    home.options.master_keys.clear();
    let mut agent = home.start();
    agent
        .wait_log(&[
            "INSECURE",
            "any client of the broker can command this agent",
        ])
        .await;
    agent.sigterm();
    assert!(agent.wait_exit(WAIT).await.is_some());
}

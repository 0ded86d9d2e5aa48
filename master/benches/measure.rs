//! The master's measurements, each printed next to its reference from the same run:
//!
//! 1. QoS 1, 1 KiB messages through the embedded broker (a real `tether-master` process with
//!    the built-in `broker-config/rumqttd.toml`) and through mosquitto (`/usr/sbin/mosquitto`
//!    on a free port): messages per second with a bounded end-to-end window (so the bounded
//!    rumqttd logs drop nothing), latency of one message at a time (p50/p99/max and the count
//!    above 40 ms, the Nagle signature), and what an unbounded flood loses.
//! 2. Tasks per second end to end (`true` submitted through the HTTP API to one agent, until
//!    all succeeded) against the raw fork/exec rate of `true` on this machine.
//! 3. Fail-over: tasks submitted every few milliseconds to a fixed-priority cluster while its
//!    first member is killed with kill -9: time from the kill to the first task started on
//!    the next member, and how many tasks went to the dead member meanwhile.
//! 4. The master's idle VmRSS/VmHWM after 10 s with one agent (mosquitto's next to it).
//! 5. Tasks per second and RSS on SQLite and on PostgreSQL (`measure/stores.rs`).
//! 6. A fleet of real agents on one master: CPU, RSS, join, loss notice, dispatch latency and
//!    store size per task, on the embedded broker and on mosquitto (`measure/fleet.rs`).
//! 7. An order of 10 same-agent steps of `true`, start to succeeded, next to 10 single tasks
//!    one after the other and 10 at once, same master and agent (`measure/orders.rs`).
//!
//! Section 1 lives in `measure/brokers.rs`.
//!
//! Run with `scripts/bench-master.sh` (release binaries). Not a test: nothing is asserted.

#[path = "measure/brokers.rs"]
mod brokers;
#[path = "measure/fleet.rs"]
mod fleet;
#[path = "measure/orders.rs"]
mod orders;
#[path = "../tests/master/plain_http.rs"]
mod plain_http;
#[path = "measure/stores.rs"]
mod stores;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use serde_json::{Value, json};
use tether_master::broker::{pick_free_port, wait_for_listener};
use tokio::sync::{Semaphore, mpsc};

/// The printed rows: what, its value, its same-run reference.
type Table = Vec<(String, String, String)>;

const WAIT: Duration = Duration::from_secs(60);
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const PAYLOAD: usize = 1024;

fn main() {
    // `cargo bench` passes `--bench`; `--smoke` makes every section short (CI runs it, so no
    // section rots unseen; the figures must be produced, their values are not judged);
    // anything else is a filter of sections.
    let smoke = std::env::args().any(|a| a == "--smoke");
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let work = tempfile::tempdir().expect("temp dir");
    let mut table: Table = Vec::new();
    // Sections that added no row: a smoke fails on them.
    let mut silent = Vec::new();
    let mut section = |name: &str, measure: &mut dyn FnMut(&mut Table)| {
        if run(name) {
            let rows = table.len();
            measure(&mut table);
            if table.len() == rows {
                silent.push(name.to_owned());
            }
        }
    };
    section("rss", &mut |t| idle_rss(work.path(), smoke, t));
    section("broker", &mut |t| {
        rt.block_on(brokers::brokers(work.path(), smoke, t))
    });
    section("tasks", &mut |t| tasks_per_second(work.path(), smoke, t));
    section("failover", &mut |t| failover(work.path(), smoke, t));
    section("stores", &mut |t| stores::stores(work.path(), smoke, t));
    section("fleet", &mut |t| fleet::fleet(work.path(), smoke, t));
    section("orders", &mut |t| orders::orders(work.path(), smoke, t));
    println!("\n{:<52} {:>22}  reference (same run)", "measure", "value");
    println!("{}", "-".repeat(110));
    for (what, value, reference) in &table {
        println!("{what:<52} {value:>22}  {reference}");
    }
    if smoke {
        let missing: Vec<&str> = table
            .iter()
            .filter(|(_, value, _)| {
                value.is_empty()
                    || ["none", "skipped", "NaN", "inf"]
                        .iter()
                        .any(|bad| value.contains(bad))
            })
            .map(|(what, _, _)| what.as_str())
            .collect();
        assert!(
            silent.is_empty() && missing.is_empty(),
            "smoke: sections without figures {silent:?}, figures not produced {missing:?}"
        );
    }
}

// ----- processes -----

fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TETHER_AGENT_BIN") {
        return PathBuf::from(p);
    }
    // <target>/<profile>/deps/measure-HASH -> <target>/<profile>/tether-agent
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("tether-agent")
}

struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn status(&self, field: &str) -> u64 {
        let text =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::env::var_os("BENCH_LOGS").is_some() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- {} ----\n{log}", self.name);
        }
    }
}

struct Master {
    proc: Proc,
    mqtt: String,
    http: String,
    token: String,
    /// The master's public key (hex), for agents' `--master-key`.
    key: String,
    data: PathBuf,
}

impl Master {
    fn start(dir: &Path, name: &str) -> Master {
        Self::start_with(dir, name, &[])
    }

    /// [`Master::start`] with more `run` options (e.g. `--store`).
    fn start_with(dir: &Path, name: &str, extra: &[&std::ffi::OsStr]) -> Master {
        // Loopback only, agents without provisioned keys: these sections measure the store
        // and the broker, not the MAC checks.
        let mut args = vec![
            std::ffi::OsStr::new("--heartbeat-period-ms"),
            "1000".as_ref(),
        ];
        args.push("--insecure-agents".as_ref());
        args.extend_from_slice(extra);
        Self::launch(dir, name, &args)
    }

    /// `tether-master run` on loopback with `args` (nothing insecure unless they say so).
    fn launch(dir: &Path, name: &str, args: &[&std::ffi::OsStr]) -> Master {
        Self::launch_at(dir, name, "127.0.0.1:0", args)
    }

    /// [`Master::launch`] with the embedded broker on `listen` (a restart on the same port),
    /// on the data directory of the first launch under `name`.
    fn launch_at(dir: &Path, name: &str, listen: &str, args: &[&std::ffi::OsStr]) -> Master {
        let data = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether-master"))
            .args(["run", "--config", "/dev/null", "--listen", listen])
            .args(["--http", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(args)
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("log"))
            .spawn()
            .expect("tether-master");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        let line = rx.recv_timeout(WAIT).expect("ready line");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_owned()
        };
        let token = std::fs::read_to_string(data.join("admin.token"))
            .expect("the admin token of the first start")
            .trim()
            .to_owned();
        Master {
            mqtt: field("mqtt="),
            http: field("http="),
            key: field("key="),
            data,
            token,
            proc: Proc {
                child,
                name: name.into(),
                log,
            },
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string);
        let (status, text) =
            plain_http::request(&self.http, Some(&self.token), method, path, body.as_deref())
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).expect("JSON")
    }

    fn submit(&self, body: &Value) -> u64 {
        self.call("POST", "/api/tasks", Some(body))["id"]
            .as_u64()
            .expect("task id")
    }

    fn poll<T>(
        &self,
        what: &str,
        path: &str,
        every: Duration,
        mut f: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(t) = f(&self.call("GET", path, None)) {
                return t;
            }
            assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
            std::thread::sleep(every);
        }
    }

    /// Task `id`'s detail (`GET /api/tasks/{id}`) once it has ended.
    fn wait_finished(&self, id: u64) -> Value {
        self.poll(
            "task finished",
            &format!("/api/tasks/{id}"),
            Duration::from_millis(20),
            |v| {
                matches!(
                    v["task"]["state"].as_str(),
                    Some("succeeded" | "failed" | "lost" | "killed" | "cancelled")
                )
                .then(|| v.clone())
            },
        )
    }

    fn wait_available(&self, id: &str) {
        self.poll(
            &format!("{id} available"),
            "/api/agents",
            Duration::from_millis(10),
            |v| {
                v.as_array()?
                    .iter()
                    .any(|a| a["id"] == id && a["available"] == true)
                    .then_some(())
            },
        );
    }
}

fn start_agent(dir: &Path, id: &str, broker: &str) -> Proc {
    start_agent_with(dir, id, broker, &["--insecure-unauthenticated"])
}

/// A `tether-agent` with `auth`: its keys, or `--insecure-unauthenticated`.
fn start_agent_with(dir: &Path, id: &str, broker: &str, auth: &[&str]) -> Proc {
    let home = dir.join(id);
    for sub in ["state", "work"] {
        std::fs::create_dir_all(home.join(sub)).expect("agent dirs");
    }
    let log = dir.join(format!("{id}.log"));
    let child = Command::new(agent_bin())
        .args(["--id", id, "--broker", broker, "--drain-seconds", "2"])
        .args(["--config", "/dev/null"])
        .args(auth)
        .arg("--state-dir")
        .arg(home.join("state"))
        .arg("--work-dir")
        .arg(home.join("work"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", agent_bin().display()));
    Proc {
        child,
        name: id.into(),
        log,
    }
}

struct Mosquitto {
    proc: Proc,
    addr: SocketAddr,
}

fn start_mosquitto(dir: &Path) -> Option<Mosquitto> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("{MOSQUITTO} is missing: no broker reference (apt-get install mosquitto)");
        return None;
    }
    let addr = pick_free_port(IpAddr::from([127, 0, 0, 1])).expect("free port");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 100\n",
            addr.port()
        ),
    )
    .expect("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log"))
        .spawn()
        .expect("mosquitto");
    let proc = Proc {
        child,
        name: "mosquitto".into(),
        log,
    };
    assert!(wait_for_listener(addr, WAIT), "mosquitto listens");
    Some(Mosquitto { proc, addr })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

// ----- 2. tasks per second -----

fn tasks_per_second(dir: &Path, smoke: bool, table: &mut Vec<(String, String, String)>) {
    let n: usize = if smoke { 20 } else { 400 };
    eprintln!("measuring tasks per second ({n} x true)");
    // The reference: fork/exec/wait of `true`, one at a time and on every core at once.
    let spawn_rate = |threads: usize| {
        let per = n / threads;
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per {
                        let ok = Command::new("true").status().expect("true").success();
                        assert!(ok);
                    }
                });
            }
        });
        (per * threads) as f64 / start.elapsed().as_secs_f64()
    };
    let serial = spawn_rate(1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallel = spawn_rate(cores);

    let master = Master::start(dir, "tasks-master");
    let _agent = start_agent(dir, "bench-tasks", &master.mqtt);
    master.wait_available("bench-tasks");
    let body = json!({ "agent": "bench-tasks", "argv": ["true"] });
    let (done, failed, submitted) = end_to_end_timed(&master, &body, n);
    let rate = n as f64 / done.as_secs_f64();
    let best = serial.max(parallel);
    table.push((
        format!("tasks/s end to end ({n} x true, 1 agent)"),
        format!("{rate:.0}/s"),
        format!(
            "fork/exec of true {serial:.0}/s serial, {parallel:.0}/s on {cores} threads: {:.0} % of the best (goal >= 80 %)",
            100.0 * rate / best
        ),
    ));
    table.push((
        "  of which submitting (4 HTTP clients), failures".into(),
        format!("{}, {failed}", ms(submitted)),
        String::new(),
    ));
}

/// Submits `n` tasks from four HTTP clients and waits until all finished: the time from the
/// first submission to the last finish, and how many did not succeed.
fn end_to_end(master: &Master, body: &Value, n: usize) -> (Duration, usize) {
    let (done, failed, _) = end_to_end_timed(master, body, n);
    (done, failed)
}

/// [`end_to_end`], with the time the submissions took.
fn end_to_end_timed(master: &Master, body: &Value, n: usize) -> (Duration, usize, Duration) {
    let start = Instant::now();
    // Four submitters: the API answers after each commit, so one would measure round trips.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..n / 4 {
                    master.submit(body);
                }
            });
        }
    });
    let submitted = start.elapsed();
    let (done, failed) = master.poll(
        "all tasks finished",
        "/api/tasks",
        Duration::from_millis(20),
        |v| {
            let tasks = v.as_array()?;
            let finished = tasks
                .iter()
                .filter(|t| {
                    matches!(
                        t["state"].as_str(),
                        Some("succeeded" | "failed" | "lost" | "killed" | "cancelled")
                    )
                })
                .count();
            let failed = tasks.iter().filter(|t| t["state"] != "succeeded").count();
            (finished == n).then_some((start.elapsed(), failed))
        },
    );
    (done, failed, submitted)
}

// ----- 3. fail-over -----

fn failover(dir: &Path, smoke: bool, table: &mut Vec<(String, String, String)>) {
    let (trials, submits) = if smoke { (1, 100) } else { (3, 120) };
    eprintln!("measuring fail-over ({trials} trials)");
    let master = Master::start(dir, "failover-master");
    let mut b = start_agent(dir, "fo-b", &master.mqtt);
    master.wait_available("fo-b");
    let mut latencies = Vec::new();
    let mut detections = Vec::new();
    let mut stranded = Vec::new();
    for trial in 0..trials {
        // A new first member each trial (a new agent id: a fresh journal under an old id
        // would collide with the sequence numbers the master already stored).
        let first = format!("fo-a{trial}");
        let cluster = format!("fo{trial}");
        master.call(
            "POST",
            "/api/clusters",
            Some(&json!({ "name": cluster, "mode": "fixed-priority", "members": [first, "fo-b"] })),
        );
        let body = json!({
            "cluster": cluster, "argv": ["true"],
            "policy": { "on_disconnect": "kill", "heartbeat_period_ms": 1000, "heartbeat_timeout_ms": 3000 },
        });
        let mut a = start_agent(dir, &first, &master.mqtt);
        master.wait_available(&first);
        let ids = std::sync::Mutex::new(Vec::new());
        let killed_at = AtomicU64::new(0);
        let detected = AtomicU64::new(0);
        std::thread::scope(|s| {
            // A steady stream of tasks, one every 5 ms, from before the kill to well after.
            s.spawn(|| {
                for _ in 0..submits {
                    ids.lock().expect("ids").push(master.submit(&body));
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            std::thread::sleep(Duration::from_millis(200));
            let t0 = Instant::now();
            killed_at.store(unix_ms(), Ordering::SeqCst);
            a.kill9();
            master.poll(
                "first member unavailable",
                "/api/agents",
                Duration::from_millis(1),
                |v| {
                    v.as_array()?
                        .iter()
                        .any(|x| x["id"] == first.as_str() && x["available"] == false)
                        .then_some(())
                },
            );
            detected.store(t0.elapsed().as_micros() as u64, Ordering::SeqCst);
        });
        let killed_at = killed_at.load(Ordering::SeqCst);
        detections.push(Duration::from_micros(detected.load(Ordering::SeqCst)));
        let ids = ids.into_inner().expect("ids");
        // Every task ends: on fo-b, or failed after fo-a's policy timeout.
        let mut first_on_b = None;
        let mut on_dead = 0;
        for id in ids {
            let t = master.wait_finished(id);
            for at in t["attempts"].as_array().into_iter().flatten() {
                let created = at["created_ms"].as_u64().unwrap_or(0);
                if at["agent_id"] == first.as_str() && created >= killed_at {
                    on_dead += 1;
                }
                if at["agent_id"] == "fo-b"
                    && let Some(started) = at["started_ms"].as_u64()
                    && started >= killed_at
                {
                    first_on_b = Some(first_on_b.map_or(started, |f: u64| f.min(started)));
                }
            }
        }
        latencies.push(first_on_b.map(|s| Duration::from_millis(s - killed_at)));
        stranded.push(on_dead);
    }
    b.kill9();
    let show = |v: &[Option<Duration>]| {
        v.iter()
            .map(|d| d.map_or("none".into(), ms))
            .collect::<Vec<_>>()
            .join(", ")
    };
    table.push((
        "kill -9 to next task started on next member".into(),
        show(&latencies),
        "goal <= 100 ms (wall clock ms of two processes)".into(),
    ));
    table.push((
        "  kill -9 to the API showing it unavailable".into(),
        detections
            .iter()
            .map(|d| ms(*d))
            .collect::<Vec<_>>()
            .join(", "),
        "(polled every 1 ms)".into(),
    ));
    table.push((
        "  tasks dispatched to the dead member after kill".into(),
        format!("{stranded:?}"),
        "(failed after timeout + 2 s, their policy)".into(),
    ));
}

// ----- 4. idle memory -----

fn idle_rss(dir: &Path, smoke: bool, table: &mut Vec<(String, String, String)>) {
    let idle = Duration::from_secs(if smoke { 2 } else { 10 });
    eprintln!("measuring idle memory ({idle:?})");
    let master = Master::start(dir, "idle-master");
    let agent = start_agent(dir, "bench-idle", &master.mqtt);
    master.wait_available("bench-idle");
    let mosq = start_mosquitto(dir);
    std::thread::sleep(idle);
    let kb = |p: &Proc| (p.status("VmRSS"), p.status("VmHWM"));
    let (rss, hwm) = kb(&master.proc);
    let (arss, _) = kb(&agent);
    let reference = match &mosq {
        Some(m) => {
            let (r, h) = kb(&m.proc);
            format!("idle mosquitto VmRSS {r} kB / VmHWM {h} kB; agent VmRSS {arss} kB")
        }
        None => format!("agent VmRSS {arss} kB"),
    };
    table.push((
        format!("master idle VmRSS / VmHWM ({idle:?}, one agent)"),
        format!("{rss} kB / {hwm} kB"),
        reference,
    ));
}

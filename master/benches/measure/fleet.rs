//! 6. A fleet on one master: N real `tether-agent` processes, each signed with its own key
//!    provisioned through the API (`POST /api/agents/{id}/key`), at a 10 s heartbeat period,
//!    first on the embedded broker, then on mosquitto with the master connected to it. For each:
//!    - the time from the first agent launched to all N available;
//!    - the master's CPU (percent of one core) and VmRSS over an idle window, next to the
//!      agents' own CPU and, on mosquitto, the broker's;
//!    - the time until the API shows a kill -9'd agent unavailable;
//!    - submit-to-started latency p50/p99 of `true` at a steady rate spread over the fleet;
//!    - the SQLite store's growth per 100,000 finished tasks;
//!    - the master killed (-9) and started again on the same port and store, as systemd
//!      restarts it: the time until the fleet is available again and the master's CPU and
//!      peak RSS through that reconnect storm (on the embedded broker, where the storm hits
//!      the master's own broker).
//!
//!    Sizes from `TETHER_BENCH_FLEET` (comma-separated agent counts, default 1000), on the
//!    brokers of `TETHER_BENCH_FLEET_BROKERS` (`embedded`, `mosquitto`, or both, the default,
//!    comma-separated); the smoke
//!    runs 200 agents at a 1 s period. These are real agent processes, not an in-process
//!    generator: each is ~3 MB of RSS (release), so memory bounds N on one machine.

use super::*;

struct Plan {
    sizes: Vec<usize>,
    period_ms: u64,
    idle: Duration,
    /// Tasks per second during the dispatch window, and its length.
    rate: u32,
    dispatch: Duration,
}

impl Plan {
    fn new(smoke: bool) -> Self {
        if smoke {
            return Plan {
                sizes: vec![200],
                period_ms: 1000,
                idle: Duration::from_secs(3),
                rate: 20,
                dispatch: Duration::from_secs(1),
            };
        }
        let sizes = std::env::var("TETHER_BENCH_FLEET")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1000]);
        Plan {
            sizes,
            period_ms: 10_000,
            idle: Duration::from_secs(60),
            rate: 100,
            dispatch: Duration::from_secs(10),
        }
    }
}

pub(super) fn fleet(dir: &Path, smoke: bool, table: &mut Table) {
    let plan = Plan::new(smoke);
    let brokers = std::env::var("TETHER_BENCH_FLEET_BROKERS").unwrap_or_default();
    let on = |b: &str| brokers.is_empty() || brokers.split(',').any(|x| x.trim() == b);
    for &n in &plan.sizes {
        if on("embedded") {
            run(dir, n, &plan, None, table);
        }
        if !on("mosquitto") {
            continue;
        }
        match start_mosquitto(dir) {
            Some(mosquitto) => run(dir, n, &plan, Some(&mosquitto), table),
            None => table.push((
                format!("fleet of {n} on mosquitto"),
                "skipped".into(),
                "mosquitto is not installed".into(),
            )),
        }
    }
}

/// CPU time of a process's live threads so far, from their schedstat (nanoseconds: the
/// tick-sampled utime of /proc/PID/stat rounds a mostly idle agent's share down to zero).
fn cpu_time(pid: u32) -> Duration {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let ns: u64 = threads
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Polls `count` every `every` until it reaches `n`, within the time a fleet of `n` may take
/// (the harness's wait plus 20 ms an agent).
fn wait_count(what: &str, n: usize, every: Duration, count: impl Fn() -> usize) {
    let start = Instant::now();
    let deadline = start + WAIT + Duration::from_millis(20 * n as u64);
    let mut seen = 0;
    while seen < n {
        assert!(
            Instant::now() < deadline,
            "{what}: {seen} of {n} after {:?}",
            start.elapsed()
        );
        std::thread::sleep(every);
        seen = count();
    }
}

/// Established TCP connections to local port `port`, from `ss` (iproute2).
fn established(port: &str) -> usize {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn pct_of_core(cpu: Duration, over: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / over.as_secs_f64()
}

fn available_count(master: &Master) -> usize {
    master
        .call("GET", "/api/agents?available=true&limit=10000", None)
        .as_array()
        .map_or(0, Vec::len)
}

/// The SQLite store's logical size: its pages in use, the WAL's included (read through
/// SQLite itself, so a WAL that grew ahead of its checkpoint does not count).
fn store_bytes(master: &Master) -> u64 {
    let db = rusqlite::Connection::open_with_flags(
        master.data.join("master.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the master's store");
    let pragma = |name: &str| -> u64 {
        db.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .expect("pragma")
    };
    (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
}

fn run(dir: &Path, n: usize, plan: &Plan, mosquitto: Option<&Mosquitto>, table: &mut Table) {
    let broker_name = if mosquitto.is_some() {
        "mosquitto"
    } else {
        "embedded"
    };
    let name = format!("fleet-{n}-{broker_name}");
    eprintln!("measuring a fleet of {n} agents on the {broker_name} broker");
    let period = plan.period_ms.to_string();
    let mut args: Vec<&std::ffi::OsStr> = vec!["--heartbeat-period-ms".as_ref(), period.as_ref()];
    let external = mosquitto.map(|m| format!("mqtt://{}", m.addr));
    if let Some(url) = &external {
        args.push("--broker".as_ref());
        args.push(url.as_ref());
    }
    let mut master = Master::launch(dir, &name, &args);
    // Before any agent: what the fleet adds is measured from here.
    let rss_alone = master.proc.status("VmRSS");
    let broker = external.clone().unwrap_or_else(|| master.mqtt.clone());

    let ids: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    let keys: Vec<String> = ids
        .iter()
        .map(|id| {
            master.call("POST", &format!("/api/agents/{id}/key"), Some(&json!({})))["agent_key"]
                .as_str()
                .expect("agent key")
                .to_owned()
        })
        .collect();
    let join_start = Instant::now();
    let mut agents: Vec<Proc> = ids
        .iter()
        .zip(&keys)
        .map(|(id, key)| {
            let auth = ["--master-key", &master.key, "--agent-key", key];
            start_agent_with(dir, id, &broker, &auth)
        })
        .collect();
    // Polling a large fleet's list is work for the master too: not too often.
    let every = Duration::from_millis(if n > 100 { 1000 } else { 200 });
    wait_count(&format!("{name}: agents available"), n, every, || {
        available_count(&master)
    });
    let joined = join_start.elapsed();

    // Idle: heartbeats and presence only.
    let cpu = |p: &Proc| cpu_time(p.pid());
    let agents_cpu = |a: &[Proc]| a.iter().map(cpu).sum::<Duration>();
    let (m0, a0, b0) = (
        cpu(&master.proc),
        agents_cpu(&agents),
        mosquitto.map(|m| cpu(&m.proc)),
    );
    std::thread::sleep(plan.idle);
    let master_pct = pct_of_core(cpu(&master.proc) - m0, plan.idle);
    let agents_pct = pct_of_core(agents_cpu(&agents) - a0, plan.idle);
    let broker_pct = mosquitto
        .zip(b0)
        .map(|(m, b0)| pct_of_core(cpu(&m.proc) - b0, plan.idle));
    let rss = master.proc.status("VmRSS");

    // A board dies: how soon the API says so.
    let victim = ids[n - 1].clone();
    let kill_start = Instant::now();
    agents[n - 1].kill9();
    master.poll(
        "the killed agent unavailable",
        "/api/agents?available=false&limit=10000",
        Duration::from_millis(5),
        |v| {
            v.as_array()?
                .iter()
                .any(|a| a["id"] == victim.as_str())
                .then_some(())
        },
    );
    let noticed = kill_start.elapsed();

    // Dispatch at a steady rate over the living agents, then submit-to-started per task.
    let before = store_bytes(&master);
    let total = (plan.rate as f64 * plan.dispatch.as_secs_f64()) as usize;
    let every = Duration::from_secs_f64(1.0 / f64::from(plan.rate));
    let dispatch_start = Instant::now();
    let tasks: Vec<u64> = (0..total)
        .map(|i| {
            let due = dispatch_start + every * i as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let agent = &ids[i % (n - 1).max(1)];
            master.submit(&json!({ "agent": agent, "argv": ["true"] }))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for id in &tasks {
        let t = master.wait_finished(*id);
        if t["task"]["state"] != "succeeded" {
            failed += 1;
        }
        for at in t["attempts"].as_array().into_iter().flatten() {
            if let (Some(c), Some(s)) = (at["created_ms"].as_u64(), at["started_ms"].as_u64()) {
                latencies.push(Duration::from_millis(s.saturating_sub(c)));
            }
        }
    }
    latencies.sort();
    let grown = store_bytes(&master).saturating_sub(before);
    let per_100k = grown as f64 * 100_000.0 / total.max(1) as f64 / 1e6;

    // The master dies and systemd starts it again (2 s later in the unit): every agent
    // reconnects into the new master's broker at once, each after its own jittered back-off.
    let storm = mosquitto.is_none().then(|| {
        let listen = master.mqtt.clone();
        master.proc.kill9();
        std::thread::sleep(Duration::from_secs(2));
        let restart = Instant::now();
        master = Master::launch_at(dir, &name, &listen, &args);
        let cpu0 = cpu_time(master.proc.pid());
        // The restarted master restores its agents as they were, so its API would say they
        // are back at once: count the broker's established connections instead (the
        // agents' and the master's own).
        let port = listen.rsplit_once(':').map_or("", |(_, p)| p).to_owned();
        wait_count(
            &format!("{name}: connections back after the master's restart"),
            n,
            Duration::from_millis(100),
            || established(&port),
        );
        let took = restart.elapsed();
        (
            took,
            pct_of_core(cpu_time(master.proc.pid()) - cpu0, took),
            master.proc.status("VmHWM"),
        )
    });
    for a in &mut agents {
        a.kill9();
    }

    let rows_before = table.len();
    let label = |what: &str| format!("fleet {n} ({broker_name}): {what}");
    table.push((
        label("all available after launch"),
        format!("{:.1} s", joined.as_secs_f64()),
        format!("{n} agent processes, keys provisioned first"),
    ));
    let reference = match broker_pct {
        Some(b) => format!(
            "mosquitto {b:.1} %, master + broker {:.1} %; the {n} agents {agents_pct:.1} % (goal at 10,000: <= 25 %)",
            master_pct + b
        ),
        None => {
            format!("broker included; the {n} agents {agents_pct:.1} % (goal at 10,000: <= 25 %)")
        }
    };
    table.push((
        label(&format!("master CPU idle, {} s", plan.idle.as_secs())),
        format!("{master_pct:.1} % of a core"),
        reference,
    ));
    table.push((
        label("master VmRSS idle"),
        format!("{rss} kB"),
        format!(
            "{:.1} kB per agent over the master alone ({rss_alone} kB) (goal at 10,000: <= 300 MB)",
            rss.saturating_sub(rss_alone) as f64 / n as f64
        ),
    ));
    table.push((
        label("kill -9 to the API showing it unavailable"),
        ms(noticed),
        "(polled every 5 ms)".into(),
    ));
    table.push((
        label(&format!(
            "submit to started p50 / p99, {} tasks/s",
            plan.rate
        )),
        format!(
            "{} / {}",
            ms(pct(&latencies, 0.5)),
            ms(pct(&latencies, 0.99))
        ),
        format!(
            "{total} tasks, {failed} not succeeded; {} started (wall ms of two processes)",
            latencies.len()
        ),
    ));
    if let Some((took, cpu, hwm)) = storm {
        table.push((
            label("master kill -9 + restart: fleet back"),
            format!("{:.1} s", took.as_secs_f64()),
            format!(
                "from the restart to {} agents connected to its broker; master {cpu:.0} % of a \
                 core meanwhile, peak RSS {hwm} kB",
                n - 1
            ),
        ));
    }
    table.push((
        label("SQLite store growth per 100,000 tasks"),
        format!("{per_100k:.1} MB"),
        format!("{grown} B for {total} tasks (pages in use)"),
    ));
    // Each size's figures as soon as they exist: a later, larger size may not finish.
    for (what, value, reference) in &table[rows_before..] {
        eprintln!("{what:<52} {value:>22}  {reference}");
    }
}

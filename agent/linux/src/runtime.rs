//! The agent loop: binds tether-core's state machine to MQTT, processes and the journal.
//!
//! One current-thread tokio runtime, one loop: wait for the first of an MQTT event, a process
//! event, the core's timer or a stop signal; feed it to the core; execute the actions the core
//! asks for. Nothing here decides what happens to a task.
//!
//! Durability: appends of one batch are written, then fsynced once (group commit), and only
//! then reported to the core, which only then lets them be published or spawned.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};
use rumqttc::{AsyncClient, QoS};
use tether_core::agent::{Action, Agent, Phase, Signal};
use tether_core::journal::{self as records, JournalLevel, JournalRecord};
use tether_core::message::TaskRef;
use tether_core::wire;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::confine::{self, Identity};
use crate::journal::{Journal, JournalError};
use crate::leftovers::Leftovers;
use crate::mqtt::{self, NetEvent, Session};
use crate::process::{self, ProcessEvent, Supervisor, TaskCommand};
use crate::textfile::{Figures, Textfile};

/// Attempts held or running at once, at most (the config's `max_tasks` may lower it).
pub const TASKS: usize = 32;
/// Attempt ids remembered for exactly-once start.
pub const SEEN: usize = 256;
pub type CoreAgent = Agent<TASKS, SEEN>;

/// Events handled before one journal sync, at most (bounds the latency a burst adds).
const BURST: usize = 64;
/// Above this fill, output is dropped (counted) so results keep fitting.
const DROP_OUTPUT_FILL: f64 = 0.75;
/// Compact once the acknowledged prefix is at least this share of the journal.
const COMPACT_SHARE: f64 = 0.5;

#[derive(Debug)]
pub enum RunError {
    Journal(JournalError),
    Io(io::Error),
    Config(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Journal(e) => write!(f, "journal: {e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Config(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for RunError {}

impl From<JournalError> for RunError {
    fn from(e: JournalError) -> Self {
        Self::Journal(e)
    }
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Monotonic clock of this process, as the core's `Instant`.
#[derive(Debug, Clone, Copy)]
struct Clock(tokio::time::Instant);

impl Clock {
    fn now(&self) -> tether_core::Instant {
        let micros = self.0.elapsed().as_micros();
        tether_core::Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    fn to_tokio(self, at: tether_core::Instant) -> tokio::time::Instant {
        self.0 + Duration::from_micros(at.as_micros())
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A fresh random number (an incarnation per process start, a new journal's identity), from
/// the kernel's random pool.
fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // No random pool: time and pid still differ between starts.
        let mix = unix_ms() ^ (u64::from(std::process::id()) << 20);
        return (mix ^ (mix >> 32)) as u32;
    }
    u32::from_le_bytes(bytes)
}

struct Runtime {
    config: Config,
    clock: Clock,
    agent: CoreAgent,
    journal: Journal,
    /// Journaled events not yet acknowledged, as journal records, by sequence.
    unacked: BTreeMap<u64, Vec<u8>>,
    supervisor: Supervisor<TaskRef>,
    pids: HashMap<TaskRef, u32>,
    leftovers: Leftovers,
    /// The live tasks' process groups changed since they were last written down.
    groups_changed: bool,
    /// Highest journal position appended and not yet synced.
    unsynced: Option<u64>,
    client: AsyncClient,
    metrics: Option<Textfile>,
}

/// Creates the tasks' default working directory when missing, owned by the task user when
/// tasks run as another user (an existing one is left as the administrator made it).
fn work_dir(path: &std::path::Path, identity: Option<Identity>) -> Result<(), RunError> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path)?;
    if let Some(id) = identity {
        std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid)).map_err(|e| {
            RunError::Config(format!(
                "work_dir {}: cannot hand it to the task user (uid {}, gid {}): {e}; \
                 create it owned by that user",
                path.display(),
                id.uid,
                id.gid
            ))
        })?;
    }
    Ok(())
}

/// Runs the agent until a normal stop completes.
pub async fn run(config: Config) -> Result<(), RunError> {
    // Before anything else: a board that cannot run tasks as configured refuses to start.
    let confinement =
        confine::prepare(&config.tasks).map_err(|e| RunError::Config(e.to_string()))?;
    std::fs::create_dir_all(&config.state_dir)?;
    work_dir(&config.work_dir, confinement.identity)?;
    let clock = Clock(tokio::time::Instant::now());
    let inc = random_u32();
    if config.auth == tether_core::agent::Auth::Insecure {
        warn!(
            "INSECURE: running without keys (insecure_unauthenticated); any client of the broker \
             can command this agent and speak for it"
        );
    }
    let core_config = tether_core::agent::Config {
        id: &config.id,
        prefix: &config.prefix,
        incarnation: inc,
        journal: random_u32(),
        auth: config.auth.clone(),
    };
    let mut agent =
        CoreAgent::new(core_config, clock.now()).map_err(|e| RunError::Config(format!("{e}")))?;
    agent.set_max_tasks(config.max_tasks as usize);
    if let Some(allow) = &config.tasks.allow {
        agent.set_allowlist(allow.clone());
    }
    agent.handle_wall_clock(clock.now(), unix_ms());

    // Before anything new starts: a killed predecessor's task children may still run.
    let leftovers = Leftovers::new(&config.state_dir);
    leftovers.reap();
    let (journal, recovered) = Journal::open(config.journal_path(), config.journal_max_bytes)?;
    if recovered.truncated_bytes > 0 {
        warn!(
            "journal: cut {} bytes of torn tail",
            recovered.truncated_bytes
        );
    }
    let mut unacked = BTreeMap::new();
    for bytes in recovered.records {
        match records::decode(&bytes) {
            Ok(record) => {
                if let JournalRecord::Event(e) = &record {
                    unacked.insert(e.seq, bytes);
                }
                agent.restore(&record);
            }
            Err(e) => warn!("journal: skipping an undecodable record: {e}"),
        }
    }
    let acked = agent.acked_seq();
    unacked.retain(|seq, _| *seq > acked);
    info!(
        "agent {} (incarnation {inc:08x}): journal {:08x}, {} bytes, {} events to report",
        config.id,
        agent.journal(),
        journal.len_bytes(),
        unacked.len()
    );
    agent.finish_restore(clock.now());

    let (will_topic, will_payload) = agent.will();
    let session = Session {
        client_id: config.id.to_string(),
        will_topic: will_topic.to_string(),
        will_payload: will_payload.to_string(),
        keep_alive: keep_alive(agent.heartbeat_period()),
    };
    let (client, mut net) = mqtt::connect(&config, session, u64::from(inc));
    let (proc_tx, mut proc_rx) = mpsc::channel(64);
    let mut rt = Runtime {
        config,
        clock,
        agent,
        journal,
        unacked,
        supervisor: Supervisor::new(proc_tx).confined(confinement),
        pids: HashMap::new(),
        leftovers,
        groups_changed: false,
        unsynced: None,
        client,
        metrics: None,
    };
    rt.metrics = rt
        .config
        .metrics_file
        .clone()
        .map(|path| Textfile::new(path, &rt.config.id));
    rt.report_level();
    rt.execute()?;

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    while !rt.agent.is_stopped() {
        let wake = rt.agent.poll_timeout().map(|t| rt.clock.to_tokio(t));
        tokio::select! {
            Some(event) = net.recv() => rt.on_net(event),
            Some(event) = proc_rx.recv() => rt.on_process(event),
            () = sleep_until(wake) => {
                let now = rt.clock.now();
                rt.agent.handle_wall_clock(now, unix_ms());
                rt.agent.handle_timeout(now);
            }
            _ = sigterm.recv() => rt.stop(),
            _ = sigint.recv() => rt.stop(),
        }
        rt.run_actions()?;
        // Group commit across a burst: what is already waiting is handled before the one
        // fsync, so commands or exits arriving together cost one sync, not one each.
        for _ in 0..BURST {
            if let Ok(event) = net.try_recv() {
                rt.on_net(event);
            } else if let Ok(event) = proc_rx.try_recv() {
                rt.on_process(event);
            } else {
                break;
            }
            rt.run_actions()?;
        }
        rt.execute()?;
        rt.write_metrics();
    }
    info!(
        "stopped: {} events left unacknowledged in the journal",
        rt.unacked.len()
    );
    // Let the connection task flush the goodbye presence, boundedly.
    let _ = tokio::time::timeout(Duration::from_secs(2), rt.client.disconnect()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Two heartbeat periods: heartbeats keep the link busy, so pings are rare and the client's
/// keepalive timer wakes the board only every other period; the broker still fires the will
/// 3 periods into a silent link (our own heartbeat timeouts decide what happens to tasks).
fn keep_alive(period: tether_core::Duration) -> Duration {
    Duration::from_millis(period.as_millis().saturating_mul(2))
        .clamp(Duration::from_secs(5), Duration::from_secs(600))
}

impl Runtime {
    /// The figures for node_exporter, when configured (written only when they changed).
    fn write_metrics(&mut self) {
        let Some(file) = self.metrics.as_mut() else {
            return;
        };
        let mut figures = Figures {
            connected: self.agent.is_connected(),
            journal_bytes: self.journal.len_bytes(),
            journal_max_bytes: self.config.journal_max_bytes,
            backlog: self.agent.last_seq().saturating_sub(self.agent.acked_seq()),
            stats: self.agent.stats(),
            ..Figures::default()
        };
        for (_, phase) in self.agent.tasks() {
            match phase {
                Phase::Held => figures.tasks_held += 1,
                Phase::Running { .. } => figures.tasks_running += 1,
                _ => figures.tasks_starting += 1,
            }
        }
        file.update(std::time::Instant::now(), &figures);
    }

    fn stop(&mut self) {
        info!("stop requested: draining for up to {:?}", self.config.drain);
        let drain = tether_core::Duration::from_millis(self.config.drain.as_millis() as u64);
        self.agent.handle_stop(self.clock.now(), drain);
    }

    fn on_net(&mut self, event: NetEvent) {
        let now = self.clock.now();
        match event {
            NetEvent::Connected {
                broker,
                session_present,
            } => {
                info!("connected to {broker} (session present: {session_present})");
                let heartbeat = self.agent.master_heartbeat_topic();
                let subs = self.agent.subscriptions().map(|t| {
                    let qos = if t == heartbeat {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    rumqttc::SubscribeFilter::new(t.to_string(), qos)
                });
                if let Err(e) = self.client.try_subscribe_many(subs) {
                    warn!("subscribe: {e}");
                }
                self.agent.handle_connected(now);
            }
            NetEvent::Message { topic, payload } => {
                let before = self.agent.stats();
                self.agent.handle_message(now, &topic, &payload);
                log_refusal(&topic, before, self.agent.stats());
            }
            NetEvent::Disconnected {
                error,
                retry_in,
                refused,
            } => {
                if self.agent.is_connected() {
                    warn!("connection lost ({error}); retrying in {retry_in:?}");
                } else if refused {
                    warn!("connect refused ({error}); retrying in {retry_in:?}");
                } else {
                    debug!("connect failed ({error}); retrying in {retry_in:?}");
                }
                self.agent.handle_disconnected(now);
            }
        }
    }

    fn on_process(&mut self, event: ProcessEvent<TaskRef>) {
        let now = self.clock.now();
        match event {
            ProcessEvent::Started { key, pid } => {
                self.pids.insert(key, pid);
                self.agent.handle_process_started(now, key, pid);
            }
            ProcessEvent::Output { key, stream, data } => {
                let mut rest: &[u8] = &data;
                while !rest.is_empty() {
                    let took = self.agent.handle_output(now, key, stream, rest);
                    rest = &rest[took..];
                }
            }
            ProcessEvent::Exited { key, exit } => {
                self.pids.remove(&key);
                self.groups_changed = true;
                info!("task {}/{} exited: {exit:?}", key.task, key.attempt);
                self.agent.handle_process_exited(now, key, exit);
            }
        }
    }

    /// Executes the core's actions until it has nothing more to say, syncing the journal
    /// whenever the core waits for appended records to be durable.
    fn execute(&mut self) -> Result<(), RunError> {
        loop {
            self.run_actions()?;
            if std::mem::take(&mut self.groups_changed) {
                self.record_groups();
            }
            let Some(lsn) = self.unsynced.take() else {
                return Ok(());
            };
            self.journal.sync()?;
            self.report_level();
            self.agent.handle_journaled(self.clock.now(), lsn);
        }
    }

    /// Executes the actions queued in the core. Appends are written but not synced: the core
    /// acts on none of them before [`Runtime::execute`] has synced and told it so.
    fn run_actions(&mut self) -> Result<(), RunError> {
        while let Some(action) = self.agent.poll_action() {
            match action {
                Action::Append { lsn, record } => {
                    self.append(&record)?;
                    self.unsynced = Some(lsn);
                }
                Action::Publish {
                    topic,
                    payload,
                    retain,
                } => {
                    let qos = if retain {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    };
                    if let Err(e) =
                        self.client
                            .try_publish(topic.as_str(), qos, retain, payload.to_vec())
                    {
                        warn!("publish on {topic}: {e}");
                    }
                }
                Action::Send { from, to } => self.send(from, to),
                Action::Acked { up_to } => self.acked(up_to)?,
                Action::Spawn(task) => self.spawn(task),
                Action::Signal { task, signal } => self.signal(task, signal),
                Action::Stopped => info!("drained; announcing offline"),
            }
        }
        Ok(())
    }

    fn append(&mut self, record: &tether_core::agent::Append) -> Result<(), RunError> {
        let mut buf = [0u8; records::MAX_RECORD];
        let bytes = match self.agent.encode_append(record, &mut buf) {
            Ok(bytes) => bytes,
            Err(e) => {
                error!("cannot encode a journal record: {e}");
                return Ok(());
            }
        };
        let result = match self.journal.append(bytes) {
            Err(JournalError::Full) => {
                // Compaction may free the acknowledged prefix; then try once more.
                self.compact()?;
                self.journal.append(bytes)
            }
            other => other,
        };
        match result {
            Ok(()) => {
                if let tether_core::agent::Append::Event(event) = record {
                    self.unacked.insert(event.seq, bytes.to_vec());
                }
                self.report_level();
                Ok(())
            }
            Err(JournalError::Full) => {
                // The level reported to the core keeps this from happening to a result; say so
                // loudly if it does.
                error!("journal full: record lost ({record:?})");
                self.agent
                    .handle_journal_level(JournalLevel::Full, self.journal.len_bytes());
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn level(&self) -> JournalLevel {
        // Room for the results of every task that may be running, plus a margin.
        let reserve = (self.config.max_tasks as u64 + 4) * 2 * records::MAX_RECORD as u64;
        if self.journal.free_bytes() < reserve {
            JournalLevel::Full
        } else if self.journal.fill() > DROP_OUTPUT_FILL {
            JournalLevel::DropOutput
        } else {
            JournalLevel::Normal
        }
    }

    fn report_level(&mut self) {
        let level = self.level();
        self.agent
            .handle_journal_level(level, self.journal.len_bytes());
    }

    fn send(&mut self, from: u64, to: u64) {
        let topic = self.agent.event_topic().to_string();
        for (_, bytes) in self.unacked.range(from..=to) {
            let Ok(JournalRecord::Event(event)) = records::decode(bytes) else {
                continue;
            };
            let mut buf = [0u8; wire::MAX_MESSAGE];
            match self.agent.encode_event(&event, &mut buf) {
                Ok(payload) => {
                    if let Err(e) =
                        self.client
                            .try_publish(&topic, QoS::AtLeastOnce, false, payload.to_vec())
                    {
                        // Resent after the acknowledgement timeout.
                        debug!("event publish deferred: {e}");
                        return;
                    }
                }
                Err(e) => error!("cannot encode an event: {e:?}"),
            }
        }
    }

    fn acked(&mut self, up_to: u64) -> Result<(), RunError> {
        self.unacked = self.unacked.split_off(&(up_to + 1));
        let live: u64 = self
            .unacked
            .values()
            .map(|r| crate::journal::frame_len(r.len()))
            .sum();
        let reclaimable = self.journal.len_bytes().saturating_sub(live);
        let worth_it = reclaimable as f64 >= COMPACT_SHARE * self.journal.len_bytes() as f64
            && reclaimable > 64 * 1024;
        // Under pressure, compact for less: a journal capped near its 64 KiB minimum never
        // reached the threshold above, so it stayed Full (refusing every task) after the
        // master had acknowledged everything in it.
        let pressed =
            self.level() != JournalLevel::Normal && reclaimable >= self.journal.max_bytes() / 8;
        if worth_it || pressed {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal as the core's snapshot plus the unacknowledged events.
    fn compact(&mut self) -> Result<(), RunError> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; records::MAX_RECORD];
        self.agent
            .snapshot(|record| match records::encode(record, &mut buf) {
                Ok(bytes) => out.push(bytes.to_vec()),
                Err(e) => error!("cannot encode a snapshot record: {e}"),
            });
        out.extend(self.unacked.values().cloned());
        let before = self.journal.len_bytes();
        self.journal.rewrite(out)?;
        debug!(
            "journal compacted: {before} -> {} bytes",
            self.journal.len_bytes()
        );
        self.report_level();
        Ok(())
    }

    fn spawn(&mut self, task: TaskRef) {
        let now = self.clock.now();
        let Some(spec) = self.agent.task_spec(task) else {
            return;
        };
        let command = TaskCommand {
            argv: spec
                .argv
                .iter()
                .filter_map(Result::ok)
                .map(str::to_string)
                .collect(),
            env: spec
                .env
                .iter()
                .filter_map(Result::ok)
                .map(str::to_string)
                .collect(),
            cwd: if spec.cwd.is_empty() {
                self.config.work_dir.clone()
            } else {
                spec.cwd.as_str().into()
            },
        };
        match self.supervisor.spawn(task, &command) {
            Ok(pid) => {
                info!(
                    "task {}/{} started: pid {pid} {:?}",
                    task.task, task.attempt, command.argv
                );
                self.pids.insert(task, pid);
                self.groups_changed = true;
                self.agent.handle_process_started(now, task, pid);
            }
            // The supervisor also reports the failure as an exit; the core takes the first.
            Err(e) => {
                warn!("task {}/{}: {e}", task.task, task.attempt);
                self.agent.handle_spawn_failed(now, task, e.errno);
            }
        }
    }

    fn record_groups(&self) {
        if let Err(e) = self.leftovers.record(self.pids.values().copied()) {
            warn!("cannot record task process groups: {e}");
        }
    }

    fn signal(&mut self, task: TaskRef, signal: Signal) {
        let Some(&pgid) = self.pids.get(&task) else {
            return;
        };
        let sig = match signal {
            Signal::Terminate => process::Signal::Term,
            Signal::Kill => process::Signal::Kill,
        };
        info!(
            "task {}/{}: {sig:?} to process group {pgid}",
            task.task, task.attempt
        );
        if let Err(e) = process::signal_group(pgid, sig) {
            warn!("signal {sig:?} to group {pgid}: {e}");
        }
    }
}

/// Logs a message the core refused as unauthentic or replayed; a flood logs at powers of two.
fn log_refusal(topic: &str, before: tether_core::agent::Stats, after: tether_core::agent::Stats) {
    for (what, was, now) in [
        (
            "unauthenticated",
            before.unauthenticated,
            after.unauthenticated,
        ),
        ("bad signature", before.bad_signatures, after.bad_signatures),
        ("replayed", before.replayed, after.replayed),
    ] {
        if now > was && now.is_power_of_two() {
            warn!("refused a message on {topic}: {what} ({now} so far); nothing was executed");
        }
    }
}

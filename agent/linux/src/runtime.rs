//! The agent loop: binds tether-core's state machine to MQTT, processes and the journal.
//!
//! One current-thread tokio runtime, one loop: wait for the first of an MQTT event, a process
//! event, the core's timer or a stop signal; feed it to the core; execute the actions the core
//! asks for. Nothing here decides what happens to a task.
//!
//! Durability: appends of one batch are written, then fsynced once (group commit), and only
//! then reported to the core, which only then lets them be published or spawned.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use rumqttc::{AsyncClient, QoS};
use tether_core::agent::{ClockRule, Phase, Signal};
use tether_core::message::TaskRef;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::confine::{self, Identity};
use crate::executor::{AppendError, Durability, Executor, Host, Settings};
use crate::journal::{Journal, JournalError};
use crate::kernel_clock;
use crate::leftovers::Leftovers;
use crate::mqtt::{self, NetEvent, Session};
use crate::process::{self, ProcessEvent, Supervisor, TaskCommand};
use crate::textfile::{Figures, Textfile};

/// Events handled before one journal sync, at most (bounds the latency a burst adds).
const BURST: usize = 64;

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

/// Linux, as the executor's host: the journal file, the MQTT client, task processes, and
/// the kernel's clock.
struct Linux {
    clock: Clock,
    /// How the wall clock is trusted: `Ntp` asks the kernel ([`crate::kernel_clock`]).
    clock_rule: ClockRule,
    /// The kernel's NTP state could not be read, and that was logged.
    clock_unreadable: bool,
    journal: Journal,
    /// Set once the session (keepalive, will) is known from the started core.
    client: Option<AsyncClient>,
    supervisor: Supervisor<TaskRef>,
    leftovers: Leftovers,
    work_dir: std::path::PathBuf,
}

fn qos(qos: tether_core::topic::QoS) -> QoS {
    match qos {
        tether_core::topic::QoS::AtMostOnce => QoS::AtMostOnce,
        tether_core::topic::QoS::AtLeastOnce => QoS::AtLeastOnce,
    }
}

impl Host for Linux {
    type Error = JournalError;

    fn now(&self) -> tether_core::Instant {
        self.clock.now()
    }

    fn unix_ms(&self) -> u64 {
        unix_ms()
    }

    fn ntp_synced(&mut self) -> Option<bool> {
        if self.clock_rule == ClockRule::Trusted {
            return None;
        }
        match kernel_clock::synchronised() {
            Ok(synced) => {
                if std::mem::replace(&mut self.clock_unreadable, false) {
                    info!("clock: the kernel's NTP state is readable again");
                }
                Some(synced)
            }
            Err(e) => {
                if !std::mem::replace(&mut self.clock_unreadable, true) {
                    warn!(
                        "clock: cannot read the kernel's NTP state ({e}; systemd's \
                         ProtectClock=yes blocks it): the clock is trusted only as the master's \
                         clock confirms it; a board with a battery-backed clock may set \
                         clock = \"trusted\""
                    );
                }
                Some(false)
            }
        }
    }

    fn append(&mut self, _lsn: u64, record: &[u8]) -> Result<(), AppendError<JournalError>> {
        match self.journal.append(record) {
            Ok(()) => Ok(()),
            Err(JournalError::Full) => Err(AppendError::Full),
            Err(e) => Err(AppendError::Failed(e)),
        }
    }

    fn sync(&mut self, _lsn: u64) -> Result<Durability, JournalError> {
        self.journal.sync().map(|()| Durability::Now)
    }

    fn rewrite(&mut self, records: Vec<Vec<u8>>) -> Result<(), JournalError> {
        self.journal.rewrite(records)
    }

    fn journal_bytes(&self) -> u64 {
        self.journal.len_bytes()
    }

    fn journal_max_bytes(&self) -> u64 {
        self.journal.max_bytes()
    }

    fn frame_len(&self, len: usize) -> u64 {
        crate::journal::frame_len(len)
    }

    fn subscribe(&mut self, filters: &[(&str, tether_core::topic::QoS)]) {
        let subs = filters
            .iter()
            .map(|(t, q)| rumqttc::SubscribeFilter::new((*t).to_string(), qos(*q)));
        if let Some(Err(e)) = self.client.as_ref().map(|c| c.try_subscribe_many(subs)) {
            warn!("subscribe: {e}");
        }
    }

    fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        q: tether_core::topic::QoS,
        retain: bool,
    ) -> bool {
        self.client.as_ref().is_some_and(|c| {
            c.try_publish(topic, qos(q), retain, payload.to_vec())
                .is_ok()
        })
    }

    fn spawn(&mut self, task: TaskRef, spec: &tether_core::message::TaskSpec) -> Result<u32, i32> {
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
                self.work_dir.clone()
            } else {
                spec.cwd.as_str().into()
            },
        };
        debug!("task {}/{}: {:?}", task.task, task.attempt, command.argv);
        self.supervisor.spawn(task, &command).map_err(|e| e.errno)
    }

    fn signal(&mut self, _task: TaskRef, pgid: u32, signal: Signal) {
        let sig = match signal {
            Signal::Terminate => process::Signal::Term,
            Signal::Kill => process::Signal::Kill,
        };
        if let Err(e) = process::signal_group(pgid, sig) {
            warn!("signal {sig:?} to group {pgid}: {e}");
        }
    }

    fn process_groups_changed(&mut self, groups: &[u32]) {
        if let Err(e) = self.leftovers.record(groups.iter().copied()) {
            warn!("cannot record task process groups: {e}");
        }
    }
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
    let settings = Settings {
        max_tasks: config.max_tasks as usize,
        allowlist: config.tasks.allow.clone(),
    };

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
    // The client comes once the started core has given the session's keepalive and will.
    let (proc_tx, mut proc_rx) = mpsc::channel(64);
    let mut host = Linux {
        clock,
        clock_rule: config.clock,
        clock_unreadable: false,
        journal,
        client: None,
        supervisor: Supervisor::new(proc_tx).confined(confinement),
        leftovers,
        work_dir: config.work_dir.clone(),
    };
    let mut exec = Executor::start(&mut host, core_config, settings, recovered.records)
        .map_err(|e| RunError::Config(format!("{e}")))?;
    info!(
        "agent {} (incarnation {inc:08x}): journal {:08x}, {} bytes, {} events to report",
        config.id,
        exec.agent().journal(),
        host.journal.len_bytes(),
        exec.unacked()
    );

    let (keep_alive, will_topic, will_payload) = exec.session();
    let session = Session {
        client_id: config.id.to_string(),
        will_topic: will_topic.to_string(),
        will_payload: will_payload.to_string(),
        keep_alive: std::time::Duration::from_millis(keep_alive.as_millis()),
    };
    let (client, mut net) = mqtt::connect(&config, session, u64::from(inc));
    host.client = Some(client);
    let mut metrics = config
        .metrics_file
        .clone()
        .map(|path| Textfile::new(path, &config.id));
    exec.flush(&mut host)?;

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let drain = tether_core::Duration::from_millis(config.drain.as_millis() as u64);
    while !exec.agent().is_stopped() {
        let wake = exec.poll_timeout().map(|t| host.clock.to_tokio(t));
        tokio::select! {
            Some(event) = net.recv() => on_net(&mut exec, &mut host, event)?,
            Some(event) = proc_rx.recv() => on_process(&mut exec, &mut host, event)?,
            () = sleep_until(wake) => exec.handle_timeout(&mut host)?,
            _ = sigterm.recv() => exec.handle_stop(&mut host, drain)?,
            _ = sigint.recv() => exec.handle_stop(&mut host, drain)?,
        }
        // Group commit across a burst: what is already waiting is handled before the one
        // sync, so commands or exits arriving together cost one fsync, not one each.
        for _ in 0..BURST {
            if let Ok(event) = net.try_recv() {
                on_net(&mut exec, &mut host, event)?;
            } else if let Ok(event) = proc_rx.try_recv() {
                on_process(&mut exec, &mut host, event)?;
            } else {
                break;
            }
        }
        exec.flush(&mut host)?;
        if let Some(file) = metrics.as_mut() {
            write_metrics(file, &exec, &host.journal);
        }
    }
    info!(
        "stopped: {} events left unacknowledged in the journal",
        exec.unacked()
    );
    // Let the connection task flush the goodbye presence, boundedly.
    if let Some(client) = &host.client {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The figures for node_exporter (written only when they changed).
fn write_metrics(file: &mut Textfile, exec: &Executor, journal: &Journal) {
    let agent = exec.agent();
    let mut figures = Figures {
        connected: agent.is_connected(),
        journal_bytes: journal.len_bytes(),
        journal_max_bytes: journal.max_bytes(),
        backlog: agent.last_seq().saturating_sub(agent.acked_seq()),
        stats: agent.stats(),
        ..Figures::default()
    };
    for (_, phase) in agent.tasks() {
        match phase {
            Phase::Held => figures.tasks_held += 1,
            Phase::Running { .. } => figures.tasks_running += 1,
            _ => figures.tasks_starting += 1,
        }
    }
    file.update(std::time::Instant::now(), &figures);
}

fn on_net(exec: &mut Executor, host: &mut Linux, event: NetEvent) -> Result<(), JournalError> {
    match event {
        NetEvent::Connected {
            broker,
            session_present,
        } => {
            info!("connected to {broker} (session present: {session_present})");
            exec.handle_connected(host)
        }
        NetEvent::Message { topic, payload } => exec.handle_message(host, &topic, &payload),
        NetEvent::Disconnected {
            error,
            retry_in,
            refused,
        } => {
            if exec.agent().is_connected() {
                warn!("connection lost ({error}); retrying in {retry_in:?}");
            } else if refused {
                warn!("connect refused ({error}); retrying in {retry_in:?}");
            } else {
                debug!("connect failed ({error}); retrying in {retry_in:?}");
            }
            exec.handle_disconnected(host)
        }
    }
}

fn on_process(
    exec: &mut Executor,
    host: &mut Linux,
    event: ProcessEvent<TaskRef>,
) -> Result<(), JournalError> {
    match event {
        // The executor has the pid from the spawn itself.
        ProcessEvent::Started { .. } => Ok(()),
        ProcessEvent::Output { key, stream, data } => exec.handle_output(host, key, stream, &data),
        ProcessEvent::Exited { key, exit } => exec.handle_exited(host, key, exit),
    }
}

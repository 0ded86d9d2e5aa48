//! The executor of tether-core's actions: the one piece of code between the agent's state
//! machine and the machine it runs on. The agent binary runs it over Linux ([`crate::runtime`]:
//! the journal file, rumqttc, task processes); the simulation in `tests/` runs it over its
//! simulated disk, network and processes. Both run this code with the same capacities, so
//! what the simulation proves holds for the binary.
//!
//! Sans-IO like the core: every input takes the [`Host`] it acts through, the host gives both
//! clocks, and nothing here waits. The executor drains the core's actions, carries each one out
//! through the host, and feeds what came of them (a pid, a failed spawn, appends made durable,
//! the journal's new size) back to the core only after the drain, never while draining.
//!
//! Durability: appends are written as the core asks, and made durable by [`Executor::flush`]
//! with one sync for everything appended since the last (group commit). A host whose sync
//! completes later (the simulated disk) reports it with [`Executor::handle_durable`].
//!
//! The clock: the host's wall clock goes to the core at start and at every timer; a host that
//! asks the kernel whether NTP has synchronised it ([`Host::ntp_synced`]) is read at start and
//! then at most once a [`CLOCK_CHECK`], in flushes the loop makes anyway (no timer of its own).

use std::collections::BTreeMap;

use log::{debug, error, info, warn};
use tether_core::agent::{Action, Agent, Append, ClockRule, Config, Signal, Stats};
use tether_core::allowlist::Allowlist;
use tether_core::journal::{self as records, JournalRecord, JournalUsage};
use tether_core::message::{Exit, Stream, TaskRef, TaskSpec};
use tether_core::topic::{QoS, TopicError};
use tether_core::{Duration, Instant, wire};

/// Attempts held or running at once, at most, chained steps waiting for their predecessor
/// included (the config's `max_tasks` may lower it).
pub const TASKS: usize = 32;
/// Attempt ids remembered for exactly-once start.
pub const SEEN: usize = 256;
pub type CoreAgent = Agent<TASKS, SEEN>;
/// The kernel's NTP state is read again at most this often.
pub const CLOCK_CHECK: Duration = Duration::from_secs(60);

/// Why an append did not reach the journal.
#[derive(Debug)]
pub enum AppendError<E> {
    /// The journal is at its cap.
    Full,
    Failed(E),
}

/// When a sync's appends are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On return (an fsync).
    Now,
    /// Later: the host calls [`Executor::handle_durable`].
    Later,
}

/// What the executor needs from the machine it runs on.
pub trait Host {
    type Error: std::fmt::Display;

    /// The monotonic clock, as the core's `Instant`.
    fn now(&self) -> Instant;
    /// The wall clock, Unix milliseconds.
    fn unix_ms(&self) -> u64;
    /// Whether the kernel has the wall clock NTP-synchronised; `None` for a host that does not
    /// ask: its clock is trusted as it reads (a battery-backed clock, `clock = "trusted"`, a
    /// simulation). See `tether_core::agent::ClockRule`.
    fn ntp_synced(&mut self) -> Option<bool> {
        None
    }

    /// Writes record number `lsn` at the journal's end (not yet durable).
    fn append(&mut self, lsn: u64, record: &[u8]) -> Result<(), AppendError<Self::Error>>;
    /// Makes every record appended so far durable; `lsn` is the last one's number.
    fn sync(&mut self, lsn: u64) -> Result<Durability, Self::Error>;
    /// Replaces the whole journal with `records`, atomically and durably.
    fn rewrite(&mut self, records: Vec<Vec<u8>>) -> Result<(), Self::Error>;
    /// Bytes the journal holds, framing included.
    fn journal_bytes(&self) -> u64;
    fn journal_max_bytes(&self) -> u64;
    /// Bytes one record of `len` bytes takes in the journal.
    fn frame_len(&self, len: usize) -> u64;

    /// Subscribes (again) after a connect.
    fn subscribe(&mut self, filters: &[(&str, QoS)]);
    /// Queues a publish; `false` if the client's queue is full (the core resends what matters).
    fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> bool;

    /// Starts the attempt's process in a process group of its own: its pid (and group id), or
    /// the errno it could not be started with. Its output and exit come back as inputs.
    fn spawn(&mut self, task: TaskRef, spec: &TaskSpec) -> Result<u32, i32>;
    /// Signals the attempt's whole process group.
    fn signal(&mut self, task: TaskRef, pgid: u32, signal: Signal);
    /// The process groups of the tasks alive changed (written down so a restarted agent can
    /// stop a killed predecessor's tasks).
    fn process_groups_changed(&mut self, _groups: &[u32]) {}
}

/// The runtime's settings the core is started with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub max_tasks: usize,
    pub allowlist: Option<Allowlist>,
}

/// What the executor saw go wrong that the core does not count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Journal records that did not decode at start (skipped).
    pub undecodable: u64,
    /// Records lost to a full journal even after compacting. The journal level keeps results
    /// from this; any count here is a bug.
    pub lost_records: u64,
    pub compactions: u64,
}

/// What came of an action, fed to the core once the drain is done.
#[derive(Debug)]
enum Outcome {
    Started(TaskRef, u32),
    SpawnFailed(TaskRef, i32),
    Durable(u64),
}

#[derive(Debug)]
pub struct Executor {
    agent: CoreAgent,
    /// Journaled events not yet acknowledged, as journal records, by sequence.
    unacked: BTreeMap<u64, Vec<u8>>,
    /// Their size in the journal.
    unacked_bytes: u64,
    /// Process group of every attempt spawned and not yet exited.
    pids: BTreeMap<TaskRef, u32>,
    groups_changed: bool,
    usage_changed: bool,
    /// Highest append written and not yet synced.
    unsynced: Option<u64>,
    /// Highest append written.
    appended: Option<u64>,
    outcomes: Vec<Outcome>,
    stats: ExecStats,
    /// When the kernel's NTP state was read last (`None`: the host does not ask).
    clock_read: Option<Instant>,
    /// The core's trust in its clock, as last logged.
    clock_trusted: bool,
}

impl Executor {
    /// Starts the core: the runtime's settings, the wall clock, then the journal's records
    /// replayed, oldest first. Call [`Executor::flush`] next.
    pub fn start<H: Host>(
        host: &mut H,
        config: Config<'_>,
        settings: Settings,
        journal: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Self, TopicError> {
        let now = host.now();
        let mut agent = CoreAgent::new(config, now)?;
        agent.set_max_tasks(settings.max_tasks);
        if let Some(allow) = settings.allowlist {
            agent.set_allowlist(allow);
        }
        agent.handle_wall_clock(now, host.unix_ms());
        let synced = host.ntp_synced();
        if let Some(synced) = synced {
            agent.set_clock_rule(ClockRule::Ntp);
            agent.handle_clock_synced(now, synced);
            info!(
                "clock: trusted while NTP has it synchronised (now: {})",
                if synced {
                    "synchronised"
                } else {
                    "not synchronised"
                }
            );
        }
        let mut exec = Self {
            agent,
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            pids: BTreeMap::new(),
            groups_changed: false,
            usage_changed: true,
            unsynced: None,
            appended: None,
            outcomes: Vec::new(),
            stats: ExecStats::default(),
            clock_read: synced.map(|_| now),
            clock_trusted: true,
        };
        for bytes in journal {
            match records::decode(&bytes) {
                Ok(record) => {
                    if let JournalRecord::Event(e) = &record {
                        exec.unacked.insert(e.seq, bytes);
                    }
                    exec.agent.restore(&record);
                }
                Err(e) => {
                    exec.stats.undecodable += 1;
                    warn!("journal: skipping an undecodable record: {e}");
                }
            }
        }
        let acked = exec.agent.acked_seq();
        exec.unacked.retain(|seq, _| *seq > acked);
        exec.unacked_bytes = exec.unacked.values().map(|r| host.frame_len(r.len())).sum();
        exec.agent.finish_restore(now);
        Ok(exec)
    }

    // ----- getters -----

    pub fn agent(&self) -> &CoreAgent {
        &self.agent
    }

    pub fn stats(&self) -> ExecStats {
        self.stats
    }

    /// Events journaled and not acknowledged by the master.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// When [`Executor::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.agent.poll_timeout()
    }

    /// The MQTT keepalive and last will to connect with.
    pub fn session(
        &self,
    ) -> (
        Duration,
        &str,
        heapless::String<{ tether_core::presence::MAX_PRESENCE }>,
    ) {
        let (topic, will) = self.agent.will();
        (self.agent.keepalive(), topic, will)
    }

    // ----- inputs -----

    pub fn handle_connected<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        host.subscribe(&self.agent.subscriptions());
        self.agent.handle_connected(host.now());
        self.run(host)
    }

    pub fn handle_disconnected<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        self.agent.handle_disconnected(host.now());
        self.run(host)
    }

    pub fn handle_message<H: Host>(
        &mut self,
        host: &mut H,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), H::Error> {
        let before = self.agent.stats();
        self.agent.handle_message(host.now(), topic, payload);
        log_refusal(topic, before, self.agent.stats());
        self.run(host)
    }

    /// Output of a task, in order; a chunk the core cannot take at once is fed in parts, the
    /// actions drained after each.
    pub fn handle_output<H: Host>(
        &mut self,
        host: &mut H,
        task: TaskRef,
        stream: Stream,
        mut data: &[u8],
    ) -> Result<(), H::Error> {
        while !data.is_empty() {
            let took = self.agent.handle_output(host.now(), task, stream, data);
            data = &data[took.max(1).min(data.len())..];
            self.run(host)?;
        }
        Ok(())
    }

    /// A task's process ended. Only processes this executor spawned are reported: a spawn that
    /// failed was reported by its error already (a supervisor may announce it as an exit too).
    pub fn handle_exited<H: Host>(
        &mut self,
        host: &mut H,
        task: TaskRef,
        exit: Exit,
    ) -> Result<(), H::Error> {
        if self.pids.remove(&task).is_none() {
            return Ok(());
        }
        self.groups_changed = true;
        info!("task {}/{} exited: {exit:?}", task.task, task.attempt);
        self.agent.handle_process_exited(host.now(), task, exit);
        self.run(host)
    }

    /// The core's timer is due; the wall clock is read again too (NTP may have stepped it).
    pub fn handle_timeout<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        let now = host.now();
        self.agent.handle_wall_clock(now, host.unix_ms());
        self.agent.handle_timeout(now);
        self.run(host)
    }

    /// Appends through `lsn` are durable (for a host whose sync answers [`Durability::Later`]).
    pub fn handle_durable<H: Host>(&mut self, host: &mut H, lsn: u64) -> Result<(), H::Error> {
        self.outcomes.push(Outcome::Durable(lsn));
        self.usage_changed = true;
        self.run(host)
    }

    /// A normal stop: drain for up to `drain`, then stop (see [`CoreAgent::handle_stop`]).
    pub fn handle_stop<H: Host>(&mut self, host: &mut H, drain: Duration) -> Result<(), H::Error> {
        info!(
            "stop requested: draining for up to {} ms",
            drain.as_millis()
        );
        self.agent.handle_stop(host.now(), drain);
        self.run(host)
    }

    /// Runs the actions, then syncs what was appended (one sync for all of it) and runs what
    /// that releases, until the core has nothing more to say. Call after a burst of inputs.
    pub fn flush<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        self.check_clock(host);
        loop {
            self.run(host)?;
            let Some(lsn) = self.unsynced.take() else {
                return Ok(());
            };
            if host.sync(lsn)? == Durability::Now {
                self.outcomes.push(Outcome::Durable(lsn));
            }
            self.usage_changed = true;
        }
    }

    /// Reads the kernel's NTP state again when [`CLOCK_CHECK`] has passed, and logs a change
    /// of the core's trust in its clock.
    fn check_clock<H: Host>(&mut self, host: &mut H) {
        let now = host.now();
        if let Some(read) = self.clock_read
            && now >= read.saturating_add(CLOCK_CHECK)
            && let Some(synced) = host.ntp_synced()
        {
            self.clock_read = Some(now);
            self.agent.handle_clock_synced(now, synced);
        }
        let trusted = self.agent.clock_trusted();
        if trusted != std::mem::replace(&mut self.clock_trusted, trusted) {
            if trusted {
                info!("clock: trusted; start times and schedules run by it");
            } else {
                warn!(
                    "clock: not trusted (not synchronised, set back, or stepped); start times \
                     and schedules wait for NTP or the master's clock"
                );
            }
        }
    }

    // ----- the drain -----

    /// Carries out the core's actions, then feeds it what came of them, until it is quiet.
    /// Appends are written, not synced: the core acts on none before they are durable.
    fn run<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        loop {
            while let Some(action) = self.agent.poll_action() {
                self.execute(host, action)?;
            }
            if std::mem::take(&mut self.groups_changed) {
                let groups: Vec<u32> = self.pids.values().copied().collect();
                host.process_groups_changed(&groups);
            }
            let now = host.now();
            let outcomes = std::mem::take(&mut self.outcomes);
            let quiet = outcomes.is_empty() && !self.usage_changed;
            for outcome in outcomes {
                match outcome {
                    Outcome::Started(task, pid) => {
                        self.agent.handle_process_started(now, task, pid)
                    }
                    Outcome::SpawnFailed(task, errno) => {
                        self.agent.handle_spawn_failed(now, task, errno);
                    }
                    Outcome::Durable(lsn) => self.agent.handle_journaled(now, lsn),
                }
            }
            if std::mem::take(&mut self.usage_changed) {
                self.agent.handle_journal_usage(self.usage(host));
            }
            if quiet {
                return Ok(());
            }
        }
    }

    fn execute<H: Host>(&mut self, host: &mut H, action: Action) -> Result<(), H::Error> {
        match action {
            Action::Append { lsn, record } => self.append(host, lsn, &record)?,
            Action::Publish {
                topic,
                payload,
                qos,
                retain,
            } => {
                if !host.publish(&topic, &payload, qos, retain) {
                    warn!("publish on {topic}: the client's queue is full");
                }
            }
            Action::Send { from, to } => self.send(host, from, to),
            Action::Acked { up_to } => {
                let kept = self.unacked.split_off(&(up_to + 1));
                let dropped = std::mem::replace(&mut self.unacked, kept);
                let freed: u64 = dropped.values().map(|r| host.frame_len(r.len())).sum();
                self.unacked_bytes = self.unacked_bytes.saturating_sub(freed);
                self.usage_changed = true;
            }
            Action::Compact => self.compact(host)?,
            Action::Spawn(task) => self.spawn(host, task),
            Action::Signal { task, signal } => {
                if let Some(&pgid) = self.pids.get(&task) {
                    info!(
                        "task {}/{}: {signal:?} to process group {pgid}",
                        task.task, task.attempt
                    );
                    host.signal(task, pgid, signal);
                }
            }
            Action::Stopped => info!("drained; announcing offline"),
        }
        Ok(())
    }

    fn usage<H: Host>(&self, host: &H) -> JournalUsage {
        JournalUsage {
            bytes: host.journal_bytes(),
            max_bytes: host.journal_max_bytes(),
            unacked_bytes: self.unacked_bytes,
        }
    }

    fn append<H: Host>(&mut self, host: &mut H, lsn: u64, record: &Append) -> Result<(), H::Error> {
        let mut buf = [0u8; records::MAX_RECORD];
        let bytes = match self.agent.encode_append(record, &mut buf) {
            Ok(bytes) => bytes,
            Err(e) => {
                error!("cannot encode a journal record: {e}");
                self.stats.lost_records += 1;
                return Ok(());
            }
        };
        let written = match host.append(lsn, bytes) {
            // Compaction may free the acknowledged prefix; then once more.
            Err(AppendError::Full) => {
                self.compact(host)?;
                host.append(lsn, bytes)
            }
            other => other,
        };
        self.appended = Some(lsn);
        self.usage_changed = true;
        match written {
            Ok(()) => {
                self.unsynced = Some(lsn);
                if let Append::Event(event) = record {
                    self.unacked_bytes += host.frame_len(bytes.len());
                    self.unacked.insert(event.seq, bytes.to_vec());
                }
                Ok(())
            }
            Err(AppendError::Full) => {
                // The level the core gets keeps this from happening to a result.
                error!("journal full: record lost ({record:?})");
                self.stats.lost_records += 1;
                Ok(())
            }
            Err(AppendError::Failed(e)) => Err(e),
        }
    }

    /// Publishes the journaled events `from..=to`; stops at a full queue (the core resends
    /// after its acknowledgement timeout).
    fn send<H: Host>(&mut self, host: &mut H, from: u64, to: u64) {
        let topic = self.agent.event_topic();
        let mut buf = [0u8; wire::MAX_MESSAGE];
        for bytes in self.unacked.range(from..=to).map(|(_, r)| r) {
            let Ok(JournalRecord::Event(event)) = records::decode(bytes) else {
                continue;
            };
            match self.agent.encode_event(&event, &mut buf) {
                Ok(payload) => {
                    if !host.publish(topic, payload, tether_core::agent::EVENT_QOS, false) {
                        debug!("event publish deferred: the client's queue is full");
                        return;
                    }
                }
                Err(e) => error!("cannot encode an event: {e:?}"),
            }
        }
    }

    /// Rewrites the journal as the core's snapshot plus the unacknowledged events. Everything
    /// appended so far is in it, so all of it is durable once the rewrite is.
    fn compact<H: Host>(&mut self, host: &mut H) -> Result<(), H::Error> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; records::MAX_RECORD];
        self.agent
            .snapshot(|record| match records::encode(record, &mut buf) {
                Ok(bytes) => out.push(bytes.to_vec()),
                Err(e) => error!("cannot encode a snapshot record: {e}"),
            });
        out.extend(self.unacked.values().cloned());
        let before = host.journal_bytes();
        host.rewrite(out)?;
        self.stats.compactions += 1;
        debug!(
            "journal compacted: {before} -> {} bytes",
            host.journal_bytes()
        );
        if let Some(lsn) = self.appended {
            self.unsynced = None;
            self.outcomes.push(Outcome::Durable(lsn));
        }
        self.usage_changed = true;
        Ok(())
    }

    fn spawn<H: Host>(&mut self, host: &mut H, task: TaskRef) {
        let Some(spec) = self.agent.task_spec(task) else {
            return;
        };
        match host.spawn(task, spec) {
            Ok(pid) => {
                info!("task {}/{} started: pid {pid}", task.task, task.attempt);
                self.pids.insert(task, pid);
                self.groups_changed = true;
                self.outcomes.push(Outcome::Started(task, pid));
            }
            Err(errno) => {
                warn!(
                    "task {}/{}: cannot start (errno {errno})",
                    task.task, task.attempt
                );
                self.outcomes.push(Outcome::SpawnFailed(task, errno));
            }
        }
    }
}

/// Logs a message the core refused as unauthentic or replayed; a flood logs at powers of two.
fn log_refusal(topic: &str, before: Stats, after: Stats) {
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

//! The rig the core tests drive: a [`Master`] in virtual time over a real SQLite store file,
//! drained after every input through the runtime's own [`commit::commit`] (one transaction per
//! batch, publishes only after it). Each test file adds the helpers that speak its agents'
//! part.

use tether_core::{Duration, Instant};
use tether_master::commit;
use tether_master::core::{Config, Master, Publish};
use tether_master::store::SqliteStore;

pub(crate) struct Rig {
    pub(crate) m: Master,
    pub(crate) now: Instant,
    pub(crate) store: SqliteStore,
    _dir: tempfile::TempDir,
    /// Everything published, in order.
    pub(crate) out: Vec<Publish>,
    /// Heartbeats the simulated agents sent (one count for all: each only has to grow).
    pub(crate) heartbeats: u32,
    /// The journal the simulated agents name in their heartbeats and events (a re-flash
    /// changes it).
    pub(crate) journal: u32,
}

impl Rig {
    /// A master at 100 s over a fresh store. `config` may read the store (for the epoch);
    /// `setup` runs on the rig before the master first connects to the broker.
    pub(crate) fn start(
        config: impl FnOnce(&SqliteStore) -> Config,
        setup: impl FnOnce(&mut Self),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("master.db")).unwrap();
        let config = config(&store);
        let now = Instant::from_secs(100);
        let mut rig = Self {
            m: Master::new(config, now).unwrap(),
            now,
            store,
            _dir: dir,
            out: Vec::new(),
            heartbeats: 0,
            journal: 1,
        };
        setup(&mut rig);
        rig.m.handle_connected(now);
        rig.drain();
        rig
    }

    /// Drains one batch: commits its changes in one transaction first, then records the
    /// publishes.
    pub(crate) fn drain(&mut self) {
        let publishes = commit::commit(&mut self.m, &self.store).expect("batch commits");
        self.out.extend(publishes);
    }

    /// Moves virtual time to `now + d`, firing every timeout on the way.
    pub(crate) fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(t) = self.m.poll_timeout() {
            if t > target {
                break;
            }
            assert!(t >= self.now, "timeout in the past");
            self.now = t;
            self.m.handle_timeout(t);
            self.drain();
        }
        self.now = target;
        self.m.handle_timeout(target);
        self.drain();
    }

    pub(crate) fn secs(&mut self, s: u64) {
        self.advance(Duration::from_secs(s));
    }

    /// Jumps `s` seconds with one timeout call at the end (a loop that woke late).
    pub(crate) fn jump(&mut self, s: u64) {
        self.now += Duration::from_secs(s);
        self.m.handle_timeout(self.now);
        self.drain();
    }

    /// A message from the broker, then the drain.
    pub(crate) fn deliver(&mut self, topic: &str, payload: &[u8]) {
        self.m.handle_message(self.now, topic, payload);
        self.drain();
    }
}

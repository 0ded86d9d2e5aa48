//! End-to-end harness: the real `tether-agent` binary, real brokers, a scripted master.
//!
//! Shared by every test that runs Tether's processes over real sockets (the agent end-to-end
//! tests now, network-cut tests later). Every wait is bounded, every port was free a moment
//! ago (port 0), every process is killed when its handle drops, and a failing test prints the
//! agent's log.
//!
//! - [`bins`]: the workspace's binaries, built once per test process so a test never runs a
//!   stale agent.
//! - [`tempdir`]: a directory removed on drop.
//! - [`broker`]: the embedded rumqttd or a real mosquitto, behind one [`broker::TestBroker`].
//! - [`certs`]: a test CA and certificates made with `openssl`, for the TLS tests.
//! - [`agent`]: a `tether-agent` process with its own state dir and captured log.
//! - [`master`]: [`master::ScriptedMaster`], a master reduced to the protocol: heartbeats,
//!   retransmitted starts, kills, deduplicated and acknowledged events.
//! - [`master_proc`]: the real `tether-master` binary, its ready line and its HTTP API.
//! - [`fleet`]: a real master and real agents together, each agent with its own home.
//! - [`orders`]: workflows and orders on the real master, and the marks their steps leave.
//! - [`schedules`]: schedules on the real master, the marks of their occurrences by slot,
//!   and how late each started.
//! - [`procs`]: what `/proc` says about processes (groups, zombies, memory, wake-ups).

pub mod agent;
pub mod bins;
pub mod broker;
pub mod certs;
pub mod child;
pub mod fleet;
pub mod master;
pub mod master_proc;
pub mod orders;
/// The master tests' one-request HTTP client, shared rather than copied.
#[path = "../../../master/tests/master/plain_http.rs"]
pub(crate) mod plain_http;
pub mod procs;
pub mod schedules;
pub mod tempdir;

use std::time::Duration;

/// The bound of every wait in an end-to-end test: generous, because two shared cores under a
/// parallel `cargo test` are slow; it is a bound, not a timing goal.
pub const WAIT: Duration = Duration::from_secs(30);

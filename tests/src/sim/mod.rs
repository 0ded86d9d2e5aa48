//! Deterministic simulation substrate: seeded, virtual time, no I/O, no threads.
//!
//! - [`rng`]: our own PRNG, so a seed replays forever.
//! - [`mqtt`]: the MQTT 3.1.1 packets and topic rules the model speaks.
//! - [`link`]: one client's network path with faults (delay, stall, black hole, reset).
//! - [`broker`]: a model broker faithful to what rumqttd and mosquitto were measured to do.
//! - [`client`]: a model of rumqttc's event loop, for the owners of connections.
//! - [`net`]: all of them wired together, driven by [`Net::step`].
//! - [`clock`] and [`trace`]: the step loop's clock and its record of recent steps.
//! - [`world`]: agents (tether-agent's executor around the core, hosted by [`agent_host`] over
//!   their [`disk`]s and [`procs`]), a scripted master ([`master_script`]) and the net, stepped
//!   together; [`oracle`] checks what each agent did against [`invariants`].
//! - [`system`]: the same world with the real master core and its SQLite store.
//! - [`random_run`]: the one random-scenario generator of the agent and system sweeps.
//!
//! Every component is sans-IO: `handle_*` inputs with an explicit `now`, `poll_*` outputs,
//! and `poll_timeout` for the next instant it has work. Nothing reads a clock. A simulation
//! steps with [`Clock::advance`] to the earliest `poll_timeout` of the net and of the code
//! under test, runs everything due, and repeats; on a failed invariant it prints the seed
//! and [`Net::trace`].
//!
//! A simulation with owners (agent cores, a scripted master) looks like this:
//!
//! ```text
//! let mut net = Net::new(BrokerConfig::rumqttd(), seed);
//! let agent = net.add_client(ClientConfig { will: .., subscriptions: .., ..ClientConfig::new("pi-1") },
//!                            LinkConfig::default());
//! net.start(agent, t0);
//! let mut clock = Clock::new(t0);
//! let mut schedule = Timeline::new();          // (Instant, fault / kill / restart) scripted steps
//! while let Some(now) = clock.advance([net.poll_timeout(), core.poll_timeout(),
//!                                      schedule.poll_timeout()], until)? {
//!     while let Some((_, step)) = schedule.pop_due(now) { /* net.set_fault(..), net.kill(..) */ }
//!     net.step(now);
//!     while let Some((k, event)) = net.poll_event() {
//!         match event {
//!             ClientEvent::Connected { .. } => core.handle_connected(now),
//!             ClientEvent::Disconnected => core.handle_disconnected(now),
//!             ClientEvent::Message(p) => core.handle_message(now, &p.topic, &p.payload),
//!         }
//!     }
//!     core.handle_timeout(now);
//!     while let Some(action) = core.poll_action() {
//!         // Publish -> net.publish(agent, topic, payload, qos, retain, now)
//!     }
//!     // check invariants; on failure print the seed and net.trace()
//! }
//! ```

pub mod agent_host;
pub mod broker;
pub mod client;
pub mod clock;
pub mod disk;
pub mod invariants;
pub mod link;
pub mod master_script;
pub mod mqtt;
pub mod net;
pub mod oracle;
pub mod procs;
pub mod random_run;
pub mod rng;
pub mod sweep;
pub mod system;
pub mod trace;
pub mod world;

pub use broker::{Broker, BrokerConfig, BrokerStats, ConnId, Output, SessionInfo};
pub use client::{
    Client, ClientConfig, ClientError, ClientEvent, ClientOutput, ClientState, ClientStats,
};
pub use clock::{Clock, Stuck, Timeline};
pub use link::{Delivery, Dir, Fault, Link, LinkConfig, LinkStats, Path};
pub use mqtt::{Connect, ConnectCode, Packet, Publish, QoS, Will};
pub use net::{ClientKey, Net};
pub use rng::Rng;
pub use trace::{Trace, TraceLine};

//! tether-master: the master library (core, broker, store, API).
//!
//! The public surface is what the `tether-master` binary, the benchmarks and
//! the tests use:
//! - [`model`]: the domain values (agents, clusters, profiles, tasks, attempts, outcomes, API
//!   tokens), and [`limits`]: the range of every number they carry;
//! - [`core`]: the sans-IO state machine that decides everything;
//! - [`store`]: the [`store::Store`] trait and its SQLite backend; [`commit`]: the one
//!   commit-then-publish drain;
//! - [`runtime`]: the `tether-master` loop over tokio, MQTT, the store and [`api`] (HTTP);
//! - [`broker`]: the embedded rumqttd or an external broker, and client settings;
//!   [`tls_listener`]: the embedded broker's TLS listener;
//!
//! Private: the signing key file and random keys (`keys`), who may connect to the embedded
//! broker (`passwords`).

pub mod api;
pub mod api_tls;
pub mod broker;
pub mod calendar;
pub mod commit;
pub mod config;
pub mod core;
mod keys;
pub mod limits;
pub mod logging;
pub mod model;
pub mod notify;
mod passwords;
pub mod runtime;
pub mod store;
pub mod tls_listener;

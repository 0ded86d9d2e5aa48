//! tether-master: the master library (core, broker, store, API).
//!
//! - [`model`]: the domain values (agents, clusters, profiles, tasks, attempts, outcomes), and
//!   [`limits`]: the range of every number they carry;
//! - [`core`]: the sans-IO state machine that decides everything;
//! - [`commit`]: the one commit-then-publish drain of the core's actions into a [`store`];
//! - [`runtime`]: the `tether-master` loop over tokio, MQTT, SQLite and [`api`] (HTTP);
//! - [`broker`]: the embedded rumqttd or an external broker, and client settings;
//! - [`tls_listener`]: the embedded broker's TLS listener; [`passwords`]: who may connect;
//! - [`http`]: the tiny client `tetherctl` uses;
//! - [`provision`]: the files a new device needs (`tetherctl provision`); [`keys`]: the master's
//!   signing key file and random keys;
//! - [`store`]: the [`store::Store`] trait and its SQLite backend.

pub mod api;
pub mod broker;
pub mod commit;
pub mod core;
pub mod http;
pub mod keys;
pub mod limits;
pub mod model;
pub mod passwords;
pub mod provision;
pub mod runtime;
pub mod store;
pub mod tls_listener;

//! tether-master: the master library (core, broker, store, API).
//!
//! - [`core`]: the sans-IO state machine that decides everything;
//! - [`persist`]: applies the core's changes to the [`store`] and reads them back at start;
//! - [`broker`]: the embedded rumqttd or an external broker, and client settings;
//! - [`store`]: the SQLite database.

pub mod broker;
pub mod core;
pub mod persist;
pub mod store;

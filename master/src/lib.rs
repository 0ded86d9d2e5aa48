//! tether-master: the master library (core, broker, store, API).

pub mod broker;
pub mod store;

//! tether-master: the master library (core, broker, store, API).

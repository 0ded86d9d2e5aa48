//! The deterministic simulations, one binary: the model broker and network alone, the real
//! agent core against scripted masters (one module per seed scenario), random fault schedules
//! over many seeds, and the whole system with the real master core and its SQLite store.
//! `TETHER_SIM_SEEDS` sets how many seeds the random sweeps run.

mod agent_001_reconnect;
mod agent_002_outage;
mod agent_004_broker_switch;
mod agent_js1523;
mod agent_random;
mod broker;
mod net;
mod random;
mod system_clusters;
mod system_master_crash;
mod system_random;

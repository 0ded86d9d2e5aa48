//! Network cuts, one binary: the real binaries while the agent's path to its broker is cut,
//! through a fault-injecting proxy or (root) by taking down the veth pair of the network
//! namespace the agent runs in (`TETHER_CUT`, see `tether_tests::cut::link`). One module per
//! seed scenario, and a soak of random cuts.

mod js1523;
mod s001_reconnect;
mod s002_master_down;
mod s004_broker_failover;
mod soak;

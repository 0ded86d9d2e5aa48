//! Network cuts, one binary: the real binaries while the agent's path to its broker is cut,
//! through a fault-injecting proxy or (root) by taking down the veth pair of the network
//! namespace the agent runs in (`TETHER_CUT`, see `tether_tests::cut::link`). One module per
//! behaviour, named as in the other test binaries (tests/README.md), and a soak of random cuts.

mod broker_failover;
mod clusters;
mod continue_and_reconcile;
mod kill_on_loss;
mod master_down;
mod presence_bench;
mod reconnect;
mod reconnect_bench;
mod soak;

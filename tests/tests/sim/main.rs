//! The deterministic simulations, one binary: the model broker and network alone, the real
//! agent core against scripted masters (one module per behaviour, named as in the other test
//! binaries: tests/README.md), random fault schedules over many seeds, and the whole system
//! with the real master core and its SQLite store (workflow orders among it).
//! `TETHER_SIM_SEEDS` sets how many seeds the random sweeps run.

mod agent_random;
mod broker;
mod broker_failover;
mod clusters;
mod kill_on_loss;
mod master_down;
mod net;
mod random;
mod reconnect;
mod schedules;
mod system_random;
mod workflows;

//! tether-tests: harnesses shared by the simulation and end-to-end tests.

pub mod cut;
pub mod harness;
pub mod keys;
pub mod netns;
pub mod proxy;
pub mod sim;

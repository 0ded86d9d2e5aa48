//! End to end, one binary: the real `tether-agent`, `tether-master` and `tetherctl` binaries
//! with the embedded rumqttd and a real mosquitto on loopback, real processes and files.

mod agent_faults;
mod agent_hardening;
mod agent_metrics;
mod agent_tasks;
mod broker_crowd;
mod broker_passwords;
mod cli;
mod clusters;
mod master_down;
mod master_slow_subscriber;
mod mosquitto_acl;
mod provision;
mod reflash;
mod schedules;
mod security;
mod tls;
mod workflows;

//! tether-agent: the Linux runtime around tether-core.
//!
//! Building blocks the agent's main loop executes the core's actions with:
//! [`journal`] (the durable, checksummed journal file), [`process`] (task processes, their
//! output and their process groups), [`confine`] (the user, group and limits of tasks) and
//! [`config`] (the TOML configuration and flag overrides). None of them decides anything; the decisions live in tether-core.

pub mod config;
pub mod confine;
pub mod journal;
pub mod leftovers;
pub mod mqtt;
pub mod process;
pub mod runtime;

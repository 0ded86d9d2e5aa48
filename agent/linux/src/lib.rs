//! tether-agent: the Linux runtime around tether-core.
//!
//! [`executor`] carries out the core's actions through a host interface: [`runtime`] is that
//! host on Linux, and the simulation in `tests/` is another. Building blocks of the Linux host:
//! [`journal`] (the durable, checksummed journal file), [`process`] (task processes, their
//! output and their process groups), [`confine`] (the user, group and limits of tasks) and
//! [`config`] (the TOML configuration and flag overrides), [`mqtt`] and [`probe`] (the
//! connection, its back-off and the probes that cut it short), [`textfile`] (the figures for
//! node_exporter's textfile collector), [`kernel_clock`] (whether NTP has synchronised the
//! kernel's clock), [`flags`] (the command line: one
//! table for the parser, the usage text and, with feature `cli-docs`, the man page and
//! completions in `cli_docs`). None of them decides anything; the decisions live in tether-core.

#[cfg(feature = "cli-docs")]
pub mod cli_docs;
pub mod config;
pub mod confine;
pub mod executor;
pub mod flags;
pub mod journal;
pub mod kernel_clock;
pub mod leftovers;
pub mod mqtt;
pub mod probe;
pub mod process;
pub mod runtime;
pub mod textfile;

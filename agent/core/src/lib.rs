//! tether-core: the part of a Tether agent that decides.
//!
//! `#![no_std]`, no `alloc`, no clock, no I/O. It holds the wire protocol ([`message`],
//! [`wire`]), broker addresses ([`broker_addr`]), message authentication and replay protection ([`auth`]), topic names ([`topic`]), presence payloads ([`presence`]), task policy
//! ([`policy`]), journal records ([`journal`]), the executables tasks may run ([`allowlist`])
//! and the agent state machine ([`agent`]).
//! Time comes in as [`embassy_time::Instant`] arguments; the embedding runtime converts its
//! own monotonic clock, so no embassy time driver is linked.
#![no_std]
#![forbid(unsafe_code)]
// Without alloc there is no Box: bounded messages live inline, large variants included.
#![allow(clippy::large_enum_variant)]

pub mod agent;
pub mod allowlist;
pub mod auth;
pub mod broker_addr;
pub mod journal;
pub mod message;
pub mod millis;
pub mod policy;
pub mod presence;
pub mod topic;
pub mod wire;

pub use embassy_time::{Duration, Instant};

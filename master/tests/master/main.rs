//! The master's integration tests, one binary: its core's rules and authentication (on one
//! rig, `rig.rs`), the store suite and SQLite's own store tests, the runtime over a real
//! broker, and the embedded rumqttd beside a real mosquitto.
//! (`store_crash` is its own binary: it re-executes itself as the writer it kills.)

mod api_abuse;
mod api_access;
mod api_https;
mod api_metrics;
mod api_openapi;
mod api_pages;
mod api_schedules;
mod api_stream;
mod api_workflows;
mod broker_embedded;
mod broker_mosquitto;
mod broker_util;
mod config_file;
mod core_auth;
mod core_journals;
mod core_orders;
mod core_presence;
mod core_rules;
mod core_schedules;
mod core_switchover;
mod dashboard;
mod disk_full;
mod pg_cluster;
mod plain_http;
mod played;
mod published;
mod retention;
mod rig;
mod runtime;
mod store_basics;
mod store_orders;
mod store_outage;
mod store_retention;
mod store_schedules;
mod store_sqlite;
mod webdriver;

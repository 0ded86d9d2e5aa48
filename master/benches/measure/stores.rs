//! 5. The store backends side by side: the same end-to-end run (`true` through the HTTP API to
//!    one agent, until all succeeded) on SQLite and on PostgreSQL (a throwaway cluster with
//!    its durable defaults: fsync on, unix socket), then each master's VmRSS/VmHWM. With
//!    `--smoke` a few tasks only, so the section is checked to run (`scripts/test.sh`).

use std::ffi::OsStr;
use std::path::Path;

use serde_json::json;

use super::{Master, end_to_end, start_agent};

#[path = "../../tests/master/pg_cluster.rs"]
#[allow(dead_code)]
mod pg_cluster;

pub(super) fn stores(dir: &Path, smoke: bool, table: &mut Vec<(String, String, String)>) {
    let n = if smoke { 8 } else { 400 };
    if !pg_cluster::available() {
        table.push((
            "stores: SQLite vs PostgreSQL".into(),
            "skipped".into(),
            "PostgreSQL is not installed".into(),
        ));
        return;
    }
    let cluster = pg_cluster::PgCluster::start(false);
    let url = cluster.database("bench");
    eprintln!("measuring tasks per second on each store ({n} x true)");
    let sqlite = run(dir, "sqlite", &[], n);
    let pg = run(
        dir,
        "postgres",
        &[OsStr::new("--store"), OsStr::new(&url)],
        n,
    );
    table.push((
        format!("tasks/s end to end ({n} x true), SQLite | PostgreSQL"),
        format!("{:.0}/s | {:.0}/s", sqlite.rate, pg.rate),
        format!(
            "failures {} | {}; PostgreSQL at {:.0} % of SQLite",
            sqlite.failed,
            pg.failed,
            100.0 * pg.rate / sqlite.rate
        ),
    ));
    table.push((
        "master VmRSS / VmHWM after the run, SQLite".into(),
        format!("{} kB / {} kB", sqlite.rss, sqlite.hwm),
        String::new(),
    ));
    table.push((
        "master VmRSS / VmHWM after the run, PostgreSQL".into(),
        format!("{} kB / {} kB", pg.rss, pg.hwm),
        "the server's own processes not counted".into(),
    ));
}

struct Figures {
    rate: f64,
    failed: usize,
    rss: u64,
    hwm: u64,
}

fn run(dir: &Path, name: &str, extra: &[&OsStr], n: usize) -> Figures {
    let master = Master::start_with(dir, &format!("stores-{name}"), extra);
    let id = format!("bench-{name}");
    let _agent = start_agent(dir, &id, &master.mqtt);
    master.wait_available(&id);
    let (done, failed) = end_to_end(&master, &json!({ "agent": id, "argv": ["true"] }), n);
    Figures {
        rate: n as f64 / done.as_secs_f64(),
        failed,
        rss: master.proc.status("VmRSS"),
        hwm: master.proc.status("VmHWM"),
    }
}

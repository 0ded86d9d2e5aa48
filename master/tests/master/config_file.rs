//! `tether-master run --config FILE`: the file's settings are used, a `TETHER_*` variable
//! overrides the file and a flag the variable; the log formats journald and collectors read.
//! Ports are 0, every wait is bounded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::runtime::ReadyThenStop;

const WAIT: Duration = Duration::from_secs(20);

/// Runs the master with `config` until its ready line, then kills it: the line and its stderr.
fn ready_line(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    Command::new(env!("CARGO_BIN_EXE_tether-master"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "info,rumqttd=off")
        .envs(env.iter().copied())
        .spawn_ready_then_stop()
}

/// `master.toml` in `dir`: its data directory there, both listeners on free loopback ports.
fn minimal_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("master.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    config
}

fn http_of(line: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap_or_else(|| panic!("no http= in {line:?}"))
        .rsplit_once(':')
        .unwrap()
        .0
        .to_owned()
}

#[test]
fn the_file_sets_the_api_address_and_data_dir_variables_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("master.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.2:0\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();

    let (line, err) = ready_line(&config, &[], &[]);
    assert!(line.starts_with("tether-master ready "), "{line:?} {err}");
    assert_eq!(http_of(&line), "127.0.0.2", "{line}");
    assert!(
        data.join("admin.token").exists(),
        "the file's data_dir is used"
    );

    let env = [("TETHER_HTTP", "127.0.0.3:0")];
    let (line, err) = ready_line(&config, &[], &env);
    assert_eq!(
        http_of(&line),
        "127.0.0.3",
        "the variable over the file: {line:?} {err}"
    );
    let (line, err) = ready_line(&config, &["--http", "127.0.0.4:0"], &env);
    assert_eq!(
        http_of(&line),
        "127.0.0.4",
        "the flag over the variable: {line:?} {err}"
    );
}

#[test]
fn a_bad_file_stops_run_and_check_config_names_each_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("master.toml");
    std::fs::write(
        &config,
        "data_dir = \"/nonexistent/tether\"\nhttp = \"localhost\"\nheartbeat_period_ms = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether-master"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("tether-master: line 2: http: "),
        "{err}"
    );
    assert!(
        lines[1].starts_with("tether-master: line 3: heartbeat_period_ms: "),
        "{err}"
    );

    let (line, err) = ready_line(&config, &[], &[]);
    assert!(line.is_empty(), "{line}");
    assert!(err.contains("line 2: http"), "{err}");

    let missing = dir.path().join("missing.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_tether-master"))
        .args(["check-config", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an explicit file must exist");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn logs_carry_syslog_priorities_under_journald_or_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(dir.path());
    let (line, err) = ready_line(&config, &[], &[("JOURNAL_STREAM", "8:1234")]);
    assert!(!line.is_empty(), "{err}");
    assert!(!err.is_empty());
    for l in err.lines() {
        assert!(l.starts_with("<6>") || l.starts_with("<4>"), "{l:?}");
    }
    let (line, err) = ready_line(&config, &["--log-format", "json"], &[]);
    assert!(!line.is_empty(), "{err}");
    assert!(!err.is_empty());
    for l in err.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(v["level"].is_string() && v["msg"].is_string(), "{v}");
    }
}

/// Under systemd (`Type=notify`): `READY=1` once it is ready, then `WATCHDOG=1` every half
/// `WatchdogSec=` from its loop.
#[test]
fn tells_systemd_it_is_ready_and_feeds_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    listener.set_read_timeout(Some(WAIT)).unwrap();
    let config = minimal_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether-master"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "off")
        .env("NOTIFY_SOCKET", &socket)
        // 0.4 s: a ping every 0.2 s.
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    // Read before asserting, so a failure still stops the master.
    let got: Vec<Option<String>> = (0..3)
        .map(|_| {
            let n = listener.recv(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    let want = ["READY=1", "WATCHDOG=1", "WATCHDOG=1"].map(|s| Some(s.to_owned()));
    assert_eq!(got, want);
}

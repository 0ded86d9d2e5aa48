use std::path::Path;

use clap::Parser;

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

fn flags(args: &[&str]) -> Settings {
    Cli::try_parse_from(std::iter::once("tether-master").chain(args.iter().copied()))
        .unwrap()
        .settings
}

fn layered(text: &str, args: &[&str]) -> Layered {
    Layered::new(flags(args), Some(parse_file(text).unwrap()))
}

fn errors_of(text: &str) -> Vec<String> {
    parse_file(text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_bad_key_is_reported_with_its_line() {
    let errors = errors_of(
        "data_dir = \"/var/lib/x\"\n\
         listen = \"not an address\"\n\
         heartbeat_period_ms = \"soon\"\n\
         colour = \"blue\"\n",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with("line 2: listen: invalid socket address"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("line 3: heartbeat_period_ms: invalid type"),
        "{errors:?}"
    );
    assert!(
        errors[2].starts_with("line 4: colour: unknown field `colour`"),
        "{errors:?}"
    );
}

#[test]
fn a_syntax_error_names_its_line() {
    let errors = errors_of("data_dir = \"/d\"\n\nhttp = \n");
    assert!(errors[0].starts_with("line 3: "), "{errors:?}");
}

#[test]
fn the_config_path_is_not_a_key_of_the_file() {
    let errors = errors_of("config = \"/etc/other.toml\"\n");
    assert!(
        errors[0].starts_with("line 1: config: unknown field"),
        "{errors:?}"
    );
}

#[test]
fn a_value_out_of_range_names_its_key_and_line() {
    let errors = layered("data_dir = \"/d\"\n\nheartbeat_period_ms = 5\n", &[])
        .resolve(None)
        .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(3));
    assert_eq!(
        errors[0].to_string(),
        "line 3: heartbeat_period_ms: heartbeat_period_ms is 5, outside 100..=86400000"
    );
}

#[test]
fn a_bad_retention_names_its_line() {
    let errors = layered("data_dir = \"/d\"\nretain_history = \"a while\"\n", &[])
        .resolve(None)
        .unwrap_err();
    assert_eq!(errors[0].line, Some(2));
    assert_eq!(errors[0].key.as_deref(), Some("retain_history"));
    let config = layered("data_dir = \"/d\"\nretain_history = \"0\"\n", &[])
        .resolve(None)
        .unwrap();
    assert_eq!(config.retain_history, None, "0 keeps everything");
}

#[test]
fn the_schedule_horizon_is_an_age_of_a_minute_or_more() {
    let config = layered("data_dir = \"/d\"\n", &[]).resolve(None).unwrap();
    assert_eq!(
        config.schedule_horizon.as_secs(),
        7 * 86_400,
        "7 days by default"
    );
    let config = layered("data_dir = \"/d\"\nschedule_horizon = \"14d\"\n", &[])
        .resolve(None)
        .unwrap();
    assert_eq!(config.schedule_horizon.as_secs(), 14 * 86_400);
    for bad in ["\"0\"", "\"30s\"", "\"soon\""] {
        let errors = layered(
            &format!("data_dir = \"/d\"\nschedule_horizon = {bad}\n"),
            &[],
        )
        .resolve(None)
        .unwrap_err();
        assert_eq!(errors[0].key.as_deref(), Some("schedule_horizon"), "{bad}");
        assert_eq!(errors[0].line, Some(2));
    }
}

#[test]
fn settings_that_go_together_are_checked_for_the_file_too() {
    let errors = layered("data_dir = \"/d\"\ntls_listen = \"0.0.0.0:8883\"\n", &[])
        .resolve(None)
        .unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "line 2: tls_listen: needs tls_cert",
            "line 2: tls_listen: needs tls_key"
        ]
    );
    let errors = layered("data_dir = \"/d\"\nbroker = \"mqtt://[::1\"\n", &[])
        .resolve(None)
        .unwrap_err();
    assert_eq!(errors[0].line, Some(2));
    assert_eq!(errors[0].key.as_deref(), Some("broker"));
}

#[test]
fn flags_override_the_file_and_the_file_overrides_defaults() {
    let text = "data_dir = \"/from/file\"\nhttp = \"127.0.0.2:9000\"\nprefix = \"fleet\"\n\
                cancel_duplicates = true\napi_host = [\"a.example\", \"b.example\"]\n";
    let config = layered(text, &[]).resolve(None).unwrap();
    assert_eq!(config.data_dir, Path::new("/from/file"));
    assert_eq!(config.http.to_string(), "127.0.0.2:9000");
    assert_eq!(config.listen.to_string(), "127.0.0.1:1883", "the default");
    assert_eq!(config.prefix, "fleet");
    assert!(config.cancel_duplicates);
    assert_eq!(config.api_guard.hosts, ["a.example", "b.example"]);
    assert_eq!(
        config.retain_history.map(|d| d.as_secs()),
        Some(30 * 86_400),
        "the default"
    );

    let config = layered(
        text,
        &[
            "--http",
            "127.0.0.3:9001",
            "--cancel-duplicates=false",
            "--api-host",
            "c.example",
        ],
    )
    .resolve(None)
    .unwrap();
    assert_eq!(config.http.to_string(), "127.0.0.3:9001");
    assert_eq!(config.data_dir, Path::new("/from/file"));
    assert!(!config.cancel_duplicates);
    assert_eq!(config.api_guard.hosts, ["c.example"]);
    assert!(flags(&["--insecure-agents"]).insecure_agents == Some(true));
}

#[test]
fn an_overridden_value_is_reported_without_the_files_line() {
    let errors = layered(
        "data_dir = \"/d\"\nheartbeat_period_ms = 1000\n",
        &["--heartbeat-period-ms", "1"],
    )
    .resolve(None)
    .unwrap_err();
    assert_eq!(errors[0].line, None);
    assert_eq!(errors[0].key.as_deref(), Some("heartbeat_period_ms"));
}

#[test]
fn data_dir_is_required_from_somewhere() {
    let errors = Layered::new(Settings::default(), None)
        .resolve(None)
        .unwrap_err();
    assert_eq!(errors[0].key.as_deref(), Some("data_dir"));
    let config = Layered::new(flags(&["--data-dir", "/d"]), None)
        .resolve(None)
        .unwrap();
    assert_eq!(config.heartbeat_period.as_millis(), 10_000);
}

#[test]
fn the_broker_user_needs_the_password_variable() {
    let text = "data_dir = \"/d\"\nbroker = \"mqtt://b:1883\"\nbroker_username = \"m\"\n";
    let errors = layered(text, &[]).resolve(None).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "line 3: broker_username: needs TETHER_BROKER_PASSWORD"
    );
    let config = layered(text, &[]).resolve(Some("pw".into())).unwrap();
    assert_eq!(config.client_credentials, Some(("m".into(), "pw".into())));
}

#[test]
fn an_explicit_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("master.toml");
    let e = read_file(Some(&missing)).unwrap_err();
    assert!(e.message.starts_with("cannot read "), "{e}");
    std::fs::write(&missing, "data_dir = \"/d\"\n").unwrap();
    let (path, text) = read_file(Some(&missing)).unwrap().unwrap();
    assert_eq!((path, text.as_str()), (missing, "data_dir = \"/d\"\n"));
}

#[test]
fn the_packaged_config_is_valid() {
    let text = include_str!("../../pkg/master.toml");
    let config = layered(text, &[]).resolve(None).unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib/tether-master"));
    assert_eq!(config.listen.to_string(), "127.0.0.1:1883");
    assert_eq!(config.http.to_string(), "127.0.0.1:8080");
}

#[test]
fn the_store_is_a_path_or_a_postgres_url_and_its_password_is_never_shown() {
    use crate::store::StoreLocation;
    let config = layered("data_dir = \"/d\"\n", &[]).resolve(None).unwrap();
    assert_eq!(config.store, StoreLocation::Sqlite("/d/master.db".into()));
    let url = "postgres://tether:s3cret@db:5432/tether";
    let config = layered("data_dir = \"/d\"\n", &["--store", url])
        .resolve(None)
        .unwrap();
    assert_eq!(config.store, StoreLocation::Postgres(url.into()));
    assert!(!format!("{config:?}").contains("s3cret"));
    let errors = layered(
        "data_dir = \"/d\"\nstore = \"postgres://u:s3cret@h/db?port=many\"\n",
        &[],
    )
    .resolve(None)
    .unwrap_err();
    assert_eq!(
        (errors[0].line, errors[0].key.as_deref()),
        (Some(2), Some("store"))
    );
    assert!(!errors[0].to_string().contains("s3cret"), "{}", errors[0]);
}

#[test]
fn the_broker_connection_limit_is_checked_at_its_line() {
    let config = layered("data_dir = \"/d\"\nbroker_max_connections = 5000\n", &[])
        .resolve(None)
        .unwrap();
    assert_eq!(config.broker_max_connections, Some(5000));
    for (value, why) in [
        ("1", "must be from 2"),
        ("200001", "to 200000, found 200001"),
    ] {
        let errors = layered(
            &format!("data_dir = \"/d\"\nbroker_max_connections = {value}\n"),
            &[],
        )
        .resolve(None)
        .unwrap_err();
        let text = errors[0].to_string();
        assert!(
            text.starts_with("line 2: broker_max_connections: "),
            "{text}"
        );
        assert!(text.contains(why), "{text}");
    }
    let errors = layered(
        "data_dir = \"/d\"\nbroker = \"mqtt://127.0.0.1:1883\"\nbroker_max_connections = 10\n",
        &[],
    )
    .resolve(None)
    .unwrap_err();
    assert!(
        errors[0].to_string().contains("is for the embedded broker"),
        "{}",
        errors[0]
    );
}

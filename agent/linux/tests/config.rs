//! The agent's configuration file: defaults, every error with its line, flag overrides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_agent::config::{
    Broker, Config, ConfigError, DEFAULT_JOURNAL_MAX_BYTES, LoadError, Overrides,
    check_config_with, load,
};
use tether_agent::confine::{self, Identity, Limits, Principal, TasksConfig};
use tether_core::agent::{Auth, ClockRule};

/// A valid master public key in hex.
fn master_key() -> String {
    let key = tether_core::auth::SigningKey::from_seed([4; 32]).unwrap();
    tether_core::auth::Hex(&key.public_key()).to_string()
}

/// The keys `tetherctl provision` writes, as flags: every file below is checked with them, so
/// line numbers stay those of the file.
fn keys() -> Overrides {
    Overrides {
        master_keys: Some(vec![master_key()]),
        agent_key: Some("ab".repeat(32)),
        ..Overrides::default()
    }
}

fn check_config(text: &str) -> Result<Config, Vec<ConfigError>> {
    check_config_with(text, &keys())
}

fn errors(text: &str) -> Vec<ConfigError> {
    match check_config(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e,
    }
}

/// (line, key) of each error, for compact assertions.
fn where_(errors: &[ConfigError]) -> Vec<(Option<usize>, Option<&str>)> {
    errors.iter().map(|e| (e.line, e.key.as_deref())).collect()
}

#[test]
fn full_valid_file() {
    let text = r#"
# the kitchen Pi
id = "pi-kitchen"
prefix = "site/a"
brokers = ["10.0.0.2:1883", "backup.lan:8883", "[::1]:1883"]
state_dir = "/var/lib/tether"
work_dir = "/srv/tasks"
journal_max_bytes = 1_048_576
drain_seconds = 5
reconnect_min_ms = 200
reconnect_max_ms = 0x2710
username = "pi-kitchen"
password = "secret"
max_tasks = 4
"#;
    let c = check_config(text).unwrap();
    assert_eq!(c.id.as_str(), "pi-kitchen");
    assert_eq!(c.prefix, "site/a");
    assert_eq!(
        c.brokers,
        vec![
            Broker {
                host: "10.0.0.2".into(),
                port: 1883,
                tls: false
            },
            Broker {
                host: "backup.lan".into(),
                port: 8883,
                tls: false
            },
            Broker {
                host: "::1".into(),
                port: 1883,
                tls: false
            },
        ]
    );
    assert_eq!(c.brokers[2].to_string(), "[::1]:1883");
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/tether"));
    assert_eq!(c.journal_path(), PathBuf::from("/var/lib/tether/journal"));
    assert_eq!(c.work_dir, PathBuf::from("/srv/tasks"));
    assert_eq!(c.journal_max_bytes, 1 << 20);
    assert_eq!(c.drain, Duration::from_secs(5));
    assert_eq!(c.reconnect_min, Duration::from_millis(200));
    assert_eq!(c.reconnect_max, Duration::from_millis(10_000));
    assert_eq!(c.username.as_deref(), Some("pi-kitchen"));
    assert_eq!(c.password.as_deref(), Some("secret"));
    assert_eq!(c.max_tasks, 4);
    // The password stays out of logs.
    assert!(!format!("{c:?}").contains("secret"));
}

#[test]
fn minimal_file_gets_defaults() {
    let c = check_config("id = \"a\"\nbrokers = [\"b:1\"]\n").unwrap();
    assert_eq!(c.prefix, "tether");
    assert_eq!(c.journal_max_bytes, DEFAULT_JOURNAL_MAX_BYTES);
    assert_eq!(c.username, None);
    assert!(c.reconnect_min <= c.reconnect_max);
    assert!(c.max_tasks >= 1);
}

#[test]
fn several_errors_are_all_reported_with_their_lines() {
    let text = "\
id = \"bad id!\"
brokers = []
brokr = [\"x:1\"]
prefix = \"a/#\"
drain_seconds = \"ten\"
max_tasks = 0
journal_max_bytes = 10
reconnect_min_ms = -5
";
    let errs = errors(text);
    assert_eq!(
        where_(&errs),
        vec![
            (Some(1), Some("id")),
            (Some(2), Some("brokers")),
            (Some(3), Some("brokr")),
            (Some(4), Some("prefix")),
            (Some(5), Some("drain_seconds")),
            (Some(6), Some("max_tasks")),
            (Some(7), Some("journal_max_bytes")),
            (Some(8), Some("reconnect_min_ms")),
        ],
        "{errs:#?}"
    );
    assert_eq!(errs[2].to_string(), "line 3: unknown key `brokr`");
    assert!(
        errs[0]
            .to_string()
            .starts_with("line 1: `id` = \"bad id!\""),
        "{}",
        errs[0]
    );
    assert!(errs[1].message.contains("at least one"), "{}", errs[1]);
    assert!(
        errs[4].message.contains("must be an integer, found string"),
        "{}",
        errs[4]
    );
    assert!(errs[7].message.contains("negative"), "{}", errs[7]);
}

#[test]
fn unknown_key_alone() {
    let errs = errors("id = \"a\"\nbrokers = [\"b:1\"]\n\n[mqtt]\nhost = \"x\"\n");
    assert_eq!(where_(&errs), vec![(Some(4), Some("mqtt"))]);
    assert_eq!(errs[0].to_string(), "line 4: unknown key `mqtt`");
}

#[test]
fn bad_id_is_rejected() {
    for id in ["", "has space", "a/b", &"x".repeat(33)] {
        let errs = errors(&format!("brokers = [\"b:1\"]\nid = \"{id}\"\n"));
        assert_eq!(where_(&errs), vec![(Some(2), Some("id"))], "{id:?}");
    }
}

#[test]
fn empty_or_malformed_brokers_are_rejected() {
    for (brokers, what) in [
        ("[]", "at least one"),
        ("[\"nohost\"]", "not `host:port`"),
        ("[\"h:0\"]", "port"),
        ("[\"h:99999\"]", "port"),
        ("[\":1883\"]", "not `host:port`"),
        ("[\"::1:1883\"]", "not `host:port`"),
        ("[\"ok:1\", 5]", "must be a string, found integer"),
        ("\"h:1\"", "must be an array"),
        ("[\"ws://h:1\"]", "scheme `ws` is not mqtt or mqtts"),
        ("[\"mqtts://h:1/x\"]", "no path"),
        ("[\"u:p@h:1\"]", "credentials belong in the configuration"),
    ] {
        let errs = errors(&format!("id = \"a\"\nbrokers = {brokers}\n"));
        assert_eq!(where_(&errs), vec![(Some(2), Some("brokers"))], "{brokers}");
        assert!(errs[0].message.contains(what), "{brokers}: {}", errs[0]);
    }
}

/// The rules are tether-core's `broker_addr`, shared with the master and `tetherctl provision`:
/// a scheme implies its default port.
#[test]
fn broker_forms() {
    let b = |s: &str| s.parse::<Broker>().unwrap();
    assert_eq!((b("mqtts://h").port, b("mqtts://h").tls), (8883, true));
    assert_eq!(b("mqtt://h").port, 1883);
    assert_eq!(b("MQTTS://[::1]:9").to_string(), "mqtts://[::1]:9");
    assert!("nohost".parse::<Broker>().is_err());
}

#[test]
fn wrong_types_name_expected_and_found() {
    let errs = errors("id = 5\nbrokers = [\"b:1\"]\nstate_dir = true\nmax_tasks = 1.5\n");
    assert_eq!(
        where_(&errs),
        vec![
            (Some(1), Some("id")),
            (Some(3), Some("state_dir")),
            (Some(4), Some("max_tasks"))
        ]
    );
    assert!(errs[0].message.contains("must be a string, found integer"));
    assert!(errs[1].message.contains("must be a string, found boolean"));
    assert!(errs[2].message.contains("must be an integer, found float"));
}

#[test]
fn missing_required_keys_are_reported_without_line() {
    let errs = errors("# nothing here\n");
    assert_eq!(
        where_(&errs),
        vec![(None, Some("id")), (None, Some("brokers"))]
    );
    assert!(errs[0].to_string().starts_with("missing key `id`"));
}

#[test]
fn keys_that_depend_on_each_other() {
    let errs = errors(
        "id = \"a\"\nbrokers = [\"b:1\"]\nreconnect_min_ms = 5000\nreconnect_max_ms = 100\npassword = \"p\"\n",
    );
    assert_eq!(
        where_(&errs),
        vec![
            (Some(4), Some("reconnect_min_ms")),
            (Some(5), Some("password"))
        ],
        "{errs:#?}"
    );
    // Against the default maximum as well.
    let errs = errors("id = \"a\"\nbrokers = [\"b:1\"]\nreconnect_min_ms = 999999\n");
    assert_eq!(where_(&errs), vec![(Some(3), Some("reconnect_min_ms"))]);
}

#[test]
fn syntax_errors_are_reported_with_their_line() {
    let errs = errors("id = \"a\"\nbrokers = [\"b:1\"]\nmax_tasks = = 3\n");
    assert!(!errs.is_empty());
    assert!(errs.iter().all(|e| e.line == Some(3)), "{errs:#?}");
    assert!(errs[0].to_string().starts_with("line 3: "));

    let errs = errors("id = \"a\"\n\nbrokers = [\"b:1\"\n");
    assert!(
        errs.iter().any(|e| e.line == Some(3) || e.line == Some(4)),
        "{errs:#?}"
    );

    // A duplicate key is a TOML error too.
    let errs = errors("id = \"a\"\nbrokers = [\"b:1\"]\nid = \"b\"\n");
    assert_eq!(
        errs.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![Some(3)],
        "{errs:#?}"
    );
}

#[test]
fn flags_override_file_values_and_fill_missing_ones() {
    let text = "id = \"from-file\"\nprefix = \"filepre\"\nmax_tasks = 2\n";
    let overrides = Overrides {
        id: Some("from-flag".into()),
        brokers: Some(vec!["h:1".into(), "g:2".into()]),
        max_tasks: Some(9),
        state_dir: Some("/tmp/state".into()),
        ..keys()
    };
    let c = check_config_with(text, &overrides).unwrap();
    assert_eq!(c.id.as_str(), "from-flag");
    assert_eq!(c.prefix, "filepre");
    assert_eq!(c.brokers.len(), 2);
    assert_eq!(c.max_tasks, 9);
    assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));

    // Flags alone are a complete configuration.
    let c = check_config_with("", &overrides).unwrap();
    assert_eq!(c.id.as_str(), "from-flag");

    // A bad flag is reported as a flag; a file error keeps its line.
    let bad = Overrides {
        id: Some("no spaces".into()),
        max_tasks: Some(0),
        ..overrides
    };
    let errs = check_config_with("prefix = 3\n", &bad).unwrap_err();
    assert_eq!(
        where_(&errs),
        vec![
            (Some(1), Some("prefix")),
            (None, Some("id")),
            (None, Some("max_tasks"))
        ]
    );
    assert!(
        errs[1].to_string().starts_with("flag --id: "),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].to_string().starts_with("flag --max-tasks: "),
        "{}",
        errs[2]
    );
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "id = \"a\"\nbrokers = [\"b:1\"]\n").unwrap();
    let c = load(&path, &keys()).unwrap();
    assert_eq!(c.id.as_str(), "a");

    std::fs::write(&path, "id = \"a\"\nbrokr = 1\n").unwrap();
    let err = load(&path, &keys()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::Invalid { ref errors, .. } if errors.len() == 2),
        "{text}"
    );
    assert!(text.contains("agent.toml"));
    assert!(text.contains("line 2: unknown key `brokr`"), "{text}");

    let err = load(&dir.path().join("missing.toml"), &Overrides::default()).unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }));
}

#[test]
fn shipped_default_config_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/agent.toml");
    // It ships without keys, so an unprovisioned device refuses to run: the keys are all
    // `tetherctl provision` must add.
    let err = load(&path, &Overrides::default()).unwrap_err();
    let LoadError::Invalid { errors, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(
        where_(&errors),
        vec![(None, Some("master_keys")), (None, Some("agent_key"))]
    );
    let c = load(&path, &keys()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.journal_path(), PathBuf::from("/var/lib/tether/journal"));
}

#[test]
fn tasks_table_is_parsed() {
    let text = r#"
id = "pi-1"
brokers = ["127.0.0.1:1883"]

[tasks]
user = "nobody"
group = 65534
groups = ["dialout", 20]
allow = ["/usr/bin/python3", "/opt/tether/tasks/"]
max_cpu_seconds = 60
max_memory_bytes = 268435456
max_open_files = 128
max_processes = 32
"#;
    let c = check_config(text).unwrap();
    let t = &c.tasks;
    assert_eq!(t.user, Some(Principal::Name("nobody".into())));
    assert_eq!(t.group, Some(Principal::Id(65534)));
    assert_eq!(
        t.groups,
        [Principal::Name("dialout".into()), Principal::Id(20)]
    );
    let allow = t.allow.as_ref().unwrap();
    assert_eq!(
        allow.entries().collect::<Vec<_>>(),
        ["/usr/bin/python3", "/opt/tether/tasks/"]
    );
    assert_eq!(
        t.limits,
        Limits {
            cpu_seconds: Some(60),
            memory_bytes: Some(268_435_456),
            open_files: Some(128),
            processes: Some(32),
        }
    );
    // Without the table: the agent's own user, any program, inherited limits.
    let plain = check_config("id = \"a\"\nbrokers = [\"h:1\"]\n").unwrap();
    assert_eq!(plain.tasks, TasksConfig::default());
}

#[test]
fn tasks_table_errors_carry_their_own_lines() {
    let text = r#"id = "pi-1"
brokers = ["127.0.0.1:1883"]
[tasks]
group = "nogroup"
allow = ["python3", "/opt/../bin/", "/ok/"]
max_cpu_seconds = 0
max_open_files = -1
shell = "/bin/sh"
user = true
"#;
    let errs = errors(text);
    let messages: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        where_(&errs),
        vec![
            (Some(4), Some("tasks.group")),
            (Some(5), Some("tasks.allow")),
            (Some(6), Some("tasks.max_cpu_seconds")),
            (Some(7), Some("tasks.max_open_files")),
            (Some(8), Some("tasks.shell")),
            (Some(9), Some("tasks.user")),
        ],
        "{messages:#?}"
    );
    assert!(messages[0].contains("`tasks.group` or `tasks.groups` without `tasks.user`"));
    assert!(messages[1].contains("\"python3\" must be an absolute path"));
    assert!(messages[2].contains("at least 1"));
    assert!(messages[4].contains("unknown key `tasks.shell`"));
    assert!(messages[5].contains("a name or a numeric id"));

    let dotdot = errors("id = \"a\"\nbrokers = [\"h:1\"]\n[tasks]\nallow = [\"/opt/../bin/\"]\n");
    assert!(dotdot[0].message.contains("`..`"), "{dotdot:?}");
    let empty = errors("id = \"a\"\nbrokers = [\"h:1\"]\n[tasks]\nallow = []\n");
    assert!(empty[0].message.contains("would refuse every task"));
    let not_table = errors("id = \"a\"\nbrokers = [\"h:1\"]\ntasks = 3\n");
    assert_eq!(where_(&not_table), vec![(Some(3), Some("tasks"))]);
}

fn tasks(user: Option<Principal>, group: Option<Principal>) -> TasksConfig {
    TasksConfig {
        user,
        group,
        ..TasksConfig::default()
    }
}

#[test]
fn prepare_names_an_unknown_user_or_group() {
    let unknown = Some(Principal::Name("no-such-user-tether".into()));
    let err = confine::prepare(&tasks(unknown, None)).unwrap_err();
    assert!(
        err.to_string()
            .contains("tasks.user = \"no-such-user-tether\": no such user"),
        "{err}"
    );
    let bad_group = tasks(
        Some(Principal::Name("root".into())),
        Some(Principal::Name("no-such-group-tether".into())),
    );
    let err = confine::prepare(&bad_group).unwrap_err();
    assert!(err.to_string().contains("no such group"), "{err}");
    // A uid without a passwd entry has no primary group to default to.
    let err = confine::prepare(&tasks(Some(Principal::Id(4_000_000)), None)).unwrap_err();
    assert!(err.to_string().contains("set tasks.group"), "{err}");
}

#[test]
fn prepare_resolves_names_and_ids() {
    // The agent's own identity needs no switch, whoever runs the test.
    let me = std::fs::metadata("/proc/self").unwrap();
    use std::os::unix::fs::MetadataExt;
    let own = tasks(Some(Principal::Id(me.uid())), Some(Principal::Id(me.gid())));
    assert_eq!(confine::prepare(&own).unwrap().identity, None);
    if me.uid() != 0 {
        // Not root (nor the capabilities): another user is refused up front.
        let err = confine::prepare(&tasks(Some(Principal::Name("root".into())), None)).unwrap_err();
        assert!(err.to_string().contains("CAP_SETUID"), "{err}");
        return eprintln!("skipped the switch to nobody: not root");
    }
    let Some((uid, gid)) = confine::user_by_name("nobody").unwrap() else {
        return eprintln!("skipped: no user `nobody`");
    };
    for user in [
        Principal::Name("nobody".into()),
        Principal::Name(uid.to_string()),
    ] {
        let c = confine::prepare(&tasks(Some(user), None)).unwrap();
        assert_eq!(c.identity, Some(Identity { uid, gid }));
    }
}

#[test]
fn broker_schemes() {
    let c = check_config("id = \"a\"\nbrokers = [\"mqtt://h:1\", \"tcp://[::1]:2\", \"h:3\"]\n")
        .unwrap();
    assert!(c.brokers.iter().all(|b| !b.tls) && c.tls.is_none());
    assert_eq!(c.brokers[0].to_string(), "h:1");
    assert_eq!(c.brokers[1].to_string(), "[::1]:2");
}

#[test]
fn tls_keys_are_checked_against_brokers_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let bad_pem = dir.path().join("bad.pem");
    std::fs::write(
        &bad_pem,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let g = garbage.display();
    let m = missing.display();
    let b = bad_pem.display();

    // mqtts:// needs a CA; a CA or client certificate with no mqtts:// broker is a mistake.
    let errs = errors("id = \"a\"\nbrokers = [\"h:1\", \"mqtts://h:8883\"]\n");
    assert_eq!(where_(&errs), vec![(None, Some("tls_ca_file"))]);
    assert!(errs[0].message.contains("mqtts://h:8883"), "{}", errs[0]);
    let errs = errors(&format!(
        "id = \"a\"\nbrokers = [\"h:1\"]\ntls_ca_file = \"{g}\"\n"
    ));
    assert_eq!(where_(&errs), vec![(Some(3), Some("tls_ca_file"))]);
    assert!(
        errs[0].message.contains("no broker is mqtts://"),
        "{}",
        errs[0]
    );

    // Unreadable, empty and malformed PEM files are reported under their key and line.
    for (file, what) in [
        (&m.to_string(), "No such file"),
        (&g.to_string(), "holds no PEM certificate"),
        (&b.to_string(), "malformed PEM"),
    ] {
        let errs = errors(&format!(
            "id = \"a\"\nbrokers = [\"mqtts://h:8883\"]\ntls_ca_file = \"{file}\"\n"
        ));
        assert_eq!(
            where_(&errs),
            vec![(Some(3), Some("tls_ca_file"))],
            "{file}"
        );
        assert!(errs[0].message.contains(what), "{}", errs[0]);
        assert!(errs[0].message.contains(file.as_str()), "{}", errs[0]);
    }
    let errs = errors(&format!(
        "id = \"a\"\nbrokers = [\"mqtts://h:8883\"]\ntls_ca_file = \"{m}\"\n\
         tls_cert_file = \"{g}\"\ntls_key_file = \"{g}\"\n"
    ));
    assert_eq!(
        where_(&errs),
        vec![
            (Some(3), Some("tls_ca_file")),
            (Some(4), Some("tls_cert_file")),
            (Some(5), Some("tls_key_file"))
        ]
    );
    assert!(
        errs[2].message.contains("no usable private key"),
        "{}",
        errs[2]
    );

    // A certificate without its key (or the reverse).
    let errs = errors(&format!(
        "id = \"a\"\nbrokers = [\"mqtts://h:8883\"]\ntls_ca_file = \"{g}\"\ntls_key_file = \"{g}\"\n"
    ));
    assert_eq!(where_(&errs), vec![(Some(4), Some("tls_key_file"))]);
    assert!(
        errs[0].message.contains("needs `tls_cert_file`"),
        "{}",
        errs[0]
    );

    // Flags are checked the same way.
    let o = Overrides {
        tls_ca_file: Some(missing.clone()),
        ..keys()
    };
    let errs = check_config_with("id = \"a\"\nbrokers = [\"mqtts://h:8883\"]\n", &o).unwrap_err();
    assert_eq!(where_(&errs), vec![(None, Some("tls_ca_file"))]);
}

#[test]
fn keys_are_required_unless_insecure_is_explicit() {
    let base = "id = \"a\"\nbrokers = [\"b:1\"]\n";
    // Secure by default: no keys, no start.
    let errs = check_config_with(base, &Overrides::default()).unwrap_err();
    assert_eq!(
        where_(&errs),
        vec![(None, Some("master_keys")), (None, Some("agent_key"))]
    );
    assert!(
        errs[0].message.contains("tetherctl provision"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].message.contains("insecure_unauthenticated"),
        "{}",
        errs[0]
    );

    // In the file, as provision writes them.
    let m = master_key();
    let secret = "cd".repeat(32);
    let text = format!("{base}master_keys = [\"{m}\"]\nagent_key = \"{secret}\"\n");
    let c = check_config_with(&text, &Overrides::default()).unwrap();
    let Auth::Keys { master, agent } = &c.auth else {
        panic!("{:?}", c.auth)
    };
    assert_eq!(master.keys().len(), 1);
    assert_eq!(agent, &[0xcd; 32]);
    assert!(
        !format!("{c:?}").contains(&secret),
        "the secret stays out of logs"
    );

    // The explicit opt-out; never together with keys.
    let c = check_config_with(
        &format!("{base}insecure_unauthenticated = true\n"),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.auth, Auth::Insecure);
    let errs = errors(&format!("{base}insecure_unauthenticated = true\n"));
    assert_eq!(
        where_(&errs),
        vec![(Some(3), Some("insecure_unauthenticated"))]
    );

    // Bad values, each with its line.
    let other = tether_core::auth::Hex(
        &tether_core::auth::SigningKey::from_seed([6; 32])
            .unwrap()
            .public_key(),
    )
    .to_string();
    let five: Vec<String> = (1..=5u8)
        .map(|i| {
            let k = tether_core::auth::SigningKey::from_seed([i; 32]).unwrap();
            format!("\"{}\"", tether_core::auth::Hex(&k.public_key()))
        })
        .collect();
    let errs = check_config_with(
        &format!(
            "{base}master_keys = [\"{m}\", \"xyz\"]\nagent_key = \"abcd\"\ninsecure_unauthenticated = 1\n"
        ),
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        where_(&errs),
        vec![
            (Some(3), Some("master_keys")),
            (Some(4), Some("agent_key")),
            (Some(5), Some("insecure_unauthenticated")),
        ]
    );
    assert!(errs[0].message.contains("hex digits"), "{}", errs[0]);
    let errs = errors(&format!("{base}master_keys = [{}]\n", five.join(", ")));
    assert!(errs[0].message.contains("at most 4"), "{}", errs[0]);
    let errs = errors(&format!("{base}master_keys = []\n"));
    assert!(errs[0].message.contains("at least one"), "{}", errs[0]);
    // A rotation: two keys.
    let c = check_config_with(
        &format!("{base}master_keys = [\"{m}\", \"{other}\"]\nagent_key = \"{secret}\"\n"),
        &Overrides::default(),
    )
    .unwrap();
    assert!(matches!(c.auth, Auth::Keys { ref master, .. } if master.keys().len() == 2));
}

#[test]
fn metrics_file_must_be_a_prom_file() {
    let ok = check_config("id = \"a\"\nbrokers = [\"b:1\"]\nmetrics_file = \"/run/t/a.prom\"\n")
        .unwrap();
    assert_eq!(ok.metrics_file.as_deref(), Some(Path::new("/run/t/a.prom")));
    let errs = errors("id = \"a\"\nbrokers = [\"b:1\"]\nmetrics_file = \"/run/t/a.txt\"\n");
    assert_eq!(where_(&errs), vec![(Some(3), Some("metrics_file"))]);
    assert!(errs[0].message.contains(".prom"), "{}", errs[0]);
}

#[test]
fn the_clock_rule_is_ntp_unless_the_board_has_a_trusted_clock() {
    let base = "id = \"a\"\nbrokers = [\"b:1\"]\n";
    assert_eq!(check_config(base).unwrap().clock, ClockRule::Ntp);
    let trusted = check_config(&format!("{base}clock = \"trusted\"\n")).unwrap();
    assert_eq!(trusted.clock, ClockRule::Trusted);
    assert_eq!(
        check_config(&format!("{base}clock = \"ntp\"\n"))
            .unwrap()
            .clock,
        ClockRule::Ntp
    );
    let errs = errors(&format!("{base}clock = \"rtc\"\n"));
    assert_eq!(where_(&errs), vec![(Some(3), Some("clock"))]);
    assert!(errs[0].message.contains("\"trusted\""), "{}", errs[0]);
    let errs = errors(&format!("{base}clock = true\n"));
    assert_eq!(where_(&errs), vec![(Some(3), Some("clock"))]);

    // The flag overrides the file, and a bad one is reported as a flag.
    let flag = |v: &str| Overrides {
        clock: Some(v.into()),
        ..keys()
    };
    let c = check_config_with(&format!("{base}clock = \"ntp\"\n"), &flag("trusted")).unwrap();
    assert_eq!(c.clock, ClockRule::Trusted);
    let errs = check_config_with(base, &flag("sometimes")).unwrap_err();
    assert_eq!(where_(&errs), vec![(None, Some("clock"))]);
    assert!(
        errs[0].to_string().starts_with("flag --clock: "),
        "{}",
        errs[0]
    );
}

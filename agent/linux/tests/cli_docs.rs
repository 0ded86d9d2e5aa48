//! The hand parser (what the agent runs) and the clap command built from the same table (what
//! the man page and completions come from) accept and refuse the same command lines, and the
//! generated files name every flag.

use std::process::Command;

use clap::error::ErrorKind;

use tether_agent::cli_docs;
use tether_agent::config::Overrides;
use tether_agent::flags::{self, Args, COMMANDS, FLAGS, Parsed, Takes};

fn hand(line: &[&str]) -> Result<Parsed, String> {
    flags::parse(line.iter().map(|s| s.to_string()))
}

/// Whether clap accepts `line` (asking for help or the version is accepting it).
fn clap_ok(line: &[&str]) -> bool {
    match cli_docs::command()
        .try_get_matches_from(std::iter::once("tether-agent").chain(line.iter().copied()))
    {
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion),
    }
}

/// Both parsers give the same verdict on `line`; returns it.
fn agree(line: &[&str]) -> bool {
    let hand = hand(line);
    assert_eq!(
        hand.is_ok(),
        clap_ok(line),
        "{line:?}: the hand parser says {hand:?}, clap the opposite"
    );
    hand.is_ok()
}

/// A value each flag accepts.
fn good_value(takes: Takes) -> Option<&'static str> {
    match takes {
        Takes::Nothing(_) => None,
        Takes::Text { .. } => Some("x"),
        Takes::Number { .. } => Some("7"),
    }
}

fn with_value(long: &str, value: Option<&'static str>) -> Vec<String> {
    let mut line = vec![format!("--{long}")];
    line.extend(value.map(String::from));
    line
}

fn strs(line: &[String]) -> Vec<&str> {
    line.iter().map(String::as_str).collect()
}

#[test]
fn the_clap_command_is_well_formed() {
    cli_docs::command().debug_assert();
}

#[test]
fn every_flag_parses_in_both_with_or_without_a_command() {
    for flag in FLAGS {
        let line = with_value(flag.long, good_value(flag.takes));
        assert!(agree(&strs(&line)), "--{}", flag.long);
        for (command, ..) in COMMANDS {
            let mut line = line.clone();
            line.insert(0, command.to_string());
            assert!(agree(&strs(&line)), "{command} --{}", flag.long);
        }
    }
    assert!(agree(&[]));
    for line in [
        &["--help"][..],
        &["-h"],
        &["-V"],
        &["check-config", "--help"],
        &["run", "-V"],
    ] {
        assert!(agree(line), "{line:?}");
    }
    assert_eq!(hand(&["-V"]), Ok(Parsed::Version));
    // `--name=value`, and a value that starts with a dash.
    assert!(agree(&["--id=x", "--max-tasks=2"]) && agree(&["--id", "-x"]));
    let Ok(Parsed::Args(args)) = hand(&["--id=a=b", "--prefix", "-p"]) else {
        panic!("refused");
    };
    assert_eq!(args.overrides.id.as_deref(), Some("a=b"));
    assert_eq!(args.overrides.prefix.as_deref(), Some("-p"));
}

#[test]
fn a_missing_value_is_an_error_in_both() {
    for flag in FLAGS.iter().filter(|f| f.value_name().is_some()) {
        let long = format!("--{}", flag.long);
        assert!(!agree(&[&long]), "{long}");
        assert!(!agree(&["run", &long]), "run {long}");
        let err = hand(&[&long]).unwrap_err();
        assert_eq!(err, format!("{long} needs a value"));
    }
}

#[test]
fn unknown_flags_and_commands_are_refused_by_both() {
    for line in [
        &["--nope"][..],
        &["-x"],
        &["-"],
        &["--insecure-unauthenticated=yes"],
        &["run", "--nope"],
        &["frobnicate"],
        &["help"],
        &["run", "check-config"],
        // The command comes first or not at all.
        &["--id", "x", "run"],
    ] {
        assert!(!agree(line), "{line:?}");
    }
    assert_eq!(hand(&["--nope"]), Err("unknown option `--nope`".into()));
    assert_eq!(
        hand(&["frobnicate"]),
        Err("unknown command `frobnicate`".into())
    );
}

#[test]
fn repeats_and_numbers_are_judged_alike() {
    for flag in FLAGS {
        let once = with_value(flag.long, good_value(flag.takes));
        let twice = [once.clone(), once].concat();
        assert_eq!(agree(&strs(&twice)), flag.repeat, "--{} twice", flag.long);
    }
    for flag in FLAGS {
        if let Takes::Number { max, .. } = flag.takes {
            let long = format!("--{}", flag.long);
            assert!(!agree(&[&long, "ten"]), "{long} ten");
            assert!(!agree(&[&long, "-1"]), "{long} -1");
            assert!(agree(&[&long, &max.to_string()]), "{long} {max}");
            if let Some(over) = max.checked_add(1) {
                assert!(!agree(&[&long, &over.to_string()]), "{long} {over}");
            }
        }
    }
}

#[test]
fn each_flag_sets_its_own_field() {
    let line = [
        "check-config",
        "--config",
        "/c.toml",
        "--id",
        "pi-1",
        "--broker",
        "a:1",
        "--broker",
        "mqtts://b",
        "--prefix",
        "p",
        "--state-dir",
        "/s",
        "--work-dir",
        "/w",
        "--journal-max-bytes",
        "1000",
        "--drain-seconds",
        "5",
        "--max-tasks",
        "3",
        "--username",
        "u",
        "--password",
        "pw",
        "--tls-ca-file",
        "/ca.pem",
        "--tls-cert-file",
        "/cert.pem",
        "--tls-key-file",
        "/key.pem",
        "--master-key",
        "m1",
        "--master-key",
        "m2",
        "--agent-key",
        "k",
        "--insecure-unauthenticated",
        "--clock",
        "trusted",
    ];
    let expected = Args {
        command: flags::Command::CheckConfig,
        config: Some("/c.toml".into()),
        overrides: Overrides {
            id: Some("pi-1".into()),
            prefix: Some("p".into()),
            brokers: Some(vec!["a:1".into(), "mqtts://b".into()]),
            state_dir: Some("/s".into()),
            work_dir: Some("/w".into()),
            journal_max_bytes: Some(1000),
            drain_seconds: Some(5),
            reconnect_min_ms: None,
            reconnect_max_ms: None,
            username: Some("u".into()),
            password: Some("pw".into()),
            max_tasks: Some(3),
            clock: Some("trusted".into()),
            tls_ca_file: Some("/ca.pem".into()),
            tls_cert_file: Some("/cert.pem".into()),
            tls_key_file: Some("/key.pem".into()),
            master_keys: Some(vec!["m1".into(), "m2".into()]),
            agent_key: Some("k".into()),
            insecure_unauthenticated: Some(true),
        },
    };
    assert_eq!(hand(&line), Ok(Parsed::Args(expected)));
    assert!(agree(&line));
    // The line above names every flag, so a flag added to the table is added here too.
    for flag in FLAGS {
        assert!(
            line.contains(&format!("--{}", flag.long).as_str()),
            "--{}",
            flag.long
        );
    }
}

#[test]
fn the_usage_text_lists_every_command_and_flag_within_90_columns() {
    let usage = flags::usage();
    for (command, ..) in COMMANDS {
        assert!(usage.contains(&format!("  {command} ")), "{command}");
    }
    for flag in FLAGS {
        let name = match flag.value_name() {
            Some(value) => format!("--{} {value}", flag.long),
            None => format!("--{}", flag.long),
        };
        let listed = usage.lines().any(|l| {
            l.strip_prefix("  ")
                .and_then(|l| l.strip_prefix(&name))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        });
        assert!(listed, "{name:?} in\n{usage}");
    }
    for line in usage.lines() {
        assert!(line.len() <= 90, "{line:?}");
    }
    assert!(usage.contains(tether_agent::config::DEFAULT_PATH));
}

#[test]
fn the_man_page_and_completions_name_every_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tether-agent-docs"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, _) in cli_docs::FILES {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        for flag in FLAGS {
            // roff escapes the dashes; fish names a flag `-l name`.
            let long = match *name {
                "tether-agent.1" => format!("\\-\\-{}", flag.long.replace('-', "\\-")),
                "tether-agent.fish" => format!("-l {}", flag.long),
                _ => format!("--{}", flag.long),
            };
            assert!(text.contains(&long), "{name} lacks {long}");
        }
        for (command, ..) in COMMANDS {
            assert!(text.contains(&command.replace('-', "\\-")) || text.contains(command));
        }
    }
    let bash = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("tether-agent.bash"))
        .status()
        .unwrap();
    assert!(bash.success(), "the bash completion script does not parse");
    // Completed for real, with and without a command before.
    for words in ["--max", "check-config --max", "run --max"] {
        let line = format!("tether-agent {words}");
        let script = format!(
            "source '{}'; COMP_WORDS=({line}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _tether__agent tether-agent \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            dir.path().join("tether-agent.bash").display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let offered = String::from_utf8_lossy(&out.stdout);
        assert_eq!(offered.trim(), "--max-tasks", "{line}<TAB>");
    }

    let refused = Command::new(env!("CARGO_BIN_EXE_tether-agent-docs"))
        .args(["--dir", "/proc/version/sub"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("/proc/version/sub"));
}

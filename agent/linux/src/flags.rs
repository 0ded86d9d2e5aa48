//! The agent's command line: one table of its commands and flags, read by the hand parser
//! and the usage text here, and by the man page and completions (`cli_docs`, behind the
//! `cli-docs` feature), so none of them can name a flag the others do not.
//!
//! Parsed by hand: the agent runs on a Pi Zero, and a dozen flags do not justify an
//! argument-parsing crate in its binary.

use std::path::PathBuf;

use crate::config::Overrides;

/// What the agent was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    CheckConfig,
}

/// The commands: name, what it does, the value. The first is the default.
pub const COMMANDS: &[(&str, &str, Command)] = &[
    ("run", "run the agent (the default)", Command::Run),
    (
        "check-config",
        "check the configuration, print it and exit (every error, with its line)",
        Command::CheckConfig,
    ),
];

/// A command line that asks for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub command: Command,
    pub config: Option<PathBuf>,
    pub overrides: Overrides,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
// Made once per run and matched at once: boxing `Args` would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Args(Args),
    Help,
    Version,
}

/// How to complete a flag's value in a shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    File,
    Dir,
    Other,
}

/// What a flag takes, and where it goes.
#[derive(Debug, Clone, Copy)]
pub enum Takes {
    /// A switch: no value.
    Nothing(fn(&mut Args)),
    Text {
        value: &'static str,
        hint: Hint,
        set: fn(&mut Args, String),
    },
    /// A decimal number up to `max`.
    Number {
        value: &'static str,
        max: u64,
        set: fn(&mut Args, u64),
    },
}

/// One flag: `--{long}`.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub long: &'static str,
    pub help: &'static str,
    /// Given more than once, each value counts; otherwise a second one is an error.
    pub repeat: bool,
    pub takes: Takes,
}

impl Flag {
    /// The value's name (`PATH`), `None` for a switch.
    pub fn value_name(&self) -> Option<&'static str> {
        match self.takes {
            Takes::Nothing(_) => None,
            Takes::Text { value, .. } | Takes::Number { value, .. } => Some(value),
        }
    }
}

const fn text(value: &'static str, set: fn(&mut Args, String)) -> Takes {
    Takes::Text {
        value,
        hint: Hint::Other,
        set,
    }
}

const fn file(value: &'static str, set: fn(&mut Args, String)) -> Takes {
    Takes::Text {
        value,
        hint: Hint::File,
        set,
    }
}

const fn dir(value: &'static str, set: fn(&mut Args, String)) -> Takes {
    Takes::Text {
        value,
        hint: Hint::Dir,
        set,
    }
}

const fn number(max: u64, set: fn(&mut Args, u64)) -> Takes {
    Takes::Number {
        value: "N",
        max,
        set,
    }
}

const fn flag(long: &'static str, help: &'static str, takes: Takes) -> Flag {
    Flag {
        long,
        help,
        repeat: false,
        takes,
    }
}

const fn repeated(long: &'static str, help: &'static str, takes: Takes) -> Flag {
    Flag {
        long,
        help,
        repeat: true,
        takes,
    }
}

/// Every flag of `run` and `check-config`; each but `--config` overrides the config file.
pub const FLAGS: &[Flag] = &[
    flag(
        "config",
        "config file (default /etc/tether/agent.toml; optional for `run` when --id and --broker are given)",
        file("PATH", |a, v| a.config = Some(v.into())),
    ),
    flag(
        "id",
        "agent id (MQTT client id and topic segment)",
        text("ID", |a, v| a.overrides.id = Some(v)),
    ),
    repeated(
        "broker",
        "broker address, HOST:PORT or mqtts://HOST:PORT for TLS; repeat for fail-over brokers, tried in turn",
        text("HOST:PORT", |a, v| {
            a.overrides.brokers.get_or_insert_with(Vec::new).push(v)
        }),
    ),
    flag(
        "prefix",
        "topic prefix (default tether)",
        text("PREFIX", |a, v| a.overrides.prefix = Some(v)),
    ),
    flag(
        "state-dir",
        "where the journal lives",
        dir("DIR", |a, v| a.overrides.state_dir = Some(v.into())),
    ),
    flag(
        "work-dir",
        "default working directory of tasks",
        dir("DIR", |a, v| a.overrides.work_dir = Some(v.into())),
    ),
    flag(
        "journal-max-bytes",
        "journal size cap",
        number(u64::MAX, |a, n| a.overrides.journal_max_bytes = Some(n)),
    ),
    flag(
        "drain-seconds",
        "on SIGTERM, how long running tasks may finish",
        number(u64::MAX, |a, n| a.overrides.drain_seconds = Some(n)),
    ),
    flag(
        "max-tasks",
        "attempts held (chained steps too) or running at once",
        // The parser has checked `n` against the maximum.
        number(u32::MAX as u64, |a, n| {
            a.overrides.max_tasks = u32::try_from(n).ok()
        }),
    ),
    flag(
        "clock",
        "when the wall clock is trusted for start times and schedules: ntp (the default: once NTP has synchronised it) or trusted (a battery-backed real-time clock)",
        text("ntp|trusted", |a, v| a.overrides.clock = Some(v)),
    ),
    flag(
        "username",
        "broker user name",
        text("USER", |a, v| a.overrides.username = Some(v)),
    ),
    flag(
        "password",
        "broker password (secret: prefer password in the config file)",
        text("PASS", |a, v| a.overrides.password = Some(v)),
    ),
    flag(
        "tls-ca-file",
        "CA that signed the mqtts:// brokers' certificates",
        file("PEM", |a, v| a.overrides.tls_ca_file = Some(v.into())),
    ),
    flag(
        "tls-cert-file",
        "client certificate (optional, with --tls-key-file)",
        file("PEM", |a, v| a.overrides.tls_cert_file = Some(v.into())),
    ),
    flag(
        "tls-key-file",
        "client certificate's key",
        file("PEM", |a, v| a.overrides.tls_key_file = Some(v.into())),
    ),
    repeated(
        "master-key",
        "the master's public key; repeat for several (rotation)",
        text("HEX", |a, v| {
            a.overrides.master_keys.get_or_insert_with(Vec::new).push(v)
        }),
    ),
    flag(
        "agent-key",
        "this agent's MAC key (secret: prefer agent_key in the 0600 config file)",
        text("HEX", |a, v| a.overrides.agent_key = Some(v)),
    ),
    flag(
        "insecure-unauthenticated",
        "run without keys: ANY broker client can command this agent",
        Takes::Nothing(|a| a.overrides.insecure_unauthenticated = Some(true)),
    ),
];

/// What `-h, --help` and `-V, --version` do.
pub const HELP: &str = "print this help and exit";
pub const VERSION: &str = "print the version and exit";

/// What `RUST_LOG` is, in the usage text and the man page.
pub const RUST_LOG: &str = "log filter (default info); the log goes to stderr";

/// Parses the arguments after the program name: an optional command first, then flags.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut args = args.into_iter().peekable();
    let mut parsed = Args {
        command: COMMANDS[0].2,
        config: None,
        overrides: Overrides::default(),
    };
    if let Some(name) = args.next_if(|a| !a.starts_with('-')) {
        parsed.command = COMMANDS
            .iter()
            .find(|(n, ..)| *n == name)
            .map(|c| c.2)
            .ok_or_else(|| format!("unknown command `{name}`"))?;
    }
    let mut seen = [false; FLAGS.len()];
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            _ => {}
        }
        // `--name VALUE` or `--name=VALUE`.
        let (name, mut inline) = match arg.strip_prefix("--").map(|a| a.split_once('=')) {
            Some(Some((name, v))) => (name, Some(v.to_string())),
            Some(None) => (&arg[2..], None),
            None => ("", None),
        };
        let Some(i) = FLAGS
            .iter()
            .position(|f| !name.is_empty() && f.long == name)
        else {
            return Err(format!("unknown option `{arg}`"));
        };
        let flag = &FLAGS[i];
        let long = format!("--{}", flag.long);
        if seen[i] && !flag.repeat {
            return Err(format!("{long} given twice"));
        }
        seen[i] = true;
        if inline.is_some() && matches!(flag.takes, Takes::Nothing(_)) {
            return Err(format!("{long} takes no value"));
        }
        let mut value = || {
            inline
                .take()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{long} needs a value"))
        };
        match flag.takes {
            Takes::Nothing(set) => set(&mut parsed),
            Takes::Text { set, .. } => set(&mut parsed, value()?),
            Takes::Number { max, set, .. } => {
                let v = value()?;
                let n = v
                    .parse::<u64>()
                    .map_err(|_| format!("{long}: `{v}` is not a number"))?;
                if n > max {
                    return Err(format!("{long}: {n} is too large (at most {max})"));
                }
                set(&mut parsed, n);
            }
        }
    }
    Ok(Parsed::Args(parsed))
}

/// The `--help` text, and what a bad command line is answered with.
pub fn usage() -> String {
    const COLUMN: usize = 27;
    let mut out = String::from(
        "usage: tether-agent [run] [options]\n       tether-agent check-config [options]\n\n\
         commands:\n",
    );
    for (name, help, _) in COMMANDS {
        push_entry(&mut out, name, help, COLUMN);
    }
    out.push_str("\noptions (each but --config overrides the config file):\n");
    for f in FLAGS {
        let name = match f.value_name() {
            Some(value) => format!("--{} {value}", f.long),
            None => format!("--{}", f.long),
        };
        push_entry(&mut out, &name, f.help, COLUMN);
    }
    push_entry(&mut out, "-h, --help", HELP, COLUMN);
    push_entry(&mut out, "-V, --version", VERSION, COLUMN);
    out.push_str("\nenvironment:\n");
    push_entry(&mut out, "RUST_LOG", RUST_LOG, COLUMN);
    out.pop();
    out
}

/// `  name   help`, the help wrapped at 90 columns under itself.
fn push_entry(out: &mut String, name: &str, help: &str, column: usize) {
    let mut line = format!("  {name}");
    if line.len() + 1 > column {
        out.push_str(&line);
        out.push('\n');
        line.clear();
    }
    for word in help.split(' ') {
        if line.len() >= column && line.len() + 1 + word.len() > 90 {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if line.len() < column {
            line.extend(std::iter::repeat_n(' ', column - line.len()));
        } else {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

//! `tether-agent`: runs tasks for a Tether master over MQTT.
//!
//! Flags are parsed by hand: the agent runs on a Pi Zero, and a dozen flags do not justify an
//! argument-parsing crate in its binary.

use std::path::PathBuf;
use std::process::ExitCode;

use tether_agent::config::{self, Overrides};

const USAGE: &str = "\
usage: tether-agent [run] [options]
       tether-agent check-config [--config PATH] [options]

options (each overrides the config file):
  --config PATH            config file (default /etc/tether/agent.toml; optional for `run`
                           when --id and --broker are given)
  --id ID                  agent id (MQTT client id and topic segment)
  --broker HOST:PORT       broker address (mqtts://HOST:PORT for TLS); repeat for
                           fail-over brokers, tried in turn
  --prefix PREFIX          topic prefix (default tether)
  --state-dir DIR          where the journal lives
  --work-dir DIR           default working directory of tasks
  --journal-max-bytes N    journal size cap
  --drain-seconds N        on SIGTERM, how long running tasks may finish
  --max-tasks N            attempts held or running at once
  --username USER / --password PASS   broker credentials
  --tls-ca-file PEM        CA that signed the mqtts:// brokers' certificates
  --tls-cert-file PEM / --tls-key-file PEM   client certificate and key (optional)
  --master-key HEX         the master's public key; repeat for several (rotation)
  --agent-key HEX          this agent's MAC key (secret: prefer agent_key in the 0600 file)
  --insecure-unauthenticated   run without keys: ANY broker client can command this agent

logging: RUST_LOG (default info), to stderr.";

struct Args {
    command: String,
    config: Option<PathBuf>,
    overrides: Overrides,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut command = "run".to_string();
    let mut config = None;
    let mut o = Overrides::default();
    let mut first = true;
    while let Some(arg) = args.next() {
        if first && !arg.starts_with('-') {
            command = arg;
            first = false;
            continue;
        }
        first = false;
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{arg}: `{v}` is not a number"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "-V" | "--version" => {
                println!("tether-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--config" => config = Some(PathBuf::from(value()?)),
            "--id" => o.id = Some(value()?),
            "--broker" => o.brokers.get_or_insert_with(Vec::new).push(value()?),
            "--prefix" => o.prefix = Some(value()?),
            "--state-dir" => o.state_dir = Some(value()?.into()),
            "--work-dir" => o.work_dir = Some(value()?.into()),
            "--journal-max-bytes" => o.journal_max_bytes = Some(number(value()?)?),
            "--drain-seconds" => o.drain_seconds = Some(number(value()?)?),
            "--max-tasks" => {
                let n = number(value()?)?;
                o.max_tasks =
                    Some(u32::try_from(n).map_err(|_| format!("--max-tasks: {n} is too large"))?);
            }
            "--username" => o.username = Some(value()?),
            "--password" => o.password = Some(value()?),
            "--tls-ca-file" => o.tls_ca_file = Some(value()?.into()),
            "--tls-cert-file" => o.tls_cert_file = Some(value()?.into()),
            "--tls-key-file" => o.tls_key_file = Some(value()?.into()),
            "--master-key" => o.master_keys.get_or_insert_with(Vec::new).push(value()?),
            "--agent-key" => o.agent_key = Some(value()?),
            "--insecure-unauthenticated" => o.insecure_unauthenticated = Some(true),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(Args {
        command,
        config,
        overrides: o,
    })
}

/// The file if given or present; otherwise flags alone (a dev box has no /etc/tether).
fn load(args: &Args) -> Result<config::Config, String> {
    let default = PathBuf::from(config::DEFAULT_PATH);
    let path = args
        .config
        .clone()
        .or_else(|| default.exists().then_some(default));
    match path {
        Some(path) => config::load(&path, &args.overrides).map_err(|e| e.to_string()),
        None => config::check_config_with("", &args.overrides).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            format!(
                "no config file ({}) and flags are incomplete:\n{}",
                config::DEFAULT_PATH,
                lines.join("\n")
            )
        }),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tether-agent: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match args.command.as_str() {
        "check-config" => match load(&args) {
            Ok(config) => {
                println!("config ok: {config:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tether-agent: {e}");
                ExitCode::FAILURE
            }
        },
        "run" => {
            let config = match load(&args) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("tether-agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Current-thread: tasks are forked from this thread, which lives as long as the
            // agent, so PR_SET_PDEATHSIG fires only when the agent itself dies.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tether-agent: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(tether_agent::runtime::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            eprintln!("tether-agent: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

//! `tether-agent`: runs tasks for a Tether master over MQTT.
//!
//! The flags are in `tether_agent::flags` (parsed by hand: binary size matters on a Pi Zero).

use std::path::PathBuf;
use std::process::ExitCode;

use tether_agent::config;
use tether_agent::flags::{self, Args, Command, Parsed};

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

/// Installs the logger (`RUST_LOG`, default `info`). Under journald (`$JOURNAL_STREAM` set, as
/// systemd sets it for the unit's output) each line starts with its syslog priority instead
/// of a time stamp, so `journalctl -p warning` finds the agent's warnings.
fn init_logging() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            use std::io::Write as _;
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}: {}", record.target(), record.args())
        });
    }
    builder.init();
}

fn main() -> ExitCode {
    init_logging();
    let args = match flags::parse(std::env::args().skip(1)) {
        Ok(Parsed::Args(args)) => args,
        Ok(Parsed::Help) => {
            println!("{}", flags::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("tether-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tether-agent: {e}\n\n{}", flags::usage());
            return ExitCode::from(2);
        }
    };
    match args.command {
        Command::CheckConfig => match load(&args) {
            Ok(config) => {
                println!("config ok: {config:?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tether-agent: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => {
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
    }
}

//! `tether-master run`: the master with its embedded broker (or an external one), its store
//! and its HTTP API, configured by `/etc/tether/master.toml` (or `--config`), `TETHER_*`
//! variables and flags, in that order of increasing precedence. Prints one line with the
//! bound addresses when ready:
//! `tether-master ready mqtt=HOST:PORT http=ADDR epoch=HEX [mqtts=HOST:PORT]` (`https=ADDR`
//! instead of `http=ADDR` when the API speaks HTTPS), and tells systemd `READY=1`.
//! `tether-master check-config` checks the same settings and prints every error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether_master::config::{self, ConfigError, Layered, Settings};
use tether_master::logging::{self, LogFormat};
use tether_master::notify;
use tether_master::runtime::{self, RunConfig};

#[derive(Debug, Parser)]
#[command(name = "tether-master", version, about = "The Tether master")]
struct Cli {
    /// How log lines are written: text (with syslog priorities under journald) or one JSON
    /// object per line.
    #[arg(
        long,
        global = true,
        env = "TETHER_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the master until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        settings: Settings,
    },
    /// Check the configuration file with the variables and flags on top (the same ones as
    /// `run`): every error with its line, or "ok".
    CheckConfig {
        #[command(flatten)]
        settings: Settings,
    },
}

/// The file, the variables and the flags layered and checked: the file's unreadable keys,
/// then the problems of the values read (those of a key already reported left out).
fn load(flags: Settings) -> Result<RunConfig, Vec<ConfigError>> {
    let (file, mut errors) =
        match config::read_file(flags.config.as_deref()).map_err(|e| vec![e])? {
            Some((path, text)) => {
                let (file, errors) = config::parse_file_partly(&text);
                (Some((path, file)), errors)
            }
            None => (None, Vec::new()),
        };
    let path = file.as_ref().map(|(p, _)| p.clone());
    let password = std::env::var("TETHER_BROKER_PASSWORD").ok();
    let resolved = Layered::new(flags, file.map(|(_, f)| f)).resolve(password);
    let bad_keys: Vec<Option<String>> = errors.iter().map(|e| e.key.clone()).collect();
    match resolved {
        Ok(config) if errors.is_empty() => return Ok(config),
        Ok(_) => {}
        Err(more) => errors.extend(more.into_iter().filter(|e| !bad_keys.contains(&e.key))),
    }
    errors.sort_by_key(|e| (e.line.is_none(), e.line));
    if let Some(path) = path {
        for e in errors.iter_mut().filter(|e| e.line.is_some()) {
            e.message = format!("{} (in {})", e.message, path.display());
        }
    }
    Err(errors)
}

fn report(errors: &[ConfigError]) {
    for e in errors {
        eprintln!("tether-master: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    logging::install_panic_hook();
    let settings = match cli.command {
        Command::CheckConfig { settings } => {
            return match load(settings) {
                Ok(_) => {
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    report(&errors);
                    ExitCode::FAILURE
                }
            };
        }
        Command::Run { settings } => settings,
    };
    let config = match load(settings) {
        Ok(c) => c,
        Err(errors) => {
            report(&errors);
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-master: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let on_ready = |bound: &runtime::Bound| {
        runtime::print_ready(bound);
        if let Err(e) = notify::notify("READY=1") {
            log::warn!("cannot tell systemd the master is ready: {e}");
        }
    };
    match rt.block_on(runtime::run(config, on_ready)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-master: {e}");
            ExitCode::FAILURE
        }
    }
}

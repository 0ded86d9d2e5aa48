//! tether-cli: `tetherctl`, the Tether master's command line. It talks to the master's HTTP
//! API only (no SQLite, no broker, no async runtime), writes what a new device needs
//! (`provision`), and decodes what `mosquitto_sub` shows (`decode`).
//!
//! - [`args`]: every command and flag (clap); the man page and completions come from them.
//! - [`client`]: the API over HTTP(S), several master URLs, the token and settings file.
//! - `commands`: what each command asks and prints (a table, or `--output json`).
//! - `show`, `follow`: a task for people; following output, changes and orders.
//! - `workflows`: the workflow and order commands; `schedules`: the schedule commands;
//!   `definition_file`: a workflow or schedule file (TOML or JSON) as the request.
//! - [`provision`]: the device folder; `decode`: wire messages as JSON lines.

pub mod args;
pub mod client;
mod commands;
mod decode;
mod definition_file;
mod follow;
pub mod provision;
mod schedules;
mod show;
mod sse;
mod table;
mod workflows;

use std::io::Write as _;
use std::process::ExitCode;

use clap::CommandFactory as _;

pub use args::Cli;
use args::Cmd;
use client::{Api, Failure, Options};

/// Runs one command line; errors print one line on stderr and exit non-zero.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Cmd::Decode { prefix } => decode::decode(&prefix),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tetherctl",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cmd::Man { dir } => man_pages(dir.as_deref()),
        command => Api::new(Options {
            masters: cli.masters,
            token_file: cli.token_file,
            ca_file: cli.ca_file,
            client_cert: cli.client_cert,
            client_key: cli.client_key,
        })
        .and_then(|api| commands::run(&api, command, cli.output)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("tetherctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// `tetherctl man`: the page of the whole command on stdout, or every page into `dir`.
fn man_pages(dir: Option<&std::path::Path>) -> Result<(), Failure> {
    match dir {
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir)
            .map_err(|e| Failure(format!("{}: {e}", dir.display()))),
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            std::io::stdout().write_all(&page)?;
            Ok(())
        }
    }
}

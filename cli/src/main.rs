//! `tetherctl`: the Tether master's command line (see the library for the parts).

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    tether_cli::main(tether_cli::Cli::parse())
}

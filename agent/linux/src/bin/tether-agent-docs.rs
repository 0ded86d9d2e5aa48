//! `tether-agent-docs --dir DIR`: writes the agent's man page and shell completions (the
//! packages build them with this; feature `cli-docs`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: tether-agent-docs --dir DIR");
            return ExitCode::from(2);
        }
    };
    match tether_agent::cli_docs::write(&dir) {
        Ok(paths) => {
            for path in paths {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether-agent-docs: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

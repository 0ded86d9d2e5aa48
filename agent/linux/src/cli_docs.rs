//! The man page and shell completions of `tether-agent`, from the table in [`crate::flags`]
//! through a `clap::Command` (feature `cli-docs`: the agent's own binary never links clap).

use std::io;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, ValueHint};
use clap_complete::Shell;
use roff::{Roff, bold, roman};

use crate::flags::{self, Flag, Hint, Takes};

const ABOUT: &str = "runs tasks for a Tether master over MQTT";

/// The agent's command line as clap sees it: the same commands and flags as
/// [`flags::parse`], so clap's parse agreeing with it is a test.
pub fn command() -> clap::Command {
    let version = env!("CARGO_PKG_VERSION");
    let subcommands = flags::COMMANDS.iter().map(|(name, about, _)| {
        clap::Command::new(*name)
            .about(*about)
            .version(version)
            .disable_help_flag(true)
            .disable_version_flag(true)
            .args(args())
    });
    clap::Command::new("tether-agent")
        .version(version)
        .about(ABOUT)
        .long_about(format!(
            "{ABOUT}. The configuration is read from /etc/tether/agent.toml or --config; \
             each flag but --config overrides the file's value."
        ))
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args(args())
        .subcommands(subcommands)
        .subcommand_value_name("COMMAND")
        // Like the hand parser: the command comes first or not at all, and the only `help`
        // is the flag.
        .args_conflicts_with_subcommands(true)
        .disable_help_subcommand(true)
}

/// The table's flags, then `-h` and `-V` (clap's own say other things than the usage text).
fn args() -> impl Iterator<Item = Arg> {
    let help = Arg::new("help")
        .short('h')
        .long("help")
        .help(flags::HELP)
        .action(ArgAction::Help);
    let version = Arg::new("version")
        .short('V')
        .long("version")
        .help(flags::VERSION)
        .action(ArgAction::Version);
    flags::FLAGS.iter().map(arg).chain([help, version])
}

fn arg(flag: &Flag) -> Arg {
    let arg = Arg::new(flag.long).long(flag.long).help(flag.help);
    let arg = match flag.takes {
        Takes::Nothing(_) => return arg.action(ArgAction::SetTrue),
        Takes::Text { value, hint, .. } => arg.value_name(value).value_hint(match hint {
            Hint::File => ValueHint::FilePath,
            Hint::Dir => ValueHint::DirPath,
            Hint::Other => ValueHint::Other,
        }),
        Takes::Number { value, max, .. } => arg
            .value_name(value)
            .value_parser(clap::value_parser!(u64).range(..=max)),
    };
    // A value may start with a dash: the hand parser takes whatever follows.
    arg.allow_hyphen_values(true).action(if flag.repeat {
        ArgAction::Append
    } else {
        ArgAction::Set
    })
}

/// The files [`write`] makes, as `(file name, shell)`; `None` is the man page.
pub const FILES: &[(&str, Option<Shell>)] = &[
    ("tether-agent.1", None),
    ("tether-agent.bash", Some(Shell::Bash)),
    ("_tether-agent", Some(Shell::Zsh)),
    ("tether-agent.fish", Some(Shell::Fish)),
];

/// One generated file's text.
pub fn render(shell: Option<Shell>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match shell {
        None => man_page(&mut out)?,
        Some(shell) => clap_complete::generate(shell, &mut command(), "tether-agent", &mut out),
    }
    if shell == Some(Shell::Bash) {
        out = fix_bash_states(&out);
    }
    Ok(out)
}

/// clap_complete 4.6 names a command's state in bash `tether__agent__subcmd__run` where it
/// is set but `tether__subcmd__agent__subcmd__run` where it is matched (hyphen in the binary's
/// name, clap issue 6421), so nothing completed after a command. Spelled one way here; a
/// fixed clap_complete leaves nothing to replace.
fn fix_bash_states(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("tether__subcmd__agent", "tether__agent")
        .into_bytes()
}

/// clap_mangen's sections but its SUBCOMMANDS, which would point at a page per command: one
/// page tells all here, with the commands, the config file and the logging after the flags.
fn man_page(out: &mut dyn io::Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(command());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for (name, about, _) in flags::COMMANDS {
        roff.control("TP", [])
            .text([bold(*name)])
            .text([roman(*about)]);
    }
    roff.control("SH", ["FILES"])
        .control("TP", [])
        .text([bold(crate::config::DEFAULT_PATH)])
        .text([roman(
            "the configuration (TOML), read unless --config names another",
        )]);
    roff.control("SH", ["ENVIRONMENT"])
        .control("TP", [])
        .text([bold("RUST_LOG")])
        .text([roman(flags::RUST_LOG)]);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// Writes the man page and the bash, zsh and fish completions into `dir` (made if missing).
pub fn write(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    FILES
        .iter()
        .map(|(name, shell)| {
            let path = dir.join(name);
            std::fs::write(&path, render(*shell)?)?;
            Ok(path)
        })
        .collect()
}

//! The completions and man pages come from the clap definitions: each shell's script is
//! produced (bash's parses), and `man --dir` writes a page per subcommand.

use std::process::Command;

fn tetherctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tetherctl"))
        .args(args)
        .output()
        .expect("tetherctl runs")
}

#[test]
fn completions_for_every_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = tetherctl(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("submit")
                && script.contains("provision")
                && script.contains("workflow")
                && script.contains("schedule"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tetherctl.bash");
    std::fs::write(&path, tetherctl(&["completions", "bash"]).stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).status().unwrap();
    assert!(
        syntax.success(),
        "the bash completion script does not parse"
    );
    assert!(!tetherctl(&["completions", "tcsh"]).status.success());
}

#[test]
fn man_pages_are_written_per_subcommand() {
    let out = tetherctl(&["man"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(".ie"));
    let dir = tempfile::tempdir().unwrap();
    let out = tetherctl(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "tetherctl.1",
        "tetherctl-submit.1",
        "tetherctl-token-create.1",
        "tetherctl-workflow-create.1",
        "tetherctl-order-start.1",
        "tetherctl-schedule-create.1",
        "tetherctl-schedule-show.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
    let out = tetherctl(&["man", "--dir", "/nonexistent/dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
}

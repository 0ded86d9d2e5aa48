//! `tetherctl provision` writes a device folder whose config the real agent accepts.

use std::process::Command;

use tether_tests::harness::bins::binary;
use tether_tests::harness::tempdir::TempDir;

#[test]
fn provisioned_config_passes_the_agents_check() {
    let dir = TempDir::new("provision").unwrap();
    let out = dir.join("pi-9");
    let tar = dir.join("pi-9.tgz");
    let status = Command::new(binary("tetherctl").unwrap())
        .args([
            "provision",
            "pi-9",
            "--broker",
            "192.0.2.10:1883",
            "--broker",
            "backup.lan:8883",
        ])
        .arg("--credentials")
        .arg("--out")
        .arg(&out)
        .arg("--tar")
        .arg(&tar)
        .status()
        .unwrap();
    assert!(status.success());
    let check = Command::new(binary("tether-agent").unwrap())
        .arg("check-config")
        .arg("--config")
        .arg(out.join("etc/tether/agent.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        said.contains("id: \"pi-9\"") && said.contains("backup.lan"),
        "{said}"
    );
    let entry = std::fs::read_to_string(out.join("broker/passwd-entry")).unwrap();
    assert!(entry.starts_with("pi-9:"));
    let listing = Command::new("tar").arg("tzf").arg(&tar).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("etc/tether/agent.toml"));
}

#[test]
fn bad_id_is_one_clear_line_and_a_failure() {
    let dir = TempDir::new("provision-bad").unwrap();
    let out = Command::new(binary("tetherctl").unwrap())
        .args(["provision", "pi/9", "--broker", "h:1883", "--out"])
        .arg(dir.join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("agent id"), "{err}");
}

//! `tetherctl provision` asks the real master for the device's keys and writes a device folder
//! whose config the real agent accepts; without a master it refuses.

use std::process::Command;

use tether_tests::harness::bins::binary;
use tether_tests::harness::master_proc::{MasterHome, MasterOptions};
use tether_tests::harness::tempdir::TempDir;

#[test]
fn provisioned_config_passes_the_agents_check() {
    let mut home = MasterHome::new(MasterOptions::default());
    let master = home.start();
    let dir = TempDir::new("provision").unwrap();
    let out = dir.join("pi-9");
    let tar = dir.join("pi-9.tgz");
    let status = Command::new(binary("tetherctl").unwrap())
        .env("TETHER_MASTER", format!("http://{}", master.http))
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

    // The keys are the master's: its public key, and the agent key it keeps for pi-9.
    let toml = std::fs::read_to_string(out.join("etc/tether/agent.toml")).unwrap();
    let keys = master.get("/api/keys");
    let public = keys["master_keys"][0].as_str().unwrap();
    assert_eq!(public, master.public_key);
    assert!(
        toml.contains(&format!("master_keys = [\"{public}\"]")),
        "{toml}"
    );
    let stored = master.post("/api/agents/pi-9/key", &serde_json::json!({}));
    let agent_key = stored["agent_key"].as_str().unwrap();
    assert!(
        toml.contains(&format!("agent_key = \"{agent_key}\"")),
        "{toml}"
    );

    // --rotate gives a new key, and the master takes only the new one from now on.
    let again = dir.join("pi-9b");
    let status = Command::new(binary("tetherctl").unwrap())
        .env("TETHER_MASTER", format!("http://{}", master.http))
        .args([
            "provision",
            "pi-9",
            "--broker",
            "192.0.2.10:1883",
            "--rotate",
            "--out",
        ])
        .arg(&again)
        .status()
        .unwrap();
    assert!(status.success());
    let rotated = std::fs::read_to_string(again.join("etc/tether/agent.toml")).unwrap();
    assert!(!rotated.contains(agent_key), "rotated: {rotated}");
    let now = master.post("/api/agents/pi-9/key", &serde_json::json!({}));
    assert!(rotated.contains(now["agent_key"].as_str().unwrap()));
}

#[test]
fn without_a_master_nothing_is_written() {
    let dir = TempDir::new("provision-offline").unwrap();
    let out = Command::new(binary("tetherctl").unwrap())
        .env("TETHER_MASTER", "http://127.0.0.1:1")
        .args(["provision", "pi-8", "--broker", "h:1883", "--out"])
        .arg(dir.join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    assert!(!dir.join("x").exists(), "no keyless config is written");
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

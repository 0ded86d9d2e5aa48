//! `tetherctl provision` asks the real master for the device's keys and writes a device folder
//! whose config the real agent accepts; without a master it refuses.

use std::process::Command;

use tether_cli::provision::CA_PATH;
use tether_tests::harness::bins::binary;
use tether_tests::harness::certs::Pki;
use tether_tests::harness::master_proc::{ApiError, MasterHome, MasterOptions};
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
        .env("TETHER_TOKEN", &master.token)
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
    let agent_key = toml
        .lines()
        .find_map(|l| l.strip_prefix("agent_key = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no agent_key in {toml}"))
        .to_owned();
    assert_eq!(agent_key.len(), 64, "{toml}");
    // The key left the master once, to provisioning: asked again, it is refused.
    let again = master.call("POST", "/api/agents/pi-9/key", Some(&serde_json::json!({})));
    assert!(matches!(again, Err(ApiError::Status(409, _))), "{again:?}");

    // --rotate gives a new key, and the master takes only the new one from now on.
    let again = dir.join("pi-9b");
    let status = Command::new(binary("tetherctl").unwrap())
        .env("TETHER_MASTER", format!("http://{}", master.http))
        .env("TETHER_TOKEN", &master.token)
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
    assert!(!rotated.contains(&agent_key), "rotated: {rotated}");
    assert!(rotated.contains("agent_key = \""), "rotated: {rotated}");
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

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An `mqtts://` broker: provision copies the CA and names it in `tls_ca_file`, and the agent's
/// own check accepts the result once the folder sits where it belongs on the device.
#[test]
fn provisioned_mqtts_config_passes_the_agents_check() {
    let pki = Pki::new("provision");
    let mut home = MasterHome::new(MasterOptions::default());
    let master = home.start();
    let dir = TempDir::new("provision-tls").unwrap();
    let out = dir.join("pi-10");
    let status = Command::new(binary("tetherctl").unwrap())
        .env("TETHER_MASTER", format!("http://{}", master.http))
        .env("TETHER_TOKEN", &master.token)
        .args(["provision", "pi-10", "--broker", "mqtts://broker.lan"])
        .args(["--broker", "192.0.2.10:1883", "--credentials", "--ca"])
        .arg(&pki.ca.cert)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());

    let config = out.join("etc/tether/agent.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(
        toml.contains(&format!("tls_ca_file = \"{CA_PATH}\"")),
        "{toml}"
    );
    let copy = out.join("etc/tether/ca.pem");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&pki.ca.cert).unwrap()
    );
    // The agent key and the broker password: owner-only.
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&out.join("broker/passwd-entry")), 0o600);

    // The folder mirrors the device's root: point the absolute path into it.
    let installed = dir.join("installed.toml");
    let in_folder = toml.replace(CA_PATH, copy.to_str().unwrap());
    std::fs::write(&installed, in_folder).unwrap();
    let check = Command::new(binary("tether-agent").unwrap())
        .arg("check-config")
        .arg("--config")
        .arg(&installed)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        said.contains("id: \"pi-10\"") && said.contains("port: 8883, tls: true"),
        "{said}"
    );
}

/// Without `--ca` an `mqtts://` broker is refused at once: before the master is asked for keys
/// (none is running here) and with nothing written.
#[test]
fn mqtts_without_a_ca_is_one_clear_line() {
    let dir = TempDir::new("provision-no-ca").unwrap();
    let out = Command::new(binary("tetherctl").unwrap())
        .env("TETHER_MASTER", "http://127.0.0.1:1")
        .args(["provision", "pi-11", "--broker", "mqtts://h:8883", "--out"])
        .arg(dir.join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("mqtts://h:8883") && err.contains("--ca"),
        "{err}"
    );
    assert!(!dir.join("x").exists());
}

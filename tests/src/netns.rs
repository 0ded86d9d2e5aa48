//! A stand-in for a real board: a network namespace joined to this host by a veth pair.
//!
//! The agent runs inside the namespace (`ip netns exec`) and reaches the broker at the host
//! end's address; `cut()` takes the host end down, which to the agent is a pulled cable (no
//! reset, no FIN: only keepalives and heartbeats can notice). Needs root (CI is root); without
//! it [`Netns::create`] says why and the tests skip.
//!
//! Addresses come from 10.231.0.0/16, one /30 per namespace, used only inside this machine.

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates a namespace with a veth pair and addresses; `Err` says why not (not root, no
    /// iproute2, no netns support) so the caller can skip with that message.
    pub fn create() -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if !is_root() {
            return Err("network namespaces need root".into());
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Subnet from pid and counter so parallel test processes do not collide.
        let slot = (pid.wrapping_mul(31).wrapping_add(n)) % 16_000;
        let (hi, lo) = ((slot / 64) as u8, ((slot % 64) * 4) as u8);
        let host_ip = Ipv4Addr::new(10, 231, hi, lo + 1);
        let ns_ip = Ipv4Addr::new(10, 231, hi, lo + 2);
        let name = format!("tether-{pid}-{n}");
        let host_if = format!("th{:x}h{n}", pid % 0xfffff);
        let ns_if = format!("th{:x}a{n}", pid % 0xfffff);
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name,
            host_if,
            host_ip,
            ns_ip,
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ns.exec_ip(&["addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        ns.exec_ip(&["link", "set", &ns_if, "up"])?;
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec_ip(&self, args: &[&str]) -> Result<Output, String> {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        ip(&full)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end: bind the broker here (or on 0.0.0.0) for the agent to reach it.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The agent's address inside the namespace.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Pulls the cable: the host end goes down; nobody is told.
    pub fn cut(&self) -> Result<(), String> {
        ip(&["link", "set", &self.host_if, "down"]).map(drop)
    }

    pub fn restore(&self) -> Result<(), String> {
        ip(&["link", "set", &self.host_if, "up"]).map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the host end.
        let _ = ip(&["netns", "delete", &self.name]);
        let _ = ip(&["link", "delete", &self.host_if]);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_stops_traffic_and_restore_brings_it_back() {
        let ns = match Netns::create() {
            Ok(ns) => ns,
            Err(why) => {
                eprintln!("SKIPPED: {why}");
                return;
            }
        };
        let ping = |ns: &Netns| {
            ns.command("ping")
                .args(["-c", "1", "-W", "1", &ns.host_ip().to_string()])
                .output()
                .map(|o| o.status.success())
        };
        let Ok(reachable) = ping(&ns) else {
            eprintln!("SKIPPED: no ping binary");
            return;
        };
        assert!(reachable, "host end reachable from the namespace");
        ns.cut().unwrap();
        assert!(!ping(&ns).unwrap(), "cut: unreachable");
        ns.restore().unwrap();
        // The link needs a moment to come back; bounded retries.
        let back = (0..20).any(|_| ping(&ns).unwrap_or(false));
        assert!(back, "restored: reachable again");
    }
}

//! The agent's path to its broker, and how it is cut: through the fault-injecting
//! [`Proxy`] (no privileges) or from a network namespace whose veth pair is taken down (root).
//!
//! `TETHER_CUT=proxy|netns|both` chooses per run (default `proxy`); CI, running as root, runs
//! both. A netns run without root is skipped with a line saying why.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use crate::netns::Netns;
use crate::proxy::{Fault, Proxy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMethod {
    Proxy,
    Netns,
}

impl std::fmt::Display for CutMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Proxy => "proxy",
            Self::Netns => "netns",
        })
    }
}

/// `TETHER_CUT` did not name a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSelection(pub String);

impl std::fmt::Display for BadSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for BadSelection {}

impl CutMethod {
    /// The methods `TETHER_CUT` asks for (`proxy` when unset).
    pub fn selected() -> Result<Vec<CutMethod>, BadSelection> {
        Self::parse(std::env::var("TETHER_CUT").ok().as_deref())
    }

    pub fn parse(value: Option<&str>) -> Result<Vec<CutMethod>, BadSelection> {
        match value.map(str::trim) {
            None | Some("") | Some("proxy") => Ok(vec![Self::Proxy]),
            Some("netns") => Ok(vec![Self::Netns]),
            Some("both") => Ok(vec![Self::Proxy, Self::Netns]),
            Some(other) => Err(BadSelection(format!(
                "TETHER_CUT={other}: expected proxy, netns or both"
            ))),
        }
    }
}

/// One path from an agent to a broker that a test can cut and restore.
#[derive(Debug)]
pub enum Link {
    /// The agent connects to the proxy; a cut switches it to `cut_with`.
    Proxy { proxy: Proxy, cut_with: Fault },
    /// The agent runs in the namespace and connects to the broker at the host end.
    Netns { ns: Netns, port: u16 },
}

impl Link {
    /// A proxy in front of `broker` (a loopback address). `cut_with` is what a cut does:
    /// `BlackHole` is a pulled cable, `Reset` a broker that went away.
    pub async fn proxy(broker: SocketAddr, cut_with: Fault) -> Link {
        let proxy = Proxy::start(broker).await.expect("proxy starts");
        Link::Proxy { proxy, cut_with }
    }

    /// A new namespace whose agent reaches a broker listening on every interface at `port`;
    /// `Err` says why not (not root, no iproute2).
    pub fn netns(port: u16) -> Result<Link, String> {
        Ok(Link::Netns {
            ns: Netns::create()?,
            port,
        })
    }

    /// `host:port` for the agent's `--broker`.
    pub fn agent_broker(&self) -> String {
        match self {
            Link::Proxy { proxy, .. } => proxy.addr().to_string(),
            Link::Netns { ns, port } => format!("{}:{port}", ns.host_ip()),
        }
    }

    pub fn cut(&self) {
        match self {
            Link::Proxy { proxy, cut_with } => proxy.set(*cut_with),
            Link::Netns { ns, .. } => ns.cut().unwrap_or_else(|e| panic!("cut: {e}")),
        }
    }

    pub fn restore(&self) {
        match self {
            Link::Proxy { proxy, .. } => proxy.set(Fault::Up),
            Link::Netns { ns, .. } => ns.restore().unwrap_or_else(|e| panic!("restore: {e}")),
        }
    }

    /// The namespace processes of this link must start in, if any.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Link::Proxy { .. } => None,
            Link::Netns { ns, .. } => Some(ns.name()),
        }
    }
}

/// Runs `f` on a fresh thread that first joins network namespace `name`: processes `f` spawns
/// start inside it (a child inherits the namespaces of the thread that forks it), while the
/// test's own threads stay where they are.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            set_netns(&file)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
    })
}

/// setns(2) for the calling thread only.
#[allow(unsafe_code)]
fn set_netns(file: &File) -> Result<(), String> {
    // SAFETY: setns takes a file descriptor that `file` keeps open for the call and a flag;
    // it touches no memory of ours and changes only this thread's network namespace (a
    // thread that ends right after, see `in_netns`).
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("setns: {}", std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        assert_eq!(CutMethod::parse(None).unwrap(), vec![CutMethod::Proxy]);
        assert_eq!(
            CutMethod::parse(Some("both")).unwrap(),
            vec![CutMethod::Proxy, CutMethod::Netns]
        );
        assert_eq!(
            CutMethod::parse(Some("netns")).unwrap(),
            vec![CutMethod::Netns]
        );
        assert!(CutMethod::parse(Some("cable")).is_err());
    }

    #[test]
    fn spawned_inside_the_namespace() {
        let link = match Link::netns(1) {
            Ok(l) => l,
            Err(why) => {
                eprintln!("SKIPPED: {why}");
                return;
            }
        };
        let name = link.namespace().unwrap().to_owned();
        let out = in_netns(&name, || {
            std::process::Command::new("ip")
                .arg("-o")
                .arg("addr")
                .output()
        })
        .unwrap()
        .expect("ip runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let Link::Netns { ns, .. } = &link else {
            unreachable!()
        };
        assert!(
            text.contains(&ns.ns_ip().to_string()),
            "the child sees the namespace's address: {text}"
        );
    }
}

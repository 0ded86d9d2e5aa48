//! systemd's notification protocol (`Type=notify`): `READY=1` once the API and the broker are
//! up, `WATCHDOG=1` from the loop. A datagram to `$NOTIFY_SOCKET` with std's `UnixDatagram`:
//! the protocol is one write, not worth a crate.

use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`) to the service manager; `Ok(false)` when not run by one.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = socket_addr(path.as_bytes())?;
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// `@name` is an abstract socket (Linux), anything else a path.
fn socket_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    match name.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name)),
    }
}

/// How often to send `WATCHDOG=1`: half of `WatchdogSec=` (`$WATCHDOG_USEC`), when the
/// watchdog is meant for this process (`$WATCHDOG_PID`, if set, is ours).
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

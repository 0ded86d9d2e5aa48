//! A fault-injecting TCP proxy for network-cut tests that need no privileges.
//!
//! Put it between an agent and its broker; switch its [`Fault`] while tasks run:
//! - `Reset`: close every connection on both sides at once and refuse new ones (a crashed
//!   router, or a broker that went away);
//! - `BlackHole`: stop forwarding but keep the sockets open, like a pulled cable: nobody is
//!   told, only keepalives and heartbeats can notice;
//! - `Delay(d)`: forward every chunk `d` late (in order);
//! - `DropToBroker` / `DropToClient`: black-hole one direction only.
//!
//! Bytes held back by a black hole are discarded, not delivered later: for TCP endpoints that
//! looks like a connection that stalls until one of them gives up, which is what a long cut
//! does to a real connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Up,
    Reset,
    BlackHole,
    Delay(Duration),
    DropToBroker,
    DropToClient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToBroker,
    ToClient,
}

impl Fault {
    fn passes(self, dir: Dir) -> bool {
        match self {
            Fault::Up | Fault::Delay(_) => true,
            Fault::Reset | Fault::BlackHole => false,
            Fault::DropToBroker => dir == Dir::ToClient,
            Fault::DropToClient => dir == Dir::ToBroker,
        }
    }
}

/// A running proxy; dropping it stops accepting (open connections end at the next fault or
/// when their peers close).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    fault: Arc<watch::Sender<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let fault = Arc::new(watch::Sender::new(Fault::Up));
        let task = tokio::spawn(accept_loop(listener, upstream, fault.clone()));
        Ok(Self { addr, fault, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.fault.send_replace(Fault::Reset);
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: Arc<watch::Sender<Fault>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        if *fault.borrow() == Fault::Reset {
            drop(client);
            continue;
        }
        let fault = fault.subscribe();
        tokio::spawn(async move {
            let Ok(broker) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = broker.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (br, bw) = broker.into_split();
            let up = pump(cr, bw, Dir::ToBroker, fault.clone());
            let down = pump(br, cw, Dir::ToClient, fault);
            // Either direction ending (EOF, error or Reset) ends the connection on both sides.
            tokio::select! {
                () = up => {}
                () = down => {}
            }
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: Dir,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = fault.changed() => {
                if changed.is_err() || *fault.borrow() == Fault::Reset {
                    return;
                }
                continue;
            }
        };
        let now = *fault.borrow();
        if now == Fault::Reset {
            return;
        }
        if !now.passes(dir) {
            continue;
        }
        if let Fault::Delay(d) = now {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_black_holes_and_resets() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let bound = Duration::from_secs(5);
        assert_eq!(
            roundtrip(&mut s, b"hello", bound).await.as_deref(),
            Some(&b"hello"[..])
        );

        proxy.set(Fault::BlackHole);
        assert_eq!(
            roundtrip(&mut s, b"lost", Duration::from_millis(300)).await,
            None
        );
        proxy.set(Fault::Up);
        assert_eq!(
            roundtrip(&mut s, b"again", bound).await.as_deref(),
            Some(&b"again"[..])
        );

        proxy.set(Fault::DropToClient);
        assert_eq!(
            roundtrip(&mut s, b"one-way", Duration::from_millis(300)).await,
            None
        );
        proxy.set(Fault::Up);

        proxy.set(Fault::Reset);
        let mut buf = [0u8; 8];
        let eof = tokio::time::timeout(bound, s.read(&mut buf)).await.unwrap();
        assert!(
            matches!(eof, Ok(0) | Err(_)),
            "reset closes the client side"
        );
        // New connections are refused (closed at once) while the reset lasts.
        let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let closed = tokio::time::timeout(bound, s2.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)));
        proxy.set(Fault::Up);
        let mut s3 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut s3, b"back", bound).await.as_deref(),
            Some(&b"back"[..])
        );
    }
}

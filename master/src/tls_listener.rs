//! The embedded broker's TLS listener: accepts TLS connections, and relays each one, once its
//! handshake is done, to rumqttd's plain listener on loopback.
//!
//! rumqttd 0.20 has a TLS listener of its own, but it performs each handshake inside its
//! accept loop with no time limit: one client that stalls mid-handshake (a flaky cellular
//! link, or anyone holding a socket open) stops every new connection. Here each connection
//! gets its own task and a bounded handshake, client certificates are optional at run time,
//! and the rustls version is the one the clients use.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, info};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Time a new connection has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the TLS listener binds and what it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    pub addr: SocketAddr,
    /// The server certificate chain (PEM, leaf first) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, every client must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

/// Binds the listener and serves it on the current tokio runtime until the process ends.
/// Returns the bound address (port 0 becomes a real port).
pub async fn start(
    listen: &TlsListen,
    upstream: SocketAddr,
) -> Result<SocketAddr, Box<dyn std::error::Error + Send + Sync>> {
    let config = tether_tls::server_config(&listen.cert, &listen.key, listen.client_ca.as_deref())?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(listen.addr)
        .await
        .map_err(|e| format!("TLS listener on {}: {e}", listen.addr))?;
    let addr = listener.local_addr()?;
    info!(
        "TLS listener on {addr} (client certificates {}), relaying to {upstream}",
        if listen.client_ca.is_some() {
            "required"
        } else {
            "not asked for"
        }
    );
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    tokio::spawn(relay(acceptor.clone(), tcp, peer, upstream));
                }
                // Out of file descriptors and the like: pause instead of spinning.
                Err(e) => {
                    debug!("TLS accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(addr)
}

async fn relay(acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr, upstream: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            info!("TLS handshake from {peer} refused: {e}");
            return;
        }
        Err(_) => {
            info!("TLS handshake from {peer} timed out after {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    let result: io::Result<()> = async {
        let plain = TcpStream::connect(upstream).await?;
        plain.set_nodelay(true)?;
        // Either side ending ends both: MQTT has no half-closed state, and a client whose link
        // went dark must not keep a task once rumqttd's keepalive dropped its session.
        let (mut tls_rx, mut tls_tx) = tokio::io::split(tls);
        let (mut plain_rx, mut plain_tx) = plain.into_split();
        tokio::select! {
            r = tokio::io::copy(&mut tls_rx, &mut plain_tx) => r.map(drop),
            r = async {
                tokio::io::copy(&mut plain_rx, &mut tls_tx).await?;
                // close_notify: the client reads a clean end, e.g. after a refused CONNECT.
                tls_tx.shutdown().await
            } => r,
        }
    }
    .await;
    if let Err(e) = result {
        debug!("TLS connection from {peer} ended: {e}");
    }
}

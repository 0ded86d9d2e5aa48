//! HTTPS for the HTTP API: an [`axum::serve::Listener`] that hands axum only connections whose
//! TLS handshake is done.
//!
//! axum accepts one connection at a time, so the handshake cannot happen inside `accept`: one
//! client stalling mid-handshake would stop every other. Here a task accepts TCP connections,
//! each handshake runs in its own task with a time limit, and finished ones queue for axum.
//! A failed or slow handshake is logged and dropped; the listener goes on.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use log::{debug, warn};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Time a new connection has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for axum; a bound so a flood cannot grow memory without end.
const READY_QUEUE: usize = 64;

/// The PEM files of the API's TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// The server certificate chain (leaf first) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, every client must present a certificate this CA signed (bearer tokens are
    /// still required on top).
    pub client_ca: Option<PathBuf>,
}

impl ApiTls {
    /// The rustls acceptor; a bad file is an error that names it.
    pub fn acceptor(&self) -> Result<TlsAcceptor, tether_tls::TlsError> {
        let mut config =
            tether_tls::server_config(&self.cert, &self.key, self.client_ca.as_deref())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A TLS listener for `axum::serve`: yields connections that finished their handshake.
#[derive(Debug)]
pub struct HttpsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl HttpsListener {
    /// Starts accepting on `listener` (on the current tokio runtime) with `acceptor`.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(Self { local, ready })
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: pause instead of spinning.
            Err(e) => {
                debug!("HTTPS accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => warn!("HTTPS handshake from {peer} refused: {e}"),
                Err(_) => {
                    debug!("HTTPS handshake from {peer} timed out after {HANDSHAKE_TIMEOUT:?}")
                }
            }
        });
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop never ends while this receiver lives; should it, serve nothing.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

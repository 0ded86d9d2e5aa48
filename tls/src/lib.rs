//! TLS for Tether's MQTT connections: rustls configurations built from PEM files, with the
//! `ring` provider (it cross-compiles for every Pi target with a plain C cross compiler).
//!
//! - [`client_config`]: verifies the broker against one CA file (no system roots: a fleet
//!   trusts its own CA), optionally presenting a client certificate.
//! - [`server_config`]: a certificate and key, optionally requiring client certificates
//!   signed by a CA.
//!
//! Every loader names the file and what it should have held, so a bad path or a key in the
//! certificate's place is reported at start, not at the first handshake.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A PEM file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemError {
    pub path: PathBuf,
    /// What the file should hold: "CA certificate", "certificate", "private key".
    pub expected: &'static str,
    pub reason: String,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: no usable {} ({})",
            self.path.display(),
            self.expected,
            self.reason
        )
    }
}

impl std::error::Error for PemError {}

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    Pem(PemError),
    /// The files parsed but do not fit together (a key that is not the certificate's).
    Rustls(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem(e) => e.fmt(f),
            Self::Rustls(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<PemError> for TlsError {
    fn from(e: PemError) -> Self {
        Self::Pem(e)
    }
}

fn pem_error(path: &Path, expected: &'static str, e: pem::Error) -> PemError {
    let reason = match e {
        pem::Error::NoItemsFound => format!("the file holds no PEM {expected}"),
        pem::Error::Io(e) => e.to_string(),
        other => format!("malformed PEM: {other}"),
    };
    PemError {
        path: path.to_owned(),
        expected,
        reason,
    }
}

/// Every certificate of a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "certificate", pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "private key", e))
}

/// The trust anchors of a CA file; every certificate in it must parse.
pub fn load_ca(path: &Path) -> Result<RootCertStore, PemError> {
    let certs = load_certs(path).map_err(|e| PemError {
        expected: "CA certificate",
        ..e
    })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| PemError {
            path: path.to_owned(),
            expected: "CA certificate",
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client certificate and its key.
#[derive(Debug)]
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PemError> {
        Ok(Self {
            certs: load_certs(cert)?,
            key: load_key(key)?,
        })
    }
}

/// A client configuration that trusts exactly `roots` and, with `identity`, presents a
/// client certificate. The server name checked is the host of the broker address.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|e| TlsError::Rustls(format!("client certificate and key: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// [`client_config`] from files: the CA, and optionally a client certificate and key.
pub fn client_config_from_files(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let roots = load_ca(ca)?;
    let identity = identity
        .map(|(cert, key)| Identity::load(cert, key))
        .transpose()?;
    client_config(roots, identity)
}

/// A server configuration presenting `cert` (a chain, leaf first) with `key`; with
/// `client_ca`, every client must present a certificate that CA signed.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let identity = Identity::load(cert, key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_ca(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(identity.certs, identity.key)
        .map_err(|e| TlsError::Rustls(format!("server certificate and key: {e}")))
}

//! Certificates made for one test with the `openssl` command: a CA, server certificates for
//! 127.0.0.1 (valid or already expired) and client certificates, as PEM files in a temporary
//! directory. EC P-256 keys: quick to generate.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tempdir::TempDir;

pub const OPENSSL: &str = "openssl";

/// The master's TLS listener flags (port 0) for `server`, requiring client certificates from
/// `client_ca` when given.
pub fn master_tls_listener(server: &CertPair, client_ca: Option<&Path>) -> Vec<String> {
    let arg = |p: &Path| p.to_string_lossy().into_owned();
    let mut args = vec![
        "--tls-listen".into(),
        "127.0.0.1:0".into(),
        "--tls-cert".into(),
        arg(&server.cert),
        "--tls-key".into(),
        arg(&server.key),
    ];
    if let Some(ca) = client_ca {
        args.extend(["--tls-client-ca".into(), arg(ca)]);
    }
    args
}

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA and the certificates it signed.
#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
    name: String,
    pub ca: CertPair,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{OPENSSL} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{OPENSSL} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SERVER: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl Pki {
    /// A new self-signed CA called `name` (files `NAME-ca.pem`, `NAME-ca.key`).
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new(&format!("pki-{name}")).expect("temp dir");
        let (cert, key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
        let subject = format!("/CN=Tether test CA {name}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "3650"];
        args.extend(EC);
        args.extend(["-keyout", &key, "-out", &cert, "-subj", &subject]);
        openssl(dir.path(), &args);
        Self {
            ca: CertPair {
                cert: dir.join(&cert),
                key: dir.join(&key),
            },
            dir,
            name: name.to_owned(),
        }
    }

    /// A certificate for `cn` signed by this CA, valid for `days` (negative: expired already),
    /// with `extensions` (at least one: without any, openssl writes an X.509 v1 certificate,
    /// which rustls refuses).
    fn issue(&self, cn: &str, days: i32, extensions: &str) -> CertPair {
        let base = format!("{}-{cn}-{days}", self.name);
        let (cert, key, csr, ext) = (
            format!("{base}.pem"),
            format!("{base}.key"),
            format!("{base}.csr"),
            format!("{base}.ext"),
        );
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-nodes"];
        args.extend(EC);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(self.dir.path(), &args);
        std::fs::write(self.dir.join(&ext), extensions).expect("extension file");
        let days = days.to_string();
        let (ca_cert, ca_key) = (
            self.ca.cert.to_string_lossy().into_owned(),
            self.ca.key.to_string_lossy().into_owned(),
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                &days,
                "-extfile",
                &ext,
            ],
        );
        CertPair {
            cert: self.dir.join(&cert),
            key: self.dir.join(&key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> CertPair {
        self.issue("localhost", 365, SERVER)
    }

    /// A server certificate for 127.0.0.1 whose validity ended yesterday.
    pub fn expired_server(&self) -> CertPair {
        self.issue("localhost", -1, SERVER)
    }

    /// A client certificate for `cn`.
    pub fn client(&self, cn: &str) -> CertPair {
        self.issue(cn, 365, "extendedKeyUsage=clientAuth\n")
    }

    /// A file in this PKI's directory (for a test's own files).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

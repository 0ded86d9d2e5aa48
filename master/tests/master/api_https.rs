//! HTTPS for the API: the real master with `--api-tls-cert/--api-tls-key` (and
//! `--api-client-ca`), certificates made with `openssl` for this test, and ureq over rustls as
//! the client. Plain HTTP, an untrusting client and a client without a certificate must fail.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use crate::runtime::{MasterProc, tetherctl_bin};

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA `name` in `dir`: `NAME-ca.pem`, `NAME-ca.key`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (cert, key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let subject = format!("/CN=Tether test CA {name}");
    let mut args = vec!["req", "-x509", "-nodes", "-days", "30"];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &cert, "-subj", &subject]);
    openssl(dir, &args);
    dir.join(cert)
}

/// A certificate `cn` signed by CA `ca`, with `extensions` (X.509 v3: rustls refuses v1).
/// Returns (certificate, key).
fn issue(dir: &Path, ca: &str, cn: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let (cert, key, csr, ext) = (
        format!("{cn}.pem"),
        format!("{cn}.key"),
        format!("{cn}.csr"),
        format!("{cn}.ext"),
    );
    let subject = format!("/CN={cn}");
    let mut args = vec!["req", "-nodes"];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
    openssl(dir, &args);
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let (ca_cert, ca_key) = (format!("{ca}-ca.pem"), format!("{ca}-ca.key"));
    openssl(
        dir,
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
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

struct Pki {
    ca: PathBuf,
    /// A CA that signed nothing the master presents.
    other_ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    let ca = make_ca(dir, "api");
    let other_ca = make_ca(dir, "other");
    let server = issue(
        dir,
        "api",
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    let client = issue(dir, "api", "client", "extendedKeyUsage=clientAuth\n");
    Pki {
        ca,
        other_ca,
        server,
        client,
    }
}

fn pem(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A ureq agent trusting only `ca`, presenting `identity` when given.
fn client(ca: &Path, identity: Option<&(PathBuf, PathBuf)>) -> ureq::Agent {
    let root = Certificate::from_pem(&pem(ca)).unwrap();
    let cert = identity.map(|(cert, key)| {
        ClientCert::new_with_certs(
            &[Certificate::from_pem(&pem(cert)).unwrap()],
            PrivateKey::from_pem(&pem(key)).unwrap(),
        )
    });
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(
            tether_tls::rustls::crypto::ring::default_provider(),
        ))
        .root_certs(RootCerts::new_with_certs(&[root]))
        .client_cert(cert)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// GET /api/status over HTTPS: the status, or the client's error as text.
fn status(agent: &ureq::Agent, master: &MasterProc, token: Option<&str>) -> Result<u16, String> {
    let mut req = agent.get(format!("https://{}/api/status", master.http));
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    req.call()
        .map(|resp| resp.status().as_u16())
        .map_err(|e| e.to_string())
}

fn tls_args(pki: &Pki, client_ca: bool) -> Vec<&OsStr> {
    let mut args: Vec<&OsStr> = vec![
        "--api-tls-cert".as_ref(),
        pki.server.0.as_os_str(),
        "--api-tls-key".as_ref(),
        pki.server.1.as_os_str(),
    ];
    if client_ca {
        args.extend(["--api-client-ca".as_ref(), pki.ca.as_os_str()]);
    }
    args
}

#[test]
fn https_api_answers_trusting_clients_with_a_token_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let master = MasterProc::start_with(&dir.path().join("data"), &tls_args(&pki, false));

    // A client that connects and never starts its handshake blocks no one.
    let _stalled = std::net::TcpStream::connect(&master.http).unwrap();
    let trusting = client(&pki.ca, None);
    assert_eq!(status(&trusting, &master, Some(&master.token)), Ok(200));
    // TLS does not replace the bearer token.
    assert_eq!(status(&trusting, &master, None), Ok(401));

    let untrusting = client(&pki.other_ca, None);
    let err = status(&untrusting, &master, Some(&master.token)).unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // Plain HTTP on the same port gets no answer from the API.
    let plain = crate::plain_http::request(
        &master.http,
        Some(&master.token),
        "GET",
        "/api/status",
        None,
    );
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP was served: {plain:?}"
    );

    // The failed handshakes did not stop the listener.
    assert_eq!(status(&trusting, &master, Some(&master.token)), Ok(200));
}

#[test]
fn api_client_ca_admits_only_clients_with_a_certificate_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let master = MasterProc::start_with(&dir.path().join("data"), &tls_args(&pki, true));

    let anonymous = client(&pki.ca, None);
    assert!(
        status(&anonymous, &master, Some(&master.token)).is_err(),
        "a client without a certificate got in"
    );
    let with_cert = client(&pki.ca, Some(&pki.client));
    assert_eq!(status(&with_cert, &master, Some(&master.token)), Ok(200));
    assert_eq!(status(&with_cert, &master, None), Ok(401));
    // A certificate from another CA is refused as well.
    let other = issue(
        dir.path(),
        "other",
        "stranger",
        "extendedKeyUsage=clientAuth\n",
    );
    let stranger = client(&pki.ca, Some(&other));
    assert!(
        status(&stranger, &master, Some(&master.token)).is_err(),
        "a client certificate of another CA got in"
    );

    // tetherctl over the same door: the fleet's CA, its client certificate, and a first master
    // URL that answers nothing (it moves on to the next one).
    let tetherctl = |identity: Option<&(PathBuf, PathBuf)>| {
        let mut cmd = Command::new(tetherctl_bin());
        cmd.env("TETHER_TOKEN", &master.token)
            .env("HOME", dir.path())
            .args(["--master", "https://127.0.0.1:1"])
            .args(["--master", &format!("https://{}/", master.http)])
            .arg("--ca-file")
            .arg(&pki.ca);
        if let Some((cert, key)) = identity {
            cmd.arg("--client-cert")
                .arg(cert)
                .arg("--client-key")
                .arg(key);
        }
        cmd.args(["status", "--output", "json"]).output().unwrap()
    };
    let out = tetherctl(Some(&pki.client));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["connected"], true, "{answer}");
    let out = tetherctl(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach a master"),
        "{err}"
    );
}

/// Runs the master with `extra` options, expecting it to stop at start: its stderr.
fn start_fails(data: &Path, extra: &[&OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tether-master"))
        .args([
            "run",
            "--config",
            "/dev/null",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the master started: {out:?}");
    assert!(out.stdout.is_empty(), "a ready line: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn api_tls_options_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let data = dir.path().join("data");

    let err = start_fails(
        &data,
        &["--api-tls-cert".as_ref(), pki.server.0.as_os_str()],
    );
    assert!(err.contains("api_tls_cert: needs api_tls_key"), "{err}");
    let err = start_fails(&data, &["--api-tls-key".as_ref(), pki.server.1.as_os_str()]);
    assert!(err.contains("api_tls_key: needs api_tls_cert"), "{err}");
    let err = start_fails(&data, &["--api-client-ca".as_ref(), pki.ca.as_os_str()]);
    assert!(err.contains("api_client_ca: needs"), "{err}");

    // A key in the certificate's place: the error names the file.
    let swapped = [
        "--api-tls-cert".as_ref(),
        pki.server.1.as_os_str(),
        "--api-tls-key".as_ref(),
        pki.server.1.as_os_str(),
    ];
    let err = start_fails(&data, &swapped);
    let key = pki.server.1.display().to_string();
    assert!(err.contains(&key) && err.contains("certificate"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let missing = dir.path().join("no-such-ca.pem");
    let mut args = tls_args(&pki, false);
    args.extend(["--api-client-ca".as_ref(), missing.as_os_str()]);
    let err = start_fails(&data, &args);
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

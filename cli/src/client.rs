//! The master's HTTP API as tetherctl sees it: one or more master URLs (each tried in turn, so
//! a standby or a dead master is passed over), a bearer token, https with the fleet's CA, JSON
//! answers and errors as one line for the user.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// One line for the user; the exit code says it failed.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// `~/.config/tether/tetherctl.toml` (keep it 0600 when it holds a token):
/// `masters = ["https://…", …]` (or `master = "…"`), `token_file = "…"` or
/// `token = "tether_…"`, `ca_file = "…"`, `client_cert`/`client_key`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub master: Option<String>,
    #[serde(default)]
    pub masters: Vec<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Settings {
    /// The settings file, or the defaults when there is none.
    pub fn load() -> Result<Self, Failure> {
        let Some(home) = std::env::var_os("HOME") else {
            return Ok(Self::default());
        };
        let path = Path::new(&home).join(".config/tether/tetherctl.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| Failure(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Failure(format!("{}: {e}", path.display()))),
        }
    }
}

/// What the command line says about reaching the master; unset fields fall back to
/// [`Settings`].
#[derive(Debug, Default)]
pub struct Options {
    pub masters: Vec<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Api {
    /// Base URLs without a trailing slash, in the order they are tried.
    bases: Vec<String>,
    token: Option<String>,
    agent: ureq::Agent,
}

/// How long a plain request may take; streams have no overall limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JSON answer read (the master pages its lists well below this).
const MAX_ANSWER: u64 = 256 << 20;

impl Api {
    /// The client from the flags, the environment and the settings file, in that order.
    pub fn new(options: Options) -> Result<Self, Failure> {
        let settings = Settings::load()?;
        let mut masters = options.masters;
        if masters.is_empty() {
            masters = settings.masters.clone();
            masters.extend(settings.master.clone());
        }
        if masters.is_empty() {
            masters.push("http://127.0.0.1:8080".into());
        }
        let bases = masters
            .iter()
            .map(|m| base_url(m))
            .collect::<Result<Vec<_>, _>>()?;
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|e| Failure(format!("token file {}: {e}", path.display())))
        };
        let token = match (std::env::var("TETHER_TOKEN").ok(), &options.token_file) {
            (Some(t), _) if !t.is_empty() => Some(t),
            (_, Some(path)) => Some(read(path)?),
            _ => match (&settings.token, &settings.token_file) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(path)) => Some(read(path)?),
                (None, None) => None,
            },
        };
        let tls = tls_config(
            options.ca_file.as_deref().or(settings.ca_file.as_deref()),
            options
                .client_cert
                .as_deref()
                .or(settings.client_cert.as_deref()),
            options
                .client_key
                .as_deref()
                .or(settings.client_key.as_deref()),
        )?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            // The token goes to the URL given, never to wherever a redirect points.
            .max_redirects(0)
            .user_agent(concat!("tetherctl/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .into();
        Ok(Self {
            bases,
            token,
            agent,
        })
    }

    /// A JSON request; the answer's JSON on 2xx, its `error` as a [`Failure`] otherwise.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let mut response = self.send(method, path, body, Some(REQUEST_TIMEOUT))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| Failure(format!("reading the master's answer: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            Failure(format!(
                "the master answered HTTP {status} with something that is not JSON"
            ))
        })?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let msg = value["error"].as_str().unwrap_or("unknown error");
            Err(Failure(format!("{msg} (HTTP {status})")))
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        self.call("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.call("DELETE", path, None)
    }

    /// A streamed GET (server-sent events): the body as it arrives, on 2xx.
    pub fn stream(&self, path: &str, accept: &str) -> Result<impl Read + Send + use<>, Failure> {
        let response = self.send_with("GET", path, None, None, Some(accept))?;
        Ok(refused(response)?.into_body().into_reader())
    }

    /// A GET of bytes (`format=raw`): the body and the answer's headers, on 2xx.
    pub fn bytes(&self, path: &str) -> Result<(Vec<u8>, ureq::http::HeaderMap), Failure> {
        let response = self.send_with("GET", path, None, Some(REQUEST_TIMEOUT), None)?;
        let mut response = refused(response)?;
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| Failure(format!("reading the master's answer: {e}")))?;
        Ok((bytes, response.headers().clone()))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        self.send_with(method, path, body, timeout, None)
    }

    /// Tries each master in turn: one that cannot be reached, or answers 503 as a standby
    /// (`code: "standby"`), is passed over; the first real answer is returned.
    fn send_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut errors = Vec::new();
        for base in &self.bases {
            let url = format!("{base}{path}");
            match self.send_one(method, &url, body, timeout, accept) {
                Ok(response) if is_standby(&response) => {
                    errors.push(format!("{base}: a standby master"));
                }
                Ok(response) => return Ok(response),
                Err(e) => errors.push(format!("{base}: {e}")),
            }
        }
        Err(Failure(format!(
            "cannot reach a master ({})",
            errors.join("; ")
        )))
    }

    fn send_one(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
        accept: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! prepare {
            ($builder:expr) => {{
                let mut b = $builder.config().timeout_global(timeout).build();
                if let Some(auth) = &auth {
                    b = b.header("Authorization", auth);
                }
                if let Some(accept) = accept {
                    b = b.header("Accept", accept);
                }
                b
            }};
        }
        match (method, body) {
            ("POST", body) => prepare!(self.agent.post(url))
                .content_type("application/json")
                .send(body.map_or_else(|| "{}".to_owned(), Value::to_string)),
            // The master takes state changes as JSON only, bodiless ones too.
            ("DELETE", _) => prepare!(self.agent.delete(url))
                .header("Content-Type", "application/json")
                .call(),
            _ => prepare!(self.agent.get(url)).call(),
        }
    }
}

/// The answer on 2xx; its JSON `error` as a [`Failure`] otherwise.
fn refused(
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<ureq::http::Response<ureq::Body>, Failure> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let msg = value["error"].as_str().unwrap_or("unknown error");
    Err(Failure(format!("{msg} (HTTP {status})")))
}

/// A 503 whose body names a standby: the HA masters answer so until they are active.
fn is_standby(response: &ureq::http::Response<ureq::Body>) -> bool {
    response.status().as_u16() == 503
        && response
            .headers()
            .get("tether-standby")
            .is_some_and(|v| v.as_bytes() == b"1")
}

/// `http[s]://host[:port][/path]`, or `host:port` (http), without a trailing slash: request
/// paths are appended, so a master behind a reverse proxy under a sub-path works.
pub fn base_url(text: &str) -> Result<String, Failure> {
    let url = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
    if !matches!(scheme, "http" | "https") {
        return Err(Failure(format!(
            "master URL `{text}`: use http:// or https://"
        )));
    }
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || rest.contains(['?', '#']) {
        return Err(Failure(format!(
            "master URL `{text}`: expected http[s]://HOST[:PORT][/PATH]"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn tls_config(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<TlsConfig, Failure> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = TlsConfig::builder().unversioned_rustls_crypto_provider(provider);
    if let Some(ca) = ca {
        let certs = tether_tls::load_certs(ca).map_err(|e| Failure(format!("--ca-file: {e}")))?;
        let certs: Vec<Certificate<'static>> = certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| Failure(format!("{}: {e}", p.display())));
        let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&read(cert)?)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if chain.is_empty() {
            return Err(Failure(format!("{}: no certificate", cert.display())));
        }
        let key = PrivateKey::from_pem(&read(key)?)
            .map_err(|e| Failure(format!("{}: {e}", key.display())))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(tls.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_paths_and_refuse_other_schemes() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(
            base_url("https://ops.example/tether/").unwrap(),
            "https://ops.example/tether"
        );
        assert_eq!(base_url("http://[::1]:80").unwrap(), "http://[::1]:80");
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("http://").is_err());
        assert!(base_url("http://h/?q").is_err());
    }
}

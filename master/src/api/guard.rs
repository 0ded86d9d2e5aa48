//! What every request must show before a handler sees it: a `Host` this master answers to (no
//! DNS rebinding), and for anything that changes state, a JSON content type and no foreign
//! `Origin` (no cross-site form posts or fetches from a page the operator happens to have open).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The names and origins the API accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Host names (without port) accepted besides `localhost` and IP literals.
    pub hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) allowed to send state-changing requests besides the
    /// API's own.
    pub origins: Vec<String>,
}

impl Guard {
    /// A request's `Host` must name this master: an IP literal (a page on another site cannot
    /// make a browser send one for its own name), `localhost`, or a configured name. A rebinding
    /// attack always carries the attacker's own name.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// A browser's `Origin` on a state-changing request: the API's own (the dashboard), or a
    /// configured one. Clients that are not browsers send none.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let own = origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host));
        own || self
            .origins
            .iter()
            .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.host_allowed(host) {
            return Err(ApiError::new(
                421,
                format!(
                    "Host '{host}' is not a name of this master (allowed: localhost, IP \
                     addresses and --api-host names)"
                ),
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !self.origin_allowed(origin, host) {
                return Err(ApiError::new(
                    403,
                    format!("cross-site request from Origin '{origin}' refused"),
                ));
            }
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                415,
                "requests that change state must have Content-Type: application/json",
            ));
        }
        Ok(())
    }
}

/// `host[:port]` or `[v6]:port` without the port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The middleware: refuses before the handler runs.
pub(super) async fn guard(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match guard.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_are_loopback_ips_and_configured_names() {
        let g = Guard {
            hosts: vec!["master.example".into()],
            origins: vec![],
        };
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.0.0.5",
            "MASTER.example:443",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "", "localhost.evil.example"] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn state_changes_need_json_and_no_foreign_origin() {
        let g = Guard::default();
        let json = (header::CONTENT_TYPE, "application/json; charset=utf-8");
        let host = (header::HOST, "127.0.0.1:8080");
        assert!(
            g.check(&Method::GET, &headers(std::slice::from_ref(&host)))
                .is_ok()
        );
        let form = (header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        let e = g
            .check(&Method::POST, &headers(&[host.clone(), form]))
            .unwrap_err();
        assert_eq!(e.status, 415);
        assert!(
            g.check(&Method::POST, &headers(&[host.clone(), json.clone()]))
                .is_ok()
        );
        let own = (header::ORIGIN, "http://127.0.0.1:8080");
        let ok = headers(&[host.clone(), json.clone(), own]);
        assert!(g.check(&Method::POST, &ok).is_ok());
        let foreign = (header::ORIGIN, "https://evil.example");
        let e = g
            .check(
                &Method::POST,
                &headers(&[host.clone(), json.clone(), foreign]),
            )
            .unwrap_err();
        assert_eq!(e.status, 403);
        let rebound = (header::HOST, "evil.example:8080");
        let e = g.check(&Method::GET, &headers(&[rebound])).unwrap_err();
        assert_eq!(e.status, 421);
    }
}

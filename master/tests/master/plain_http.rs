//! One JSON request to the master's plain-HTTP API, for the master's tests and benchmark and
//! the tether-tests harness (which include this file): any method, an optional bearer token,
//! the status and body whatever the status.

use std::time::Duration;

/// `method path` on `http://addr` with `body` as JSON; the status and the body's text.
pub(crate) fn request(
    addr: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("Accept", "application/json")
        .header("Content-Type", "application/json");
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let req = req.body(body.unwrap_or("").to_owned())?;
    let mut answer = agent.run(req)?;
    let status = answer.status().as_u16();
    let text = answer
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()?;
    Ok((status, text))
}

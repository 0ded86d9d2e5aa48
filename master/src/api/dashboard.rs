//! The dashboard's files: plain HTML, CSS and JavaScript modules from `master/static/`,
//! compiled into the binary (no build step, nothing to install beside it).
//!
//! Every file goes out with its content type and a Content-Security-Policy that allows only
//! this origin's own scripts, styles and API calls: no inline script, no eval, no framing, so
//! text from the API that slipped past the page's escaping still could not run.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// What every dashboard answer carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files under `/ui/`, by name: (content type, text).
const FILES: &[(&str, &str, &str)] = &[
    ("style.css", CSS, include_str!("../../static/style.css")),
    ("app.js", JS, include_str!("../../static/app.js")),
    ("api.js", JS, include_str!("../../static/api.js")),
    ("fleet.js", JS, include_str!("../../static/fleet.js")),
    ("tasks.js", JS, include_str!("../../static/tasks.js")),
    ("task.js", JS, include_str!("../../static/task.js")),
    ("timeline.js", JS, include_str!("../../static/timeline.js")),
    ("submit.js", JS, include_str!("../../static/submit.js")),
];

fn answer(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new master binary brings new files: the browser asks again rather than mixing versions.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`: the page.
pub(super) async fn index() -> Response {
    answer(HTML, include_str!("../../static/index.html"))
}

/// `GET /ui/{file}`: one of [`FILES`], else 404.
pub(super) async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, ty, body)| answer(ty, body))
        .ok_or_else(|| ApiError::new(404, "no such dashboard file"))
}

//! Which role each route needs, and the middleware that checks the caller's bearer token.
//!
//! Fail closed: a route not named below needs `admin`. Public: the dashboard page and its
//! files under `/ui/` (fixed text compiled in, no data: the page asks for a token), and
//! `/healthz`, which load balancers and service checks reach without a token and which tells
//! only `ok` and a fixed reason.

use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::tokens::{Caller, Tokens};
use crate::model::Role;

/// The tokens the API accepts, shared by the middleware and the master loop (which changes
/// them after it has stored the change).
pub type SharedTokens = Arc<RwLock<Tokens>>;

/// The role a request needs; `None` for the public dashboard files and `/healthz`.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let read = matches!(*method, Method::GET | Method::HEAD);
    if read && (path == "/" || path == "/healthz" || path.starts_with("/ui/")) {
        return None;
    }
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        // Tokens are secrets.
        ["", "api", "tokens", ..] => Role::Admin,
        // The API's shape is no secret, but it is the API's: same as every read.
        ["", "api", "openapi.json"] if read => Role::Viewer,
        // Counts and states, no task content: a viewer token in Prometheus' scrape config
        // (`authorization: {credentials_file: ...}`).
        ["", "metrics"] if read => Role::Viewer,
        _ if read => Role::Viewer,
        ["", "api", "tasks"] | ["", "api", "tasks", _, "kill"] if post => Role::Operator,
        // Workflows and their orders are tasks in sequence: the same day-to-day operation.
        ["", "api", "workflows" | "orders"] | ["", "api", "orders", _, "cancel"] if post => {
            Role::Operator
        }
        // Schedules are tasks on a calendar: defined, paused, resumed and deleted by operators.
        ["", "api", "schedules"] | ["", "api", "schedules", _, "pause" | "resume"] if post => {
            Role::Operator
        }
        ["", "api", "schedules", _] if delete => Role::Operator,
        // Switch-over is day-to-day operation, like a kill.
        ["", "api", "agents", _, "disable" | "enable"] if post => Role::Operator,
        _ => Role::Admin,
    })
}

/// The bearer token of a request, if it has one.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The middleware: 401 without a valid token, 403 with a role too low; otherwise the
/// [`Caller`] goes into the request's extensions for the handler to record.
pub(super) async fn require_token(
    State(tokens): State<SharedTokens>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(needed) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let caller = bearer(&req).and_then(|secret| {
        tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .authenticate(secret)
    });
    let Some(caller) = caller else {
        let mut answer = ApiError::new(
            401,
            "a bearer token is needed (Authorization: Bearer tether_...)",
        )
        .into_response();
        answer.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return answer;
    };
    if caller.role < needed {
        return ApiError::new(
            403,
            format!(
                "token '{}' is {}; this needs {needed}",
                caller.name, caller.role
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert::<Caller>(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_role_of_what_they_do() {
        let r = |m: Method, p: &str| required_role(&m, p);
        assert_eq!(r(Method::GET, "/"), None);
        assert_eq!(r(Method::GET, "/healthz"), None);
        assert_eq!(r(Method::GET, "/ui/app.js"), None);
        assert_eq!(r(Method::POST, "/ui/app.js"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/api/whoami"), Some(Role::Viewer));
        assert_eq!(r(Method::HEAD, "/healthz"), None);
        assert_eq!(r(Method::POST, "/healthz"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(r(Method::POST, "/metrics"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/api/tasks"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/api/openapi.json"), Some(Role::Viewer));
        assert_eq!(r(Method::POST, "/api/openapi.json"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/api/tasks/7/output"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/api/events"), Some(Role::Viewer));
        assert_eq!(r(Method::POST, "/api/events"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/api/tasks"), Some(Role::Operator));
        assert_eq!(r(Method::POST, "/api/tasks/7/kill"), Some(Role::Operator));
        assert_eq!(r(Method::POST, "/api/agents/pi-1/key"), Some(Role::Admin));
        assert_eq!(
            r(Method::POST, "/api/agents/pi-1/disable"),
            Some(Role::Operator)
        );
        assert_eq!(
            r(Method::POST, "/api/agents/pi-1/enable"),
            Some(Role::Operator)
        );
        assert_eq!(r(Method::POST, "/api/workflows"), Some(Role::Operator));
        assert_eq!(r(Method::GET, "/api/workflows/w"), Some(Role::Viewer));
        assert_eq!(r(Method::POST, "/api/workflows/w"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/api/orders"), Some(Role::Operator));
        assert_eq!(r(Method::GET, "/api/orders/3"), Some(Role::Viewer));
        assert_eq!(
            r(Method::POST, "/api/orders/3/cancel"),
            Some(Role::Operator)
        );
        assert_eq!(r(Method::DELETE, "/api/orders/3"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/api/schedules"), Some(Role::Operator));
        assert_eq!(r(Method::GET, "/api/schedules/s"), Some(Role::Viewer));
        assert_eq!(r(Method::POST, "/api/schedules/s"), Some(Role::Admin));
        assert_eq!(
            r(Method::POST, "/api/schedules/s/pause"),
            Some(Role::Operator)
        );
        assert_eq!(
            r(Method::POST, "/api/schedules/s/resume"),
            Some(Role::Operator)
        );
        assert_eq!(r(Method::DELETE, "/api/schedules/s"), Some(Role::Operator));
        assert_eq!(r(Method::DELETE, "/api/schedules"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/api/clusters"), Some(Role::Admin));
        assert_eq!(r(Method::GET, "/api/tokens"), Some(Role::Admin));
        assert_eq!(r(Method::DELETE, "/api/tokens/ci"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/"), Some(Role::Admin));
        assert_eq!(r(Method::PUT, "/api/tasks"), Some(Role::Admin));
    }
}

//! The API's errors: a status, a stable `code` that scripts match, and a message for people.
//! Every error body is `{"error": "...", "code": "..."}`.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::core::{ErrorClass, RequestError};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ErrorBody<'a> {
    /// For people.
    #[schema(value_type = String)]
    error: &'a str,
    /// Stable, for scripts: `bad_request`, `unauthorized`, `not_found`, ...
    #[schema(value_type = String, example = "not_found")]
    code: &'static str,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The stable name of the status: what a client branches on.
    pub fn code(&self) -> &'static str {
        match self.status {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            421 => "misdirected_request",
            422 => "invalid",
            503 => "unavailable",
            507 => "insufficient_storage",
            _ => "internal",
        }
    }

    /// A body the JSON extractor refused: 400 malformed, 413 too large, 415 not JSON, 422
    /// well-formed but not a valid request.
    pub fn body(rejection: &JsonRejection) -> Self {
        Self::new(
            rejection.status().as_u16(),
            format!("bad request body: {}", rejection.body_text()),
        )
    }
}

impl ApiError {
    /// A refused definition: something it names that does not exist (an agent, a cluster, a
    /// profile) is a fault of the body (422), not a resource missing at the URL (404).
    pub(super) fn in_body(e: RequestError) -> Self {
        let class = e.class();
        let mut error = Self::from(e);
        if class == ErrorClass::NotFound {
            error.status = 422;
        }
        error
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let status = match e.class() {
            ErrorClass::Invalid => 422,
            ErrorClass::NotFound => 404,
            ErrorClass::Conflict => 409,
        };
        Self::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound { .. } => 404,
            StoreError::Invalid(_) => 422,
            // The database server is down or out of reach: worth retrying.
            _ if e.is_unreachable() => 503,
            _ => 500,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: &self.message,
            code: self.code(),
        };
        (status, axum::Json(body)).into_response()
    }
}

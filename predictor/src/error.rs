//! The one table from every error a caller can see to its HTTP status, code
//! and JSON body `{"error": "...", "code": "...", "status": N}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::input::InputError;

/// An error answered to an HTTP caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (syntax): bad JSON, bad multipart, bad header.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but its content is not usable.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The content type is not one this route accepts.
    #[error("unsupported media type {found:?}; this route accepts {accepted}")]
    UnsupportedMediaType {
        /// The content type sent.
        found: String,
        /// What the route accepts.
        accepted: &'static str,
    },
    /// No API key, or one that is not accepted.
    #[error("missing or unknown API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    Unauthorized,
    /// The caller's API key exceeded its request rate.
    #[error("rate limit exceeded for this API key; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after_secs: u64,
    },
    /// The inference queue is full.
    #[error("server overloaded: the inference queue is full")]
    Overloaded,
    /// The model named in the path is not served here.
    #[error("model {0:?} is not served here")]
    ModelNotFound(String),
    /// No route matches.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The model is still loading or the server is shutting down.
    #[error("the model is not ready")]
    NotReady,
    /// Inference did not finish within the request timeout.
    #[error("inference did not finish within {0} ms")]
    Timeout(u64),
    /// The forward pass failed: a bug or a model that does not fit its card.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Human-readable message.
    pub error: String,
    /// Stable machine-readable code, e.g. `invalid_shape`.
    pub code: &'static str,
    /// The HTTP status, repeated for clients that lose it.
    pub status: u16,
}

impl ApiError {
    /// The HTTP status: 4xx for the caller's mistakes, 429 overloaded, 503 not
    /// ready, 504 timeout, 500 only for bugs.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Input(e) if e.is_syntax() => StatusCode::BAD_REQUEST,
            Self::Input(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } | Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Inference(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable code for clients and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Input(e) => e.code(),
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::ModelNotFound(_) => "model_not_found",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotReady => "not_ready",
            Self::Timeout(_) => "timeout",
            Self::Inference(_) => "inference_failed",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::Overloaded | Self::NotReady => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let body = ErrorBody { error: self.to_string(), code: self.code(), status: status.as_u16() };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_mistakes_are_4xx_and_bugs_5xx() {
        assert_eq!(ApiError::BadRequest("x".into()).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Input(InputError::Json("x".into())).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Input(InputError::NonFinite).status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ApiError::PayloadTooLarge { limit: 1 }.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::Overloaded.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(ApiError::NotReady.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ApiError::Inference("x".into()).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn rate_limited_answers_carry_retry_after() {
        let response = ApiError::RateLimited { retry_after_secs: 3 }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}

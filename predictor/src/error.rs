//! The one table from every error a caller can see to its HTTP status, code
//! and JSON body `{"error": "...", "code": "...", "status": N, "request_id": "..."}`.
//! Bodies never carry a model's traceback: that goes to the log, under the
//! same request id.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Too many failed key checks from this client (or from all clients).
    #[error("too many requests with unknown API keys; retry after {retry_after_secs} s")]
    AuthThrottled {
        /// Seconds until another attempt is checked.
        retry_after_secs: u64,
    },
    /// The caller's API key exceeded its request rate.
    #[error("rate limit exceeded for this API key; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after_secs: u64,
    },
    /// The inference queue is full.
    #[error("server overloaded: the inference queue is full")]
    Overloaded,
    /// Every decode thread is busy and the decode queue is full.
    #[error("server overloaded: too many requests are being decoded")]
    DecodeOverloaded,
    /// The request bodies held in memory already fill the server's budget.
    #[error("server overloaded: too many request bytes in flight")]
    BodyBudgetExhausted,
    /// The client did not send its body within the body-read timeout.
    #[error("the request body was not received within {0} ms")]
    RequestTimeout(u64),
    /// The inference thread has stopped (the process is about to exit).
    #[error("the inference thread has stopped; this server is restarting")]
    InferenceUnavailable,
    /// A bug on our side, e.g. a decoder that panicked.
    #[error("internal error: {0}")]
    Internal(String),
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
    /// The message is logged, never sent.
    #[error("inference failed for this input; the server log has the details under this request id")]
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
    /// The request's id (the `x-request-id` header), also in the server log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
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
            Self::RateLimited { .. }
            | Self::AuthThrottled { .. }
            | Self::Overloaded
            | Self::DecodeOverloaded
            | Self::BodyBudgetExhausted => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::InferenceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::AuthThrottled { .. } => "auth_throttled",
            Self::Overloaded => "overloaded",
            Self::DecodeOverloaded => "decode_overloaded",
            Self::BodyBudgetExhausted => "body_budget_exhausted",
            Self::RequestTimeout(_) => "request_timeout",
            Self::InferenceUnavailable => "inference_unavailable",
            Self::Internal(_) => "internal",
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
            Self::RateLimited { retry_after_secs } | Self::AuthThrottled { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            Self::Overloaded | Self::DecodeOverloaded | Self::BodyBudgetExhausted | Self::NotReady => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = current_request_id();
        match &self {
            Self::Inference(detail) | Self::Internal(detail) => {
                tracing::warn!(code = self.code(), request_id = request_id.as_deref(), %detail, "request failed");
            }
            _ if status.is_server_error() => {
                tracing::warn!(code = self.code(), request_id = request_id.as_deref(), error = %self, "request failed");
            }
            _ => {}
        }
        let body =
            ErrorBody { error: self.to_string(), code: self.code(), status: status.as_u16(), request_id };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Header carrying a request's id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest request id accepted from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 64;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request this task is serving, inside [`with_request_id`].
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `future` with `id` as the current request id.
pub async fn with_request_id<F: std::future::Future>(id: String, future: F) -> F::Output {
    REQUEST_ID.scope(id, future).await
}

/// The client's id when it is short and plain (letters, digits, `-_.:`),
/// else a fresh one: a client never gets to write arbitrary text into logs.
pub fn request_id(from_client: Option<&[u8]>) -> String {
    if let Some(id) = from_client
        && !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    {
        return String::from_utf8_lossy(id).into_owned();
    }
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    // SplitMix64: distinct, well-spread ids from a counter.
    let mut z = seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
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
    fn request_ids_are_kept_only_when_plain() {
        assert_eq!(request_id(Some(b"abc-123:x")), "abc-123:x");
        let fresh = request_id(Some(b"a b\n"));
        assert_eq!(fresh.len(), 16);
        assert_ne!(request_id(None), request_id(None));
        assert_eq!(request_id(Some(&[b'a'; 65])).len(), 16);
    }

    #[tokio::test]
    async fn inference_errors_carry_the_request_id_and_never_the_detail() {
        let response = with_request_id("r-1".into(), async {
            ApiError::Inference("Traceback (most recent call last): secret".into()).into_response()
        })
        .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["request_id"], "r-1");
        assert!(!body["error"].as_str().unwrap().contains("Traceback"), "{body}");
    }

    #[test]
    fn rate_limited_answers_carry_retry_after() {
        let response = ApiError::RateLimited { retry_after_secs: 3 }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}

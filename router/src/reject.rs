//! The router's own answers, in one table: what it refuses before (or
//! instead of) forwarding, and the backend failures it answers for. Every
//! answer is a JSON `{error, code, status}`, as the predictor's are.
//!
//! A rejection is the caller's doing (or the router's load), never a
//! backend's: it is counted in `hone_router_rejected_total{reason}` and in
//! none of the per-backend series canary analysis reads.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Most characters of a client-sent value quoted back in an error message.
pub const QUOTE_MAX_CHARS: usize = 64;

/// A request the router refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The variant header names no backend that may be pinned (unknown, a
    /// canary, a variant without traffic, or not a valid name at all).
    VariantNotSelectable {
        /// The header's value, shortened and made printable.
        value: String,
        /// The names the header may carry.
        selectable: Vec<String>,
    },
    /// The body is (or grew) larger than the limit.
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive within the body-read timeout.
    BodyTimeout {
        /// The timeout.
        after: Duration,
    },
    /// The body could not be read (the client broke off, bad chunking).
    BadBody(String),
    /// The request target cannot be forwarded.
    BadTarget(String),
    /// Request bodies in flight already hold the router's memory budget.
    Overloaded,
    /// A path the router keeps for its admin listener.
    Reserved(String),
    /// `POST /feedback` without a feedback key in the config.
    FeedbackDisabled,
    /// A feedback body that is not a feedback document.
    BadFeedback(String),
    /// A method the router's own endpoint does not serve.
    MethodNotAllowed {
        /// The method it serves.
        allowed: &'static str,
    },
}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::VariantNotSelectable { .. }
            | Self::BadBody(_)
            | Self::BadTarget(_)
            | Self::BadFeedback(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Reserved(_) | Self::FeedbackDisabled => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The `code` of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::VariantNotSelectable { .. } => "variant_not_selectable",
            Self::BodyTooLarge { .. } => "payload_too_large",
            Self::BodyTimeout { .. } => "request_timeout",
            Self::BadBody(_) | Self::BadTarget(_) | Self::BadFeedback(_) => "bad_request",
            Self::Overloaded => "overloaded",
            Self::Reserved(_) | Self::FeedbackDisabled => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }

    /// The `reason` label of `hone_router_rejected_total` (a bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::VariantNotSelectable { .. } => "variant_not_selectable",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::BadBody(_) => "bad_body",
            Self::BadTarget(_) => "bad_target",
            Self::Overloaded => "overloaded",
            Self::Reserved(_) => "reserved_path",
            Self::FeedbackDisabled => "feedback_disabled",
            Self::BadFeedback(_) => "bad_feedback",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::VariantNotSelectable { value, selectable } => format!(
                "the variant header names no selectable variant ({value}); selectable: {}",
                if selectable.is_empty() { "none".to_owned() } else { selectable.join(", ") }
            ),
            Self::BodyTooLarge { limit } => format!("request body exceeds the limit of {limit} bytes"),
            Self::BodyTimeout { after } => {
                format!("request body not received within {} ms", after.as_millis())
            }
            Self::BadBody(e) => format!("cannot read the request body: {e}"),
            Self::BadTarget(e) => format!("cannot forward the request: {e}"),
            Self::Overloaded => "the router holds too many request bodies; retry shortly".to_owned(),
            Self::Reserved(path) => format!("{} is not served on this port", quote(path.as_bytes())),
            Self::FeedbackDisabled => "feedback is not enabled for this InferenceService".to_owned(),
            Self::BadFeedback(e) => format!("malformed feedback: {e}"),
            Self::MethodNotAllowed { allowed } => format!("this endpoint serves only {allowed}"),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = error(self.status(), self.code(), self.message());
        match self {
            Self::Overloaded => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::MethodNotAllowed { allowed } => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            _ => {}
        }
        response
    }
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, axum::Json(json!({ "error": message, "code": code, "status": status.as_u16() }))).into_response()
}

/// `bytes` as a short, printable, quoted string for an error message: never
/// the whole of a huge or binary value a client sent.
pub fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut shown: String = text.chars().take(QUOTE_MAX_CHARS).collect();
    if text.chars().nth(QUOTE_MAX_CHARS).is_some() {
        shown.push_str("...");
    }
    format!("{shown:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_is_a_4xx_with_its_own_reason() {
        let all = [
            Rejection::VariantNotSelectable { value: "\"x\"".into(), selectable: vec!["a".into()] },
            Rejection::BodyTooLarge { limit: 1 },
            Rejection::BodyTimeout { after: Duration::from_secs(1) },
            Rejection::BadBody("eof".into()),
            Rejection::BadTarget("uri".into()),
            Rejection::Overloaded,
            Rejection::Reserved("/metrics".into()),
            Rejection::FeedbackDisabled,
            Rejection::BadFeedback("not json".into()),
            Rejection::MethodNotAllowed { allowed: "POST" },
        ];
        let mut reasons: Vec<_> = all.iter().map(Rejection::reason).collect();
        for r in &all {
            assert!(r.status().is_client_error(), "{r:?}");
            assert!(!r.message().is_empty());
        }
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len(), "reasons tell rejections apart");
    }

    #[test]
    fn quotes_are_short_and_printable() {
        assert_eq!(quote(b"stable"), "\"stable\"");
        let long = quote(&[b'a'; 10_000]);
        assert!(long.len() < 80, "{long}");
        assert!(long.ends_with("...\""), "{long}");
        assert_eq!(quote(&[0xff, b'\n']), "\"\u{fffd}\\n\"");
    }
}

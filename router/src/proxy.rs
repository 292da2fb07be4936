//! Forwarding one request to the chosen variant's backend.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hone_crds::router::metrics;
use serde_json::json;

use crate::balance::ChooseError;
use crate::metrics::{VariantError, VariantLabel, VariantStatus, status_class};
use crate::server::RouterState;

/// Response header naming the variant that answered.
pub const VARIANT_RESPONSE_HEADER: &str = "x-hone-variant";

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, axum::Json(json!({ "error": message, "code": code, "status": status.as_u16() }))).into_response()
}

/// Forwards the request by weight, sticky header or variant header.
pub async fn forward(State(state): State<Arc<RouterState>>, request: Request) -> Response {
    let table = state.current();
    let (pinned, sticky) = {
        let headers = request.headers();
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        (value(&table.config.variant_header), table.config.sticky_header.as_deref().and_then(value))
    };
    let index = match table.balancer.choose(pinned.as_deref(), sticky.as_deref()) {
        Ok(i) => i,
        Err(ChooseError::UnknownVariant(name)) => {
            return error(StatusCode::BAD_REQUEST, "unknown_variant", format!("no variant named {name:?}"));
        }
    };
    let Some(backend) = table.config.variants.get(index) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "variant index out of range".into());
    };
    let variant = backend.name.clone();
    let limit = state.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        );
    }
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("{}{}", backend.url.trim_end_matches('/'), path).parse() {
        Ok(uri) => uri,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "bad_request", format!("cannot forward {path}: {e}"));
        }
    };
    parts.uri = uri;
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    parts.headers.remove(header::HOST);
    parts.version = axum::http::Version::HTTP_11;
    let body = Body::new(http_body_util::Limited::new(body, limit));
    let started = Instant::now();
    let sent =
        tokio::time::timeout(state.timeout, state.client.request(Request::from_parts(parts, body))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut response = match sent {
        Ok(Ok(response)) => response.map(Body::new),
        Ok(Err(e)) => {
            state
                .metrics
                .errors
                .get_or_create(&VariantError { variant: variant.clone(), reason: metrics::REASON_CONNECT })
                .inc();
            tracing::warn!(%variant, error = %e, "backend unreachable");
            error(
                StatusCode::BAD_GATEWAY,
                "backend_unreachable",
                format!("variant {variant:?} is unreachable: {e}"),
            )
        }
        Err(_) => {
            state
                .metrics
                .errors
                .get_or_create(&VariantError { variant: variant.clone(), reason: metrics::REASON_TIMEOUT })
                .inc();
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("variant {variant:?} did not answer within {} ms", state.timeout.as_millis()),
            )
        }
    };
    let status = response.status();
    if status.is_server_error() {
        state
            .metrics
            .errors
            .get_or_create(&VariantError { variant: variant.clone(), reason: metrics::REASON_UPSTREAM_5XX })
            .inc();
    }
    state
        .metrics
        .requests
        .get_or_create(&VariantStatus {
            variant: variant.clone(),
            status_class: status_class(status.as_u16()),
        })
        .inc();
    state.metrics.duration.get_or_create(&VariantLabel { variant: variant.clone() }).observe(elapsed);
    for name in HOP_BY_HOP {
        response.headers_mut().remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&variant) {
        response.headers_mut().insert(HeaderName::from_static(VARIANT_RESPONSE_HEADER), value);
    }
    response
}

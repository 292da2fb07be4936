//! Forwarding one request: classify its route, choose a backend, read the
//! body whole, send it, count the answer where it belongs.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hone_crds::router::metrics::{REASON_CONNECT, REASON_TIMEOUT, REASON_UPSTREAM_5XX};

use crate::balance::ChooseError;
use crate::body::{self, HeldBody};
use crate::metrics::{RejectReason, VariantError, VariantLabel, VariantStatus, status_class};
use crate::reject::{Rejection, error, quote};
use crate::routes::{self, RouteClass};
use crate::server::{RouterState, Table};

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

/// A request ready to go: its backend, its parts and its whole body.
struct Prepared {
    index: usize,
    parts: axum::http::request::Parts,
    body: HeldBody,
}

/// Forwards the request by variant header, sticky header or weight; answers
/// the router's own refusals itself.
pub async fn forward(State(state): State<Arc<RouterState>>, request: Request) -> Response {
    let table = state.current();
    let class = routes::classify(request.method(), request.uri().path());
    match prepare(&state, &table, request).await {
        Ok(prepared) => send(&state, &table, class, prepared).await,
        Err(rejection) => {
            state.metrics.rejected.get_or_create(&RejectReason { reason: rejection.reason() }).inc();
            rejection.into_response()
        }
    }
}

/// Everything that can be refused before a backend is involved.
async fn prepare(state: &RouterState, table: &Table, request: Request) -> Result<Prepared, Rejection> {
    let path = request.uri().path();
    if routes::is_reserved(path) {
        return Err(Rejection::Reserved(path.to_owned()));
    }
    let index = choose(table, request.headers())?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()))
        .map(|n| n.ok_or_else(|| Rejection::BadBody("Content-Length is not a number".into())))
        .transpose()?;
    let (mut parts, body) = request.into_parts();
    let body = body::read(body, declared, &state.body_limits, &state.budget).await?;
    let backend =
        table.config.variants.get(index).ok_or_else(|| Rejection::BadTarget("no backend".into()))?;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("{}{}", backend.url.trim_end_matches('/'), target)
        .parse()
        .map_err(|e| Rejection::BadTarget(format!("{}: {e}", quote(target.as_bytes()))))?;
    parts.uri = uri;
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    parts.headers.remove(header::HOST);
    // The body is whole now: its length is what goes out (none for a
    // request that came without a body, as a GET does).
    if declared.is_some() || !body.bytes.is_empty() {
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.bytes.len()));
    } else {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.version = axum::http::Version::HTTP_11;
    Ok(Prepared { index, parts, body })
}

/// The backend by variant header, then sticky header, then weight.
pub fn choose(table: &Table, headers: &HeaderMap) -> Result<usize, Rejection> {
    let pinned = headers.get(table.config.variant_header.as_str()).map(HeaderValue::as_bytes);
    let sticky =
        table.config.sticky_header.as_deref().and_then(|h| headers.get(h)).map(HeaderValue::as_bytes);
    table.balancer.choose(pinned, sticky).map_err(|ChooseError::NotSelectable| {
        Rejection::VariantNotSelectable {
            value: quote(pinned.unwrap_or_default()),
            selectable: table.balancer.selectable(),
        }
    })
}

/// Sends a prepared request and counts the outcome against its backend:
/// inference in the series analysis reads, anything else apart.
async fn send(state: &RouterState, table: &Table, class: RouteClass, prepared: Prepared) -> Response {
    let Prepared { index, parts, body } = prepared;
    let variant = table.config.variants.get(index).map_or_else(String::new, |b| b.name.clone());
    let started = Instant::now();
    let outgoing = Request::from_parts(parts, Body::from(body.bytes.clone()));
    let sent = tokio::time::timeout(state.timeout, state.client.request(outgoing)).await;
    let elapsed = started.elapsed().as_secs_f64();
    // The body has been handed over: its memory goes back to the budget.
    drop(body);
    let (mut response, failure) = match sent {
        Ok(Ok(response)) => {
            let upstream_5xx = response.status().is_server_error().then_some(REASON_UPSTREAM_5XX);
            (response.map(Body::new), upstream_5xx)
        }
        Ok(Err(e)) => {
            tracing::warn!(%variant, error = %e, "backend unreachable");
            let message = format!("variant {variant:?} is unreachable: {e}");
            (error(StatusCode::BAD_GATEWAY, "backend_unreachable", message), Some(REASON_CONNECT))
        }
        Err(_) => {
            let message =
                format!("variant {variant:?} did not answer within {} ms", state.timeout.as_millis());
            (error(StatusCode::GATEWAY_TIMEOUT, "timeout", message), Some(REASON_TIMEOUT))
        }
    };
    let metrics = &state.metrics;
    match class {
        RouteClass::Inference => {
            let status_class = status_class(response.status().as_u16());
            metrics.requests.get_or_create(&VariantStatus { variant: variant.clone(), status_class }).inc();
            metrics.duration.get_or_create(&VariantLabel { variant: variant.clone() }).observe(elapsed);
            if let Some(reason) = failure {
                metrics.errors.get_or_create(&VariantError { variant: variant.clone(), reason }).inc();
            }
        }
        RouteClass::Other => {
            metrics.other_requests.get_or_create(&VariantLabel { variant: variant.clone() }).inc();
        }
    }
    for name in HOP_BY_HOP {
        response.headers_mut().remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&variant) {
        response.headers_mut().insert(HeaderName::from_static(VARIANT_RESPONSE_HEADER), value);
    }
    response
}

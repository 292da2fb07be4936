//! Forwarding one request: classify its route, choose a backend, read the
//! body whole, send it (and a mirrored copy, when the backend is a mirror
//! source), count the answer where it belongs, and read a small predictor
//! answer for its predictions (and sign its request id) on the way back.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hone_crds::router::metrics::{REASON_CONNECT, REASON_TIMEOUT, REASON_UPSTREAM_5XX};
use hyper::body::Incoming;
use hyper_util::client::legacy::Error as ClientError;
use tokio::time::error::Elapsed;

use crate::balance::ChooseError;
use crate::body::{self, HeldBody};
use crate::metrics::{RejectReason, VariantError, VariantLabel, VariantStatus, status_class};
use crate::mirror::SHADOW_HEADER;
use crate::predictions::{self, ReadError, Sample};
use crate::reject::{Rejection, error, quote};
use crate::request_id::{self, unix_now};
use crate::routes::{self, AnswerShape, RouteClass};
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

/// Where a request goes: how it is counted, and how its answer is read.
#[derive(Clone, Copy, Debug)]
struct Route {
    class: RouteClass,
    shape: Option<AnswerShape>,
}

/// Forwards the request by variant header, sticky header or weight; answers
/// the router's own refusals itself.
pub async fn forward(State(state): State<Arc<RouterState>>, request: Request) -> Response {
    let table = state.current();
    let route = Route {
        class: routes::classify(request.method(), request.uri().path()),
        shape: routes::answer_shape(request.method(), request.uri().path()),
    };
    match prepare(&state, &table, request).await {
        Ok(prepared) => send(&state, &table, route, prepared).await,
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
    let declared = body::declared_length(request.headers())?;
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
    // Only the router's own copies are shadow requests: a client cannot
    // make a backend take its request for one.
    parts.headers.remove(SHADOW_HEADER);
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

/// Sends a prepared request (and its mirror, if any), counts the outcome
/// against its backend (inference in the series analysis reads, anything
/// else apart), and returns the backend's answer with the router's headers.
async fn send(state: &RouterState, table: &Table, route: Route, prepared: Prepared) -> Response {
    let Prepared { index, mut parts, body } = prepared;
    let variant = table.config.variants.get(index).map_or_else(String::new, |b| b.name.clone());
    let ticket = request_id::prepare(table.feedback_key.as_ref(), route.shape, &mut parts.headers);
    let shadow = match route.class {
        RouteClass::Inference => state.mirrors.start(table, index, route.shape, &parts, &body.bytes),
        RouteClass::Other => None,
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + state.timeout;
    let outgoing = Request::from_parts(parts, Body::from(body.bytes.clone()));
    let sent = tokio::time::timeout_at(deadline, state.client.request(outgoing)).await;
    let elapsed = started.elapsed().as_secs_f64();
    // The body has been handed over: its memory goes back to the budget.
    drop(body);
    let Answer { mut response, failure, samples } =
        receive(state, &variant, route.shape, sent, deadline).await;
    count(state, route.class, &variant, response.status(), failure, elapsed);
    if let Some(samples) = &samples {
        state.predictions.record(&variant, samples);
    }
    for name in HOP_BY_HOP {
        response.headers_mut().remove(name);
    }
    if let Ok(value) = HeaderValue::from_str(&variant) {
        response.headers_mut().insert(HeaderName::from_static(VARIANT_RESPONSE_HEADER), value);
    }
    if let (Some(ticket), Some(key)) = (ticket, &table.feedback_key)
        && response.status().is_success()
    {
        let labels = samples.as_ref().map(|s| s.iter().map(|s| s.label.clone()).collect());
        ticket.attach(key, &variant, labels, unix_now(), response.headers_mut());
    }
    if let Some(shadow) = shadow {
        shadow.send(samples);
    }
    response
}

/// A backend's answer (or the router's in its place) and what was read of it.
struct Answer {
    response: Response,
    /// Why it counts as an error, if it does.
    failure: Option<&'static str>,
    /// The predictions of a 2xx predictor answer read whole.
    samples: Option<Vec<Sample>>,
}

/// Turns what the backend did into the answer for the client; a small JSON
/// predictor answer is read whole (by `deadline`) for its predictions and
/// returned byte for byte, anything else streams through.
async fn receive(
    state: &RouterState,
    variant: &str,
    shape: Option<AnswerShape>,
    sent: Result<Result<axum::http::Response<Incoming>, ClientError>, Elapsed>,
    deadline: tokio::time::Instant,
) -> Answer {
    let failed = |response, reason| Answer { response, failure: Some(reason), samples: None };
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::warn!(%variant, error = %e, "backend unreachable");
            let message = format!("variant {variant:?} is unreachable: {e}");
            return failed(error(StatusCode::BAD_GATEWAY, "backend_unreachable", message), REASON_CONNECT);
        }
        Err(_) => return failed(timed_out(state, variant), REASON_TIMEOUT),
    };
    if response.status().is_server_error() {
        return failed(response.map(Body::new), REASON_UPSTREAM_5XX);
    }
    let Some(shape) = shape.filter(|_| predictions::worth_reading(response.status(), response.headers()))
    else {
        return Answer { response: response.map(Body::new), failure: None, samples: None };
    };
    let (parts, incoming) = response.into_parts();
    match predictions::read_whole(incoming, deadline).await {
        Ok(bytes) => {
            let samples = predictions::parse(shape, &bytes);
            Answer { response: Response::from_parts(parts, Body::from(bytes)), failure: None, samples }
        }
        Err(ReadError::Timeout) => failed(timed_out(state, variant), REASON_TIMEOUT),
        Err(ReadError::Broken(e)) => {
            tracing::warn!(%variant, error = %e, "backend broke off its answer");
            let message = format!("variant {variant:?} broke off its answer: {e}");
            failed(error(StatusCode::BAD_GATEWAY, "backend_unreachable", message), REASON_CONNECT)
        }
    }
}

/// The router's 504 for a backend that did not answer in time.
fn timed_out(state: &RouterState, variant: &str) -> Response {
    let message = format!("variant {variant:?} did not answer within {} ms", state.timeout.as_millis());
    error(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
}

/// Counts an answer of `variant`: inference in the series canary analysis
/// reads, anything else in its own.
fn count(
    state: &RouterState,
    class: RouteClass,
    variant: &str,
    status: StatusCode,
    failure: Option<&'static str>,
    elapsed: f64,
) {
    let metrics = &state.metrics;
    let label = || VariantLabel { variant: variant.to_owned() };
    match class {
        RouteClass::Inference => {
            let status_class = status_class(status.as_u16());
            metrics
                .requests
                .get_or_create(&VariantStatus { variant: variant.to_owned(), status_class })
                .inc();
            metrics.duration.get_or_create(&label()).observe(elapsed);
            if let Some(reason) = failure {
                metrics.errors.get_or_create(&VariantError { variant: variant.to_owned(), reason }).inc();
            }
        }
        RouteClass::Other => {
            metrics.other_requests.get_or_create(&label()).inc();
        }
    }
}

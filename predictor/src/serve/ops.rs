//! Operations routes and middleware: `/metrics`, `/drift`, `/docs`, request
//! metrics and the API-key check.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::openapi::ApiDoc;
use super::state::AppState;
use crate::drift::DriftReport;
use crate::error::{ApiError, ErrorBody, REQUEST_ID_HEADER};
use crate::metrics::{FeatureLabels, RequestLabels, RouteLabels, render, status_class};

/// Prometheus metrics (text format); drift gauges are refreshed on each scrape.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    refresh_drift(&state);
    let text = render(&state.registry).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

fn refresh_drift(state: &AppState) -> DriftReport {
    let report = state.drift.report();
    for f in &report.features {
        let labels = FeatureLabels { feature: f.name.clone() };
        state.metrics.drift_ks.get_or_create(&labels).set(f.ks);
        state.metrics.drift_psi.get_or_create(&labels).set(f.psi);
    }
    report
}

/// Input drift per feature: KS statistic and PSI of the recent inputs
/// against the training statistics in `model.json`.
#[utoipa::path(get, path = "/drift", tag = "ops", responses((status = 200, body = DriftReport), (status = 401, body = ErrorBody)))]
pub async fn drift(State(state): State<Arc<AppState>>) -> Json<DriftReport> {
    Json(refresh_drift(&state))
}

/// The OpenAPI document of this server.
#[utoipa::path(get, path = "/docs", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn docs() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Counts every request by route template and status class, and times it.
pub async fn record_request(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status_class = status_class(response.status().as_u16());
    state.metrics.requests.get_or_create(&RequestLabels { route: route.clone(), status_class }).inc();
    state
        .metrics
        .request_duration
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Gives every request an id (the client's `x-request-id` when plain, else a
/// fresh one): error bodies and logs carry it, and the response echoes it.
pub async fn request_id(request: Request, next: Next) -> Response {
    let id = crate::error::request_id(request.headers().get(REQUEST_ID_HEADER).map(HeaderValue::as_bytes));
    let mut response = crate::error::with_request_id(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// 401 without a known API key (when keys are configured), 429 past its rate.
pub async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(auth) = &state.auth {
        auth.check(request.headers(), super::http::peer(&request))?;
    }
    Ok(next.run(request).await)
}

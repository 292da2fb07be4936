//! Open Inference Protocol v2 handlers: health, metadata, readiness, infer.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::read_body;
use super::state::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::input::InputError;
use crate::oip::{self, HEADER_CONTENT_LENGTH, InferRequest, InferResponse, ModelMetadata, ServerMetadata};

/// Server liveness: 200 while the process can serve; 503 once its inference
/// thread has died (the process is exiting, and the kubelet restarts it).
#[utoipa::path(get, path = "/v2/health/live", tag = "v2", responses(
    (status = 200, description = "live"),
    (status = 503, description = "the inference thread died", body = ErrorBody)))]
pub async fn live(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.is_live() { Ok(Json(json!({ "live": true }))) } else { Err(ApiError::InferenceUnavailable) }
}

/// Server readiness: 200 once the model is loaded and warmed up.
#[utoipa::path(get, path = "/v2/health/ready", tag = "v2", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "loading or shutting down", body = ErrorBody)))]
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.is_ready() { Ok(Json(json!({ "ready": true }))) } else { Err(ApiError::NotReady) }
}

/// Server metadata and supported extensions.
#[utoipa::path(get, path = "/v2", tag = "v2", responses((status = 200, body = ServerMetadata)))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(oip::server_metadata())
}

/// Model metadata: input and output tensors.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "v2",
    params(("name" = String, Path, description = "model name")),
    responses((status = 200, body = ModelMetadata), (status = 404, body = ErrorBody)))]
pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    metadata(&state, &name, None)
}

/// Model metadata of one version.
pub async fn model_metadata_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, ApiError> {
    metadata(&state, &name, Some(&version))
}

fn metadata(state: &AppState, name: &str, version: Option<&str>) -> Result<Json<ModelMetadata>, ApiError> {
    state.check_model(name, version)?;
    let signature = &state.card.signature;
    Ok(Json(oip::model_metadata(&state.name, &state.version, &signature.input_shape, &state.head)))
}

/// Model readiness.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "v2",
    params(("name" = String, Path, description = "model name")),
    responses((status = 200, description = "ready"), (status = 503, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    readiness(&state, &name, None)
}

/// Readiness of one version.
pub async fn model_ready_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    readiness(&state, &name, Some(&version))
}

fn readiness(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.check_model(name, version)?;
    if !state.is_ready() {
        return Err(ApiError::NotReady);
    }
    Ok(Json(json!({ "name": state.name, "ready": true })))
}

/// Inference on JSON tensors (or Triton's binary tensor extension).
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "v2",
    params(("name" = String, Path, description = "model name")),
    request_body = InferRequest,
    responses((status = 200, body = InferResponse),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, None, &headers, body).await
}

/// Inference on one version.
pub async fn infer_versioned(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, Some(&version), &headers, body).await
}

/// An infer request, checked and decoded.
struct DecodedInfer {
    id: Option<String>,
    wanted: Vec<oip::OutputRequest>,
    values: Vec<f32>,
    batch: usize,
}

/// Parses and checks an infer body and decodes its tensor; observes drift.
/// Blocking: runs on the decode pool.
fn decode_request(
    state: &AppState,
    bytes: &[u8],
    header_length: Option<usize>,
) -> Result<DecodedInfer, ApiError> {
    let (request, mut binary) = oip::parse_request(bytes, header_length)?;
    let [input] = request.inputs.as_slice() else {
        return Err(InputError::Count {
            what: "inputs (this model takes one tensor)".into(),
            expected: 1,
            found: request.inputs.len(),
        }
        .into());
    };
    let wanted = oip::requested_outputs(&request, &state.head)?;
    let sample_shape = &state.card.signature.input_shape;
    let (values, batch) = oip::decode_input(input, &mut binary, sample_shape, state.limits.max_batch_items)?;
    let sample_len = values.len() / batch.max(1);
    for sample in values.chunks(sample_len.max(1)) {
        state.drift.observe(&state.preprocessor.drift_of_model_input(sample));
    }
    Ok(DecodedInfer { id: request.id, wanted, values, batch })
}

async fn run_infer(
    state: &Arc<AppState>,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.check_model(name, version)?;
    let arrival = state.arriving()?;
    let header_length = match headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => {
            Some(v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or_else(|| {
                ApiError::BadRequest(format!("{HEADER_CONTENT_LENGTH} must be a byte count"))
            })?)
        }
    };
    if header_length.is_none() {
        check_json_media(headers)?;
    }
    let body = read_body(headers, body, state.limits.body, &state.body_budget).await?;
    let worker = state.clone();
    let decoded = state.decode.run(move || decode_request(&worker, &body.bytes, header_length)).await?;
    let DecodedInfer { id, wanted, values, batch } = decoded;
    let outputs = state.infer(values, batch, arrival).await?;
    state.predictions(&outputs);
    let head = InferResponse {
        model_name: state.name.clone(),
        model_version: state.version.clone(),
        id,
        outputs: vec![],
    };
    let (json, binary) =
        oip::build_response(head, &wanted, &outputs, &state.head, &state.card.signature.classes)
            .map_err(|e| ApiError::Internal(format!("encoding the response: {e}")))?;
    if binary.is_empty() {
        return Ok(
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
        );
    }
    let json_length = json.len();
    let mut body = json;
    body.extend_from_slice(&binary);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(json_length));
    Ok(response)
}

/// OIP bodies are JSON; a missing Content-Type is taken as JSON (curl, stock clients).
fn check_json_media(headers: &HeaderMap) -> Result<(), ApiError> {
    use super::body::{Media, media};
    match media(headers) {
        Media::Json | Media::Missing => Ok(()),
        // Triton's client sends binary requests as octet-stream with the header length set.
        Media::Image | Media::Multipart(_) | Media::Other(_) => Err(ApiError::UnsupportedMediaType {
            found: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            accepted: "application/json (or binary tensors with Inference-Header-Content-Length)",
        }),
    }
}

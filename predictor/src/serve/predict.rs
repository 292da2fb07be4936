//! `/predict` and `/predict/batch`: raw images (PNG, JPEG; raw body or
//! multipart) or JSON feature rows in, labels out.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use hone_crds::contract::InputKind;
use hone_crds::modelversion::Task;
use serde::Serialize;
use serde_json::Value;

use super::body::{Media, media, multipart_files, read_body};
use super::state::{AppState, Prediction};
use crate::error::{ApiError, ErrorBody};
use crate::input::InputError;
use crate::preprocess::Sample;

/// How many classes `/predict` lists under `top`.
const TOP_K: usize = 5;

/// A class and its probability.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassScore {
    /// Class name.
    pub label: String,
    /// Class index in the model's output.
    pub class_index: usize,
    /// Probability.
    pub confidence: f32,
}

/// The answer for one input. Classifiers (`classification`, `binary`,
/// `multilabel`) answer `label`, `classIndex`, `confidence` and `top`;
/// `binary` adds `probability`, `multilabel` adds `labels`; `regression`
/// answers `values` (and `outputs`, when the outputs are named) instead.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictResponse {
    /// The answered class name (multilabel: the most probable class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Its index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_index: Option<usize>,
    /// Its probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// The most probable classes, best first (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<ClassScore>,
    /// Binary: the probability of the positive class (`classes[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f32>,
    /// Multilabel: every class at or above the threshold, in class order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Regression: the outputs, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f32>>,
    /// Regression with named outputs: each output by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<serde_json::Map<String, Value>>,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
}

/// The answer for a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    /// One answer per input, in order.
    pub predictions: Vec<PredictResponse>,
}

/// Classifies one image (PNG/JPEG raw body or multipart file) or one JSON feature row.
#[utoipa::path(post, path = "/predict", tag = "predict",
    request_body(description = "image/png, image/jpeg, application/octet-stream, multipart/form-data with a file, \
        or application/json with a feature row ([..] or {\"features\": ..} or {name: value})"),
    responses((status = 200, body = PredictResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn predict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PredictResponse>, ApiError> {
    let arrival = state.arriving()?;
    let samples = read_samples(&state, &headers, body, false).await?;
    let mut answers = run(&state, samples, arrival).await?;
    answers.pop().map(Json).ok_or_else(|| ApiError::Internal("no output".into()))
}

/// Classifies several images (multipart files) or rows (`{"instances": [..]}` or `[..]`).
#[utoipa::path(post, path = "/predict/batch", tag = "predict",
    request_body(description = "multipart/form-data with one file per image, or application/json \
        {\"instances\": [row, ...]} for tabular models"),
    responses((status = 200, body = BatchResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn predict_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    let arrival = state.arriving()?;
    let samples = read_samples(&state, &headers, body, true).await?;
    Ok(Json(BatchResponse { predictions: run(&state, samples, arrival).await? }))
}

async fn run(
    state: &AppState,
    samples: Vec<Sample>,
    arrival: crate::batcher::ArrivalGuard,
) -> Result<Vec<PredictResponse>, ApiError> {
    let count = samples.len();
    let mut input = Vec::with_capacity(count * state.preprocessor.sample_len());
    for sample in &samples {
        state.drift.observe(&sample.drift);
        input.extend_from_slice(&sample.values);
    }
    let outputs = state.infer(input, count, arrival).await?;
    Ok(state.predictions(&outputs).into_iter().map(|p| answer(state, p)).collect())
}

fn answer(state: &AppState, prediction: Prediction) -> PredictResponse {
    let Prediction { decision, scores } = prediction;
    let mut response = PredictResponse {
        label: None,
        class_index: None,
        confidence: None,
        top: Vec::new(),
        probability: None,
        labels: None,
        values: None,
        outputs: None,
        model: state.name.clone(),
        version: state.version.clone(),
    };
    let Some(decision) = decision else {
        let names = &state.card.signature.classes;
        if !names.is_empty() {
            let outputs = names.iter().zip(&scores).map(|(n, &v)| (n.clone(), Value::from(v))).collect();
            response.outputs = Some(outputs);
        }
        response.values = Some(scores);
        return response;
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    response.top = order
        .into_iter()
        .take(TOP_K)
        .map(|i| ClassScore { label: state.label(i).to_owned(), class_index: i, confidence: scores[i] })
        .collect();
    match state.head.task() {
        Task::Binary => response.probability = scores.get(1).copied(),
        Task::Multilabel => {
            response.labels = Some(decision.positives.iter().map(|&i| state.label(i).to_owned()).collect());
        }
        Task::Classification | Task::Regression => {}
    }
    response.label = Some(state.label(decision.class_index).to_owned());
    response.class_index = Some(decision.class_index);
    response.confidence = Some(decision.confidence);
    response
}

/// Reads the body and decodes it into samples on the decode pool; `batch`
/// allows (and limits) several.
async fn read_samples(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    batch: bool,
) -> Result<Vec<Sample>, ApiError> {
    let kind = state.preprocessor.kind();
    let media = media(headers);
    let accepted = match kind {
        InputKind::Image => "image/png, image/jpeg, application/octet-stream or multipart/form-data",
        InputKind::Tabular => "application/json",
    };
    let unsupported = || ApiError::UnsupportedMediaType {
        found: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
        accepted,
    };
    // Refuse a wrong media type before reading a possibly large body.
    match (&media, kind) {
        (Media::Json | Media::Missing, InputKind::Tabular) => {}
        (Media::Image | Media::Multipart(_) | Media::Missing, InputKind::Image) => {}
        _ => return Err(unsupported()),
    }
    let limits = match kind {
        InputKind::Image => state.limits.body,
        InputKind::Tabular => state.limits.json_body,
    };
    let body = read_body(headers, body, limits, &state.body_budget).await?;
    let max_items = if batch { state.limits.max_batch_items } else { 1 };
    let worker = state.clone();
    state.decode.run(move || decode_samples(&worker, body.bytes, media, batch, max_items)).await
}

/// Decodes a whole body (blocking: runs on the decode pool).
fn decode_samples(
    state: &AppState,
    bytes: Bytes,
    media: Media,
    batch: bool,
    max_items: usize,
) -> Result<Vec<Sample>, ApiError> {
    let pre = &state.preprocessor;
    match (media, pre.kind()) {
        (Media::Multipart(boundary), InputKind::Image) => {
            let files = multipart_files(bytes, boundary, max_items.max(1) * 2)?;
            check_count(files.len(), max_items, batch)?;
            decode_images(pre, &files)
        }
        (_, InputKind::Image) => decode_images(pre, &[bytes]),
        (_, InputKind::Tabular) => {
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| InputError::Json(e.to_string()))?;
            let rows: Vec<&Value> = if batch {
                match &value {
                    Value::Object(map) if map.contains_key("instances") => match &map["instances"] {
                        Value::Array(rows) => rows.iter().collect(),
                        _ => return Err(InputError::Json("instances must be an array of rows".into()).into()),
                    },
                    Value::Array(rows) => rows.iter().collect(),
                    _ => {
                        return Err(InputError::Json(
                            "send {\"instances\": [row, ...]} or [row, ...]".into(),
                        )
                        .into());
                    }
                }
            } else {
                vec![&value]
            };
            check_count(rows.len(), max_items, batch)?;
            rows.into_iter()
                .enumerate()
                .map(|(i, row)| pre.row(row).map_err(|e| item_error(e, i, batch)))
                .collect()
        }
    }
}

fn decode_images(pre: &crate::preprocess::Preprocessor, files: &[Bytes]) -> Result<Vec<Sample>, ApiError> {
    let batch = files.len() > 1;
    files.iter().enumerate().map(|(i, f)| pre.image(f).map_err(|e| item_error(e, i, batch))).collect()
}

fn check_count(found: usize, limit: usize, batch: bool) -> Result<(), ApiError> {
    if found == 0 {
        return Err(InputError::Json("no inputs".into()).into());
    }
    if found > limit {
        let what = if batch { "inputs per batch call" } else { "inputs (use /predict/batch for several)" };
        return Err(InputError::TooMany { what, found, limit }.into());
    }
    Ok(())
}

/// In a batch, the error names the item; syntax errors stay 400, the rest 422.
fn item_error(error: InputError, index: usize, batch: bool) -> ApiError {
    if !batch {
        return error.into();
    }
    let message = format!("item {index}: {error}");
    match error {
        InputError::Json(_) => InputError::Json(message),
        InputError::Multipart(_) => InputError::Multipart(message),
        InputError::UndecodableImage(_) => InputError::UndecodableImage(message),
        InputError::NonFinite => InputError::NonFinite,
        InputError::Feature(_) => InputError::Feature(message),
        other => other,
    }
    .into()
}

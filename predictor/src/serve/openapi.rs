//! The OpenAPI document served at `/docs`.

use utoipa::OpenApi;

use super::{ops, predict, ui, v2};

/// Every documented route and schema.
#[derive(OpenApi)]
#[openapi(
    info(title = "hone-predictor", description = "Open Inference Protocol v2 and /predict for one TorchScript model. \
        Errors are JSON {error, code, status}: 400 malformed, 401 API key, 404 unknown model or route, \
        413 body too large, 415 media type, 422 unusable input, 429 queue full or rate limited (Retry-After), \
        503 not ready, 504 inference timeout, 500 bugs."),
    paths(
        v2::live, v2::ready, v2::server_metadata, v2::model_metadata, v2::model_ready, v2::infer,
        predict::predict, predict::predict_batch,
        ops::metrics, ops::drift, ops::docs, ui::model,
    ),
    components(schemas(
        crate::error::ErrorBody,
        crate::oip::InferRequest, crate::oip::RequestInput, crate::oip::RequestOutput,
        crate::oip::InferResponse, crate::oip::ResponseOutput, crate::oip::ModelMetadata,
        crate::oip::TensorMetadata, crate::oip::ServerMetadata,
        predict::PredictResponse, predict::BatchResponse, predict::ClassScore,
        crate::drift::DriftReport, crate::drift::FeatureDrift, ui::UiModel,
    )),
    tags((name = "v2", description = "Open Inference Protocol v2"), (name = "predict", description = "Labels for raw inputs"),
        (name = "ops", description = "Metrics, drift and this document")),
)]
pub struct ApiDoc;

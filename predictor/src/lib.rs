//! Hone's predictor: serves a TorchScript ModelVersion over Open Inference
//! Protocol v2 and `/predict`, verifies ModelVersions, and routes traffic
//! between InferenceService variants.

pub mod batcher;
pub mod config;
pub mod drift;
pub mod error;
pub mod fetch;
pub mod input;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod preprocess;
pub mod router;
pub mod serve;
pub mod verify;

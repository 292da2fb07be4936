//! Hone's predictor: serves a TorchScript ModelVersion over Open Inference
//! Protocol v2 and `/predict`, and verifies ModelVersions. Traffic between
//! InferenceService variants is split by `hone-router`, a crate of its own.

pub mod batcher;
pub mod config;
pub mod drift;
pub mod error;
pub mod eval_split;
pub mod evaluation;
pub mod fetch;
pub mod fuzzing;
pub mod head;
pub mod input;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod onnx;
pub mod preprocess;
pub mod runtime;
pub mod serve;
pub mod signature;
pub mod verify;

//! Hone's operator: the controllers (one module tree per kind), the operator
//! configuration, metrics, the HTTP surface and the shared child-object helpers.

pub mod api_calls;
pub mod backoff;
pub mod cache;
pub mod caches;
pub mod children;
pub mod config;
pub mod context;
pub mod controllers;
pub mod dataset;
pub mod duration;
pub mod inferenceservice;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod mlflow;
pub mod modelversion;
pub mod placement;
pub mod server;
pub mod status_patch;
pub mod telemetry;
pub mod termination;
pub mod trainingjob;

#[cfg(test)]
pub(crate) mod testutil;

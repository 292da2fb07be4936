//! Hone's API: the four custom resources (group `hone.dev`, version `v1alpha1`),
//! the condition helpers every controller shares, and the constants (labels,
//! annotations, finalizers, field manager) that keep names in one place.
//!
//! This crate holds no client code so that every other crate may depend on it.

// kube's `printcolumn(...)` lists repeat `type_ = "string"`, which clippy
// mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod conditions;
pub mod consts;
pub mod contract;
pub mod dataset;
pub mod inferenceservice;
pub mod modelversion;
pub mod predictor;
pub mod router;
mod schema;
pub mod trainingjob;

pub use common::{LocalObjectRef, SecretRef, StorageLocation};
pub use dataset::{Dataset, DatasetSpec, DatasetStatus};
pub use inferenceservice::{InferenceService, InferenceServiceSpec, InferenceServiceStatus};
pub use modelversion::{ModelVersion, ModelVersionSpec, ModelVersionStatus};
pub use trainingjob::{TrainingJob, TrainingJobSpec, TrainingJobStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD Hone defines, in a stable order (the order `crdgen` prints them).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![Dataset::crd(), TrainingJob::crd(), ModelVersion::crd(), InferenceService::crd()]
}

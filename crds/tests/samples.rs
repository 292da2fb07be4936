//! Every sample in config/samples parses into the Rust types, and survives a
//! serialize/parse round trip unchanged.

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn sample(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/samples").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Parses, serializes, parses again; both parses must be equal.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(file: &str) -> T {
    let first: T = serde_yaml::from_str(&sample(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let yaml = serde_yaml::to_string(&first).unwrap();
    let second: T = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(first, second, "{file} changed in a round trip");
    first
}

#[test]
fn dataset_sample_round_trips() {
    let ds: Dataset = round_trip("dataset.yaml");
    assert_eq!(ds.metadata.name.as_deref(), Some("digits"));
    assert_eq!(ds.spec.image.as_ref().map(|i| (i.width, i.height, i.channels)), Some((32, 32, 1)));
    assert!(ds.spec.source.uri.starts_with("s3://"));
}

#[test]
fn trainingjob_sample_round_trips() {
    let tj: TrainingJob = round_trip("trainingjob.yaml");
    assert_eq!(tj.spec.dataset_ref.name, "digits");
    assert_eq!(tj.spec.model.architecture.as_str(), "simple-cnn");
    assert_eq!(tj.spec.hyperparameters.epochs, 15);
    assert_eq!(tj.spec.workers, 1, "workers defaults to 1");
    assert_eq!(tj.spec.register_as.model, "digits-classifier");
}

#[test]
fn modelversion_sample_round_trips() {
    let mv: ModelVersion = round_trip("modelversion-imported.yaml");
    assert_eq!(mv.spec.version, 1);
    assert_eq!(mv.spec.signature.input_shape, vec![1, 32, 32]);
    assert_eq!(mv.spec.signature.classes.len(), 10);
}

#[test]
fn inferenceservice_sample_round_trips() {
    let isvc: InferenceService = round_trip("inferenceservice.yaml");
    let weights: i32 = isvc.spec.variants.iter().map(|v| v.weight).sum();
    assert_eq!(weights, 100);
    let autoscaling = isvc.spec.autoscaling.as_ref().unwrap();
    assert_eq!(autoscaling.target_cpu_utilization_percentage, 70);
    assert!(isvc.spec.variants[0].track.is_some(), "the demo's variant follows new versions");
    assert!(isvc.spec.rollout.is_some(), "new versions roll out as a canary");
}

#[test]
fn defaults_fill_a_minimal_trainingjob() {
    let tj: TrainingJob = serde_yaml::from_str(
        "apiVersion: hone.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: t}\n\
         spec: {datasetRef: {name: d}, model: {architecture: mlp}, registerAs: {model: m}}\n",
    )
    .unwrap();
    let hp = &tj.spec.hyperparameters;
    assert_eq!((hp.epochs, hp.batch_size, hp.seed), (10, 32, 42));
    assert_eq!(hp.learning_rate, 0.001);
}

#[test]
fn unknown_enum_values_are_rejected() {
    let err = serde_yaml::from_str::<TrainingJob>(
        "apiVersion: hone.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: t}\n\
         spec: {datasetRef: {name: d}, model: {architecture: vgg16}, registerAs: {model: m}}\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("vgg16"), "{err}");
}

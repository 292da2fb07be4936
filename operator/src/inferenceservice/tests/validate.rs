//! Validation and ModelVersion resolution.

use super::*;
use crate::inferenceservice::validate::{Error, Source};

const ONE: &str = "variants: [{name: a, modelVersion: digits-v1, weight: 100}]";

fn message(yaml: &str) -> String {
    match validate(&isvc(yaml), &three_versions(), "img", "router-img", false) {
        Err(Error::InvalidSpec(message)) => message,
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

#[test]
fn defaults_are_filled_in_and_the_target_resolved() {
    let valid = valid(ONE, &three_versions());
    assert_eq!(valid.image, "hone.local/predictor:dev");
    assert_eq!(valid.autoscaling.min_replicas, 1);
    assert_eq!(valid.autoscaling.max_replicas, 3);
    assert_eq!(valid.routing.variant_header, "x-hone-variant");
    assert_eq!(valid.steps, vec![10, 50]);
    assert_eq!(valid.step_interval, std::time::Duration::from_secs(60));
    assert_eq!(valid.analysis.min_requests, 20);
    assert_eq!(valid.progress_deadline, std::time::Duration::from_secs(600), "a Deployment's default");
    assert_eq!(valid.generation, 2);
    let target = valid.variants[0].target.clone().unwrap();
    assert_eq!((target.name.as_str(), target.version), ("digits-v1", 1));
    assert_eq!(target.uri, "s3://models/digits-v1/model.pt");
    assert_eq!(target.digest, Some(format!("sha256:{}", "a".repeat(64))), "the verified digest pins it");
    assert_eq!(target.secret.as_deref(), Some("s3"));
    assert_eq!(valid.variants[0].source, Source::ModelVersion("digits-v1".into()));
    assert_eq!(valid.models.len(), 3);
}

#[test]
fn a_missing_or_unready_model_version_waits_instead_of_failing() {
    let missing = valid("variants: [{name: a, modelVersion: digits-v9, weight: 100}]", &three_versions());
    assert_eq!(missing.variants[0].target, Err("ModelVersion digits-v9 does not exist".to_owned()));
    let verifying = vec![model_version("digits-v1", "digits", 1, false, &[])];
    let unready = valid(ONE, &verifying);
    assert_eq!(unready.variants[0].target, Err("ModelVersion digits-v1 is not Ready (Verifying)".to_owned()));
}

#[test]
fn track_variants_resolve_through_the_gates() {
    let mut mvs = three_versions();
    mvs.push(model_version("digits-v4", "digits", 4, true, &[("val_accuracy", 0.5)]));
    let yaml = "variants: [{name: a, track: {model: digits, minMetrics: {val_accuracy: 0.92}}, weight: 100}]";
    let valid = valid(yaml, &mvs);
    assert_eq!(valid.variants[0].target.as_ref().unwrap().name, "digits-v3");
    assert_eq!(valid.variants[0].gate_failures.len(), 1);
    assert_eq!(valid.variants[0].gate_failures[0].model_version, "digits-v4");
    let strict =
        "variants: [{name: a, track: {model: digits, minMetrics: {val_accuracy: 0.99}}, weight: 100}]";
    let waiting = super::valid(strict, &mvs).variants[0].target.clone().unwrap_err();
    assert!(waiting.contains("passes the minMetrics gates") && waiting.contains("digits-v4"), "{waiting}");
}

#[test]
fn what_cel_cannot_check_is_an_invalid_spec() {
    let env = format!("{ONE}\npredictor: {{env: [{{name: HONE_MODEL_URI, value: x}}]}}");
    assert!(message(&env).contains("HONE_MODEL_URI"));
    let twice = format!("{ONE}\npredictor: {{env: [{{name: A, value: x}}, {{name: A, value: y}}]}}");
    assert!(message(&twice).contains("twice"));
    let reserved = "variants: [{name: a, modelVersion: digits-v1, weight: 50}, {name: a-v2, modelVersion: digits-v2, weight: 50}]";
    assert!(message(reserved).contains("reserved"));
    let interval = format!("{ONE}\nrollout: {{stepInterval: soon}}");
    assert!(message(&interval).contains("stepInterval"));
    let gateway = format!("{ONE}\ntraffic: {{provider: GatewayAPI}}");
    assert!(message(&gateway).contains("parentRefs"));
    let sticky = format!(
        "{ONE}\ntraffic: {{provider: GatewayAPI, gateway: {{parentRefs: [{{name: gw}}]}}}}\nrouting: {{stickyHeader: x-user}}"
    );
    let refused = message(&sticky);
    assert!(refused.contains("stickyHeader") && refused.contains("Router"), "{refused}");
    let both = "variants: [{name: a, modelVersion: digits-v1, track: {model: digits}, weight: 100}]";
    assert!(message(both).contains("exactly one"));
}

#[test]
fn names_and_annotations_are_checked() {
    let mut dotted = isvc(ONE);
    dotted.metadata.name = Some("my.service".into());
    assert!(
        matches!(validate(&dotted, &[], "i", "r", false), Err(Error::InvalidSpec(m)) if m.contains("DNS-1035"))
    );
    let mut annotated = isvc(ONE);
    annotated.metadata.annotations =
        Some([("hone.dev/router-metrics-url".to_owned(), "ftp://x".to_owned())].into_iter().collect());
    assert!(
        matches!(validate(&annotated, &[], "i", "r", true), Err(Error::InvalidSpec(m)) if m.contains("http://"))
    );
    // Without the operator flag the annotation is refused whatever its URL:
    // an object's author must not choose what the operator fetches.
    annotated.metadata.annotations = Some(
        [("hone.dev/router-metrics-url".to_owned(), "http://10.0.0.1/".to_owned())].into_iter().collect(),
    );
    assert!(matches!(
        validate(&annotated, &[], "i", "r", false),
        Err(Error::InvalidSpec(m)) if m.contains("--allow-router-metrics-url")
    ));
    assert!(validate(&annotated, &[], "i", "r", true).is_ok());
    let mut no_uid = isvc(ONE);
    no_uid.metadata.uid = None;
    assert_eq!(validate(&no_uid, &[], "i", "r", false), Err(Error::MissingMetadata("uid")));
}

#[test]
fn file_and_pvc_artifacts() {
    let mut pvc = model_version("digits-v1", "digits", 1, true, &[]);
    pvc.spec.artifact.uri = "pvc://models/digits/model.pt".into();
    let valid = valid(ONE, &[pvc.clone()]);
    assert_eq!(valid.variants[0].target.as_ref().unwrap().pvc_claim.as_deref(), Some("models"));
    pvc.spec.artifact.uri = "file:///models/model.pt".into();
    let local = super::valid(ONE, &[pvc]);
    assert!(local.variants[0].target.clone().unwrap_err().contains("file://"));
}

#[test]
fn the_progress_deadline_is_a_duration_within_bounds() {
    let with = |deadline: &str| format!("{ONE}\nrollout: {{progressDeadline: {deadline}}}");
    assert_eq!(valid(&with("90s"), &three_versions()).progress_deadline, std::time::Duration::from_secs(90));
    assert_eq!(
        valid(&with("24h"), &three_versions()).progress_deadline,
        std::time::Duration::from_secs(86_400)
    );
    let short = message(&with("5s"));
    assert!(short.contains("spec.rollout.progressDeadline \"5s\" is out of range"), "{short}");
    assert!(short.contains("between 10s and 24h (default 10m)"), "{short}");
    assert!(message(&with("25h")).contains("out of range"));
    let garbled = message(&with("ten"));
    assert!(garbled.contains("is not a duration; write e.g. 10m"), "{garbled}");
}

//! The CRDs on a real apiserver: they install with server-side apply, become
//! Established, accept the samples, and their CEL rules reject bad objects
//! with the rule's message.

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_cluster_tests::{TestNamespace, client, install_crds};
use hone_crds::{
    InferenceService, ModelVersion, TrainingJob, inferenceservice as isvc, modelversion as mv,
    trainingjob as tj,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn sample<T: DeserializeOwned>(file: &str) -> T {
    let path = format!("{}/../config/samples/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The apiserver's message for a rejected request.
fn rejection(err: kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        other => panic!("expected an API rejection, got {other}"),
    }
}

async fn setup(prefix: &str) -> (Client, TestNamespace) {
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, prefix, &[]).await.unwrap();
    (client, ns)
}

fn isvc_with(variants: Value) -> Value {
    json!({
        "apiVersion": "hone.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": format!("bad-{}", hone_cluster_tests::unique_suffix())},
        "spec": {"variants": variants},
    })
}

async fn create_isvc(api: &Api<InferenceService>, body: Value) -> Result<InferenceService, kube::Error> {
    let obj: InferenceService = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &obj).await
}

#[tokio::test]
async fn crds_establish_and_samples_are_accepted() {
    let (client, ns) = setup("crds-samples").await;
    let pp = PostParams::default();
    let ds: hone_crds::Dataset = sample("dataset.yaml");
    Api::<hone_crds::Dataset>::namespaced(client.clone(), &ns.name).create(&pp, &ds).await.unwrap();
    let tj: TrainingJob = sample("trainingjob.yaml");
    let created = Api::<TrainingJob>::namespaced(client.clone(), &ns.name).create(&pp, &tj).await.unwrap();
    // Defaults the schema declares are applied by the apiserver.
    assert_eq!(created.spec.workers, 1);
    let mv: ModelVersion = sample("modelversion-imported.yaml");
    Api::<ModelVersion>::namespaced(client.clone(), &ns.name).create(&pp, &mv).await.unwrap();
    let isvc: InferenceService = sample("inferenceservice.yaml");
    Api::<InferenceService>::namespaced(client.clone(), &ns.name).create(&pp, &isvc).await.unwrap();
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn weights_must_sum_to_100() {
    let (client, ns) = setup("crds-weights").await;
    let api = Api::<InferenceService>::namespaced(client, &ns.name);
    let body = isvc_with(json!([
        {"name": "a", "modelVersion": "m-v1", "weight": 90},
        {"name": "b", "modelVersion": "m-v2", "weight": 9},
    ]));
    let message = rejection(create_isvc(&api, body).await.unwrap_err());
    assert!(message.contains(isvc::WEIGHTS_MESSAGE), "{message}");
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn variant_names_must_be_unique() {
    let (client, ns) = setup("crds-unique").await;
    let api = Api::<InferenceService>::namespaced(client, &ns.name);
    let body = isvc_with(json!([
        {"name": "a", "modelVersion": "m-v1", "weight": 50},
        {"name": "a", "modelVersion": "m-v2", "weight": 50},
    ]));
    let message = rejection(create_isvc(&api, body).await.unwrap_err());
    assert!(message.contains(isvc::UNIQUE_NAMES_MESSAGE), "{message}");
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn at_most_five_variants() {
    let (client, ns) = setup("crds-six").await;
    let api = Api::<InferenceService>::namespaced(client, &ns.name);
    let six: Vec<Value> = (0..6)
        .map(|i| json!({"name": format!("v{i}"), "modelVersion": format!("m-v{i}"), "weight": if i == 0 { 50 } else { 10 }}))
        .collect();
    let message = rejection(create_isvc(&api, isvc_with(Value::Array(six))).await.unwrap_err());
    assert!(
        message.contains("must have at most 5 items") || message.contains(isvc::VARIANT_COUNT_MESSAGE),
        "{message}"
    );
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn variant_needs_exactly_one_source() {
    let (client, ns) = setup("crds-source").await;
    let api = Api::<InferenceService>::namespaced(client, &ns.name);
    let body = isvc_with(json!([
        {"name": "a", "modelVersion": "m-v1", "track": {"model": "m"}, "weight": 100},
    ]));
    let message = rejection(create_isvc(&api, body).await.unwrap_err());
    assert!(message.contains(isvc::ONE_SOURCE_MESSAGE), "{message}");
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn trainingjob_training_fields_are_immutable_but_suspend_toggles() {
    let (client, ns) = setup("crds-tj").await;
    let api = Api::<TrainingJob>::namespaced(client, &ns.name);
    let tj: TrainingJob = sample("trainingjob.yaml");
    api.create(&PostParams::default(), &tj).await.unwrap();
    let name = "digits-cnn-1";
    let pp = PatchParams::default();

    let epochs = json!({"spec": {"hyperparameters": {"epochs": 99}}});
    let message = rejection(api.patch(name, &pp, &Patch::Merge(&epochs)).await.unwrap_err());
    assert!(message.contains(tj::IMMUTABLE_SPEC_MESSAGE), "{message}");

    let image = json!({"spec": {"image": "example.com/other:1"}});
    let message = rejection(api.patch(name, &pp, &Patch::Merge(&image)).await.unwrap_err());
    assert!(message.contains(tj::IMMUTABLE_SPEC_MESSAGE), "{message}");

    let backoff = json!({"spec": {"runPolicy": {"backoffLimit": 9}}});
    let message = rejection(api.patch(name, &pp, &Patch::Merge(&backoff)).await.unwrap_err());
    assert!(message.contains("runPolicy limits are immutable"), "{message}");

    let suspend = json!({"spec": {"runPolicy": {"suspend": true}}});
    let patched = api.patch(name, &pp, &Patch::Merge(&suspend)).await.unwrap();
    assert_eq!(patched.spec.run_policy.and_then(|r| r.suspend), Some(true));
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn modelversion_spec_is_immutable() {
    let (client, ns) = setup("crds-mv").await;
    let api = Api::<ModelVersion>::namespaced(client, &ns.name);
    let mv: ModelVersion = sample("modelversion-imported.yaml");
    api.create(&PostParams::default(), &mv).await.unwrap();
    let pp = PatchParams::default();
    let change = json!({"spec": {"artifact": {"uri": "s3://elsewhere/model.pt"}}});
    let message = rejection(api.patch("digits-imported-v1", &pp, &Patch::Merge(&change)).await.unwrap_err());
    assert!(message.contains(mv::IMMUTABLE_SPEC_MESSAGE), "{message}");
    // Labels live in metadata and may change.
    let labels = json!({"metadata": {"labels": {"stage": "production"}}});
    api.patch("digits-imported-v1", &pp, &Patch::Merge(&labels)).await.unwrap();
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn modelversion_signature_rules_hold_each_task_to_its_outputs() {
    let (client, ns) = setup("crds-heads").await;
    let api = Api::<ModelVersion>::namespaced(client, &ns.name);
    let with_signature = |name: &str, signature: Value| -> ModelVersion {
        let mut mv: Value =
            serde_json::to_value(sample::<ModelVersion>("modelversion-imported.yaml")).unwrap();
        mv["metadata"] = json!({"name": name});
        mv["spec"]["signature"] = signature;
        serde_json::from_value(mv).unwrap()
    };
    let pp = PostParams::default();
    // Accepted: a binary model with its threshold, and a regression model with no class names.
    let binary =
        json!({"inputShape": [30], "task": "binary", "classes": ["benign", "malignant"], "threshold": 0.3});
    api.create(&pp, &with_signature("binary-v1", binary)).await.unwrap();
    let regression = json!({"inputShape": [8], "task": "regression"});
    let created = api.create(&pp, &with_signature("regression-v1", regression)).await.unwrap();
    assert!(created.spec.signature.classes.is_empty());
    // Refused, each with its rule's message.
    for (signature, message) in [
        (
            json!({"inputShape": [4], "task": "binary", "classes": ["a", "b", "c"]}),
            mv::BINARY_CLASSES_MESSAGE,
        ),
        (json!({"inputShape": [4]}), mv::CLASSES_NEEDED_MESSAGE),
        (json!({"inputShape": [4], "classes": ["a", "b"], "threshold": 0.5}), mv::THRESHOLD_MESSAGE),
        (
            json!({"inputShape": [4], "task": "multilabel", "classes": ["a"], "threshold": 1.0}),
            mv::THRESHOLD_MESSAGE,
        ),
        (json!({"inputShape": [4], "task": "regression", "output": "probabilities"}), mv::OUTPUT_MESSAGE),
    ] {
        let err = api.create(&pp, &with_signature("bad-v1", signature.clone())).await.unwrap_err();
        let found = rejection(err);
        assert!(found.contains(message), "{signature}: {found}");
    }
    ns.cleanup().await.unwrap();
}

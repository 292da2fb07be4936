//! Mock-API tests of a whole Dataset reconcile (tower-test): which requests it
//! makes, in which order, with which bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::tests::dataset;
use crate::config::OperatorConfig;
use crate::context::Context;
use crate::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (Arc::new(Context::new(client, OperatorConfig::default(), Arc::new(Metrics::new()), None)), handle)
}

/// Answers the next request with `reply` after checking its method and path; returns its body.
async fn expect(handle: &mut Handle, method: Method, path: &str, reply: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect_bytes().await.unwrap();
    send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
    if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() }
}

fn owned_job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "ml", "uid": "job-uid",
            "labels": {"hone.dev/dataset": "digits"},
            "ownerReferences": [{"apiVersion": "hone.dev/v1alpha1", "kind": "Dataset", "name": "digits",
                "uid": "uid-1", "controller": true}]},
        "spec": {"template": {}}
    })
}

#[tokio::test]
async fn invalid_spec_prunes_the_job_reports_and_waits() {
    let (ctx, mut handle) = context();
    // The watch has cached an inspect Job of an earlier spec.
    let job = serde_json::from_value(owned_job("old")).unwrap();
    let ctx = Arc::new(ctx.with_caches(crate::caches::Caches::empty().with_dataset_batch(vec![job], vec![])));
    let ds = Arc::new(dataset("source: {uri: 'file:///data'}"));
    let reconcile = tokio::spawn(super::reconcile(ds, ctx.clone()));

    // No read: the first request is the prune.
    expect(&mut handle, Method::DELETE, "/apis/batch/v1/namespaces/ml/jobs/old", owned_job("old")).await;
    let patch = expect(
        &mut handle,
        Method::PATCH,
        "/apis/hone.dev/v1alpha1/namespaces/ml/datasets/digits/status",
        serde_json::to_value(dataset("source: {uri: 'file:///data'}")).unwrap(),
    )
    .await;
    assert_eq!(patch["status"]["phase"], "Failed");
    assert_eq!(patch["status"]["conditions"][0]["reason"], "InvalidSpec");
    assert!(patch["status"]["conditions"][0]["message"].as_str().unwrap().contains("pvc://"));
    let event =
        expect(&mut handle, Method::POST, "/apis/events.k8s.io/v1/namespaces/ml/events", json!({})).await;
    assert_eq!(event["reason"], "InvalidSpec");
    assert_eq!(event["type"], "Warning");

    let action = reconcile.await.unwrap().unwrap();
    assert_eq!(action, Action::await_change(), "an invalid spec waits for a change, no requeue");
    let metrics = ctx.metrics.encode().unwrap();
    assert!(metrics.contains(r#"hone_operator_reconciles_total{controller="dataset",result="success"} 1"#));
}

#[tokio::test]
async fn valid_spec_applies_the_inspect_job_server_side() {
    let (ctx, mut handle) = context();
    let ds = Arc::new(dataset("source: {uri: s3://data/digits/}"));
    let reconcile = tokio::spawn(super::reconcile(ds.clone(), ctx));

    // No read: the caches are empty, so the first request is the apply.
    let (request, send) = handle.next_request().await.expect("the apply");
    assert_eq!(request.method(), Method::PATCH);
    let query = request.uri().query().unwrap_or_default().to_owned();
    assert!(query.contains("fieldManager=hone-operator") && query.contains("force=true"), "{query}");
    let path = request.uri().path().to_owned();
    assert!(path.starts_with("/apis/batch/v1/namespaces/ml/jobs/digits-inspect-"), "{path}");
    let applied: Value = serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    assert_eq!(applied["spec"]["template"]["spec"]["containers"][0]["args"], json!(["inspect"]));
    let mut running = applied.clone();
    running["status"] = json!({"active": 1});
    send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&running).unwrap())).unwrap());

    let patch = expect(
        &mut handle,
        Method::PATCH,
        "/apis/hone.dev/v1alpha1/namespaces/ml/datasets/digits/status",
        serde_json::to_value(ds.as_ref()).unwrap(),
    )
    .await;
    assert_eq!(patch["status"]["phase"], "Verifying");
    expect(&mut handle, Method::POST, "/apis/events.k8s.io/v1/namespaces/ml/events", json!({})).await;
    assert_eq!(reconcile.await.unwrap().unwrap(), Action::await_change());
}

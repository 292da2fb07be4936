//! The operator at rest (issue 19): once its watches are filled it reads
//! nothing from the apiserver, a settled object is not reconciled again, and
//! an edit wakes only the object edited. Counted by the operator's own
//! `hone_operator_api_requests_total{verb}` (every request its client sends)
//! and `hone_operator_reconciles_total`, against the real binary and a real
//! apiserver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hone_cluster_tests::operator::{OperatorProcess, grant, revoke};
use hone_cluster_tests::{
    TestNamespace, client, install_crds, isvc_status_where, ready_model_version, wait_for,
};
use hone_crds::InferenceService;
use hone_crds::inferenceservice::InferenceServicePhase;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
const SERVICES: usize = 4;

/// The sum of a counter family's samples whose labels contain `labels`.
fn sum(text: &str, family: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Counts {
    lists: f64,
    discovery: f64,
    gets: f64,
    isvc_reconciles: f64,
    mv_reconciles: f64,
}

async fn counts(operator: &OperatorProcess) -> Counts {
    let text = operator.metrics_text().await.expect("the operator's metrics page");
    let requests = "hone_operator_api_requests_total";
    let reconciles = "hone_operator_reconciles_total";
    Counts {
        lists: sum(&text, requests, r#"verb="list""#),
        discovery: sum(&text, requests, r#"verb="discovery""#),
        // Leader election reads and renews its Lease: not a read of the world.
        gets: sum(&text, requests, r#"verb="get""#) - sum(&text, requests, r#"verb="get",resource="leases""#),
        isvc_reconciles: sum(&text, reconciles, r#"controller="inferenceservice""#),
        mv_reconciles: sum(&text, reconciles, r#"controller="modelversion""#),
    }
}

#[tokio::test]
async fn at_rest_the_operator_reads_nothing_and_reconciles_nothing() {
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let labels = [("pod-security.kubernetes.io/enforce", "restricted")];
    let ns = TestNamespace::create(&client, "steady", &labels).await.unwrap();
    grant(&client, &ns.name).await.unwrap();
    let operator = OperatorProcess::start(&ns.name, "steady", &[]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));

    ready_model_version(&client, &ns.name, 1).await.unwrap();
    let api: Api<InferenceService> = Api::namespaced(client.clone(), &ns.name);
    for i in 0..SERVICES {
        let isvc: InferenceService = serde_json::from_value(json!({
            "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"variants": [{"name": "a", "modelVersion": "digits-v1", "weight": 100}]},
        }))
        .unwrap();
        api.create(&PostParams::default(), &isvc).await.unwrap();
    }
    for i in 0..SERVICES {
        isvc_status_where(&api, &format!("svc-{i}"), "Ready", WAIT, |s| {
            s.phase == Some(InferenceServicePhase::Ready)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    }
    // Settled: the servedBy of digits-v1 names every service.
    let mvs: Api<hone_crds::ModelVersion> = Api::namespaced(client.clone(), &ns.name);
    wait_for("servedBy lists every service", WAIT, || async {
        let mv = mvs.get("digits-v1").await?;
        Ok(mv.status.filter(|s| s.served_by.len() == SERVICES).map(|_| ()))
    })
    .await
    .unwrap();
    // Let the last status writes and pod readiness changes pass.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let before = counts(&operator).await;
    assert!(before.lists > 0.0, "the initial sync lists each kind once");
    // At rest: nothing changes for a while.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let rest = counts(&operator).await;
    assert_eq!(rest.lists, before.lists, "no LIST at rest\n{}", operator.log());
    assert_eq!(rest.discovery, before.discovery, "no discovery at rest");
    assert_eq!(rest.gets, before.gets, "no GET at rest (but the Lease's)");
    assert_eq!(
        rest.isvc_reconciles, before.isvc_reconciles,
        "a settled InferenceService is not reconciled again"
    );
    assert_eq!(rest.mv_reconciles, before.mv_reconciles, "a settled ModelVersion is not reconciled again");

    // An edit of one InferenceService (an annotation) wakes that one alone,
    // and its reconcile reads from the caches.
    let nudge = json!({"metadata": {"annotations": {"test.hone.dev/nudge": "1"}}});
    api.patch("svc-0", &PatchParams::default(), &Patch::Merge(&nudge)).await.unwrap();
    wait_for("the nudged service reconciled", WAIT, || async {
        Ok((counts(&operator).await.isvc_reconciles > rest.isvc_reconciles).then_some(()))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = counts(&operator).await;
    assert_eq!(after.lists, before.lists, "a reconcile lists nothing");
    assert_eq!(after.isvc_reconciles - rest.isvc_reconciles, 1.0, "only the edited service is reconciled");
    assert_eq!(
        after.mv_reconciles, rest.mv_reconciles,
        "what it serves did not change: no ModelVersion wakes"
    );

    // Deleting a child the operator owns wakes its owner, which puts it back.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.delete("svc-1-a-v1", &Default::default()).await.unwrap();
    wait_for("the deleted predictor Deployment back", WAIT, || async {
        let d = deployments.get_opt("svc-1-a-v1").await?;
        Ok(d.filter(|d| d.metadata.deletion_timestamp.is_none()).map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    assert_eq!(counts(&operator).await.lists, before.lists, "still no LIST");

    ns.delete_model_versions().await.unwrap();
    operator.stop().await.unwrap();
    revoke(&client, &ns.name).await.unwrap();
    ns.cleanup().await.unwrap();
}

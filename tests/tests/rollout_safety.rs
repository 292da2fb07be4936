//! Rollout state that cannot move backwards, on a real apiserver:
//!
//! - InferenceService status is written with the object's resourceVersion as
//!   a precondition, so a status computed from a stale object is refused
//!   (409, error category `conflict`) and changes nothing, and the next
//!   write, from the fresh object, goes through;
//! - a rollout whose new predictors never become ready is aborted at
//!   `spec.rollout.progressDeadline` with reason `ProgressDeadlineExceeded`
//!   (the real `hone-operator` binary, with the chart's RBAC; a ResourceQuota
//!   of zero pods keeps KWOK from ever starting the new predictor).

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use hone_cluster_tests::operator::{OperatorProcess, grant, revoke};
use hone_cluster_tests::{
    TestNamespace, client, install_crds, isvc_status_where, ready_model_version, wait_for,
};
use hone_crds::InferenceService;
use hone_crds::inferenceservice::{
    InferenceServicePhase, InferenceServiceStatus, REASON_PROGRESS_DEADLINE_EXCEEDED, RolloutStatus,
};
use hone_operator::config::OperatorConfig;
use hone_operator::context::{Context, EventSpec};
use hone_operator::inferenceservice::status;
use hone_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

fn digits(spec: serde_json::Value) -> InferenceService {
    serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "digits"},
        "spec": spec,
    }))
    .unwrap()
}

/// A status rolling variant `a` from digits-v1 to digits-v2 at `weight` percent.
fn rolling(step: i32, weight: i32) -> InferenceServiceStatus {
    InferenceServiceStatus {
        phase: Some(InferenceServicePhase::Progressing),
        rollout: Some(RolloutStatus {
            variant: "a".into(),
            from_version: "digits-v1".into(),
            to_version: "digits-v2".into(),
            step,
            canary_weight: weight,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn events_with_reason(client: &Client, ns: &str, reason: &str) -> anyhow::Result<Vec<Event>> {
    let events = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await?;
    Ok(events.items.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).collect())
}

#[tokio::test]
async fn a_status_computed_from_a_stale_object_is_refused_as_a_conflict() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "stale-status", &[]).await?;
    let result = stale_write(&client, &ns.name).await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

async fn stale_write(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let spec = json!({"variants": [{"name": "a", "modelVersion": "digits-v2", "weight": 100}],
        "rollout": {"strategy": "Canary", "steps": [10, 50]}});
    api.create(&PostParams::default(), &digits(spec)).await?;
    let ctx = Context::new(client.clone(), OperatorConfig::default(), Arc::new(Metrics::new()), None);

    // Two reconciles read the same object; the first moves the rollout to 50%.
    let read_by_both = api.get("digits").await?;
    status::update(&ctx, &read_by_both, rolling(1, 50), Vec::new()).await?;

    // The second, still holding the old object, would move it back to 10%.
    let event = EventSpec {
        warning: false,
        reason: "StaleStep".into(),
        note: "written from a stale object".into(),
        action: "Rollout".into(),
    };
    let refused = status::update(&ctx, &read_by_both, rolling(0, 10), vec![event]).await;
    let error = refused.expect_err("a write from a stale resourceVersion must be refused");
    assert!(matches!(error, status::Error::Conflict { .. }), "{error:?}");
    assert_eq!(error.category(), "conflict");
    assert!(
        matches!(std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<kube::Error>()), Some(kube::Error::Api(s)) if s.code == 409),
        "{error:?}"
    );
    let stored = api.get("digits").await?;
    let rollout = stored.status.as_ref().and_then(|s| s.rollout.clone()).unwrap();
    assert_eq!((rollout.step, rollout.canary_weight), (1, 50), "the refused write changed nothing");
    assert!(
        events_with_reason(client, ns, "StaleStep").await?.is_empty(),
        "a refused write publishes no Events"
    );

    // The next reconcile starts from the fresh object and gets through.
    let mut next = rolling(1, 50);
    next.phase = Some(InferenceServicePhase::Degraded);
    status::update(&ctx, &stored, next, Vec::new()).await?;
    let after = api.get("digits").await?.status.unwrap();
    assert_eq!(after.phase, Some(InferenceServicePhase::Degraded));
    assert_ne!(
        api.get("digits").await?.metadata.resource_version,
        stored.metadata.resource_version,
        "a new resourceVersion"
    );
    Ok(())
}

#[tokio::test]
async fn a_rollout_waiting_past_its_progress_deadline_is_aborted() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let restricted = [
        ("pod-security.kubernetes.io/enforce", "restricted"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
    ];
    let ns = TestNamespace::create(&client, "deadline", &restricted).await?;
    grant(&client, &ns.name).await?;
    let operator = OperatorProcess::start(&ns.name, "deadline-0", &[])?;
    let result = deadline(&client, &ns.name).await;
    if result.is_err() {
        eprintln!("operator log:\n{}", operator.log());
    }
    // The operator releases the ModelVersions' finalizers: delete them while it runs.
    let released = ns.delete_model_versions().await;
    let stopped = operator.stop().await;
    let revoked = revoke(&client, &ns.name).await;
    let cleanup = ns.cleanup().await;
    result?;
    released?;
    stopped?;
    revoked?;
    cleanup
}

async fn deadline(client: &Client, ns: &str) -> anyhow::Result<()> {
    for version in 1..=2 {
        ready_model_version(client, ns, version).await?;
    }
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let spec = json!({"variants": [{"name": "a", "modelVersion": "digits-v1", "weight": 100}],
        "rollout": {"strategy": "Canary", "steps": [50], "stepInterval": "2s", "progressDeadline": "10s"}});
    api.create(&PostParams::default(), &digits(spec)).await?;
    isvc_status_where(&api, "digits", "Ready on digits-v1", TIMEOUT, |s| {
        s.phase == Some(InferenceServicePhase::Ready)
    })
    .await?;

    // From here no new pod can start in the namespace: the running ones stay.
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let quota = ResourceQuota {
        metadata: ObjectMeta { name: Some("no-new-pods".into()), ..Default::default() },
        spec: Some(ResourceQuotaSpec {
            hard: Some([("pods".to_owned(), Quantity("0".into()))].into_iter().collect()),
            ..Default::default()
        }),
        ..Default::default()
    };
    quotas.create(&PostParams::default(), &quota).await?;
    wait_for("the quota's usage to be counted", TIMEOUT, || async {
        let quota = quotas.get("no-new-pods").await?;
        Ok(quota.status.and_then(|s| s.used).filter(|used| used.contains_key("pods")).map(|_| ()))
    })
    .await?;

    let patch = json!({"spec": {"variants": [{"name": "a", "modelVersion": "digits-v2", "weight": 100}]}});
    api.patch("digits", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let waiting = isvc_status_where(&api, "digits", "the rollout waiting for its predictors", TIMEOUT, |s| {
        s.rollout.as_ref().is_some_and(|r| r.waiting_for.as_deref() == Some("WaitingForPredictors"))
    })
    .await?;
    assert!(waiting.rollout.unwrap().waiting_since.is_some());

    let aborted = isvc_status_where(&api, "digits", "the rollout aborted at its deadline", TIMEOUT, |s| {
        s.phase == Some(InferenceServicePhase::Degraded)
    })
    .await?;
    assert_eq!(aborted.rollout, None);
    assert_eq!(aborted.variants[0].model_version.as_deref(), Some("digits-v1"), "still served");
    let record = &aborted.aborted_rollouts[0];
    assert_eq!(record.to_version, "digits-v2");
    assert_eq!(record.reason.as_deref(), Some(REASON_PROGRESS_DEADLINE_EXCEEDED));
    assert!(record.message.contains("progressDeadline (10s)"), "{}", record.message);
    let degraded = aborted.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", REASON_PROGRESS_DEADLINE_EXCEEDED)
    );
    assert_eq!(
        api.get("digits").await?.spec.variants[0].model_version.as_deref(),
        Some("digits-v2"),
        "the spec is left as it is"
    );
    let predictor = Api::<Deployment>::namespaced(client.clone(), ns).get_opt("digits-a-v2").await?;
    let ready = predictor.and_then(|d| d.status?.ready_replicas).unwrap_or(0);
    assert_eq!(ready, 0, "the new predictor never became ready");
    let warnings = wait_for("a ProgressDeadlineExceeded Event", TIMEOUT, || async {
        let events = events_with_reason(client, ns, REASON_PROGRESS_DEADLINE_EXCEEDED).await?;
        Ok((!events.is_empty()).then_some(events))
    })
    .await?;
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    Ok(())
}

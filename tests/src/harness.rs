//! The harness of the operator's cluster tests: a namespace that enforces
//! Pod Security "restricted" with the chart's RBAC granted to the operator,
//! objects created from JSON, and waits on their status.
//!
//! KWOK runs the pods and completes Job pods, but nothing runs inside them:
//! [`Env::finish_pod`] writes the termination message the program in the pod
//! would have written.

// A failed step fails the test that called it, with what was seen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::operator::{OperatorProcess, grant, revoke, write_termination_message};
use crate::{TestNamespace, client, install_crds, wait_for};

/// How long a step may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// Test namespace and client.
pub struct Env {
    /// A client with the test's own (admin) credentials.
    pub client: Client,
    /// The namespace, with the operator's RBAC granted in it.
    pub ns: TestNamespace,
}

impl Env {
    /// A fresh namespace `prefix-<suffix>` with the CRDs installed and the operator's RBAC granted.
    pub async fn new(prefix: &str) -> Self {
        let client = client().await.unwrap();
        install_crds(&client).await.unwrap();
        let labels = [
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ];
        let ns = TestNamespace::create(&client, prefix, &labels).await.unwrap();
        grant(&client, &ns.name).await.unwrap();
        Self { client, ns }
    }

    /// The API of `K` in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Creates one of Hone's objects from its JSON.
    pub async fn create(&self, body: Value) {
        let kind = body["kind"].as_str().unwrap().to_owned();
        let obj: kube::api::DynamicObject = serde_json::from_value(body).unwrap();
        let resource = match kind.as_str() {
            "Dataset" => kube::api::ApiResource::erase::<Dataset>(&()),
            "TrainingJob" => kube::api::ApiResource::erase::<TrainingJob>(&()),
            "ModelVersion" => kube::api::ApiResource::erase::<ModelVersion>(&()),
            "InferenceService" => kube::api::ApiResource::erase::<InferenceService>(&()),
            other => panic!("unexpected kind {other}"),
        };
        Api::<kube::api::DynamicObject>::namespaced_with(self.client.clone(), &self.ns.name, &resource)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
    }

    /// Deletes the test's ModelVersions while `operator` still runs (it
    /// releases their finalizers), then stops it and removes the rest.
    pub async fn cleanup(self, operator: OperatorProcess) {
        self.ns.delete_model_versions().await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
        operator.stop().await.unwrap();
        revoke(&self.client, &self.ns.name).await.unwrap();
        self.ns.cleanup().await.unwrap();
    }

    /// The one Job labelled `label=value`, once it exists.
    pub async fn job(&self, label: &str, value: &str) -> Job {
        let api = self.api::<Job>();
        let selector = format!("{label}={value}");
        wait_for(&format!("a Job with {selector}"), WAIT, || {
            let (api, selector) = (api.clone(), selector.clone());
            async move { Ok(api.list(&ListParams::default().labels(&selector)).await?.items.into_iter().next()) }
        })
        .await
        .unwrap()
    }

    /// Waits for the pod of `job` to be completed by KWOK, then writes
    /// `message` as its container's termination message (standing in for the
    /// program that would have run in it).
    pub async fn finish_pod(&self, job: &Job, container: &str, message: &str) {
        let selector = format!("batch.kubernetes.io/job-name={}", job.name_any());
        write_termination_message(&self.client, &self.ns.name, &selector, container, message).await.unwrap();
    }

    /// Waits until `check` holds for the named object, returning it.
    pub async fn until<K>(&self, name: &str, what: &str, check: impl Fn(&K) -> bool) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let obj = api.get_opt(name).await.unwrap();
            if let Some(obj) = obj.as_ref().filter(|o| check(o)) {
                return obj.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for {name}: {what}; last seen: {obj:#?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the named object is deleted.
    pub async fn gone<K>(&self, name: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        wait_for(&format!("{name} to be deleted"), WAIT, || {
            let api = api.clone();
            async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
        })
        .await
        .unwrap();
    }

    /// Creates Dataset `name` and plays its inspect pod: Ready with `digest`.
    pub async fn ready_dataset(&self, name: &str, digest: &str) -> Dataset {
        self.create(dataset(name)).await;
        let job = self.job("hone.dev/dataset", name).await;
        // The test writes the inspect summary hone-trainer would have written.
        let summary = json!({"kind": "inspect", "digest": digest, "samples": 1797, "sizeBytes": 1_200_000,
            "classes": ["0", "1"], "classCounts": {"0": 900, "1": 897}});
        self.finish_pod(&job, "inspect", &summary.to_string()).await;
        self.until::<Dataset>(name, "Ready", |d| d.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
            .await
    }
}

/// Whether `conditions` hold `Ready=True`.
pub fn is_ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A Dataset `name` of 32x32 grey images in S3.
pub fn dataset(name: &str) -> Value {
    json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": name},
        "spec": {"source": {"uri": "s3://hone-datasets/digits/", "secretRef": {"name": "s3"}},
                 "format": "ImageFolder", "image": {"width": 32, "height": 32, "channels": 1}}
    })
}

/// A TrainingJob `name` of a simple CNN on `dataset`, registered as model
/// `digits`, with `extra` merged into its spec.
pub fn training_job(name: &str, dataset: &str, extra: Value) -> Value {
    let mut spec = json!({
        "datasetRef": {"name": dataset}, "model": {"architecture": "simple-cnn"},
        "hyperparameters": {"epochs": 3}, "output": {"uri": "s3://hone-models/", "secretRef": {"name": "s3"}},
        "registerAs": {"model": "digits", "labels": {"team": "vision"}}
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "hone.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec})
}

//! The platform Hone relies on, proved against the cluster in `KUBECONFIG`:
//! Pod Security admission, scheduling onto (KWOK) nodes, the deployment, job
//! and garbage-collector controllers. Each test works in a namespace of its
//! own and deletes it at the end.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use hone_cluster_tests::{TestNamespace, client, unique_suffix, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Never pulled: KWOK only pretends to run containers.
const IMAGE: &str = "registry.invalid/hone/pause:1";

/// Pods can only be created once the namespace's default serviceaccount exists.
async fn wait_for_default_serviceaccount(client: &Client, ns: &str) -> anyhow::Result<()> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("serviceaccount {ns}/default"), TIMEOUT, || async {
        Ok(sas.get_opt("default").await?.map(|_| ()))
    })
    .await
}

/// A pod that meets the "restricted" Pod Security profile.
fn restricted_pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } }
            }]
        }
    }))?)
}

async fn run_in_namespace<F, Fut>(prefix: &str, labels: &[(&str, &str)], test: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let client = client().await?;
    let ns = TestNamespace::create(&client, prefix, labels).await?;
    let result = test(client, ns.name.clone()).await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

#[tokio::test]
async fn pod_security_restricted_rejects_privileged_pods() -> anyhow::Result<()> {
    let labels = [
        ("pod-security.kubernetes.io/enforce", "restricted"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
    ];
    run_in_namespace("psa", &labels, |client, ns| async move {
        wait_for_default_serviceaccount(&client, &ns).await?;
        let pods: Api<Pod> = Api::namespaced(client, &ns);

        let privileged: Pod = serde_json::from_value(json!({
            "metadata": { "name": "privileged" },
            "spec": { "containers": [{
                "name": "main", "image": IMAGE, "securityContext": { "privileged": true }
            }]}
        }))?;
        match pods.create(&PostParams::default(), &privileged).await {
            Ok(_) => bail!("a privileged pod was admitted into namespace {ns}, which enforces Pod Security \"restricted\""),
            Err(kube::Error::Api(status)) => {
                ensure!(
                    status.code == 403 && status.message.contains("violates PodSecurity"),
                    "privileged pod rejected, but not by Pod Security admission: {} {}",
                    status.code,
                    status.message
                );
            }
            Err(other) => return Err(other).context("creating the privileged pod"),
        }

        pods.create(&PostParams::default(), &restricted_pod("compliant")?)
            .await
            .context("a pod that meets the restricted profile was rejected")?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deployment_becomes_available_on_nodes() -> anyhow::Result<()> {
    run_in_namespace("deploy", &[], |client, ns| async move {
        wait_for_default_serviceaccount(&client, &ns).await?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": { "name": "web" },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "main", "image": IMAGE }] }
                }
            }
        }))?;
        deployments.create(&PostParams::default(), &deployment).await?;

        wait_for("deployment web to be Available with 2 ready replicas", TIMEOUT, || async {
            let d = deployments.get("web").await?;
            let status = d.status.unwrap_or_default();
            let available = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            Ok((available && status.available_replicas == Some(2)).then_some(()))
        })
        .await?;

        let pods = Api::<Pod>::namespaced(client, &ns).list(&ListParams::default().labels("app=web")).await?;
        ensure!(pods.items.len() == 2, "expected 2 pods, found {}", pods.items.len());
        for pod in &pods.items {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            ensure!(node.is_some(), "pod {} is Available but was never scheduled", pod.name_any());
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn job_completes() -> anyhow::Result<()> {
    run_in_namespace("job", &[], |client, ns| async move {
        wait_for_default_serviceaccount(&client, &ns).await?;
        let jobs: Api<Job> = Api::namespaced(client, &ns);
        let job: Job = serde_json::from_value(json!({
            "metadata": { "name": "once" },
            "spec": {
                "backoffLimit": 0,
                "template": { "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "main", "image": IMAGE }]
                }}
            }
        }))?;
        jobs.create(&PostParams::default(), &job).await?;

        wait_for("job once to complete", TIMEOUT, || async {
            let status = jobs.get("once").await?.status.unwrap_or_default();
            let conditions = status.conditions.unwrap_or_default();
            if conditions.iter().any(|c| c.type_ == "Failed" && c.status == "True") {
                bail!("job once failed: {conditions:?}");
            }
            let complete = conditions.iter().any(|c| c.type_ == "Complete" && c.status == "True");
            Ok((complete && status.succeeded == Some(1)).then_some(()))
        })
        .await
    })
    .await
}

#[tokio::test]
async fn garbage_collector_deletes_dependents() -> anyhow::Result<()> {
    run_in_namespace("gc", &[], |client, ns| async move {
        let configmaps: Api<ConfigMap> = Api::namespaced(client, &ns);
        let owner_name = format!("owner-{}", unique_suffix());
        let owner = configmaps
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: ObjectMeta { name: Some(owner_name.clone()), ..Default::default() },
                    ..Default::default()
                },
            )
            .await?;
        let child = ConfigMap {
            metadata: ObjectMeta {
                name: Some("child".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: owner_name.clone(),
                    uid: owner.uid().context("the created owner has no uid")?,
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        configmaps.create(&PostParams::default(), &child).await?;

        configmaps.delete(&owner_name, &DeleteParams::background()).await?;
        wait_for("the garbage collector to delete configmap child after its owner", TIMEOUT, || async {
            Ok(configmaps.get_opt("child").await?.is_none().then_some(()))
        })
        .await
    })
    .await
}

//! Tier 2: pods really run on the real node of `make cluster-up NODE=real`
//! (containerd, kubelet, kube-proxy, CoreDNS on this machine). Each test
//! returns early, with a note, unless the cluster in `KUBECONFIG` has a Ready
//! node labelled `hone.dev/node=real`, so they pass against tier 1 too.
//!
//! The pods run `hone.local/testbox:1`, a small static image that
//! `hack/images/node-images.sh` builds here and imports into the node's
//! containerd (never pulled), and meet Pod Security "restricted".

use std::time::Duration;

use anyhow::{Context, bail};
use hone_cluster_tests::{TestNamespace, client, unique_suffix, wait_for};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServiceAccount};
use kube::api::{ListParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const REAL_NODE_LABEL: &str = "hone.dev/node=real";
const IMAGE: &str = "hone.local/testbox:1";
const TIMEOUT: Duration = Duration::from_secs(90);

/// The name of a Ready real node, or `None` (with a note) when there is none.
async fn real_node(client: &Client) -> anyhow::Result<Option<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default().labels(REAL_NODE_LABEL)).await?;
    let ready = list.items.into_iter().find(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    match ready {
        Some(n) => Ok(n.metadata.name),
        None => {
            eprintln!(
                "note: skipped: no Ready node labelled {REAL_NODE_LABEL} (start one with `make cluster-up NODE=real`)"
            );
            Ok(None)
        }
    }
}

/// Runs `test` in a fresh namespace that enforces Pod Security "restricted",
/// if the cluster has a real node; deletes the namespace afterwards.
async fn on_real_node<F, Fut>(prefix: &str, test: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let client = client().await?;
    if real_node(&client).await?.is_none() {
        return Ok(());
    }
    let labels = [
        ("pod-security.kubernetes.io/enforce", "restricted"),
        ("pod-security.kubernetes.io/enforce-version", "latest"),
    ];
    let ns = TestNamespace::create(&client, prefix, &labels).await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let result = async {
        wait_for("the default serviceaccount", TIMEOUT, || async {
            Ok(sas.get_opt("default").await?.map(|_| ()))
        })
        .await?;
        test(client.clone(), ns.name.clone()).await
    }
    .await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

/// A pod spec for the real node: selects and tolerates it, runs testbox with
/// `args` as a non-root user with a read-only root filesystem.
fn pod_spec(args: &[&str], restart: &str) -> Value {
    json!({
        "restartPolicy": restart,
        "nodeSelector": { "hone.dev/node": "real" },
        "tolerations": [{ "key": "hone.dev/node", "operator": "Equal", "value": "real", "effect": "NoSchedule" }],
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
            "seccompProfile": { "type": "RuntimeDefault" }
        },
        "terminationGracePeriodSeconds": 2,
        "containers": [{
            "name": "main",
            "image": IMAGE,
            "imagePullPolicy": "Never",
            "args": args,
            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "memory": "64Mi" } },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] }
            }
        }]
    })
}

fn job(name: &str, args: &[&str]) -> anyhow::Result<Job> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 120,
            "template": { "spec": pod_spec(args, "Never") }
        }
    }))?)
}

/// Waits until the Job is Complete; fails at once when it failed.
async fn wait_job_complete(jobs: &Api<Job>, name: &str) -> anyhow::Result<()> {
    wait_for(&format!("job {name} to complete"), TIMEOUT, || async {
        let status = jobs.get(name).await?.status.unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        if let Some(c) = conditions.iter().find(|c| c.type_ == "Failed" && c.status == "True") {
            bail!("job {name} failed: {:?} {:?}", c.reason, c.message);
        }
        Ok(conditions.iter().any(|c| c.type_ == "Complete" && c.status == "True").then_some(()))
    })
    .await
}

/// The (single) pod of a Job.
async fn job_pod(pods: &Api<Pod>, job: &str) -> anyhow::Result<Pod> {
    let list = pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await?;
    list.items.into_iter().next().with_context(|| format!("job {job} has no pod"))
}

async fn logs(pods: &Api<Pod>, pod: &str) -> anyhow::Result<String> {
    pods.logs(pod, &LogParams::default()).await.with_context(|| format!("reading the logs of pod {pod}"))
}

#[tokio::test]
async fn pod_from_a_locally_built_image_runs_and_its_logs_are_read() -> anyhow::Result<()> {
    on_real_node("realnode-logs", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let message = format!("hello from the real node {}", unique_suffix());
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "echo" },
            "spec": pod_spec(&["echo", &message], "Never")
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        let phase = wait_for("pod echo to finish", TIMEOUT, || async {
            let phase = pods.get("echo").await?.status.and_then(|s| s.phase).unwrap_or_default();
            Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
        })
        .await?;
        let out = logs(&pods, "echo").await?;
        anyhow::ensure!(phase == "Succeeded", "pod echo ended {phase}; logs: {out}");
        anyhow::ensure!(out.contains(&message), "logs of pod echo lack {message:?}: {out:?}");
        let node = pods.get("echo").await?.spec.and_then(|s| s.node_name).unwrap_or_default();
        anyhow::ensure!(!node.starts_with("hone-node-"), "pod echo ran on a KWOK node ({node})");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_service_routes_to_a_pod_by_its_dns_name() -> anyhow::Result<()> {
    on_real_node("realnode-svc", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client, &ns);
        let answer = format!("answer-{}", unique_suffix());

        let server: Pod = serde_json::from_value(json!({
            "metadata": { "name": "server", "labels": { "app": "server" } },
            "spec": pod_spec(&["serve", "8080", &answer], "Always")
        }))?;
        pods.create(&PostParams::default(), &server).await?;
        let service: Service = serde_json::from_value(json!({
            "metadata": { "name": "web" },
            "spec": { "selector": { "app": "server" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
        }))?;
        services.create(&PostParams::default(), &service).await?;

        // Through cluster DNS (CoreDNS) and the ClusterIP (kube-proxy).
        let url = format!("http://web.{ns}.svc.cluster.local/");
        jobs.create(&PostParams::default(), &job("client", &["get", &url, "60"])?).await?;
        let done = wait_job_complete(&jobs, "client").await;
        let pod = job_pod(&pods, "client").await?;
        let out = logs(&pods, &pod.metadata.name.unwrap_or_default()).await.unwrap_or_default();
        done.with_context(|| format!("client logs: {out}"))?;
        anyhow::ensure!(out.contains(&answer), "the client did not get {answer:?} from {url}: {out:?}");
        let served = logs(&pods, "server").await?;
        anyhow::ensure!(served.contains("GET /"), "the server logged no request: {served:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_job_pod_exits_zero_and_the_job_completes() -> anyhow::Result<()> {
    on_real_node("realnode-job", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client, &ns);
        jobs.create(&PostParams::default(), &job("exit0", &["exit", "0"])?).await?;
        wait_job_complete(&jobs, "exit0").await?;
        let succeeded = jobs.get("exit0").await?.status.and_then(|s| s.succeeded).unwrap_or(0);
        anyhow::ensure!(succeeded == 1, "job exit0 reports {succeeded} succeeded pods");
        let pod = job_pod(&pods, "exit0").await?;
        let terminated = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|c| c.state)
            .and_then(|s| s.terminated)
            .context("the job's container has not terminated")?;
        anyhow::ensure!(terminated.exit_code == 0, "the job's container exited {}", terminated.exit_code);
        Ok(())
    })
    .await
}

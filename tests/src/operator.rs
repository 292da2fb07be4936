//! Running the real `hone-operator` binary against the test cluster, as the
//! chart's ServiceAccount would: its RBAC is created from the chart's own
//! rules files and the process impersonates that ServiceAccount.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::wait_for;

/// Stands in for the program a Job pod would have run: waits until KWOK has
/// completed a pod matching `selector`, then writes `message` as the
/// termination message of its container `container`, as the kubelet would
/// from /dev/termination-log.
pub async fn write_termination_message(
    client: &Client,
    namespace: &str,
    selector: &str,
    container: &str,
    message: &str,
) -> anyhow::Result<()> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let pod = wait_for(&format!("a completed pod with {selector}"), Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&kube::api::ListParams::default().labels(selector)).await?;
            Ok(list
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")))
        }
    })
    .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({"status": {"containerStatuses": [{
        "name": container, "image": "hone.local/test", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
            "message": message}}
    }]}});
    let name = pod.metadata.name.unwrap_or_default();
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Name of the operator's ServiceAccount in the tests.
pub const SERVICE_ACCOUNT: &str = "hone-operator";

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn rules(file: &str) -> anyhow::Result<Vec<PolicyRule>> {
    let path = repo_file(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The ServiceAccount user name the operator impersonates.
pub fn service_account_user(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}")
}

/// Grants the operator's ServiceAccount in `namespace` exactly what the chart
/// grants: `charts/hone/files/operator-rules.yaml` as a ClusterRole (named
/// after the namespace, removed by [`revoke`]) and the leader-election rules
/// as a Role in `namespace`.
pub async fn grant(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let apply = PatchParams::apply("hone-tests").force();
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(SERVICE_ACCOUNT.into()), ..Default::default() },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(SERVICE_ACCOUNT, &apply, &Patch::Apply(&sa))
        .await?;
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: SERVICE_ACCOUNT.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    let name = format!("hone-operator-{namespace}");
    let role = ClusterRole {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        rules: Some(rules("charts/hone/files/operator-rules.yaml")?),
        ..Default::default()
    };
    Api::<ClusterRole>::all(client.clone()).patch(&name, &apply, &Patch::Apply(&role)).await?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name.clone(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    Api::<ClusterRoleBinding>::all(client.clone()).patch(&name, &apply, &Patch::Apply(&binding)).await?;
    let lease_role = Role {
        metadata: ObjectMeta { name: Some("hone-leader-election".into()), ..Default::default() },
        rules: Some(rules("charts/hone/files/leader-election-rules.yaml")?),
    };
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch("hone-leader-election", &apply, &Patch::Apply(&lease_role))
        .await?;
    let lease_binding = RoleBinding {
        metadata: ObjectMeta { name: Some("hone-leader-election".into()), ..Default::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "hone-leader-election".into(),
        },
        subjects: Some(vec![subject]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch("hone-leader-election", &apply, &Patch::Apply(&lease_binding))
        .await?;
    Ok(())
}

/// Removes the cluster-scoped RBAC [`grant`] made (namespaced parts go with the namespace).
pub async fn revoke(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let name = format!("hone-operator-{namespace}");
    let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
    let _ = Api::<ClusterRole>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
    Ok(())
}

/// A kubeconfig that is `KUBECONFIG` with every user impersonating `user`.
pub fn impersonating_kubeconfig(user: &str, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let source = std::env::var("KUBECONFIG").context("KUBECONFIG must name the test cluster's kubeconfig")?;
    let source = source.split(':').next().unwrap_or_default().to_owned();
    let text = std::fs::read_to_string(&source).with_context(|| format!("reading {source}"))?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let users =
        config.get_mut("users").and_then(|u| u.as_sequence_mut()).context("kubeconfig has no users")?;
    for entry in users {
        if let Some(user_map) = entry.get_mut("user").and_then(|u| u.as_mapping_mut()) {
            user_map.insert("as".into(), user.into());
        }
    }
    let path = dir.join("kubeconfig-operator");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// The operator binary: `HONE_OPERATOR_BIN`, else the workspace's debug build.
fn binary() -> anyhow::Result<PathBuf> {
    crate::workspace_binary("hone-operator", "HONE_OPERATOR_BIN", "hone-operator")
}

/// A plain HTTP/1.0 GET on loopback (the operator's metrics server), body only.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned()).filter(|_| head.contains(" 200 "))
}

/// A loopback port free right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One running `hone-operator run` process.
pub struct OperatorProcess {
    child: Child,
    /// Its metrics address, `http://127.0.0.1:<port>`.
    pub metrics_url: String,
    /// Its identity in the leader election.
    pub identity: String,
    _dir: tempdir::TempDir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl OperatorProcess {
    /// Starts the operator watching `namespace` only, impersonating its
    /// ServiceAccount there, with leader election on a Lease in `namespace`.
    pub fn start(namespace: &str, identity: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("hone-operator-{namespace}-{identity}"));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = impersonating_kubeconfig(&service_account_user(namespace), &dir)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("operator.log"))?;
        let child = Command::new(binary()?)
            .arg("run")
            .args(["--namespaces", namespace])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--leader-election", "--leader-election-namespace", namespace])
            .args(["--leader-election-identity", identity, "--leader-election-lease-seconds", "6"])
            .args(["--log-format", "text"])
            .args(extra_args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", identity)
            .env("HONE_LOG", "info,kube=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting hone-operator")?;
        eprintln!("operator {identity}: log in {}", dir.join("operator.log").display());
        Ok(Self {
            child,
            metrics_url: format!("http://127.0.0.1:{port}"),
            identity: identity.to_owned(),
            _dir: tempdir::TempDir(dir),
        })
    }

    /// The operator's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("operator.log")).unwrap_or_default()
    }

    /// The operator's metrics page, when the server answers.
    pub async fn metrics_text(&self) -> Option<String> {
        let addr = self.metrics_url.trim_start_matches("http://").to_owned();
        tokio::task::spawn_blocking(move || http_get(&addr, "/metrics")).await.ok()?
    }

    /// The value of an unlabelled metric, when the server answers.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics_text().await?;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits until this replica reports itself leader.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_for(&format!("{} to lead", self.identity), timeout, || async {
            Ok((self.metric("hone_operator_leader").await == Some(1.0)).then_some(()))
        })
        .await
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub async fn stop(mut self) -> anyhow::Result<Option<i32>> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..120 {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.child.kill()?;
        bail!("the operator did not stop within 30 s of SIGTERM:\n{}", self.log())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The controllers of `kinds` (e.g. `["InferenceService"]`) in this process,
/// over namespace `ns` with the operator's own watches, until `stopped`
/// fires (or its sender is dropped).
pub async fn run_controllers(
    ctx: std::sync::Arc<hone_operator::context::Context>,
    ns: String,
    kinds: &'static [&'static str],
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    use futures::FutureExt;
    let shutdown = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    hone_operator::controllers::run_kinds(ctx, vec![Some(ns)], kinds, shutdown).await;
}

//! Helpers for tests that need a cluster. Every test uses whatever
//! `KUBECONFIG` points at (the local cluster of `make cluster-up`, minikube,
//! kind...), works in a namespace of its own, and removes it at the end.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use hone_crds::consts::FIELD_MANAGER;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// A client for the cluster in `KUBECONFIG`, with a clear error when there is none.
pub async fn client() -> anyhow::Result<Client> {
    // The crate links ring (kube) and aws-lc-rs (object_store, for the purge
    // stand-in) into one rustls, which then has no default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default()
        .await
        .context("no cluster: set KUBECONFIG (make cluster-up prints it) or run `make test`")
}

/// A uniquely named namespace, deleted by [`TestNamespace::cleanup`].
pub struct TestNamespace {
    /// The namespace name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>` with the given labels.
    pub async fn create(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", unique_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self { name, client: client.clone() })
    }

    /// Deletes the namespace (and with it everything the test made), its
    /// ModelVersions first (see [`TestNamespace::delete_model_versions`]).
    /// Nothing strips a finalizer: a test that ran the operator cleans up
    /// before it stops it.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        self.delete_model_versions().await?;
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await
            .with_context(|| format!("deleting namespace {}", self.name))?;
        Ok(())
    }

    /// Deletes every ModelVersion of the namespace (the InferenceServices
    /// first, which would hold the versions they serve) and waits until they
    /// are gone. The operator's finalizer holds each until the operator
    /// releases it, so the operator must still run (the finalizer is never
    /// stripped).
    pub async fn delete_model_versions(&self) -> anyhow::Result<()> {
        let all = ListParams::default();
        Api::<hone_crds::InferenceService>::namespaced(self.client.clone(), &self.name)
            .delete_collection(&DeleteParams::background(), &all)
            .await
            .with_context(|| format!("deleting the InferenceServices of {}", self.name))?;
        let versions: Api<hone_crds::ModelVersion> = Api::namespaced(self.client.clone(), &self.name);
        versions
            .delete_collection(&DeleteParams::background(), &all)
            .await
            .with_context(|| format!("deleting the ModelVersions of {}", self.name))?;
        let what =
            format!("the ModelVersions of {} to go (the operator releases them: is it running?)", self.name);
        wait_for(&what, Duration::from_secs(60), || {
            let (versions, all) = (versions.clone(), all.clone());
            async move { Ok(versions.list(&all).await?.items.is_empty().then_some(())) }
        })
        .await
    }

    /// Deletes the namespace and waits until it is gone (which needs the
    /// operator, when ModelVersions are left in it).
    pub async fn delete_and_wait(self, timeout: Duration) -> anyhow::Result<()> {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        namespaces
            .delete(&self.name, &DeleteParams::background())
            .await
            .with_context(|| format!("deleting namespace {}", self.name))?;
        wait_for(&format!("namespace {} to be deleted", self.name), timeout, || {
            let (namespaces, name) = (namespaces.clone(), self.name.clone());
            async move { Ok(namespaces.get_opt(&name).await?.is_none().then_some(())) }
        })
        .await
    }
}

/// A short random suffix for object names.
pub fn unique_suffix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", hasher.finish() as u32)
}

/// A debug binary of this workspace: `$env_override` when set, else
/// `<target dir>/debug/<name>` (`CARGO_TARGET_DIR` or the workspace's
/// `target/`). Fails, saying how to build it, when the file is missing.
pub fn workspace_binary(name: &str, env_override: &str, package: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::path::PathBuf;
    let path = match std::env::var_os(env_override) {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("debug")
            .join(name),
    };
    if !path.exists() {
        bail!("{} does not exist: run `cargo build -p {package}` (make cluster-test does)", path.display());
    }
    Ok(path)
}

/// Polls `check` every 250 ms until it returns `Some`, or fails after `timeout`
/// with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the status of InferenceService `name` passes `check`; returns it.
pub async fn isvc_status_where(
    api: &Api<hone_crds::InferenceService>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&hone_crds::inferenceservice::InferenceServiceStatus) -> bool,
) -> anyhow::Result<hone_crds::inferenceservice::InferenceServiceStatus> {
    wait_for(what, timeout, || async {
        let status = api.get(name).await?.status.unwrap_or_default();
        Ok(check(&status).then_some(status))
    })
    .await
}

/// Creates ModelVersion `digits-v<version>` (model `digits`, a 1x8x8 input,
/// two classes) and marks it Ready and measured (accuracy `0.9 + version /
/// 100`) as its verify Job would.
pub async fn ready_model_version(client: &Client, ns: &str, version: u32) -> anyhow::Result<()> {
    let api: Api<hone_crds::ModelVersion> = Api::namespaced(client.clone(), ns);
    let name = format!("digits-v{version}");
    let mv: hone_crds::ModelVersion = serde_json::from_value(serde_json::json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {"model": "digits", "version": version,
            "artifact": {"uri": format!("s3://models/{name}/model.pt")},
            "signature": {"inputShape": [1, 8, 8], "classes": ["0", "1"]}},
    }))?;
    api.create(&PostParams::default(), &mv).await?;
    let status = serde_json::json!({"apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
        "status": {"phase": "Ready", "verifiedDigest": format!("sha256:{}", "a".repeat(64)),
            "evaluation": {"datasetDigest": format!("sha256:{}", "d".repeat(64)), "samples": 100,
                "metrics": {"accuracy": 0.9 + f64::from(version) / 100.0}}}});
    api.patch_status(&name, &PatchParams::apply("test-verifier").force(), &Patch::Apply(&status)).await?;
    Ok(())
}

/// Installs (or updates) every CRD with server-side apply and waits until
/// each is Established. Safe to run from several tests at once.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in hone_crds::all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

/// A page on loopback that answers every request with the current `body`
/// (a router's metrics, for rollout analysis); returns its URL.
pub fn serve_text(body: std::sync::Arc<std::sync::Mutex<String>>) -> String {
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else { return String::new() };
    let Ok(address) = listener.local_addr() else { return String::new() };
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { continue };
            let mut request = [0u8; 2048];
            let _ = std::io::Read::read(&mut socket, &mut request);
            let text = body.lock().map(|b| b.clone()).unwrap_or_default();
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", text.len());
            let _ = std::io::Write::write_all(&mut socket, head.as_bytes())
                .and_then(|()| std::io::Write::write_all(&mut socket, text.as_bytes()));
        }
    });
    format!("http://{address}/metrics")
}

pub mod harness;
pub mod operator;

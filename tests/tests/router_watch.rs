//! The router follows its ConfigMap through the API, as the ServiceAccount
//! the operator makes for it, which may read that one ConfigMap and nothing
//! else. Measures how long a weight change takes to reach the router: from a
//! ConfigMap write, and from an InferenceService spec change through the
//! in-process controller. The real `hone-router` binary runs on this
//! machine, impersonating its ServiceAccount (KWOK pods have no network).

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hone_cluster_tests::operator::{free_port, impersonating_kubeconfig};
use hone_cluster_tests::{
    TestNamespace, client, install_crds, isvc_status_where, ready_model_version, wait_for, workspace_binary,
};
use hone_crds::InferenceService;
use hone_crds::inferenceservice::InferenceServicePhase;
use hone_crds::router::RouterConfig;
use hone_operator::config::OperatorConfig;
use hone_operator::context::Context;
use hone_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The real router, impersonating `user`, following `ns/digits-router`.
struct RouterProcess {
    child: Child,
    admin: String,
    dir: std::path::PathBuf,
}

impl RouterProcess {
    fn start(ns: &str, user: &str, initial: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("hone-router-{ns}"));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = impersonating_kubeconfig(user, &dir)?;
        let config = dir.join("router.yaml");
        std::fs::write(&config, initial)?;
        let (client_port, admin_port) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.join("router.log"))?;
        let child = Command::new(workspace_binary("hone-router", "HONE_ROUTER_BIN", "hone-router")?)
            .args(["--config", config.to_str().unwrap()])
            .args(["--config-map", &format!("{ns}/digits-router")])
            .args(["--addr", &format!("127.0.0.1:{client_port}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .env("KUBECONFIG", &kubeconfig)
            .env("HONE_LOG", "info,kube=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Self { child, admin: format!("http://127.0.0.1:{admin_port}"), dir })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("router.log")).unwrap_or_default()
    }

    /// The weights the router routes by now, by backend name.
    async fn weights(&self) -> Option<Vec<(String, u32)>> {
        let config: RouterConfig = http_get(&format!("{}/router/config", self.admin))
            .await
            .and_then(|t| serde_json::from_str(&t).ok())?;
        Some(config.variants.into_iter().map(|v| (v.name, v.weight)).collect())
    }

    /// Polls the router every 10 ms until its weights are `want`; the time it took.
    async fn until_weights(&self, want: &[(&str, u32)]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let want: Vec<(String, u32)> = want.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect();
        loop {
            if self.weights().await.as_ref() == Some(&want) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > TIMEOUT {
                anyhow::bail!(
                    "the router never routed by {want:?}; it has {:?}\n{}",
                    self.weights().await,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP GET on loopback, off the async workers; the body of a 200.
async fn http_get(url: &str) -> Option<String> {
    let (addr, path) = url.strip_prefix("http://")?.split_once('/')?;
    let (addr, path) = (addr.to_owned(), format!("/{path}"));
    tokio::task::spawn_blocking(move || hone_cluster_tests::operator::http_get(&addr, &path)).await.ok()?
}

#[tokio::test]
async fn the_router_follows_its_config_map_through_the_api_as_its_own_service_account() -> anyhow::Result<()>
{
    let client = client().await?;
    install_crds(&client).await?;
    let restricted = [("pod-security.kubernetes.io/enforce", "restricted")];
    let ns = TestNamespace::create(&client, "router-watch", &restricted).await?;
    let result = scenario(&client, &ns.name).await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    for version in 1..=2 {
        ready_model_version(client, ns, version).await?;
    }
    let isvc: InferenceService = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "digits"},
        "spec": {"variants": [
            {"name": "a", "modelVersion": "digits-v1", "weight": 90},
            {"name": "b", "modelVersion": "digits-v2", "weight": 10}]},
    }))?;
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &isvc).await?;
    let ctx =
        Arc::new(Context::new(client.clone(), OperatorConfig::default(), Arc::new(Metrics::new()), None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(hone_cluster_tests::operator::run_controllers(
        ctx,
        ns.to_owned(),
        &["InferenceService"],
        stopped,
    ));
    isvc_status_where(&api, "digits", "Ready", TIMEOUT, |s| s.phase == Some(InferenceServicePhase::Ready))
        .await?;

    // The operator made the router an identity of its own, and the router pods run as it.
    let account = Api::<ServiceAccount>::namespaced(client.clone(), ns).get("digits-router").await?;
    assert_eq!(account.automount_service_account_token, Some(false));
    Api::<Role>::namespaced(client.clone(), ns).get("digits-router").await?;
    Api::<RoleBinding>::namespaced(client.clone(), ns).get("digits-router").await?;
    let router = Api::<Deployment>::namespaced(client.clone(), ns).get("digits-router").await?;
    let pod = router.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("digits-router"));

    // What that identity may read: its ConfigMap, not another, not a list of all.
    let user = format!("system:serviceaccount:{ns}:digits-router");
    let mut config = kube::Config::infer().await?;
    config.auth_info.impersonate = Some(user.clone());
    let as_router: Api<ConfigMap> = Api::namespaced(Client::try_from(config)?, ns);
    let own = as_router.get("digits-router").await?;
    let forbidden = |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(forbidden(as_router.get("kube-root-ca.crt").await.map(|_| ())), "another ConfigMap is readable");
    assert!(
        forbidden(as_router.list(&ListParams::default()).await.map(|_| ())),
        "every ConfigMap is listable"
    );
    let own_only = ListParams::default().fields("metadata.name=digits-router");
    assert_eq!(as_router.list(&own_only).await?.items.len(), 1, "its own ConfigMap by name");

    // The real router as that identity, started from the mounted file's copy.
    let initial = own.data.unwrap()["router.yaml"].clone();
    let router = RouterProcess::start(ns, &user, &initial)?;
    wait_for("the router's admin port", TIMEOUT, || async { Ok(router.weights().await) }).await?;
    router.until_weights(&[("a", 9000), ("b", 1000)]).await?;

    // A ConfigMap write reaches it through the watch.
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut changed: RouterConfig = serde_yaml::from_str(&initial)?;
    changed.variants[0].weight = 7000;
    changed.variants[1].weight = 3000;
    let patch = json!({"data": {"router.yaml": serde_yaml::to_string(&changed)?}});
    configs.patch("digits-router", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let from_config_map = router.until_weights(&[("a", 7000), ("b", 3000)]).await?;

    // An InferenceService change: the controller rewrites the ConfigMap, the router follows.
    let spec = json!({"spec": {"variants": [
        {"name": "a", "modelVersion": "digits-v1", "weight": 50},
        {"name": "b", "modelVersion": "digits-v2", "weight": 50}]}});
    api.patch("digits", &PatchParams::default(), &Patch::Merge(&spec)).await?;
    let from_spec = router.until_weights(&[("a", 5000), ("b", 5000)]).await?;
    println!(
        "router weights followed: a ConfigMap write in {} ms, an InferenceService spec change in {} ms",
        from_config_map.as_millis(),
        from_spec.as_millis()
    );
    assert!(router.log().contains("following the router ConfigMap through the API"), "{}", router.log());
    drop(router);

    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, controller).await??;
    Ok(())
}

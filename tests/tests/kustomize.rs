//! The kustomize install (config/default), the samples (config/samples) and
//! the Argo CD wiring (config/argocd) on a real apiserver: each is built by
//! `kubectl kustomize` and applied with `kubectl apply --server-side
//! --dry-run=server`, as a user would, so schemas, CRDs and namespaces are
//! checked by the apiserver itself. The Argo CD Application CRD comes from
//! Argo CD's Go module (config/argocd/test/application-crd.sh, cached).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use hone_cluster_tests::{TestNamespace, client, install_crds, unique_suffix, wait_for};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::Value;

/// The Argo CD health checks, one per Hone kind.
const HEALTH_KINDS: [&str; 4] = ["Dataset", "TrainingJob", "ModelVersion", "InferenceService"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// kubectl: $KUBECTL, else the one hack/cluster/build.sh built for
/// KUBE_VERSION (hack/versions.env), else the one on PATH.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return PathBuf::from(path);
    }
    let versions = std::fs::read_to_string(repo().join("hack/versions.env")).unwrap();
    let version = versions.lines().find_map(|l| l.strip_prefix("KUBE_VERSION=")).unwrap().trim();
    let cache = std::env::var_os("HONE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hone"));
    let built = cache.join(format!("k8s-{version}/bin/kubectl"));
    if built.exists() { built } else { PathBuf::from("kubectl") }
}

/// Runs kubectl with `args`; returns stdout, failing the test with stderr.
fn run_kubectl(args: &[&str]) -> String {
    let out = Command::new(kubectl()).current_dir(repo()).args(args).output().expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn parse_yaml(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `kubectl kustomize <dir>` as JSON values.
fn kustomize(dir: &Path) -> Vec<Value> {
    parse_yaml(&run_kubectl(&["kustomize", dir.to_str().unwrap()]))
}

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

/// A throwaway kustomization that puts `base` (a directory of the repo) into
/// `namespace`, the way a user's overlay would.
struct Overlay {
    dir: PathBuf,
}

impl Overlay {
    fn new(base: &str, namespace: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hone-kustomize-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        // kustomize takes bases only as paths relative to the overlay.
        let up = "../".repeat(dir.components().count() - 1);
        let target = repo().join(base);
        let relative = format!("{up}{}", target.strip_prefix("/").unwrap().display());
        let text = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: {namespace}\nresources:\n- {relative}\n"
        );
        std::fs::write(dir.join("kustomization.yaml"), text).unwrap();
        Self { dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Server-side dry-run apply of a kustomization; returns kubectl's lines, one
/// per object. `--force-conflicts`: the CRDs are also applied by the other
/// tests, under another field manager.
fn dry_run_apply(kustomization: &str, extra: &[&str]) -> Vec<String> {
    let mut args =
        vec!["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", kustomization];
    args.extend_from_slice(extra);
    let out = run_kubectl(&args);
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    for line in &lines {
        assert!(line.ends_with("serverside-applied (server dry run)"), "unexpected kubectl output: {line}");
    }
    lines
}

#[test]
fn argocd_cm_embeds_every_health_script_exactly() {
    let dir = repo().join("config/argocd");
    let cm = parse_yaml(&std::fs::read_to_string(dir.join("argocd-cm.yaml")).unwrap());
    assert_eq!(cm.len(), 1, "argocd-cm.yaml holds one ConfigMap");
    assert_eq!(kind(&cm[0]), "ConfigMap");
    assert_eq!(cm[0]["metadata"]["name"], "argocd-cm");
    let data = cm[0]["data"].as_object().unwrap();
    assert_eq!(data.len(), HEALTH_KINDS.len(), "keys: {:?}", data.keys().collect::<Vec<_>>());
    for kind in HEALTH_KINDS {
        let script = std::fs::read_to_string(dir.join(format!("health/{kind}.lua"))).unwrap();
        let key = format!("resource.customizations.health.hone.dev_{kind}");
        let embedded = data.get(&key).and_then(Value::as_str);
        assert!(embedded.is_some(), "{key} is missing from argocd-cm.yaml: run hack/gen-kustomize.sh");
        assert!(
            embedded == Some(script.as_str()),
            "{key} differs from config/argocd/health/{kind}.lua: run hack/gen-kustomize.sh"
        );
    }
}

#[tokio::test]
async fn kustomize_base_installs_what_the_chart_does_under_pod_security_restricted() {
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let base = kustomize(&repo().join("config/default"));
    let kinds: Vec<&str> = base.iter().map(kind).collect();
    for wanted in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.contains(&wanted), "{wanted} missing from {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "CustomResourceDefinition").count(), 4, "{kinds:?}");
    let text = serde_json::to_string(&base).unwrap();
    assert!(!text.contains("helm.sh/") && !text.contains("\"Helm\""), "Helm-only labels left in the base");
    for obj in base.iter().filter(|o| !matches!(kind(o), "Namespace" | "CustomResourceDefinition")) {
        let namespaced = !matches!(kind(obj), "ClusterRole" | "ClusterRoleBinding");
        let namespace = obj["metadata"]["namespace"].as_str();
        assert_eq!(
            namespace,
            namespaced.then_some("hone-system"),
            "{} {}",
            kind(obj),
            obj["metadata"]["name"]
        );
    }

    // The namespace gets the base's own Namespace labels (Pod Security).
    let namespace = base.iter().find(|o| kind(o) == "Namespace").unwrap();
    assert_eq!(namespace["metadata"]["name"], "hone-system");
    let labels: Vec<(String, String)> = namespace["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert!(labels.contains(&("pod-security.kubernetes.io/enforce".to_owned(), "restricted".to_owned())));
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ns = TestNamespace::create(&client, "hone-kustomize", &labels).await.unwrap();

    // An overlay moves the whole install into the test namespace (the
    // ClusterRoleBinding's subject with it), and every object is admitted.
    let overlay = Overlay::new("config/default", &ns.name);
    let moved = kustomize(&overlay.dir);
    assert_eq!(moved.len(), base.len());
    let binding = moved.iter().find(|o| kind(o) == "ClusterRoleBinding").unwrap();
    assert_eq!(binding["subjects"][0]["namespace"], ns.name.as_str());
    let applied = dry_run_apply(overlay.path(), &[]);
    assert_eq!(applied.len(), base.len(), "{applied:?}");

    // Pod Security enforces on pods, not Deployments: the operator's pod
    // template goes in as a pod (dry run) under the base's labels.
    let account = moved.iter().find(|o| kind(o) == "ServiceAccount").unwrap();
    let account: ServiceAccount = serde_json::from_value(account.clone()).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let deployment = moved.iter().find(|o| kind(o) == "Deployment").unwrap();
    let template = &deployment["spec"]["template"];
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "operator-template", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    let dry = PostParams { dry_run: true, ..Default::default() };
    pods.create(&dry, &pod).await.unwrap_or_else(|e| panic!("the operator's pod is not admitted: {e}"));
    let mut privileged = pod.clone();
    privileged.spec.as_mut().unwrap().containers[0].security_context.as_mut().unwrap().privileged =
        Some(true);
    assert!(
        pods.create(&dry, &privileged).await.is_err(),
        "the base's Namespace labels must make the apiserver refuse a privileged pod"
    );

    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn samples_are_admitted_by_the_apiserver() {
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "hone-samples", &[]).await.unwrap();
    // The kustomization (what `kubectl apply -k config/samples` and the Argo CD
    // Application install), then every sample file, listed there or not.
    let set = kustomize(&repo().join("config/samples"));
    assert!(!set.is_empty(), "config/samples' kustomization renders nothing");
    let applied = dry_run_apply("config/samples", &["--namespace", &ns.name]);
    assert_eq!(applied.len(), set.len(), "{applied:?}");
    let mut kinds: Vec<String> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        kinds.extend(parse_yaml(&text).iter().map(|o| kind(o).to_owned()));
        let path = file.to_str().unwrap();
        let out = run_kubectl(&["apply", "--server-side", "--dry-run=server", "-f", path, "-n", &ns.name]);
        assert!(out.contains("serverside-applied (server dry run)"), "{path}: {out}");
    }
    for wanted in HEALTH_KINDS {
        assert!(kinds.iter().any(|k| k == wanted), "no {wanted} among the samples: {kinds:?}");
    }
    ns.cleanup().await.unwrap();
}

#[tokio::test]
async fn argocd_applications_and_health_checks_are_admitted() {
    let client = client().await.unwrap();
    let fetch = Command::new(repo().join("config/argocd/test/application-crd.sh")).output().unwrap();
    assert!(fetch.status.success(), "application-crd.sh: {}", String::from_utf8_lossy(&fetch.stderr));
    let crd = String::from_utf8(fetch.stdout).unwrap().lines().last().unwrap().trim().to_owned();
    // The CRD stays installed, like the Hone CRDs: other runs reuse it.
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(&crd).unwrap()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(&name, &PatchParams::apply("hone-tests").force(), &Patch::Apply(&crd)).await.unwrap();
    wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let conditions = crds.get(&name).await?.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
        }
    })
    .await
    .unwrap();

    let objects = kustomize(&repo().join("config/argocd"));
    let apps: Vec<&Value> = objects.iter().filter(|o| kind(o) == "Application").collect();
    assert_eq!(apps.len(), 2, "{objects:?}");
    for app in &apps {
        let source = &app["spec"]["source"];
        let path = source["path"].as_str().unwrap();
        assert!(repo().join(path).is_dir(), "Application source path {path} is not in the repository");
        assert!(source["repoURL"].as_str().unwrap().contains("REPLACE"), "repoURL must be marked to replace");
        let options: Vec<&str> = app["spec"]["syncPolicy"]["syncOptions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(options.contains(&"ServerSideApply=true"), "{options:?}");
        assert!(options.contains(&"CreateNamespace=true"), "{options:?}");
    }
    let chart = apps.iter().find(|a| a["spec"]["source"]["path"] == "charts/hone").unwrap();
    assert_eq!(chart["spec"]["destination"]["namespace"], "hone-system");

    let ns = TestNamespace::create(&client, "hone-argocd", &[]).await.unwrap();
    let overlay = Overlay::new("config/argocd", &ns.name);
    let applied = dry_run_apply(overlay.path(), &[]);
    assert_eq!(applied.len(), objects.len(), "{applied:?}");
    ns.cleanup().await.unwrap();
}

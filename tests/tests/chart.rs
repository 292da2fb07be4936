//! The Helm chart on a real apiserver: `helm template` output (defaults, and
//! with watched namespaces) applied with a server-side dry run into a
//! namespace that enforces Pod Security "restricted", so schemas, RBAC
//! objects and pod admission are all checked by the apiserver itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use hone_cluster_tests::{TestNamespace, client, install_crds};
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client, ResourceExt};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// helm, built once from its Go module by hack/build-helm.sh (cached).
fn helm() -> PathBuf {
    let out = Command::new(repo().join("hack/build-helm.sh")).output().expect("running hack/build-helm.sh");
    assert!(out.status.success(), "build-helm: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

fn render(namespace: &str, extra: &[&str]) -> Vec<DynamicObject> {
    let out = Command::new(helm())
        .current_dir(repo())
        .args(["template", "hone", "charts/hone", "--namespace", namespace])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            (!value.is_null()).then(|| serde_json::from_value(value).unwrap())
        })
        .collect()
}

/// Server-side dry-run apply of every object; returns the kinds applied.
async fn dry_run(client: &Client, namespace: &str, objects: &[DynamicObject]) -> Vec<String> {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let params = PatchParams::apply("hone-tests").dry_run().force();
    let mut kinds = Vec::new();
    for obj in objects {
        let types = obj.types.clone().expect("every rendered object has apiVersion and kind");
        let gvk = kube::api::GroupVersionKind::try_from(&types).unwrap();
        let (resource, caps) = discovery.resolve_gvk(&gvk).unwrap_or_else(|| panic!("unknown kind {gvk:?}"));
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = obj.namespace().unwrap_or_else(|| namespace.to_owned());
                Api::namespaced_with(client.clone(), &ns, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", types.kind, obj.name_any()));
        kinds.push(types.kind);
    }
    kinds
}

#[tokio::test]
async fn chart_renders_objects_the_apiserver_admits_in_a_restricted_namespace() {
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let restricted = [("pod-security.kubernetes.io/enforce", "restricted")];
    let ns = TestNamespace::create(&client, "hone-chart", &restricted).await.unwrap();
    let a = TestNamespace::create(&client, "hone-chart-a", &[]).await.unwrap();

    let kinds = dry_run(&client, &ns.name, &render(&ns.name, &[])).await;
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing from {kinds:?}");
    }
    // Pod Security only warns about Deployments; it enforces on pods. So the
    // operator's pod template goes in as a pod (dry run), where it is enforced.
    let objects = render(&ns.name, &[]);
    let deployment = objects.iter().find(|o| o.types.as_ref().unwrap().kind == "Deployment").unwrap();
    let template = deployment.data["spec"]["template"].clone();
    // The pod names the chart's ServiceAccount, which has to exist for real.
    let account = objects.iter().find(|o| o.types.as_ref().unwrap().kind == "ServiceAccount").unwrap();
    let account: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::to_value(account).unwrap()).unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&kube::api::PostParams::default(), &account)
        .await
        .unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "operator-template", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns.name)
        .create(&kube::api::PostParams { dry_run: true, ..Default::default() }, &pod)
        .await
        .unwrap_or_else(|e| panic!("the operator's pod is not admitted under restricted: {e}"));
    let mut privileged = pod.clone();
    privileged.spec.as_mut().unwrap().containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .allow_privilege_escalation = Some(true);
    let refused = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns.name)
        .create(&kube::api::PostParams { dry_run: true, ..Default::default() }, &privileged)
        .await;
    assert!(refused.is_err(), "the namespace must enforce restricted for this check to mean anything");

    // Watching namespaces: Roles there instead of a ClusterRole.
    let scoped = render(&ns.name, &["--set", &format!("watchNamespaces={{{}}}", a.name)]);
    let kinds = dry_run(&client, &ns.name, &scoped).await;
    assert!(!kinds.iter().any(|k| k == "ClusterRole"), "{kinds:?}");
    assert!(
        scoped
            .iter()
            .any(|o| o.types.as_ref().unwrap().kind == "Role" && o.namespace() == Some(a.name.clone()))
    );

    a.cleanup().await.unwrap();
    ns.cleanup().await.unwrap();
}

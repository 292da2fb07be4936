//! The chart's monitoring objects on a real apiserver: the Prometheus
//! Operator CRDs (from its Go module, hack/prometheus-operator-crds.sh) are
//! installed, then `helm template` with monitoring on (the cluster-capability
//! path and the `monitoring.force` path) is applied with a server-side dry
//! run, so the CRDs' own schemas judge the ServiceMonitor, PodMonitors and
//! PrometheusRule. The PodMonitors must select the pods the operator builds.
//!
//! The CRDs stay installed: other tests never render monitoring objects, and
//! a second run (or a parallel one) applies the same objects again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hone_cluster_tests::{TestNamespace, client, wait_for};
use hone_crds::consts::{
    LABEL_DATASET, LABEL_INFERENCE_SERVICE, LABEL_MODEL_VERSION, LABEL_TRAINING_JOB, LABEL_VARIANT,
};
use hone_operator::children::child_labels;
use hone_operator::inferenceservice::desired::router::router_selector;
use hone_operator::inferenceservice::names::{ADMIN_PORT_NAME, COMPONENT_PREDICTOR, LABEL_COMPONENT};
use hone_operator::trainingjob::desired::TRAINER_METRICS_PORT_NAME;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

/// The Prometheus Operator CRDs the chart renders objects of.
const CRDS: [&str; 3] = ["servicemonitors", "podmonitors", "prometheusrules"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Last line of a hack/ script's output (the path it built or fetched).
fn hack(script: &str) -> PathBuf {
    let out = Command::new(repo().join("hack").join(script)).output().expect(script);
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim())
}

fn render(namespace: &str, extra: &[&str]) -> Vec<DynamicObject> {
    let out = Command::new(hack("build-helm.sh"))
        .current_dir(repo())
        .args(["template", "hone", "charts/hone", "--namespace", namespace])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            (!value.is_null()).then(|| serde_json::from_value(value).unwrap())
        })
        .collect()
}

fn kind(obj: &DynamicObject) -> &str {
    &obj.types.as_ref().expect("every rendered object has apiVersion and kind").kind
}

fn of_kind<'a>(objects: &'a [DynamicObject], wanted: &str) -> Vec<&'a DynamicObject> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

/// Installs the three CRDs (server-side apply: they are too big for the
/// last-applied annotation) and waits until each is Established.
async fn install_monitoring_crds(client: &Client) {
    let dir = hack("prometheus-operator-crds.sh");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("hone-tests").force();
    for plural in CRDS {
        let path = dir.join(format!("monitoring.coreos.com_{plural}.yaml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd)).await.unwrap();
        wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let conditions = api.get(&name).await?.status.and_then(|s| s.conditions).unwrap_or_default();
                Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
            }
        })
        .await
        .unwrap();
    }
}

/// Server-side dry-run apply of one object.
async fn dry_run_one(client: &Client, discovery: &Discovery, obj: &DynamicObject) -> Result<(), kube::Error> {
    let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
    let (resource, caps) = discovery.resolve_gvk(&gvk).unwrap_or_else(|| panic!("unknown kind {gvk:?}"));
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), &obj.namespace().unwrap(), &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply("hone-tests").dry_run().force();
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj)).await.map(|_| ())
}

async fn dry_run_all(client: &Client, objects: &[DynamicObject]) {
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    for obj in objects {
        dry_run_one(client, &discovery, obj)
            .await
            .unwrap_or_else(|e| panic!("{} {} refused: {e}", kind(obj), obj.name_any()));
    }
}

/// Every label `selector.matchLabels` asks for is on `labels`, and every
/// `Exists` expression names one of them.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let matched = selector["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let exists = selector["matchExpressions"].as_array().into_iter().flatten().all(|e| {
        assert_eq!(e["operator"], "Exists", "{e}");
        labels.contains_key(e["key"].as_str().unwrap())
    });
    matched && exists
}

/// The meta label Prometheus's Kubernetes discovery gives a pod label.
fn pod_meta_label(label: &str) -> String {
    let clean: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("__meta_kubernetes_pod_label_{clean}")
}

/// Checks the monitoring objects of one render.
fn check_monitoring_objects(objects: &[DynamicObject], namespace: &str) {
    let monitors = of_kind(objects, "ServiceMonitor");
    assert_eq!(monitors.len(), 1, "one ServiceMonitor");
    let service = of_kind(objects, "Service")[0];
    let wanted = &monitors[0].data["spec"]["selector"];
    let service_labels: BTreeMap<String, String> = service.labels().clone();
    assert!(selects(wanted, &service_labels), "the ServiceMonitor does not select {}", service.name_any());
    assert_eq!(monitors[0].data["spec"]["namespaceSelector"]["matchNames"][0], namespace);
    let port = &monitors[0].data["spec"]["endpoints"][0]["port"];
    assert_eq!(
        &service.data["spec"]["ports"][0]["name"], port,
        "the ServiceMonitor names the Service's port"
    );

    // The pods the operator builds: child labels plus the component's selector.
    let router_pod: BTreeMap<String, String> = child_labels(LABEL_INFERENCE_SERVICE, "digits")
        .into_iter()
        .chain(router_selector("digits"))
        .collect();
    let mut predictor_pod = child_labels(LABEL_INFERENCE_SERVICE, "digits");
    predictor_pod.extend([
        (LABEL_VARIANT.to_owned(), "stable".to_owned()),
        (LABEL_MODEL_VERSION.to_owned(), "digits-v1".to_owned()),
        (LABEL_COMPONENT.to_owned(), COMPONENT_PREDICTOR.to_owned()),
    ]);
    let pod_monitors = of_kind(objects, "PodMonitor");
    assert_eq!(pod_monitors.len(), 3, "predictor, router and trainer PodMonitors");
    let by_pod = |labels: &BTreeMap<String, String>| -> Vec<String> {
        pod_monitors
            .iter()
            .filter(|m| selects(&m.data["spec"]["selector"], labels))
            .map(|m| m.name_any())
            .collect()
    };
    let predictors = by_pod(&predictor_pod);
    let routers = by_pod(&router_pod);
    assert_eq!(predictors.len(), 1, "exactly one PodMonitor selects predictor pods: {predictors:?}");
    assert_eq!(routers.len(), 1, "exactly one PodMonitor selects router pods: {routers:?}");
    assert_ne!(predictors, routers);
    // Training pods carry the child labels of their TrainingJob.
    let trainers = by_pod(&child_labels(LABEL_TRAINING_JOB, "cnn"));
    assert_eq!(trainers.len(), 1, "exactly one PodMonitor selects training pods: {trainers:?}");
    assert!(trainers != predictors && trainers != routers);
    assert!(
        by_pod(&child_labels(LABEL_INFERENCE_SERVICE, "digits")).is_empty()
            && by_pod(&child_labels(LABEL_DATASET, "digits")).is_empty(),
        "other children are not scraped"
    );
    for monitor in &pod_monitors {
        let spec = &monitor.data["spec"];
        assert_eq!(spec["namespaceSelector"]["any"], true, "every namespace: {spec}");
        let endpoint = &spec["podMetricsEndpoints"][0];
        if monitor.name_any() == trainers[0] {
            // The trainer's live figures, on the port the operator names.
            assert_eq!(endpoint["port"], TRAINER_METRICS_PORT_NAME);
            assert_eq!(endpoint["path"], "/metrics");
            let relabel = endpoint["relabelings"].as_array().unwrap();
            let tj =
                relabel.iter().find(|r| r["targetLabel"] == "trainingjob").expect("a trainingjob relabeling");
            assert_eq!(tj["sourceLabels"][0], pod_meta_label(LABEL_TRAINING_JOB));
            continue;
        }
        // Routers and predictors serve their metrics on the admin port, off
        // the client port (where a predictor's need its API key).
        assert_eq!(endpoint["port"], ADMIN_PORT_NAME, "the container port the operator names");
        assert_eq!(endpoint["path"], "/metrics");
        // The `inferenceservice` label the rules and the dashboard group by.
        let relabel = |target: &str| {
            endpoint["relabelings"].as_array().unwrap().iter().find(|r| r["targetLabel"] == target).cloned()
        };
        let isvc = relabel("inferenceservice").expect("an inferenceservice relabeling");
        assert_eq!(isvc["sourceLabels"][0], pod_meta_label(LABEL_INFERENCE_SERVICE));
        if monitor.name_any() == predictors[0] {
            let variant = relabel("variant").expect("predictors get a variant label");
            assert_eq!(variant["sourceLabels"][0], pod_meta_label(LABEL_VARIANT));
        } else {
            assert!(relabel("variant").is_none(), "router series carry their own variant label");
        }
    }

    let rules = of_kind(objects, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    let alerts: Vec<&str> = rules[0].data["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for alert in [
        "HoneTrainingJobFailed",
        "HoneInferenceServiceErrorRate",
        "HoneInferenceServiceLatencyP99",
        "HonePredictorInputDrift",
        "HoneRolloutAborted",
    ] {
        assert!(alerts.contains(&alert), "{alert} missing from {alerts:?}");
    }
    let text = serde_json::to_string(&rules[0].data).unwrap();
    assert!(!text.contains(".Values"), "every Helm placeholder is filled: {text}");

    let dashboards: Vec<_> =
        of_kind(objects, "ConfigMap").into_iter().filter(|c| c.name_any().ends_with("-dashboard")).collect();
    assert_eq!(dashboards.len(), 1);
    assert_eq!(dashboards[0].labels().get("grafana_dashboard").map(String::as_str), Some("1"));
    let json: Value =
        serde_json::from_str(dashboards[0].data["data"]["hone.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "hone-overview");

    let policies = of_kind(objects, "NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let spec = &policies[0].data["spec"];
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    assert_eq!(spec["ingress"].as_array().unwrap().len(), 1, "one ingress rule: the metrics port");
    assert_eq!(spec["ingress"][0]["ports"][0]["port"], "metrics");
    let egress_ports: Vec<i64> = spec["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap())
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    // 9090: the router pods' admin port, where canary analysis reads /metrics.
    for port in [443, 6443, 53, i64::from(hone_crds::router::ADMIN_PORT)] {
        assert!(egress_ports.contains(&port), "egress to {port} missing: {egress_ports:?}");
    }
}

#[tokio::test]
async fn monitoring_objects_pass_the_prometheus_operator_schemas() {
    let client = client().await.unwrap();
    install_monitoring_crds(&client).await;
    let ns = TestNamespace::create(&client, "hone-monitoring", &[]).await.unwrap();
    let on = ["--set", "monitoring.enabled=true", "--set", "networkPolicy.enabled=true"];

    // The cluster serves monitoring.coreos.com/v1 (as `helm install` would see).
    let mut with_capability = on.to_vec();
    with_capability.extend(["--api-versions", "monitoring.coreos.com/v1"]);
    let objects = render(&ns.name, &with_capability);
    check_monitoring_objects(&objects, &ns.name);
    dry_run_all(&client, &objects).await;

    // Offline: monitoring.force renders the same objects without the capability.
    let mut forced = on.to_vec();
    forced.extend(["--set", "monitoring.force=true", "--set", "monitoring.labels.release=kps"]);
    let objects = render(&ns.name, &forced);
    check_monitoring_objects(&objects, &ns.name);
    for obj in of_kind(&objects, "PodMonitor") {
        assert_eq!(obj.labels().get("release").map(String::as_str), Some("kps"), "monitoring.labels");
    }
    dry_run_all(&client, &objects).await;

    // Neither: no Prometheus Operator objects (they would fail the install),
    // but the dashboard needs no CRD.
    let objects = render(&ns.name, &on);
    for absent in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(of_kind(&objects, absent).is_empty(), "{absent} rendered without the API or force");
    }
    assert!(of_kind(&objects, "ConfigMap").iter().any(|c| c.name_any().ends_with("-dashboard")));
    // Off by default.
    let defaults = render(&ns.name, &[]);
    for absent in ["ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"] {
        assert!(of_kind(&defaults, absent).is_empty(), "{absent} rendered by default");
    }

    // The dry runs mean something: the CRD schema refuses a bad interval.
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut broken = of_kind(&render(&ns.name, &forced), "PodMonitor")[0].clone();
    broken.data["spec"]["podMetricsEndpoints"][0]["interval"] = Value::from("every minute");
    let refused = dry_run_one(&client, &discovery, &broken).await;
    assert!(refused.is_err(), "a PodMonitor with interval 'every minute' was accepted");

    ns.cleanup().await.unwrap();
}

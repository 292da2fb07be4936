//! The desired children: names, labels, owners, pods, autoscaling, router, route.

use std::collections::BTreeMap;

use hone_crds::router::RouterConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::inferenceservice::desired::{self, Desired};
use crate::inferenceservice::rollout::Canary;

const AB: &str = "
variants:
- {name: a, modelVersion: digits-v1, weight: 90}
- {name: b, track: {model: digits}, weight: 10}
predictor:
  gpus: 1
  env: [{name: LOG, value: debug}]
  batching: {maxBatchSize: 16, maxLatencyMs: 3}
  apiKeySecretRef: {name: keys}
autoscaling: {minReplicas: 2, maxReplicas: 5, targetCPUUtilizationPercentage: 70}
routing: {stickyHeader: x-user}
";

fn build(yaml: &str) -> Desired {
    let valid = valid(yaml, &three_versions());
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    desired::build(&valid, &plan, true)
}

fn deployment<'a>(desired: &'a Desired, name: &str) -> &'a Deployment {
    desired.deployments.iter().find(|d| d.metadata.name.as_deref() == Some(name)).unwrap()
}

fn pod(deployment: &Deployment) -> PodSpec {
    deployment.spec.clone().unwrap().template.spec.unwrap()
}

fn container(deployment: &Deployment) -> Container {
    pod(deployment).containers[0].clone()
}

fn env(container: &Container) -> BTreeMap<String, String> {
    container.env.clone().unwrap().into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect()
}

#[test]
fn every_child_is_named_labelled_and_owned() {
    let desired = build(AB);
    let names: Vec<_> = desired.deployments.iter().filter_map(|d| d.metadata.name.clone()).collect();
    assert_eq!(names, ["digits-a-v1", "digits-b-v3", "digits-router"]);
    let metas = desired
        .deployments
        .iter()
        .map(|d| &d.metadata)
        .chain(desired.services.iter().map(|s| &s.metadata))
        .chain(desired.autoscalers.iter().map(|h| &h.metadata))
        .chain(desired.disruption_budgets.iter().map(|p| &p.metadata))
        .chain(desired.config_maps.iter().map(|c| &c.metadata));
    for meta in metas {
        assert_eq!(meta.namespace.as_deref(), Some("ml"));
        let labels = meta.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "hone");
        assert_eq!(labels["app.kubernetes.io/part-of"], "hone");
        assert_eq!(labels["hone.dev/inferenceservice"], "digits");
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("InferenceService", "uid-1", Some(true))
        );
    }
    let a = deployment(&desired, "digits-a-v1");
    let labels = a.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels["hone.dev/variant"], "a");
    assert_eq!(labels["hone.dev/modelversion"], "digits-v1");
    assert_eq!(labels["app.kubernetes.io/component"], "predictor");
    assert_eq!(a.spec.as_ref().unwrap().replicas, None, "the HPA owns replicas");
    let selector = a.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
    let service =
        desired.services.iter().find(|s| s.metadata.name.as_deref() == Some("digits-a-v1")).unwrap();
    assert_eq!(service.spec.as_ref().unwrap().selector.as_ref(), Some(&selector));
    assert_eq!(service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 8080);
}

#[test]
fn predictor_pods_pass_restricted_and_carry_the_model() {
    let desired = build(AB);
    let a = deployment(&desired, "digits-a-v1");
    let pod = pod(a);
    let pod_security = pod.security_context.clone().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = container(a);
    let security = c.security_context.clone().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(c.image.as_deref(), Some("hone.local/predictor:dev"));
    assert_eq!(c.args, Some(vec!["serve".to_owned()]));
    let vars = env(&c);
    assert_eq!(vars["HONE_MODEL_URI"], "s3://models/digits-v1/model.pt");
    assert_eq!(vars["HONE_MODEL_FORMAT"], "TorchScript");
    assert!(vars["HONE_MODEL_DIGEST"].starts_with("sha256:"));
    assert_eq!(vars["HONE_MODEL_NAME"], "digits");
    assert_eq!(vars["HONE_MODEL_VERSION"], "1");
    assert_eq!((vars["HONE_MAX_BATCH_SIZE"].as_str(), vars["HONE_MAX_LATENCY_MS"].as_str()), ("16", "3"));
    assert_eq!(vars["HONE_API_KEYS_FILE"], "/etc/hone/api-keys");
    assert_eq!(vars["LOG"], "debug");
    assert_eq!(c.env_from.unwrap()[0].secret_ref.as_ref().unwrap().name, "s3");
    assert_eq!(c.resources.unwrap().limits.unwrap()["nvidia.com/gpu"].0, "1");
    let readiness = c.readiness_probe.unwrap().http_get.unwrap();
    assert_eq!(
        (readiness.path.as_deref(), &readiness.port),
        (Some("/v2/health/ready"), &IntOrString::String("http".into()))
    );
    assert_eq!(c.liveness_probe.unwrap().http_get.unwrap().path.as_deref(), Some("/v2/health/live"));
    // A slow model download never restarts the pod: ten minutes to turn ready.
    let startup = c.startup_probe.unwrap();
    assert_eq!(startup.http_get.unwrap().path.as_deref(), Some("/v2/health/ready"));
    assert_eq!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap(), 600);
    assert_eq!(c.lifecycle.unwrap().pre_stop.unwrap().sleep.unwrap().seconds, 5);
    assert!(pod.termination_grace_period_seconds.unwrap() > 5 + 30);
    let volumes = pod.volumes.unwrap();
    assert!(volumes.iter().any(|v| v.name == "scratch" && v.empty_dir.is_some()));
    assert_eq!(
        volumes
            .iter()
            .find(|v| v.name == "api-keys")
            .unwrap()
            .secret
            .as_ref()
            .unwrap()
            .secret_name
            .as_deref(),
        Some("keys")
    );
    let mounts = c.volume_mounts.unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/tmp"));
}

#[test]
fn default_resources_give_the_cpu_target_a_request() {
    let desired = build("variants: [{name: a, modelVersion: digits-v1, weight: 100}]");
    let resources = container(deployment(&desired, "digits-a-v1")).resources.unwrap();
    assert_eq!(resources.requests.unwrap()["cpu"].0, "500m");
    assert!(!resources.limits.unwrap().contains_key("nvidia.com/gpu"));
}

#[test]
fn autoscaler_with_and_without_requests_per_second() {
    let desired = build(AB);
    let hpa = desired.autoscalers[0].spec.clone().unwrap();
    assert_eq!(hpa.scale_target_ref.name, "digits-a-v1");
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 5));
    let metrics = hpa.metrics.unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].resource.as_ref().unwrap().target.average_utilization, Some(70));
    let rps = build(&AB.replace(
        "targetCPUUtilizationPercentage: 70",
        "targetCPUUtilizationPercentage: 70, targetRequestsPerSecond: 40",
    ));
    let metrics = rps.autoscalers[0].spec.clone().unwrap().metrics.unwrap();
    let pods = metrics[1].pods.as_ref().unwrap();
    assert_eq!(metrics[1].type_, "Pods");
    assert_eq!(pods.metric.name, "hone_predictor_requests_per_second");
    assert_eq!(pods.target.average_value.as_ref().unwrap().0, "40");
}

#[test]
fn disruption_budgets_let_one_pod_go_at_a_time() {
    let desired = build(AB);
    assert_eq!(desired.disruption_budgets.len(), 3, "two variants and the router");
    for pdb in &desired.disruption_budgets {
        let spec = pdb.spec.clone().unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
    }
}

#[test]
fn router_config_lists_backends_by_weight_with_the_headers() {
    let desired = build(AB);
    let config = desired.router_config.clone().unwrap();
    assert_eq!(config.sticky_header.as_deref(), Some("x-user"));
    assert_eq!(config.variant_header, "x-hone-variant");
    let backends: Vec<_> =
        config.variants.iter().map(|v| (v.name.as_str(), v.url.as_str(), v.weight)).collect();
    assert_eq!(
        backends,
        [("a", "http://digits-a-v1.ml.svc:8080", 9000), ("b", "http://digits-b-v3.ml.svc:8080", 1000)]
    );
    assert!(
        config.variants.iter().all(|v| v.pinnable && v.canary_of.is_none()),
        "named variants with traffic"
    );
    let text = &desired.config_maps[0].data.as_ref().unwrap()["router.yaml"];
    assert_eq!(serde_yaml::from_str::<RouterConfig>(text).unwrap(), config);
    assert_eq!(desired.url.as_deref(), Some("http://digits-router.ml.svc:8080"));
    let router = deployment(&desired, "digits-router");
    let c = container(router);
    assert_eq!(c.image.as_deref(), Some("hone.local/router:dev"), "the router's own image, no libtorch");
    assert_eq!(c.args, None, "the image's entrypoint is hone-router");
    assert_eq!(env(&c)["HONE_ROUTER_CONFIG"], "/etc/hone/router/router.yaml");
    let ports: Vec<_> = c
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(ports, [("http".to_owned(), 8080), ("admin".to_owned(), 9090)]);
    let service_ports = desired.services.last().unwrap().spec.clone().unwrap().ports.unwrap();
    assert_eq!(service_ports.len(), 1, "the Service exposes the client port only");
    assert_eq!(service_ports[0].port, 8080);
    assert_eq!(router.spec.as_ref().unwrap().replicas, Some(2));
    let template = router.spec.as_ref().unwrap().template.metadata.clone().unwrap();
    assert_eq!(template.annotations, None, "no config hash: the router reloads the file");
    assert_eq!(pod(router).volumes.unwrap()[0].config_map.as_ref().unwrap().name, "digits-router");
    // It follows that ConfigMap through the API, as its own ServiceAccount.
    assert_eq!(env(&c)["HONE_ROUTER_CONFIG_MAP"], "ml/digits-router");
    let spec = pod(router);
    assert_eq!(spec.service_account_name.as_deref(), Some("digits-router"));
    assert_eq!(spec.automount_service_account_token, Some(true));
}

#[test]
fn the_router_may_read_its_own_config_map_and_nothing_else() {
    let desired = build(AB);
    let [account] = desired.service_accounts.as_slice() else { panic!("one ServiceAccount") };
    assert_eq!(account.metadata.name.as_deref(), Some("digits-router"));
    assert_eq!(account.automount_service_account_token, Some(false), "only the router pods mount its token");
    let [role] = desired.roles.as_slice() else { panic!("one Role") };
    let rules = role.rules.clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(rules[0].resources.as_deref(), Some(&["configmaps".to_owned()][..]));
    assert_eq!(rules[0].resource_names.as_deref(), Some(&["digits-router".to_owned()][..]));
    assert_eq!(rules[0].verbs, ["get", "list", "watch"]);
    let [binding] = desired.role_bindings.as_slice() else { panic!("one RoleBinding") };
    assert_eq!(binding.role_ref.name, "digits-router");
    let subject = &binding.subjects.as_ref().unwrap()[0];
    assert_eq!((subject.kind.as_str(), subject.name.as_str()), ("ServiceAccount", "digits-router"));
    assert_eq!(subject.namespace.as_deref(), Some("ml"));
    for meta in [&account.metadata, &role.metadata, &binding.metadata] {
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].kind, "InferenceService", "removed with it");
    }
}

#[test]
fn a_canary_splits_its_variant_weight() {
    let valid = valid(AB, &three_versions());
    let mut plan = plan_of(&valid, &Default::default(), &[], at(0));
    let model = valid.models["digits-v2"].clone();
    plan.variants[0].canary = Some(Canary { model, weight: 10, backend: "a-v2".into(), shadow: None });
    let desired = desired::build(&valid, &plan, true);
    let config = desired.router_config.clone().unwrap();
    let weights: Vec<_> = config.variants.iter().map(|v| (v.name.as_str(), v.weight)).collect();
    assert_eq!(weights, [("a", 8100), ("a-v2", 900), ("b", 1000)]);
    assert!(desired.deployments.iter().any(|d| d.metadata.name.as_deref() == Some("digits-a-v2")));
    // Clients may pin the variants, never the canary, and no sticky value lands on it.
    let pins: Vec<_> =
        config.variants.iter().map(|v| (v.name.as_str(), v.pinnable, v.canary_of.as_deref())).collect();
    assert_eq!(pins, [("a", true, None), ("a-v2", false, Some("a")), ("b", true, None)]);
}

#[test]
fn allow_canary_pinning_makes_every_backend_pinnable() {
    let yaml = AB.replace(
        "routing: {stickyHeader: x-user}",
        "routing: {stickyHeader: x-user, allowCanaryPinning: true}",
    );
    let valid = valid(&yaml, &three_versions());
    assert!(valid.routing.allow_canary_pinning);
    let mut plan = plan_of(&valid, &Default::default(), &[], at(0));
    let model = valid.models["digits-v2"].clone();
    plan.variants[0].canary = Some(Canary { model, weight: 100, backend: "a-v2".into(), shadow: None });
    let config = desired::build(&valid, &plan, true).router_config.unwrap();
    let pins: Vec<_> = config.variants.iter().map(|v| (v.name.as_str(), v.weight, v.pinnable)).collect();
    assert_eq!(pins, [("a", 0, true), ("a-v2", 9000, true), ("b", 1000, true)]);
    // Without it, a variant whose traffic all went to its canary is not pinnable either.
    let valid = super::valid(AB, &three_versions());
    let mut plan = plan_of(&valid, &Default::default(), &[], at(0));
    let model = valid.models["digits-v2"].clone();
    plan.variants[0].canary = Some(Canary { model, weight: 100, backend: "a-v2".into(), shadow: None });
    let config = desired::build(&valid, &plan, true).router_config.unwrap();
    let pins: Vec<_> = config.variants.iter().map(|v| (v.name.as_str(), v.weight, v.pinnable)).collect();
    assert_eq!(pins, [("a", 0, false), ("a-v2", 9000, false), ("b", 1000, true)]);
}

#[test]
fn nothing_servable_means_no_router() {
    let valid = valid("variants: [{name: a, modelVersion: missing, weight: 100}]", &three_versions());
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    let desired = desired::build(&valid, &plan, true);
    assert!(desired.deployments.is_empty() && desired.config_maps.is_empty() && desired.url.is_none());
}

#[test]
fn gateway_api_gets_a_weighted_http_route_with_header_matches() {
    // A sticky header is refused with this provider (tests/validate.rs).
    let ab = AB.replace("routing: {stickyHeader: x-user}\n", "");
    let yaml = format!(
        "{ab}traffic: {{provider: GatewayAPI, gateway: {{parentRefs: [{{name: web, namespace: infra, sectionName: http}}], hostnames: [digits.example.com]}}}}"
    );
    let desired = build(&yaml);
    assert!(desired.config_maps.is_empty() && desired.router_config.is_none());
    assert_eq!(desired.url.as_deref(), Some("http://digits.example.com"));
    let route = desired.route.clone().unwrap();
    assert_eq!(route.types.as_ref().unwrap().api_version, "gateway.networking.k8s.io/v1");
    assert_eq!(route.types.as_ref().unwrap().kind, "HTTPRoute");
    assert_eq!(route.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-1");
    let spec = &route.data["spec"];
    assert_eq!(
        spec["parentRefs"][0],
        serde_json::json!({"name": "web", "namespace": "infra", "sectionName": "http"})
    );
    assert_eq!(spec["hostnames"][0], "digits.example.com");
    let rules = spec["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0]["matches"][0]["headers"][0]["value"], "a");
    assert_eq!(rules[0]["matches"][0]["headers"][0]["name"], "x-hone-variant");
    assert_eq!(
        rules[2]["backendRefs"][1],
        serde_json::json!({"name": "digits-b-v3", "port": 8080, "weight": 1000})
    );
    // A canary gets weight in the default rule but no header rule of its own.
    let valid = valid(&yaml, &three_versions());
    let mut plan = plan_of(&valid, &Default::default(), &[], at(0));
    let model = valid.models["digits-v2"].clone();
    plan.variants[0].canary = Some(Canary { model, weight: 10, backend: "a-v2".into(), shadow: None });
    let route = desired::build(&valid, &plan, true).route.unwrap();
    let rules = route.data["spec"]["rules"].as_array().unwrap().clone();
    let pinned: Vec<_> =
        rules.iter().filter_map(|r| r["matches"][0]["headers"][0]["value"].as_str()).collect();
    assert_eq!(pinned, ["a", "b"]);
    assert_eq!(rules.last().unwrap()["backendRefs"].as_array().unwrap().len(), 3);
    let valid = super::valid(&yaml, &three_versions());
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    assert!(desired::build(&valid, &plan, false).route.is_none(), "no route without the Gateway API");
}

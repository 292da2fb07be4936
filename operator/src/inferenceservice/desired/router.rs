//! The `Router` provider: the router config (a ConfigMap the router reloads
//! on change), the router Deployment, its Service (the stable endpoint) and
//! its PodDisruptionBudget, all named `<isvc>-router`.

use std::collections::BTreeMap;

use hone_crds::consts::LABEL_INFERENCE_SERVICE;
use hone_crds::router::{CONFIG_FILE, Mirror, RouterConfig, VariantBackend};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::names::{
    COMPONENT_ROUTER, LABEL_COMPONENT, LIVE_PATH, READY_PATH, ROUTER_CONFIG_DIR, ROUTER_CONFIG_VOLUME,
    ROUTER_CONTAINER, ROUTER_REPLICAS, TERMINATION_GRACE_SECONDS, router_name,
};
use super::super::validate::ValidService;
use super::Backend;
use super::router_access::{RouterAccess, router_access};
use super::scaling::{client_and_admin_ports, disruption_budget, http_probe, meta, pre_stop_sleep, selector};
use crate::children::{restricted_container_security_context, restricted_pod_security_context};

/// The router's objects.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterObjects {
    /// What the router routes by.
    pub config: RouterConfig,
    /// The config file.
    pub config_map: ConfigMap,
    /// The router pods.
    pub deployment: Deployment,
    /// The stable endpoint.
    pub service: k8s_openapi::api::core::v1::Service,
    /// The router's disruption budget.
    pub disruption_budget: k8s_openapi::api::policy::v1::PodDisruptionBudget,
    /// Its ServiceAccount and its right to read the ConfigMap.
    pub access: RouterAccess,
}

/// The labels that select the router pods of an InferenceService.
pub fn router_selector(isvc: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INFERENCE_SERVICE.to_owned(), isvc.to_owned()),
        (LABEL_COMPONENT.to_owned(), COMPONENT_ROUTER.to_owned()),
    ])
}

/// The router config for `backends` (relative weights, which may be pinned,
/// canaries and their variants, headers from `spec.routing`).
pub fn router_config(valid: &ValidService, backends: &[Backend]) -> RouterConfig {
    RouterConfig {
        variants: backends
            .iter()
            .map(|b| VariantBackend {
                name: b.name.clone(),
                url: b.url.clone(),
                weight: b.weight,
                pinnable: b.pinnable,
                canary_of: b.canary_of.clone(),
            })
            .collect(),
        sticky_header: valid.routing.sticky_header.clone(),
        variant_header: valid.routing.variant_header.clone(),
        mirrors: backends
            .iter()
            .filter_map(|b| {
                Some(Mirror {
                    source: b.canary_of.clone()?,
                    target: b.name.clone(),
                    percent: b.mirror_percent?,
                })
            })
            .collect(),
        feedback_key: valid.feedback_key.clone(),
    }
}

/// Builds the router objects routing to `backends`.
pub fn router_objects(valid: &ValidService, backends: &[Backend]) -> RouterObjects {
    let name = router_name(&valid.name);
    let pods = router_selector(&valid.name);
    let config = router_config(valid, backends);
    // Serialising plain structs of strings and integers cannot fail; an empty
    // file would make the router keep its last good config.
    let text = serde_yaml::to_string(&config).unwrap_or_default();
    let config_map = ConfigMap {
        metadata: meta(valid, &name, &pods),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), text)])),
        ..Default::default()
    };
    // The config's hash is deliberately not in the pod template: the router
    // reloads the mounted file, so a weight change restarts no pod.
    let container = Container {
        name: ROUTER_CONTAINER.to_owned(),
        // The image's entrypoint is hone-router itself: no subcommand.
        image: Some(valid.router_image.clone()),
        // Metrics (canary analysis, PodMonitor) and /router/config on `admin`.
        ports: Some(client_and_admin_ports()),
        env: Some(vec![
            EnvVar {
                name: hone_crds::router::env::CONFIG.to_owned(),
                value: Some(format!("{ROUTER_CONFIG_DIR}/{CONFIG_FILE}")),
                value_from: None,
            },
            // Weight changes through the API within moments; the mounted file
            // is only the config to start with.
            EnvVar {
                name: hone_crds::router::env::CONFIG_MAP.to_owned(),
                value: Some(format!("{}/{name}", valid.namespace)),
                value_from: None,
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("100m".to_owned())),
                ("memory".to_owned(), Quantity("64Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("256Mi".to_owned()))])),
            ..Default::default()
        }),
        readiness_probe: Some(http_probe(READY_PATH, 5)),
        liveness_probe: Some(http_probe(LIVE_PATH, 10)),
        lifecycle: Some(pre_stop_sleep()),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: ROUTER_CONFIG_VOLUME.to_owned(),
            mount_path: ROUTER_CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: ROUTER_CONFIG_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource { name: name.clone(), ..Default::default() }),
            ..Default::default()
        }]),
        security_context: Some(restricted_pod_security_context()),
        // Its own identity, which may read only its ConfigMap (router_access).
        service_account_name: Some(name.clone()),
        automount_service_account_token: Some(true),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(valid, &name, &pods),
        spec: Some(DeploymentSpec {
            replicas: Some(ROUTER_REPLICAS),
            selector: selector(&pods),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: meta(valid, &name, &pods).labels, ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        status: None,
    };
    RouterObjects {
        config,
        config_map,
        deployment,
        service: super::scaling::service(valid, &name, &pods, &pods),
        disruption_budget: disruption_budget(valid, &name, &pods, &pods),
        access: router_access(valid, &name, &name, &pods),
    }
}

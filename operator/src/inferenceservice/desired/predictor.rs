//! One variant's predictors for one ModelVersion: Deployment, Service, HPA
//! and PodDisruptionBudget, all named `<isvc>-<variant>-v<version>`.

use std::collections::BTreeMap;

use hone_crds::consts::{LABEL_INFERENCE_SERVICE, LABEL_MODEL_VERSION, LABEL_VARIANT};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretEnvSource, SecretVolumeSource, Service, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use hone_crds::router::ADMIN_PORT;

use super::super::names::{
    API_KEYS_DIR, API_KEYS_VOLUME, COMPONENT_PREDICTOR, GPU_RESOURCE, LABEL_COMPONENT, LIVE_PATH,
    MODEL_VOLUME, PREDICTOR_CONTAINER, READY_PATH, SHUTDOWN_GRACE_SECONDS, TERMINATION_GRACE_SECONDS, env,
    label_value, predictor_name,
};
use super::super::validate::{ModelRef, ValidService};
use super::scaling::{
    autoscaler, client_and_admin_ports, disruption_budget, http_probe, meta, pre_stop_sleep, selector,
    service, startup_probe,
};
use crate::children::{
    restricted_container_security_context, restricted_pod_security_context, scratch_mount, scratch_volume,
};
use crate::labels::{ENV_PVC_ROOT, PVC_ROOT};

/// The four objects of one variant's ModelVersion.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictorObjects {
    /// The predictor pods.
    pub deployment: Deployment,
    /// Their Service (a router backend).
    pub service: Service,
    /// Their autoscaler.
    pub autoscaler: HorizontalPodAutoscaler,
    /// Their disruption budget.
    pub disruption_budget: PodDisruptionBudget,
}

/// The labels that select one variant's ModelVersion's pods.
pub fn pod_selector(valid: &ValidService, variant: &str, model: &ModelRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INFERENCE_SERVICE.to_owned(), valid.name.clone()),
        (LABEL_VARIANT.to_owned(), variant.to_owned()),
        (LABEL_MODEL_VERSION.to_owned(), label_value(&model.name)),
        (LABEL_COMPONENT.to_owned(), COMPONENT_PREDICTOR.to_owned()),
    ])
}

/// Builds the predictors of `variant` serving `model`.
pub fn predictor_objects(valid: &ValidService, variant: &str, model: &ModelRef) -> PredictorObjects {
    let name = predictor_name(&valid.name, variant, model.version);
    let pods = pod_selector(valid, variant, model);
    let template_meta = ObjectMeta {
        labels: Some(meta(valid, &name, &pods).labels.unwrap_or_default()),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(valid, &name, &pods),
        spec: Some(DeploymentSpec {
            // No `replicas`: the HPA owns it, and an apply that set it would fight the HPA.
            selector: selector(&pods),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(3),
            template: PodTemplateSpec { metadata: Some(template_meta), spec: Some(pod_spec(valid, model)) },
            ..Default::default()
        }),
        status: None,
    };
    PredictorObjects {
        deployment,
        service: service(valid, &name, &pods, &pods),
        autoscaler: autoscaler(valid, &name, &pods, &valid.autoscaling),
        disruption_budget: disruption_budget(valid, &name, &pods, &pods),
    }
}

fn pod_spec(valid: &ValidService, model: &ModelRef) -> PodSpec {
    let predictor = &valid.predictor;
    let mut volumes = vec![scratch_volume()];
    let mut mounts = vec![scratch_mount()];
    if let Some(secret) = &predictor.api_key_secret_ref {
        volumes.push(Volume {
            name: API_KEYS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret.name.clone()), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: API_KEYS_VOLUME.to_owned(),
            mount_path: API_KEYS_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if let Some(claim) = &model.pvc_claim {
        volumes.push(Volume {
            name: MODEL_VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: MODEL_VOLUME.to_owned(),
            mount_path: format!("{PVC_ROOT}/{claim}"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let env_from = model.secret.as_ref().map(|name| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: name.clone(), optional: Some(false) }),
            ..Default::default()
        }]
    });
    let container = Container {
        name: PREDICTOR_CONTAINER.to_owned(),
        image: Some(valid.image.clone()),
        args: Some(vec!["serve".to_owned()]),
        // Metrics and drift without a key on `admin`, for the PodMonitor.
        ports: Some(client_and_admin_ports()),
        env: Some(predictor_env(valid, model)),
        env_from,
        resources: Some(resources(valid)),
        startup_probe: Some(startup_probe(READY_PATH)),
        readiness_probe: Some(http_probe(READY_PATH, 5)),
        liveness_probe: Some(http_probe(LIVE_PATH, 10)),
        lifecycle: Some(pre_stop_sleep()),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(restricted_pod_security_context()),
        // The predictor never talks to the apiserver.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        ..Default::default()
    }
}

/// The predictor's environment: the model, batching, API keys, then the
/// spec's own variables (validation keeps them off the managed names).
pub fn predictor_env(valid: &ValidService, model: &ModelRef) -> Vec<EnvVar> {
    let predictor = &valid.predictor;
    let mut vars =
        vec![(env::MODEL_URI, model.uri.clone()), (env::MODEL_FORMAT, model.format.as_str().to_owned())];
    if let Some(digest) = &model.digest {
        vars.push((env::MODEL_DIGEST, digest.clone()));
    }
    // The card carries the preprocessing and class names: pinned like the model.
    if let Some(digest) = &model.card_digest {
        vars.push((env::MODEL_CARD_DIGEST, digest.clone()));
    }
    // The InferenceService's name, not the model's: variants may serve
    // different models, and clients call one `/v2/models/<name>` path.
    vars.push((env::MODEL_NAME, valid.name.clone()));
    vars.push((env::MODEL_VERSION, model.version.to_string()));
    if let Some(batching) = &predictor.batching {
        vars.push((env::MAX_BATCH_SIZE, batching.max_batch_size.to_string()));
        vars.push((env::MAX_LATENCY_MS, batching.max_latency_ms.to_string()));
    }
    if predictor.api_key_secret_ref.is_some() {
        vars.push((env::API_KEYS_FILE, API_KEYS_DIR.to_owned()));
    }
    if model.pvc_claim.is_some() {
        vars.push((ENV_PVC_ROOT, PVC_ROOT.to_owned()));
    }
    vars.push((env::SHUTDOWN_GRACE_SECONDS, SHUTDOWN_GRACE_SECONDS.to_string()));
    vars.push((env::ADMIN_ADDR, format!("0.0.0.0:{ADMIN_PORT}")));
    let mut env: Vec<EnvVar> = vars
        .into_iter()
        .map(|(name, value)| EnvVar { name: name.to_owned(), value: Some(value), value_from: None })
        .collect();
    env.extend(predictor.env.iter().flatten().cloned());
    env
}

/// The spec's resources (modest defaults when it names none, so the CPU
/// target of the HPA has a request to measure against), plus the GPUs.
pub fn resources(valid: &ValidService) -> ResourceRequirements {
    let mut resources = valid.predictor.resources.clone().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("500m".to_owned())),
            ("memory".to_owned(), Quantity("512Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("2Gi".to_owned()))])),
        ..Default::default()
    });
    if let Some(gpus) = valid.predictor.gpus.filter(|g| *g > 0) {
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.to_owned(), Quantity(gpus.to_string()));
    }
    resources
}

//! InferenceService validation: the checks CEL cannot make, and each
//! variant's ModelVersion resolved (by name, or by `track` with its gates).
//! Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hone_crds::inferenceservice::{
    ANNOTATION_ROUTER_METRICS_URL, Analysis, Autoscaling, DEFAULT_PROGRESS_DEADLINE, GatewayTraffic,
    MAX_PROGRESS_DEADLINE_SECONDS, MIN_PROGRESS_DEADLINE_SECONDS, PredictorSpec, RolloutStrategy, Routing,
    Track, TrafficProvider,
};
use hone_crds::modelversion::ArtifactFormat;
use hone_crds::{InferenceService, ModelVersion};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::manual::{self, ActionRequest};
use super::names::env::MANAGED;
use super::track::{self, GateFailure, is_ready};
use crate::children::{MAX_NAME_LEN, controller_owner_ref};
use crate::duration::parse_duration;

/// Why an InferenceService cannot be reconciled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The spec passed the schema but cannot be used; the message says how to fix it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The object lacks metadata the apiserver always sets (name, namespace, uid).
    #[error("inferenceservice metadata is missing {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "invalid_spec",
            Self::MissingMetadata(_) => "missing_metadata",
        }
    }
}

/// A servable ModelVersion: what a predictor Deployment needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    /// The ModelVersion's object name.
    pub name: String,
    /// Its version number.
    pub version: i64,
    /// Artifact URI.
    pub uri: String,
    /// The artifact's format (`HONE_MODEL_FORMAT`).
    pub format: ArtifactFormat,
    /// Expected digest (the spec's, else the verified one).
    pub digest: Option<String>,
    /// Expected digest of the model card (the spec's, else the verified one).
    pub card_digest: Option<String>,
    /// Secret with storage credentials.
    pub secret: Option<String>,
    /// Claim of a `pvc://` artifact, mounted into the pod.
    pub pvc_claim: Option<String>,
}

/// Where a variant's model comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A ModelVersion by name.
    ModelVersion(String),
    /// The newest passing version of a model.
    Track(Track),
}

/// One variant with its model resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidVariant {
    /// Variant name.
    pub name: String,
    /// Percent of traffic in the spec.
    pub weight: i32,
    /// Where its model comes from.
    pub source: Source,
    /// The ModelVersion it should serve, or why none can be served yet.
    pub target: Result<ModelRef, String>,
    /// Ready versions a gate kept out (track variants).
    pub gate_failures: Vec<GateFailure>,
}

/// An InferenceService whose spec can be built, with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidService {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Controller reference every child carries.
    pub owner: OwnerReference,
    /// `metadata.generation`.
    pub generation: i64,
    /// Predictor image.
    pub image: String,
    /// Router image (the operator's setting; a spec cannot name one).
    pub router_image: String,
    /// Predictor pods.
    pub predictor: PredictorSpec,
    /// Autoscaling of every predictor Deployment.
    pub autoscaling: Autoscaling,
    /// Header routing.
    pub routing: Routing,
    /// Rollout strategy.
    pub strategy: RolloutStrategy,
    /// Canary steps, percent of the variant's traffic.
    pub steps: Vec<i32>,
    /// Time at each step.
    pub step_interval: Duration,
    /// Canary thresholds.
    pub analysis: Analysis,
    /// Percent of the variant's requests mirrored to the new version in the
    /// shadow step, when the rollout has one.
    pub shadow: Option<u32>,
    /// Key the router signs its request ids with (set by the controller from
    /// the operator's feedback secret; `None` turns feedback off).
    pub feedback_key: Option<String>,
    /// How long a rollout may wait without progress before it is aborted.
    pub progress_deadline: Duration,
    /// What splits traffic.
    pub provider: TrafficProvider,
    /// Gateway attachment (GatewayAPI).
    pub gateway: Option<GatewayTraffic>,
    /// Override of where router metrics are read.
    pub metrics_url: Option<String>,
    /// Variants in spec order.
    pub variants: Vec<ValidVariant>,
    /// A rollout action asked for by hand (`hone.dev/rollout-action`).
    pub action: Option<ActionRequest>,
    /// Every servable ModelVersion of the namespace, by name (for what status says is served).
    pub models: BTreeMap<String, ModelRef>,
    /// Names of the namespace's Ready ModelVersions (what a rollback may return to).
    pub ready_models: BTreeSet<String>,
}

/// Checks `isvc` and resolves its variants against `model_versions` (the
/// namespace's); `default_image` is the predictor image when the spec names none.
pub fn validate(
    isvc: &InferenceService,
    model_versions: &[ModelVersion],
    default_image: &str,
    router_image: &str,
    allow_metrics_url: bool,
) -> Result<ValidService, Error> {
    let name = isvc.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = isvc.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    let owner = controller_owner_ref(isvc).ok_or(Error::MissingMetadata("uid"))?;
    let spec = &isvc.spec;
    if !is_dns1035_label(&name) {
        return Err(invalid(format!(
            "the name {name:?} becomes part of Service names, which must be DNS-1035 labels: use at most \
             {MAX_NAME_LEN} lower-case letters, digits and '-', starting with a letter"
        )));
    }
    let predictor = spec.predictor.clone().unwrap_or_default();
    validate_env(&predictor)?;
    let rollout = spec.rollout.clone().unwrap_or_default();
    let step_interval = parse_duration(&rollout.step_interval).ok_or_else(|| {
        invalid(format!(
            "spec.rollout.stepInterval {:?} is not a duration; write e.g. 1m",
            rollout.step_interval
        ))
    })?;
    let progress_deadline = progress_deadline(&rollout.progress_deadline)?;
    let traffic = spec.traffic.clone().unwrap_or_default();
    if traffic.provider == TrafficProvider::GatewayApi && traffic.gateway.is_none() {
        return Err(invalid("traffic.provider GatewayAPI needs traffic.gateway.parentRefs"));
    }
    let sticky = spec.routing.as_ref().and_then(|r| r.sticky_header.as_deref());
    if let (TrafficProvider::GatewayApi, Some(header)) = (traffic.provider, sticky) {
        // Gateway API v1.6 has session persistence only in its experimental
        // channel, and of another kind: a session the gateway issues (a
        // cookie or a header it sets), not a split by a header the client
        // chooses. Silently ignoring the field would leave users unpinned.
        return Err(invalid(format!(
            "routing.stickyHeader {header:?} is not supported with traffic.provider GatewayAPI: the Gateway API \
             (v1.6 standard channel) cannot keep requests with the same header value on one variant; use \
             traffic.provider Router, or remove routing.stickyHeader"
        )));
    }
    let shadow = rollout.shadow.as_ref().map(|s| s.percent);
    if let Some(percent) = shadow {
        if !(1..=100).contains(&percent) {
            return Err(invalid(format!("rollout.shadow.percent {percent} must be between 1 and 100")));
        }
        if rollout.strategy != RolloutStrategy::Canary {
            return Err(invalid(
                "rollout.shadow needs rollout.strategy Canary: an Immediate rollout has no steps to precede",
            ));
        }
        if traffic.provider != TrafficProvider::Router {
            return Err(invalid(
                "rollout.shadow needs traffic.provider Router: only Hone's router mirrors requests and \
                 compares the answers; remove rollout.shadow or use the Router provider",
            ));
        }
    }
    let metrics_url = isvc.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_ROUTER_METRICS_URL));
    if metrics_url.is_some() && !allow_metrics_url {
        return Err(invalid(format!(
            "annotation {ANNOTATION_ROUTER_METRICS_URL} is not accepted: it would make the operator fetch a URL \
             the object's author chooses; remove it, or run the operator with --allow-router-metrics-url \
             (tests, meshes you control)"
        )));
    }
    if let Some(url) = metrics_url
        && !url.starts_with("http://")
    {
        return Err(invalid(format!(
            "annotation {ANNOTATION_ROUTER_METRICS_URL} {url:?} must be an http:// URL of a Prometheus text page"
        )));
    }
    validate_variant_names(isvc)?;
    let models: BTreeMap<String, ModelRef> = model_versions
        .iter()
        .filter_map(|mv| Some((mv.metadata.name.clone()?, model_ref(mv).ok()?)))
        .collect();
    let variants = spec.variants.iter().map(|v| resolve(v, model_versions)).collect::<Result<_, _>>()?;
    Ok(ValidService {
        name,
        namespace,
        owner,
        generation: isvc.metadata.generation.unwrap_or_default(),
        image: predictor.image.clone().unwrap_or_else(|| default_image.to_owned()),
        router_image: router_image.to_owned(),
        predictor,
        autoscaling: spec.autoscaling.clone().unwrap_or_default(),
        routing: spec.routing.clone().unwrap_or_default(),
        strategy: rollout.strategy,
        steps: rollout.steps.clone(),
        step_interval,
        analysis: rollout.analysis.clone().unwrap_or_default(),
        shadow: shadow.and_then(|p| u32::try_from(p).ok()),
        feedback_key: None,
        progress_deadline,
        provider: traffic.provider,
        gateway: traffic.gateway,
        metrics_url: metrics_url.cloned(),
        variants,
        action: isvc.metadata.annotations.as_ref().and_then(manual::request),
        models,
        ready_models: model_versions
            .iter()
            .filter(|mv| is_ready(mv))
            .filter_map(|mv| mv.metadata.name.clone())
            .collect(),
    })
}

/// `spec.rollout.progressDeadline` as a duration within its bounds.
fn progress_deadline(text: &str) -> Result<Duration, Error> {
    let (min, max) = (MIN_PROGRESS_DEADLINE_SECONDS, MAX_PROGRESS_DEADLINE_SECONDS);
    let bounds = format!("between {min}s and {}h (default {DEFAULT_PROGRESS_DEADLINE})", max / 3600);
    let deadline = parse_duration(text).ok_or_else(|| {
        invalid(format!("spec.rollout.progressDeadline {text:?} is not a duration; write e.g. 10m, {bounds}"))
    })?;
    if deadline < Duration::from_secs(min) || deadline > Duration::from_secs(max) {
        return Err(invalid(format!(
            "spec.rollout.progressDeadline {text:?} is out of range: a rollout may wait without progress \
             {bounds}"
        )));
    }
    Ok(deadline)
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidSpec(message.into())
}

fn resolve(
    variant: &hone_crds::inferenceservice::Variant,
    model_versions: &[ModelVersion],
) -> Result<ValidVariant, Error> {
    let (source, target, gate_failures) = match (&variant.model_version, &variant.track) {
        (Some(name), None) => {
            let target = match model_versions.iter().find(|mv| mv.metadata.name.as_deref() == Some(name)) {
                None => Err(format!("ModelVersion {name} does not exist")),
                Some(mv) if !is_ready(mv) => Err(format!("ModelVersion {name} is not Ready ({})", phase(mv))),
                Some(mv) => model_ref(mv),
            };
            (Source::ModelVersion(name.clone()), target, Vec::new())
        }
        (None, Some(track)) => {
            let choice = track::select(track, model_versions);
            let target = match choice.chosen {
                Some(mv) => model_ref(mv),
                None => Err(format!(
                    "no Ready ModelVersion of model {} passes the minMetrics gates{}",
                    track.model,
                    choice
                        .gate_failures
                        .first()
                        .map(|f| format!(" ({}: {})", f.model_version, f.message))
                        .unwrap_or_default()
                )),
            };
            (Source::Track(track.clone()), target, choice.gate_failures)
        }
        _ => {
            return Err(invalid(format!(
                "variant {}: set exactly one of modelVersion and track",
                variant.name
            )));
        }
    };
    Ok(ValidVariant { name: variant.name.clone(), weight: variant.weight, source, target, gate_failures })
}

fn phase(mv: &ModelVersion) -> String {
    mv.status.as_ref().and_then(|s| s.phase).map_or_else(|| "Pending".to_owned(), |p| format!("{p:?}"))
}

/// The servable form of `mv`; an error when a pod could not load its artifact.
pub fn model_ref(mv: &ModelVersion) -> Result<ModelRef, String> {
    let name = mv.metadata.name.clone().unwrap_or_default();
    let artifact = &mv.spec.artifact;
    let uri = mv
        .artifact_location()
        .ok_or_else(|| format!("ModelVersion {name}'s artifact {} is not resolved yet", artifact.uri.trim()))?
        .to_owned();
    let pvc_claim = match uri.split_once("://") {
        Some(("pvc", rest)) => Some(rest.split('/').next().unwrap_or_default().to_owned()),
        Some(("file", _)) => {
            return Err(format!(
                "ModelVersion {name}'s artifact {uri} is a file:// URI, which no pod can read"
            ));
        }
        _ => None,
    };
    let verified = mv.status.as_ref().and_then(|s| s.verified_digest.clone());
    let verified_card = mv.status.as_ref().and_then(|s| s.verified_card_digest.clone());
    Ok(ModelRef {
        name,
        version: mv.spec.version,
        uri,
        format: artifact.format,
        digest: artifact.digest.clone().or(verified),
        card_digest: artifact.card_digest.clone().or(verified_card),
        secret: artifact.secret_ref.as_ref().map(|s| s.name.clone()),
        pvc_claim,
    })
}

/// Canary backends are named `<variant>-v<version>`; a variant with such a
/// name would collide with another variant's canary in the router.
fn validate_variant_names(isvc: &InferenceService) -> Result<(), Error> {
    let names: Vec<&str> = isvc.spec.variants.iter().map(|v| v.name.as_str()).collect();
    for name in &names {
        if let Some((base, version)) = name.rsplit_once("-v")
            && !version.is_empty()
            && version.bytes().all(|b| b.is_ascii_digit())
            && names.contains(&base)
        {
            return Err(invalid(format!(
                "variant name {name:?} is reserved for the canary backends of variant {base:?} \
                 (<variant>-v<version>); rename it"
            )));
        }
    }
    Ok(())
}

fn validate_env(predictor: &PredictorSpec) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    for var in predictor.env.iter().flatten() {
        if MANAGED.contains(&var.name.as_str()) {
            return Err(invalid(format!(
                "spec.predictor.env sets {}, which the operator sets from the ModelVersion and \
                 spec.predictor; remove it",
                var.name
            )));
        }
        if !seen.insert(var.name.as_str()) {
            return Err(invalid(format!("spec.predictor.env sets {} twice; keep one", var.name)));
        }
    }
    Ok(())
}

fn is_dns1035_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && !text.ends_with('-')
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

//! `InferenceService`: serves ModelVersions behind one endpoint with
//! autoscaling, A/B splits and guarded (canary) rollouts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretRef;

/// Message of the rule that weights sum to 100.
pub const WEIGHTS_MESSAGE: &str = "variant weights must sum to 100";
/// Message of the rule that variant names are unique.
pub const UNIQUE_NAMES_MESSAGE: &str = "variant names must be unique";
/// Message of the rule on the number of variants.
pub const VARIANT_COUNT_MESSAGE: &str = "an InferenceService has 1 to 5 variants";
/// Message of the rule that a variant names exactly one model source.
pub const ONE_SOURCE_MESSAGE: &str = "set exactly one of modelVersion and track";

/// Annotation naming one URL that serves the router's Prometheus metrics,
/// read for canary analysis instead of the router pods (for tests, or a
/// metrics proxy).
pub const ANNOTATION_ROUTER_METRICS_URL: &str = "hone.dev/router-metrics-url";

/// Annotation asking the operator for a rollout action by hand:
/// [`ROLLOUT_ACTION_PROMOTE`] or [`ROLLOUT_ACTION_ROLLBACK`] (`kubectl hone
/// promote|rollback` sets it). Honoured once per
/// [`ANNOTATION_ROLLOUT_ACTION_ID`]; `status.lastRolloutAction` records it.
pub const ANNOTATION_ROLLOUT_ACTION: &str = "hone.dev/rollout-action";
/// Annotation: a new value for every request, so a repeated command is a new request.
pub const ANNOTATION_ROLLOUT_ACTION_ID: &str = "hone.dev/rollout-action-id";
/// Annotation (optional): the variant the request is for; a rollout of
/// another variant ignores it (a rollback then returns this variant to its
/// previous good version).
pub const ANNOTATION_ROLLOUT_ACTION_VARIANT: &str = "hone.dev/rollout-action-variant";
/// [`ANNOTATION_ROLLOUT_ACTION`] value: skip the remaining steps and promote now.
pub const ROLLOUT_ACTION_PROMOTE: &str = "promote";
/// [`ANNOTATION_ROLLOUT_ACTION`] value: abort the rollout in progress and
/// return all traffic to the old version; with none in progress, return the
/// variant to its previous good version in `status.history`.
pub const ROLLOUT_ACTION_ROLLBACK: &str = "rollback";

/// Condition: every variant has ready predictors.
pub const CONDITION_PREDICTORS_READY: &str = "PredictorsReady";
/// Condition: the router (or HTTPRoute) is in place.
pub const CONDITION_ROUTE_READY: &str = "RouteReady";
/// Condition: a rollout is moving traffic.
pub const CONDITION_ROLLOUT_PROGRESSING: &str = "RolloutProgressing";
/// Condition: serving, but something is wrong (e.g. a rollout was aborted).
pub const CONDITION_DEGRADED: &str = "Degraded";
/// PredictorsReady reason while a referenced ModelVersion is missing or not Ready.
pub const REASON_MODEL_VERSION_NOT_READY: &str = "ModelVersionNotReady";
/// Degraded reason after canary analysis failed.
pub const REASON_ROLLOUT_ABORTED: &str = "RolloutAborted";
/// Degraded reason (and Event) after a rollout was rolled back by hand, or a
/// variant was returned to its previous good version by hand.
pub const REASON_MANUAL_ROLLBACK: &str = "ManualRollback";
/// Degraded reason (and Warning Event) after a rollout waited past
/// `spec.rollout.progressDeadline` (for its predictors, the router's metrics
/// or enough canary requests) and was aborted.
pub const REASON_PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// Default of `spec.rollout.progressDeadline` (a Deployment's default too).
pub const DEFAULT_PROGRESS_DEADLINE: &str = "10m";
/// Shortest `spec.rollout.progressDeadline`, in seconds.
pub const MIN_PROGRESS_DEADLINE_SECONDS: u64 = 10;
/// Longest `spec.rollout.progressDeadline`, in seconds (one day).
pub const MAX_PROGRESS_DEADLINE_SECONDS: u64 = 86_400;
/// Event reason of a rollout promoted by hand before its last step.
pub const REASON_MANUAL_PROMOTION: &str = "ManualPromotion";
/// Event reason of a rollout action that found nothing to act on.
pub const REASON_ROLLOUT_ACTION_IGNORED: &str = "RolloutActionIgnored";
/// RouteReady reason when the GatewayAPI provider is chosen but the Gateway API CRDs are missing.
pub const REASON_GATEWAY_API_NOT_INSTALLED: &str = "GatewayAPINotInstalled";

/// Serves one or more ModelVersions behind one stable endpoint, with
/// autoscaling, A/B traffic splits and canary rollouts that promote or roll
/// back on live metrics.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hone.dev",
    version = "v1alpha1",
    kind = "InferenceService",
    namespaced,
    derive = "PartialEq",
    status = "InferenceServiceStatus",
    shortname = "isvc",
    category = "hone",
    doc = "InferenceService serves ModelVersions behind one stable endpoint with autoscaling, A/B splits and canary rollouts.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Progressing, Ready or Degraded"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Canary-Weight", type_ = "integer", json_path = ".status.rollout.canaryWeight"),
    printcolumn(
        name = "Rollout-To",
        type_ = "string",
        json_path = ".status.rollout.toVersion",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceSpec {
    /// The models served and the share of traffic each gets.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 5").message(VARIANT_COUNT_MESSAGE))]
    #[x_kube(validation = Rule::new("self.map(v, v.weight).sum() == 100").message(WEIGHTS_MESSAGE))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(w, w.name == v.name))").message(UNIQUE_NAMES_MESSAGE))]
    pub variants: Vec<Variant>,
    /// The predictor pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor: Option<PredictorSpec>,
    /// Horizontal autoscaling of each variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Header-based routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// How a change of a variant's model is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// What splits the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// Keep an MLflow alias (in the operator's MLflow registry) on the model
    /// version a variant serves, moved after each promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_alias: Option<MlflowAlias>,
}

/// An MLflow registered-model alias that follows what a variant serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlflowAlias {
    /// The alias, e.g. `champion` (MLflow refuses `latest` and `v<number>`).
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub alias: String,
    /// The variant whose stable ModelVersion the alias names (default: the
    /// first variant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub variant: Option<String>,
}

/// Where `spec.mlflowAlias` points now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlflowAliasStatus {
    /// The alias.
    pub alias: String,
    /// Pending (not set yet or retrying), Synced, or Failed (see `message`).
    pub state: crate::modelversion::RegistrySyncState,
    /// The ModelVersion it should name (the variant's stable version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The MLflow registered model the alias is set on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_model: Option<String>,
    /// The MLflow model version it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tries since the version it should name last changed.
    #[serde(default)]
    pub attempts: u32,
    /// Why it is not Synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was last tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// One model behind the endpoint and its share of traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.modelVersion) != has(self.track)").message(ONE_SOURCE_MESSAGE))]
pub struct Variant {
    /// Variant name (a DNS label), e.g. `a`, `b`, `stable`.
    #[schemars(length(min = 1, max = 20), regex(pattern = crate::common::DNS_LABEL_PATTERN))]
    pub name: String,
    /// ModelVersion to serve (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub model_version: Option<String>,
    /// Follow the newest Ready ModelVersion of a model that passes the gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// Percent of traffic (0 to 100); the weights of all variants sum to 100.
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,
}

/// Follow the newest Ready ModelVersion of a model whose metrics pass every gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    /// Model name to follow.
    #[schemars(length(min = 1, max = 50), regex(pattern = crate::common::DNS_LABEL_PATTERN))]
    pub model: String,
    /// Minimum metric values a version needs, e.g. `val_accuracy: 0.95`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_metrics: Option<BTreeMap<String, f64>>,
}

/// The predictor pods of every variant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictorSpec {
    /// Predictor image. Unset: the operator's default predictor image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory per predictor pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// GPUs per predictor pod (shortcut for the `nvidia.com/gpu` limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: Option<u32>,
    /// Extra environment for the predictor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub env: Option<Vec<EnvVar>>,
    /// Dynamic batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// Secret whose values are accepted API keys; unset: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretRef>,
}

/// Dynamic batching of concurrent requests into one forward pass.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batching {
    /// Most samples in one forward pass.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_batch_size: u32,
    /// Longest a request waits for others to fill a batch, in milliseconds.
    #[serde(default = "default_max_latency_ms")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_latency_ms: u32,
}

fn default_max_batch_size() -> u32 {
    32
}

fn default_max_latency_ms() -> u32 {
    5
}

/// Horizontal autoscaling (autoscaling/v2) of each variant's predictors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas"))]
pub struct Autoscaling {
    /// Fewest replicas per variant.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most replicas per variant.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, percent of requests.
    #[serde(default = "default_cpu_target", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Target requests per second per pod (a Pods metric,
    /// `hone_predictor_requests_per_second`, served by a metrics adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_requests_per_second: Option<i32>,
}

impl InferenceService {
    /// True when the ModelVersion `name` is served or about to be: named by a
    /// variant's spec, by the status, or on either side of a rollout. The
    /// ModelVersion deletion guard (`servedBy`) rests on this.
    pub fn serves(&self, name: &str) -> bool {
        let in_spec = self.spec.variants.iter().any(|v| v.model_version.as_deref() == Some(name));
        let in_status = self.status.as_ref().is_some_and(|s| {
            s.variants.iter().any(|v| v.model_version.as_deref() == Some(name))
                || s.rollout.as_ref().is_some_and(|r| r.from_version == name || r.to_version == name)
                || s.aborted_rollouts.iter().any(|a| a.from_version.as_deref() == Some(name))
        });
        in_spec || in_status
    }
}

impl Default for Autoscaling {
    fn default() -> Self {
        Self {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_cpu_target(),
            target_requests_per_second: None,
        }
    }
}

fn default_min_replicas() -> i32 {
    1
}

fn default_max_replicas() -> i32 {
    3
}

fn default_cpu_target() -> i32 {
    80
}

/// Header-based routing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// A request carrying this header always lands on the same variant for
    /// the same header value (consistent hashing by weight). A variant's
    /// canary gets its share of the variant's sticky traffic by round robin,
    /// never by the header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::common::HEADER_NAME_PATTERN))]
    pub sticky_header: Option<String>,
    /// A request carrying this header goes to the variant it names, which
    /// must be one of `spec.variants` with weight above 0 (anything else is
    /// answered 400), unless `allowCanaryPinning` is set.
    #[serde(default = "default_variant_header")]
    #[schemars(length(min = 1, max = 128), regex(pattern = crate::common::HEADER_NAME_PATTERN))]
    pub variant_header: String,
    /// Let the variant header also name a canary backend (`<variant>-v<N>`)
    /// or a variant at weight 0. Off by default: a client that can pick the
    /// canary can move its metrics, and so the rollout's decision. Turn it on
    /// only where every client is trusted (e.g. for smoke tests of a canary).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_canary_pinning: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Self { sticky_header: None, variant_header: default_variant_header(), allow_canary_pinning: false }
    }
}

fn default_variant_header() -> String {
    crate::consts::DEFAULT_VARIANT_HEADER.to_owned()
}

/// How a change of a variant's `modelVersion` reaches traffic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `Immediate` switches at once; `Canary` moves traffic through `steps`.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Canary traffic percentages, ascending, each 1 to 99.
    #[serde(default = "default_steps")]
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(validation = Rule::new("self.all(s, s >= 1 && s <= 99) && self.isSorted()").message("rollout.steps are ascending percentages between 1 and 99"))]
    pub steps: Vec<i32>,
    /// Time at each step before analysis decides, e.g. `1m`.
    #[serde(default = "default_step_interval")]
    #[schemars(regex(pattern = crate::common::DURATION_PATTERN))]
    pub step_interval: String,
    /// A shadow step before the live steps: the new version receives a copy
    /// of a share of the variant's requests while every client is answered by
    /// the stable version, for one `stepInterval`. Analysis compares the two
    /// answers (agreement, prediction distribution, confidence, errors)
    /// before any client sees the new version. Needs `traffic.provider: Router`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStep>,
    /// What the canary must meet at each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// How long a rollout may wait without progress (for its new predictors
    /// to be ready, for the router's metrics, for `minRequests` once a step's
    /// interval is over) before it is aborted with reason
    /// `ProgressDeadlineExceeded`; 10s to 24h, default `10m`.
    #[serde(default = "default_progress_deadline")]
    #[schemars(regex(pattern = crate::common::DURATION_PATTERN))]
    pub progress_deadline: String,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            steps: default_steps(),
            step_interval: default_step_interval(),
            shadow: None,
            analysis: None,
            progress_deadline: default_progress_deadline(),
        }
    }
}

fn default_progress_deadline() -> String {
    DEFAULT_PROGRESS_DEADLINE.to_owned()
}

fn default_steps() -> Vec<i32> {
    vec![10, 50]
}

fn default_step_interval() -> String {
    "1m".to_owned()
}

/// Rollout strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    /// Replace the model at once.
    #[default]
    Immediate,
    /// Move traffic through steps while analysis passes; abort on failure.
    Canary,
}

/// The shadow step of a canary rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowStep {
    /// Percent (1 to 100) of the variant's inference requests mirrored to the new version.
    #[schemars(range(min = 1, max = 100))]
    pub percent: i32,
}

/// Canary analysis, read from the router's per-variant metrics. Every check
/// compares the canary with the stable version of its variant over the same
/// window where it can; each has a default, and a failure names the check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Highest acceptable fraction of 5xx answers (0 to 1); in the shadow
    /// step, of mirrored requests that failed.
    #[serde(default = "default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
    /// Highest acceptable p99 latency in milliseconds.
    #[serde(default = "default_max_p99_latency_ms")]
    #[schemars(range(min = 1.0))]
    pub max_p99_latency_ms: f64,
    /// Fewest canary requests in a step (mirrored requests compared, in the
    /// shadow step) before analysis may pass.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 0))]
    pub min_requests: i64,
    /// When set, replaces `maxErrorRate`: the canary's error rate may exceed
    /// the stable version's over the same window by at most this (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate_increase: Option<f64>,
    /// When set, replaces `maxP99LatencyMs`: the canary's p99 latency may be
    /// at most this many times the stable version's over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub max_p99_latency_ratio: Option<f64>,
    /// Highest population stability index between the canary's and the
    /// stable version's predicted classes over the same window (0.25 by
    /// default, the usual mark of a significant shift; 0 turns it off).
    #[serde(default = "default_max_prediction_psi")]
    #[schemars(range(min = 0.0))]
    pub max_prediction_psi: f64,
    /// Largest drop of mean top-1 confidence, stable minus canary (0.1 by default; 1 turns it off).
    #[serde(default = "default_max_confidence_drop")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_confidence_drop: f64,
    /// Fewest predictions on each side before the PSI and confidence checks
    /// judge (100 by default): fewer are too noisy to compare.
    #[serde(default = "default_min_prediction_samples")]
    #[schemars(range(min = 1))]
    pub min_prediction_samples: i64,
    /// Lowest fraction of compared samples on which the shadow's top-1 class
    /// agrees with the stable version's, in the shadow step (0.9 by default).
    #[serde(default = "default_min_shadow_agreement")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_shadow_agreement: f64,
    /// When set, the canary's online accuracy (ground truth sent to the
    /// router's `POST /feedback`) must be at least this once `minFeedback`
    /// labels arrived in the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_online_accuracy: Option<f64>,
    /// Fewest feedback labels before `minOnlineAccuracy` judges (50 by default).
    #[serde(default = "default_min_feedback")]
    #[schemars(range(min = 1))]
    pub min_feedback: i64,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            max_error_rate: default_max_error_rate(),
            max_p99_latency_ms: default_max_p99_latency_ms(),
            min_requests: default_min_requests(),
            max_error_rate_increase: None,
            max_p99_latency_ratio: None,
            max_prediction_psi: default_max_prediction_psi(),
            max_confidence_drop: default_max_confidence_drop(),
            min_prediction_samples: default_min_prediction_samples(),
            min_shadow_agreement: default_min_shadow_agreement(),
            min_online_accuracy: None,
            min_feedback: default_min_feedback(),
        }
    }
}

fn default_max_prediction_psi() -> f64 {
    0.25
}

fn default_max_confidence_drop() -> f64 {
    0.1
}

fn default_min_prediction_samples() -> i64 {
    100
}

fn default_min_shadow_agreement() -> f64 {
    0.9
}

fn default_min_feedback() -> i64 {
    50
}

fn default_max_error_rate() -> f64 {
    0.01
}

fn default_max_p99_latency_ms() -> f64 {
    500.0
}

fn default_min_requests() -> i64 {
    20
}

/// What splits traffic between variants.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider != 'GatewayAPI' || has(self.gateway)").message("traffic.provider GatewayAPI needs traffic.gateway.parentRefs"))]
pub struct Traffic {
    /// `Router`: Hone's router Deployment; `GatewayAPI`: an HTTPRoute.
    #[serde(default)]
    pub provider: TrafficProvider,
    /// Gateway attachment for the `GatewayAPI` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayTraffic>,
}

/// Traffic providers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrafficProvider {
    /// Hone's own router (`<isvc>-router`).
    #[default]
    Router,
    /// A Gateway API HTTPRoute with weighted backendRefs.
    #[serde(rename = "GatewayAPI")]
    GatewayApi,
}

/// Where the HTTPRoute attaches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTraffic {
    /// Gateways the route attaches to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRef>,
    /// Host names the route answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<String>,
}

/// A Gateway API parent reference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Gateway name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Gateway namespace; unset: the InferenceService's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener name on the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Lifecycle phase of an InferenceService.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InferenceServicePhase {
    /// Predictors are starting.
    #[default]
    Pending,
    /// A rollout is moving traffic.
    Progressing,
    /// Every variant has ready replicas and the route is in place.
    Ready,
    /// Serving, but something is wrong (e.g. a rollout was aborted).
    Degraded,
}

/// Observed state of one variant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantStatus {
    /// Variant name.
    pub name: String,
    /// ModelVersion serving the stable share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Percent of traffic it gets now.
    pub weight: i32,
    /// Predictor replicas.
    #[serde(default)]
    pub replicas: i32,
    /// Ready predictor replicas.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Ready ModelVersions of a tracked model, newer than the one served,
    /// that fail a `minMetrics` gate and are therefore not rolled out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_failures: Vec<String>,
}

/// State of an ongoing rollout (Canary, or Immediate waiting for its new
/// predictors); lives in status so a restarted operator resumes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Variant being rolled out.
    pub variant: String,
    /// ModelVersion serving before the rollout.
    pub from_version: String,
    /// ModelVersion being rolled out.
    pub to_version: String,
    /// Index into `spec.rollout.steps` (0-based).
    pub step: i32,
    /// Percent of the variant's traffic on `toVersion`.
    pub canary_weight: i32,
    /// When the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// True during the shadow step (`canaryWeight` 0, the new version gets mirrored requests only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Result of the latest analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisResult>,
    /// The canary's router counters when the current step started:
    /// analysis judges only the requests that came after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<MetricsBaseline>,
    /// The stable backend's counters when the current step started, for the
    /// comparisons over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_baseline: Option<MetricsBaseline>,
    /// What the rollout waits for (`WaitingForPredictors`,
    /// `MetricsUnavailable`, `WaitingForRequests`); unset while it moves on schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// When the rollout began waiting without progress since; it is aborted
    /// once `spec.rollout.progressDeadline` has passed from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
}

/// Cumulative router counters of one backend at a point in time.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsBaseline {
    /// Requests answered.
    pub requests: i64,
    /// Requests that failed (5xx answers, transport errors included).
    pub failures: i64,
    /// Cumulative latency histogram buckets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<LatencyBucket>,
    /// Predictions answered, by top-1 class (at most 64 classes, as the router counts them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 65))]
    pub predictions: Vec<ClassCount>,
    /// Sum of the predictions' top-1 confidences.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub confidence_sum: f64,
    /// Mirrored requests whose answers were compared (for a mirror target).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub shadow_compared: i64,
    /// Mirrored requests that failed.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub shadow_failed: i64,
    /// Mirrored requests dropped under load.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub shadow_dropped: i64,
    /// Mirrored samples compared with the source's answers.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub shadow_samples: i64,
    /// Compared samples whose top-1 class agreed.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub shadow_agreements: i64,
    /// Cumulative latency buckets of mirrored requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow_latency_buckets: Vec<LatencyBucket>,
    /// Feedback labels that matched the answer.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub feedback_correct: i64,
    /// Feedback labels that did not.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub feedback_incorrect: i64,
}

/// How many predictions named one class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassCount {
    /// The class name the backend answered.
    pub class: String,
    /// Predictions of it.
    pub count: i64,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_i64(value: &i64) -> bool {
    *value == 0
}

/// One cumulative histogram bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyBucket {
    /// Upper bound in seconds as the router prints it (`0.0005`, `+Inf`).
    pub le: String,
    /// Requests at or below the bound.
    pub count: i64,
}

/// A rollout that was aborted (analysis failed, the progress deadline passed,
/// or a rollback by hand), or a variant rolled back by hand after its
/// promotion: the variant serves `fromVersion` while its spec (or track)
/// asks for `toVersion`, which is not rolled out again until the spec
/// changes or, for a `track` variant, the track picks another version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortedRollout {
    /// Variant that was rolled out.
    pub variant: String,
    /// ModelVersion the variant went back to (unset in records written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// ModelVersion that failed, or was rolled back.
    pub to_version: String,
    /// `metadata.generation` when it was aborted.
    pub generation: i64,
    /// Why it was aborted.
    pub message: String,
    /// `RolloutAborted` (analysis failed; also when unset), `ManualRollback`
    /// or `ProgressDeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the operator did with the latest `hone.dev/rollout-action` request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutActionRecord {
    /// The request's `hone.dev/rollout-action-id`; a request with this id is not handled again.
    pub id: String,
    /// The action asked for (`promote`, `rollback`, or the unknown value given).
    pub action: String,
    /// The variant of the rollout it acted on, or the one it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// What came of it.
    pub outcome: RolloutActionOutcome,
    /// What was done, or why nothing was.
    pub message: String,
}

/// Outcomes of a rollout action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutActionOutcome {
    /// The new version took over the variant.
    Promoted,
    /// All traffic went back to the old version (of the rollout in progress,
    /// or the variant's previous good version).
    RolledBack,
    /// Nothing to act on (no rollout in progress to promote, no previous good
    /// version to roll back to, another variant, an unknown action).
    #[default]
    Ignored,
}

/// Most `status.history` entries kept per variant: the open one (still
/// serving) and the closed ones that ended last.
pub const HISTORY_PER_VARIANT: usize = 10;

/// One version a variant served, and how it stopped (`status.history[]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Variant name.
    pub variant: String,
    /// ModelVersion (by name).
    pub version: String,
    /// When it took all of the variant's traffic (for an `Aborted` canary:
    /// when its rollout started).
    pub from: Time,
    /// When it stopped serving the variant; unset while it still serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Time>,
    /// How it stopped, or `Serving`.
    pub outcome: HistoryOutcome,
}

/// How a version in `status.history` stopped serving its variant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HistoryOutcome {
    /// It still serves the variant.
    #[default]
    Serving,
    /// A later version took over through a rollout (promotion or immediate switch).
    Replaced,
    /// It was left through a rollback by hand after its promotion.
    RolledBack,
    /// Its canary was aborted (analysis, progress deadline or by hand); it never took over.
    Aborted,
}

impl HistoryOutcome {
    /// True for a version a rollback may return to: it served and was not rolled back or aborted.
    pub fn was_good(self) -> bool {
        matches!(self, Self::Serving | Self::Replaced)
    }
}

impl InferenceServiceStatus {
    /// The ModelVersion variant `variant` serves now, per `status.variants`.
    pub fn serving(&self, variant: &str) -> Option<&str> {
        self.variants.iter().find(|v| v.name == variant)?.model_version.as_deref()
    }

    /// The versions a rollback of `variant` (with no rollout of it in
    /// progress) may return to, best first: the variant's earlier
    /// `status.history` entries, newest first, that were not rolled back or
    /// aborted and are not the version it serves now. The operator takes the
    /// first whose ModelVersion still exists and is Ready.
    pub fn rollback_candidates(&self, variant: &str) -> Vec<&str> {
        let current = self.serving(variant);
        let mut candidates: Vec<&str> = Vec::new();
        for entry in self.history.iter().rev() {
            let earlier = entry.to.is_some();
            let version = entry.version.as_str();
            if entry.variant == variant
                && earlier
                && entry.outcome.was_good()
                && Some(version) != current
                && !candidates.contains(&version)
            {
                candidates.push(version);
            }
        }
        candidates
    }
}

/// Predictors that lost their traffic (after a promotion or an abort) and are
/// kept until every router has reloaded its config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrainingPredictor {
    /// Name of the Deployment (and of its Service, HPA and PodDisruptionBudget).
    pub name: String,
    /// When it is deleted.
    pub until: Time,
}

/// One canary analysis: the canary's figures over the step, and the stable
/// version's over the same window where a check compares them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisResult {
    /// Canary requests seen in the step (in the shadow step: mirrored requests compared or failed).
    pub requests: i64,
    /// Fraction of them that failed.
    pub error_rate: f64,
    /// Their p99 latency in milliseconds.
    pub p99_latency_ms: f64,
    /// The stable version's requests over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_requests: Option<i64>,
    /// The stable version's error rate over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_error_rate: Option<f64>,
    /// The stable version's p99 latency in milliseconds over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_p99_latency_ms: Option<f64>,
    /// Population stability index of predicted classes, canary against stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_psi: Option<f64>,
    /// The canary's predictions counted (the PSI and confidence checks need `minPredictionSamples`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<i64>,
    /// The stable version's predictions counted over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_predictions: Option<i64>,
    /// The canary's mean top-1 confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_confidence: Option<f64>,
    /// The stable version's mean top-1 confidence over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_mean_confidence: Option<f64>,
    /// Shadow step: fraction of compared samples whose top-1 class agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_agreement: Option<f64>,
    /// Shadow step: samples compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_samples: Option<i64>,
    /// Shadow step: mirrored requests dropped under load (not judged; shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_dropped: Option<i64>,
    /// The canary's online accuracy from feedback labels in the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_accuracy: Option<f64>,
    /// Feedback labels received for the canary's answers in the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<i64>,
}

impl AnalysisResult {
    /// The figures in one line, e.g. `120 requests, 0.00% errors, p99 12 ms,
    /// agreement 97.5% of 120, prediction PSI 0.031`.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} requests, {:.2}% errors, p99 {:.0} ms",
            self.requests,
            self.error_rate * 100.0,
            self.p99_latency_ms
        )];
        if let (Some(agreement), Some(samples)) = (self.shadow_agreement, self.shadow_samples) {
            parts.push(format!("agreement {:.1}% of {samples}", agreement * 100.0));
        }
        if let Some(dropped) = self.shadow_dropped.filter(|d| *d > 0) {
            parts.push(format!("{dropped} mirrors dropped"));
        }
        if let Some(psi) = self.prediction_psi {
            parts.push(format!("prediction PSI {psi:.3}"));
        }
        if let (Some(canary), Some(stable)) = (self.mean_confidence, self.stable_mean_confidence) {
            parts.push(format!("confidence {canary:.3} (stable {stable:.3})"));
        }
        if let (Some(accuracy), Some(labels)) = (self.online_accuracy, self.feedback) {
            parts.push(format!("online accuracy {:.1}% of {labels} labels", accuracy * 100.0));
        }
        parts.join(", ")
    }
}

/// What the InferenceService serves now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceStatus {
    /// One-word summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InferenceServicePhase>,
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The stable endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Each variant's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantStatus>,
    /// The ongoing rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Rollouts aborted, and variants rolled back by hand, at the current
    /// generation (not retried until the spec changes, or a track picks
    /// another version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aborted_rollouts: Vec<AbortedRollout>,
    /// The versions each variant served and when, in the order they were
    /// recorded: at most 10 entries per variant (the one still serving and
    /// the closed ones that ended last); entries of variants no longer in the
    /// spec are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Predictors kept, without traffic, until the routers have reloaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<DrainingPredictor>,
    /// The latest `hone.dev/rollout-action` request handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollout_action: Option<RolloutActionRecord>,
    /// Where `spec.mlflowAlias` points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_alias: Option<MlflowAliasStatus>,
    /// Standard conditions: Ready, PredictorsReady, RouteReady,
    /// RolloutProgressing, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
}

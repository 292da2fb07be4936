//! InferenceService status: computed from the plan and the applied children
//! (pure; `status.history` by [`super::history`]), then written in one
//! server-side apply patch when it changed.

use hone_crds::InferenceService;
use hone_crds::conditions::{ConditionStatus, DesiredCondition, find_condition, set_conditions};
use hone_crds::consts::{CONDITION_READY, REASON_INVALID_SPEC};
use hone_crds::inferenceservice::{
    CONDITION_DEGRADED, CONDITION_PREDICTORS_READY, CONDITION_ROLLOUT_PROGRESSING, CONDITION_ROUTE_READY,
    DrainingPredictor, InferenceServicePhase, InferenceServiceStatus, REASON_GATEWAY_API_NOT_INSTALLED,
    REASON_MODEL_VERSION_NOT_READY, REASON_ROLLOUT_ABORTED, TrafficProvider, VariantStatus,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;

use super::desired::Desired;
use super::names::{predictor_name, router_name};
use super::rollout::Plan;
use super::validate::ValidService;
use crate::context::{Context, EventSpec};

/// Why writing status failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The InferenceService changed since this reconcile read it (409
    /// Conflict on the resourceVersion precondition): the status was computed
    /// from a stale object and is dropped; a reconcile of the fresh object
    /// computes it again.
    #[error(
        "status of inferenceservice {namespace}/{name} was computed from resourceVersion {resource_version}, \
         which is no longer current: {source}"
    )]
    Conflict {
        /// Namespace of the InferenceService.
        namespace: String,
        /// Name of the InferenceService.
        name: String,
        /// The resourceVersion the status was computed from.
        resource_version: String,
        /// The API error (409).
        #[source]
        source: kube::Error,
    },
    /// The status patch was refused.
    #[error("patching status of inferenceservice {namespace}/{name}: {source}")]
    Patch {
        /// Namespace of the InferenceService.
        namespace: String,
        /// Name of the InferenceService.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "conflict",
            Self::Patch { .. } => "status_patch",
        }
    }
}

/// Event reason when a tracked ModelVersion fails a gate.
pub const REASON_GATE_FAILED: &str = "GateFailed";

/// What status is computed from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// The validated spec.
    pub valid: &'a ValidService,
    /// The rollout plan.
    pub plan: &'a Plan,
    /// The children wanted.
    pub desired: &'a Desired,
    /// Deployments as applied (with their status).
    pub deployments: &'a [Deployment],
    /// The HTTPRoute as applied.
    pub route: Option<&'a DynamicObject>,
    /// Whether the Gateway API is installed.
    pub gateway_api: bool,
    /// Predictors draining.
    pub draining: &'a [DrainingPredictor],
    /// The status as it is.
    pub previous: &'a InferenceServiceStatus,
}

type Check = (bool, String, String);

/// The status the InferenceService should have. `now` lands only in
/// conditions that flip and history entries that open or close (the plan
/// carries the rollout's own times).
pub fn compute(input: StatusInput<'_>, now: &Time) -> InferenceServiceStatus {
    let valid = input.valid;
    let generation = Some(valid.generation);
    let replicas = |name: &str| -> (i32, i32) {
        input.deployments.iter().find(|d| d.metadata.name.as_deref() == Some(name)).map_or((0, 0), |d| {
            let s = d.status.clone().unwrap_or_default();
            (s.replicas.unwrap_or(0), s.ready_replicas.unwrap_or(0))
        })
    };
    let servable: i32 =
        input.plan.variants.iter().filter(|v| v.stable.is_some()).map(|v| v.weight.max(0)).sum();
    let mut variants = Vec::new();
    let mut unready = Vec::new();
    for v in &input.plan.variants {
        let mut versions: Vec<i64> = v.stable.iter().map(|m| m.version).collect();
        versions.extend(v.canary.as_ref().map(|c| c.model.version));
        let (total, ready) = versions
            .iter()
            .map(|version| replicas(&predictor_name(&valid.name, &v.name, *version)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let stable_ready = v
            .stable
            .as_ref()
            .is_some_and(|m| replicas(&predictor_name(&valid.name, &v.name, m.version)).1 > 0);
        if v.stable.is_some() && !stable_ready {
            unready.push(format!("variant {} has no ready predictor yet", v.name));
        }
        let weight = if v.stable.is_some() && servable > 0 {
            (v.weight.max(0) * 100 + servable / 2) / servable
        } else {
            0
        };
        variants.push(VariantStatus {
            name: v.name.clone(),
            model_version: v.stable.as_ref().map(|m| m.name.clone()),
            weight,
            replicas: total,
            ready_replicas: ready,
            gate_failures: v.gate_failures.iter().map(|f| f.model_version.clone()).collect(),
        });
    }
    let waiting: Vec<String> = input
        .plan
        .variants
        .iter()
        .filter_map(|v| v.waiting.as_ref().map(|w| format!("variant {}: {w}", v.name)))
        .collect();
    let predictors: Check = if !waiting.is_empty() {
        (false, REASON_MODEL_VERSION_NOT_READY.to_owned(), waiting.join("; "))
    } else if !unready.is_empty() {
        (false, "PredictorsStarting".to_owned(), unready.join("; "))
    } else {
        (true, "PredictorsReady".to_owned(), "every variant has ready predictors".to_owned())
    };
    let route = route_check(&input);
    let progress: Check = match &input.plan.progress {
        Some(p) => (true, p.reason.to_owned(), with_notes(p.message.clone(), &input)),
        None => (false, "NoRollout".to_owned(), with_notes("no rollout in progress".to_owned(), &input)),
    };
    // The newest abort says what happened last.
    let degraded: Check = match input.plan.aborted.last() {
        Some(a) => {
            let reason = a.reason.clone().unwrap_or_else(|| REASON_ROLLOUT_ABORTED.to_owned());
            (true, reason, a.message.clone())
        }
        None => (false, "AsExpected".to_owned(), "no rollout was aborted at this generation".to_owned()),
    };
    let ready: Check = match (&predictors, &route) {
        ((true, ..), (true, ..)) => {
            (true, "Serving".to_owned(), "every variant is served and routed".to_owned())
        }
        ((false, reason, message), _) | (_, (false, reason, message)) => {
            (false, reason.clone(), message.clone())
        }
    };
    let phase = if degraded.0 {
        InferenceServicePhase::Degraded
    } else if input.plan.rollout.is_some() {
        InferenceServicePhase::Progressing
    } else if ready.0 {
        InferenceServicePhase::Ready
    } else {
        InferenceServicePhase::Pending
    };
    let mut status = input.previous.clone();
    status.phase = Some(phase);
    status.observed_generation = generation;
    status.url = input.desired.url.clone();
    status.variants = variants;
    status.rollout = input.plan.rollout.clone();
    status.aborted_rollouts = input.plan.aborted.clone();
    status.history = super::history::next(input.previous, input.plan, now);
    status.draining = input.draining.to_vec();
    if let Some(handled) = &input.plan.handled_action {
        status.last_rollout_action = Some(handled.clone());
    }
    let conditions = [
        (CONDITION_READY, ready),
        (CONDITION_PREDICTORS_READY, predictors),
        (CONDITION_ROUTE_READY, route),
        (CONDITION_ROLLOUT_PROGRESSING, progress),
        (CONDITION_DEGRADED, degraded),
    ]
    .map(|(type_, (holds, reason, message))| {
        DesiredCondition::new(type_, ConditionStatus::from(holds), reason, message, generation)
    });
    set_conditions(&mut status.conditions, conditions, now);
    status
}

fn with_notes(message: String, input: &StatusInput<'_>) -> String {
    let mut notes = vec![message];
    notes.extend(input.plan.pending.iter().cloned());
    for v in &input.plan.variants {
        notes.extend(
            v.gate_failures
                .iter()
                .map(|f| format!("variant {} skips {} ({})", v.name, f.model_version, f.message)),
        );
    }
    notes.join("; ")
}

fn route_check(input: &StatusInput<'_>) -> Check {
    let valid = input.valid;
    let nothing =
        || (false, "NoServableVariant".to_owned(), "no variant has a servable ModelVersion yet".to_owned());
    match valid.provider {
        TrafficProvider::Router => {
            if input.desired.router_config.is_none() {
                return nothing();
            }
            let name = router_name(&valid.name);
            let ready = input
                .deployments
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(name.as_str()))
                .and_then(|d| d.status.as_ref()?.ready_replicas)
                .unwrap_or(0);
            if ready > 0 {
                (true, "RouterReady".to_owned(), format!("router {name} is serving"))
            } else {
                (false, "RouterStarting".to_owned(), format!("waiting for a ready pod of router {name}"))
            }
        }
        TrafficProvider::GatewayApi if !input.gateway_api => (
            false,
            REASON_GATEWAY_API_NOT_INSTALLED.to_owned(),
            "traffic.provider is GatewayAPI but the cluster serves no gateway.networking.k8s.io/v1 HTTPRoutes: \
             install the Gateway API CRDs or use provider Router"
                .to_owned(),
        ),
        TrafficProvider::GatewayApi => match input.route {
            None => nothing(),
            Some(route) => gateway_acceptance(route),
        },
    }
}

/// RouteReady from the HTTPRoute's `status.parents[].conditions[Accepted]`.
fn gateway_acceptance(route: &DynamicObject) -> Check {
    let parents =
        route.data.pointer("/status/parents").and_then(|p| p.as_array()).cloned().unwrap_or_default();
    let accepted = |parent: &serde_json::Value| {
        parent["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Accepted")).cloned()
    };
    if let Some(refused) = parents.iter().filter_map(accepted).find(|c| c["status"] == "False") {
        let message = refused["message"].as_str().unwrap_or("a Gateway refused the HTTPRoute").to_owned();
        return (false, "RouteNotAccepted".to_owned(), message);
    }
    if !parents.is_empty() && parents.iter().all(|p| accepted(p).is_some_and(|c| c["status"] == "True")) {
        return (true, "RouteAccepted".to_owned(), "every parent Gateway accepted the HTTPRoute".to_owned());
    }
    (false, "RoutePending".to_owned(), "waiting for a Gateway controller to accept the HTTPRoute".to_owned())
}

/// The status of an InferenceService whose spec cannot be used: its
/// children are left as they are (traffic keeps flowing), Ready is False
/// with reason InvalidSpec and the validation message.
pub fn invalid(
    previous: &InferenceServiceStatus,
    generation: Option<i64>,
    message: &str,
    now: &Time,
) -> InferenceServiceStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    if status.phase.is_none() {
        status.phase = Some(InferenceServicePhase::Pending);
    }
    let condition = DesiredCondition::new(CONDITION_READY, false, REASON_INVALID_SPEC, message, generation);
    set_conditions(&mut status.conditions, [condition], now);
    status
}

/// The typed error of a refused status write of `isvc`.
pub fn error(isvc: &InferenceService, source: kube::Error) -> Error {
    let namespace = isvc.metadata.namespace.clone().unwrap_or_default();
    let name = isvc.metadata.name.clone().unwrap_or_default();
    if crate::status_patch::is_conflict(&source) {
        let resource_version = isvc.metadata.resource_version.clone().unwrap_or_default();
        Error::Conflict { namespace, name, resource_version, source }
    } else {
        Error::Patch { namespace, name, source }
    }
}

/// Events a status change deserves beyond the rollout's own: a new Ready
/// reason (Warning for InvalidSpec) and each newly gate-failed ModelVersion.
pub fn events(previous: &InferenceServiceStatus, next: &InferenceServiceStatus) -> Vec<EventSpec> {
    let mut events = Vec::new();
    let ready = |s: &InferenceServiceStatus| {
        find_condition(&s.conditions, CONDITION_READY).map(|c| (c.status.clone(), c.reason.clone()))
    };
    if ready(previous) != ready(next)
        && let Some(condition) = find_condition(&next.conditions, CONDITION_READY)
    {
        events.push(EventSpec {
            warning: condition.reason == REASON_INVALID_SPEC,
            reason: condition.reason.clone(),
            note: condition.message.clone(),
            action: "Reconcile".to_owned(),
        });
    }
    for variant in &next.variants {
        let before = previous.variants.iter().find(|v| v.name == variant.name);
        for name in &variant.gate_failures {
            if before.is_some_and(|b| b.gate_failures.contains(name)) {
                continue;
            }
            events.push(EventSpec {
                warning: true,
                reason: REASON_GATE_FAILED.to_owned(),
                note: format!(
                    "variant {} does not roll out to {name}: it was not measured to pass its minMetrics \
                     gates (see the RolloutProgressing condition)",
                    variant.name
                ),
                action: "Track".to_owned(),
            });
        }
    }
    events
}

/// Writes `next` when it differs from the InferenceService's status, then
/// publishes the rollout's Events and those the change deserves.
///
/// The write is conditional on `isvc`'s resourceVersion: the rollout's state
/// lives in status, so a reconcile working from a stale cache must not
/// overwrite what a newer one decided (move a rollout back a step, revive an
/// aborted one). Such a write fails with [`Error::Conflict`] and publishes no
/// Events; the next reconcile starts from the fresh object.
pub async fn update(
    ctx: &Context,
    isvc: &InferenceService,
    next: InferenceServiceStatus,
    rollout_events: Vec<EventSpec>,
) -> Result<(), Error> {
    use crate::status_patch::{Concurrency, apply_status_with};
    let previous = isvc.status.clone().unwrap_or_default();
    let written = apply_status_with(&ctx.client, isvc, &previous, &next, Concurrency::Optimistic)
        .await
        .map_err(|source| error(isvc, source))?;
    if !written {
        return Ok(());
    }
    for event in rollout_events.into_iter().chain(events(&previous, &next)) {
        ctx.publish(isvc, event).await;
    }
    Ok(())
}

//! The rollout state machine. Pure: the validated spec, the status as it is
//! (the only memory: a restarted operator resumes from it), which predictors
//! are ready, the router's metrics and the time in; what each variant serves,
//! the next rollout status and the Events of each transition out.
//!
//! One rollout at a time: `Immediate` waits for the new predictors to be
//! ready and switches; `Canary` also moves the variant's traffic through
//! `steps`, judged on the canary backend's router metrics, and promotes or
//! aborts. A rollout action asked for by hand (`hone.dev/rollout-action`,
//! see [`super::manual`]) promotes or aborts the rollout in progress early,
//! or, with no rollout of the variant in progress, returns the variant to its
//! previous good version (see [`super::rollback`]).
//!
//! An aborted (or rolled back) version is not rolled out again while the
//! generation stays and the variant's target is one of its aborted versions:
//! a spec change, or a track that picks another version, clears the aborts.
//!
//! A rollout that waits without progress past `spec.rollout.progressDeadline`
//! is aborted (see [`super::deadline`]).

use std::collections::BTreeSet;
use std::time::Duration;

use hone_crds::inferenceservice::{
    AbortedRollout, InferenceServiceStatus, REASON_MANUAL_PROMOTION, REASON_MANUAL_ROLLBACK,
    RolloutActionOutcome, RolloutActionRecord, RolloutStatus, RolloutStrategy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::analysis::{self, Step, Verdict};
use super::deadline::{self, Wait, waits};
use super::manual::{self, ActionRequest, Decision};
use super::names::{ANALYSIS_POLL, canary_backend, predictor_name};
use super::promtext::RouterMetrics;
use super::rollback;
use super::track::GateFailure;
use super::validate::{ModelRef, Source, ValidService};
use crate::context::EventSpec;

/// What the state machine reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The validated spec with each variant's target.
    pub valid: &'a ValidService,
    /// The status as it is.
    pub previous: &'a InferenceServiceStatus,
    /// Names of predictor Deployments with at least one ready replica.
    pub ready: &'a BTreeSet<String>,
    /// The router's counters per backend, or why they could not be read;
    /// `None` when they were not read.
    pub metrics: Option<&'a Result<RouterMetrics, String>>,
    /// The time of this reconcile.
    pub now: Timestamp,
}

/// The new version of a variant while it rolls out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// Its ModelVersion.
    pub model: ModelRef,
    /// Percent of the variant's traffic it gets.
    pub weight: i32,
    /// Its router backend name.
    pub backend: String,
    /// In the shadow step: the percent of the variant's requests mirrored to it.
    pub shadow: Option<u32>,
}

/// What one variant serves after this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariantPlan {
    /// Variant name.
    pub name: String,
    /// Percent of traffic in the spec.
    pub weight: i32,
    /// The version serving the variant's stable share; `None`: nothing servable yet.
    pub stable: Option<ModelRef>,
    /// The version rolling out, if this variant is.
    pub canary: Option<Canary>,
    /// Why the variant's target cannot be served yet.
    pub waiting: Option<String>,
    /// Ready versions a gate kept out.
    pub gate_failures: Vec<GateFailure>,
}

/// Why a rollout is in progress, for the RolloutProgressing condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// CamelCase reason.
    pub reason: &'static str,
    /// A sentence for a person; nothing in it changes between polls.
    pub message: String,
}

/// The state machine's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Per variant, in spec order.
    pub variants: Vec<VariantPlan>,
    /// The rollout in progress after this reconcile.
    pub rollout: Option<RolloutStatus>,
    /// Set while a rollout is in progress.
    pub progress: Option<Progress>,
    /// Changes that wait (for the rollout in progress, or after an abort).
    pub pending: Vec<String>,
    /// Rollouts aborted at this generation.
    pub aborted: Vec<AbortedRollout>,
    /// Events of the transitions made.
    pub events: Vec<EventSpec>,
    /// When to look again; `None`: on the next change.
    pub requeue_after: Option<Duration>,
    /// The rollout action request handled by this reconcile, for `status.lastRolloutAction`.
    pub handled_action: Option<RolloutActionRecord>,
}

/// Event reasons of rollout transitions.
pub mod reasons {
    /// A variant started moving to a new version.
    pub const STARTED: &str = "RolloutStarted";
    /// A canary moved to the next step.
    pub const STEP: &str = "RolloutStep";
    /// The new version took over the variant.
    pub const PROMOTED: &str = "RolloutPromoted";
    /// Analysis failed; traffic went back to the old version.
    pub const ABORTED: &str = hone_crds::inferenceservice::REASON_ROLLOUT_ABORTED;
    /// The spec no longer asks for the version rolling out.
    pub const CANCELLED: &str = "RolloutCancelled";
    /// Promoted by hand before the last step.
    pub const MANUAL_PROMOTION: &str = hone_crds::inferenceservice::REASON_MANUAL_PROMOTION;
    /// Rolled back by hand.
    pub const MANUAL_ROLLBACK: &str = hone_crds::inferenceservice::REASON_MANUAL_ROLLBACK;
    /// A variant rolled back by hand after its promotion serves its previous version again.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// A rollout action found nothing to act on.
    pub const ACTION_IGNORED: &str = hone_crds::inferenceservice::REASON_ROLLOUT_ACTION_IGNORED;
    /// The rollout waited past `spec.rollout.progressDeadline`; traffic went back to the old version.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str =
        hone_crds::inferenceservice::REASON_PROGRESS_DEADLINE_EXCEEDED;
}

/// Runs the state machine once.
pub fn plan(input: &Input<'_>) -> Plan {
    let valid = input.valid;
    let previous = input.previous;
    let mut events = Vec::new();
    let mut aborted = still_aborted(valid, &previous.aborted_rollouts);
    let mut variants: Vec<VariantPlan> = valid
        .variants
        .iter()
        .map(|v| {
            let served = previous.variants.iter().find(|s| s.name == v.name);
            let stable = served.and_then(|s| s.model_version.as_ref()).and_then(|n| valid.models.get(n));
            VariantPlan {
                name: v.name.clone(),
                weight: v.weight,
                // A variant serving nothing yet takes its target at once: no traffic to protect.
                stable: stable.cloned().or_else(|| v.target.clone().ok()),
                canary: None,
                waiting: v.target.clone().err(),
                gate_failures: v.gate_failures.clone(),
            }
        })
        .collect();

    let mut rollout = previous.rollout.clone().and_then(|r| still_wanted(r, input, &variants, &mut events));
    let request = manual::unhandled(valid.action.as_ref(), previous.last_rollout_action.as_ref());
    let mut handled_action = None;
    let mut promote_now = None;
    if let Some(request) = request {
        let names: Vec<&str> = valid.variants.iter().map(|v| v.name.as_str()).collect();
        match manual::decide(request, rollout.as_ref(), &names) {
            Decision::Promote => promote_now = Some(request),
            Decision::Rollback => {
                if let Some(r) = rollout.take() {
                    let (abort, record, note) = manual::roll_back(r, request, valid.generation);
                    events.push(event(true, REASON_MANUAL_ROLLBACK, note));
                    aborted.push(abort);
                    handled_action = Some(record);
                }
            }
            Decision::RollbackVariant(name) => {
                let (abort, note, record) = rollback::handle(input, &variants, &aborted, &name, request);
                events.push(note);
                aborted.extend(abort);
                handled_action = Some(record);
            }
            Decision::Ignore(why) => {
                events.push(manual::ignored_event(request, &why));
                handled_action = Some(manual::record(request, None, RolloutActionOutcome::Ignored, &why));
            }
        }
    }
    if rollout.is_none() {
        rollout = start(input, &variants, &aborted, &mut events);
    }
    let mut plan = Plan {
        variants: Vec::new(),
        rollout: None,
        progress: None,
        pending: Vec::new(),
        aborted,
        events,
        requeue_after: None,
        handled_action,
    };
    if let Some(r) = rollout
        && let Some(index) = variants.iter().position(|v| v.name == r.variant)
        && let Some(to) = valid.models.get(&r.to_version)
    {
        advance(input, r, to, &mut variants[index], &mut plan, promote_now);
    }
    rollback::advance(input, &mut variants, &mut plan);
    plan.pending = pending(input, &variants, plan.rollout.as_ref(), &plan.aborted);
    plan.variants = variants;
    plan
}

/// The aborts in `previous` that still hold: at this generation, of a
/// variant in the spec whose target is one of the variant's aborted versions
/// (or is not known now). A track that picked another version clears them.
fn still_aborted(valid: &ValidService, previous: &[AbortedRollout]) -> Vec<AbortedRollout> {
    let current: Vec<&AbortedRollout> =
        previous.iter().filter(|a| a.generation == valid.generation).collect();
    let holds = |a: &AbortedRollout| {
        let Some(variant) = valid.variants.iter().find(|v| v.name == a.variant) else { return false };
        variant.target.as_ref().map_or(true, |target| {
            current.iter().any(|b| b.variant == a.variant && b.to_version == target.name)
        })
    };
    current.iter().copied().filter(|a| holds(a)).cloned().collect()
}

/// The rollout in status if the spec still asks for it; a Cancelled Event otherwise.
fn still_wanted(
    rollout: RolloutStatus,
    input: &Input<'_>,
    variants: &[VariantPlan],
    events: &mut Vec<EventSpec>,
) -> Option<RolloutStatus> {
    let variant = input.valid.variants.iter().find(|v| v.name == rollout.variant)?;
    let stable = variants.iter().find(|v| v.name == rollout.variant)?.stable.as_ref()?;
    if stable.name != rollout.from_version {
        return None;
    }
    let why = match &variant.target {
        Ok(target) if target.name == rollout.to_version => return Some(rollout),
        Ok(target) => format!("the variant now asks for {}", target.name),
        Err(waiting) => waiting.clone(),
    };
    events.push(event(
        false,
        reasons::CANCELLED,
        format!("rollout of variant {} to {} cancelled: {why}", rollout.variant, rollout.to_version),
    ));
    None
}

/// Starts a rollout for the first variant (in spec order) whose target differs
/// from what it serves, unless that target was aborted at this generation.
fn start(
    input: &Input<'_>,
    variants: &[VariantPlan],
    aborted: &[AbortedRollout],
    events: &mut Vec<EventSpec>,
) -> Option<RolloutStatus> {
    let (variant, stable, target) = input.valid.variants.iter().zip(variants).find_map(|(v, plan)| {
        let (Some(stable), Ok(target)) = (&plan.stable, &v.target) else { return None };
        let blocked = aborted.iter().any(|a| a.variant == v.name && a.to_version == target.name);
        (stable.name != target.name && !blocked).then_some((v, stable, target))
    })?;
    events.push(event(
        false,
        reasons::STARTED,
        format!(
            "variant {} rolls out from {} to {} ({:?})",
            variant.name, stable.name, target.name, input.valid.strategy
        ),
    ));
    Some(RolloutStatus {
        variant: variant.name.clone(),
        from_version: stable.name.clone(),
        to_version: target.name.clone(),
        step: 0,
        canary_weight: 0,
        started_at: Some(Time(input.now)),
        ..Default::default()
    })
}

/// Moves rollout `r` of `variant` one transition on, when its time has come
/// (or at once, for a manual promotion, once the new predictors are ready).
fn advance(
    input: &Input<'_>,
    mut r: RolloutStatus,
    to: &ModelRef,
    variant: &mut VariantPlan,
    plan: &mut Plan,
    promote_now: Option<&ActionRequest>,
) {
    let valid = input.valid;
    let deployment = predictor_name(&valid.name, &variant.name, to.version);
    let backend = canary_backend(&variant.name, to.version);
    let keep = |r: RolloutStatus, variant: &mut VariantPlan, plan: &mut Plan, progress: Progress| {
        let shadow = valid.shadow.filter(|_| r.shadow);
        variant.canary =
            Some(Canary { model: to.clone(), weight: r.canary_weight, backend: backend.clone(), shadow });
        plan.rollout = Some(r);
        plan.progress = Some(progress);
    };
    // Moving on schedule: whatever waited before has ended.
    let moving = |mut r: RolloutStatus, variant: &mut VariantPlan, plan: &mut Plan, progress: Progress| {
        r.waiting_for = None;
        r.waiting_since = None;
        keep(r, variant, plan, progress);
    };
    let waiting = |r: RolloutStatus, variant: &mut VariantPlan, plan: &mut Plan, progress: Progress| {
        match deadline::wait(r, progress.reason, input.now, valid.progress_deadline) {
            Wait::Within(r, left) => {
                let poll = plan.requeue_after.unwrap_or(left);
                plan.requeue_after = Some(poll.min(left).max(Duration::from_secs(1)));
                keep(r, variant, plan, progress);
            }
            Wait::Exceeded(r) => {
                let (abort, note) = deadline::abort(r, &progress.message, valid);
                plan.events.push(event(true, reasons::PROGRESS_DEADLINE_EXCEEDED, note));
                plan.aborted.push(abort);
            }
        }
    };
    if r.canary_weight == 0 && !input.ready.contains(&deployment) {
        let then = if promote_now.is_some() { "; a manual promotion waits for them" } else { "" };
        let message =
            format!("waiting for the predictors of {} (Deployment {deployment}) to be ready{then}", to.name);
        return waiting(r, variant, plan, Progress { reason: waits::PREDICTORS, message });
    }
    if let Some(request) = promote_now {
        let note = format!(
            "promoted by hand (request {}) at {}% of variant {}'s traffic: {} now serves in place of {}",
            request.id, r.canary_weight, r.variant, r.to_version, r.from_version
        );
        let record = manual::record(request, Some(&r.variant), RolloutActionOutcome::Promoted, &note);
        plan.events.push(event(false, REASON_MANUAL_PROMOTION, note));
        plan.handled_action = Some(record);
        variant.stable = Some(to.clone());
        variant.canary = None;
        return;
    }
    let steps = &valid.steps;
    if valid.strategy == RolloutStrategy::Immediate || steps.is_empty() {
        return promote(r, to, variant, plan);
    }
    let metrics = match input.metrics {
        Some(Ok(metrics)) => metrics,
        other => {
            let why = match other {
                Some(Err(error)) => error.clone(),
                _ => "router metrics were not read".to_owned(),
            };
            plan.requeue_after = Some(ANALYSIS_POLL);
            let message = format!("canary analysis waits for the router's metrics: {why}");
            return waiting(r, variant, plan, Progress { reason: waits::METRICS, message });
        }
    };
    let current = metrics.get(&backend).cloned().unwrap_or_default();
    let stable_now = metrics.get(&variant.name).cloned().unwrap_or_default();
    let start_step = |r: &mut RolloutStatus, shadow: bool, weight: i32, plan: &mut Plan| {
        r.shadow = shadow;
        r.canary_weight = weight;
        r.step_started_at = Some(Time(input.now));
        r.baseline = Some(analysis::baseline(&current));
        r.stable_baseline = Some(analysis::baseline(&stable_now));
        plan.events.push(event(false, reasons::STEP, step_note(r, steps.len(), &variant.name, valid.shadow)));
        plan.requeue_after = Some(valid.step_interval.min(ANALYSIS_POLL));
    };
    if r.canary_weight == 0 && !r.shadow {
        r.step = 0;
        match valid.shadow {
            Some(_) => start_step(&mut r, true, 0, plan),
            None => start_step(&mut r, false, steps[0], plan),
        }
        let message = step_note(&r, steps.len(), &variant.name, valid.shadow);
        return moving(r, variant, plan, Progress { reason: "CanaryStep", message });
    }
    let step = usize::try_from(r.step).unwrap_or(0).min(steps.len() - 1);
    let started = r.step_started_at.as_ref().map_or(input.now, |t| t.0);
    let elapsed = Duration::try_from(input.now.duration_since(started)).unwrap_or(Duration::ZERO);
    let kind = if r.shadow { Step::Shadow } else { Step::Live };
    let canary_window = analysis::window(&current, &r.baseline.clone().unwrap_or_default());
    // A rollout started before the stable side was recorded compares from now on.
    let stable_start = r.stable_baseline.clone().unwrap_or_else(|| analysis::baseline(&stable_now));
    let stable_window = analysis::window(&stable_now, &stable_start);
    let result = analysis::measure(&canary_window, &stable_window, kind);
    match analysis::judge(&result, &valid.analysis, kind, elapsed >= valid.step_interval) {
        Verdict::Fail(why) => {
            let at = if r.shadow {
                format!(
                    "in the shadow step (no client was answered by it; {} requests mirrored)",
                    result.requests
                )
            } else {
                format!("at {}% of variant {}'s traffic", r.canary_weight, r.variant)
            };
            let message = format!(
                "canary {} {at} failed analysis: {why}; all traffic is back on {} (measured: {})",
                r.to_version,
                r.from_version,
                result.summary()
            );
            plan.events.push(event(true, reasons::ABORTED, message.clone()));
            plan.aborted.push(AbortedRollout {
                variant: r.variant,
                from_version: Some(r.from_version),
                to_version: r.to_version,
                generation: valid.generation,
                message,
                reason: None,
            });
        }
        Verdict::Pass if r.shadow => {
            r.step = 0;
            r.last_analysis = Some(result);
            start_step(&mut r, false, steps[0], plan);
            let message = step_note(&r, steps.len(), &variant.name, valid.shadow);
            moving(r, variant, plan, Progress { reason: "CanaryStep", message });
        }
        Verdict::Pass if step + 1 >= steps.len() => {
            r.last_analysis = Some(result);
            promote(r, to, variant, plan);
        }
        Verdict::Pass => {
            r.step = i32::try_from(step + 1).unwrap_or(i32::MAX);
            r.last_analysis = Some(result);
            start_step(&mut r, false, steps[step + 1], plan);
            let message = step_note(&r, steps.len(), &variant.name, valid.shadow);
            moving(r, variant, plan, Progress { reason: "CanaryStep", message });
        }
        Verdict::NotEnoughRequests => {
            plan.requeue_after = Some(ANALYSIS_POLL);
            let what = if r.shadow { "compared mirrored" } else { "canary" };
            let message = format!(
                "{}; waiting for at least {} {what} requests",
                step_note(&r, steps.len(), &variant.name, valid.shadow),
                valid.analysis.min_requests
            );
            waiting(r, variant, plan, Progress { reason: waits::REQUESTS, message });
        }
        Verdict::Wait => {
            let left = valid.step_interval.saturating_sub(elapsed);
            plan.requeue_after = Some(left.min(ANALYSIS_POLL).max(Duration::from_secs(1)));
            let message = step_note(&r, steps.len(), &variant.name, valid.shadow);
            moving(r, variant, plan, Progress { reason: "CanaryStep", message });
        }
    }
}

fn promote(r: RolloutStatus, to: &ModelRef, variant: &mut VariantPlan, plan: &mut Plan) {
    let analysis = r
        .last_analysis
        .as_ref()
        .map(|a| {
            format!(
                " (last step: {} requests, {:.2}% errors, p99 {:.0} ms)",
                a.requests,
                a.error_rate * 100.0,
                a.p99_latency_ms
            )
        })
        .unwrap_or_default();
    plan.events.push(event(
        false,
        reasons::PROMOTED,
        format!("variant {} now serves {} in place of {}{analysis}", r.variant, r.to_version, r.from_version),
    ));
    variant.stable = Some(to.clone());
    variant.canary = None;
}

fn step_note(r: &RolloutStatus, steps: usize, variant: &str, shadow: Option<u32>) -> String {
    if r.shadow {
        return format!(
            "shadow step: {}% of variant {variant}'s requests mirrored to {}, every client answered by {}",
            shadow.unwrap_or(0),
            r.to_version,
            r.from_version
        );
    }
    format!(
        "step {} of {steps}: {}% of variant {variant}'s traffic on {}",
        r.step.saturating_add(1),
        r.canary_weight,
        r.to_version
    )
}

/// Variants whose target differs from what they serve but that are not rolling out.
fn pending(
    input: &Input<'_>,
    variants: &[VariantPlan],
    rollout: Option<&RolloutStatus>,
    aborted: &[AbortedRollout],
) -> Vec<String> {
    input
        .valid
        .variants
        .iter()
        .zip(variants)
        .filter_map(|(v, plan)| {
            let (Some(stable), Ok(target)) = (&plan.stable, &v.target) else { return None };
            if stable.name == target.name || rollout.is_some_and(|r| r.variant == v.name) {
                return None;
            }
            if aborted.iter().any(|a| a.variant == v.name && a.to_version == target.name) {
                let or_track = match v.source {
                    Source::Track(_) => " (or wait for the track to pick a newer version)",
                    Source::ModelVersion(_) => "",
                };
                Some(format!(
                    "variant {}: the rollout to {} was aborted or rolled back; change the spec to retry it{or_track}",
                    v.name, target.name
                ))
            } else {
                let current = rollout.map_or_else(String::new, |r| format!(" of variant {}", r.variant));
                Some(format!("variant {}: {} waits for the rollout{current} to finish", v.name, target.name))
            }
        })
        .collect()
}

fn event(warning: bool, reason: &str, note: String) -> EventSpec {
    EventSpec { warning, reason: reason.to_owned(), note, action: "Rollout".to_owned() }
}

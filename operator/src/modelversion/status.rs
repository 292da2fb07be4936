//! ModelVersion status from its verify Job and the verifier's one-line JSON
//! summary (the pod's termination message). Pure.

use hone_crds::ModelVersionStatus;
use hone_crds::conditions::{ConditionStatus, DesiredCondition, find_condition, set_condition};
use hone_crds::consts::{CONDITION_EVALUATED, CONDITION_READY, REASON_INVALID_SPEC};
use hone_crds::contract::{TerminationSummary, VerifySummary, metric};
use hone_crds::modelversion::{Evaluation, ModelVersionPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::{EVAL_SPLIT_CONTAINER, EvaluationPlan, VERIFY_CONTAINER};
use crate::context::EventSpec;
use crate::termination::{
    JobOutcome, TerminationMessage, job_outcome, latest_raw_termination_message, parse_message,
};

/// What status is computed from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The status as it is.
    pub previous: &'a ModelVersionStatus,
    /// The verify Job, once created (`None` after it was removed).
    pub job: Option<&'a Job>,
    /// Its pods.
    pub pods: &'a [Pod],
    /// InferenceServices serving it.
    pub served_by: &'a [String],
    /// The spec's digest, if it names one.
    pub spec_digest: Option<&'a str>,
    /// The Dataset it is evaluated on, if one is named.
    pub evaluation_dataset: Option<&'a str>,
    /// Whether `track` needs measured metrics (`spec.evaluation.required`).
    pub evaluation_required: bool,
    /// On what it is evaluated, as decided this reconcile.
    pub plan: &'a EvaluationPlan,
}

/// The status the ModelVersion should have; `now` only moves a flipping condition.
pub fn compute(input: StatusInput<'_>, now: &Time) -> ModelVersionStatus {
    let mut status = input.previous.clone();
    status.observed_generation = input.generation;
    status.served_by = input.served_by.to_vec();
    let Some(job) = input.job else {
        // Verified earlier and the Job is gone: the recorded outcome stands.
        if matches!(status.phase, Some(ModelVersionPhase::Ready | ModelVersionPhase::Failed)) {
            return status;
        }
        match input.plan {
            EvaluationPlan::Waiting { message } => {
                return with_ready(
                    status,
                    ModelVersionPhase::Pending,
                    "WaitingForDataset",
                    message,
                    input,
                    now,
                );
            }
            EvaluationPlan::Refused { reason, message } => {
                set_evaluated(&mut status, false, reason, message, input, now);
                return with_ready(status, ModelVersionPhase::Failed, reason, message, input, now);
            }
            _ => {}
        }
        return with_ready(
            status,
            ModelVersionPhase::Pending,
            "Creating",
            "creating the verify Job",
            input,
            now,
        );
    };
    let evaluates = evaluates(job);
    status.verify_job_name = job.metadata.name.clone();
    let job_name = status.verify_job_name.clone().unwrap_or_default();
    let pods: Vec<&Pod> = input.pods.iter().collect();
    let raw = latest_raw_termination_message(&pods, VERIFY_CONTAINER);
    let summary = raw.and_then(|m| serde_json::from_str::<VerifySummary>(m.trim()).ok());
    if let Some((reason, message)) = eval_split_failure(&pods, input.evaluation_dataset) {
        return with_ready(status, ModelVersionPhase::Failed, &reason, &message, input, now);
    }
    match (job_outcome(job), summary) {
        (JobOutcome::Running { .. }, _) => {
            let message = if evaluates {
                format!(
                    "Job {job_name} is fetching, digesting and loading the artifact, then evaluating it on \
                     Dataset {}",
                    input.evaluation_dataset.unwrap_or_default()
                )
            } else {
                format!("Job {job_name} is fetching, digesting and loading the artifact")
            };
            with_ready(status, ModelVersionPhase::Verifying, "Verifying", &message, input, now)
        }
        (JobOutcome::Succeeded, Some(summary)) if summary.ok => {
            status.verified_digest = summary.digest.clone();
            status.verified_card_digest = summary.card_digest.clone();
            status.size_bytes = summary.size_bytes.and_then(|s| i64::try_from(s).ok());
            if let (Some(expected), Some(found)) = (input.spec_digest, summary.digest.as_deref())
                && !expected.eq_ignore_ascii_case(found)
            {
                let message =
                    format!("the artifact's digest is {found}, spec.artifact.digest says {expected}");
                return with_ready(status, ModelVersionPhase::Failed, "DigestMismatch", &message, input, now);
            }
            match (evaluates, summary.evaluation.clone()) {
                (true, Some(mut evaluation)) => {
                    evaluation.dataset = input.evaluation_dataset.map(str::to_owned);
                    let previous = input.previous.evaluation.as_ref();
                    evaluation.evaluated_at =
                        previous.and_then(|e| e.evaluated_at.clone()).or_else(|| Some(now.clone()));
                    let message = describe_evaluation(&evaluation);
                    status.evaluation = Some(evaluation);
                    set_evaluated(&mut status, true, "Measured", &message, input, now);
                }
                (true, None) => {
                    let message = format!(
                        "verify Job {job_name} was given the test split of Dataset {} but reported no \
                         evaluation; is the predictor image older than the operator?",
                        input.evaluation_dataset.unwrap_or_default()
                    );
                    set_evaluated(&mut status, false, "EvaluationMissing", &message, input, now);
                    return with_ready(
                        status,
                        ModelVersionPhase::Failed,
                        "EvaluationMissing",
                        &message,
                        input,
                        now,
                    );
                }
                (false, _) => {
                    let (reason, message) = unevaluated(input);
                    set_evaluated(&mut status, false, reason, &message, input, now);
                }
            }
            let message = format!(
                "verified {}: loaded and ran one forward pass{}{}",
                summary.digest.as_deref().unwrap_or("the artifact"),
                summary.forward_ms.map(|ms| format!(" in {ms} ms")).unwrap_or_default(),
                status
                    .evaluation
                    .as_ref()
                    .filter(|_| evaluates)
                    .map(|e| format!("; {}", describe_evaluation(e)))
                    .unwrap_or_default()
            );
            with_ready(status, ModelVersionPhase::Ready, "Verified", &message, input, now)
        }
        (_, Some(summary)) if !summary.ok => {
            let reason = summary.reason.clone().unwrap_or_else(|| "VerifyFailed".to_owned());
            let message = summary.message.clone().unwrap_or_else(|| format!("Job {job_name} failed"));
            with_ready(status, ModelVersionPhase::Failed, &reason, &message, input, now)
        }
        (JobOutcome::Failed { reason, message }, _) => {
            let tail = raw.map(|m| format!("; last output: {}", shorten(m))).unwrap_or_default();
            let message = format!(
                "verify Job {job_name} failed ({reason}: {message}){tail}; see `kubectl logs job/{job_name}`"
            );
            with_ready(status, ModelVersionPhase::Failed, "VerifyFailed", &message, input, now)
        }
        (JobOutcome::Succeeded, _) => {
            let message = format!(
                "verify Job {job_name} succeeded but left no verify summary in its termination message; \
                 is the predictor image a hone-predictor?"
            );
            with_ready(status, ModelVersionPhase::Failed, "VerifyFailed", &message, input, now)
        }
    }
}

/// Why a version verified without a split is unevaluated, and what follows.
fn unevaluated(input: StatusInput<'_>) -> (&'static str, String) {
    let follows = if input.evaluation_required {
        "track variants skip this version: register it with spec.evaluation.dataset, or \
         spec.evaluation.required: false to gate on the trainer's spec.metrics"
    } else {
        "spec.evaluation.required is false: track variants gate on the trainer's spec.metrics"
    };
    match input.plan {
        EvaluationPlan::Skipped { reason, message } => (reason, format!("{message}: {follows}")),
        _ => (
            "NoEvaluationDataset",
            format!(
                "not evaluated: no evaluation Dataset (spec.evaluation.dataset and spec.lineage.dataset \
                 are unset); {follows}"
            ),
        ),
    }
}

/// True when the verify Job takes a held-out split first (its `eval-split` init container).
fn evaluates(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == EVAL_SPLIT_CONTAINER))
}

/// The reason and message of an `eval-split` that failed (its error summary).
fn eval_split_failure(pods: &[&Pod], dataset: Option<&str>) -> Option<(String, String)> {
    let message = latest_raw_termination_message(pods, EVAL_SPLIT_CONTAINER)?;
    match parse_message(message) {
        TerminationMessage::Summary(TerminationSummary::Error(e)) => Some((
            e.reason,
            format!(
                "could not take the held-out test split of Dataset {}: {}",
                dataset.unwrap_or_default(),
                e.message
            ),
        )),
        _ => None,
    }
}

/// One line for conditions and Events, e.g. `accuracy 0.97, macro_f1 0.96 on
/// 180 held-out samples of Dataset digits (sha256:ab12...)`.
pub fn describe_evaluation(evaluation: &Evaluation) -> String {
    let shown: Vec<String> = [metric::ACCURACY, metric::MACRO_F1, metric::ROC_AUC]
        .iter()
        .filter_map(|name| evaluation.metrics.get(*name).map(|v| format!("{name} {v}")))
        .collect();
    let digest: String = evaluation.dataset_digest.chars().take(19).collect();
    format!(
        "measured {} on {} held-out samples of Dataset {} ({digest}...)",
        if shown.is_empty() { "nothing".to_owned() } else { shown.join(", ") },
        evaluation.samples,
        evaluation.dataset.as_deref().unwrap_or("?")
    )
}

fn set_evaluated(
    status: &mut ModelVersionStatus,
    evaluated: bool,
    reason: &str,
    message: &str,
    input: StatusInput<'_>,
    now: &Time,
) {
    let condition = DesiredCondition::new(
        CONDITION_EVALUATED,
        ConditionStatus::from(evaluated),
        reason,
        message,
        input.generation,
    );
    set_condition(&mut status.conditions, condition, now);
}

/// Status of a ModelVersion whose spec cannot be verified.
pub fn invalid(input: StatusInput<'_>, message: &str, now: &Time) -> ModelVersionStatus {
    let mut status = input.previous.clone();
    status.observed_generation = input.generation;
    status.served_by = input.served_by.to_vec();
    with_ready(status, ModelVersionPhase::Failed, REASON_INVALID_SPEC, message, input, now)
}

fn with_ready(
    mut status: ModelVersionStatus,
    phase: ModelVersionPhase,
    reason: &str,
    message: &str,
    input: StatusInput<'_>,
    now: &Time,
) -> ModelVersionStatus {
    status.phase = Some(phase);
    let ready = ConditionStatus::from(phase == ModelVersionPhase::Ready);
    let condition = DesiredCondition::new(CONDITION_READY, ready, reason, message, input.generation);
    set_condition(&mut status.conditions, condition, now);
    status
}

fn shorten(text: &str) -> String {
    let trimmed = text.trim();
    let mut out: String = trimmed.chars().take(300).collect();
    if out.len() < trimmed.len() {
        out.push_str("...");
    }
    out
}

/// Events for a changed Ready reason (Warning when Failed) and a changed servedBy.
pub fn events(previous: &ModelVersionStatus, next: &ModelVersionStatus) -> Vec<EventSpec> {
    let mut events = Vec::new();
    let ready = |s: &ModelVersionStatus| {
        find_condition(&s.conditions, CONDITION_READY).map(|c| (c.status.clone(), c.reason.clone()))
    };
    if ready(previous) != ready(next)
        && let Some(condition) = find_condition(&next.conditions, CONDITION_READY)
    {
        events.push(EventSpec {
            warning: next.phase == Some(ModelVersionPhase::Failed),
            reason: condition.reason.clone(),
            note: condition.message.clone(),
            action: "Verify".to_owned(),
        });
    }
    if previous.evaluation.is_none()
        && let Some(evaluation) = &next.evaluation
    {
        events.push(EventSpec {
            warning: false,
            reason: "Evaluated".to_owned(),
            note: describe_evaluation(evaluation),
            action: "Evaluate".to_owned(),
        });
    }
    // Only the turn between serving and not serving is news; the full list is
    // in status.servedBy (an Event never carries an unbounded list).
    if previous.served_by.is_empty() != next.served_by.is_empty() {
        events.push(EventSpec {
            warning: false,
            reason: "ServedByChanged".to_owned(),
            note: if next.served_by.is_empty() {
                "no InferenceService serves this version".to_owned()
            } else {
                format!("served by {}", bounded_list(&next.served_by, 3))
            },
            action: "Serve".to_owned(),
        });
    }
    events
}

/// At most `limit` names, then how many more there are.
pub fn bounded_list(names: &[String], limit: usize) -> String {
    let shown = names.iter().take(limit).cloned().collect::<Vec<_>>().join(", ");
    match names.len().saturating_sub(limit) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

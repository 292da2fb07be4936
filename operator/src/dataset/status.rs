//! Dataset status: computed from the inspect Job and its pod's termination
//! message (pure), then written in one server-side apply patch when it changed.

use hone_crds::Dataset;
use hone_crds::conditions::{ConditionStatus, DesiredCondition, find_condition, set_condition};
use hone_crds::consts::{CONDITION_READY, REASON_INVALID_SPEC};
use hone_crds::contract::{InspectSummary, TERMINATION_LOG, TerminationSummary};
use hone_crds::dataset::{DatasetPhase, DatasetStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::INSPECT_CONTAINER;
use crate::context::{Context, EventSpec};
use crate::termination::{JobOutcome, TerminationMessage, job_outcome, latest_termination_message};

/// Why writing status failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status patch was refused.
    #[error("patching status of dataset {namespace}/{name}: {source}")]
    Patch {
        /// Namespace of the Dataset.
        namespace: String,
        /// Name of the Dataset.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        "status_patch"
    }
}

/// Ready reason once the data is verified.
pub const REASON_VERIFIED: &str = "Verified";
/// Ready reason while the first inspection of a spec runs.
pub const REASON_VERIFYING: &str = "Verifying";
/// Ready reason before any inspect Job exists.
pub const REASON_PENDING: &str = "Pending";
/// Ready reason when the inspect Job failed without saying why.
pub const REASON_JOB_FAILED: &str = "InspectJobFailed";
/// Ready reason when the inspect Job succeeded but left no summary.
pub const REASON_SUMMARY_MISSING: &str = "SummaryMissing";
/// Ready reason when the termination message is not an inspect summary.
pub const REASON_SUMMARY_UNREADABLE: &str = "SummaryUnreadable";
/// Event reason when a verification finds a new digest.
pub const REASON_CONTENT_CHANGED: &str = "ContentChanged";

/// What status is computed from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// The Dataset's `metadata.generation`.
    pub generation: Option<i64>,
    /// The status as it is.
    pub previous: &'a DatasetStatus,
    /// The current inspect Job (as applied).
    pub job: Option<&'a Job>,
    /// Pods of that Job.
    pub pods: &'a [Pod],
    /// Refresh round of the Job (0 for the first verification of a spec).
    pub round: u32,
}

/// The status the Dataset should have. `now` is written only where something
/// changed: a condition flipping, or a new digest.
pub fn compute(input: StatusInput<'_>, now: &Time) -> DatasetStatus {
    let mut status = input.previous.clone();
    status.observed_generation = input.generation;
    let Some(job) = input.job else {
        let message = "waiting for the inspect Job to be created";
        return with_ready(
            status,
            DatasetPhase::Pending,
            false,
            REASON_PENDING,
            message,
            input.generation,
            now,
        );
    };
    let job_name = job.metadata.name.clone().unwrap_or_default();
    status.inspect_job_name = Some(job_name.clone());
    let pods: Vec<&Pod> = input.pods.iter().collect();
    let (phase, ready, reason, message) = match job_outcome(job) {
        JobOutcome::Running { .. } => {
            let refreshing = input.round > 0
                && input.previous.phase == Some(DatasetPhase::Ready)
                && input.previous.digest.is_some();
            if refreshing {
                let digest = input.previous.digest.clone().unwrap_or_default();
                (
                    DatasetPhase::Ready,
                    true,
                    REASON_VERIFIED.to_owned(),
                    format!("verified as {digest}; re-verifying in Job {job_name}"),
                )
            } else {
                (
                    DatasetPhase::Verifying,
                    false,
                    REASON_VERIFYING.to_owned(),
                    format!("inspect Job {job_name} is reading every sample"),
                )
            }
        }
        JobOutcome::Succeeded => match latest_termination_message(&pods, INSPECT_CONTAINER) {
            Some(TerminationMessage::Summary(TerminationSummary::Inspect(summary))) => {
                let message = record_summary(&mut status, &summary, now);
                (DatasetPhase::Ready, true, REASON_VERIFIED.to_owned(), message)
            }
            Some(TerminationMessage::Summary(TerminationSummary::Error(error))) => {
                (DatasetPhase::Failed, false, condition_reason(&error.reason), error.message)
            }
            Some(TerminationMessage::Summary(
                TerminationSummary::Train(_) | TerminationSummary::EvalSplit(_),
            )) => (
                DatasetPhase::Failed,
                false,
                REASON_SUMMARY_UNREADABLE.to_owned(),
                format!(
                    "inspect Job {job_name} wrote another command's summary, not an inspect summary: \
                     the trainer image must run `inspect` for its args"
                ),
            ),
            Some(TerminationMessage::Raw(text)) => (
                DatasetPhase::Failed,
                false,
                REASON_SUMMARY_UNREADABLE.to_owned(),
                format!(
                    "inspect Job {job_name} succeeded but its termination message is not an inspect summary: {text}"
                ),
            ),
            None => (
                DatasetPhase::Failed,
                false,
                REASON_SUMMARY_MISSING.to_owned(),
                format!(
                    "inspect Job {job_name} succeeded but its pod left no termination message at \
                     {TERMINATION_LOG}; the trainer image must write its inspect summary there"
                ),
            ),
        },
        JobOutcome::Failed { reason: job_reason, message: job_message } => {
            match latest_termination_message(&pods, INSPECT_CONTAINER) {
                Some(TerminationMessage::Summary(TerminationSummary::Error(error))) => {
                    (DatasetPhase::Failed, false, condition_reason(&error.reason), error.message)
                }
                Some(TerminationMessage::Raw(text)) => (
                    DatasetPhase::Failed,
                    false,
                    REASON_JOB_FAILED.to_owned(),
                    format!("inspect Job {job_name} failed ({job_reason}): {text}"),
                ),
                _ => {
                    let detail =
                        if job_message.is_empty() { String::new() } else { format!(": {job_message}") };
                    (
                        DatasetPhase::Failed,
                        false,
                        REASON_JOB_FAILED.to_owned(),
                        format!(
                            "inspect Job {job_name} failed ({job_reason}{detail}) and left no summary; \
                             see `kubectl logs job/{job_name}`"
                        ),
                    )
                }
            }
        }
    };
    with_ready(status, phase, ready, &reason, &message, input.generation, now)
}

/// The status of a Dataset whose spec cannot be used: Failed, `Ready=False`
/// with reason `InvalidSpec` and the validation message.
pub fn invalid(
    previous: &DatasetStatus,
    generation: Option<i64>,
    message: &str,
    now: &Time,
) -> DatasetStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.inspect_job_name = None;
    with_ready(status, DatasetPhase::Failed, false, REASON_INVALID_SPEC, message, generation, now)
}

/// Records a verified summary; returns the Ready message.
fn record_summary(status: &mut DatasetStatus, summary: &InspectSummary, now: &Time) -> String {
    if status.digest.as_deref() != Some(summary.digest.as_str()) {
        status.content_version = Some(status.content_version.unwrap_or(0).saturating_add(1));
        status.verified_at = Some(now.clone());
        status.digest = Some(summary.digest.clone());
    } else if status.verified_at.is_none() {
        status.verified_at = Some(now.clone());
    }
    status.samples = Some(to_i64(summary.samples));
    status.size_bytes = Some(to_i64(summary.size_bytes));
    status.classes = Some(summary.classes.clone());
    status.class_counts = Some(summary.class_counts.iter().map(|(k, v)| (k.clone(), to_i64(*v))).collect());
    format!("{} samples in {} classes, digest {}", summary.samples, summary.classes.len(), summary.digest)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The trainer's error reason when it is a valid condition reason, else a generic one.
fn condition_reason(reason: &str) -> String {
    let valid = reason.len() <= 128
        && reason.starts_with(|c: char| c.is_ascii_alphabetic())
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if valid { reason.to_owned() } else { REASON_JOB_FAILED.to_owned() }
}

fn with_ready(
    mut status: DatasetStatus,
    phase: DatasetPhase,
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> DatasetStatus {
    status.phase = Some(phase);
    let condition =
        DesiredCondition::new(CONDITION_READY, ConditionStatus::from(ready), reason, message, generation);
    set_condition(&mut status.conditions, condition, now);
    status
}

/// The Events a status change deserves: a new Ready reason (Warning when
/// Failed) and a changed digest.
pub fn events(previous: &DatasetStatus, next: &DatasetStatus) -> Vec<EventSpec> {
    let mut events = Vec::new();
    let ready = |s: &DatasetStatus| {
        find_condition(&s.conditions, CONDITION_READY).map(|c| (c.status.clone(), c.reason.clone()))
    };
    if ready(previous) != ready(next)
        && let Some(condition) = find_condition(&next.conditions, CONDITION_READY)
    {
        events.push(EventSpec {
            warning: next.phase == Some(DatasetPhase::Failed),
            reason: condition.reason.clone(),
            note: condition.message.clone(),
            action: "Verify".to_owned(),
        });
    }
    if let (Some(old), Some(new)) = (&previous.digest, &next.digest)
        && old != new
    {
        events.push(EventSpec {
            warning: false,
            reason: REASON_CONTENT_CHANGED.to_owned(),
            note: format!(
                "content changed from {old} to {new}: content version {}",
                next.content_version.unwrap_or_default()
            ),
            action: "Verify".to_owned(),
        });
    }
    events
}

/// Writes `next` when it differs from the Dataset's status, then publishes
/// the Events the change deserves.
pub async fn update(ctx: &Context, ds: &Dataset, next: DatasetStatus) -> Result<(), Error> {
    let previous = ds.status.clone().unwrap_or_default();
    if previous == next {
        return Ok(());
    }
    crate::status_patch::apply_status(&ctx.client, ds, &previous, &next).await.map_err(|source| {
        Error::Patch {
            namespace: ds.metadata.namespace.clone().unwrap_or_default(),
            name: ds.metadata.name.clone().unwrap_or_default(),
            source,
        }
    })?;
    for event in events(&previous, &next) {
        ctx.publish(ds, event).await;
    }
    Ok(())
}

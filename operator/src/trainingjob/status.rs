//! TrainingJob status: mapped from the training Job, its pods and their
//! termination messages. Pure.

use hone_crds::conditions::{ConditionStatus, DesiredCondition, set_conditions};
use hone_crds::consts::CONDITION_READY;
use hone_crds::contract::{TERMINATION_LOG, TerminationSummary, TrainSummary};
use hone_crds::trainingjob::{
    ArtifactRef, FailureReason, Progress, TrainingJobPhase, TrainingJobStatus, WorkersStatus,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::desired::{COMPLETION_INDEX_ANNOTATION, TRAINER_CONTAINER};
use crate::termination::{JobOutcome, TerminationMessage, job_outcome, latest_termination_message};

/// Condition: pods are training.
pub const CONDITION_RUNNING: &str = "Running";
/// Condition: training finished.
pub const CONDITION_SUCCEEDED: &str = "Succeeded";
/// Condition: training failed.
pub const CONDITION_FAILED: &str = "Failed";
/// Condition: the Job is suspended (by spec or by Kueue).
pub const CONDITION_SUSPENDED: &str = "Suspended";
/// Container waiting reasons that mean the image cannot be pulled.
const IMAGE_PULL_REASONS: &[&str] =
    &["ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"];

/// Where the Dataset gate stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetGate {
    /// Ready; training uses this digest.
    Ready {
        /// The digest the Job trains on.
        digest: String,
    },
    /// Not Ready yet (verifying): wait.
    Waiting {
        /// What the Dataset is doing.
        message: String,
    },
    /// Missing or Failed: a person has to act.
    Blocked {
        /// Why.
        message: String,
    },
}

/// What status is computed from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// The TrainingJob's `metadata.generation`.
    pub generation: Option<i64>,
    /// The status as it is.
    pub previous: &'a TrainingJobStatus,
    /// The Dataset gate.
    pub dataset: &'a DatasetGate,
    /// The training Job, once created.
    pub job: Option<&'a Job>,
    /// Pods of that Job.
    pub pods: &'a [Pod],
    /// The ModelVersion registered for this run, once created.
    pub model_version: Option<&'a str>,
}

/// One-word outcome and the sentence that goes with it.
struct Summary {
    phase: TrainingJobPhase,
    reason: String,
    message: String,
    failure: Option<FailureReason>,
}

impl Summary {
    fn new(phase: TrainingJobPhase, reason: &str, message: String) -> Self {
        Self { phase, reason: reason.to_owned(), message, failure: None }
    }

    fn failed(failure: FailureReason, message: String) -> Self {
        Self {
            phase: TrainingJobPhase::Failed,
            reason: failure_reason_name(failure).to_owned(),
            message,
            failure: Some(failure),
        }
    }
}

/// The wire name of a failure reason (its condition reason too).
pub fn failure_reason_name(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::OomKilled => "OOMKilled",
        FailureReason::DeadlineExceeded => "DeadlineExceeded",
        FailureReason::BackoffLimitExceeded => "BackoffLimitExceeded",
        FailureReason::ImagePullBackOff => "ImagePullBackOff",
        FailureReason::DatasetNotReady => "DatasetNotReady",
        FailureReason::TrainerError => "TrainerError",
        FailureReason::InvalidSpec => "InvalidSpec",
    }
}

/// The status the TrainingJob should have; `now` only moves conditions that flip.
pub fn compute(input: StatusInput<'_>, now: &Time) -> TrainingJobStatus {
    let mut status = input.previous.clone();
    status.observed_generation = input.generation;
    let summary = match input.job {
        None => {
            status.failure_reason = None;
            match input.dataset {
                DatasetGate::Ready { .. } => Summary::new(
                    TrainingJobPhase::Pending,
                    "Creating",
                    "creating the training Job".to_owned(),
                ),
                DatasetGate::Waiting { message } => Summary::new(
                    TrainingJobPhase::Pending,
                    "DatasetNotReady",
                    format!("waiting for the Dataset to be Ready: {message}"),
                ),
                DatasetGate::Blocked { message } => Summary {
                    failure: Some(FailureReason::DatasetNotReady),
                    ..Summary::new(TrainingJobPhase::Pending, "DatasetNotReady", message.clone())
                },
            }
        }
        Some(job) => {
            record_job(&mut status, job, input.dataset);
            job_summary(&mut status, job, input.pods, input.model_version)
        }
    };
    status.phase = Some(summary.phase);
    status.failure_reason = summary.failure;
    status.message = Some(summary.message.clone());
    let conditions = conditions(&summary, input.generation);
    set_conditions(&mut status.conditions, conditions, now);
    status
}

/// Status of a TrainingJob whose spec cannot be used.
pub fn invalid(
    previous: &TrainingJobStatus,
    generation: Option<i64>,
    message: &str,
    now: &Time,
) -> TrainingJobStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let summary = Summary::failed(FailureReason::InvalidSpec, message.to_owned());
    status.phase = Some(summary.phase);
    status.failure_reason = summary.failure;
    status.message = Some(summary.message.clone());
    set_conditions(&mut status.conditions, conditions(&summary, generation), now);
    status
}

fn record_job(status: &mut TrainingJobStatus, job: &Job, dataset: &DatasetGate) {
    status.job_name = job.metadata.name.clone();
    let job_status = job.status.clone().unwrap_or_default();
    status.start_time = job_status.start_time.clone().or(status.start_time.take());
    status.completion_time = job_status.completion_time.clone().or(status.completion_time.take());
    let started =
        job_status.active.unwrap_or(0) + job_status.succeeded.unwrap_or(0) + job_status.failed.unwrap_or(0);
    // Workers fail together (a collective with a dead peer fails), so an
    // attempt is one start of the whole group.
    let workers = job_workers(job);
    if started > 0 {
        status.attempts = Some((started + workers - 1) / workers);
    }
    if status.dataset_digest.is_none()
        && let DatasetGate::Ready { digest } = dataset
    {
        status.dataset_digest = Some(digest.clone());
    }
}

fn job_summary(
    status: &mut TrainingJobStatus,
    job: &Job,
    pods: &[Pod],
    model_version: Option<&str>,
) -> Summary {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let live = |p: &&Pod| p.metadata.deletion_timestamp.is_none();
    status.workers = Some(WorkersStatus {
        ready: i32::try_from(pods.iter().filter(live).filter(|p| pod_ready(p)).count()).unwrap_or(i32::MAX),
        total: job_workers(job),
    });
    let all: Vec<&Pod> = pods.iter().collect();
    // Rank 0 alone writes the training summary; a failure may be told by any worker.
    let rank0: Vec<&Pod> = pods.iter().filter(|p| is_rank0(p)).collect();
    let message = latest_termination_message(&rank0, TRAINER_CONTAINER);
    let any_message = || {
        let error = |pods: &[&Pod]| {
            latest_termination_message(pods, TRAINER_CONTAINER)
                .filter(|m| matches!(m, TerminationMessage::Summary(TerminationSummary::Error(_))))
        };
        error(&rank0)
            .or_else(|| all.iter().find_map(|p| error(&[p])))
            .or_else(|| latest_termination_message(&all, TRAINER_CONTAINER))
    };
    let pods = all.clone();
    match job_outcome(job) {
        JobOutcome::Succeeded => match message {
            Some(TerminationMessage::Summary(TerminationSummary::Train(train))) => {
                record_training(status, &train);
                match model_version {
                    Some(mv) => {
                        status.model_version = Some(mv.to_owned());
                        Summary::new(
                            TrainingJobPhase::Succeeded,
                            "Succeeded",
                            format!("trained {} epochs; registered as ModelVersion {mv}", train.epoch),
                        )
                    }
                    None => Summary::new(
                        TrainingJobPhase::Running,
                        "Registering",
                        format!("trained {} epochs; registering the model as a ModelVersion", train.epoch),
                    ),
                }
            }
            Some(TerminationMessage::Summary(TerminationSummary::Error(error))) => {
                Summary::failed(FailureReason::TrainerError, format!("{}: {}", error.reason, error.message))
            }
            Some(TerminationMessage::Summary(
                TerminationSummary::Inspect(_) | TerminationSummary::EvalSplit(_),
            )) => Summary::failed(
                FailureReason::TrainerError,
                format!("Job {job_name} wrote an inspect summary, not a training summary: check spec.args"),
            ),
            Some(TerminationMessage::Raw(text)) => Summary::failed(
                FailureReason::TrainerError,
                format!(
                    "Job {job_name} succeeded but its termination message is not a training summary: {text}"
                ),
            ),
            None => Summary::failed(
                FailureReason::TrainerError,
                format!(
                    "Job {job_name} succeeded but its pod left no summary at {TERMINATION_LOG}; \
                     a bring-your-own trainer must write the training summary there"
                ),
            ),
        },
        JobOutcome::Failed { reason, message: job_message } => {
            failure_summary(&job_name, &reason, &job_message, &pods, any_message())
        }
        JobOutcome::Running { active } => {
            if let Some((reason, detail)) = image_pull_problem(&pods) {
                return Summary::failed(
                    FailureReason::ImagePullBackOff,
                    format!("cannot pull the trainer image ({reason}: {detail}); check spec.image and the registry credentials"),
                )
                .pending();
            }
            let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
            if suspended {
                let queue =
                    job.metadata.labels.as_ref().and_then(|l| l.get(hone_crds::consts::LABEL_KUEUE_QUEUE));
                let message = match queue {
                    Some(queue) => {
                        format!("Job {job_name} is suspended until Kueue admits it from queue {queue}")
                    }
                    None => format!(
                        "Job {job_name} is suspended (spec.runPolicy.suspend); set it to false to resume"
                    ),
                };
                return Summary::new(TrainingJobPhase::Suspended, "Suspended", message);
            }
            let phase_is = |phase: &'static str| {
                move |p: &&Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase)
            };
            let finished_pod = pods.iter().any(phase_is("Succeeded"));
            let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
            // A failed attempt's replacement is waiting out the Job's backoff
            // or has not started yet: the run goes on from its last checkpoint.
            if failed > 0 && !pods.iter().any(phase_is("Running")) && !finished_pod {
                let attempts = status.attempts.unwrap_or(1);
                let next = if active > 0 { attempts } else { attempts + 1 };
                return Summary::new(
                    TrainingJobPhase::Running,
                    "Retrying",
                    format!(
                        "Job {job_name}: attempt {next} is starting after {failed} failed pod(s); training \
                         resumes from the last checkpoint"
                    ),
                );
            }
            if active > 0 {
                Summary::new(TrainingJobPhase::Running, "Training", format!("Job {job_name} is training"))
            } else if finished_pod {
                // The pod is done and the Job controller has not marked the Job yet.
                Summary::new(
                    TrainingJobPhase::Running,
                    "Finishing",
                    format!("Job {job_name}'s pod finished; waiting for the Job to complete"),
                )
            } else {
                Summary::new(
                    TrainingJobPhase::Pending,
                    "Starting",
                    format!("Job {job_name} is starting its pods"),
                )
            }
        }
    }
}

impl Summary {
    /// A problem that is not final: the Job is still waiting on it.
    fn pending(self) -> Self {
        Self { phase: TrainingJobPhase::Pending, ..self }
    }
}

fn failure_summary(
    job_name: &str,
    job_reason: &str,
    job_message: &str,
    pods: &[&Pod],
    message: Option<TerminationMessage>,
) -> Summary {
    if oom_killed(pods) {
        return Summary::failed(
            FailureReason::OomKilled,
            "the trainer ran out of memory (OOMKilled): raise spec.resources.limits.memory or lower \
             spec.hyperparameters.batchSize"
                .to_owned(),
        );
    }
    if job_reason == "DeadlineExceeded" {
        return Summary::failed(
            FailureReason::DeadlineExceeded,
            format!(
                "Job {job_name} ran longer than spec.runPolicy.activeDeadlineSeconds allows; raise it or train fewer epochs"
            ),
        );
    }
    match message {
        Some(TerminationMessage::Summary(TerminationSummary::Error(error))) => {
            Summary::failed(FailureReason::TrainerError, format!("{}: {}", error.reason, error.message))
        }
        other if job_reason == "BackoffLimitExceeded" => {
            let last = match other {
                Some(TerminationMessage::Raw(text)) => format!("; last output: {text}"),
                _ => format!("; see `kubectl logs job/{job_name}`"),
            };
            Summary::failed(
                FailureReason::BackoffLimitExceeded,
                format!("training pods failed more often than spec.runPolicy.backoffLimit allows{last}"),
            )
        }
        _ => Summary::failed(
            FailureReason::TrainerError,
            format!("Job {job_name} failed ({job_reason}: {job_message}); see `kubectl logs job/{job_name}`"),
        ),
    }
}

fn record_training(status: &mut TrainingJobStatus, train: &TrainSummary) {
    status.progress =
        Some(Progress { epoch: train.epoch, total_epochs: train.total_epochs, ..Progress::default() });
    status.metrics = Some(train.metrics.clone());
    status.artifact = Some(ArtifactRef {
        uri: train.artifact_uri.clone(),
        digest: train.artifact_digest.clone(),
        size_bytes: i64::try_from(train.artifact_size_bytes).ok(),
    });
    if let Some(digest) = &train.dataset_digest {
        status.dataset_digest = Some(digest.clone());
    }
}

/// Workers of `job`: its completions (1 for a plain Job).
fn job_workers(job: &Job) -> i32 {
    job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1).max(1)
}

/// True for the pod of rank 0: index 0 of an Indexed Job, or any pod of a plain one.
pub fn is_rank0(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX_ANNOTATION))
        .is_none_or(|i| i == "0")
}

/// True for a running pod whose `Ready` condition holds.
fn pod_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn container_statuses<'a>(
    pods: &'a [&'a Pod],
) -> impl Iterator<Item = &'a k8s_openapi::api::core::v1::ContainerStatus> + 'a {
    pods.iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|c| c.name == TRAINER_CONTAINER)
}

fn oom_killed(pods: &[&Pod]) -> bool {
    container_statuses(pods).any(|c| {
        let reason = |s: Option<&k8s_openapi::api::core::v1::ContainerState>| {
            s.and_then(|s| s.terminated.as_ref()).and_then(|t| t.reason.as_deref()) == Some("OOMKilled")
        };
        reason(c.state.as_ref()) || reason(c.last_state.as_ref())
    })
}

fn image_pull_problem(pods: &[&Pod]) -> Option<(String, String)> {
    container_statuses(pods).find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        IMAGE_PULL_REASONS
            .contains(&reason)
            .then(|| (reason.to_owned(), waiting.message.clone().unwrap_or_default()))
    })
}

/// The five conditions, all set every time.
fn conditions(summary: &Summary, generation: Option<i64>) -> Vec<DesiredCondition> {
    let phase = summary.phase;
    let is = |p: TrainingJobPhase| ConditionStatus::from(phase == p);
    let make = |type_: &str, status: ConditionStatus| {
        DesiredCondition::new(type_, status, summary.reason.clone(), summary.message.clone(), generation)
    };
    vec![
        make(CONDITION_READY, is(TrainingJobPhase::Succeeded)),
        make(CONDITION_RUNNING, is(TrainingJobPhase::Running)),
        make(CONDITION_SUCCEEDED, is(TrainingJobPhase::Succeeded)),
        make(CONDITION_FAILED, is(TrainingJobPhase::Failed)),
        make(CONDITION_SUSPENDED, is(TrainingJobPhase::Suspended)),
    ]
}

//! The TrainingJob controller: wait for the Dataset, run the training Job,
//! map its outcome to status, register the result as a ModelVersion.
//!
//! observe (Dataset, Jobs, pods, registered ModelVersion) -> validate (pure,
//! with the Dataset gate) -> desired (pure) -> apply (create or toggle
//! suspend, prune) -> register (exactly once) -> status (pure, one patch).

pub mod apply;
pub mod desired;
pub mod live;
pub mod observe;
pub mod register;
pub mod status;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hone_crds::TrainingJob;
use hone_crds::conditions::find_condition;
use hone_crds::consts::CONDITION_READY;
use hone_crds::contract::TerminationSummary;
use hone_crds::trainingjob::{TrainingJobPhase, TrainingJobStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use self::status::{DatasetGate, StatusInput};
use crate::context::{Context, EventSpec};
use crate::controllers::{controller_for, drain_results, phase_name, with_phase_report};
use crate::termination::{JobOutcome, TerminationMessage, job_outcome, latest_termination_message};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "trainingjob";

/// Why a TrainingJob reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks metadata.
    #[error(transparent)]
    Validate(#[from] validate::Error),
    /// Applying children failed.
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// Registering the ModelVersion failed.
    #[error(transparent)]
    Register(#[from] register::Error),
    /// Writing status failed.
    #[error("writing status of trainingjob {namespace}/{name}: {source}")]
    Status {
        /// Namespace.
        namespace: String,
        /// Name.
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
            Self::Validate(e) => e.category(),
            Self::Apply(e) => e.category(),
            Self::Register(e) => e.category(),
            Self::Status { .. } => "status",
        }
    }
}

/// One reconcile of a TrainingJob, timed and counted.
pub async fn reconcile(tj: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    crate::controllers::instrumented(&ctx, CONTROLLER, &*tj, Error::category, reconcile_inner(&tj, &ctx))
        .await
}

async fn reconcile_inner(tj: &TrainingJob, ctx: &Context) -> Result<Action, Error> {
    let time = Time(Timestamp::now());
    let namespace = tj.namespace().unwrap_or_default();
    let previous = tj.status.clone().unwrap_or_default();
    let generation = tj.metadata.generation;
    let observed = observe::observe(ctx, tj);
    let finished = matches!(previous.phase, Some(TrainingJobPhase::Succeeded | TrainingJobPhase::Failed));
    let queued = tj.spec.queue_name.is_some();

    let (valid, gate) = match validate::validate(tj, observed.dataset.as_ref(), &ctx.config) {
        Ok(valid) => {
            let gate = DatasetGate::Ready { digest: valid.dataset.digest.clone() };
            (Some(valid), gate)
        }
        Err(validate::Error::InvalidSpec(message)) if observed.jobs.is_empty() => {
            let next = status::invalid(&previous, generation, &message, &time);
            write_status(ctx, tj, &previous, &next).await?;
            return Ok(Action::await_change());
        }
        Err(validate::Error::DatasetNotReady { message, blocked }) => {
            let gate =
                if blocked { DatasetGate::Blocked { message } } else { DatasetGate::Waiting { message } };
            (None, gate)
        }
        // A Job already runs: its outcome is reported even if the spec or the
        // Dataset no longer validates (the spec that shaped it is immutable).
        Err(validate::Error::InvalidSpec(_)) => {
            (None, DatasetGate::Ready { digest: previous.dataset_digest.clone().unwrap_or_default() })
        }
        Err(other @ validate::Error::MissingMetadata(_)) => return Err(other.into()),
    };
    let desired = valid.as_ref().map(|valid| {
        let mut desired = desired::build(valid);
        ctx.config.placement.apply_to_job(&mut desired.job);
        desired
    });
    let applied = apply::apply(ctx, &namespace, desired.as_ref(), &observed, queued, finished).await?;
    // Outcome of a Job that exists without a desired one (Dataset deleted mid-run).
    let gate = match (&gate, &applied.job, &previous.dataset_digest) {
        (DatasetGate::Ready { .. }, _, _) | (_, None, _) | (_, _, None) => gate,
        (_, Some(_), Some(digest)) => DatasetGate::Ready { digest: digest.clone() },
    };

    let registered = match train_summary(applied.job.as_ref(), &applied.pods) {
        Some(train) => {
            let secret_ref = valid
                .as_ref()
                .map(|v| v.output.secret_ref.clone())
                .unwrap_or_else(|| tj.spec.output.as_ref().and_then(|o| o.secret_ref.clone()));
            let input = register::Registration {
                registered: observed.registered.as_ref(),
                train: &train,
                dataset: observed.dataset.as_ref(),
                secret_ref,
            };
            let (name, created) = register::ensure(ctx, tj, input).await?;
            if created {
                ctx.publish(
                    tj,
                    EventSpec {
                        warning: false,
                        reason: "Registered".to_owned(),
                        note: format!("registered the trained model as ModelVersion {name}"),
                        action: "Register".to_owned(),
                    },
                )
                .await;
            }
            Some(name)
        }
        None => observed.registered.as_ref().map(ResourceExt::name_any),
    };
    let input = StatusInput {
        generation,
        previous: &previous,
        dataset: &gate,
        job: applied.job.as_ref(),
        pods: &applied.pods,
        model_version: registered.as_deref(),
    };
    let mut next = status::compute(input, &time);
    if applied.job.is_none() && finished {
        // The Job was removed after it finished (ttlSecondsAfterFinished): the recorded outcome stands.
        next = previous.clone();
    }
    let training = next.phase == Some(TrainingJobPhase::Running);
    if training && let Some(url) = live::target(&applied.pods, ctx.config.trainer_metrics_address) {
        match live::read(&url).await {
            Ok(figures) => live::record(&mut next, &figures, &time),
            // Starting, or an image without the page: the last figures stand.
            Err(error) => tracing::debug!(trainingjob = %tj.name_any(), %error, "live figures not read"),
        }
    }
    write_status(ctx, tj, &previous, &next).await?;
    Ok(match (&gate, next.phase) {
        // Read the trainer's figures again while it trains.
        (_, Some(TrainingJobPhase::Running)) => Action::requeue(ctx.config.trainer_progress_interval),
        // The Dataset watch brings the change; poll slowly in case it is created later.
        (DatasetGate::Waiting { .. } | DatasetGate::Blocked { .. }, _) if applied.job.is_none() => {
            Action::requeue(Duration::from_secs(300))
        }
        _ => Action::await_change(),
    })
}

/// The training summary of a Job that completed, if its pod left one.
fn train_summary(job: Option<&Job>, pods: &[Pod]) -> Option<hone_crds::contract::TrainSummary> {
    if job_outcome(job?) != JobOutcome::Succeeded {
        return None;
    }
    // Rank 0 alone writes the training summary.
    let pods: Vec<&Pod> = pods.iter().filter(|p| status::is_rank0(p)).collect();
    match latest_termination_message(&pods, desired::TRAINER_CONTAINER)? {
        TerminationMessage::Summary(TerminationSummary::Train(train)) => Some(train),
        _ => None,
    }
}

async fn write_status(
    ctx: &Context,
    tj: &TrainingJob,
    previous: &TrainingJobStatus,
    next: &TrainingJobStatus,
) -> Result<(), Error> {
    crate::status_patch::apply_status(&ctx.client, tj, previous, next).await.map_err(|source| {
        Error::Status { namespace: tj.namespace().unwrap_or_default(), name: tj.name_any(), source }
    })?;
    for event in events(previous, next) {
        ctx.publish(tj, event).await;
    }
    Ok(())
}

/// The Events a status change deserves: every new phase, with the Ready
/// condition's reason and message (Warning for Failed).
pub fn events(previous: &TrainingJobStatus, next: &TrainingJobStatus) -> Vec<EventSpec> {
    if previous.phase == next.phase {
        return Vec::new();
    }
    let Some(phase) = next.phase else { return Vec::new() };
    let (reason, note) = find_condition(&next.conditions, CONDITION_READY)
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| (format!("{phase:?}"), next.message.clone().unwrap_or_default()));
    vec![EventSpec { warning: phase == TrainingJobPhase::Failed, reason, note, action: "Train".to_owned() }]
}

/// Transient errors retry with a per-object exponential backoff; a lost
/// reservation race (category `conflict`) retries at once.
pub fn error_policy(tj: Arc<TrainingJob>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::controllers::retry_later(&ctx, CONTROLLER, &*tj, error.category(), error)
}

/// The TrainingJob controller over one scope, woken by `triggers`; resolves
/// when it has shut down.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    triggers: futures::stream::BoxStream<'static, kube::runtime::reflector::ObjectRef<TrainingJob>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> BoxFuture<'static, ()> {
    let ctx_metrics = ctx.metrics.clone();
    let store = ctx.caches.training_jobs.clone();
    let run = controller_for(store.clone(), triggers).graceful_shutdown_on(shutdown).run(
        reconcile,
        error_policy,
        ctx,
    );
    let phase = |tj: &TrainingJob| phase_name(tj.status.as_ref().and_then(|s| s.phase.as_ref()));
    with_phase_report(drain_results(run), store, "TrainingJob", namespace, ctx_metrics, phase)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod register_tests;

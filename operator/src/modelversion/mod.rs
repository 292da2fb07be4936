//! The ModelVersion controller: verify the artifact with a short Job, keep
//! `servedBy` current, and guard deletion with a finalizer (refused while an
//! InferenceService serves it; with `hone.dev/artifact-policy: Delete` the
//! artifact is purged from storage first).
//!
//! observe (Jobs, pods, InferenceServices) -> validate + desired (pure) ->
//! apply (create the verify Job once) -> status (pure, one patch).

pub mod desired;
pub mod finalize;
pub mod registry;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use hone_crds::consts::{FIELD_MANAGER, LABEL_MODEL_VERSION};
use hone_crds::{Dataset, ModelVersion};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use self::desired::EvaluationPlan;
use self::status::StatusInput;

/// The plan of a status computed before any is made (an invalid spec).
static NO_PLAN: EvaluationPlan = EvaluationPlan::NoDataset;
use crate::caches::{in_namespace, owned};
use crate::context::Context;
use crate::controllers::{controller_for, drain_results, phase_name, with_phase_report};
use crate::termination::pod_of_job;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "modelversion";

/// Why a ModelVersion reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the apiserver failed.
    #[error("{action} for modelversion {namespace}/{name}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The object lacks metadata.
    #[error(transparent)]
    Validate(#[from] desired::Error),
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api { action, .. } if action.starts_with("reading") || action.starts_with("listing") => {
                "kube_api"
            }
            Self::Api { action, .. } if action.contains("status") => "status",
            Self::Api { action, .. } if action.contains("finalizer") => "finalizer",
            Self::Api { .. } => "apply",
            Self::Validate(e) => e.category(),
        }
    }
}

/// What the ModelVersion controller reads.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Jobs it controls (verify and purge).
    pub jobs: Vec<Job>,
    /// Their pods.
    pub pods: Vec<Pod>,
    /// InferenceServices serving it.
    pub served_by: Vec<String>,
    /// Every ModelVersion of the namespace (read only while this one is being
    /// deleted): a purge skips files another version holds.
    pub model_versions: Vec<ModelVersion>,
    /// The Dataset it is evaluated on, when one is named and exists.
    pub evaluation_dataset: Option<Dataset>,
}

/// One reconcile, timed and counted.
pub async fn reconcile(mv: Arc<ModelVersion>, ctx: Arc<Context>) -> Result<Action, Error> {
    crate::controllers::instrumented(&ctx, CONTROLLER, &*mv, Error::category, reconcile_inner(&mv, &ctx))
        .await
}

pub(crate) fn api_error(mv: &ModelVersion, action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (mv.namespace().unwrap_or_default(), mv.name_any());
    move |source| Error::Api { action, namespace, name, source }
}

/// The verify and purge Jobs it controls, their pods, the InferenceServices
/// serving it and the namespace's ModelVersions, from the watch caches.
fn observe(ctx: &Context, mv: &ModelVersion) -> Observed {
    let namespace = mv.namespace().unwrap_or_default();
    let uid = mv.metadata.uid.clone().unwrap_or_default();
    let name = mv.name_any();
    let caches = &ctx.caches;
    let jobs = owned(&caches.model_version_batch.jobs, LABEL_MODEL_VERSION, &name, &namespace, &uid);
    let pods = in_namespace(&caches.model_version_batch.pods, &namespace)
        .into_iter()
        .filter(|p| p.labels().get(LABEL_MODEL_VERSION) == Some(&name))
        .collect();
    let services = in_namespace(&caches.inference_services, &namespace);
    let served_by = desired::served_by(&name, &services);
    // Read only while this one is being deleted: a purge skips files another version holds.
    let model_versions = match mv.metadata.deletion_timestamp {
        Some(_) => in_namespace(&caches.model_versions, &namespace),
        None => Vec::new(),
    };
    let evaluation_dataset = mv.spec.evaluation_dataset().and_then(|dataset| {
        let key = kube::runtime::reflector::ObjectRef::<Dataset>::new(dataset).within(&namespace);
        caches.datasets.get(&key).map(|d| (*d).clone())
    });
    Observed { jobs, pods, served_by, model_versions, evaluation_dataset }
}

async fn reconcile_inner(mv: &ModelVersion, ctx: &Context) -> Result<Action, Error> {
    let time = Time(Timestamp::now());
    let observed = observe(ctx, mv);
    if mv.metadata.deletion_timestamp.is_some() {
        return finalize::finalize(ctx, mv, &observed).await;
    }
    finalize::ensure_finalizer(ctx, mv).await?;
    let previous = mv.status.clone().unwrap_or_default();
    if registry::needs_resolution(mv) {
        // A reference the registry refused stays refused: the spec is immutable.
        if previous.phase == Some(hone_crds::modelversion::ModelVersionPhase::Failed) {
            return Ok(Action::await_change());
        }
        return resolve(ctx, mv, &previous, &time).await;
    }
    let valid = match desired::validate(mv, &ctx.config) {
        Ok(valid) => valid,
        Err(desired::Error::InvalidSpec(message)) => {
            let input = status_input(mv, &previous, None, &[], &observed.served_by);
            write_status(ctx, mv, &previous, &status::invalid(input, &message, &time)).await?;
            return Ok(Action::await_change());
        }
        Err(other) => return Err(other.into()),
    };
    let name = desired::verify_job_name(&valid);
    let mut job = observed.jobs.iter().find(|j| j.metadata.name.as_deref() == Some(name.as_str())).cloned();
    let verified = matches!(
        previous.phase,
        Some(
            hone_crds::modelversion::ModelVersionPhase::Ready
                | hone_crds::modelversion::ModelVersionPhase::Failed
        )
    );
    let plan = desired::evaluation_plan(mv, observed.evaluation_dataset.as_ref());
    let blocked = matches!(plan, EvaluationPlan::Waiting { .. } | EvaluationPlan::Refused { .. });
    if job.is_none() && !verified && !blocked {
        let mut wanted = desired::verify_job(&valid, plan.input());
        ctx.config.placement.apply_to_job(&mut wanted);
        let created = Api::<Job>::namespaced(ctx.client.clone(), &valid.namespace)
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&wanted))
            .await
            .map_err(api_error(mv, "applying the verify Job"))?;
        tracing::info!(job = %name, modelversion = %valid.name, "created verify Job");
        job = Some(created);
    }
    let pods: Vec<Pod> = observed.pods.iter().filter(|p| pod_of_job(p, &name)).cloned().collect();
    let mut input = status_input(mv, &previous, job.as_ref(), &pods, &observed.served_by);
    input.plan = &plan;
    let mut next = status::compute(input, &time);
    let retry = export(ctx, mv, &mut next, &time).await;
    write_status(ctx, mv, &previous, &next).await?;
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

/// Resolves a `models:/` artifact URI through the operator's registry and
/// records the outcome; the status change wakes the next step.
async fn resolve(
    ctx: &Context,
    mv: &ModelVersion,
    previous: &hone_crds::ModelVersionStatus,
    time: &Time,
) -> Result<Action, Error> {
    let generation = mv.metadata.generation;
    let (Some(reference), Some(client)) = (mv.registry_reference(), registry::registry(&ctx.config)) else {
        write_status(ctx, mv, previous, &registry::unconfigured_status(previous, generation, time)).await?;
        return Ok(Action::await_change());
    };
    let outcome = match client {
        Ok(client) => client.resolve(&reference, mv.spec.artifact.format).await,
        Err(e) => Err(e),
    };
    let retry = outcome.as_ref().err().filter(|e| e.retryable()).map(|_| registry::retry_delay(2));
    if let Err(e) = &outcome {
        tracing::warn!(modelversion = %mv.name_any(), reference = %reference, error = %e, "resolving through MLflow failed");
    }
    write_status(ctx, mv, previous, &registry::resolution_status(previous, generation, outcome, time))
        .await?;
    Ok(retry.map_or_else(Action::await_change, Action::requeue))
}

/// With `spec.mlflow`, registers a verified version in MLflow and records
/// the outcome in `next`; returns when to try again.
async fn export(
    ctx: &Context,
    mv: &ModelVersion,
    next: &mut hone_crds::ModelVersionStatus,
    time: &Time,
) -> Option<std::time::Duration> {
    if !registry::wants_export(mv, next) {
        return None;
    }
    if let Some(wait) = registry::export_wait(next, time) {
        return Some(wait);
    }
    let Some(client) = registry::registry(&ctx.config) else {
        registry::record_unconfigured(mv, next, time);
        return None;
    };
    // The version being registered is the one verified, so the status being written.
    let mut verified = mv.clone();
    verified.status = Some(next.clone());
    let outcome = match (client, registry::export_of(&verified)) {
        (Ok(client), Some(request)) => client.register(&request).await,
        (Err(e), _) => Err(e),
        (_, None) => {
            Err(crate::mlflow::RegistryError::Refused("no artifact location to register".to_owned()))
        }
    };
    if let Err(e) = &outcome {
        tracing::warn!(modelversion = %mv.name_any(), error = %e, "registering in MLflow failed");
    }
    registry::record_export(mv, next, outcome, time)
}

fn status_input<'a>(
    mv: &'a ModelVersion,
    previous: &'a hone_crds::ModelVersionStatus,
    job: Option<&'a Job>,
    pods: &'a [Pod],
    served_by: &'a [String],
) -> StatusInput<'a> {
    StatusInput {
        generation: mv.metadata.generation,
        previous,
        job,
        pods,
        served_by,
        spec_digest: mv.spec.artifact.digest.as_deref(),
        evaluation_dataset: mv.spec.evaluation_dataset(),
        evaluation_required: mv.spec.evaluation_required(),
        plan: &NO_PLAN,
    }
}

pub(crate) async fn write_status(
    ctx: &Context,
    mv: &ModelVersion,
    previous: &hone_crds::ModelVersionStatus,
    next: &hone_crds::ModelVersionStatus,
) -> Result<(), Error> {
    crate::status_patch::apply_status(&ctx.client, mv, previous, next)
        .await
        .map_err(api_error(mv, "writing status"))?;
    for event in status::events(previous, next) {
        ctx.publish(mv, event).await;
    }
    Ok(())
}

/// Transient errors retry with a per-object exponential backoff.
pub fn error_policy(mv: Arc<ModelVersion>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::controllers::retry_later(&ctx, CONTROLLER, &*mv, error.category(), error)
}

/// The ModelVersion controller over one scope, woken by `triggers`;
/// resolves when it has shut down.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    triggers: futures::stream::BoxStream<'static, kube::runtime::reflector::ObjectRef<ModelVersion>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> BoxFuture<'static, ()> {
    let ctx_metrics = ctx.metrics.clone();
    let store = ctx.caches.model_versions.clone();
    let run = controller_for(store.clone(), triggers).graceful_shutdown_on(shutdown).run(
        reconcile,
        error_policy,
        ctx,
    );
    let phase = |mv: &ModelVersion| phase_name(mv.status.as_ref().and_then(|s| s.phase.as_ref()));
    with_phase_report(drain_results(run), store, "ModelVersion", namespace, ctx_metrics, phase)
}

#[cfg(test)]
mod evaluation_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod tests;

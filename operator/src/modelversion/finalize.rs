//! The deletion guard: a finalizer on every ModelVersion, released only when
//! no InferenceService serves it and (under `hone.dev/artifact-policy:
//! Delete`) its artifact was purged from storage.

use std::time::Duration;

use hone_crds::ModelVersion;
use hone_crds::consts::{ANNOTATION_ARTIFACT_POLICY, FIELD_MANAGER, FINALIZER_MODEL_VERSION};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::desired::{self, purges_artifact};
use super::{Error, Observed, api_error};
use crate::context::{Context, EventSpec};
use crate::termination::{JobOutcome, job_outcome};

/// How often a blocked deletion is looked at again (the InferenceService watch
/// usually brings the change sooner).
const BLOCKED_RECHECK: Duration = Duration::from_secs(60);

/// What to do with a ModelVersion being deleted. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// InferenceServices still serve it: keep the finalizer.
    Blocked(Vec<String>),
    /// Start the purge Job.
    StartPurge,
    /// The purge Job runs.
    Purging,
    /// The purge Job failed: keep the finalizer, tell a person.
    PurgeFailed(String),
    /// Release the finalizer.
    Release,
}

/// Decides the next deletion step from what serves it, the policy and the purge Job.
pub fn step(served_by: &[String], purge: bool, purge_job: Option<&Job>) -> Step {
    if !served_by.is_empty() {
        return Step::Blocked(served_by.to_vec());
    }
    if !purge {
        return Step::Release;
    }
    match purge_job.map(job_outcome) {
        None => Step::StartPurge,
        Some(JobOutcome::Running { .. }) => Step::Purging,
        Some(JobOutcome::Succeeded) => Step::Release,
        Some(JobOutcome::Failed { reason, message }) => Step::PurgeFailed(format!("{reason}: {message}")),
    }
}

/// Adds the finalizer when it is missing.
pub async fn ensure_finalizer(ctx: &Context, mv: &ModelVersion) -> Result<(), Error> {
    if mv.finalizers().iter().any(|f| f == FINALIZER_MODEL_VERSION) {
        return Ok(());
    }
    let mut finalizers = mv.finalizers().to_vec();
    finalizers.push(FINALIZER_MODEL_VERSION.to_owned());
    patch_finalizers(ctx, mv, finalizers, "adding the finalizer").await
}

/// Runs one deletion step.
pub async fn finalize(ctx: &Context, mv: &ModelVersion, observed: &Observed) -> Result<Action, Error> {
    if !mv.finalizers().iter().any(|f| f == FINALIZER_MODEL_VERSION) {
        return Ok(Action::await_change());
    }
    let valid = desired::validate(mv, &ctx.config);
    let purge = purges_artifact(mv) && valid.is_ok();
    let purge_name = valid.as_ref().map(desired::purge_job_name).unwrap_or_default();
    let purge_job = observed.jobs.iter().find(|j| j.metadata.name.as_deref() == Some(purge_name.as_str()));
    match step(&observed.served_by, purge, purge_job) {
        Step::Blocked(by) => {
            publish(
                ctx,
                mv,
                true,
                "DeletionBlocked",
                format!(
                    "deletion waits until no InferenceService serves this version; served by {}: \
                     point their variants at another ModelVersion first",
                    by.join(", ")
                ),
            )
            .await;
            Ok(Action::requeue(BLOCKED_RECHECK))
        }
        Step::StartPurge => {
            if let Ok(valid) = &valid {
                let mut job = desired::purge_job(valid);
                ctx.config.placement.apply_to_job(&mut job);
                Api::<Job>::namespaced(ctx.client.clone(), &valid.namespace)
                    .patch(&purge_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&job))
                    .await
                    .map_err(api_error(mv, "applying the purge Job"))?;
                let (uris, _) = desired::purge_targets(valid);
                publish(
                    ctx,
                    mv,
                    false,
                    "PurgingArtifact",
                    format!("deleting {} from storage", uris.join(", ")),
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Step::Purging => Ok(Action::await_change()),
        Step::PurgeFailed(why) => {
            publish(
                ctx,
                mv,
                true,
                "PurgeFailed",
                format!(
                    "deleting the artifact failed ({why}); fix the storage credentials and delete Job \
                     {purge_name} to retry, or remove the {ANNOTATION_ARTIFACT_POLICY} annotation to keep it"
                ),
            )
            .await;
            Ok(Action::requeue(BLOCKED_RECHECK))
        }
        Step::Release => {
            let finalizers: Vec<String> =
                mv.finalizers().iter().filter(|f| *f != FINALIZER_MODEL_VERSION).cloned().collect();
            patch_finalizers(ctx, mv, finalizers, "removing the finalizer").await?;
            tracing::info!(modelversion = %mv.name_any(), purged = purge, "released the ModelVersion for deletion");
            Ok(Action::await_change())
        }
    }
}

/// Replaces the finalizer list, guarded by the resourceVersion read.
async fn patch_finalizers(
    ctx: &Context,
    mv: &ModelVersion,
    finalizers: Vec<String>,
    action: &'static str,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": mv.resource_version()}
    });
    Api::<ModelVersion>::namespaced(ctx.client.clone(), &mv.namespace().unwrap_or_default())
        .patch(&mv.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_error(mv, action))?;
    Ok(())
}

async fn publish(ctx: &Context, mv: &ModelVersion, warning: bool, reason: &str, note: String) {
    let event = EventSpec { warning, reason: reason.to_owned(), note, action: "Delete".to_owned() };
    ctx.publish(mv, event).await;
}

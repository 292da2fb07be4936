//! The deletion guard: a finalizer on every ModelVersion, released once no
//! InferenceService serves it and (under `hone.dev/artifact-policy: Delete`)
//! its artifact was purged from storage, or could not be.
//!
//! Never stuck, never wider than asked:
//! - the purge deletes only [`desired::purge_scope`]: the run folder the
//!   operator recorded in `status.runFolder`, or else the model file and its
//!   card;
//! - another ModelVersion that holds those files keeps them: the purge is
//!   skipped (Event `ArtifactKept` naming it);
//! - a purge that cannot run (the apiserver refuses the Job, as it does in a
//!   terminating namespace; its pod cannot start because the Secret is gone;
//!   it failed or ran past its deadline) releases the finalizer with a Warning
//!   Event naming what was left in storage.

use std::time::Duration;

use hone_crds::ModelVersion;
use hone_crds::consts::{FIELD_MANAGER, FINALIZER_MODEL_VERSION};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::desired::{self, PurgeScope, purges_artifact};
use super::status::bounded_list;
use super::{Error, Observed, api_error};
use crate::context::{Context, EventSpec};
use crate::termination::{JobOutcome, job_outcome, pod_of_job};

/// How often a blocked deletion is looked at again (the InferenceService watch
/// usually brings the change sooner).
const BLOCKED_RECHECK: Duration = Duration::from_secs(60);

/// Waiting reasons of a purge pod that will not start without a person
/// (a missing Secret is `CreateContainerConfigError`).
const UNSTARTABLE: &[&str] = &["CreateContainerConfigError", "InvalidImageName"];

/// What to do with a ModelVersion being deleted. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// InferenceServices still serve it: keep the finalizer.
    Blocked(Vec<String>),
    /// Other ModelVersions hold the same files: release without purging.
    KeptBy(Vec<String>),
    /// Start the purge Job.
    StartPurge,
    /// The purge Job runs.
    Purging,
    /// The purge cannot finish: release, and say what is left in storage.
    PurgeFailed(String),
    /// Release the finalizer.
    Release,
}

/// What the deletion step is decided from.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeletionInput<'a> {
    /// InferenceServices serving the version.
    pub served_by: &'a [String],
    /// `hone.dev/artifact-policy: Delete` and a valid spec.
    pub purge: bool,
    /// Other ModelVersions (not being deleted) holding files the purge would delete.
    pub kept_by: &'a [String],
    /// The purge Job, once created.
    pub purge_job: Option<&'a Job>,
    /// Its pods.
    pub purge_pods: &'a [&'a Pod],
}

/// Decides the next deletion step. Pure.
pub fn step(input: DeletionInput<'_>) -> Step {
    if !input.served_by.is_empty() {
        return Step::Blocked(input.served_by.to_vec());
    }
    if !input.purge {
        return Step::Release;
    }
    // A purge already under way finishes (or fails) whatever appeared since.
    match input.purge_job.map(job_outcome) {
        Some(JobOutcome::Succeeded) => Step::Release,
        Some(JobOutcome::Failed { reason, message }) => Step::PurgeFailed(format!("{reason}: {message}")),
        Some(JobOutcome::Running { .. }) => match unstartable(input.purge_pods) {
            Some(why) => Step::PurgeFailed(why),
            None => Step::Purging,
        },
        None if !input.kept_by.is_empty() => Step::KeptBy(input.kept_by.to_vec()),
        None => Step::StartPurge,
    }
}

/// Why a purge pod cannot start, when one waits on something only a person can fix.
pub fn unstartable(pods: &[&Pod]) -> Option<String> {
    pods.iter()
        .flat_map(|pod| pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .find(|w| w.reason.as_deref().is_some_and(|r| UNSTARTABLE.contains(&r)))
        .map(|w| {
            format!(
                "{}: {}",
                w.reason.as_deref().unwrap_or_default(),
                w.message.as_deref().unwrap_or_default()
            )
        })
}

/// True when the apiserver refused to create the purge Job for good: 403 (the
/// namespace is terminating, or the operator may not) or 404 (it is gone).
pub fn refused_for_good(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403 || status.code == 404)
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
    // The files of a version imported from MLflow are the registry's, never purged.
    let imported = mv.spec.artifact.uri.trim().starts_with("models:/");
    let purge = purges_artifact(mv) && valid.is_ok() && !imported;
    let purge_name = valid.as_ref().map(desired::purge_job_name).unwrap_or_default();
    let purge_job = observed.jobs.iter().find(|j| j.metadata.name.as_deref() == Some(purge_name.as_str()));
    let purge_pods: Vec<&Pod> = observed.pods.iter().filter(|p| pod_of_job(p, &purge_name)).collect();
    let kept_by = if purge { desired::kept_by(mv, &observed.model_versions) } else { Vec::new() };
    let scope = desired::purge_scope(mv);
    let input = DeletionInput {
        served_by: &observed.served_by,
        purge,
        kept_by: &kept_by,
        purge_job,
        purge_pods: &purge_pods,
    };
    match step(input) {
        Step::Blocked(by) => {
            let note = format!(
                "deletion waits until no InferenceService serves this version; served by {}: \
                 point their variants at another ModelVersion first",
                bounded_list(&by, 3)
            );
            publish(ctx, mv, true, "DeletionBlocked", note).await;
            Ok(Action::requeue(BLOCKED_RECHECK))
        }
        Step::KeptBy(by) => {
            let note = format!(
                "kept {} in storage: ModelVersion {} holds the same files",
                describe(&scope),
                bounded_list(&by, 3)
            );
            publish(ctx, mv, false, "ArtifactKept", note).await;
            release(ctx, mv, "kept").await
        }
        Step::StartPurge => {
            let Ok(valid) = &valid else { return Ok(Action::await_change()) };
            let mut job = desired::purge_job(valid);
            ctx.config.placement.apply_to_job(&mut job);
            let created = Api::<Job>::namespaced(ctx.client.clone(), &valid.namespace)
                .patch(&purge_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&job))
                .await;
            match created {
                Ok(_) => {
                    let note = format!("deleting {} from storage", describe(&scope));
                    publish(ctx, mv, false, "PurgingArtifact", note).await;
                    Ok(Action::await_change())
                }
                Err(error) if refused_for_good(&error) => {
                    left_in_storage(ctx, mv, &scope, &format!("the purge Job was refused: {error}")).await
                }
                Err(error) => Err(api_error(mv, "applying the purge Job")(error)),
            }
        }
        Step::Purging => Ok(Action::await_change()),
        Step::PurgeFailed(why) => {
            left_in_storage(ctx, mv, &scope, &format!("purge Job {purge_name} failed ({why})")).await
        }
        Step::Release => release(ctx, mv, if purge { "purged" } else { "released" }).await,
    }
}

/// What a scope deletes, for Event messages.
fn describe(scope: &PurgeScope) -> String {
    match scope {
        PurgeScope::RunFolder(folder) => format!("run folder {folder}/"),
        PurgeScope::Files(files) => files.join(" and "),
    }
}

/// Releases a version whose purge cannot finish, with a Warning naming what is left.
async fn left_in_storage(
    ctx: &Context,
    mv: &ModelVersion,
    scope: &PurgeScope,
    why: &str,
) -> Result<Action, Error> {
    let note = format!(
        "{why}; released the ModelVersion without deleting its artifact: {} is left in storage \
         (delete it by hand)",
        describe(scope)
    );
    // In a terminating namespace the Event cannot be recorded: the log keeps it.
    tracing::warn!(modelversion = %mv.name_any(), namespace = %mv.namespace().unwrap_or_default(), "{note}");
    publish(ctx, mv, true, "ArtifactLeftInStorage", note).await;
    release(ctx, mv, "left in storage").await
}

async fn release(ctx: &Context, mv: &ModelVersion, artifact: &str) -> Result<Action, Error> {
    let finalizers: Vec<String> =
        mv.finalizers().iter().filter(|f| *f != FINALIZER_MODEL_VERSION).cloned().collect();
    patch_finalizers(ctx, mv, finalizers, "removing the finalizer").await?;
    tracing::info!(modelversion = %mv.name_any(), artifact, "released the ModelVersion for deletion");
    Ok(Action::await_change())
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

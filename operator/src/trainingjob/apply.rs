//! Creates the training Job (server-side apply), keeps its `suspend` in line
//! with the spec, and prunes Jobs of an earlier incarnation.
//!
//! A Job's pod template is immutable and the TrainingJob's training fields
//! are too (CEL), so an existing Job is never re-applied whole: only
//! `spec.suspend` may change, and only when Kueue does not own it.

use hone_crds::consts::FIELD_MANAGER;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use super::desired::Desired;
use super::observe::Observed;
use crate::context::Context;
use crate::termination::pod_of_job;

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A write to the apiserver failed.
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Write {
        /// What was being done.
        action: &'static str,
        /// Kind of the child.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name of the child.
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
            Self::Write { action: "deleting", .. } => "prune",
            Self::Write { .. } => "apply",
        }
    }
}

/// What to do with the training Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// Create it (server-side apply of the whole object).
    Create,
    /// Set `spec.suspend` to this value.
    SetSuspend(bool),
    /// Leave it as it is.
    Keep,
    /// Do not create it again: the run finished and its Job is gone (TTL).
    Finished,
}

/// Decides what to do with the Job, given the one that exists (if any).
/// Pure: `finished` says the status already recorded a terminal outcome.
pub fn job_action(desired: &Job, existing: Option<&Job>, queued: bool, finished: bool) -> JobAction {
    let Some(existing) = existing else {
        return if finished { JobAction::Finished } else { JobAction::Create };
    };
    if queued {
        // Kueue admits (unsuspends) and preempts (suspends) queued Jobs.
        return JobAction::Keep;
    }
    let want = desired.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
    let have = existing.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
    let done = existing.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
        c.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    });
    if want != have && !done { JobAction::SetSuspend(want) } else { JobAction::Keep }
}

/// The training Job as the apiserver holds it after apply, and its pods.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The training Job; `None` before it exists or after TTL removed it.
    pub job: Option<Job>,
    /// Pods of that Job.
    pub pods: Vec<Pod>,
}

/// Brings the children in line with `desired` (`None`: the spec is invalid or
/// the Dataset not Ready, so no new Job) and prunes Jobs of other names.
pub async fn apply(
    ctx: &Context,
    namespace: &str,
    desired: Option<&Desired>,
    observed: &Observed,
    queued: bool,
    finished: bool,
) -> Result<Applied, Error> {
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    let wanted = desired.and_then(|d| d.job.metadata.name.clone());
    let write = |action: &'static str, kind: &'static str, name: &str| {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        move |source| Error::Write { action, kind, namespace, name, source }
    };
    let existing =
        wanted.as_deref().and_then(|w| observed.jobs.iter().find(|j| j.metadata.name.as_deref() == Some(w)));
    let mut job = existing.cloned();
    if let (Some(desired), Some(name)) = (desired, wanted.as_deref()) {
        match job_action(&desired.job, existing, queued, finished) {
            JobAction::Create => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let created = jobs
                    .patch(name, &params, &Patch::Apply(&desired.job))
                    .await
                    .map_err(write("applying", "Job", name))?;
                tracing::info!(job = name, namespace, "created training Job");
                job = Some(created);
            }
            JobAction::SetSuspend(suspend) => {
                let patch = serde_json::json!({"spec": {"suspend": suspend}});
                let patched = jobs
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(write("suspending", "Job", name))?;
                tracing::info!(job = name, namespace, suspend, "changed suspend of training Job");
                job = Some(patched);
            }
            JobAction::Keep | JobAction::Finished => {}
        }
        if let Some(service) = &desired.service {
            apply_service(ctx, namespace, service).await?;
        }
    }
    for old in &observed.jobs {
        let Some(name) = old.metadata.name.as_deref() else { continue };
        if wanted.is_none() || Some(name) == wanted.as_deref() || old.metadata.deletion_timestamp.is_some() {
            // With no desired Job (invalid spec, Dataset gone) an existing run is kept: its
            // outcome still matters and the spec that shaped it is immutable.
            continue;
        }
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(job = name, namespace, "deleted training Job of an earlier incarnation"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(write("deleting", "Job", name)(source)),
        }
    }
    let job = job.or_else(|| observed.jobs.iter().find(|j| j.metadata.deletion_timestamp.is_none()).cloned());
    let pods = match job.as_ref().and_then(|j| j.metadata.name.as_deref()) {
        Some(name) => observed.pods.iter().filter(|pod| pod_of_job(pod, name)).cloned().collect(),
        None => Vec::new(),
    };
    Ok(Applied { job, pods })
}

async fn apply_service(ctx: &Context, namespace: &str, service: &Service) -> Result<(), Error> {
    let name = service.metadata.name.clone().unwrap_or_default();
    Api::<Service>::namespaced(ctx.client.clone(), namespace)
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(service))
        .await
        .map_err(|source| Error::Write {
            action: "applying",
            kind: "Service",
            namespace: namespace.to_owned(),
            name,
            source,
        })?;
    Ok(())
}

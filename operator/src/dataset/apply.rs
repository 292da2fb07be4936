//! Server-side apply of the desired inspect Job, and pruning of the others.

use hone_crds::consts::FIELD_MANAGER;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use super::desired::Desired;
use super::observe::Observed;
use crate::context::Context;
use crate::termination::pod_of_job;

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server-side apply of the inspect Job failed.
    #[error("applying inspect Job {namespace}/{name}: {source}")]
    ApplyJob {
        /// Namespace of the Job.
        namespace: String,
        /// Name of the Job.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an outdated inspect Job failed.
    #[error("deleting outdated inspect Job {namespace}/{name}: {source}")]
    PruneJob {
        /// Namespace of the Job.
        namespace: String,
        /// Name of the Job.
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
            Self::ApplyJob { .. } => "apply",
            Self::PruneJob { .. } => "prune",
        }
    }
}

/// The inspect Job as the apiserver holds it after apply, and its pods.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The current inspect Job; `None` when none is wanted (invalid spec).
    pub job: Option<Job>,
    /// Pods of that Job.
    pub pods: Vec<Pod>,
}

/// Applies `desired` (when some) and deletes every other observed inspect Job,
/// pods included.
pub async fn apply(
    ctx: &Context,
    namespace: &str,
    desired: Option<&Desired>,
    observed: Observed,
) -> Result<Applied, Error> {
    let api = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    let wanted = desired.and_then(|d| d.job.metadata.name.clone());
    let job = match desired {
        Some(desired) => {
            let name = wanted.clone().unwrap_or_default();
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let applied = api.patch(&name, &params, &Patch::Apply(&desired.job)).await.map_err(|source| {
                Error::ApplyJob { namespace: namespace.to_owned(), name: name.clone(), source }
            })?;
            Some(applied)
        }
        None => None,
    };
    for old in &observed.jobs {
        let Some(name) = old.metadata.name.as_deref() else { continue };
        if Some(name) == wanted.as_deref() || old.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(job = name, namespace, "deleted outdated inspect Job"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::PruneJob {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    source,
                });
            }
        }
    }
    let pods = match &wanted {
        Some(name) => observed.pods.into_iter().filter(|pod| pod_of_job(pod, name)).collect(),
        None => Vec::new(),
    };
    Ok(Applied { job, pods })
}

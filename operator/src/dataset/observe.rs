//! What the Dataset controller reads: the inspect Jobs and their pods. The
//! only reads of a reconcile.

use hone_crds::Dataset;
use hone_crds::consts::LABEL_DATASET;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::children::is_controlled_by;
use crate::context::Context;

/// Why observing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing the inspect Jobs failed.
    #[error("listing inspect Jobs of dataset {namespace}/{name}: {source}")]
    ListJobs {
        /// Namespace of the Dataset.
        namespace: String,
        /// Name of the Dataset.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing the inspect pods failed.
    #[error("listing inspect pods of dataset {namespace}/{name}: {source}")]
    ListPods {
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
        "kube_api"
    }
}

/// The Dataset's children as they are.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Inspect Jobs this Dataset controls.
    pub jobs: Vec<Job>,
    /// Pods of those Jobs.
    pub pods: Vec<Pod>,
}

/// Lists the Jobs and pods labelled for `ds` and keeps those it controls
/// (a same-named Dataset deleted and recreated leaves others behind).
pub async fn observe(ctx: &Context, ds: &Dataset) -> Result<Observed, Error> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let selector = ListParams::default().labels(&format!("{LABEL_DATASET}={name}"));

    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &namespace)
        .list(&selector)
        .await
        .map_err(|source| Error::ListJobs { namespace: namespace.clone(), name: name.clone(), source })?
        .items
        .into_iter()
        .filter(|job| is_controlled_by(job.metadata.owner_references.as_deref(), &uid))
        .collect::<Vec<_>>();
    let job_uids: Vec<&str> = jobs.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .list(&selector)
        .await
        .map_err(|source| Error::ListPods { namespace, name, source })?
        .items
        .into_iter()
        .filter(|pod| {
            job_uids.iter().any(|uid| is_controlled_by(pod.metadata.owner_references.as_deref(), uid))
        })
        .collect();
    Ok(Observed { jobs, pods })
}

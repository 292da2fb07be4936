//! What the TrainingJob controller reads: its Dataset, its training Jobs and
//! their pods, and the ModelVersion registered for it. The only reads of a
//! reconcile (registration re-lists ModelVersions right before it creates one).

use hone_crds::consts::{LABEL_TRAINING_JOB, LABEL_TRAINING_JOB_UID};
use hone_crds::{Dataset, ModelVersion, TrainingJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::children::is_controlled_by;
use crate::context::Context;

/// Why observing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read of the apiserver failed.
    #[error("reading {what} of trainingjob {namespace}/{name}: {source}")]
    Read {
        /// What was read.
        what: &'static str,
        /// Namespace of the TrainingJob.
        namespace: String,
        /// Name of the TrainingJob.
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

/// The TrainingJob's world as it is.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Dataset named by `spec.datasetRef` (`None`: not found).
    pub dataset: Option<Dataset>,
    /// Training Jobs this TrainingJob controls.
    pub jobs: Vec<Job>,
    /// Pods of those Jobs.
    pub pods: Vec<Pod>,
    /// The ModelVersion registered for this TrainingJob (by uid), if any.
    pub registered: Option<ModelVersion>,
}

/// Reads the Dataset, the Jobs and pods labelled for `tj` that it controls,
/// and the ModelVersion carrying its uid.
pub async fn observe(ctx: &Context, tj: &TrainingJob) -> Result<Observed, Error> {
    let namespace = tj.metadata.namespace.clone().unwrap_or_default();
    let name = tj.metadata.name.clone().unwrap_or_default();
    let uid = tj.metadata.uid.clone().unwrap_or_default();
    let read = |what: &'static str| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| Error::Read { what, namespace, name, source }
    };
    let dataset = Api::<Dataset>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&tj.spec.dataset_ref.name)
        .await
        .map_err(read("its Dataset"))?;
    let selector = ListParams::default().labels(&format!("{LABEL_TRAINING_JOB}={name}"));
    let jobs: Vec<Job> = Api::<Job>::namespaced(ctx.client.clone(), &namespace)
        .list(&selector)
        .await
        .map_err(read("training Jobs"))?
        .items
        .into_iter()
        .filter(|job| is_controlled_by(job.metadata.owner_references.as_deref(), &uid))
        .collect();
    let job_uids: Vec<&str> = jobs.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .list(&selector)
        .await
        .map_err(read("training pods"))?
        .items
        .into_iter()
        .filter(|pod| {
            job_uids.iter().any(|uid| is_controlled_by(pod.metadata.owner_references.as_deref(), uid))
        })
        .collect();
    let registered = Api::<ModelVersion>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().labels(&format!("{LABEL_TRAINING_JOB_UID}={uid}")))
        .await
        .map_err(read("registered ModelVersions"))?
        .items
        .into_iter()
        .min_by_key(|mv| mv.spec.version);
    Ok(Observed { dataset, jobs, pods, registered })
}

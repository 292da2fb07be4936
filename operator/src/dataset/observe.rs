//! What the Dataset controller reads: the inspect Jobs and their pods. The
//! only reads of a reconcile, all from the watch caches.

use hone_crds::Dataset;
use hone_crds::consts::LABEL_DATASET;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::caches::{owned, pods_of};
use crate::context::Context;

/// The Dataset's children as they are.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Inspect Jobs this Dataset controls.
    pub jobs: Vec<Job>,
    /// Pods of those Jobs.
    pub pods: Vec<Pod>,
}

/// The Jobs and pods labelled for `ds` that it controls (a same-named
/// Dataset deleted and recreated leaves others behind), from the caches.
pub fn observe(ctx: &Context, ds: &Dataset) -> Observed {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let batch = &ctx.caches.dataset_batch;
    let jobs = owned(&batch.jobs, LABEL_DATASET, &name, &namespace, &uid);
    let pods = pods_of(&batch.pods, &jobs, &namespace);
    Observed { jobs, pods }
}

//! What the TrainingJob controller reads: its Dataset, its training Jobs and
//! their pods, and the ModelVersion registered for it. The only reads of a
//! reconcile, all from the watch caches (registration too picks its version
//! number from the ModelVersion cache).

use hone_crds::consts::LABEL_TRAINING_JOB;
use hone_crds::{Dataset, ModelVersion, TrainingJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;

use crate::caches::{owned, pods_of, registered_for};
use crate::context::Context;

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

/// The Dataset, the Jobs and pods labelled for `tj` that it controls, and
/// the ModelVersion carrying its uid, from the caches.
pub fn observe(ctx: &Context, tj: &TrainingJob) -> Observed {
    let namespace = tj.metadata.namespace.clone().unwrap_or_default();
    let name = tj.metadata.name.clone().unwrap_or_default();
    let uid = tj.metadata.uid.clone().unwrap_or_default();
    let caches = &ctx.caches;
    let dataset = caches
        .datasets
        .get(&ObjectRef::new(&tj.spec.dataset_ref.name).within(&namespace))
        .map(|ds| (*ds).clone());
    let jobs = owned(&caches.training_batch.jobs, LABEL_TRAINING_JOB, &name, &namespace, &uid);
    let pods = pods_of(&caches.training_batch.pods, &jobs, &namespace);
    let registered =
        registered_for(&caches.model_versions, &namespace, &uid).into_iter().min_by_key(|mv| mv.spec.version);
    Observed { dataset, jobs, pods, registered }
}

//! Registers a finished training run as a ModelVersion `<model>-v<N>`,
//! N = 1 + the highest existing version of that model.
//!
//! Exactly one ModelVersion per TrainingJob, across operator restarts and
//! racing replicas:
//! 1. a ModelVersion labelled with the TrainingJob's uid is the registration;
//! 2. otherwise the name is first reserved in `status.modelVersion` with a
//!    resourceVersion precondition, so only one writer can reserve it;
//! 3. then the ModelVersion is created (a plain create: AlreadyExists is an
//!    answer, never an overwrite). A name taken by someone else meanwhile is
//!    given up and a new one reserved.
//!
//! Registered ModelVersions carry no ownerReference: a registry entry outlives
//! the TrainingJob that produced it.
//!
//! Right after the create, the operator records the run folder it created for
//! the TrainingJob in the ModelVersion's `status.runFolder`: the only thing
//! that lets a purge (`hone.dev/artifact-policy: Delete`) delete a whole
//! folder. Labels and spec are anyone's to write, so they never widen a purge.

use std::collections::BTreeMap;

use hone_crds::consts::{
    FIELD_MANAGER, LABEL_DATASET, LABEL_MANAGED_BY, LABEL_MODEL, LABEL_PART_OF, LABEL_TRAINING_JOB,
    LABEL_TRAINING_JOB_UID, LABEL_VALUE_HONE,
};
use hone_crds::contract::TrainSummary;
use hone_crds::modelversion::{
    Artifact, EvaluationSpec, Lineage, MlflowExport, ModelVersionSpec, Signature, Task,
};
use hone_crds::{Dataset, ModelVersion, SecretRef, TrainingJob};
use kube::api::{Api, Patch, PatchParams, PostParams};

use kube::{Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::context::Context;

/// Field manager of `status.runFolder`: not the ModelVersion controller's, so
/// that controller's status applies (which do not list the field when they
/// work from an older copy) never remove it.
pub const REGISTRY_FIELD_MANAGER: &str = "hone-operator-registry";

/// Why registration did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or write of the apiserver failed.
    #[error("{action} for trainingjob {namespace}/{name}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Namespace of the TrainingJob.
        namespace: String,
        /// Name of the TrainingJob.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another writer changed the TrainingJob while a name was being reserved; retry.
    #[error("trainingjob {namespace}/{name} changed while reserving ModelVersion {model_version}; retrying")]
    Conflict {
        /// Namespace of the TrainingJob.
        namespace: String,
        /// Name of the TrainingJob.
        name: String,
        /// The name that was being reserved.
        model_version: String,
    },
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Api { .. } => "register",
            Self::Conflict { .. } => "conflict",
        }
    }
}

/// The ModelVersion name of version `version` of `model`.
pub fn model_version_name(model: &str, version: i64) -> String {
    format!("{model}-v{version}")
}

/// 1 + the highest version of `model` among `existing` (1 when there is none).
pub fn next_version(existing: &[ModelVersion], model: &str) -> i64 {
    existing.iter().filter(|mv| mv.spec.model == model).map(|mv| mv.spec.version).max().unwrap_or(0) + 1
}

/// The version a reserved name stands for, when it is `<model>-v<N>`.
pub fn reserved_version(name: &str, model: &str) -> Option<i64> {
    name.strip_prefix(model)?.strip_prefix("-v")?.parse().ok().filter(|v| *v > 0)
}

/// The ModelVersion a successful run registers. Pure.
///
/// Classes come from the summary, or (when the trainer cut them to fit the
/// termination log) from the Dataset it verified, whose classes are in the
/// same sorted order.
pub fn desired_model_version(
    tj: &TrainingJob,
    train: &TrainSummary,
    dataset: Option<&Dataset>,
    secret_ref: Option<SecretRef>,
    version: i64,
) -> ModelVersion {
    let model = tj.spec.register_as.model.clone();
    let tj_name = tj.name_any();
    // A regression model's outputs are named by the summary alone: its
    // Dataset's "classes" are the label column's distinct values.
    let classes = if train.classes.is_empty() && train.task != Task::Regression {
        dataset.and_then(|d| d.status.as_ref()).and_then(|s| s.classes.clone()).unwrap_or_default()
    } else {
        train.classes.clone()
    };
    let mut labels: BTreeMap<String, String> = tj.spec.register_as.labels.clone().unwrap_or_default();
    labels.extend([
        (LABEL_MANAGED_BY.to_owned(), LABEL_VALUE_HONE.to_owned()),
        (LABEL_PART_OF.to_owned(), LABEL_VALUE_HONE.to_owned()),
        (LABEL_MODEL.to_owned(), model.clone()),
        (LABEL_TRAINING_JOB.to_owned(), tj_name.clone()),
        (LABEL_TRAINING_JOB_UID.to_owned(), tj.metadata.uid.clone().unwrap_or_default()),
        (LABEL_DATASET.to_owned(), tj.spec.dataset_ref.name.clone()),
    ]);
    let spec = ModelVersionSpec {
        model: model.clone(),
        version,
        artifact: Artifact {
            uri: train.artifact_uri.clone(),
            format: train.artifact_format,
            digest: Some(train.artifact_digest.clone()),
            card_digest: train.card_digest.clone(),
            secret_ref,
        },
        signature: Signature {
            input_shape: train.input_shape.clone(),
            classes,
            preprocessing: train.preprocessing.clone(),
            task: train.task,
            threshold: train.threshold,
            output: train.output,
        },
        lineage: Some(Lineage {
            training_job: Some(tj_name),
            dataset: Some(tj.spec.dataset_ref.name.clone()),
            dataset_digest: train
                .dataset_digest
                .clone()
                .or_else(|| tj.status.as_ref().and_then(|s| s.dataset_digest.clone())),
        }),
        metrics: (!train.metrics.is_empty()).then(|| train.metrics.clone()),
        // Evaluated on the Dataset it was trained on (spec.lineage.dataset).
        // The verify Job measures classifiers only: a regression model is
        // verified unevaluated instead of refused (its test-split error is in
        // spec.metrics, as the trainer measured it).
        evaluation: (train.task == Task::Regression)
            .then_some(EvaluationSpec { dataset: None, required: Some(false) }),
        mlflow: tj.spec.tracking.as_ref().and_then(|t| t.mlflow.as_ref()).map(|m| MlflowExport {
            registered_model: m.registered_model.clone().unwrap_or_else(|| model.clone()),
            // From the pod: kept only when it is the shape of an MLflow run id.
            run_id: train.mlflow_run_id.clone().filter(|id| {
                (1..=64).contains(&id.len())
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }),
        }),
    };
    let mut mv = ModelVersion::new(&model_version_name(&model, version), spec);
    mv.metadata.namespace = tj.metadata.namespace.clone();
    mv.metadata.labels = Some(labels);
    mv
}

/// The run folder the operator had the trainer write to:
/// `<output>/<trainingjob>/<uid>` (the Job's `HONE_OUTPUT`, see
/// `desired::run_output`), or None without an output location.
pub fn run_folder(tj: &TrainingJob, config: &OperatorConfig) -> Option<String> {
    let output = tj.spec.output.as_ref().or(config.default_output.as_ref())?;
    let uid = tj.metadata.uid.as_deref().filter(|uid| !uid.is_empty())?;
    Some(format!("{}/{}/{uid}", output.uri.trim().trim_end_matches('/'), tj.name_any()))
}

/// The `status.runFolder` to record on `mv`, the ModelVersion registered for a
/// run whose folder is `folder`: only when its artifact is the one the trainer
/// reported and lies in that folder, and the status does not already say so.
pub fn run_folder_to_record(mv: &ModelVersion, train: &TrainSummary, folder: Option<&str>) -> Option<String> {
    let folder = folder?.trim_end_matches('/');
    let uri = mv.spec.artifact.uri.trim();
    let recorded = mv.status.as_ref().and_then(|s| s.run_folder.as_deref());
    let inside = uri == train.artifact_uri.trim() && uri.starts_with(&format!("{folder}/"));
    (inside && recorded != Some(folder)).then(|| folder.to_owned())
}

/// What registration needs besides the TrainingJob.
pub struct Registration<'a> {
    /// The ModelVersion already carrying this TrainingJob's uid, if any.
    pub registered: Option<&'a ModelVersion>,
    /// The training summary from the pod.
    pub train: &'a TrainSummary,
    /// The Dataset (for class names the summary had to cut).
    pub dataset: Option<&'a Dataset>,
    /// Credentials for the artifact's storage.
    pub secret_ref: Option<SecretRef>,
}

/// Makes sure the ModelVersion of this run exists; returns its name and whether it was created now.
pub async fn ensure(
    ctx: &Context,
    tj: &TrainingJob,
    input: Registration<'_>,
) -> Result<(String, bool), Error> {
    let namespace = tj.namespace().unwrap_or_default();
    let name = tj.name_any();
    let api_error = |action: &'static str| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| Error::Api { action, namespace, name, source }
    };
    let mvs = Api::<ModelVersion>::namespaced(ctx.client.clone(), &namespace);
    let folder = run_folder(tj, &ctx.config);
    if let Some(mv) = input.registered {
        // Recorded here too, in case the operator stopped between the create and the status write.
        record_run_folder(&mvs, mv, input.train, folder.as_deref())
            .await
            .map_err(api_error("recording the run folder"))?;
        return Ok((mv.name_any(), false));
    }
    let uid = tj.metadata.uid.clone().unwrap_or_default();
    let model = &tj.spec.register_as.model;
    let reserved =
        tj.status.as_ref().and_then(|s| s.model_version.as_deref()).and_then(|n| reserved_version(n, model));
    let version = match reserved {
        Some(version) => version,
        None => {
            // Every ModelVersion of the namespace in the watch cache,
            // hand-registered ones (which may lack the model label) included.
            // A cache behind the apiserver may name a version that exists:
            // the create below then meets AlreadyExists, gives the name up,
            // and the next reconcile reserves a higher one.
            let all = crate::caches::in_namespace(&ctx.caches.model_versions, &namespace);
            let version = next_version(&all, model);
            reserve(ctx, tj, &model_version_name(model, version)).await?;
            version
        }
    };
    let desired = desired_model_version(tj, input.train, input.dataset, input.secret_ref, version);
    let mv_name = desired.name_any();
    match mvs.create(&PostParams::default(), &desired).await {
        Ok(created) => {
            record_run_folder(&mvs, &created, input.train, folder.as_deref())
                .await
                .map_err(api_error("recording the run folder"))?;
            Ok((mv_name, true))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = mvs.get_opt(&mv_name).await.map_err(api_error("reading ModelVersion"))?;
            let ours = existing.as_ref().filter(|mv| mv.labels().get(LABEL_TRAINING_JOB_UID) == Some(&uid));
            if let Some(mv) = ours {
                record_run_folder(&mvs, mv, input.train, folder.as_deref())
                    .await
                    .map_err(api_error("recording the run folder"))?;
                return Ok((mv_name, false));
            }
            // Someone registered that name by hand since the reservation: reserve the next one.
            tracing::info!(model_version = %mv_name, "reserved ModelVersion name was taken; reserving another");
            unreserve(ctx, tj).await?;
            Err(Error::Conflict { namespace, name, model_version: mv_name })
        }
        Err(source) => Err(api_error("creating ModelVersion")(source)),
    }
}

/// Writes `status.runFolder` of `mv` (its own field manager) when
/// [`run_folder_to_record`] says so.
async fn record_run_folder(
    mvs: &Api<ModelVersion>,
    mv: &ModelVersion,
    train: &TrainSummary,
    folder: Option<&str>,
) -> Result<(), kube::Error> {
    let Some(folder) = run_folder_to_record(mv, train, folder) else { return Ok(()) };
    let name = mv.name_any();
    let patch = serde_json::json!({
        "apiVersion": ModelVersion::api_version(&()),
        "kind": ModelVersion::kind(&()),
        "status": {"runFolder": folder},
    });
    mvs.patch_status(&name, &PatchParams::apply(REGISTRY_FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Writes `model_version` into the status, guarded by the resourceVersion the
/// reconcile read: a concurrent writer makes this fail with Conflict.
async fn reserve(ctx: &Context, tj: &TrainingJob, model_version: &str) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": tj.resource_version()},
        "status": {"modelVersion": model_version},
    });
    patch_status(ctx, tj, &patch, model_version).await
}

async fn unreserve(ctx: &Context, tj: &TrainingJob) -> Result<(), Error> {
    let patch = serde_json::json!({"status": {"modelVersion": null}});
    patch_status(ctx, tj, &patch, "").await
}

async fn patch_status(
    ctx: &Context,
    tj: &TrainingJob,
    patch: &serde_json::Value,
    model_version: &str,
) -> Result<(), Error> {
    let namespace = tj.namespace().unwrap_or_default();
    let name = tj.name_any();
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
    match Api::<TrainingJob>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&name, &params, &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Err(Error::Conflict { namespace, name, model_version: model_version.to_owned() })
        }
        Err(source) => Err(Error::Api { action: "reserving a ModelVersion name", namespace, name, source }),
    }
}

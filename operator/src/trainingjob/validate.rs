//! TrainingJob validation: what the CRD schema cannot check, plus the
//! Dataset gate. Pure.

use hone_crds::conditions::is_true;
use hone_crds::consts::CONDITION_READY;
use hone_crds::dataset::{CsvOptions, DatasetFormat, DatasetPhase, ImageOptions, SplitSpec};
use hone_crds::{Dataset, StorageLocation, TrainingJob, TrainingJobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::children::controller_owner_ref;
use crate::config::OperatorConfig;

/// Extended resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Why a TrainingJob cannot get its Job (yet).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The spec passed the schema but cannot be used; the message says how to fix it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The Dataset is not Ready yet: wait, do not retry with backoff.
    #[error("dataset not ready: {message}")]
    DatasetNotReady {
        /// What the Dataset is doing, for a person.
        message: String,
        /// True when the Dataset is missing or Failed (it needs a person), false while it verifies.
        blocked: bool,
    },
    /// The object lacks metadata the apiserver always sets.
    #[error("trainingjob metadata is missing {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "invalid_spec",
            Self::DatasetNotReady { .. } => "dataset_not_ready",
            Self::MissingMetadata(_) => "missing_metadata",
        }
    }
}

/// What the training pod reads from the Dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetInput {
    /// Name of the Dataset.
    pub name: String,
    /// Where the data lives.
    pub source: StorageLocation,
    /// Layout.
    pub format: DatasetFormat,
    /// CSV options.
    pub csv: Option<CsvOptions>,
    /// Image size (ImageFolder).
    pub image: Option<ImageOptions>,
    /// Split.
    pub split: SplitSpec,
    /// The content digest the run must train on.
    pub digest: String,
}

/// A TrainingJob whose spec can be turned into a Job.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidTrainingJob {
    /// Name of the TrainingJob.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID: names the run's output folder, so a recreated TrainingJob never
    /// resumes another's checkpoints.
    pub uid: String,
    /// Controller reference children carry.
    pub owner: OwnerReference,
    /// The spec.
    pub spec: TrainingJobSpec,
    /// The Dataset as the pod reads it.
    pub dataset: DatasetInput,
    /// The output location (spec or operator default).
    pub output: StorageLocation,
    /// Trainer image (spec or operator default).
    pub image: String,
}

/// Checks `tj` against its Dataset (`None`: not found) and the operator config.
/// The digest recorded in `status.datasetDigest` when the Job was created wins
/// over the Dataset's current one, so the Job never changes under a refresh.
pub fn validate(
    tj: &TrainingJob,
    dataset: Option<&Dataset>,
    config: &OperatorConfig,
) -> Result<ValidTrainingJob, Error> {
    let name = tj.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = tj.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = tj.metadata.uid.clone().ok_or(Error::MissingMetadata("uid"))?;
    let owner = controller_owner_ref(tj).ok_or(Error::MissingMetadata("uid"))?;
    let spec = &tj.spec;

    if let (Some(gpus), Some(limit)) =
        (spec.gpus, spec.resources.as_ref().and_then(|r| r.limits.as_ref()).and_then(|l| l.get(GPU_RESOURCE)))
        && limit.0 != gpus.to_string()
    {
        return Err(invalid(format!(
            "spec.gpus is {gpus} but spec.resources.limits[{GPU_RESOURCE}] is {}: set one of them",
            limit.0
        )));
    }
    // The built-in trainer runs one process per GPU: asking it for several
    // in one pod would reserve GPUs it never uses.
    let gpus = spec.gpus.unwrap_or(0).max(
        spec.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(GPU_RESOURCE))
            .and_then(|q| q.0.trim().parse::<u32>().ok())
            .unwrap_or(0),
    );
    if spec.image.is_none() && gpus > 1 {
        return Err(invalid(format!(
            "{gpus} GPUs in one pod: the built-in trainer runs one process per GPU; set gpus: 1 and \
             workers: {} (one pod per GPU, data-parallel), or bring your own image that uses them all",
            gpus.saturating_mul(spec.workers.max(1))
        )));
    }
    let output = spec.output.clone().or_else(|| config.default_output.clone()).ok_or_else(|| {
        invalid(
            "spec.output is unset and the operator has no default output location: \
             set spec.output (e.g. s3://models/) or the operator's --default-output",
        )
    })?;
    check_writable(&output.uri, "spec.output.uri")?;
    if let Some(pretrained) = &spec.model.pretrained {
        check_readable(&pretrained.uri, "spec.model.pretrained.uri")?;
    }
    let image = spec.image.clone().unwrap_or_else(|| config.trainer_image.clone());
    let pinned = tj.status.as_ref().and_then(|s| s.dataset_digest.clone());
    let dataset = dataset_input(&spec.dataset_ref.name, dataset, pinned)?;
    Ok(ValidTrainingJob { name, namespace, uid, owner, spec: spec.clone(), dataset, output, image })
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidSpec(message.into())
}

/// What a pod reads from Dataset `name` (`None`: not found): the `pinned`
/// digest when there is one, else the Ready Dataset's current digest.
pub fn dataset_input(
    name: &str,
    dataset: Option<&Dataset>,
    pinned: Option<String>,
) -> Result<DatasetInput, Error> {
    let Some(ds) = dataset else {
        return Err(Error::DatasetNotReady {
            message: format!(
                "Dataset {name} does not exist in this namespace: create it or fix spec.datasetRef.name"
            ),
            blocked: true,
        });
    };
    let status = ds.status.clone().unwrap_or_default();
    let ready = is_true(&status.conditions, CONDITION_READY);
    let digest = match (pinned, status.digest.clone()) {
        (Some(pinned), _) => pinned,
        (None, Some(current)) if ready => current,
        _ => {
            let phase = status.phase.unwrap_or_default();
            let failed = phase == DatasetPhase::Failed;
            let detail = hone_crds::conditions::find_condition(&status.conditions, CONDITION_READY)
                .map(|c| format!(": {}", c.message))
                .unwrap_or_default();
            return Err(Error::DatasetNotReady {
                message: format!("Dataset {name} is {phase:?}{detail}"),
                blocked: failed,
            });
        }
    };
    let spec = &ds.spec;
    Ok(DatasetInput {
        name: name.to_owned(),
        source: spec.source.clone(),
        format: spec.format,
        csv: spec.csv.clone(),
        image: match spec.format {
            DatasetFormat::ImageFolder => Some(spec.image.clone().unwrap_or_default()),
            DatasetFormat::Csv => None,
        },
        split: spec.split.clone().unwrap_or_default(),
        digest,
    })
}

fn scheme(uri: &str) -> &str {
    uri.split_once("://").map(|(s, _)| s).unwrap_or("")
}

fn check_writable(uri: &str, field: &str) -> Result<(), Error> {
    match scheme(uri.trim()) {
        "s3" | "gs" | "az" | "pvc" => Ok(()),
        "http" | "https" => {
            Err(invalid(format!("{field} {uri:?}: http(s) locations are read-only; use s3, gs, az or pvc")))
        }
        "file" => Err(invalid(format!(
            "{field} {uri:?}: file:// works only for local runs; use a PersistentVolumeClaim (pvc://<claim>/<path>) or an object store"
        ))),
        other => Err(invalid(format!("{field} {uri:?}: scheme {other:?} is not supported"))),
    }
}

fn check_readable(uri: &str, field: &str) -> Result<(), Error> {
    match scheme(uri.trim()) {
        "http" | "https" => Ok(()),
        _ => check_writable(uri, field),
    }
}

/// The claim of a `pvc://<claim>/<path>` URI.
pub fn pvc_claim(uri: &str) -> Option<&str> {
    let rest = uri.trim().strip_prefix("pvc://")?;
    let claim = rest.split('/').next()?;
    (!claim.is_empty()).then_some(claim)
}

//! ModelVersion validation and the Jobs it runs: the verify Job (predictor
//! image, `verify`) and, on deletion under `hone.dev/artifact-policy: Delete`,
//! the purge Job (trainer image, `purge`), with what it may delete
//! ([`purge_scope`]) and which other versions keep those files ([`kept_by`]).
//! Pure.

use hone_crds::conditions::is_true;
use hone_crds::consts::CONDITION_READY;
use hone_crds::consts::{
    ANNOTATION_ARTIFACT_POLICY, ARTIFACT_POLICY_DELETE, LABEL_MODEL, LABEL_MODEL_VERSION,
};
use hone_crds::contract::env as contract_env;
use hone_crds::contract::{EVAL_DIR, ExpectedSignature, MODEL_CARD_FILE, TERMINATION_LOG};
use hone_crds::predictor::env;
use hone_crds::{Dataset, InferenceService, ModelVersion, ModelVersionSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource, PodTemplateSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::children::{
    batch_pod_spec, child_labels, child_name, controller_owner_ref, pod_volumes,
    restricted_container_security_context, scratch_mount, secret_env_from, sha256_hex,
};
use crate::config::OperatorConfig;
use crate::labels::{ENV_PVC_ROOT, PVC_ROOT};
use crate::trainingjob::desired::dataset_env;
use crate::trainingjob::validate::{self as tj_validate, DatasetInput, pvc_claim};

/// Container of the verify Job (status reads its termination message).
pub const VERIFY_CONTAINER: &str = "verify";
/// Init container of the verify Job that writes the evaluation split.
pub const EVAL_SPLIT_CONTAINER: &str = "eval-split";
/// Volume the two share.
const EVAL_VOLUME: &str = "eval";
/// Volume of a `pvc://` evaluation Dataset.
const DATASET_VOLUME: &str = "dataset";
/// Most bytes the held-out split may take in the pod (10,000 samples).
const EVAL_VOLUME_LIMIT: &str = "2Gi";
/// Container of the purge Job.
pub const PURGE_CONTAINER: &str = "purge";
/// Retries of a verify or purge Job before it fails.
const JOB_BACKOFF_LIMIT: i32 = 2;
/// A purge Job that has not finished in this long fails (DeadlineExceeded), so
/// a purge that can never run (its Secret gone, an image that never pulls)
/// cannot hold a deletion forever.
pub const PURGE_DEADLINE_SECONDS: i64 = 600;

/// Why a ModelVersion cannot be verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The spec passed the schema but cannot be used.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The object lacks metadata the apiserver always sets.
    #[error("modelversion metadata is missing {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "invalid_spec",
            Self::MissingMetadata(_) => "missing_metadata",
        }
    }
}

/// A ModelVersion whose Jobs can be built.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidModelVersion {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID (names the Jobs, so a recreated ModelVersion is verified again).
    pub uid: String,
    /// Controller reference the Jobs carry.
    pub owner: OwnerReference,
    /// The spec.
    pub spec: ModelVersionSpec,
    /// Where pods read the model file: `spec.artifact.uri`, or what its
    /// `models:/` reference resolved to.
    pub uri: String,
    /// What its purge deletes.
    pub purge_scope: PurgeScope,
    /// Image of the verify Job.
    pub predictor_image: String,
    /// Image of the purge Job.
    pub trainer_image: String,
}

/// Checks what the schema cannot: the artifact must be readable from a pod.
pub fn validate(mv: &ModelVersion, config: &OperatorConfig) -> Result<ValidModelVersion, Error> {
    let name = mv.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = mv.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    let uid = mv.metadata.uid.clone().ok_or(Error::MissingMetadata("uid"))?;
    let owner = controller_owner_ref(mv).ok_or(Error::MissingMetadata("uid"))?;
    let uri = mv.artifact_location().ok_or_else(|| {
        Error::InvalidSpec(format!(
            "spec.artifact.uri {:?} has not been resolved through the MLflow registry yet",
            mv.spec.artifact.uri.trim()
        ))
    })?;
    let scheme = uri.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "s3" | "gs" | "az" | "http" | "https" => {}
        "pvc" if pvc_claim(uri).is_some() => {}
        "file" => {
            return Err(Error::InvalidSpec(format!(
                "spec.artifact.uri {uri:?}: file:// cannot be read from a verify pod; copy the model to object \
                 storage (s3://, gs://, az://, http(s)://) or a PersistentVolumeClaim (pvc://<claim>/<path>)"
            )));
        }
        other => {
            return Err(Error::InvalidSpec(format!(
                "spec.artifact.uri {uri:?}: scheme {other:?} is not supported; use s3, gs, az, http(s) or pvc"
            )));
        }
    }
    let format = mv.spec.artifact.format;
    let file = format.file_name();
    if !uri.ends_with(file) {
        return Err(Error::InvalidSpec(format!(
            "spec.artifact.uri {uri:?} must name the {format} file ({file}); its {MODEL_CARD_FILE} lies beside it"
        )));
    }
    Ok(ValidModelVersion {
        name,
        namespace,
        uid,
        owner,
        spec: mv.spec.clone(),
        uri: uri.to_owned(),
        purge_scope: purge_scope(mv),
        predictor_image: config.predictor_image.clone(),
        trainer_image: config.trainer_image.clone(),
    })
}

/// On what a ModelVersion is evaluated, decided before its verify Job exists.
#[derive(Clone, Debug, PartialEq)]
pub enum EvaluationPlan {
    /// No Dataset is named (`spec.evaluation.dataset`, `spec.lineage.dataset`).
    NoDataset,
    /// The named Dataset cannot be read yet (missing, not Ready): the verify
    /// Job waits, so the version is never Ready without its evaluation.
    Waiting {
        /// Why, for a person.
        message: String,
    },
    /// The named Dataset no longer holds what the version was trained
    /// against, and evaluation is required: verification fails at once.
    Refused {
        /// Condition reason.
        reason: &'static str,
        /// Why, for a person.
        message: String,
    },
    /// As `Waiting` or `Refused`, but `spec.evaluation.required` is false:
    /// the version is verified unevaluated.
    Skipped {
        /// Condition reason.
        reason: &'static str,
        /// Why, for a person.
        message: String,
    },
    /// The test split of this Dataset, at this digest.
    On(DatasetInput),
}

impl EvaluationPlan {
    /// The Dataset input of a plan that can run.
    pub fn input(&self) -> Option<&DatasetInput> {
        match self {
            Self::On(input) => Some(input),
            _ => None,
        }
    }
}

/// The plan for `mv`, given its evaluation Dataset (`None`: not found). The
/// digest is the one the version was trained on when it names that Dataset in
/// its lineage (so the split is the one training held out), else the
/// Dataset's current one.
pub fn evaluation_plan(mv: &ModelVersion, dataset: Option<&Dataset>) -> EvaluationPlan {
    let Some(name) = mv.spec.evaluation_dataset() else { return EvaluationPlan::NoDataset };
    let required = mv.spec.evaluation_required();
    let task = mv.spec.signature.task;
    if !task.is_single_label() {
        // A Dataset's samples have one class each: accuracy and the confusion
        // matrix say nothing of a multilabel or regression model.
        let message = format!(
            "a {task} model cannot be evaluated on Dataset {name}'s test split, whose samples have one class \
             each{}",
            if required {
                ": register it with spec.evaluation.required: false (track then gates on spec.metrics)"
            } else {
                "; spec.evaluation.required is false"
            }
        );
        return match required {
            true => EvaluationPlan::Refused { reason: "EvaluationUnsupported", message },
            false => EvaluationPlan::Skipped { reason: "EvaluationUnsupported", message },
        };
    }
    let lineage = mv.spec.lineage.as_ref();
    let pinned = lineage
        .filter(|l| l.dataset.as_deref() == Some(name))
        .and_then(|l| l.dataset_digest.clone())
        .filter(|d| !d.is_empty());
    let current = dataset
        .and_then(|d| d.status.as_ref())
        .filter(|s| is_true(&s.conditions, CONDITION_READY))
        .and_then(|s| s.digest.clone());
    if let (Some(pinned), Some(current)) = (&pinned, &current)
        && pinned != current
    {
        let message = format!(
            "Dataset {name} now holds {current}, not the {pinned} this version was trained on: the test \
             split it held out is gone; register it again with spec.evaluation.dataset naming a Dataset \
             that holds data it never saw{}",
            if required { ", or with spec.evaluation.required: false to leave it unevaluated" } else { "" }
        );
        return match required {
            true => EvaluationPlan::Refused { reason: "DatasetChanged", message },
            false => EvaluationPlan::Skipped { reason: "DatasetChanged", message },
        };
    }
    match tj_validate::dataset_input(name, dataset, pinned) {
        Ok(input) => EvaluationPlan::On(input),
        Err(e) => {
            let why = e.to_string().trim_start_matches("dataset not ready: ").to_owned();
            match required {
                true => EvaluationPlan::Waiting {
                    message: format!("waiting to evaluate on Dataset {name}: {why}"),
                },
                false => EvaluationPlan::Skipped {
                    reason: "DatasetNotReady",
                    message: format!(
                        "not evaluated on Dataset {name} ({why}); spec.evaluation.required is false"
                    ),
                },
            }
        }
    }
}

/// Name of the verify Job.
pub fn verify_job_name(valid: &ValidModelVersion) -> String {
    child_name(&valid.name, "verify", &sha256_hex(valid.uid.as_bytes()))
}

/// Name of the purge Job.
pub fn purge_job_name(valid: &ValidModelVersion) -> String {
    child_name(&valid.name, "purge", &sha256_hex(valid.uid.as_bytes()))
}

/// The verify Job: fetch, check the digests and the card's signature, load,
/// one forward pass on zeros; with an evaluation Dataset, an init container
/// (trainer image, `eval-split`) first writes that Dataset's held-out test
/// split to a shared folder and `verify` measures the model on it.
pub fn verify_job(valid: &ValidModelVersion, evaluation: Option<&DatasetInput>) -> Job {
    let artifact = &valid.spec.artifact;
    let expected = serde_json::to_string(&ExpectedSignature::of(&valid.spec.signature)).unwrap_or_default();
    let mut env = vec![
        env_var(env::MODEL_URI, &valid.uri),
        env_var(env::MODEL_FORMAT, artifact.format.as_str()),
        env_var(env::TERMINATION_LOG, TERMINATION_LOG),
        env_var(env::DEVICE, "cpu"),
        env_var(env::EXPECTED_SIGNATURE, &expected),
    ];
    if let Some(digest) = &artifact.digest {
        env.push(env_var(env::MODEL_DIGEST, digest));
    }
    if let Some(digest) = &artifact.card_digest {
        env.push(env_var(env::MODEL_CARD_DIGEST, digest));
    }
    if evaluation.is_some() {
        env.push(env_var(env::EVAL_DIR, EVAL_DIR));
    }
    let container = Container {
        name: VERIFY_CONTAINER.to_owned(),
        image: Some(valid.predictor_image.clone()),
        args: Some(vec!["verify".to_owned()]),
        ..Default::default()
    };
    let mut job = job(valid, verify_job_name(valid), container, env, false);
    if let Some(dataset) = evaluation {
        add_eval_split(&mut job, valid, dataset);
    }
    job
}

/// Adds the `eval-split` init container and the folder it shares with `verify`.
fn add_eval_split(job: &mut Job, valid: &ValidModelVersion, dataset: &DatasetInput) {
    let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else { return };
    let shared =
        VolumeMount { name: EVAL_VOLUME.to_owned(), mount_path: EVAL_DIR.to_owned(), ..Default::default() };
    let mut mounts = vec![scratch_mount(), shared.clone()];
    let mut vars = dataset_env(dataset);
    vars.push((contract_env::EVAL_OUT, EVAL_DIR.to_owned()));
    vars.push((contract_env::TERMINATION_LOG, TERMINATION_LOG.to_owned()));
    if let Some(claim) = pvc_claim(&dataset.source.uri) {
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        let same_claim =
            |v: &&Volume| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim);
        let name = match volumes.iter().find(same_claim) {
            Some(volume) => volume.name.clone(),
            None => {
                volumes.push(Volume {
                    name: DATASET_VOLUME.to_owned(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.to_owned(),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                });
                DATASET_VOLUME.to_owned()
            }
        };
        mounts.push(VolumeMount {
            name,
            mount_path: format!("{PVC_ROOT}/{claim}"),
            read_only: Some(true),
            ..Default::default()
        });
        vars.push((ENV_PVC_ROOT, PVC_ROOT.to_owned()));
    }
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: EVAL_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(EVAL_VOLUME_LIMIT.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    });
    for container in pod.containers.iter_mut() {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount { read_only: Some(true), ..shared.clone() });
    }
    pod.init_containers = Some(vec![Container {
        name: EVAL_SPLIT_CONTAINER.to_owned(),
        image: Some(valid.trainer_image.clone()),
        args: Some(vec!["eval-split".to_owned()]),
        env: Some(vars.into_iter().map(|(name, value)| env_var(name, &value)).collect()),
        env_from: secret_env_from(dataset.source.secret_ref.iter()),
        security_context: Some(restricted_container_security_context()),
        termination_message_path: Some(TERMINATION_LOG.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ..Default::default()
    }]);
}

/// What the purge of one ModelVersion deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeScope {
    /// Everything below the run folder the operator created for the
    /// TrainingJob that registered it (`status.runFolder`).
    RunFolder(String),
    /// Exactly these objects: the model file and the model card beside it.
    Files(Vec<String>),
}

impl PurgeScope {
    /// The URIs the purge command is given.
    pub fn uris(&self) -> Vec<String> {
        match self {
            Self::RunFolder(folder) => vec![folder.clone()],
            Self::Files(files) => files.clone(),
        }
    }

    /// True when each URI is a folder whose every object goes.
    pub fn is_folder(&self) -> bool {
        matches!(self, Self::RunFolder(_))
    }

    /// True when deleting `self` would delete something `other` holds.
    pub fn overlaps(&self, other: &PurgeScope) -> bool {
        let holds = |scope: &PurgeScope, uri: &str| match scope {
            Self::RunFolder(folder) => within(uri, folder),
            Self::Files(files) => files.iter().any(|f| f == uri),
        };
        match (self, other) {
            (Self::RunFolder(a), Self::RunFolder(b)) => within(a, b) || within(b, a),
            (Self::RunFolder(_), Self::Files(files)) => files.iter().any(|f| holds(self, f)),
            (Self::Files(files), _) => files.iter().any(|f| holds(other, f)),
        }
    }
}

/// True when `uri` is `folder` or lies below it (whole path segments only:
/// `s3://b/run-1` does not hold `s3://b/run-10/model.pt`).
fn within(uri: &str, folder: &str) -> bool {
    uri == folder || uri.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
}

/// What deleting `mv` under `hone.dev/artifact-policy: Delete` removes. The
/// run folder only when the operator recorded it in `status.runFolder` at
/// registration and the artifact lies in it; otherwise (a version registered
/// by hand, whatever its labels say) only the model file and its card.
pub fn purge_scope(mv: &ModelVersion) -> PurgeScope {
    let uri = mv.spec.artifact.uri.trim();
    let run_folder = mv
        .status
        .as_ref()
        .and_then(|s| s.run_folder.as_deref())
        .map(|folder| folder.trim().trim_end_matches('/'))
        .filter(|folder| folder.contains("://") && uri.starts_with(&format!("{folder}/")));
    match run_folder {
        Some(folder) => PurgeScope::RunFolder(folder.to_owned()),
        None => {
            let dir = uri.strip_suffix(mv.spec.artifact.format.file_name()).unwrap_or(uri);
            PurgeScope::Files(vec![uri.to_owned(), format!("{dir}{MODEL_CARD_FILE}")])
        }
    }
}

/// The other ModelVersions (sorted) that keep `mv`'s artifact alive: not
/// being deleted themselves, and holding a file the purge of `mv` would delete
/// (the same artifact, or one inside its run folder, or a run folder around it).
pub fn kept_by(mv: &ModelVersion, all: &[ModelVersion]) -> Vec<String> {
    let scope = purge_scope(mv);
    let mut out: Vec<String> = all
        .iter()
        .filter(|other| other.metadata.name != mv.metadata.name)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .filter(|other| scope.overlaps(&purge_scope(other)))
        .map(ResourceExt::name_any)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The purge Job that deletes the artifact from storage.
pub fn purge_job(valid: &ValidModelVersion) -> Job {
    let mut args = vec!["purge".to_owned()];
    for uri in valid.purge_scope.uris() {
        args.push("--uri".to_owned());
        args.push(uri);
    }
    if valid.purge_scope.is_folder() {
        args.push("--prefix".to_owned());
    }
    let container = Container {
        name: PURGE_CONTAINER.to_owned(),
        image: Some(valid.trainer_image.clone()),
        args: Some(args),
        ..Default::default()
    };
    let env = vec![env_var(hone_crds::contract::env::TERMINATION_LOG, TERMINATION_LOG)];
    let mut job = job(valid, purge_job_name(valid), container, env, true);
    if let Some(spec) = job.spec.as_mut() {
        spec.active_deadline_seconds = Some(PURGE_DEADLINE_SECONDS);
    }
    job
}

/// True when deleting `mv` must also delete its artifact.
pub fn purges_artifact(mv: &ModelVersion) -> bool {
    mv.annotations().get(ANNOTATION_ARTIFACT_POLICY).is_some_and(|p| p == ARTIFACT_POLICY_DELETE)
}

/// The InferenceServices (sorted, distinct) that serve or are about to serve
/// the ModelVersion `name`: named in a variant's spec, in its status, or as
/// either side of a rollout.
pub fn served_by(name: &str, services: &[InferenceService]) -> Vec<String> {
    let mut out: Vec<String> =
        services.iter().filter(|isvc| isvc.serves(name)).map(ResourceExt::name_any).collect();
    out.sort();
    out.dedup();
    out
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), value_from: None }
}

fn job(
    valid: &ValidModelVersion,
    name: String,
    container: Container,
    mut env: Vec<EnvVar>,
    write: bool,
) -> Job {
    let claims: Vec<(String, bool)> =
        pvc_claim(&valid.uri).map(|claim| vec![(claim.to_owned(), write)]).unwrap_or_default();
    if !claims.is_empty() {
        env.push(env_var(ENV_PVC_ROOT, PVC_ROOT));
    }
    let (volumes, mounts) = pod_volumes(&claims);
    let mut labels = child_labels(LABEL_MODEL_VERSION, &valid.name);
    labels.insert(LABEL_MODEL.to_owned(), valid.spec.model.clone());
    let container = Container {
        env: Some(env),
        env_from: secret_env_from(valid.spec.artifact.secret_ref.iter()),
        security_context: Some(restricted_container_security_context()),
        termination_message_path: Some(TERMINATION_LOG.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ..container
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(valid.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![valid.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(JOB_BACKOFF_LIMIT),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(batch_pod_spec(container, volumes)),
            },
            ..Default::default()
        }),
        status: None,
    }
}

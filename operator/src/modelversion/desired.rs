//! ModelVersion validation and the Jobs it runs: the verify Job (predictor
//! image, `verify`) and, on deletion under `hone.dev/artifact-policy: Delete`,
//! the purge Job (trainer image, `purge`), with what it may delete
//! ([`purge_scope`]) and which other versions keep those files ([`kept_by`]).
//! Pure.

use hone_crds::consts::{
    ANNOTATION_ARTIFACT_POLICY, ARTIFACT_POLICY_DELETE, LABEL_MODEL, LABEL_MODEL_VERSION,
};
use hone_crds::contract::{MODEL_CARD_FILE, MODEL_FILE, TERMINATION_LOG};
use hone_crds::predictor::env;
use hone_crds::{InferenceService, ModelVersion, ModelVersionSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::children::{
    batch_pod_spec, child_labels, child_name, controller_owner_ref, pod_volumes,
    restricted_container_security_context, secret_env_from, sha256_hex,
};
use crate::config::OperatorConfig;
use crate::labels::{ENV_PVC_ROOT, PVC_ROOT};
use crate::trainingjob::validate::pvc_claim;

/// Container of the verify Job (status reads its termination message).
pub const VERIFY_CONTAINER: &str = "verify";
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
    let uri = mv.spec.artifact.uri.trim();
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
    if !uri.ends_with(MODEL_FILE) {
        return Err(Error::InvalidSpec(format!(
            "spec.artifact.uri {uri:?} must name the TorchScript file ({MODEL_FILE}); its {MODEL_CARD_FILE} lies beside it"
        )));
    }
    Ok(ValidModelVersion {
        name,
        namespace,
        uid,
        owner,
        spec: mv.spec.clone(),
        purge_scope: purge_scope(mv),
        predictor_image: config.predictor_image.clone(),
        trainer_image: config.trainer_image.clone(),
    })
}

/// Name of the verify Job.
pub fn verify_job_name(valid: &ValidModelVersion) -> String {
    child_name(&valid.name, "verify", &sha256_hex(valid.uid.as_bytes()))
}

/// Name of the purge Job.
pub fn purge_job_name(valid: &ValidModelVersion) -> String {
    child_name(&valid.name, "purge", &sha256_hex(valid.uid.as_bytes()))
}

/// The verify Job: fetch, check the digest, load, one forward pass on zeros.
pub fn verify_job(valid: &ValidModelVersion) -> Job {
    let artifact = &valid.spec.artifact;
    let mut env = vec![
        env_var(env::MODEL_URI, artifact.uri.trim()),
        env_var(env::TERMINATION_LOG, TERMINATION_LOG),
        env_var(env::DEVICE, "cpu"),
    ];
    if let Some(digest) = &artifact.digest {
        env.push(env_var(env::MODEL_DIGEST, digest));
    }
    let container = Container {
        name: VERIFY_CONTAINER.to_owned(),
        image: Some(valid.predictor_image.clone()),
        args: Some(vec!["verify".to_owned()]),
        ..Default::default()
    };
    job(valid, verify_job_name(valid), container, env, false)
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
            let dir = uri.strip_suffix(MODEL_FILE).unwrap_or(uri);
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
    let artifact = &valid.spec.artifact;
    let claims: Vec<(String, bool)> =
        pvc_claim(&artifact.uri).map(|claim| vec![(claim.to_owned(), write)]).unwrap_or_default();
    if !claims.is_empty() {
        env.push(env_var(ENV_PVC_ROOT, PVC_ROOT));
    }
    let (volumes, mounts) = pod_volumes(&claims);
    let mut labels = child_labels(LABEL_MODEL_VERSION, &valid.name);
    labels.insert(LABEL_MODEL.to_owned(), valid.spec.model.clone());
    let container = Container {
        env: Some(env),
        env_from: secret_env_from(artifact.secret_ref.iter()),
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

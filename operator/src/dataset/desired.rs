//! The inspect Job a Dataset should have. Pure: validated spec, the observed
//! Jobs and the time in, objects out.

use std::collections::BTreeMap;
use std::time::Duration;

use hone_crds::common::StorageLocation;
use hone_crds::consts::LABEL_DATASET;
use hone_crds::contract::TERMINATION_LOG;
use hone_crds::dataset::{CsvOptions, DatasetFormat, ImageOptions, SplitSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PersistentVolumeClaimVolumeSource, PodTemplateSpec,
    ResourceRequirements, SecretEnvSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use super::observe::Observed;
use super::validate::ValidDataset;
use crate::children::{
    batch_pod_spec, child_labels, child_name, restricted_container_security_context, scratch_mount,
    scratch_volume, sha256_hex,
};
use crate::labels::{ENV_PVC_ROOT, LABEL_ROUND, LABEL_SPEC_HASH, PVC_ROOT};
use crate::termination::job_finished_at;
use hone_crds::contract::env;

/// Name of the inspect container (status reads its termination message).
pub const INSPECT_CONTAINER: &str = "inspect";
/// Suffix of inspect Job names.
const JOB_SUFFIX: &str = "inspect";
/// Hex characters of the spec hash kept in the [`LABEL_SPEC_HASH`] label.
const SPEC_HASH_LABEL_LEN: usize = 16;
/// Pod retries of an inspect Job: one, for a flaky read; bad data fails twice the same way.
const BACKOFF_LIMIT: i32 = 1;
/// Name of the volume holding a `pvc://` source.
const SOURCE_VOLUME: &str = "source";

/// What the Dataset's children should be.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The inspect Job of this spec and refresh round.
    pub job: Job,
    /// Refresh round of `job` (0 for the first verification of a spec).
    pub round: u32,
    /// When to look again for the next refresh; `None`: wait for a change.
    pub requeue_after: Option<Duration>,
}

/// Builds the desired inspect Job. The name hashes the Job spec and the
/// refresh round, so a spec change (or a due refresh) means a new Job, and
/// an unchanged world the same one.
pub fn build(valid: &ValidDataset, observed: &Observed, now: Timestamp) -> Desired {
    let spec = job_spec(valid);
    let spec_hash = hash_of(&spec);
    let (round, requeue_after) = refresh_round(&observed.jobs, &spec_hash, valid.refresh_interval, now);
    let name = child_name(&valid.name, JOB_SUFFIX, &sha256_hex(format!("{spec_hash}/{round}").as_bytes()));
    let mut labels = child_labels(LABEL_DATASET, &valid.name);
    labels.insert(LABEL_SPEC_HASH.to_owned(), spec_hash_label(&spec_hash));
    labels.insert(LABEL_ROUND.to_owned(), round.to_string());
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(valid.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![valid.owner.clone()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    Desired { job, round, requeue_after }
}

fn hash_of(spec: &JobSpec) -> String {
    // Serialising k8s-openapi structs cannot fail (every map key is a string);
    // the Debug form is a deterministic fallback all the same.
    let bytes = serde_json::to_vec(spec).unwrap_or_else(|_| format!("{spec:?}").into_bytes());
    sha256_hex(&bytes)
}

fn spec_hash_label(spec_hash: &str) -> String {
    spec_hash[..spec_hash.len().min(SPEC_HASH_LABEL_LEN)].to_owned()
}

/// The refresh round to run and when to look again. Round 0 until a Job of
/// this spec exists; the next round once the latest one finished at least
/// `refresh` ago.
pub fn refresh_round(
    jobs: &[Job],
    spec_hash: &str,
    refresh: Option<Duration>,
    now: Timestamp,
) -> (u32, Option<Duration>) {
    let label = spec_hash_label(spec_hash);
    let latest = jobs
        .iter()
        .filter(|job| job.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SPEC_HASH)) == Some(&label))
        .filter_map(|job| {
            let round = job.metadata.labels.as_ref()?.get(LABEL_ROUND)?.parse::<u32>().ok()?;
            Some((round, job))
        })
        .max_by_key(|(round, _)| *round);
    let Some((round, job)) = latest else { return (0, None) };
    let (Some(interval), Some(finished)) = (refresh, job_finished_at(job)) else { return (round, None) };
    let elapsed = now.duration_since(finished);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    match interval.checked_sub(elapsed) {
        Some(left) if !left.is_zero() => (round, Some(left)),
        _ => (round.saturating_add(1), None),
    }
}

/// The inspect Job's spec.
pub fn job_spec(valid: &ValidDataset) -> JobSpec {
    let mut volumes = vec![scratch_volume()];
    let mut mounts = vec![scratch_mount()];
    if let Some(pvc) = &valid.pvc {
        volumes.push(Volume {
            name: SOURCE_VOLUME.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: SOURCE_VOLUME.to_owned(),
            mount_path: format!("{PVC_ROOT}/{}", pvc.claim),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let env_from = valid.source.secret_ref.as_ref().map(|secret| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: secret.name.clone(), optional: Some(false) }),
            ..Default::default()
        }]
    });
    let container = Container {
        name: INSPECT_CONTAINER.to_owned(),
        image: Some(valid.trainer_image.clone()),
        args: Some(vec!["inspect".to_owned()]),
        env: Some(inspect_env(valid)),
        env_from,
        resources: Some(inspect_resources()),
        security_context: Some(restricted_container_security_context()),
        termination_message_path: Some(TERMINATION_LOG.to_owned()),
        // A crash before the summary is written still leaves the log tail for status.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    JobSpec {
        backoff_limit: Some(BACKOFF_LIMIT),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(child_labels(LABEL_DATASET, &valid.name)),
                ..Default::default()
            }),
            spec: Some(batch_pod_spec(container, volumes)),
        },
        ..Default::default()
    }
}

/// The trainer's `inspect` environment for this Dataset.
pub fn inspect_env(valid: &ValidDataset) -> Vec<EnvVar> {
    let mut vars =
        layout_env(&valid.source, valid.format, valid.csv.as_ref(), valid.image.as_ref(), &valid.split);
    vars.push((env::TERMINATION_LOG, TERMINATION_LOG.to_owned()));
    if valid.pvc.is_some() {
        vars.push((ENV_PVC_ROOT, PVC_ROOT.to_owned()));
    }
    vars.into_iter()
        .map(|(name, value)| EnvVar { name: name.to_owned(), value: Some(value), value_from: None })
        .collect()
}

/// How the trainer reads a Dataset's layout and split (every command that
/// reads one: `inspect`, `train`, `eval-split`).
pub fn layout_env(
    source: &StorageLocation,
    format: DatasetFormat,
    csv: Option<&CsvOptions>,
    image: Option<&ImageOptions>,
    split: &SplitSpec,
) -> Vec<(&'static str, String)> {
    let mut vars: Vec<(&'static str, String)> = vec![
        (env::DATASET_SOURCE, source.uri.trim().to_owned()),
        (env::DATASET_FORMAT, format_name(format).to_owned()),
    ];
    if let Some(csv) = csv {
        vars.push((env::CSV_LABEL_COLUMN, csv.label_column.clone()));
        if let Some(columns) = &csv.feature_columns {
            vars.push((env::CSV_FEATURE_COLUMNS, columns.join(",")));
        }
    }
    if let Some(image) = image {
        vars.push((env::IMAGE_WIDTH, image.width.to_string()));
        vars.push((env::IMAGE_HEIGHT, image.height.to_string()));
        vars.push((env::IMAGE_CHANNELS, image.channels.to_string()));
    }
    vars.push((env::SPLIT_VALIDATION, split.validation.to_string()));
    vars.push((env::SPLIT_TEST, split.test.to_string()));
    vars.push((env::SPLIT_SEED, split.seed.to_string()));
    vars
}

/// The trainer's name for a format (`--format` values).
pub fn format_name(format: DatasetFormat) -> &'static str {
    match format {
        DatasetFormat::ImageFolder => "ImageFolder",
        DatasetFormat::Csv => "CSV",
    }
}

fn inspect_resources() -> ResourceRequirements {
    // Inspection streams samples one at a time: modest requests, and a memory
    // limit so a runaway read cannot take the node down.
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("250m".to_owned())),
            ("memory".to_owned(), Quantity("256Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("2Gi".to_owned()))])),
        ..Default::default()
    }
}

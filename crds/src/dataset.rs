//! `Dataset`: training data declared by location and pinned by content digest.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::StorageLocation;

/// Declares training data and pins its content: an inspect Job reads every
/// sample and records a digest, counts and classes before anything trains on it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hone.dev",
    version = "v1alpha1",
    kind = "Dataset",
    namespaced,
    derive = "PartialEq",
    status = "DatasetStatus",
    shortname = "ds",
    category = "hone",
    doc = "Dataset declares training data by location and pins its content by digest once an inspect Job has read every sample.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Verifying, Ready or Failed"
    ),
    printcolumn(name = "Format", type_ = "string", json_path = ".spec.format"),
    printcolumn(name = "Samples", type_ = "integer", json_path = ".status.samples"),
    printcolumn(name = "Digest", type_ = "string", json_path = ".status.digest", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self.format != 'CSV' || has(self.csv)").message("format CSV needs spec.csv.labelColumn: name the column that holds the label"))]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    /// Where the data lives. For `ImageFolder`, one sub-folder per class (or
    /// `train/`, `val/`, `test/` folders each holding class folders); for `CSV`,
    /// one file with a header row.
    pub source: StorageLocation,
    /// Layout of the data at `source`.
    #[serde(default)]
    pub format: DatasetFormat,
    /// How to read a CSV source. Required when `format` is `CSV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvOptions>,
    /// Target size images are resized to before training and serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageOptions>,
    /// How samples are split into train, validation and test sets. Ignored
    /// when the source already has `train/`, `val/` and `test/` folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitSpec>,
    /// Re-verify the source this often (e.g. `1h`) and record a new content
    /// version when its digest changes. Unset: verify once per spec change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::common::DURATION_PATTERN))]
    pub refresh_interval: Option<String>,
}

/// Layout of a dataset's files.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DatasetFormat {
    /// One folder per class holding image files (PNG, JPEG).
    #[default]
    ImageFolder,
    /// One CSV file with a header row; one row per sample.
    #[serde(rename = "CSV")]
    Csv,
}

/// How a CSV dataset is read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CsvOptions {
    /// Column holding the class label.
    #[schemars(length(min = 1, max = 256))]
    pub label_column: String,
    /// Columns used as features, in order. Unset: every column except the label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub feature_columns: Option<Vec<String>>,
}

/// Target image size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageOptions {
    /// Width in pixels images are resized to.
    #[serde(default = "default_image_side")]
    #[schemars(range(min = 1, max = 4096))]
    pub width: u32,
    /// Height in pixels images are resized to.
    #[serde(default = "default_image_side")]
    #[schemars(range(min = 1, max = 4096))]
    pub height: u32,
    /// Colour channels: 1 (grayscale) or 3 (RGB).
    #[serde(default = "default_channels")]
    #[schemars(range(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self == 1 || self == 3").message("channels must be 1 (grayscale) or 3 (RGB)"))]
    pub channels: u32,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self { width: default_image_side(), height: default_image_side(), channels: default_channels() }
    }
}

fn default_image_side() -> u32 {
    224
}

fn default_channels() -> u32 {
    3
}

/// Fractions of samples held out for validation and test, chosen by a seeded shuffle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.validation + self.test < 1.0").message("validation + test must leave samples to train on (sum below 1.0)"))]
pub struct SplitSpec {
    /// Fraction of samples for validation (0 to 0.5).
    #[serde(default = "default_split_fraction")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub validation: f64,
    /// Fraction of samples for the final test (0 to 0.5).
    #[serde(default = "default_split_fraction")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub test: f64,
    /// Seed of the shuffle that assigns samples to splits.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

impl Default for SplitSpec {
    fn default() -> Self {
        Self { validation: default_split_fraction(), test: default_split_fraction(), seed: default_seed() }
    }
}

fn default_split_fraction() -> f64 {
    0.1
}

pub(crate) fn default_seed() -> u64 {
    42
}

/// Lifecycle phase of a Dataset.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DatasetPhase {
    /// Accepted, not yet inspected.
    #[default]
    Pending,
    /// The inspect Job is reading the data.
    Verifying,
    /// Every sample was read; digest and counts are recorded.
    Ready,
    /// The data could not be read or is invalid; see the Ready condition.
    Failed,
}

/// What the inspect Job found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatus {
    /// One-word summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DatasetPhase>,
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` over the sorted manifest of relative path, size and content
    /// hash of every file: the same bytes give the same digest anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::common::DIGEST_PATTERN))]
    pub digest: Option<String>,
    /// Number of samples read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<i64>,
    /// Total size of the data in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Class names, in label-index order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Samples per class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_counts: Option<BTreeMap<String, i64>>,
    /// When the current digest was last confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<Time>,
    /// Increments each time verification finds a digest different from the
    /// previous one (1 for the first verified content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_version: Option<i64>,
    /// Name of the most recent inspect Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect_job_name: Option<String>,
    /// Standard conditions; `Ready` summarises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
}

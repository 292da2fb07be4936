//! Reading a dataset: every sample is fetched, hashed and decoded, so a bad
//! file fails here (with its path and line) rather than in epoch 3.
//!
//! The digest is `sha256` over the manifest: one line per file,
//! `<relative path>\t<size>\tsha256:<hex>\n`, sorted by path. The same bytes
//! give the same digest on any machine, in any listing order.

use std::collections::{BTreeMap, BTreeSet};

use hone_crds::contract::{InputKind, InspectSummary};
use sha2::{Digest, Sha256};

use crate::rng::SplitMix64;
pub use crate::stream::{DataMode, DataPath};
use hone_storage::{Location, StorageError};

/// Image file extensions read from class folders.
pub(crate) const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Layout of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One folder per class of images (or train/, val/, test/ folders of those).
    #[value(name = "ImageFolder", alias = "imagefolder")]
    ImageFolder,
    /// One CSV file with a header row.
    #[value(name = "CSV", alias = "csv")]
    Csv,
}

/// How to read a dataset (the Dataset spec, as flags).
#[derive(Clone, Debug)]
pub struct DataOptions {
    /// Source URI: a folder for ImageFolder, a file for CSV.
    pub source: String,
    /// Layout.
    pub format: Format,
    /// CSV: the label column.
    pub label_column: String,
    /// CSV: feature columns (empty: all but the label).
    pub feature_columns: Vec<String>,
    /// Images: target width.
    pub width: u32,
    /// Images: target height.
    pub height: u32,
    /// Images: 1 (grayscale) or 3 (RGB).
    pub channels: u32,
    /// Fraction held out for validation.
    pub validation: f64,
    /// Fraction held out for test.
    pub test: f64,
    /// Seed of the split shuffle.
    pub split_seed: u64,
}

/// What can be wrong with a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Storage could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A file is not a decodable image.
    #[error("{path}: not a decodable image: {reason}")]
    Undecodable {
        /// Relative path of the file.
        path: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A class folder holds no images.
    #[error("{path}: class folder is empty")]
    EmptyClass {
        /// The folder.
        path: String,
    },
    /// A file in a class folder is not an image.
    #[error("{path}: unsupported file type (expected {IMAGE_EXTENSIONS:?})")]
    UnsupportedFile {
        /// The file.
        path: String,
    },
    /// A CSV problem at a given line.
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The file.
        path: String,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file's bytes differ from those its digest was taken over: the
    /// source is being written to while the run reads it.
    #[error(
        "{path} changed after the dataset was verified (its bytes no longer match the hash taken when the \
         run started): the source is being written to; restore it, or verify the Dataset again and train anew"
    )]
    Changed {
        /// Relative path of the file.
        path: String,
    },
    /// The layout or options do not make a usable dataset.
    #[error("{0}")]
    Layout(String),
}

impl DataError {
    /// A short category for the termination summary and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Storage(e) => e.category(),
            Self::Changed { .. } => "DatasetChanged",
            _ => "InvalidData",
        }
    }
}

/// Decoded samples.
#[derive(Clone, Debug)]
pub enum Inputs {
    /// `N x C x H x W` bytes, in memory.
    Images(Vec<u8>),
    /// Images left where they are (and in the on-disk cache, when there is
    /// one): training streams them batch by batch.
    Stored(crate::stream::Stored),
    /// `N x F` values.
    Features(Vec<f32>),
}

/// Sample indices of each split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Training samples.
    pub train: Vec<usize>,
    /// Validation samples.
    pub val: Vec<usize>,
    /// Test samples.
    pub test: Vec<usize>,
}

/// A dataset read into memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Image or tabular.
    pub kind: InputKind,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Feature names (tabular).
    pub feature_names: Vec<String>,
    /// Shape of one sample: `[C, H, W]` or `[F]`.
    pub sample_shape: Vec<i64>,
    /// The samples.
    pub inputs: Inputs,
    /// Label index of every sample.
    pub labels: Vec<i64>,
    /// Every sample's label read as a number (CSV whose label column holds
    /// only finite numbers; empty otherwise): the target of a regression head.
    pub targets: Vec<f32>,
    /// Train/validation/test assignment.
    pub split: Split,
    /// Path of every sample's file, relative to the source (ImageFolder;
    /// empty for CSV), so a split can be re-read as stored.
    pub sample_paths: Vec<String>,
    /// Hex `sha256` of every sample's file as read (ImageFolder; empty for
    /// CSV), so a re-read can be checked against the digest.
    pub sample_sha256: Vec<String>,
    /// Images: every sample's per-channel mean and mean square of its
    /// pixels in [0, 1] (`N x C` pairs, sample-major; empty for CSV), taken
    /// while decoding, so normalisation and drift statistics need no pixels.
    pub channel_moments: Vec<[f64; 2]>,
    /// Digest, counts and classes.
    pub summary: InspectSummary,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// One manifest line.
pub(crate) struct ManifestEntry {
    pub(crate) path: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

/// `sha256:` of the sorted manifest.
pub(crate) fn manifest_digest(entries: &mut [ManifestEntry]) -> String {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for e in entries.iter() {
        hasher.update(format!("{}\t{}\tsha256:{}\n", e.path, e.size, e.sha256).as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Hex `sha256` of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads, verifies and decodes the whole dataset: every sample is fetched,
/// hashed and decoded once. With `keep` None (inspection, the test split)
/// no pixels are kept, so memory does not grow with the dataset; for
/// training, `keep` says where the decoded images go (see [`DataPath`]).
pub async fn load(opts: &DataOptions, keep: Option<&DataPath>) -> Result<Dataset, DataError> {
    match opts.format {
        Format::ImageFolder => crate::images::load(opts, keep).await,
        Format::Csv => load_csv(opts).await,
    }
}

async fn load_csv(opts: &DataOptions) -> Result<Dataset, DataError> {
    let loc = Location::parse(&opts.source)?;
    let bytes = loc.read().await?;
    let name = opts.source.rsplit('/').next().unwrap_or("data.csv").to_owned();
    let csv_err = |line: u64, reason: String| DataError::Csv { path: name.clone(), line, reason };
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_ref());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_err(1, e.to_string()))?
        .iter()
        .map(|s| s.trim().to_owned())
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| csv_err(1, format!("no column {name:?} in header {header:?}")))
    };
    let label_idx = column(&opts.label_column)?;
    let feature_names: Vec<String> = if opts.feature_columns.is_empty() {
        header.iter().filter(|h| **h != opts.label_column).cloned().collect()
    } else {
        opts.feature_columns.clone()
    };
    let feature_idx: Vec<usize> = feature_names.iter().map(|f| column(f)).collect::<Result<_, _>>()?;
    if feature_idx.is_empty() {
        return Err(csv_err(1, "no feature columns".into()));
    }
    let mut features = Vec::new();
    let mut raw_labels = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let label = record.get(label_idx).map(str::trim).unwrap_or_default();
        if label.is_empty() {
            return Err(csv_err(line, format!("missing value in column {:?}", opts.label_column)));
        }
        for (&i, fname) in feature_idx.iter().zip(&feature_names) {
            let cell = record.get(i).map(str::trim).unwrap_or_default();
            if cell.is_empty() {
                return Err(csv_err(line, format!("missing value in column {fname:?}")));
            }
            let value: f32 =
                cell.parse().ok().filter(|v: &f32| v.is_finite()).ok_or_else(|| {
                    csv_err(line, format!("column {fname:?}: {cell:?} is not a finite number"))
                })?;
            features.push(value);
        }
        raw_labels.push(label.to_owned());
    }
    if raw_labels.is_empty() {
        return Err(csv_err(2, "no data rows".into()));
    }
    let targets: Vec<f32> = raw_labels
        .iter()
        .map(|l| l.parse::<f32>().ok().filter(|v| v.is_finite()))
        .collect::<Option<_>>()
        .unwrap_or_default();
    let classes: Vec<String> = raw_labels.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let labels: Vec<i64> =
        raw_labels.iter().map(|l| classes.binary_search(l).unwrap_or_default() as i64).collect();
    let mut manifest =
        vec![ManifestEntry { path: name.clone(), size: bytes.len() as u64, sha256: sha256_hex(&bytes) }];
    let summary = summarize(manifest_digest(&mut manifest), &labels, &classes, bytes.len() as u64);
    Ok(Dataset {
        kind: InputKind::Tabular,
        classes,
        sample_shape: vec![feature_names.len() as i64],
        feature_names,
        inputs: Inputs::Features(features),
        split: seeded_split(labels.len(), opts.validation, opts.test, opts.split_seed),
        labels,
        targets,
        sample_paths: Vec::new(),
        sample_sha256: Vec::new(),
        channel_moments: Vec::new(),
        summary,
    })
}

pub(crate) fn summarize(
    digest: String,
    labels: &[i64],
    classes: &[String],
    size_bytes: u64,
) -> InspectSummary {
    let mut class_counts: BTreeMap<String, u64> = classes.iter().map(|c| (c.clone(), 0)).collect();
    for &l in labels {
        if let Some(count) = classes.get(l as usize).and_then(|c| class_counts.get_mut(c)) {
            *count += 1;
        }
    }
    InspectSummary {
        digest,
        samples: labels.len() as u64,
        size_bytes,
        classes: classes.to_vec(),
        class_counts,
    }
}

/// Seeded shuffle, then the first `test` fraction is test, the next
/// `validation` fraction validation, the rest training.
pub fn seeded_split(n: usize, validation: f64, test: f64, seed: u64) -> Split {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::stream(seed, 0x5711_7000).shuffle(&mut order);
    let n_test = ((n as f64) * test.clamp(0.0, 1.0)).round() as usize;
    let n_val = (((n as f64) * validation.clamp(0.0, 1.0)).round() as usize).min(n - n_test.min(n));
    let n_test = n_test.min(n);
    let test_idx = order[..n_test].to_vec();
    let val_idx = order[n_test..n_test + n_val].to_vec();
    let train_idx = order[n_test + n_val..].to_vec();
    Split { train: train_idx, val: val_idx, test: test_idx }
}

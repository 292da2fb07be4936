//! `hone-trainer eval-split`: writes the held-out test split of a Dataset
//! for a ModelVersion's verify Job, where the predictor's `verify` measures
//! the model on it.
//!
//! The split is the one training held out: the same content (checked by
//! digest) read with the same options gives the same seeded split. Under
//! `<out>/` go `split.json` ([`EvalSplitHeader`], written last, so a reader
//! that finds it finds everything), `samples.jsonl` (one [`EvalSample`] per
//! line, the first [`EVAL_MAX_SAMPLES`] of the split in split order) and, for
//! images, `images/<n>.<ext>`: the files as stored, not the resized pixels,
//! so `verify` decodes them exactly as `/predict` would a client's upload.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use hone_crds::contract::{
    EVAL_HEADER_FILE, EVAL_IMAGES_DIR, EVAL_MAX_SAMPLES, EVAL_SAMPLES_FILE, EvalSample, EvalSplitHeader,
};
use hone_storage::{Location, StorageError};

use crate::dataset::{self, DataError, DataOptions, Dataset, Inputs};

/// Test images re-read at once.
const FETCH_CONCURRENCY: usize = 16;

/// Everything `eval-split` needs (the Dataset spec and the model's lineage, as flags).
#[derive(Clone, Debug)]
pub struct EvalSplitOptions {
    /// How to read the data, exactly as training read it.
    pub data: DataOptions,
    /// Digest of the content the model was trained on, when known.
    pub expected_digest: Option<String>,
    /// Local folder the split is written to (the verify Job's shared emptyDir).
    pub out: PathBuf,
}

/// Why the split could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EvalSplitError {
    /// The data is unreadable or invalid.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The Dataset's content is not the content the model was trained on.
    #[error(
        "Dataset content is {actual} but the model was trained on {expected}: the held-out test split \
         it was trained against no longer exists; register the model again with spec.evaluation.dataset \
         naming a Dataset that holds data it never saw, or with spec.evaluation.required: false to leave \
         it unevaluated"
    )]
    DatasetChanged {
        /// Digest the model was trained on.
        expected: String,
        /// Digest read now.
        actual: String,
    },
    /// A test image's bytes differ, on the second read, from those the
    /// digest was checked against: the source changed meanwhile.
    #[error(
        "{path} changed while the test split was taken (its bytes no longer match the digest just checked): \
         the Dataset's source is being written to; the verify Job retries, and fails while it keeps changing"
    )]
    ChangedWhileRead {
        /// The file, relative to the source.
        path: String,
    },
    /// The Dataset holds no samples out for test.
    #[error(
        "Dataset {dataset} has no test split (spec.split.test is 0 and the source has no test/ folder), \
         so there is nothing held out to evaluate on: register the model again with \
         spec.evaluation.dataset naming a Dataset that has one; to evaluate future models \
         on this Dataset, set its spec.split.test (e.g. 0.1) before training them"
    )]
    NoTestSplit {
        /// The Dataset's source URI.
        dataset: String,
    },
    /// A test image could not be read again from the source (the storage
    /// error names it).
    #[error("re-reading a test image: {0}")]
    ReadImage(#[source] StorageError),
    /// A file of the split could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

impl EvalSplitError {
    /// A short category for the termination summary and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Data(e) => e.category(),
            Self::DatasetChanged { .. } | Self::ChangedWhileRead { .. } => "DatasetChanged",
            Self::NoTestSplit { .. } => "NoTestSplit",
            Self::ReadImage(e) => e.category(),
            Self::Write { .. } => "Storage",
        }
    }
}

/// Reads the Dataset and writes its test split (at most [`EVAL_MAX_SAMPLES`]).
pub async fn run(opts: &EvalSplitOptions) -> Result<EvalSplitHeader, EvalSplitError> {
    run_capped(opts, EVAL_MAX_SAMPLES).await
}

/// [`run`], writing at most `max_samples` samples.
pub async fn run_capped(
    opts: &EvalSplitOptions,
    max_samples: usize,
) -> Result<EvalSplitHeader, EvalSplitError> {
    let data = dataset::load(&opts.data, None).await?;
    check(&data, opts.expected_digest.as_deref(), &opts.data.source)?;
    let chosen = &data.split.test[..data.split.test.len().min(max_samples)];
    create_dir(&opts.out)?;
    let samples = match &data.inputs {
        Inputs::Features(values) => tabular_samples(&data, values, chosen),
        Inputs::Images(_) | Inputs::Stored(_) => {
            copy_images(&data, &opts.data.source, chosen, &opts.out).await?
        }
    };
    write_samples(&opts.out.join(EVAL_SAMPLES_FILE), &samples)?;
    let header = split_header(&data, samples.len());
    write_json(&opts.out.join(EVAL_HEADER_FILE), &header)?;
    Ok(header)
}

/// The content is what the model was trained on, and it holds a test split.
pub fn check(data: &Dataset, expected_digest: Option<&str>, source: &str) -> Result<(), EvalSplitError> {
    if let Some(expected) = expected_digest.filter(|d| !d.is_empty())
        && expected != data.summary.digest
    {
        return Err(EvalSplitError::DatasetChanged {
            expected: expected.to_owned(),
            actual: data.summary.digest.clone(),
        });
    }
    if data.split.test.is_empty() {
        return Err(EvalSplitError::NoTestSplit { dataset: source.to_owned() });
    }
    Ok(())
}

/// What was written, for `split.json` and the termination log.
pub fn split_header(data: &Dataset, written: usize) -> EvalSplitHeader {
    EvalSplitHeader {
        dataset_digest: data.summary.digest.clone(),
        input: data.kind,
        classes: data.classes.clone(),
        feature_names: data.feature_names.clone(),
        test_samples: data.split.test.len() as u64,
        samples: written as u64,
    }
}

/// The true class name of sample `index`.
fn label_of(data: &Dataset, index: usize) -> String {
    let label = data.labels.get(index).copied().unwrap_or_default();
    data.classes.get(label as usize).cloned().unwrap_or_default()
}

/// Tabular samples: each row's raw values, before the standardisation the
/// model's preprocessing applies.
pub fn tabular_samples(data: &Dataset, values: &[f32], indices: &[usize]) -> Vec<EvalSample> {
    let width = data.feature_names.len();
    indices
        .iter()
        .map(|&i| EvalSample {
            label: label_of(data, i),
            features: Some(values.get(i * width..(i + 1) * width).unwrap_or_default().to_vec()),
            file: None,
        })
        .collect()
}

/// Copies the chosen images, as stored, to `<out>/images/<n>.<ext>`.
async fn copy_images(
    data: &Dataset,
    source: &str,
    indices: &[usize],
    out: &Path,
) -> Result<Vec<EvalSample>, EvalSplitError> {
    let root = Location::parse(source).map_err(DataError::from)?;
    create_dir(&out.join(EVAL_IMAGES_DIR))?;
    let paths: Vec<&str> =
        indices.iter().map(|&i| data.sample_paths.get(i).map(String::as_str).unwrap_or_default()).collect();
    let mut fetched = futures::stream::iter(paths.iter().map(|path| {
        let location = root.join(path);
        async move { location.read().await }
    }))
    .buffered(FETCH_CONCURRENCY);
    let mut samples = Vec::with_capacity(indices.len());
    for (n, (&index, path)) in indices.iter().zip(&paths).enumerate() {
        let Some(bytes) = fetched.next().await else { break };
        let bytes = bytes.map_err(EvalSplitError::ReadImage)?;
        same_as_read(data.sample_sha256.get(index).map(String::as_str), &bytes, path)?;
        let file = format!("{EVAL_IMAGES_DIR}/{n}.{}", extension(path));
        let target = out.join(&file);
        // A one-shot command: nothing else waits on the runtime while it writes.
        std::fs::write(&target, &bytes).map_err(|source| EvalSplitError::Write { path: target, source })?;
        samples.push(EvalSample { label: label_of(data, index), features: None, file: Some(file) });
    }
    Ok(samples)
}

/// Fails unless `bytes` hash to `expected` (the hex sha256 of the first read,
/// which the digest covered); a sample without one has nothing to match.
fn same_as_read(expected: Option<&str>, bytes: &[u8], path: &str) -> Result<(), EvalSplitError> {
    match expected {
        Some(expected) if crate::dataset::sha256_hex(bytes) != expected => {
            Err(EvalSplitError::ChangedWhileRead { path: path.to_owned() })
        }
        _ => Ok(()),
    }
}

/// The file name's extension as stored (the dataset reader only accepts
/// files that have one it decodes).
fn extension(path: &str) -> &str {
    path.rsplit_once('.').map(|(_, ext)| ext).filter(|ext| !ext.contains('/')).unwrap_or("img")
}

fn create_dir(path: &Path) -> Result<(), EvalSplitError> {
    std::fs::create_dir_all(path).map_err(|source| EvalSplitError::Write { path: path.to_owned(), source })
}

/// `samples.jsonl`: one sample per line.
fn write_samples(path: &Path, samples: &[EvalSample]) -> Result<(), EvalSplitError> {
    let write = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        for sample in samples {
            serde_json::to_writer(&mut out, sample)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write().map_err(|source| EvalSplitError::Write { path: path.to_owned(), source })
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), EvalSplitError> {
    let write = || -> std::io::Result<()> {
        let bytes = serde_json::to_vec(value)?;
        std::fs::write(path, bytes)
    };
    write().map_err(|source| EvalSplitError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_must_be_the_bytes_the_digest_covered() {
        let first = crate::dataset::sha256_hex(b"png bytes");
        assert!(same_as_read(Some(&first), b"png bytes", "3/a.png").is_ok());
        let changed = same_as_read(Some(&first), b"other bytes", "3/a.png");
        let Err(e) = changed else { panic!("a changed file was copied") };
        assert_eq!(e.category(), "DatasetChanged");
        assert!(e.to_string().starts_with("3/a.png changed while the test split was taken"), "{e}");
        assert!(same_as_read(None, b"anything", "x.csv").is_ok());
    }
}

//! Dataset validation: the checks a CRD schema cannot make. Pure.

use std::time::Duration;

use hone_crds::Dataset;
use hone_crds::StorageLocation;
use hone_crds::dataset::{CsvOptions, DatasetFormat, ImageOptions, SplitSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::children::controller_owner_ref;
use crate::duration::parse_duration;

/// Shortest `refreshInterval` accepted: re-reading a whole dataset more often
/// than this is almost certainly a typo (`30s` for `30m`).
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Why a Dataset cannot be reconciled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The spec passed the schema but cannot be used; the message says how to fix it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The object lacks metadata the apiserver always sets (name, namespace, uid).
    #[error("dataset metadata is missing {0}")]
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

/// A `pvc://<claim>/<path>` source: the claim is mounted read-only into the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvcSource {
    /// The PersistentVolumeClaim's name.
    pub claim: String,
}

/// A Dataset whose spec can be turned into an inspect Job.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidDataset {
    /// Name of the Dataset.
    pub name: String,
    /// Namespace of the Dataset.
    pub namespace: String,
    /// Controller reference children carry.
    pub owner: OwnerReference,
    /// Where the data lives.
    pub source: StorageLocation,
    /// Set for `pvc://` sources.
    pub pvc: Option<PvcSource>,
    /// Layout of the data.
    pub format: DatasetFormat,
    /// CSV options (CSV only).
    pub csv: Option<CsvOptions>,
    /// Target image size (ImageFolder only).
    pub image: Option<ImageOptions>,
    /// Split fractions and seed.
    pub split: SplitSpec,
    /// How often to re-verify.
    pub refresh_interval: Option<Duration>,
    /// Image of the inspect Job.
    pub trainer_image: String,
}

/// Checks `ds` and gathers what the builders need.
pub fn validate(ds: &Dataset, trainer_image: &str) -> Result<ValidDataset, Error> {
    let name = ds.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = ds.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    let owner = controller_owner_ref(ds).ok_or(Error::MissingMetadata("uid"))?;
    let spec = &ds.spec;

    let pvc = validate_source(&spec.source)?;
    let csv = match spec.format {
        DatasetFormat::Csv => Some(validate_csv(spec.csv.as_ref())?),
        DatasetFormat::ImageFolder => None,
    };
    let image = match spec.format {
        DatasetFormat::ImageFolder => Some(spec.image.clone().unwrap_or_default()),
        DatasetFormat::Csv => None,
    };
    let split = spec.split.clone().unwrap_or_default();
    validate_split(&split)?;
    let refresh_interval = spec.refresh_interval.as_deref().map(validate_refresh).transpose()?;

    Ok(ValidDataset {
        name,
        namespace,
        owner,
        source: spec.source.clone(),
        pvc,
        format: spec.format,
        csv,
        image,
        split,
        refresh_interval,
        trainer_image: trainer_image.to_owned(),
    })
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidSpec(message.into())
}

fn validate_source(source: &StorageLocation) -> Result<Option<PvcSource>, Error> {
    let uri = source.uri.trim();
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(invalid(format!(
            "spec.source.uri {uri:?} has no scheme: use s3://, gs://, az://, http(s)://, pvc://<claim>/<path>"
        )));
    };
    match scheme {
        "s3" | "gs" | "az" | "http" | "https" => {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(invalid(format!("spec.source.uri {uri:?} names no bucket or host")));
            }
            Ok(None)
        }
        "pvc" => {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            if !is_dns_label(claim) {
                return Err(invalid(format!(
                    "spec.source.uri {uri:?}: {claim:?} is not a PersistentVolumeClaim name; write pvc://<claim>/<path>"
                )));
            }
            if path.split('/').any(|segment| segment == "..") {
                return Err(invalid(format!("spec.source.uri {uri:?} may not leave the claim with '..'")));
            }
            Ok(Some(PvcSource { claim: claim.to_owned() }))
        }
        "file" => Err(invalid(format!(
            "spec.source.uri {uri:?}: file:// works only for local runs of the trainer, a pod cannot \
             see this machine's files; copy the data to a PersistentVolumeClaim (pvc://<claim>/<path>) \
             or an object store"
        ))),
        other => Err(invalid(format!(
            "spec.source.uri {uri:?}: scheme {other:?} is not supported; use s3, gs, az, http(s) or pvc"
        ))),
    }
}

fn validate_csv(csv: Option<&CsvOptions>) -> Result<CsvOptions, Error> {
    let csv = csv.ok_or_else(|| {
        invalid("format CSV needs spec.csv.labelColumn: name the column that holds the label")
    })?;
    if csv.label_column.trim().is_empty() {
        return Err(invalid("spec.csv.labelColumn is empty: name the column that holds the label"));
    }
    if let Some(columns) = &csv.feature_columns {
        // The trainer takes the list comma-separated, so a comma in a name would split it.
        if let Some(bad) = columns.iter().find(|c| c.contains(',') || c.trim().is_empty()) {
            return Err(invalid(format!(
                "spec.csv.featureColumns has {bad:?}: column names must be non-empty and contain no comma"
            )));
        }
        if columns.contains(&csv.label_column) {
            return Err(invalid(format!(
                "spec.csv.featureColumns lists the label column {:?}; remove it from the features",
                csv.label_column
            )));
        }
    }
    Ok(csv.clone())
}

fn validate_split(split: &SplitSpec) -> Result<(), Error> {
    let in_range = |f: f64| f.is_finite() && (0.0..=0.5).contains(&f);
    if !in_range(split.validation) || !in_range(split.test) {
        return Err(invalid("spec.split.validation and spec.split.test must each be between 0 and 0.5"));
    }
    if split.validation + split.test >= 1.0 {
        return Err(invalid("spec.split.validation + spec.split.test must leave samples to train on"));
    }
    Ok(())
}

fn validate_refresh(text: &str) -> Result<Duration, Error> {
    let interval = parse_duration(text).ok_or_else(|| {
        invalid(format!("spec.refreshInterval {text:?} is not a duration; write e.g. 30m, 1h or 24h"))
    })?;
    if interval < MIN_REFRESH_INTERVAL {
        return Err(invalid(format!(
            "spec.refreshInterval {text:?} is shorter than 1m: every refresh re-reads the whole dataset; \
             use 1m or more, or remove refreshInterval to verify once per spec change"
        )));
    }
    Ok(interval)
}

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::dataset;

    fn message(result: Result<ValidDataset, Error>) -> String {
        match result {
            Err(Error::InvalidSpec(message)) => message,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn image_folder_defaults_are_filled_in() {
        let valid = validate(&dataset("source: {uri: s3://data/digits/}"), "trainer:1").unwrap();
        assert_eq!(valid.image, Some(ImageOptions::default()));
        assert_eq!(valid.split, SplitSpec::default());
        assert_eq!(valid.csv, None);
        assert_eq!(valid.pvc, None);
        assert_eq!(valid.refresh_interval, None);
        assert_eq!(valid.trainer_image, "trainer:1");
        assert_eq!(valid.owner.uid, "uid-1");
    }

    #[test]
    fn pvc_source_names_its_claim() {
        let valid = validate(&dataset("source: {uri: pvc://data/digits}"), "t").unwrap();
        assert_eq!(valid.pvc, Some(PvcSource { claim: "data".into() }));
        assert!(
            message(validate(&dataset("source: {uri: pvc://Data_1/x}"), "t"))
                .contains("not a PersistentVolumeClaim")
        );
        assert!(message(validate(&dataset("source: {uri: pvc://data/../etc}"), "t")).contains(".."));
    }

    #[test]
    fn file_sources_are_refused_with_a_way_out() {
        let message = message(validate(&dataset("source: {uri: file:///data}"), "t"));
        assert!(message.contains("pvc://"), "{message}");
    }

    #[test]
    fn csv_needs_a_label_column_and_clean_feature_names() {
        assert!(
            message(validate(&dataset("source: {uri: s3://b/x.csv}\nformat: CSV"), "t"))
                .contains("labelColumn")
        );
        let bad = "source: {uri: s3://b/x.csv}\nformat: CSV\ncsv: {labelColumn: y, featureColumns: ['a,b']}";
        assert!(message(validate(&dataset(bad), "t")).contains("comma"));
        let label = "source: {uri: s3://b/x.csv}\nformat: CSV\ncsv: {labelColumn: y, featureColumns: [a, y]}";
        assert!(message(validate(&dataset(label), "t")).contains("label column"));
        let good = "source: {uri: s3://b/x.csv}\nformat: CSV\ncsv: {labelColumn: y}";
        let valid = validate(&dataset(good), "t").unwrap();
        assert_eq!(valid.csv.unwrap().label_column, "y");
        assert_eq!(valid.image, None);
    }

    #[test]
    fn refresh_interval_is_parsed_and_bounded() {
        let valid = validate(&dataset("source: {uri: s3://b/d}\nrefreshInterval: 1h30m"), "t").unwrap();
        assert_eq!(valid.refresh_interval, Some(Duration::from_secs(5400)));
        assert!(
            message(validate(&dataset("source: {uri: s3://b/d}\nrefreshInterval: 10s"), "t")).contains("1m")
        );
        assert!(
            message(validate(&dataset("source: {uri: s3://b/d}\nrefreshInterval: soon"), "t"))
                .contains("duration")
        );
    }

    #[test]
    fn split_must_leave_training_data() {
        let bad = "source: {uri: s3://b/d}\nsplit: {validation: 0.6, test: 0.1}";
        assert!(message(validate(&dataset(bad), "t")).contains("between 0 and 0.5"));
    }

    #[test]
    fn missing_uid_is_not_an_invalid_spec() {
        let mut ds = dataset("source: {uri: s3://b/d}");
        ds.metadata.uid = None;
        assert_eq!(validate(&ds, "t"), Err(Error::MissingMetadata("uid")));
        assert_eq!(Error::MissingMetadata("uid").category(), "missing_metadata");
    }
}

//! Test samples to model input, through the preprocessing `/predict` uses.

use std::path::{Component, Path, PathBuf};

use hone_crds::contract::{EVAL_SAMPLES_FILE, EvalSample, EvalSplitHeader, InputKind, ModelCard};

use super::EvalError;
use super::read::read_bounded;
use crate::config::{DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGE_DIMENSION, DEFAULT_MAX_IMAGE_PIXELS};
use crate::preprocess::{Preprocessor, Sample};

/// Turns test samples into model input, as `/predict` turns requests.
pub(super) struct SampleInputs<'a> {
    dir: &'a Path,
    preprocessor: Preprocessor,
    /// For each of the card's features, its column in the split (tabular;
    /// `None` when the columns are already in the card's order).
    columns: Option<Vec<usize>>,
    /// Values in each row of the split.
    row_len: Option<usize>,
}

impl<'a> SampleInputs<'a> {
    pub(super) fn new(dir: &'a Path, header: &EvalSplitHeader, card: &ModelCard) -> Result<Self, EvalError> {
        if header.input != card.input {
            return Err(EvalError::Mismatch(format!(
                "split.json holds {} samples but model.json takes {} input",
                kind_name(header.input),
                kind_name(card.input)
            )));
        }
        let columns = feature_columns(&header.feature_names, &card.feature_names)?;
        Ok(Self {
            dir,
            preprocessor: Preprocessor::new(card, DEFAULT_MAX_IMAGE_DIMENSION, DEFAULT_MAX_IMAGE_PIXELS),
            columns,
            row_len: (!header.feature_names.is_empty()).then_some(header.feature_names.len()),
        })
    }

    /// The model input of `sample`, read from `line` of `samples.jsonl`.
    pub(super) fn input(&self, sample: &EvalSample, line: usize) -> Result<Sample, EvalError> {
        let sample_error =
            |reason: String| EvalError::Sample { path: self.dir.join(EVAL_SAMPLES_FILE), line, reason };
        match self.preprocessor.kind() {
            InputKind::Image => {
                let file = sample
                    .file
                    .as_deref()
                    .ok_or_else(|| sample_error("an image sample without a file".into()))?;
                let path = self.image_path(file).ok_or_else(|| {
                    sample_error(format!(
                        "image file {file:?} is not a relative path inside the split's folder"
                    ))
                })?;
                let bytes = read_bounded(&path, DEFAULT_MAX_BODY_BYTES)?;
                self.preprocessor
                    .image(&bytes)
                    .map_err(|source| EvalError::Input { sample: format!("{file} (line {line})"), source })
            }
            InputKind::Tabular => {
                let raw = sample
                    .features
                    .as_deref()
                    .ok_or_else(|| sample_error("a tabular sample without features".into()))?;
                if let Some(expected) = self.row_len
                    && raw.len() != expected
                {
                    return Err(sample_error(format!(
                        "{} feature values but split.json names {expected} features",
                        raw.len()
                    )));
                }
                let row = match &self.columns {
                    // Columns come from split.json's names, and the row has
                    // exactly that many values (checked above).
                    Some(columns) => columns.iter().map(|&c| raw[c]).collect(),
                    None => raw.to_vec(),
                };
                self.preprocessor
                    .feature_row(&row)
                    .map_err(|source| EvalError::Input { sample: format!("on line {line}"), source })
            }
        }
    }

    /// `file` inside the split's folder; `None` for an absolute path or one
    /// that climbs out of it.
    fn image_path(&self, file: &str) -> Option<PathBuf> {
        let relative = Path::new(file);
        let inside = relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        (inside && !file.is_empty()).then(|| self.dir.join(relative))
    }
}

fn kind_name(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Image => "image",
        InputKind::Tabular => "tabular",
    }
}

/// Where each of the model's features is among the split's columns, when
/// both name their features and the orders differ; an error when the names
/// are not the same set (as `/predict` refuses unknown or missing features).
fn feature_columns(split: &[String], card: &[String]) -> Result<Option<Vec<usize>>, EvalError> {
    if split.is_empty() || card.is_empty() || split == card {
        return Ok(None);
    }
    if let Some(extra) = split.iter().find(|name| !card.contains(name)) {
        return Err(EvalError::Mismatch(format!(
            "split.json has feature {extra:?}, which model.json does not name"
        )));
    }
    card.iter()
        .map(|name| {
            split.iter().position(|s| s == name).ok_or_else(|| {
                EvalError::Mismatch(format!(
                    "model.json needs feature {name:?}, which split.json does not have"
                ))
            })
        })
        .collect::<Result<Vec<usize>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_columns_follow_the_cards_order() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(feature_columns(&names(&["x", "y"]), &names(&["x", "y"])).unwrap(), None);
        assert_eq!(feature_columns(&[], &names(&["x", "y"])).unwrap(), None);
        assert_eq!(
            feature_columns(&names(&["y", "z", "x"]), &names(&["x", "y", "z"])).unwrap(),
            Some(vec![2, 0, 1])
        );
        let missing = feature_columns(&names(&["x"]), &names(&["x", "y"])).unwrap_err();
        assert!(missing.to_string().contains(r#"needs feature "y""#), "{missing}");
        let extra = feature_columns(&names(&["x", "y", "w"]), &names(&["x", "y"])).unwrap_err();
        assert!(extra.to_string().contains(r#"has feature "w""#), "{extra}");
    }

    /// The header of a one-sample image split of class `a`.
    fn image_header() -> EvalSplitHeader {
        EvalSplitHeader {
            dataset_digest: "d".into(),
            input: InputKind::Image,
            classes: vec!["a".into()],
            feature_names: vec![],
            test_samples: 1,
            samples: 1,
        }
    }

    #[test]
    fn image_paths_stay_inside_the_split() {
        let card: ModelCard = serde_json::from_str(
            r#"{"formatVersion":1,"input":"image","signature":{"inputShape":[1,2,2],"classes":["a"]}}"#,
        )
        .unwrap();
        let header = image_header();
        let inputs = SampleInputs::new(Path::new("/eval"), &header, &card).unwrap();
        assert_eq!(inputs.image_path("images/0.png"), Some(PathBuf::from("/eval/images/0.png")));
        assert_eq!(inputs.image_path("../etc/passwd"), None);
        assert_eq!(inputs.image_path("/etc/passwd"), None);
        assert_eq!(inputs.image_path(""), None);
    }

    #[test]
    fn a_split_of_the_other_input_kind_is_refused() {
        let card: ModelCard = serde_json::from_str(
            r#"{"formatVersion":1,"input":"tabular","signature":{"inputShape":[2],"classes":["a"]}}"#,
        )
        .unwrap();
        let header = image_header();
        let err = SampleInputs::new(Path::new("/eval"), &header, &card).err().unwrap();
        assert!(err.to_string().contains("image samples but model.json takes tabular"), "{err}");
    }
}

//! The traffic's inputs: the `mlp` test model's card, the canary's model
//! made from it, and rows in and out of its training distribution.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::common;

/// The `mlp` test model's card (model.json).
pub fn mlp_card() -> Value {
    let path = Path::new(&common::model("mlp")).join("model.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The training distribution of each feature of a tabular model
/// (`trainingStats.features[].reference` in its card: sorted quantiles).
pub fn training_references(card: &Value) -> Vec<Vec<f64>> {
    card["trainingStats"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reference"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect()
}

/// The class names of a model (`signature.classes` in its card).
pub fn class_names(card: &Value) -> Vec<String> {
    card["signature"]["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect()
}

/// The canary's model: the `mlp` network, copied into `dir` with a card
/// that drops its input standardization, as if trained on unscaled data. It
/// answers some inputs as the stable does and others not, so the shadow
/// agreement, the prediction PSI and the online accuracy have something to
/// measure.
pub fn unstandardized_mlp(dir: &Path) -> String {
    let from = PathBuf::from(common::model("mlp"));
    let to = dir.join("mlp-unstandardized");
    std::fs::create_dir(&to).unwrap();
    std::fs::copy(from.join("model.pt"), to.join("model.pt")).unwrap();
    let mut card = mlp_card();
    let signature = card["signature"].as_object_mut().unwrap();
    signature.remove("preprocessing").expect("the mlp card standardizes its inputs");
    std::fs::write(to.join("model.json"), serde_json::to_vec(&card).unwrap()).unwrap();
    to.display().to_string()
}

/// An in-distribution row: reference quantiles picked in golden-ratio steps,
/// so any run of rows spreads over the whole distribution.
pub fn calm_row(references: &[Vec<f64>], i: usize) -> Value {
    let row: Vec<f64> = references
        .iter()
        .enumerate()
        .map(|(f, r)| {
            let u = ((i + 7 * f) as f64 * 0.618_033_988_75).fract();
            r[((u * r.len() as f64) as usize).min(r.len() - 1)]
        })
        .collect();
    json!(row)
}

/// petal_length far outside training: the canary's inputs drift.
pub fn shifted_row(references: &[Vec<f64>], i: usize) -> Value {
    let mut row = calm_row(references, i);
    row[2] = json!(row[2].as_f64().unwrap() + 12.0);
    row
}

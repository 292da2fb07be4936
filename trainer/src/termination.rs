//! The summary a pod leaves in its termination log, kept under the 4 KiB
//! Kubernetes keeps.

use hone_crds::contract::{ErrorSummary, TERMINATION_MESSAGE_MAX_BYTES, TerminationSummary, WorkerSummary};

/// The summary as JSON that fits the termination message: long class lists
/// are cut (the full lists are in model.json / the dataset), long error
/// messages are shortened.
pub fn render(summary: &TerminationSummary) -> String {
    let mut summary = summary.clone();
    loop {
        let json = serde_json::to_string(&summary).unwrap_or_default();
        if json.len() <= TERMINATION_MESSAGE_MAX_BYTES {
            return json;
        }
        match &mut summary {
            TerminationSummary::Inspect(s) if !s.classes.is_empty() => {
                let keep = s.classes.len() / 2;
                s.classes.truncate(keep);
                let kept: std::collections::BTreeSet<_> = s.classes.iter().cloned().collect();
                s.class_counts.retain(|k, _| kept.contains(k));
            }
            TerminationSummary::Train(s) if !s.classes.is_empty() => s.classes.clear(),
            TerminationSummary::Train(s) if s.preprocessing.is_some() => s.preprocessing = None,
            TerminationSummary::Train(s) if !s.metrics.is_empty() => {
                let drop = s.metrics.keys().last().cloned().unwrap_or_default();
                s.metrics.remove(&drop);
            }
            TerminationSummary::EvalSplit(s) if !s.classes.is_empty() => s.classes.clear(),
            TerminationSummary::EvalSplit(s) if !s.feature_names.is_empty() => s.feature_names.clear(),
            TerminationSummary::Error(ErrorSummary { message, .. }) if message.len() > 64 => {
                let cut = message
                    .char_indices()
                    .map(|(i, _)| i)
                    .take_while(|&i| i < message.len() / 2)
                    .last()
                    .unwrap_or(0);
                message.truncate(cut);
                message.push_str("...");
            }
            _ => return json.chars().take(TERMINATION_MESSAGE_MAX_BYTES / 4).collect(),
        }
    }
}

/// Writes the summary to `path`; an unwritable path (not in a pod) is logged, not fatal.
pub fn write(path: &str, summary: &TerminationSummary) {
    if let Err(e) = std::fs::write(path, render(summary)) {
        crate::log::event(
            "warn",
            "termination_log_unwritable",
            serde_json::json!({"path": path, "error": e.to_string()}),
        );
    }
}

/// Writes a data-parallel worker's summary (ranks other than 0) to `path`.
pub fn write_worker(path: &str, summary: &WorkerSummary) {
    let json = serde_json::to_string(summary).unwrap_or_default();
    if let Err(e) = std::fs::write(path, json) {
        crate::log::event(
            "warn",
            "termination_log_unwritable",
            serde_json::json!({"path": path, "error": e.to_string()}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hone_crds::contract::InspectSummary;

    #[test]
    fn long_summaries_are_cut_to_fit() {
        let classes: Vec<String> = (0..2000).map(|i| format!("class-{i:05}")).collect();
        let summary = TerminationSummary::Inspect(InspectSummary {
            digest: format!("sha256:{}", "a".repeat(64)),
            samples: 1,
            size_bytes: 1,
            class_counts: classes.iter().map(|c| (c.clone(), 1)).collect(),
            classes,
        });
        let json = render(&summary);
        assert!(json.len() <= TERMINATION_MESSAGE_MAX_BYTES, "{}", json.len());
        let back: TerminationSummary = serde_json::from_str(&json).unwrap();
        let TerminationSummary::Inspect(s) = back else { panic!("kind changed") };
        assert!(s.digest.starts_with("sha256:"));
        assert_eq!(s.classes.len(), s.class_counts.len());

        let train = TerminationSummary::Train(hone_crds::contract::TrainSummary {
            epoch: 5,
            total_epochs: 5,
            metrics: [("val_accuracy".to_owned(), 0.98)].into(),
            artifact_uri: "s3://m/model.pt".into(),
            artifact_digest: format!("sha256:{}", "b".repeat(64)),
            artifact_size_bytes: 1,
            card_digest: Some(format!("sha256:{}", "c".repeat(64))),
            dataset_digest: None,
            input_shape: vec![3, 224, 224],
            classes: (0..2000).map(|i| format!("class-{i:05}")).collect(),
            preprocessing: None,
            task: Default::default(),
            threshold: None,
            output: Default::default(),
            artifact_format: Default::default(),
            mlflow_run_id: None,
        });
        let json = render(&train);
        assert!(json.len() <= TERMINATION_MESSAGE_MAX_BYTES, "{}", json.len());
        let back: TerminationSummary = serde_json::from_str(&json).unwrap();
        let TerminationSummary::Train(s) = back else { panic!("kind changed") };
        assert!(s.classes.is_empty(), "a cut class list is dropped whole, never half-kept");
        assert_eq!(s.metrics.len(), 1, "metrics survive when dropping the classes is enough");

        let eval = TerminationSummary::EvalSplit(hone_crds::contract::EvalSplitHeader {
            dataset_digest: format!("sha256:{}", "d".repeat(64)),
            input: hone_crds::contract::InputKind::Tabular,
            classes: (0..2000).map(|i| format!("class-{i:05}")).collect(),
            feature_names: vec!["width".into(), "depth".into()],
            test_samples: 20_000,
            samples: 10_000,
        });
        let json = render(&eval);
        assert!(json.len() <= TERMINATION_MESSAGE_MAX_BYTES, "{}", json.len());
        let back: TerminationSummary = serde_json::from_str(&json).unwrap();
        let TerminationSummary::EvalSplit(s) = back else { panic!("kind changed") };
        assert!(s.classes.is_empty(), "the full class list is in split.json");
        assert_eq!((s.test_samples, s.samples, s.feature_names.len()), (20_000, 10_000, 2));

        let err = TerminationSummary::Error(ErrorSummary {
            reason: "InvalidData".into(),
            message: "x".repeat(10_000),
        });
        assert!(render(&err).len() <= TERMINATION_MESSAGE_MAX_BYTES);
    }
}

//! `track` variants: the newest Ready ModelVersion of a model whose metrics
//! pass every `minMetrics` gate. Pure.

use std::collections::BTreeMap;

use hone_crds::ModelVersion;
use hone_crds::conditions::is_true;
use hone_crds::consts::CONDITION_READY;
use hone_crds::inferenceservice::Track;
use hone_crds::modelversion::ModelVersionPhase;

/// A Ready ModelVersion that a gate kept out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateFailure {
    /// The ModelVersion's name.
    pub model_version: String,
    /// Which gate, and the value, e.g. `val_accuracy 0.93 < 0.95`.
    pub message: String,
}

/// What a track resolves to.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackChoice<'a> {
    /// The newest passing version, if any.
    pub chosen: Option<&'a ModelVersion>,
    /// Ready versions newer than `chosen` (all of them when none passes)
    /// that fail a gate, newest first.
    pub gate_failures: Vec<GateFailure>,
}

/// True when the ModelVersion was verified (phase or Ready condition).
pub fn is_ready(mv: &ModelVersion) -> bool {
    mv.status
        .as_ref()
        .is_some_and(|s| s.phase == Some(ModelVersionPhase::Ready) || is_true(&s.conditions, CONDITION_READY))
}

/// Picks the newest Ready ModelVersion of `track.model` in `model_versions`
/// that passes every gate.
pub fn select<'a>(track: &Track, model_versions: &'a [ModelVersion]) -> TrackChoice<'a> {
    let mut candidates: Vec<&ModelVersion> =
        model_versions.iter().filter(|mv| mv.spec.model == track.model && is_ready(mv)).collect();
    candidates.sort_by_key(|mv| std::cmp::Reverse(mv.spec.version));
    let empty = BTreeMap::new();
    let gates = track.min_metrics.as_ref().unwrap_or(&empty);
    let mut gate_failures = Vec::new();
    for mv in candidates {
        let failed = match gate_metrics(mv) {
            Ok(metrics) => failed_gate(gates, metrics.unwrap_or(&empty)),
            Err(why) => Some(why),
        };
        match failed {
            None => return TrackChoice { chosen: Some(mv), gate_failures },
            Some(message) => gate_failures
                .push(GateFailure { model_version: mv.metadata.name.clone().unwrap_or_default(), message }),
        }
    }
    TrackChoice { chosen: None, gate_failures }
}

/// The metrics a version's gates read: those Hone measured
/// (`status.evaluation.metrics`); the trainer's own `spec.metrics` only when
/// the version opted out of evaluation (`spec.evaluation.required: false`)
/// and was not evaluated. `Err` says why a version cannot be gated at all.
pub fn gate_metrics(mv: &ModelVersion) -> Result<Option<&BTreeMap<String, f64>>, String> {
    if let Some(evaluation) = mv.status.as_ref().and_then(|s| s.evaluation.as_ref()) {
        return Ok(Some(&evaluation.metrics));
    }
    if !mv.spec.evaluation_required() {
        return Ok(mv.spec.metrics.as_ref());
    }
    Err(format!(
        "was not evaluated by Hone ({}): only measured versions are tracked; register it with \
         spec.evaluation.dataset, or spec.evaluation.required: false to gate on its trainer's metrics",
        match mv.spec.evaluation_dataset() {
            Some(dataset) => format!("Dataset {dataset} gave no measurement"),
            None => "no evaluation Dataset".to_owned(),
        }
    ))
}

/// The first gate `metrics` fail, described; `None` when all pass. A metric
/// whose name ends in `loss` passes at or below its gate, any other at or above.
pub fn failed_gate(gates: &BTreeMap<String, f64>, metrics: &BTreeMap<String, f64>) -> Option<String> {
    gates.iter().find_map(|(name, gate)| {
        let lower_is_better = name.ends_with("loss");
        let (op, fail_op) = if lower_is_better { ("<=", ">") } else { (">=", "<") };
        match metrics.get(name) {
            None => Some(format!(
                "has no metric {name} (gate {name} {op} {gate}; measured metrics are {})",
                hone_crds::contract::metric::ALL.join(", ")
            )),
            Some(value) if value.is_nan() => Some(format!("{name} is NaN (gate {op} {gate})")),
            Some(value) => {
                let passes = if lower_is_better { value <= gate } else { value >= gate };
                (!passes).then(|| format!("{name} {value} {fail_op} {gate}"))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::inferenceservice::tests::model_version;

    fn track(gates: &[(&str, f64)]) -> Track {
        Track {
            model: "digits".into(),
            min_metrics: Some(gates.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
        }
    }

    #[test]
    fn newest_ready_passing_version_wins() {
        let mvs = vec![
            model_version("digits-v1", "digits", 1, true, &[("val_accuracy", 0.96)]),
            model_version("digits-v2", "digits", 2, true, &[("val_accuracy", 0.97)]),
            model_version("digits-v3", "digits", 3, false, &[("val_accuracy", 0.99)]),
            model_version("other-v9", "other", 9, true, &[("val_accuracy", 0.99)]),
        ];
        let choice = select(&track(&[("val_accuracy", 0.95)]), &mvs);
        assert_eq!(choice.chosen.unwrap().metadata.name.as_deref(), Some("digits-v2"));
        assert!(choice.gate_failures.is_empty(), "v3 is not Ready, so it is not a gate failure");
    }

    #[test]
    fn versions_failing_a_gate_are_recorded_and_skipped() {
        let mvs = vec![
            model_version("digits-v1", "digits", 1, true, &[("val_accuracy", 0.96), ("val_loss", 0.2)]),
            model_version("digits-v2", "digits", 2, true, &[("val_accuracy", 0.93), ("val_loss", 0.1)]),
            model_version("digits-v3", "digits", 3, true, &[("val_accuracy", 0.99), ("val_loss", 0.5)]),
        ];
        let choice = select(&track(&[("val_accuracy", 0.95), ("val_loss", 0.3)]), &mvs);
        assert_eq!(choice.chosen.unwrap().metadata.name.as_deref(), Some("digits-v1"));
        let failed: Vec<_> = choice.gate_failures.iter().map(|f| f.model_version.as_str()).collect();
        assert_eq!(failed, ["digits-v3", "digits-v2"]);
        assert_eq!(choice.gate_failures[0].message, "val_loss 0.5 > 0.3");
        assert_eq!(choice.gate_failures[1].message, "val_accuracy 0.93 < 0.95");
    }

    #[test]
    fn missing_metrics_fail_and_no_gates_pass_everything() {
        let mvs = vec![model_version("digits-v1", "digits", 1, true, &[])];
        let choice = select(&track(&[("val_accuracy", 0.5)]), &mvs);
        assert_eq!(choice.chosen, None);
        assert!(choice.gate_failures[0].message.contains("has no metric val_accuracy"));
        let open = Track { model: "digits".into(), min_metrics: None };
        assert!(select(&open, &mvs).chosen.is_some());
    }

    /// `mv` as registered by a trainer that claims `val_accuracy: 0.99`, not yet measured.
    fn unmeasured(mut mv: ModelVersion, required: Option<bool>) -> ModelVersion {
        mv.spec.metrics = Some([("val_accuracy".to_owned(), 0.99)].into());
        mv.spec.evaluation = Some(hone_crds::modelversion::EvaluationSpec { dataset: None, required });
        if let Some(status) = mv.status.as_mut() {
            status.evaluation = None;
        }
        mv
    }

    #[test]
    fn gates_read_measured_metrics_not_the_trainers_claims() {
        // The trainer claims 0.99; Hone measured 0.12 (its classes are permuted).
        let mut v2 = model_version("digits-v2", "digits", 2, true, &[("accuracy", 0.12)]);
        v2.spec.metrics = Some([("accuracy".to_owned(), 0.99)].into());
        let mvs = vec![model_version("digits-v1", "digits", 1, true, &[("accuracy", 0.97)]), v2];
        let choice = select(&track(&[("accuracy", 0.9)]), &mvs);
        assert_eq!(choice.chosen.unwrap().metadata.name.as_deref(), Some("digits-v1"));
        assert_eq!(choice.gate_failures[0].message, "accuracy 0.12 < 0.9");
    }

    #[test]
    fn an_unevaluated_version_is_tracked_only_when_its_spec_opts_out() {
        let v1 = model_version("digits-v1", "digits", 1, true, &[("val_accuracy", 0.95)]);
        let v2 = unmeasured(model_version("digits-v2", "digits", 2, true, &[]), None);
        let open = Track { model: "digits".into(), min_metrics: None };
        let mvs = [v1.clone(), v2];
        let choice = select(&open, &mvs);
        assert_eq!(choice.chosen.unwrap().metadata.name.as_deref(), Some("digits-v1"));
        assert!(
            choice.gate_failures[0].message.contains("was not evaluated by Hone (no evaluation Dataset)")
        );

        let opted_out = unmeasured(model_version("digits-v2", "digits", 2, true, &[]), Some(false));
        let mvs = [v1, opted_out];
        assert_eq!(select(&open, &mvs).chosen.unwrap().metadata.name.as_deref(), Some("digits-v2"));
        // Opted out, its gates read the trainer's claims.
        let gated = select(&track(&[("val_accuracy", 0.995)]), &mvs);
        assert_eq!(gated.gate_failures[0].message, "val_accuracy 0.99 < 0.995");
    }
}

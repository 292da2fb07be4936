//! The PrometheusRule: its Helm template filled from values.yaml, every
//! rule evaluated, the quality rules' values, and the alerts that go pending.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Prometheus, grouping_labels, label, value_of};
use crate::stack::Traffic;
use crate::{CANARY, DOWN, FEEDBACK, ISVC, NAMESPACE, STABLE};

/// Fills the Helm template of the rule file the way `tpl` does for the two
/// forms it uses: `{{ .Values.a.b }}` from values.yaml and `{{`raw`}}`.
pub fn fill_rules_template(text: &str, values: &serde_yaml::Value) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        if let Some(raw) = after.strip_prefix('`') {
            let end = raw.find("`}}").expect("unterminated {{` in the rule file");
            out.push_str(&raw[..end]);
            rest = &raw[end + 3..];
        } else {
            let end = after.find("}}").expect("unterminated {{ in the rule file");
            let action = after[..end].trim();
            let path =
                action.strip_prefix(".Values.").unwrap_or_else(|| panic!("unsupported action {action}"));
            let mut value = values;
            for key in path.split('.') {
                value = value.get(key).unwrap_or_else(|| panic!("values.yaml has no {path}"));
            }
            match value {
                serde_yaml::Value::String(s) => out.push_str(s),
                serde_yaml::Value::Number(n) => out.push_str(&n.to_string()),
                other => panic!("{path} is not a scalar: {other:?}"),
            }
            rest = &after[end + 2..];
        }
    }
    out.push_str(rest);
    out
}

/// What the quality rules recorded for the canary.
pub struct Quality {
    agreement: f64,
    psi: f64,
}

/// The quality rules' values for the canary pair, against what was sent
/// and what the router counted.
pub async fn check_quality(prometheus: &Prometheus, traffic: &Traffic) -> Quality {
    // Online accuracy: the share of correct labels sent, per backend.
    let sent: BTreeMap<&str, f64> = FEEDBACK
        .iter()
        .map(|(v, correct, incorrect)| (*v, *correct as f64 / (correct + incorrect) as f64))
        .collect();
    prometheus
        .wait_for("the online accuracy of the labels sent", "hone:router_online_accuracy:1h", |r| {
            let recorded: BTreeMap<&str, f64> =
                r.iter().map(|s| (label(s, "variant").unwrap(), value_of(s))).collect();
            recorded.len() == sent.len()
                && sent.iter().all(|(v, want)| recorded.get(v).is_some_and(|got| (got - want).abs() < 1e-9))
        })
        .await;

    // Shadow agreement: what the router counted since Prometheus first saw
    // the comparisons. Prometheus extrapolates each counter's increase from
    // its own first sample, so the ratio of rates is within a few percent.
    let (first, last) = (traffic.compared_first, traffic.compared_last);
    let counted = (last.agreements - first.agreements) / (last.samples - first.samples);
    assert!(counted > 0.0 && counted < 1.0, "the canary agrees on some inputs only: {first:?} {last:?}");
    let expr = format!(r#"hone:router_shadow_agreement_ratio:rate5m{{variant="{CANARY}"}}"#);
    let recorded = prometheus.wait_for("the shadow agreement", &expr, |r| r.len() == 1).await;
    let agreement = value_of(&recorded[0]);
    assert!(agreement > 0.0 && agreement < 1.0, "{recorded:?}");
    assert!((agreement / counted - 1.0).abs() < 0.1, "recorded {agreement}, the router counted {counted}");

    // The prediction PSI pairs the canary with its stable.
    let psi =
        prometheus.wait_for("the prediction PSI", "hone:router_prediction_psi:5m", |r| !r.is_empty()).await;
    assert_eq!(psi.len(), 1, "{psi:?}");
    assert_eq!(
        (label(&psi[0], "variant"), label(&psi[0], "stable")),
        (Some(CANARY), Some(STABLE)),
        "{psi:?}"
    );
    let psi = value_of(&psi[0]);
    assert!(psi.is_finite() && psi > 0.0, "the canary answers other classes: PSI {psi}");
    Quality { agreement, psi }
}

/// Every rule parses and evaluates; the recording rules of inference
/// return series with the labels they group by (the canary ones pair the
/// canary with its stable). Returns how many rules there are.
pub async fn check_rules(prometheus: &Prometheus, rules: &serde_yaml::Value) -> usize {
    let mut checked_rules = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let result = prometheus.query(expr).await;
            checked_rules += 1;
            let Some(record) = rule["record"].as_str() else { continue };
            if expr.contains("hone_operator_") {
                continue; // no operator here: it must only parse and evaluate
            }
            assert!(!result.is_empty(), "recording rule {record} returned nothing");
            for sample in &result {
                for l in grouping_labels(expr) {
                    assert!(label(sample, &l).is_some(), "{record}: no {l} in {sample}");
                }
                assert_eq!(label(sample, "inferenceservice"), Some(ISVC), "{record}: {sample}");
                if let Some(stable) = label(sample, "stable") {
                    assert_eq!(
                        (label(sample, "variant"), stable),
                        (Some(CANARY), STABLE),
                        "{record}: {sample}"
                    );
                }
            }
        }
    }
    assert!(checked_rules >= 10, "{checked_rules} rules");
    checked_rules
}

/// Each quality alert's minimum (what follows its `and on (...)`: samples
/// in the window, labels in the hour) is met by the canary, and for the
/// feedback one by the stable too: the traffic was enough to judge them.
pub async fn check_quality_minimums(prometheus: &Prometheus, rules: &serde_yaml::Value) {
    let groups = rules["groups"].as_sequence().unwrap();
    let quality = groups.iter().find(|g| g["name"].as_str() == Some("hone.quality")).unwrap();
    let mut minimums = 0;
    for rule in quality["rules"].as_sequence().unwrap() {
        let (alert, expr) = (rule["alert"].as_str().unwrap(), rule["expr"].as_str().unwrap());
        let Some((_, minimum)) = expr.split_once("and on (namespace, inferenceservice, variant)") else {
            continue;
        };
        let met: BTreeSet<String> = prometheus
            .query(minimum)
            .await
            .iter()
            .filter_map(|s| label(s, "variant").map(str::to_owned))
            .collect();
        let judged: &[&str] =
            if minimum.contains("hone_router_feedback_total") { &[STABLE, CANARY] } else { &[CANARY] };
        for variant in judged {
            assert!(met.contains(*variant), "{alert}: {variant} under its minimum ({met:?}):{minimum}");
        }
        minimums += 1;
    }
    assert!(minimums >= 4, "{minimums} quality alerts with a minimum");
}

/// The alerts that go pending: the error-rate SLO for the dead variant
/// only, input drift for the canary's shifted feature, and the quality
/// alerts exactly for the canary values past their thresholds.
pub async fn check_alerts(prometheus: &Prometheus, thresholds: &serde_yaml::Value, quality: &Quality) {
    let threshold = |key: &str| thresholds[key].as_f64().unwrap_or_else(|| panic!("values.yaml: {key}"));
    let canary_if = |past: bool| if past { BTreeSet::from([CANARY]) } else { BTreeSet::new() };
    let accuracy_low = FEEDBACK
        .iter()
        .filter(|(_, correct, incorrect)| {
            (*correct as f64 / (correct + incorrect) as f64) < threshold("onlineAccuracy")
        })
        .map(|(v, ..)| *v)
        .collect();
    let quality_alerts: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
        ("HoneOnlineAccuracyLow", accuracy_low),
        ("HoneShadowAgreementLow", canary_if(quality.agreement < threshold("shadowAgreement"))),
        ("HonePredictionDistributionShift", canary_if(quality.psi > threshold("predictionPsi"))),
    ]);
    assert!(!quality_alerts["HoneOnlineAccuracyLow"].is_empty(), "some feedback says the canary is wrong");
    let alerts = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alerts = prometheus.get("/api/v1/alerts", &[]).await["alerts"].as_array().unwrap().clone();
            let has = |name: &str, want: &[(&str, &str)]| {
                alerts.iter().any(|a| {
                    a["labels"]["alertname"] == name && want.iter().all(|(k, v)| a["labels"][*k] == *v)
                })
            };
            // Each alert goes pending on its own evaluation: wait for the
            // ones asserted below, not just any of their kind.
            if has("HoneInferenceServiceErrorRate", &[("variant", DOWN)])
                && has(
                    "HonePredictorInputDrift",
                    &[("variant", STABLE), ("version", "2"), ("feature", "petal_length")],
                )
                && quality_alerts
                    .iter()
                    .all(|(name, variants)| variants.iter().all(|v| has(name, &[("variant", v)])))
            {
                break alerts;
            }
            assert!(Instant::now() < deadline, "alerts not pending within 30 s: {alerts:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let named = |name: &str| -> Vec<&Value> {
        alerts.iter().filter(|a| a["labels"]["alertname"] == name).map(|a| &a["labels"]).collect()
    };
    let errors = named("HoneInferenceServiceErrorRate");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["variant"], DOWN);
    assert_eq!(errors[0]["inferenceservice"], ISVC);
    assert_eq!(errors[0]["namespace"], NAMESPACE);
    assert!(named("HoneInferenceServiceLatencyP99").is_empty(), "loopback is faster than the SLO");
    for (name, want) in &quality_alerts {
        let pending: BTreeSet<&str> = named(name).iter().map(|a| a["variant"].as_str().unwrap()).collect();
        assert_eq!(&pending, want, "{name}: {:?}", named(name));
    }
    let shift = named("HonePredictionDistributionShift");
    assert!(shift.iter().all(|a| a["stable"] == STABLE), "{shift:?}");
}

//! The Grafana dashboard: its template variables and every panel query.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::{Prometheus, grouping_labels, label, value_of};
use crate::{CANARY, ISVC, NAMESPACE, STABLE, WEIGHTS};

/// Grafana's variables, replaced by what the dashboard would send for
/// namespace `ml` and InferenceService `digits`.
fn substitute_grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$__interval", "5s")
        .replace("$namespace", NAMESPACE)
        .replace("$inferenceservice", ISVC)
}

/// The dashboard: template variables, then every panel query.
pub async fn check_dashboard(prometheus: &Prometheus, dashboard: &Value) {
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let query = substitute_grafana(var["query"]["query"].as_str().unwrap());
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).unwrap();
        let (selector, wanted) = inner.rsplit_once(',').unwrap();
        let values: BTreeSet<String> = prometheus
            .query(selector.trim())
            .await
            .iter()
            .filter_map(|s| label(s, wanted.trim()).map(str::to_owned))
            .collect();
        let expected = if wanted.trim() == "namespace" { NAMESPACE } else { ISVC };
        assert_eq!(values, BTreeSet::from([expected.to_owned()]), "variable {}", var["name"]);
    }
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = substitute_grafana(target["expr"].as_str().unwrap());
            let title = panel["title"].as_str().unwrap();
            let result = prometheus.query(&expr).await;
            exprs += 1;
            if expr.contains("hone_operator_") || expr.contains("hone_trainer_") {
                continue; // no operator or trainer here: it must only parse and evaluate
            }
            check_panel(title, &expr, &result);
        }
    }
    assert!(exprs >= 20, "{exprs} dashboard queries");
}

/// One panel query of inference shows series with the labels it groups by,
/// of this InferenceService's backends.
fn check_panel(title: &str, expr: &str, result: &[Value]) {
    assert!(!result.is_empty(), "panel {title:?} shows nothing: {expr}");
    // Refused feedback belongs to no backend: its id did not check out.
    let refused_feedback = expr.contains("hone_router_feedback_rejected_total");
    for sample in result {
        for l in grouping_labels(expr) {
            assert!(label(sample, &l).is_some(), "panel {title:?}: no {l} in {sample}");
        }
        assert_eq!(label(sample, "inferenceservice"), Some(ISVC), "panel {title:?}: {sample}");
        if refused_feedback {
            assert_eq!(label(sample, "variant"), None, "panel {title:?}: {sample}");
            continue;
        }
        let variant = label(sample, "variant").unwrap_or_else(|| panic!("{title:?}: {sample}"));
        assert!(WEIGHTS.iter().any(|(v, _)| *v == variant), "panel {title:?}: {sample}");
    }
    let labels = |name: &str| -> BTreeSet<&str> { result.iter().filter_map(|s| label(s, name)).collect() };
    if refused_feedback {
        assert_eq!(labels("reason"), BTreeSet::from(["bad_id", "replayed"]), "{title:?}");
    }
    if expr.contains("hone_router_variant_weight") {
        let shown: BTreeMap<&str, f64> =
            result.iter().map(|s| (label(s, "variant").unwrap(), value_of(s))).collect();
        let want: BTreeMap<&str, f64> = WEIGHTS.iter().map(|(v, w)| (*v, f64::from(*w))).collect();
        assert_eq!(shown, want, "traffic weight panel");
    }
    if expr.contains("hone_router_requests_total") && !expr.contains("5xx") {
        let variants = labels("variant");
        assert!(variants.contains(STABLE) && variants.contains(CANARY), "{title:?}: {variants:?}");
    }
    if expr.contains("hone_router_shadow_") || expr.contains("hone_router_feedback_total") {
        // Mirrors go to the canary; feedback names the backend that answered.
        let want: BTreeSet<&str> =
            if expr.contains("shadow") { BTreeSet::from([CANARY]) } else { BTreeSet::from([STABLE, CANARY]) };
        assert_eq!(labels("variant"), want, "{title:?}");
    }
    if expr.contains("hone_predictor_batch_size_sum") {
        assert!(result.iter().all(|s| value_of(s) >= 1.0), "mean batch size: {result:?}");
        assert_eq!(labels("version").len(), 2, "one series per version: {result:?}");
    }
}

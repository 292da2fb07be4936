//! The chart's monitoring against a real Prometheus: two predictors and a
//! router on loopback are scraped every second (with the target labels the
//! chart's PodMonitors give them), traffic goes through the router to a
//! variant, its canary (which also gets a copy of every request of the
//! variant, compared with the variant's answers) and a third variant whose
//! backend is down, labels for some answers come back through the router's
//! `POST /feedback`, and then every expression of the Grafana dashboard
//! (charts/hone/files/dashboards/hone.json) and every rule of the
//! PrometheusRule (charts/hone/files/rules/hone.rules.yaml, filled from
//! values.yaml) runs through Prometheus's HTTP API. Prometheus also loads the
//! rule file itself, so its rule health and alerts are checked.
//!
//! Needs the `prometheus` binary (Debian: `apt-get install prometheus`);
//! HONE_SKIP_PROMETHEUS=1 skips the test instead of failing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "prometheus/dashboard.rs"]
mod dashboard;
#[path = "prometheus/feedback.rs"]
mod feedback;
#[path = "prometheus/harness.rs"]
mod harness;
#[path = "prometheus/inputs.rs"]
mod inputs;
#[path = "prometheus/rules.rs"]
mod rules;
#[path = "prometheus/stack.rs"]
mod stack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use dashboard::check_dashboard;
use harness::{label, value_of};
use inputs::{class_names, mlp_card, training_references};
use rules::{check_alerts, check_quality, check_quality_minimums, check_rules, fill_rules_template};
use stack::Stack;

/// What the PodMonitors' relabelings and Kubernetes discovery add.
const NAMESPACE: &str = "ml";
const ISVC: &str = "digits";
/// The router's backends: a variant, its canary (`<variant>-v<N>`, as the
/// operator names it) and a variant whose backend is down.
const STABLE: &str = "stable";
const CANARY: &str = "stable-v2";
const DOWN: &str = "down";
/// Router weights of the three backends.
const WEIGHTS: [(&str, u32); 3] = [(STABLE, 60), (CANARY, 30), (DOWN, 10)];
/// The router's feedback key (64 hex digits).
const FEEDBACK_KEY: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
/// Calm requests through the router, sent in rounds of [`ROUND`].
const ROUNDS: usize = 40;
const ROUND: usize = 8;
/// Drifted requests pinned to the canary afterwards (its drift window).
const DRIFTED: usize = 50;
/// Labels sent back per backend: (backend, correct, incorrect); multiples of
/// 10, since a tenth of each goes first.
const FEEDBACK: [(&str, usize, usize); 2] = [(STABLE, 90, 10), (CANARY, 40, 40)];

/// The Helm chart's folder.
fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/hone")
}

/// The prometheus binary, or None when HONE_SKIP_PROMETHEUS=1.
fn prometheus_bin() -> Option<PathBuf> {
    if std::env::var("HONE_SKIP_PROMETHEUS").is_ok_and(|v| v == "1") {
        eprintln!("HONE_SKIP_PROMETHEUS=1: skipping the Prometheus test");
        return None;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file());
    match found {
        Some(bin) => Some(bin),
        None => panic!(
            "the prometheus binary is not on PATH: apt-get install prometheus \
             (or set HONE_SKIP_PROMETHEUS=1 to skip this test)"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_and_rules_evaluate_on_real_scrapes() {
    let Some(bin) = prometheus_bin() else { return };
    let dir = tempfile::tempdir().unwrap();

    // The rule file as the chart renders it (thresholds from values.yaml).
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    let template = std::fs::read_to_string(chart().join("files/rules/hone.rules.yaml")).unwrap();
    let rules_text = fill_rules_template(&template, &values);
    std::fs::write(dir.path().join("hone.rules.yaml"), &rules_text).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules_text).unwrap();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("files/dashboards/hone.json")).unwrap())
            .unwrap();

    let stack = Stack::start(&bin, dir.path()).await;
    let prometheus = &stack.prometheus;
    let card = mlp_card();
    let traffic = stack.send_traffic(&training_references(&card)).await;
    stack.send_feedback(&traffic.answers, &class_names(&card)).await;

    // Wait for a few scrapes that saw all of it, and for the rules to run.
    prometheus
        .wait_for("the router's counters scraped", "sum(hone_router_requests_total)", |r| {
            r.first().is_some_and(|s| value_of(s) >= traffic.answers.len() as f64)
        })
        .await;
    prometheus
        .wait_for("three scrapes of the router", "count_over_time(hone_router_requests_total[1m])", |r| {
            r.iter().all(|s| value_of(s) >= 3.0) && !r.is_empty()
        })
        .await;
    prometheus.wait_for("the recording rules", "hone:router_error_ratio:rate5m", |r| r.len() == 3).await;
    // rate() needs two samples of a series: the refused-feedback counters
    // appear last, so wait until each reason was scraped twice.
    prometheus
        .wait_for(
            "two scrapes of each refused-feedback reason",
            "count_over_time(hone_router_feedback_rejected_total[1m])",
            |r| r.len() == 2 && r.iter().all(|s| value_of(s) >= 2.0),
        )
        .await;
    let quality = check_quality(prometheus, &traffic).await;

    let checked_rules = check_rules(prometheus, &rules).await;
    let ratio = prometheus.query("hone:router_error_ratio:rate5m").await;
    for sample in &ratio {
        let want = if label(sample, "variant") == Some(DOWN) { 1.0 } else { 0.0 };
        assert_eq!(value_of(sample), want, "{sample}");
    }
    check_quality_minimums(prometheus, &rules).await;

    // Prometheus itself loaded and ran every rule without error.
    let loaded = prometheus.get("/api/v1/rules", &[]).await;
    let mut loaded_rules = 0;
    for group in loaded["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            loaded_rules += 1;
            assert_eq!(rule["health"], "ok", "{rule}");
        }
    }
    assert_eq!(loaded_rules, checked_rules);

    check_alerts(prometheus, &values["monitoring"]["prometheusRule"], &quality).await;
    // Input drift: the canary's shifted feature, against the stable's calm one.
    let mut psi = BTreeMap::new();
    for version in ["1", "2"] {
        let expr = format!(
            r#"hone_predictor_drift_psi{{variant="{STABLE}", version="{version}", feature="petal_length"}}"#
        );
        psi.insert(version, value_of(&prometheus.query(&expr).await[0]));
    }
    let (calm, shifted) = (psi["1"], psi["2"]);
    assert!(shifted > 1.0 && calm < shifted / 4.0, "petal_length PSI: stable {calm}, canary {shifted}");

    check_dashboard(prometheus, &dashboard).await;
}

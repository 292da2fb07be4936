//! The chart's monitoring against a real Prometheus: two predictors and a
//! router on loopback are scraped every second (with the target labels the
//! chart's PodMonitors give them), traffic goes through the router to two
//! variants (and a third whose backend is down), and then every expression
//! of the Grafana dashboard (charts/hone/files/dashboards/hone.json) and
//! every rule of the PrometheusRule (charts/hone/files/rules/hone.rules.yaml,
//! filled from values.yaml) runs through Prometheus's HTTP API. Prometheus
//! also loads the rule file itself, so its rule health and alerts are checked.
//!
//! Needs the `prometheus` binary (Debian: `apt-get install prometheus`);
//! HONE_SKIP_PROMETHEUS=1 skips the test instead of failing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What the PodMonitors' relabelings and Kubernetes discovery add.
const NAMESPACE: &str = "ml";
const ISVC: &str = "digits";
/// Router weights of the three variants.
const WEIGHTS: [(&str, u32); 3] = [("stable", 60), ("canary", 30), ("down", 10)];

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

/// Fills the Helm template of the rule file the way `tpl` does for the two
/// forms it uses: `{{ .Values.a.b }}` from values.yaml and `{{`raw`}}`.
fn fill_rules_template(text: &str, values: &serde_yaml::Value) -> String {
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

/// A free loopback port (released again for Prometheus to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Prometheus {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(bin: &Path, dir: &Path) -> Self {
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut prometheus =
            Self { child, base: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
                panic!("prometheus exited ({status}):\n{log}");
            }
            let ready = prometheus.client.get(format!("{}/-/ready", prometheus.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let body: Value = self.client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        body["data"].clone()
    }

    /// An instant query; returns the result vector (the query must parse and evaluate).
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await;
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().unwrap().clone(),
            Some("scalar") => vec![json!({"metric": {}, "value": data["result"]})],
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }

    async fn wait_for(&self, what: &str, expr: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let result = self.query(expr).await;
            if done(&result) {
                return result;
            }
            assert!(Instant::now() < deadline, "{what}: not within 60 s; last {expr} = {result:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

fn label<'a>(sample: &'a Value, name: &str) -> Option<&'a str> {
    sample["metric"][name].as_str()
}

/// Labels listed in every `by (...)` of an expression: what each result
/// series must carry (`le` is consumed by histogram_quantile).
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for (i, _) in expr.match_indices("by (") {
        let list = &expr[i + 4..];
        let end = list.find(')').unwrap();
        labels.extend(list[..end].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
    }
    labels.remove("le");
    labels
}

/// Grafana's variables, replaced by what the dashboard would send for
/// namespace `ml` and InferenceService `digits`.
fn substitute_grafana(expr: &str) -> String {
    expr.replace("$__rate_interval", "15s")
        .replace("$__interval", "5s")
        .replace("$namespace", NAMESPACE)
        .replace("$inferenceservice", ISVC)
}

/// The training distribution of each feature of the `mlp` test model
/// (`trainingStats.features[].reference` in its model.json: sorted quantiles).
fn training_references() -> Vec<Vec<f64>> {
    let card: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&common::model("mlp")).join("model.json")).unwrap(),
    )
    .unwrap();
    card["trainingStats"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reference"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect()
}

/// An in-distribution row: reference quantiles picked in golden-ratio steps,
/// so any run of rows spreads over the whole distribution.
fn calm_row(references: &[Vec<f64>], i: usize) -> Value {
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
fn shifted_row(references: &[Vec<f64>], i: usize) -> Value {
    let mut row = calm_row(references, i);
    row[2] = json!(row[2].as_f64().unwrap() + 12.0);
    row
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

    // Two predictors (one per variant, different versions) and a router.
    let batching = ["--drift-window", "50", "--max-batch-size", "8", "--max-latency-ms", "2"];
    let mut stable_args = batching.to_vec();
    stable_args.extend(["--model-version", "1"]);
    let mut canary_args = batching.to_vec();
    canary_args.extend(["--model-version", "2"]);
    let stable = common::start(common::args("mlp", &stable_args)).await;
    let canary = common::start(common::args("mlp", &canary_args)).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let backends = [stable.base.clone(), canary.base.clone(), dead];
    let variants: Vec<Value> = WEIGHTS
        .iter()
        .zip(&backends)
        // Named variants with traffic, which the operator marks pinnable.
        .map(|((name, weight), url)| json!({"name": name, "url": url, "weight": weight, "pinnable": true}))
        .collect();
    let router_config = dir.path().join("router.yaml");
    std::fs::write(&router_config, serde_yaml::to_string(&json!({"variants": variants})).unwrap()).unwrap();
    let router = common::start_router(&router_config, &[]).await;

    let target = |url: &str, pod: &str, variant: Option<&str>| {
        let mut labels = json!({"namespace": NAMESPACE, "pod": pod, "inferenceservice": ISVC});
        if let Some(v) = variant {
            labels["variant"] = json!(v);
        }
        json!({"targets": [url.trim_start_matches("http://")], "labels": labels})
    };
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [dir.path().join("hone.rules.yaml")],
        "scrape_configs": [
            {"job_name": "predictors", "static_configs": [
                target(&stable.base, "digits-stable-v1-7d9f", Some("stable")),
                target(&canary.base, "digits-canary-v2-5c8b", Some("canary")),
            ]},
            // The router's metrics are on its admin port (as the chart's PodMonitor scrapes them).
            {"job_name": "routers", "static_configs": [target(&router.admin, "digits-router-6f4d", None)]},
        ],
    });
    std::fs::write(dir.path().join("prometheus.yml"), serde_yaml::to_string(&config).unwrap()).unwrap();
    let prometheus = Prometheus::start(&bin, dir.path()).await;

    // Counters must be seen before the traffic for rate() to see it rise.
    prometheus
        .wait_for("a first scrape of every target", "up == 1 and on (pod) hone_predictor_model_loaded or up == 1 and on (pod) hone_router_variant_weight", |r| {
            r.len() == 3
        })
        .await;

    // Traffic through the router, 8 at a time so batches form, over ~2.5 s.
    let references = training_references();
    let client = reqwest::Client::new();
    let url = format!("{router}/predict");
    let mut answered: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for round in 0..25 {
        let sends = (0..8).map(|i| client.post(&url).json(&calm_row(&references, round * 8 + i)).send());
        for response in futures::future::join_all(sends).await {
            let response = response.unwrap();
            let variant = response.headers()["x-hone-variant"].to_str().unwrap().to_owned();
            let entry = answered.entry(variant).or_default();
            if response.status() == 200 { entry.0 += 1 } else { entry.1 += 1 }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The canary sees drifted inputs (the variant header picks it).
    for i in 0..50 {
        let r = client
            .post(&url)
            .header("x-hone-variant", "canary")
            .json(&shifted_row(&references, i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(answered["stable"], (120, 0), "{answered:?}");
    assert_eq!(answered["canary"], (60, 0), "{answered:?}");
    assert_eq!(answered["down"], (0, 20), "{answered:?}");

    // Wait for a few scrapes that saw all of it, and for the rules to run.
    prometheus
        .wait_for("the router's counters scraped", "sum(hone_router_requests_total)", |r| {
            r.first().is_some_and(|s| value_of(s) >= 250.0)
        })
        .await;
    prometheus
        .wait_for("three scrapes of the router", "count_over_time(hone_router_requests_total[1m])", |r| {
            r.iter().all(|s| value_of(s) >= 3.0) && !r.is_empty()
        })
        .await;
    prometheus.wait_for("the recording rules", "hone:router_error_ratio:rate5m", |r| r.len() == 3).await;

    // Every rule: parses and evaluates; the inference ones return series
    // with the labels they group by.
    let mut checked_rules = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let result = prometheus.query(expr).await;
            checked_rules += 1;
            if let Some(record) = rule["record"].as_str()
                && !expr.contains("hone_operator_")
            {
                assert!(!result.is_empty(), "recording rule {record} returned nothing");
                for sample in &result {
                    for l in grouping_labels(expr) {
                        assert!(label(sample, &l).is_some(), "{record}: no {l} in {sample}");
                    }
                    assert_eq!(label(sample, "inferenceservice"), Some(ISVC), "{record}: {sample}");
                }
            }
        }
    }
    assert!(checked_rules >= 10, "{checked_rules} rules");
    let ratio = prometheus.query("hone:router_error_ratio:rate5m").await;
    for sample in &ratio {
        let want = if label(sample, "variant") == Some("down") { 1.0 } else { 0.0 };
        assert_eq!(value_of(sample), want, "{sample}");
    }

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

    // The error-rate SLO alert goes off for the dead variant only; the drift
    // alert for the canary's shifted feature.
    let alerts = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alerts = prometheus.get("/api/v1/alerts", &[]).await["alerts"].as_array().unwrap().clone();
            let has = |name: &str, variant: &str, feature: Option<&str>| {
                alerts.iter().any(|a| {
                    let labels = &a["labels"];
                    labels["alertname"] == name
                        && labels["variant"] == variant
                        && feature.is_none_or(|f| labels["feature"] == f)
                })
            };
            // Each feature's drift alert goes pending on its own evaluation:
            // wait for the ones asserted below, not just any of their kind.
            if has("HoneInferenceServiceErrorRate", "down", None)
                && has("HonePredictorInputDrift", "canary", Some("petal_length"))
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
    assert_eq!(errors[0]["variant"], "down");
    assert_eq!(errors[0]["inferenceservice"], ISVC);
    assert_eq!(errors[0]["namespace"], NAMESPACE);
    let drift = named("HonePredictorInputDrift");
    assert!(drift.iter().any(|a| a["variant"] == "canary" && a["feature"] == "petal_length"), "{drift:?}");
    let mut psi = BTreeMap::new();
    for variant in ["stable", "canary"] {
        let expr = format!(r#"hone_predictor_drift_psi{{variant="{variant}", feature="petal_length"}}"#);
        psi.insert(variant, value_of(&prometheus.query(&expr).await[0]));
    }
    let (calm, shifted) = (psi["stable"], psi["canary"]);
    assert!(shifted > 1.0 && calm < shifted / 4.0, "petal_length PSI: stable {calm}, canary {shifted}");
    assert!(named("HoneInferenceServiceLatencyP99").is_empty(), "loopback is faster than the SLO");

    // The dashboard: template variables, then every panel query.
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
            if expr.contains("hone_operator_") {
                continue; // no operator here: it must only parse and evaluate
            }
            assert!(!result.is_empty(), "panel {title:?} shows nothing: {expr}");
            for sample in &result {
                for l in grouping_labels(&expr) {
                    assert!(label(sample, &l).is_some(), "panel {title:?}: no {l} in {sample}");
                }
                assert_eq!(label(sample, "inferenceservice"), Some(ISVC), "panel {title:?}: {sample}");
                let variant = label(sample, "variant").unwrap_or_else(|| panic!("{title:?}: {sample}"));
                assert!(WEIGHTS.iter().any(|(v, _)| *v == variant), "panel {title:?}: {sample}");
            }
            if expr.contains("hone_router_variant_weight") {
                let shown: BTreeMap<&str, f64> =
                    result.iter().map(|s| (label(s, "variant").unwrap(), value_of(s))).collect();
                let want: BTreeMap<&str, f64> = WEIGHTS.iter().map(|(v, w)| (*v, f64::from(*w))).collect();
                assert_eq!(shown, want, "traffic weight panel");
            }
            if expr.contains("hone_router_requests_total") && !expr.contains("5xx") {
                let variants: BTreeSet<&str> = result.iter().filter_map(|s| label(s, "variant")).collect();
                assert!(
                    variants.contains("stable") && variants.contains("canary"),
                    "{title:?}: {variants:?}"
                );
            }
            if expr.contains("hone_predictor_batch_size_sum") {
                assert!(result.iter().all(|s| value_of(s) >= 1.0), "mean batch size: {result:?}");
                let versions: BTreeSet<&str> = result.iter().filter_map(|s| label(s, "version")).collect();
                assert_eq!(versions.len(), 2, "one series per version: {result:?}");
            }
        }
    }
    assert!(exprs >= 20, "{exprs} dashboard queries");
}

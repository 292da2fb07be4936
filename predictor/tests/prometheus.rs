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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

/// The `mlp` test model's card (model.json).
fn mlp_card() -> Value {
    let path = Path::new(&common::model("mlp")).join("model.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The training distribution of each feature of a tabular model
/// (`trainingStats.features[].reference` in its card: sorted quantiles).
fn training_references(card: &Value) -> Vec<Vec<f64>> {
    card["trainingStats"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reference"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect()
}

/// The class names of a model (`signature.classes` in its card).
fn class_names(card: &Value) -> Vec<String> {
    card["signature"]["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect()
}

/// The canary's model: the `mlp` network, copied into `dir` with a card
/// that drops its input standardization, as if trained on unscaled data. It
/// answers some inputs as the stable does and others not, so the shadow
/// agreement, the prediction PSI and the online accuracy have something to
/// measure.
fn unstandardized_mlp(dir: &Path) -> String {
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

/// The router's config: the three backends, every request of the stable
/// mirrored to its canary, and a key to sign answer ids for feedback.
fn router_config(urls: [&str; 3]) -> Value {
    let variants: Vec<Value> = WEIGHTS
        .iter()
        .zip(urls)
        .map(|((name, weight), url)| {
            // Named variants with traffic, which the operator marks
            // pinnable; the canary too, as with spec.routing.allowCanaryPinning
            // (the drifted inputs are sent to it by name).
            let mut variant = json!({"name": name, "url": url, "weight": weight, "pinnable": true});
            if *name == CANARY {
                variant["canaryOf"] = json!(STABLE);
            }
            variant
        })
        .collect();
    json!({
        "variants": variants,
        "mirrors": [{"source": STABLE, "target": CANARY, "percent": 100}],
        "feedbackKey": FEEDBACK_KEY,
    })
}

/// Prometheus's config: scrapes every second with the target labels the
/// chart's PodMonitors give, and the rule file in `dir`.
fn prometheus_config(dir: &Path, stable: &str, canary: &str, router_admin: &str) -> Value {
    let target = |url: &str, pod: &str, variant: Option<&str>| {
        let mut labels = json!({"namespace": NAMESPACE, "pod": pod, "inferenceservice": ISVC});
        if let Some(v) = variant {
            labels["variant"] = json!(v);
        }
        json!({"targets": [url.trim_start_matches("http://")], "labels": labels})
    };
    json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [dir.join("hone.rules.yaml")],
        "scrape_configs": [
            // A predictor's `variant` is its pods' hone.dev/variant: the name
            // of the variant it serves a version of, the canary's pods too.
            {"job_name": "predictors", "static_configs": [
                target(stable, "digits-stable-v1-7d9f", Some(STABLE)),
                target(canary, "digits-stable-v2-5c8b", Some(STABLE)),
            ]},
            // The router's metrics are on its admin port (as the chart's
            // PodMonitor scrapes them); its series carry their own `variant`.
            {"job_name": "routers", "static_configs": [target(router_admin, "digits-router-6f4d", None)]},
        ],
    })
}

/// The sum of the samples of `series` (a metric name and the start of its
/// labels) in a /metrics text.
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What a client got through the router.
struct Answer {
    /// The backend that answered (`x-hone-variant`).
    variant: String,
    status: u16,
    /// The router's signed `x-request-id` and the top-1 label of a 2xx answer.
    labelled: Option<(String, String)>,
}

/// The canary's shadow comparisons, as the router counts them.
#[derive(Clone, Copy, Debug)]
struct Compared {
    agreements: f64,
    samples: f64,
}

/// The requests sent through the router.
struct Traffic {
    answers: Vec<Answer>,
    /// The comparisons when Prometheus first scraped them (after the first
    /// round) and at the end.
    compared_first: Compared,
    compared_last: Compared,
}

/// What the quality rules recorded for the canary.
struct Quality {
    agreement: f64,
    psi: f64,
}

/// The servers on loopback and the Prometheus that scrapes them.
struct Stack {
    /// The stable's and the canary's predictors, kept running.
    _predictors: [common::Server; 2],
    router: common::RouterUrls,
    prometheus: Prometheus,
    client: reqwest::Client,
}

impl Stack {
    /// Starts the predictors, the router and Prometheus (their files in
    /// `dir`), and waits for a first scrape of every target: counters must
    /// be seen before the traffic for rate() to see them rise.
    async fn start(bin: &Path, dir: &Path) -> Self {
        // One predictor per backend (different versions) and a router.
        let batching = ["--drift-window", "50", "--max-batch-size", "8", "--max-latency-ms", "2"];
        let stable =
            common::start(common::args("mlp", &[&batching[..], &["--model-version", "1"]].concat())).await;
        let canary_args = [&batching[..], &["--model-version", "2"]].concat();
        let canary = common::start(common::args_at(&unstandardized_mlp(dir), "mlp", &canary_args)).await;
        let dead = format!("http://127.0.0.1:{}", free_port());
        let config = dir.join("router.yaml");
        let router_config = router_config([&stable.base, &canary.base, &dead]);
        std::fs::write(&config, serde_yaml::to_string(&router_config).unwrap()).unwrap();
        let router = common::start_router(&config, &[]).await;

        let scrapes = prometheus_config(dir, &stable.base, &canary.base, &router.admin);
        std::fs::write(dir.join("prometheus.yml"), serde_yaml::to_string(&scrapes).unwrap()).unwrap();
        let prometheus = Prometheus::start(bin, dir).await;
        prometheus
            .wait_for(
                "a first scrape of every target",
                "up == 1 and on (pod) hone_predictor_model_loaded or up == 1 and on (pod) hone_router_variant_weight",
                |r| r.len() == 3,
            )
            .await;
        Self { _predictors: [stable, canary], router, prometheus, client: reqwest::Client::new() }
    }

    /// POSTs `row` to the router's /predict, pinned to `pin` if any.
    async fn predict(&self, row: &Value, pin: Option<&str>) -> Answer {
        let mut request = self.client.post(format!("{}/predict", self.router)).json(row);
        if let Some(variant) = pin {
            request = request.header("x-hone-variant", variant);
        }
        let response = request.send().await.unwrap();
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let variant = header("x-hone-variant").unwrap();
        let request_id = header("x-request-id");
        let status = response.status().as_u16();
        let labelled = if status == 200 {
            let body: Value = response.json().await.unwrap();
            let id = request_id.expect("a signed x-request-id on every 2xx answer");
            Some((id, body["label"].as_str().unwrap().to_owned()))
        } else {
            None
        };
        Answer { variant, status, labelled }
    }

    /// Sends calm traffic in rounds of [`ROUND`] requests at once (so batches
    /// form), then drifted inputs to the canary.
    async fn send_traffic(&self, references: &[Vec<f64>]) -> Traffic {
        let mirrored =
            |answers: &[Answer]| answers.iter().filter(|a| a.variant == STABLE && a.status == 200).count();
        // The first round alone: the comparison counters it creates must be
        // scraped before the rest, as rate() counts only what a series
        // gained after its first scrape.
        let mut answers = self.calm_round(references, 0).await;
        let compared_first = self.compared_once_mirrored(mirrored(&answers)).await;
        for round in 1..ROUNDS {
            tokio::time::sleep(Duration::from_millis(100)).await;
            answers.extend(self.calm_round(references, round).await);
        }
        let compared_last = self.compared_once_mirrored(mirrored(&answers)).await;
        for (variant, weight) in WEIGHTS {
            let of =
                |ok: bool| answers.iter().filter(|a| a.variant == variant && (a.status == 200) == ok).count();
            let expected = ROUNDS * ROUND * weight as usize / 100;
            let want = if variant == DOWN { (0, expected) } else { (expected, 0) };
            assert_eq!((of(true), of(false)), want, "{variant}: answered (2xx, other)");
        }
        // The canary's last inputs drift (the variant header picks it); its
        // mirrored copies are all answered by now, so these fill its window.
        for i in 0..DRIFTED {
            let answer = self.predict(&shifted_row(references, i), Some(CANARY)).await;
            assert_eq!((answer.variant.as_str(), answer.status), (CANARY, 200));
            answers.push(answer);
        }
        Traffic { answers, compared_first, compared_last }
    }

    /// [`ROUND`] calm rows at once, unpinned.
    async fn calm_round(&self, references: &[Vec<f64>], round: usize) -> Vec<Answer> {
        let rows: Vec<Value> = (0..ROUND).map(|i| calm_row(references, round * ROUND + i)).collect();
        futures::future::join_all(rows.iter().map(|row| self.predict(row, None))).await
    }

    /// The router's /metrics.
    async fn router_metrics(&self) -> String {
        let r = self.client.get(format!("{}/metrics", self.router.admin)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// Waits until the copies of `mirrored` requests are all compared (each
    /// in its own task, after the client's answer) and Prometheus scraped
    /// the counts; returns them.
    async fn compared_once_mirrored(&self, mirrored: usize) -> Compared {
        let copies = format!(r#"hone_router_shadow_requests_total{{variant="{CANARY}""#);
        let deadline = Instant::now() + Duration::from_secs(20);
        let metrics = loop {
            let metrics = self.router_metrics().await;
            if counter(&metrics, &copies) >= mirrored as f64 {
                break metrics;
            }
            assert!(Instant::now() < deadline, "{mirrored} copies not done within 20 s:\n{metrics}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let compared =
            format!(r#"hone_router_shadow_requests_total{{variant="{CANARY}",outcome="compared"}}"#);
        assert_eq!(counter(&metrics, &compared), mirrored as f64, "every copy compared:\n{metrics}");
        let of = |series: &str| counter(&metrics, &format!(r#"{series}{{variant="{CANARY}"}}"#));
        let counts = Compared {
            agreements: of("hone_router_shadow_agreements_total"),
            samples: of("hone_router_shadow_samples_total"),
        };
        for (series, count) in [
            ("hone_router_shadow_agreements_total", counts.agreements),
            ("hone_router_shadow_samples_total", counts.samples),
        ] {
            let expr = format!(r#"{series}{{variant="{CANARY}"}}"#);
            self.prometheus
                .wait_for("the comparisons scraped", &expr, |r| r.len() == 1 && value_of(&r[0]) == count)
                .await;
        }
        counts
    }

    /// Sends labels for answers of the stable and the canary ([`FEEDBACK`])
    /// in two POST /feedback: a tenth of each first and, once Prometheus
    /// scraped the series those created, the rest. Both parts have the same
    /// share of correct labels, so the accuracy of what Prometheus saw rise
    /// is the accuracy sent. Refused items come along in both.
    async fn send_feedback(&self, answers: &[Answer], classes: &[String]) {
        let (mut first, mut rest) = (Vec::new(), Vec::new());
        for (variant, correct, incorrect) in FEEDBACK {
            let (f, r) = feedback_items(answers, variant, correct, incorrect, classes);
            first.extend(f);
            rest.extend(r);
        }
        let accepted = first.len();
        first.push(json!({"requestId": "not-an-id-the-router-signed", "label": classes[0]}));
        let answer = self.post_feedback(&first).await;
        assert_eq!(answer["accepted"], accepted, "{answer}");
        assert_eq!(rejected_reasons(&answer), ["bad_id"], "{answer}");
        self.prometheus
            .wait_for("the first feedback scraped", "hone_router_feedback_total", |r| {
                r.len() == 4 && r.iter().map(value_of).sum::<f64>() == accepted as f64
            })
            .await;
        let accepted = rest.len();
        rest.push(first[0].clone());
        let answer = self.post_feedback(&rest).await;
        assert_eq!(answer["accepted"], accepted, "{answer}");
        assert_eq!(rejected_reasons(&answer), ["replayed"], "{answer}");
    }

    /// POSTs `items` to the router's /feedback; the 200 answer.
    async fn post_feedback(&self, items: &[Value]) -> Value {
        let url = format!("{}/feedback", self.router);
        let r = self.client.post(url).json(&json!({"feedback": items})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

/// Feedback for the first `correct + incorrect` labelled answers of
/// `variant`: `correct` of them labelled with the answered class, the others
/// with another class; split into a tenth of each and the rest.
fn feedback_items(
    answers: &[Answer],
    variant: &str,
    correct: usize,
    incorrect: usize,
    classes: &[String],
) -> (Vec<Value>, Vec<Value>) {
    let mut labelled = answers.iter().filter(|a| a.variant == variant).filter_map(|a| a.labelled.as_ref());
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for (count, right) in [(correct, true), (incorrect, false)] {
        for i in 0..count {
            let (id, answered) = labelled.next().unwrap_or_else(|| panic!("too few answers of {variant}"));
            let label = if right { answered } else { classes.iter().find(|c| *c != answered).unwrap() };
            let item = json!({"requestId": id, "label": label});
            if i < count / 10 { first.push(item) } else { rest.push(item) }
        }
    }
    (first, rest)
}

/// The reasons of the refused items of a /feedback answer.
fn rejected_reasons(answer: &Value) -> Vec<&str> {
    answer["rejected"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap()).collect()
}

/// The quality rules' values for the canary pair, against what was sent
/// and what the router counted.
async fn check_quality(prometheus: &Prometheus, traffic: &Traffic) -> Quality {
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
async fn check_rules(prometheus: &Prometheus, rules: &serde_yaml::Value) -> usize {
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
async fn check_quality_minimums(prometheus: &Prometheus, rules: &serde_yaml::Value) {
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
async fn check_alerts(prometheus: &Prometheus, thresholds: &serde_yaml::Value, quality: &Quality) {
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

/// The dashboard: template variables, then every panel query.
async fn check_dashboard(prometheus: &Prometheus, dashboard: &Value) {
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

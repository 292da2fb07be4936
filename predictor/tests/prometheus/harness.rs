//! Prometheus on loopback: its scrape config, the process, and queries
//! through its HTTP API.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{ISVC, NAMESPACE, STABLE};

/// A free loopback port (released again for Prometheus to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Prometheus's config: scrapes every second with the target labels the
/// chart's PodMonitors give, and the rule file in `dir`.
pub fn prometheus_config(dir: &Path, stable: &str, canary: &str, router_admin: &str) -> Value {
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

/// A Prometheus process, stopped on drop, and a client of its HTTP API.
pub struct Prometheus {
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
    pub async fn start(bin: &Path, dir: &Path) -> Self {
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

    /// A GET of the HTTP API; returns `data` of a successful answer.
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let body: Value = self.client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        body["data"].clone()
    }

    /// An instant query; returns the result vector (the query must parse and evaluate).
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await;
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().unwrap().clone(),
            Some("scalar") => vec![json!({"metric": {}, "value": data["result"]})],
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }

    pub async fn wait_for(&self, what: &str, expr: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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

/// The value of an instant-query sample.
pub fn value_of(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// A label of a sample, if it has it.
pub fn label<'a>(sample: &'a Value, name: &str) -> Option<&'a str> {
    sample["metric"][name].as_str()
}

/// Labels listed in every `by (...)` of an expression: what each result
/// series must carry (`le` is consumed by histogram_quantile).
pub fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for (i, _) in expr.match_indices("by (") {
        let list = &expr[i + 4..];
        let end = list.find(')').unwrap();
        labels.extend(list[..end].split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
    }
    labels.remove("le");
    labels
}

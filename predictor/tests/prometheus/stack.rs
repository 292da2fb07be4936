//! The servers on loopback (two predictors behind a router, scraped by
//! Prometheus) and the traffic sent through them.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::harness::{Prometheus, free_port, prometheus_config, value_of};
use crate::inputs::{calm_row, shifted_row, unstandardized_mlp};
use crate::{CANARY, DOWN, DRIFTED, FEEDBACK_KEY, ROUND, ROUNDS, STABLE, WEIGHTS};

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
pub struct Answer {
    /// The backend that answered (`x-hone-variant`).
    pub variant: String,
    pub status: u16,
    /// The router's signed `x-request-id` and the top-1 label of a 2xx answer.
    pub labelled: Option<(String, String)>,
}

/// The canary's shadow comparisons, as the router counts them.
#[derive(Clone, Copy, Debug)]
pub struct Compared {
    pub agreements: f64,
    pub samples: f64,
}

/// The requests sent through the router.
pub struct Traffic {
    pub answers: Vec<Answer>,
    /// The comparisons when Prometheus first scraped them (after the first
    /// round) and at the end.
    pub compared_first: Compared,
    pub compared_last: Compared,
}

/// The servers on loopback and the Prometheus that scrapes them.
pub struct Stack {
    /// The stable's and the canary's predictors, kept running.
    _predictors: [common::Server; 2],
    pub router: common::RouterUrls,
    pub prometheus: Prometheus,
    pub client: reqwest::Client,
}

impl Stack {
    /// Starts the predictors, the router and Prometheus (their files in
    /// `dir`), and waits for a first scrape of every target: counters must
    /// be seen before the traffic for rate() to see them rise.
    pub async fn start(bin: &Path, dir: &Path) -> Self {
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
    pub async fn send_traffic(&self, references: &[Vec<f64>]) -> Traffic {
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
}

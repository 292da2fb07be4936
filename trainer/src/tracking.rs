//! Experiment tracking. The run reports to a [`Tracker`]; MLflow is the one
//! real backend (its REST API), and tracking failures never fail training.

use std::collections::BTreeMap;

use hone_crds::contract::EpochMetrics;

use hone_storage::Location;

/// What a run reports when it starts: its parameters (name, value) and
/// its output location.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStart {
    /// Hyperparameters, architecture and the data it trains on.
    pub params: Vec<(String, String)>,
    /// The run's output location.
    pub output: String,
}

/// Receives a run's parameters, per-epoch metrics and final results.
pub trait Tracker: Send {
    /// The run starts (or resumes).
    fn start(&mut self, run: &RunStart);
    /// An epoch finished.
    fn epoch(&mut self, metrics: &EpochMetrics);
    /// The run finished; `out` holds the output files. Returns the tracking
    /// backend's run id, when it has one.
    fn finish(&mut self, metrics: &BTreeMap<String, f64>, out: &Location) -> Option<String>;
}

/// Tracks nothing.
pub struct NoTracking;

impl Tracker for NoTracking {
    fn start(&mut self, _: &RunStart) {}
    fn epoch(&mut self, _: &EpochMetrics) {}
    fn finish(&mut self, _: &BTreeMap<String, f64>, _: &Location) -> Option<String> {
        None
    }
}

/// Messages from the training loop to the MLflow worker thread.
enum Msg {
    Start { params: Vec<(String, String)>, out: String },
    Epoch(EpochMetrics),
    Finish { metrics: BTreeMap<String, f64>, out: String },
}

/// Logs to an MLflow tracking server over its REST API, from a worker
/// thread so a slow or absent server never slows training. A resumed run
/// continues the same MLflow run (its id is kept in `<output>/mlflow-run.json`).
pub struct MlflowTracker {
    tx: Option<std::sync::mpsc::Sender<Msg>>,
    worker: Option<std::thread::JoinHandle<Option<String>>>,
}

impl MlflowTracker {
    /// A tracker for `uri`, experiment `experiment`, run `run_name`.
    pub fn new(uri: &str, experiment: &str, run_name: &str) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let client = MlflowClient {
            http: reqwest::Client::new(),
            base: uri.trim_end_matches('/').to_owned(),
            experiment: experiment.to_owned(),
            run_name: run_name.to_owned(),
            run: None,
        };
        let worker = std::thread::Builder::new().name("mlflow".into()).spawn(move || client.serve(rx)).ok();
        Self { tx: Some(tx), worker }
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }
}

impl Tracker for MlflowTracker {
    fn start(&mut self, run: &RunStart) {
        self.send(Msg::Start { params: run.params.clone(), out: run.output.clone() });
    }

    fn epoch(&mut self, metrics: &EpochMetrics) {
        self.send(Msg::Epoch(metrics.clone()));
    }

    fn finish(&mut self, metrics: &BTreeMap<String, f64>, out: &Location) -> Option<String> {
        self.send(Msg::Finish { metrics: metrics.clone(), out: out.uri().to_owned() });
        // Closing the channel lets the worker drain and stop; wait for the artifacts.
        self.tx = None;
        self.worker.take().and_then(|worker| worker.join().ok().flatten())
    }
}

/// The MLflow run being logged to.
struct MlflowRun {
    run_id: String,
    artifact_uri: String,
}

struct MlflowClient {
    http: reqwest::Client,
    base: String,
    experiment: String,
    run_name: String,
    run: Option<MlflowRun>,
}

const RUN_FILE: &str = "mlflow-run.json";

impl MlflowClient {
    /// Handles messages until the channel closes; returns the run's id.
    fn serve(mut self, rx: std::sync::mpsc::Receiver<Msg>) -> Option<String> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        while let Ok(msg) = rx.recv() {
            let result = rt.block_on(self.handle(msg));
            if let Err(e) = result {
                crate::log::event("warn", "mlflow_failed", serde_json::json!({"error": e}));
            }
        }
        self.run.map(|run| run.run_id).filter(|id| !id.is_empty())
    }

    async fn api(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let resp = self.http.post(&url).json(&body).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let value: serde_json::Value = resp.json().await.unwrap_or_default();
        if status.is_success() { Ok(value) } else { Err(format!("{url}: {status} {value}")) }
    }

    async fn experiment_id(&self) -> Result<String, String> {
        let base = format!("{}/api/2.0/mlflow/experiments/get-by-name", self.base);
        let url = url::Url::parse_with_params(&base, [("experiment_name", &self.experiment)])
            .map_err(|e| format!("{base}: {e}"))?;
        let resp = self.http.get(url.clone()).send().await.map_err(|e| format!("{url}: {e}"))?;
        if resp.status().is_success() {
            let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
            return v["experiment"]["experiment_id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{url}: no id in {v}"));
        }
        let v = self.api("experiments/create", serde_json::json!({"name": self.experiment})).await?;
        v["experiment_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("experiments/create: no id in {v}"))
    }

    async fn handle(&mut self, msg: Msg) -> Result<(), String> {
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        match msg {
            Msg::Start { params, out } => {
                let run_file = Location::parse(&out).map_err(|e| e.to_string())?.join(RUN_FILE);
                let saved: Option<serde_json::Value> =
                    run_file.read().await.ok().and_then(|b| serde_json::from_slice(&b).ok());
                if let Some(saved) = saved
                    && let (Some(id), Some(uri)) = (saved["runId"].as_str(), saved["artifactUri"].as_str())
                {
                    self.run = Some(MlflowRun { run_id: id.to_owned(), artifact_uri: uri.to_owned() });
                    return Ok(()); // params were logged when the run began
                }
                let experiment_id = self.experiment_id().await?;
                let v = self
                    .api("runs/create", serde_json::json!({"experiment_id": experiment_id, "run_name": self.run_name, "start_time": now()}))
                    .await?;
                let info = &v["run"]["info"];
                let run = MlflowRun {
                    run_id: info["run_id"].as_str().unwrap_or_default().to_owned(),
                    artifact_uri: info["artifact_uri"].as_str().unwrap_or_default().to_owned(),
                };
                let record = serde_json::json!({"runId": run.run_id, "artifactUri": run.artifact_uri});
                run_file.write(record.to_string()).await.map_err(|e| e.to_string())?;
                let params: Vec<_> =
                    params.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v})).collect();
                self.api("runs/log-batch", serde_json::json!({"run_id": run.run_id, "params": params}))
                    .await?;
                self.run = Some(run);
                Ok(())
            }
            Msg::Epoch(m) => {
                let Some(run) = &self.run else { return Ok(()) };
                let ts = now();
                let metrics: Vec<_> = [
                    ("train_loss", m.train_loss),
                    ("train_accuracy", m.train_accuracy),
                    ("val_loss", m.val_loss),
                    ("val_accuracy", m.val_accuracy),
                    ("learning_rate", m.learning_rate),
                    ("samples_per_second", m.samples_per_second),
                ]
                .iter()
                // A regression run has no accuracy (NaN), and MLflow takes numbers only.
                .filter(|(_, v)| v.is_finite())
                .map(|(k, v)| serde_json::json!({"key": k, "value": v, "timestamp": ts, "step": m.epoch}))
                .collect();
                self.api("runs/log-batch", serde_json::json!({"run_id": run.run_id, "metrics": metrics}))
                    .await?;
                Ok(())
            }
            Msg::Finish { metrics, out } => {
                let Some(run) = &self.run else { return Ok(()) };
                let ts = now();
                let final_metrics: Vec<_> = metrics
                    .iter()
                    .map(|(k, v)| serde_json::json!({"key": format!("final_{k}"), "value": v, "timestamp": ts, "step": 0}))
                    .collect();
                self.api(
                    "runs/log-batch",
                    serde_json::json!({"run_id": run.run_id, "metrics": final_metrics}),
                )
                .await?;
                let out = Location::parse(&out).map_err(|e| e.to_string())?;
                // Artifacts go through the tracking server's artifact proxy.
                let base = run
                    .artifact_uri
                    .strip_prefix("mlflow-artifacts:")
                    .unwrap_or(&run.artifact_uri)
                    .trim_start_matches('/');
                for name in [
                    hone_crds::contract::MODEL_FILE,
                    hone_crds::contract::MODEL_CARD_FILE,
                    hone_crds::contract::METRICS_FILE,
                    hone_crds::contract::REPORT_FILE,
                ] {
                    let Ok(bytes) = out.join(name).read().await else { continue };
                    let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{base}/{name}", self.base);
                    let resp =
                        self.http.put(&url).body(bytes).send().await.map_err(|e| format!("{url}: {e}"))?;
                    if !resp.status().is_success() {
                        return Err(format!("{url}: {}", resp.status()));
                    }
                }
                self.api(
                    "runs/update",
                    serde_json::json!({"run_id": run.run_id, "status": "FINISHED", "end_time": ts}),
                )
                .await?;
                Ok(())
            }
        }
    }
}

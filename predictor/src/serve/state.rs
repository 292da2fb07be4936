//! What every handler shares: the model's card, the batcher once loaded,
//! readiness, limits, metrics and the drift monitor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hone_crds::contract::ModelCard;
use hone_crds::modelversion::Task;
use prometheus_client::registry::Registry;
use tch::Device;
use tokio::sync::oneshot;

use super::admission::{BodyBudget, DecodePool};
use super::auth::Auth;
use super::body::BodyLimits;
use crate::batcher::{ArrivalGuard, BatchConfig, Batcher, Fault, Job, SubmitError};
use crate::config::ServeArgs;
use crate::drift::DriftMonitor;
use crate::error::ApiError;
use crate::head::{Decision, Head};
use crate::metrics::{ClassLabels, MAX_CLASS_LABELS, Metrics, OutputLabels};
use crate::model::{LoadError, ModelFiles};
use crate::preprocess::Preprocessor;
use crate::runtime::{self, RuntimeConfig};

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bodies of images, multipart and OIP requests.
    pub body: BodyLimits,
    /// JSON bodies of `/predict` and `/predict/batch`.
    pub json_body: BodyLimits,
    /// Longest wait for inference.
    pub request_timeout: Duration,
    /// Most items per `/predict/batch` call and samples per OIP tensor.
    pub max_batch_items: usize,
}

/// Whether the inference thread can still answer: shared with the thread's
/// exit hook, which has no reference to the whole state.
#[derive(Debug, Default)]
pub struct Health {
    failure: OnceLock<String>,
    failed: tokio::sync::Notify,
}

impl Health {
    /// Records that the inference thread died of `reason`; live turns false.
    pub fn fail(&self, reason: String) {
        tracing::error!(%reason, "the inference thread died; failing health checks and exiting");
        let _ = self.failure.set(reason);
        self.failed.notify_waiters();
        self.failed.notify_one();
    }

    /// Why the inference thread died, once it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Resolves once the inference thread has died.
    pub async fn failed(&self) {
        if self.failure.get().is_none() {
            self.failed.notified().await;
        }
    }
}

/// One prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The answered class, for every task but `regression`.
    pub decision: Option<Decision>,
    /// The head's scores: a probability per class (binary: both classes),
    /// or the regression outputs.
    pub scores: Vec<f32>,
}

/// Shared server state.
pub struct AppState {
    /// Model name in paths and metrics.
    pub name: String,
    /// Model version.
    pub version: String,
    /// `sha256:` of model.pt.
    pub digest: String,
    /// The model card.
    pub card: ModelCard,
    /// What the model's outputs mean.
    pub head: Head,
    /// Raw input to model input.
    pub preprocessor: Preprocessor,
    /// Limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Metrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Input drift.
    pub drift: DriftMonitor,
    /// API keys, when required.
    pub auth: Option<Auth>,
    /// Request bodies held in memory, all requests together.
    pub body_budget: BodyBudget,
    /// Where bodies are decoded.
    pub decode: DecodePool,
    /// Whether the inference thread lives.
    pub health: Arc<Health>,
    batch_config: BatchConfig,
    batcher: OnceLock<Batcher>,
    inference_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    ready: AtomicBool,
    stopping: AtomicBool,
}

impl AppState {
    /// State for a fetched, digest-checked model (not yet loaded).
    pub fn new(
        args: &ServeArgs,
        files: &ModelFiles,
        version: String,
        metrics: Metrics,
        registry: Registry,
        auth: Option<Auth>,
    ) -> Self {
        let card = files.card.clone();
        let reference = card.training_stats.as_ref().map(|s| s.features.clone()).unwrap_or_default();
        let body_timeout = Duration::from_millis(args.body_read_timeout_ms);
        Self {
            name: args.model_name.clone(),
            version,
            digest: files.digest.clone(),
            preprocessor: Preprocessor::new(&card, args.max_image_dimension, args.max_image_pixels),
            limits: Limits {
                body: BodyLimits { max_bytes: args.max_body_bytes, timeout: body_timeout },
                json_body: BodyLimits {
                    max_bytes: args.max_json_bytes.min(args.max_body_bytes),
                    timeout: body_timeout,
                },
                request_timeout: Duration::from_millis(args.request_timeout_ms),
                max_batch_items: args.max_batch_items as usize,
            },
            body_budget: BodyBudget::new(args.max_inflight_body_bytes),
            decode: DecodePool::new(args.decode_threads, args.decode_queue),
            health: Arc::new(Health::default()),
            drift: DriftMonitor::new(args.drift_window, reference),
            batch_config: BatchConfig {
                max_batch_size: args.max_batch_size as usize,
                max_latency: Duration::from_millis(args.max_latency_ms),
                queue_capacity: args.queue_capacity as usize,
                sample_shape: card.signature.input_shape.clone(),
                outputs_per_sample: card.signature.output_width(),
                device: Device::Cpu,
                fault: args.fault_injection.as_deref().and_then(|f| Fault::parse(f).ok()),
            },
            head: Head::new(&card.signature),
            card,
            metrics,
            registry,
            auth,
            batcher: OnceLock::new(),
            inference_thread: Mutex::new(None),
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// Loads the model, warms it up (one sample, then a full batch), starts
    /// the inference thread and turns ready. Blocking: run off the async workers.
    pub fn load(&self, module_bytes: &[u8], runtime: &RuntimeConfig) -> Result<(), LoadError> {
        let started = Instant::now();
        let device = runtime.device;
        let mut module = runtime::load_model(module_bytes, &self.card, runtime)?;
        runtime::forward_zeros(&mut module, &self.card, 1, device)?;
        runtime::forward_zeros(&mut module, &self.card, self.batch_config.max_batch_size as i64, device)?;
        let config = BatchConfig { device, ..self.batch_config.clone() };
        let health = self.health.clone();
        let on_exit = move |failure: Option<String>| {
            if let Some(reason) = failure {
                health.fail(reason);
            }
        };
        let (batcher, thread) = Batcher::start(module, config, self.metrics.clone(), on_exit)
            .map_err(|e| LoadError::WarmUp(format!("starting the inference thread: {e}")))?;
        // `load` runs once per process, so the cell is always empty here.
        let _ = self.batcher.set(batcher);
        *self.inference_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        if !self.stopping.load(Ordering::Acquire) {
            self.ready.store(true, Ordering::Release);
            self.metrics.model_loaded.set(1);
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            ?device,
            format = %runtime.format,
            "model loaded and warmed up; ready"
        );
        Ok(())
    }

    /// Whether the model is loaded, warmed up, can answer and is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.is_live()
    }

    /// Whether the process can still serve: false once the inference thread died.
    pub fn is_live(&self) -> bool {
        self.health.failure().is_none()
    }

    /// Stops reporting ready (shutdown has begun); in-flight requests still finish.
    pub fn stop_ready(&self) {
        self.stopping.store(true, Ordering::Release);
        self.ready.store(false, Ordering::Release);
        self.metrics.model_loaded.set(0);
    }

    /// Called after the server stopped: nothing more will be submitted.
    pub fn close(&self) {
        self.stop_ready();
        // The thread ends once the last Batcher clone is gone with this state.
        let _ = self.inference_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// 404 unless `name` (and `version`, when given) is the served model.
    pub fn check_model(&self, name: &str, version: Option<&str>) -> Result<(), ApiError> {
        if name != self.name || version.is_some_and(|v| v != self.version) {
            let shown = match version {
                Some(v) => format!("{name}/{v}"),
                None => name.to_owned(),
            };
            return Err(ApiError::ModelNotFound(shown));
        }
        Ok(())
    }

    /// Marks a request as arriving for the batcher (503 before the model is loaded).
    pub fn arriving(&self) -> Result<ArrivalGuard, ApiError> {
        self.batcher.get().map(Batcher::arriving).ok_or(ApiError::NotReady)
    }

    /// Runs `samples` samples through the model and returns their outputs.
    pub async fn infer(
        &self,
        input: Vec<f32>,
        samples: usize,
        arrival: ArrivalGuard,
    ) -> Result<Vec<f32>, ApiError> {
        let batcher = self.batcher.get().ok_or(ApiError::NotReady)?;
        let timeout = self.limits.request_timeout;
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        let job = Job { input, samples, deadline, reply };
        let submitted = batcher.submit(job);
        drop(arrival);
        let stopped = || if self.is_live() { ApiError::NotReady } else { ApiError::InferenceUnavailable };
        match submitted {
            Ok(()) => {}
            Err(SubmitError::Full) => return Err(ApiError::Overloaded),
            Err(SubmitError::Closed) => return Err(stopped()),
        }
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(ApiError::Timeout(timeout.as_millis() as u64)),
            // The thread dropped the job: expired past its deadline, or the
            // thread died (which it may not have recorded yet: unwinding drops
            // the jobs before the exit hook runs).
            Ok(Err(_)) if Instant::now() >= deadline => Err(ApiError::Timeout(timeout.as_millis() as u64)),
            // Shutting down (SIGTERM) with the thread alive: not ready.
            // Shutdown that the thread's death began (its exit hook failed
            // health first, then the server stopped being ready) is the next arm.
            Ok(Err(_)) if self.stopping.load(Ordering::Acquire) && self.is_live() => Err(ApiError::NotReady),
            Ok(Err(_)) => {
                // Only a dying thread drops a job before its deadline. Liveness
                // fails now, before this 503 reaches the client, not when the
                // exit hook runs (which logs the panic's own reason too).
                if self.is_live() {
                    self.health.fail("it dropped a request before its deadline (unwinding)".to_owned());
                }
                Err(ApiError::InferenceUnavailable)
            }
            Ok(Ok(Err(message))) => Err(ApiError::Inference(message)),
            // Ready only after its deadline (the timer and the answer were
            // both due when this task ran): the promise is 504 past the timeout.
            Ok(Ok(Ok(_))) if Instant::now() > deadline => Err(ApiError::Timeout(timeout.as_millis() as u64)),
            Ok(Ok(Ok(output))) => Ok(output),
        }
    }

    /// The head's scores and answer for each output row; counts them in the metrics.
    pub fn predictions(&self, outputs: &[f32]) -> Vec<Prediction> {
        let scores = self.head.scores(outputs);
        scores
            .chunks(self.head.score_width().max(1))
            .map(|row| {
                let decision = self.head.decide(row);
                self.record_prediction(decision.as_ref(), row);
                Prediction { decision, scores: row.to_vec() }
            })
            .collect()
    }

    /// Counts a prediction: its answered classes (each positive class of a
    /// multilabel answer) and confidence, or a regression's values.
    fn record_prediction(&self, decision: Option<&Decision>, scores: &[f32]) {
        let classes = &self.card.signature.classes;
        let label = |i: usize| -> String {
            if classes.len() <= MAX_CLASS_LABELS {
                classes.get(i).cloned().unwrap_or_default()
            } else {
                "other".to_owned()
            }
        };
        let Some(decision) = decision else {
            for (i, value) in scores.iter().enumerate().take(MAX_CLASS_LABELS) {
                let output = if classes.is_empty() { "value".to_owned() } else { label(i) };
                self.metrics.outputs.get_or_create(&OutputLabels { output }).observe(f64::from(*value));
            }
            return;
        };
        if self.head.task() == Task::Multilabel {
            for &i in &decision.positives {
                self.metrics.predictions.get_or_create(&ClassLabels { class: label(i) }).inc();
            }
        } else {
            self.metrics.predictions.get_or_create(&ClassLabels { class: label(decision.class_index) }).inc();
        }
        self.metrics.confidence.observe(f64::from(decision.confidence));
    }

    /// Class name of an index.
    pub fn label(&self, index: usize) -> &str {
        self.card.signature.classes.get(index).map(String::as_str).unwrap_or("")
    }
}

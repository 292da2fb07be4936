//! Live training figures (`hone_trainer_*`) on `GET /metrics` while a run
//! trains (`--metrics-addr`, `HONE_METRICS_ADDR`): where it is (epoch, step
//! and their totals), how fast (samples/s), how well (loss, accuracy,
//! validation), the learning rate, and what share of each step waited for
//! data. Every rank serves its own; rank 0's are the run's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type FloatGauge = Gauge<f64, AtomicU64>;

/// The trainer's gauges and the registry `/metrics` renders.
pub struct TrainerMetrics {
    registry: Registry,
    /// Epochs completed.
    pub epoch: Gauge,
    /// Epochs planned.
    pub epochs: Gauge,
    /// Optimizer steps taken (this rank), over the whole run.
    pub step: Gauge,
    /// Optimizer steps planned.
    pub steps: Gauge,
    /// Training samples per second (this rank): the running epoch's rate.
    pub samples_per_second: FloatGauge,
    /// Loss of the last batch.
    pub loss: FloatGauge,
    /// Training accuracy of the last finished epoch.
    pub accuracy: FloatGauge,
    /// Validation loss of the last finished epoch.
    pub val_loss: FloatGauge,
    /// Validation accuracy of the last finished epoch.
    pub val_accuracy: FloatGauge,
    /// Learning rate of the last step.
    pub learning_rate: FloatGauge,
    /// Share of the running epoch's step time spent assembling batches.
    pub data_wait_ratio: FloatGauge,
}

impl std::fmt::Debug for TrainerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainerMetrics").finish_non_exhaustive()
    }
}

impl TrainerMetrics {
    /// The gauges, registered under `hone_trainer_`.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("hone_trainer");
        let mut int = |name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let (epoch, epochs) = (int("epoch", "Epochs completed"), int("epochs", "Epochs planned"));
        let step = int("step", "Optimizer steps taken by this rank");
        let steps = int("steps", "Optimizer steps planned for this rank");
        let mut float = |name: &str, help: &str| {
            let gauge = FloatGauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        Arc::new(Self {
            epoch,
            epochs,
            step,
            steps,
            samples_per_second: float(
                "samples_per_second",
                "Training samples per second of this rank in the running epoch",
            ),
            loss: float("loss", "Training loss of the last batch"),
            accuracy: float("accuracy", "Training accuracy of the last finished epoch"),
            val_loss: float("val_loss", "Validation loss of the last finished epoch"),
            val_accuracy: float("val_accuracy", "Validation accuracy of the last finished epoch"),
            learning_rate: float("learning_rate", "Learning rate of the last step"),
            data_wait_ratio: float(
                "data_wait_ratio",
                "Share of the running epoch's step time spent assembling batches",
            ),
            registry,
        })
    }

    /// The Prometheus text exposition of every gauge.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` of `metrics` on `addr` from a task of the current
/// runtime (its worker threads keep answering while the training loop holds
/// the caller's thread); returns the bound address.
pub async fn serve(addr: SocketAddr, metrics: Arc<TrainerMetrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            crate::log::event("warn", "metrics_server_failed", serde_json::json!({"error": e.to_string()}));
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gauge_renders_under_the_trainer_prefix() {
        let m = TrainerMetrics::new();
        m.epoch.set(3);
        m.data_wait_ratio.set(0.25);
        let text = m.render();
        assert!(text.contains("hone_trainer_epoch 3"), "{text}");
        assert!(text.contains("hone_trainer_data_wait_ratio 0.25"), "{text}");
        for name in [
            "epochs",
            "step",
            "steps",
            "samples_per_second",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate",
        ] {
            assert!(text.contains(&format!("# TYPE hone_trainer_{name} gauge")), "{name}: {text}");
        }
    }
}

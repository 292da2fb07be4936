//! Prometheus metrics (`hone_operator_*`), bounded labels only.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming one controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `dataset`, `trainingjob`, `modelversion` or `inferenceservice`.
    pub controller: &'static str,
}

/// Labels of a finished reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The controller.
    pub controller: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller.
    pub controller: &'static str,
    /// The error's `category()`.
    pub category: &'static str,
}

type DurationFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 5 ms .. ~40 s: a reconcile is a few API calls, a slow one waits on the apiserver.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The operator's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: DurationFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `hone_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hone_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register("reconciles", "Reconciles finished, by controller and result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            durations.clone(),
        );
        Self { registry, reconciles, errors, durations }
    }

    /// Starts timing a reconcile of `controller`.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer { metrics: self, controller, started: Instant::now() }
    }

    /// Counts a successful reconcile.
    pub fn record_success(&self, controller: &'static str) {
        self.reconciles.get_or_create(&ResultLabels { controller, result: "success" }).inc();
    }

    /// Counts a failed reconcile under its error category.
    pub fn record_error(&self, controller: &'static str, category: &'static str) {
        self.reconciles.get_or_create(&ResultLabels { controller, result: "error" }).inc();
        self.errors.get_or_create(&ErrorLabels { controller, category }).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Observes the reconcile duration when dropped, so every exit path counts.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&ControllerLabels { controller: self.controller })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_exported() {
        let metrics = Metrics::new();
        {
            let _timer = metrics.start("dataset");
            metrics.record_success("dataset");
        }
        metrics.record_error("dataset", "kube_api");
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"hone_operator_reconciles_total{controller="dataset",result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hone_operator_reconciles_total{controller="dataset",result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"hone_operator_reconcile_errors_total{controller="dataset",category="kube_api"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"hone_operator_reconcile_duration_seconds_count{controller="dataset"} 1"#),
            "{text}"
        );
    }
}

//! The predictor's Prometheus metrics (`hone_predictor_*`). Every series
//! carries the `model` and `version` labels of the served ModelVersion.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Most classes that get their own `class` label; the rest count as `other`,
/// so a 100,000-class model cannot blow up the series count.
pub const MAX_CLASS_LABELS: usize = 256;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Matched route template, e.g. `/v2/models/{name}/infer`.
    pub route: String,
    /// `2xx`, `4xx`, `5xx`.
    pub status_class: &'static str,
}

/// Labels of a per-route histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Matched route template.
    pub route: String,
}

/// Labels of the predictions counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// Class name (or `other` past [`MAX_CLASS_LABELS`]).
    pub class: String,
}

/// Labels of the regression output histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    /// Output name from the card (`value` when the outputs are unnamed).
    pub output: String,
}

/// Bucket bounds of a regression output: 0 and +-1e-3 .. +-1e6 by decades,
/// so one histogram fits outputs of any sign and common scale without the
/// card declaring a range.
pub fn output_buckets() -> Vec<f64> {
    let positive: Vec<f64> = (-3..=6).map(|e| 10f64.powi(e)).collect();
    let mut bounds: Vec<f64> = positive.iter().rev().map(|b| -b).collect();
    bounds.push(0.0);
    bounds.extend(positive);
    bounds
}

/// Labels of the drift gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    /// Feature name from the model card.
    pub feature: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the predictor exports.
#[derive(Clone)]
pub struct Metrics {
    /// Requests by route and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration by route.
    pub request_duration: Family<RouteLabels, Histogram>,
    /// Duration of one batched forward pass.
    pub inference_duration: Histogram,
    /// Samples per forward pass.
    pub batch_size: Histogram,
    /// Requests waiting for the inference thread.
    pub queue_depth: Gauge,
    /// Batched forward passes that failed and were retried one request at a time.
    pub batch_splits: Counter,
    /// Predictions by answered class (multilabel: each class answered).
    pub predictions: Family<ClassLabels, Counter>,
    /// Confidence (the answered class's probability) of each prediction.
    pub confidence: Histogram,
    /// Each output of a regression model's predictions.
    pub outputs: Family<OutputLabels, Histogram>,
    /// 1 once the model is loaded and warmed up, 0 before and while shutting down.
    pub model_loaded: Gauge,
    /// KS statistic of each feature against training.
    pub drift_ks: Family<FeatureLabels, FloatGauge>,
    /// PSI of each feature against training.
    pub drift_psi: Family<FeatureLabels, FloatGauge>,
}

impl Metrics {
    /// Creates the metrics and a registry holding them, labelled with `model` and `version`.
    pub fn new(model: &str, version: &str) -> (Self, Registry) {
        let labels = [
            (Cow::Borrowed("model"), Cow::Owned(model.to_owned())),
            (Cow::Borrowed("version"), Cow::Owned(version.to_owned())),
        ];
        let mut registry = Registry::with_prefix_and_labels("hone_predictor", labels.into_iter());
        let metrics = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            inference_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            queue_depth: Gauge::default(),
            batch_splits: Counter::default(),
            predictions: Family::default(),
            confidence: Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]),
            outputs: Family::new_with_constructor(|| Histogram::new(output_buckets())),
            model_loaded: Gauge::default(),
            drift_ks: Family::default(),
            drift_psi: Family::default(),
        };
        registry.register("requests", "HTTP requests by route and status class", metrics.requests.clone());
        registry.register(
            "request_duration_seconds",
            "HTTP request duration by route",
            metrics.request_duration.clone(),
        );
        registry.register(
            "inference_duration_seconds",
            "Duration of one batched forward pass",
            metrics.inference_duration.clone(),
        );
        registry.register("batch_size", "Samples per forward pass", metrics.batch_size.clone());
        registry.register(
            "queue_depth",
            "Requests waiting for the inference thread",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "batch_splits",
            "Batched forward passes that failed and were retried one request at a time",
            metrics.batch_splits.clone(),
        );
        registry.register(
            "predictions",
            "Predictions by answered class (multilabel: each class answered)",
            metrics.predictions.clone(),
        );
        registry.register(
            "confidence",
            "Probability of the answered class of each prediction",
            metrics.confidence.clone(),
        );
        registry.register(
            "output",
            "Each output of a regression model's predictions",
            metrics.outputs.clone(),
        );
        registry.register(
            "model_loaded",
            "1 when the model is loaded and warmed up",
            metrics.model_loaded.clone(),
        );
        registry.register(
            "drift_ks",
            "Kolmogorov-Smirnov statistic of each input feature",
            metrics.drift_ks.clone(),
        );
        registry.register(
            "drift_psi",
            "Population stability index of each input feature",
            metrics.drift_psi.clone(),
        );
        (metrics, registry)
    }
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_carries_model_and_version() {
        let (metrics, registry) = Metrics::new("iris", "v3");
        metrics
            .requests
            .get_or_create(&RequestLabels { route: "/predict".into(), status_class: "2xx" })
            .inc();
        metrics.queue_depth.set(2);
        let text = render(&registry).unwrap();
        assert!(text.contains(
            r#"hone_predictor_requests_total{model="iris",version="v3",route="/predict",status_class="2xx"} 1"#
        ));
        assert!(text.contains(r#"hone_predictor_queue_depth{model="iris",version="v3"} 2"#));
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            assert!(line.contains(r#"model="iris""#) && line.contains(r#"version="v3""#), "{line}");
        }
    }

    #[test]
    fn output_buckets_are_symmetric_decades() {
        let b = output_buckets();
        assert_eq!(b.len(), 21);
        assert_eq!((b[0], b[10], b[20]), (-1e6, 0.0, 1e6));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
    }
}

//! The router's metrics (`hone_router_*`), per variant: what canary analysis
//! reads. Family and label names are the contract in `hone_crds::router::metrics`.
//!
//! Requests, errors and latency count only inference requests a backend was
//! asked to answer; other forwarded requests and the router's own refusals
//! have series of their own, so neither can move a canary's figures. Shadow
//! (mirrored) requests count only in the `shadow_*` series, feedback only in
//! the `feedback*` ones.

use std::sync::atomic::AtomicU64;

use hone_crds::router::metrics as names;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the request counter (field names are the contract's label names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantStatus {
    /// Variant name.
    pub variant: String,
    /// `2xx`, `4xx`, `5xx`.
    pub status_class: &'static str,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantError {
    /// Variant name.
    pub variant: String,
    /// One of the contract's `REASON_*`.
    pub reason: &'static str,
}

/// Labels of per-variant series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabel {
    /// Variant name.
    pub variant: String,
}

/// Labels of the rejection counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectReason {
    /// A `Rejection::reason`, or a feedback item's refusal reason.
    pub reason: &'static str,
}

/// Labels of the prediction counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantClass {
    /// Variant name.
    pub variant: String,
    /// The answered class, bounded (see `predictions::class_label`).
    pub class: String,
}

/// Labels of the shadow-request and feedback counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantOutcome {
    /// Variant name (a mirror's target, or the backend feedback is about).
    pub variant: String,
    /// One of the contract's `OUTCOME_*`.
    pub outcome: &'static str,
}

/// Labels of the shadow confidence sums.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantSide {
    /// The mirror's target.
    pub variant: String,
    /// [`SIDE_SOURCE`] or [`SIDE_SHADOW`].
    pub side: &'static str,
}

/// [`VariantSide::side`] of the answers the clients got.
pub const SIDE_SOURCE: &str = "source";
/// [`VariantSide::side`] of the mirrored answers.
pub const SIDE_SHADOW: &str = "shadow";

/// Upper bounds of the confidence histogram: tenths, finer near certainty.
const CONFIDENCE_BUCKETS: [f64; 12] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0];

/// A counter of a float sum.
pub type FloatCounter = Counter<f64, AtomicU64>;

/// Labels of the reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResult {
    /// `success` or `error`.
    pub result: &'static str,
}

/// Every router metric.
#[derive(Clone)]
pub struct RouterMetrics {
    /// Inference requests by variant and status class.
    pub requests: Family<VariantStatus, Counter>,
    /// Failed inference requests by variant and reason.
    pub errors: Family<VariantError, Counter>,
    /// Time to the backend's response headers of inference requests, per variant.
    pub duration: Family<VariantLabel, Histogram>,
    /// Other forwarded requests, per variant.
    pub other_requests: Family<VariantLabel, Counter>,
    /// Requests the router answered itself, by reason.
    pub rejected: Family<RejectReason, Counter>,
    /// Current weight of each variant.
    pub weight: Family<VariantLabel, Gauge>,
    /// Config reloads by result.
    pub reloads: Family<ReloadResult, Counter>,
    /// Predictions answered, by variant and class.
    pub predictions: Family<VariantClass, Counter>,
    /// Top-1 confidence of each counted prediction, per variant.
    pub prediction_confidence: Family<VariantLabel, Histogram>,
    /// Mirrored requests by target and outcome.
    pub shadow_requests: Family<VariantOutcome, Counter>,
    /// Samples compared, per target.
    pub shadow_samples: Family<VariantLabel, Counter>,
    /// Compared samples whose top-1 class agreed, per target.
    pub shadow_agreements: Family<VariantLabel, Counter>,
    /// Sums of top-1 confidences of compared samples, by target and side.
    pub shadow_confidence: Family<VariantSide, FloatCounter>,
    /// Time to a mirror's response headers, per target.
    pub shadow_duration: Family<VariantLabel, Histogram>,
    /// Feedback labels by variant and outcome.
    pub feedback: Family<VariantOutcome, Counter>,
    /// Feedback items refused, by reason.
    pub feedback_rejected: Family<RejectReason, Counter>,
}

impl RouterMetrics {
    /// Creates the metrics and their registry.
    pub fn new() -> (Self, Registry) {
        let mut registry = Registry::default();
        let metrics = Self {
            requests: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            other_requests: Family::default(),
            rejected: Family::default(),
            weight: Family::default(),
            reloads: Family::default(),
            predictions: Family::default(),
            prediction_confidence: Family::new_with_constructor(|| Histogram::new(CONFIDENCE_BUCKETS)),
            shadow_requests: Family::default(),
            shadow_samples: Family::default(),
            shadow_agreements: Family::default(),
            shadow_confidence: Family::default(),
            shadow_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            feedback: Family::default(),
            feedback_rejected: Family::default(),
        };
        registry.register(
            names::REQUESTS,
            "Inference requests forwarded, by variant and status class",
            metrics.requests.clone(),
        );
        registry.register(
            names::ERRORS,
            "Failed inference requests by variant and reason",
            metrics.errors.clone(),
        );
        registry.register(
            names::REQUEST_DURATION,
            "Time to the backend's response headers of inference requests, per variant",
            metrics.duration.clone(),
        );
        registry.register(
            names::OTHER_REQUESTS,
            "Other requests forwarded (not inference; not read by canary analysis), per variant",
            metrics.other_requests.clone(),
        );
        registry.register(
            names::REJECTED,
            "Requests the router answered itself with a 4xx, by reason",
            metrics.rejected.clone(),
        );
        registry.register(names::VARIANT_WEIGHT, "Configured weight of each variant", metrics.weight.clone());
        registry.register(names::CONFIG_RELOADS, "Config reloads by result", metrics.reloads.clone());
        metrics.register_predictions(&mut registry);
        (metrics, registry)
    }

    /// The prediction, shadow and feedback families.
    fn register_predictions(&self, registry: &mut Registry) {
        registry.register(
            names::PREDICTIONS,
            "Predictions answered (top-1 class per sample), by variant and class",
            self.predictions.clone(),
        );
        registry.register(
            names::PREDICTION_CONFIDENCE,
            "Top-1 confidence of each counted prediction, per variant",
            self.prediction_confidence.clone(),
        );
        registry.register(
            names::SHADOW_REQUESTS,
            "Mirrored (shadow) requests, by target variant and outcome",
            self.shadow_requests.clone(),
        );
        registry.register(
            names::SHADOW_SAMPLES,
            "Samples compared between source and mirror answers, per target variant",
            self.shadow_samples.clone(),
        );
        registry.register(
            names::SHADOW_AGREEMENTS,
            "Compared samples whose top-1 class agreed, per target variant",
            self.shadow_agreements.clone(),
        );
        registry.register(
            names::SHADOW_CONFIDENCE,
            "Sum of top-1 confidences over compared samples, by target variant and side",
            self.shadow_confidence.clone(),
        );
        registry.register(
            names::SHADOW_DURATION,
            "Time to a mirror's response headers, per target variant",
            self.shadow_duration.clone(),
        );
        registry.register(
            names::FEEDBACK,
            "Ground-truth labels received through /feedback, by variant and outcome",
            self.feedback.clone(),
        );
        registry.register(
            names::FEEDBACK_REJECTED,
            "Feedback items refused, by reason",
            self.feedback_rejected.clone(),
        );
    }
}

/// `1xx` to `5xx` for a status code (anything else counts as `5xx`).
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
    fn series_carry_the_contract_names() {
        let (metrics, registry) = RouterMetrics::new();
        metrics.requests.get_or_create(&VariantStatus { variant: "a".into(), status_class: "5xx" }).inc();
        metrics
            .errors
            .get_or_create(&VariantError { variant: "a".into(), reason: names::REASON_CONNECT })
            .inc();
        metrics.duration.get_or_create(&VariantLabel { variant: "a".into() }).observe(0.01);
        metrics.other_requests.get_or_create(&VariantLabel { variant: "a".into() }).inc();
        metrics.rejected.get_or_create(&RejectReason { reason: "body_too_large" }).inc();
        metrics.predictions.get_or_create(&VariantClass { variant: "a".into(), class: "3".into() }).inc();
        metrics.prediction_confidence.get_or_create(&VariantLabel { variant: "a".into() }).observe(0.9);
        let outcome = |outcome| VariantOutcome { variant: "a".into(), outcome };
        metrics.shadow_requests.get_or_create(&outcome(names::OUTCOME_DROPPED)).inc();
        metrics.shadow_samples.get_or_create(&VariantLabel { variant: "a".into() }).inc();
        metrics.shadow_agreements.get_or_create(&VariantLabel { variant: "a".into() }).inc();
        metrics
            .shadow_confidence
            .get_or_create(&VariantSide { variant: "a".into(), side: SIDE_SHADOW })
            .inc_by(0.5);
        metrics.shadow_duration.get_or_create(&VariantLabel { variant: "a".into() }).observe(0.01);
        metrics.feedback.get_or_create(&outcome(names::OUTCOME_CORRECT)).inc();
        metrics.feedback_rejected.get_or_create(&RejectReason { reason: "replayed" }).inc();
        let text = render(&registry).unwrap();
        let (v, s, r) = (names::LABEL_VARIANT, names::LABEL_STATUS_CLASS, names::LABEL_REASON);
        let (c, o, side) = (names::LABEL_CLASS, names::LABEL_OUTCOME, names::LABEL_SIDE);
        for needle in [
            format!(r#"{}_total{{{v}="a",{c}="3"}} 1"#, names::PREDICTIONS),
            format!(r#"{}_count{{{v}="a"}} 1"#, names::PREDICTION_CONFIDENCE),
            format!(r#"{}_total{{{v}="a",{o}="dropped"}} 1"#, names::SHADOW_REQUESTS),
            format!(r#"{}_total{{{v}="a"}} 1"#, names::SHADOW_SAMPLES),
            format!(r#"{}_total{{{v}="a"}} 1"#, names::SHADOW_AGREEMENTS),
            format!(r#"{}_total{{{v}="a",{side}="shadow"}} 0.5"#, names::SHADOW_CONFIDENCE),
            format!(r#"{}_count{{{v}="a"}} 1"#, names::SHADOW_DURATION),
            format!(r#"{}_total{{{v}="a",{o}="correct"}} 1"#, names::FEEDBACK),
            format!(r#"{}_total{{{r}="replayed"}} 1"#, names::FEEDBACK_REJECTED),
        ] {
            assert!(text.contains(&needle), "missing {needle}\n{text}");
        }
        for needle in [
            format!(r#"{}_total{{{v}="a",{s}="5xx"}} 1"#, names::REQUESTS),
            format!(r#"{}_total{{{v}="a",{r}="connect"}} 1"#, names::ERRORS),
            format!(r#"{}_count{{{v}="a"}} 1"#, names::REQUEST_DURATION),
            format!(r#"{}_total{{{v}="a"}} 1"#, names::OTHER_REQUESTS),
            format!(r#"{}_total{{{r}="body_too_large"}} 1"#, names::REJECTED),
        ] {
            assert!(text.contains(&needle), "missing {needle}\n{text}");
        }
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(413), "4xx");
        assert_eq!(status_class(999), "5xx");
    }
}

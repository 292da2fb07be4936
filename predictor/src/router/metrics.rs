//! The router's metrics (`hone_router_*`), per variant: what canary analysis reads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the request counter.
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
    /// `connect`, `timeout`, `upstream_5xx`.
    pub reason: &'static str,
}

/// Labels of per-variant series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabel {
    /// Variant name.
    pub variant: String,
}

/// Labels of the reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadResult {
    /// `success` or `error`.
    pub result: &'static str,
}

/// Every router metric.
#[derive(Clone)]
pub struct RouterMetrics {
    /// Requests by variant and status class.
    pub requests: Family<VariantStatus, Counter>,
    /// Failed requests by variant and reason (5xx answers included).
    pub errors: Family<VariantError, Counter>,
    /// Time to the backend's response headers, per variant.
    pub duration: Family<VariantLabel, Histogram>,
    /// Current weight of each variant.
    pub weight: Family<VariantLabel, Gauge>,
    /// Config reloads by result.
    pub reloads: Family<ReloadResult, Counter>,
}

impl RouterMetrics {
    /// Creates the metrics and their registry.
    pub fn new() -> (Self, Registry) {
        let mut registry = Registry::with_prefix("hone_router");
        let metrics = Self {
            requests: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            weight: Family::default(),
            reloads: Family::default(),
        };
        registry.register(
            "requests",
            "Requests forwarded, by variant and status class",
            metrics.requests.clone(),
        );
        registry.register("errors", "Failed requests by variant and reason", metrics.errors.clone());
        registry.register(
            "request_duration_seconds",
            "Time to the backend's response headers, per variant",
            metrics.duration.clone(),
        );
        registry.register("variant_weight", "Configured weight of each variant", metrics.weight.clone());
        registry.register("config_reloads", "Config reloads by result", metrics.reloads.clone());
        (metrics, registry)
    }
}

//! The router's metrics (`hone_router_*`), per variant: what canary analysis
//! reads. Family and label names are the contract in `hone_crds::router::metrics`.
//!
//! Requests, errors and latency count only inference requests a backend was
//! asked to answer; other forwarded requests and the router's own refusals
//! have series of their own, so neither can move a canary's figures.

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

/// Labels of the rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectReason {
    /// A `Rejection::reason`.
    pub reason: &'static str,
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
        (metrics, registry)
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
        let text = render(&registry).unwrap();
        let (v, s, r) = (names::LABEL_VARIANT, names::LABEL_STATUS_CLASS, names::LABEL_REASON);
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

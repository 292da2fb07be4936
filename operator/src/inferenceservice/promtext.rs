//! A small parser for the Prometheus text format (and OpenMetrics, which the
//! router's `prometheus-client` writes), enough for the three router families
//! canary analysis reads. Pure.

use std::collections::BTreeMap;

use hone_crds::router::metrics::{
    ERRORS, LABEL_REASON, LABEL_STATUS_CLASS, LABEL_VARIANT, REASON_CONNECT, REASON_TIMEOUT,
    REQUEST_DURATION, REQUESTS,
};

/// `reason`s of [`ERRORS`] that mean no answer came from the backend.
const TRANSPORT_REASONS: [&str; 2] = [REASON_CONNECT, REASON_TIMEOUT];
/// Label of a histogram bucket's upper bound (the exposition format's).
const LABEL_LE: &str = "le";

/// Which router family a sample belongs to: a counter's samples end in
/// `_total`, a histogram's buckets in `_bucket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Requests,
    Errors,
    DurationBucket,
}

fn family(sample_name: &str) -> Option<Family> {
    if let Some(counter) = sample_name.strip_suffix("_total") {
        return match counter {
            REQUESTS => Some(Family::Requests),
            ERRORS => Some(Family::Errors),
            _ => None,
        };
    }
    (sample_name.strip_suffix("_bucket") == Some(REQUEST_DURATION)).then_some(Family::DurationBucket)
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, suffix included (`_total`, `_bucket`).
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses every sample line; comments, blank lines and lines that do not
/// parse are skipped (a scrape is judged on the families it needs).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp.
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name: name.to_owned(), labels, value })
}

/// Parses `k="v",k2="v2"}` and returns the pairs and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        let mut chars = text[eq + 1..].trim_start().strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        let quoted = text[eq + 1..].trim_start();
        text = &quoted[1 + end + 1..];
        labels.push((key, value));
    }
}

fn parse_value(text: &str) -> Option<f64> {
    // Rust reads `inf`, `+Inf` and `NaN` case-insensitively, as Prometheus writes them.
    text.parse::<f64>().ok()
}

/// What the router counted for one backend (summed over router pods).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendMetrics {
    /// Requests answered, any status.
    pub requests: f64,
    /// Requests answered 5xx (the router answers transport errors 502/504).
    pub server_errors: f64,
    /// Requests that got no answer from the backend (connect, timeout).
    pub transport_errors: f64,
    /// Cumulative latency buckets by their `le` label as written.
    pub buckets: BTreeMap<String, f64>,
}

impl BackendMetrics {
    /// Failed requests: 5xx answers, which include the router's own 502/504
    /// for transport errors; the transport counter is a floor in case a
    /// router does not count those among its requests.
    pub fn failures(&self) -> f64 {
        self.server_errors.max(self.transport_errors)
    }

    /// Adds `other` (another router pod's counts).
    pub fn add(&mut self, other: &BackendMetrics) {
        self.requests += other.requests;
        self.server_errors += other.server_errors;
        self.transport_errors += other.transport_errors;
        for (le, count) in &other.buckets {
            *self.buckets.entry(le.clone()).or_default() += count;
        }
    }
}

/// The router's counters per backend (`variant` label).
pub type RouterMetrics = BTreeMap<String, BackendMetrics>;

/// Extracts the per-backend counters from one router's metrics page.
pub fn router_metrics(text: &str) -> RouterMetrics {
    let mut metrics = RouterMetrics::new();
    for sample in parse(text) {
        let Some(variant) = sample.label(LABEL_VARIANT) else { continue };
        match family(&sample.name) {
            Some(Family::Requests) => {
                let backend = metrics.entry(variant.to_owned()).or_default();
                backend.requests += sample.value;
                if sample.label(LABEL_STATUS_CLASS) == Some("5xx") {
                    backend.server_errors += sample.value;
                }
            }
            Some(Family::Errors)
                if sample.label(LABEL_REASON).is_some_and(|r| TRANSPORT_REASONS.contains(&r)) =>
            {
                metrics.entry(variant.to_owned()).or_default().transport_errors += sample.value;
            }
            Some(Family::DurationBucket) => {
                if let Some(le) = sample.label(LABEL_LE) {
                    let backend = metrics.entry(variant.to_owned()).or_default();
                    *backend.buckets.entry(le.to_owned()).or_default() += sample.value;
                }
            }
            Some(Family::Errors) | None => {}
        }
    }
    metrics
}

/// Sums the pages of several router pods.
pub fn sum(pages: impl IntoIterator<Item = RouterMetrics>) -> RouterMetrics {
    let mut total = RouterMetrics::new();
    for page in pages {
        for (variant, backend) in page {
            total.entry(variant).or_default().add(&backend);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PAGE: &str = r#"# HELP hone_router_requests Requests forwarded, by variant and status class.
# TYPE hone_router_requests counter
hone_router_requests_total{variant="a",status_class="2xx"} 90
hone_router_requests_total{variant="a",status_class="5xx"} 10
hone_router_requests_total{variant="a-v2",status_class="2xx"} 4.0
hone_router_errors_total{variant="a",reason="connect"} 3
hone_router_errors_total{variant="a",reason="upstream_5xx"} 10
hone_router_request_duration_seconds_bucket{le="0.001",variant="a"} 50
hone_router_request_duration_seconds_bucket{le="+Inf",variant="a"} 100 1700000000
hone_router_request_duration_seconds_sum{variant="a"} 1.5
hone_router_variant_weight{variant="a"} 9000
# EOF
"#;

    #[test]
    fn sample_lines_parse_with_labels_escapes_and_timestamps() {
        let samples = parse("m{a=\"x\\\"y\",b=\"line\\nbreak\"} 1.5 123\nplain 2\n# c\nbroken{a=\"x} 1\n");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].label("a"), Some("x\"y"));
        assert_eq!(samples[0].label("b"), Some("line\nbreak"));
        assert_eq!(samples[0].value, 1.5);
        assert_eq!(samples[1], Sample { name: "plain".into(), labels: vec![], value: 2.0 });
        assert_eq!(parse("m{le=\"+Inf\"} +Inf")[0].value, f64::INFINITY);
    }

    #[test]
    fn router_families_are_summed_per_backend() {
        let metrics = router_metrics(PAGE);
        let a = &metrics["a"];
        assert_eq!(a.requests, 100.0);
        assert_eq!(a.server_errors, 10.0);
        assert_eq!(a.transport_errors, 3.0);
        assert_eq!(a.failures(), 10.0);
        assert_eq!(a.buckets["0.001"], 50.0);
        assert_eq!(a.buckets["+Inf"], 100.0);
        assert_eq!(metrics["a-v2"].requests, 4.0);
        let both = sum([metrics.clone(), metrics]);
        assert_eq!(both["a"].requests, 200.0);
        assert_eq!(both["a"].buckets["+Inf"], 200.0);
    }

    #[test]
    fn what_prometheus_client_writes_parses() {
        use prometheus_client::encoding::EncodeLabelSet;
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Status {
            variant: String,
            status_class: &'static str,
        }
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Variant {
            variant: String,
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let requests = Family::<Status, Counter>::default();
        let duration = Family::<Variant, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(REQUESTS, "r", requests.clone());
        registry.register(REQUEST_DURATION, "d", duration.clone());
        requests.get_or_create(&Status { variant: "b".into(), status_class: "5xx" }).inc_by(2);
        duration.get_or_create(&Variant { variant: "b".into() }).observe(0.003);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let b = &router_metrics(&text)["b"];
        assert_eq!((b.requests, b.server_errors), (2.0, 2.0), "{text}");
        assert_eq!(b.buckets.len(), 17, "{text}");
        assert_eq!(b.buckets["+Inf"], 1.0);
    }
}

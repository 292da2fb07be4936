//! A small parser for the Prometheus text format (and OpenMetrics, which the
//! router's `prometheus-client` writes), enough for the router families
//! canary analysis reads. Pure.

use std::collections::BTreeMap;

use hone_crds::router::metrics::{
    ERRORS, FEEDBACK, LABEL_CLASS, LABEL_OUTCOME, LABEL_REASON, LABEL_STATUS_CLASS, LABEL_VARIANT,
    OUTCOME_CORRECT, OUTCOME_INCORRECT, PREDICTION_CONFIDENCE, PREDICTIONS, REASON_CONNECT, REASON_TIMEOUT,
    REQUEST_DURATION, REQUESTS, SHADOW_AGREEMENTS, SHADOW_DURATION, SHADOW_REQUESTS, SHADOW_SAMPLES,
};

/// `reason`s of [`ERRORS`] that mean no answer came from the backend.
const TRANSPORT_REASONS: [&str; 2] = [REASON_CONNECT, REASON_TIMEOUT];
/// Label of a histogram bucket's upper bound (the exposition format's).
const LABEL_LE: &str = "le";

/// Which router family a sample belongs to: a counter's samples end in
/// `_total`, a histogram's buckets in `_bucket` and its sum in `_sum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Requests,
    Errors,
    DurationBucket,
    Predictions,
    ConfidenceSum,
    ShadowRequests,
    ShadowSamples,
    ShadowAgreements,
    ShadowDurationBucket,
    Feedback,
}

fn family(sample_name: &str) -> Option<Family> {
    if let Some(counter) = sample_name.strip_suffix("_total") {
        return match counter {
            REQUESTS => Some(Family::Requests),
            ERRORS => Some(Family::Errors),
            PREDICTIONS => Some(Family::Predictions),
            SHADOW_REQUESTS => Some(Family::ShadowRequests),
            SHADOW_SAMPLES => Some(Family::ShadowSamples),
            SHADOW_AGREEMENTS => Some(Family::ShadowAgreements),
            FEEDBACK => Some(Family::Feedback),
            _ => None,
        };
    }
    if let Some(histogram) = sample_name.strip_suffix("_bucket") {
        return match histogram {
            REQUEST_DURATION => Some(Family::DurationBucket),
            SHADOW_DURATION => Some(Family::ShadowDurationBucket),
            _ => None,
        };
    }
    (sample_name.strip_suffix("_sum") == Some(PREDICTION_CONFIDENCE)).then_some(Family::ConfidenceSum)
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
    /// Predictions by top-1 class.
    pub predictions: BTreeMap<String, f64>,
    /// Sum of the predictions' top-1 confidences.
    pub confidence_sum: f64,
    /// Mirrored requests by outcome (this backend as a mirror target).
    pub shadow_requests: BTreeMap<String, f64>,
    /// Mirrored samples compared.
    pub shadow_samples: f64,
    /// Compared samples whose top-1 class agreed.
    pub shadow_agreements: f64,
    /// Cumulative latency buckets of mirrored requests.
    pub shadow_buckets: BTreeMap<String, f64>,
    /// Feedback labels that matched the answer.
    pub feedback_correct: f64,
    /// Feedback labels that did not.
    pub feedback_incorrect: f64,
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
        add_all(&mut self.buckets, &other.buckets);
        add_all(&mut self.predictions, &other.predictions);
        self.confidence_sum += other.confidence_sum;
        add_all(&mut self.shadow_requests, &other.shadow_requests);
        self.shadow_samples += other.shadow_samples;
        self.shadow_agreements += other.shadow_agreements;
        add_all(&mut self.shadow_buckets, &other.shadow_buckets);
        self.feedback_correct += other.feedback_correct;
        self.feedback_incorrect += other.feedback_incorrect;
    }
}

fn add_all(into: &mut BTreeMap<String, f64>, from: &BTreeMap<String, f64>) {
    for (key, value) in from {
        *into.entry(key.clone()).or_default() += value;
    }
}

/// The router's counters per backend (`variant` label).
pub type RouterMetrics = BTreeMap<String, BackendMetrics>;

/// Extracts the per-backend counters from one router's metrics page.
pub fn router_metrics(text: &str) -> RouterMetrics {
    let mut metrics = RouterMetrics::new();
    for sample in parse(text) {
        let Some(variant) = sample.label(LABEL_VARIANT) else { continue };
        let Some(family) = family(&sample.name) else { continue };
        let backend = metrics.entry(variant.to_owned()).or_default();
        let value = sample.value;
        let keyed = |map: &mut BTreeMap<String, f64>, label: &str| {
            if let Some(key) = sample.label(label) {
                *map.entry(key.to_owned()).or_default() += value;
            }
        };
        match family {
            Family::Requests => {
                backend.requests += value;
                if sample.label(LABEL_STATUS_CLASS) == Some("5xx") {
                    backend.server_errors += value;
                }
            }
            Family::Errors => {
                if sample.label(LABEL_REASON).is_some_and(|r| TRANSPORT_REASONS.contains(&r)) {
                    backend.transport_errors += value;
                }
            }
            Family::DurationBucket => keyed(&mut backend.buckets, LABEL_LE),
            Family::Predictions => keyed(&mut backend.predictions, LABEL_CLASS),
            Family::ConfidenceSum => backend.confidence_sum += value,
            Family::ShadowRequests => keyed(&mut backend.shadow_requests, LABEL_OUTCOME),
            Family::ShadowSamples => backend.shadow_samples += value,
            Family::ShadowAgreements => backend.shadow_agreements += value,
            Family::ShadowDurationBucket => keyed(&mut backend.shadow_buckets, LABEL_LE),
            Family::Feedback => match sample.label(LABEL_OUTCOME) {
                Some(OUTCOME_CORRECT) => backend.feedback_correct += value,
                Some(OUTCOME_INCORRECT) => backend.feedback_incorrect += value,
                _ => {}
            },
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
    fn quality_families_are_read_per_backend() {
        let page = r#"hone_router_predictions_total{variant="a",class="3"} 40
hone_router_predictions_total{variant="a",class="7"} 60
hone_router_predictions_total{variant="a-v2",class="3"} 5
hone_router_prediction_confidence_sum{variant="a"} 91.5
hone_router_prediction_confidence_count{variant="a"} 100
hone_router_shadow_requests_total{variant="a-v2",outcome="compared"} 5
hone_router_shadow_requests_total{variant="a-v2",outcome="dropped"} 2
hone_router_shadow_samples_total{variant="a-v2"} 5
hone_router_shadow_agreements_total{variant="a-v2"} 4
hone_router_shadow_duration_seconds_bucket{variant="a-v2",le="+Inf"} 7
hone_router_feedback_total{variant="a",outcome="correct"} 9
hone_router_feedback_total{variant="a",outcome="incorrect"} 1
hone_router_feedback_total{variant="a",outcome="bogus"} 100
hone_router_feedback_rejected_total{reason="replayed"} 3
"#;
        let metrics = router_metrics(page);
        let a = &metrics["a"];
        assert_eq!(a.predictions["7"], 60.0);
        assert_eq!(a.confidence_sum, 91.5);
        assert_eq!((a.feedback_correct, a.feedback_incorrect), (9.0, 1.0));
        let canary = &metrics["a-v2"];
        assert_eq!(canary.shadow_requests["dropped"], 2.0);
        assert_eq!((canary.shadow_samples, canary.shadow_agreements), (5.0, 4.0));
        assert_eq!(canary.shadow_buckets["+Inf"], 7.0);
        assert_eq!(canary.requests, 0.0, "mirrored requests are not client requests");
        let both = sum([metrics.clone(), metrics]);
        assert_eq!(both["a"].predictions["3"], 80.0);
        assert_eq!(both["a-v2"].shadow_requests["compared"], 10.0);
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

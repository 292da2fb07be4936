//! What the predictors answered: the top-1 label and confidence of each
//! sample of a `/predict` or `/predict/batch` answer, read from small JSON
//! answers only, and counted per backend in `hone_router_predictions_total`
//! and `hone_router_prediction_confidence`.
//!
//! The class label is a backend's output, so its values are bounded: at most
//! [`MAX_CLASSES`] distinct classes per backend, and none longer than
//! [`MAX_CLASS_BYTES`]; anything beyond counts as [`OTHER_CLASS`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use hone_crds::router::metrics::{MAX_CLASSES, OTHER_CLASS};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;
use tokio::time::Instant;

use crate::metrics::{RouterMetrics, VariantClass, VariantLabel};
use crate::routes::AnswerShape;

/// Largest answer read for its predictions; larger ones stream through unread.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest class label counted under its own name.
pub const MAX_CLASS_BYTES: usize = 128;

/// One sample's top-1 prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The class name.
    pub label: String,
    /// Its probability, in `[0, 1]`.
    pub confidence: f64,
}

/// The fields of a `/predict` answer the router reads (the rest is ignored).
#[derive(Deserialize)]
struct SingleAnswer {
    label: String,
    confidence: f64,
}

/// The field of a `/predict/batch` answer the router reads.
#[derive(Deserialize)]
struct BatchAnswer {
    predictions: Vec<SingleAnswer>,
}

impl From<SingleAnswer> for Sample {
    fn from(answer: SingleAnswer) -> Self {
        Self { label: answer.label, confidence: answer.confidence }
    }
}

/// The samples of an answer body; `None` when it is not a predictor's answer
/// (or a confidence is not a probability).
pub fn parse(shape: AnswerShape, body: &[u8]) -> Option<Vec<Sample>> {
    let samples: Vec<Sample> = match shape {
        AnswerShape::Single => vec![serde_json::from_slice::<SingleAnswer>(body).ok()?.into()],
        AnswerShape::Batch => serde_json::from_slice::<BatchAnswer>(body)
            .ok()?
            .predictions
            .into_iter()
            .map(Sample::from)
            .collect(),
    };
    samples.iter().all(|s| (0.0..=1.0).contains(&s.confidence)).then_some(samples)
}

/// Whether an answer is read whole for its predictions: a 2xx, JSON, with a
/// Content-Length of at most [`MAX_ANSWER_BYTES`].
pub fn worth_reading(status: StatusCode, headers: &HeaderMap) -> bool {
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n <= MAX_ANSWER_BYTES);
    status.is_success() && small && headers.get(header::CONTENT_TYPE).is_some_and(|v| is_json(v.as_bytes()))
}

/// `application/json` or `application/<anything>+json`, with any parameters.
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    let essence = essence.to_ascii_lowercase();
    essence == b"application/json" || (essence.starts_with(b"application/") && essence.ends_with(b"+json"))
}

/// Why an answer could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It did not arrive by the deadline.
    #[error("the answer did not arrive in time")]
    Timeout,
    /// The backend broke off, or sent more than it declared.
    #[error("reading the answer: {0}")]
    Broken(String),
}

/// Reads a (small) answer body whole by `deadline`.
pub async fn read_whole<B>(body: B, deadline: Instant) -> Result<Bytes, ReadError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, MAX_ANSWER_BYTES);
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Err(_) => Err(ReadError::Timeout),
        Ok(Err(e)) => Err(ReadError::Broken(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Counts predictions per backend, with each backend's class labels bounded.
pub struct Predictions {
    classes: Mutex<HashMap<String, HashSet<String>>>,
    count: Family<VariantClass, Counter>,
    confidence: Family<VariantLabel, Histogram>,
}

impl Predictions {
    /// Counting into the families of `metrics`.
    pub fn new(metrics: &RouterMetrics) -> Self {
        Self {
            classes: Mutex::new(HashMap::new()),
            count: metrics.predictions.clone(),
            confidence: metrics.prediction_confidence.clone(),
        }
    }

    /// Counts `samples` answered by `variant`.
    pub fn record(&self, variant: &str, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        let classes: Vec<String> = {
            // A poisoned lock still holds a consistent set (inserts are atomic).
            let mut known = self.classes.lock().unwrap_or_else(|p| p.into_inner());
            let known = known.entry(variant.to_owned()).or_default();
            samples.iter().map(|s| class_label(known, &s.label).to_owned()).collect()
        };
        let histogram = self.confidence.get_or_create(&VariantLabel { variant: variant.to_owned() });
        for (sample, class) in samples.iter().zip(classes) {
            self.count.get_or_create(&VariantClass { variant: variant.to_owned(), class }).inc();
            histogram.observe(sample.confidence);
        }
    }
}

/// The `class` label of `label` for a backend that has answered `known`
/// classes so far (which it joins while there is room).
pub fn class_label<'a>(known: &mut HashSet<String>, label: &'a str) -> &'a str {
    if label.len() > MAX_CLASS_BYTES {
        return OTHER_CLASS;
    }
    if known.contains(label) {
        return label;
    }
    if known.len() < MAX_CLASSES && label != OTHER_CLASS {
        known.insert(label.to_owned());
        return label;
    }
    OTHER_CLASS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_answers_parse_and_anything_else_does_not() {
        let single = br#"{"label": "3", "classIndex": 3, "confidence": 0.97, "top": [{"label": "3", "classIndex": 3, "confidence": 0.97}], "model": "digits", "version": "2"}"#;
        assert_eq!(
            parse(AnswerShape::Single, single),
            Some(vec![Sample { label: "3".into(), confidence: 0.97 }])
        );
        let batch =
            br#"{"predictions": [{"label": "a", "confidence": 0.5}, {"label": "b", "confidence": 1}]}"#;
        let samples = parse(AnswerShape::Batch, batch).unwrap();
        assert_eq!(samples.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(parse(AnswerShape::Batch, br#"{"predictions": []}"#), Some(vec![]));
        for bad in [
            &b"not json"[..],
            br#"{"label": 3, "confidence": 0.5}"#,
            br#"{"label": "3"}"#,
            br#"{"label": "3", "confidence": 1.5}"#,
            br#"{"label": "3", "confidence": -0.1}"#,
            br#"[1, 2]"#,
        ] {
            assert_eq!(parse(AnswerShape::Single, bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(AnswerShape::Batch, single), None, "a single answer is no batch");
        assert_eq!(parse(AnswerShape::Single, batch), None, "a batch is no single answer");
    }

    #[test]
    fn only_small_json_successes_are_read() {
        let headers = |kind: &'static str, length: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, kind.parse().unwrap());
            if let Some(length) = length {
                h.insert(header::CONTENT_LENGTH, length.parse().unwrap());
            }
            h
        };
        let ok = StatusCode::OK;
        assert!(worth_reading(ok, &headers("application/json", Some("100"))));
        assert!(worth_reading(ok, &headers("Application/JSON; charset=utf-8", Some("65536"))));
        assert!(worth_reading(ok, &headers("application/problem+json", Some("1"))));
        assert!(!worth_reading(ok, &headers("application/json", Some("65537"))));
        assert!(!worth_reading(ok, &headers("application/json", None)), "chunked streams through");
        assert!(!worth_reading(ok, &headers("application/json", Some("ten"))));
        assert!(!worth_reading(ok, &headers("text/plain", Some("100"))));
        assert!(!worth_reading(ok, &headers("application/jsonx", Some("100"))));
        assert!(!worth_reading(StatusCode::BAD_REQUEST, &headers("application/json", Some("100"))));
    }

    #[test]
    fn class_labels_are_bounded_per_backend() {
        let mut known = HashSet::new();
        let long = "x".repeat(MAX_CLASS_BYTES + 1);
        assert_eq!(class_label(&mut known, &long), OTHER_CLASS);
        assert_eq!(class_label(&mut known, &long[..MAX_CLASS_BYTES]), &long[..MAX_CLASS_BYTES]);
        assert_eq!(class_label(&mut known, OTHER_CLASS), OTHER_CLASS);
        for i in 1..MAX_CLASSES {
            let label = i.to_string();
            assert_eq!(class_label(&mut known, &label), label);
        }
        assert_eq!(known.len(), MAX_CLASSES);
        assert_eq!(class_label(&mut known, "one too many"), OTHER_CLASS);
        assert_eq!(class_label(&mut known, "7"), "7", "known classes keep their name");
    }

    #[test]
    fn recorded_predictions_land_in_their_series() {
        let (metrics, registry) = RouterMetrics::new();
        let predictions = Predictions::new(&metrics);
        let samples = [
            Sample { label: "3".into(), confidence: 0.95 },
            Sample { label: "3".into(), confidence: 0.35 },
            Sample { label: "x".repeat(200), confidence: 0.5 },
        ];
        predictions.record("a", &samples);
        let text = crate::metrics::render(&registry).unwrap();
        for needle in [
            r#"hone_router_predictions_total{variant="a",class="3"} 2"#,
            r#"hone_router_predictions_total{variant="a",class="__other__"} 1"#,
            r#"hone_router_prediction_confidence_count{variant="a"} 3"#,
            r#"hone_router_prediction_confidence_bucket{le="0.4",variant="a"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }
}

//! `POST /feedback` on the client port: ground-truth labels for answers the
//! router gave, named by the signed `x-request-id` it put on them
//! ([`crate::request_id`]), counted per variant as correct or incorrect.
//!
//! The variant comes from the signed id, never from the caller, and each id
//! counts once on this router pod (a bounded set of the nonces seen). The
//! labels are the caller's word: they are compared as strings with the
//! labels the id recorded and never become metric label values.
//!
//! Bodies: `{"requestId", "label"}` (a single-sample answer), `{"requestId",
//! "labels": [...]}` (one per sample, in order), or `{"feedback": [items]}`.

mod document;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hone_crds::router::feedback::{MAX_AGE_SECONDS, MAX_BODY_BYTES};
use hone_crds::router::metrics::{OUTCOME_CORRECT, OUTCOME_INCORRECT};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;

use crate::body::{self, BodyLimits};
use crate::metrics::{RejectReason, RouterMetrics, VariantOutcome};
use crate::reject::Rejection;
use crate::request_id::unix_now;
use crate::server::RouterState;
use crate::token::{self, FeedbackKey, NONCE_BYTES, RequestId, TokenError};

pub use self::document::{Item, parse};

/// Most nonces remembered per pod; the oldest is forgotten first.
pub const SEEN_CAPACITY: usize = 100_000;

/// Why an item was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an id this router signed under the current key.
    BadId(TokenError),
    /// Issued longer ago than `MAX_AGE_SECONDS`.
    Expired {
        /// Seconds since it was issued.
        age: u64,
    },
    /// Feedback for this id was already counted on this pod.
    Replayed,
    /// The number of labels is not the answer's number of samples (or the
    /// id recorded no labels).
    Mismatch {
        /// Labels sent.
        sent: usize,
        /// Samples answered, when recorded.
        answered: Option<usize>,
    },
}

impl Refusal {
    /// The `reason` label of `hone_router_feedback_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadId(_) => "bad_id",
            Self::Expired { .. } => "expired",
            Self::Replayed => "replayed",
            Self::Mismatch { .. } => "mismatch",
        }
    }

    /// What the caller is told.
    pub fn message(&self) -> String {
        match self {
            Self::BadId(e) => format!("{e}"),
            Self::Expired { age } => {
                format!("the request id was issued {age} s ago; feedback is accepted for {MAX_AGE_SECONDS} s")
            }
            Self::Replayed => "feedback for this request id was already received".to_owned(),
            Self::Mismatch { sent, answered: Some(answered) } => {
                format!("{sent} labels for an answer of {answered} samples")
            }
            Self::Mismatch { answered: None, .. } => format!(
                "the answer's labels were not recorded (more than {} samples or {} bytes of labels, or not read)",
                token::MAX_LABELS,
                token::MAX_LABEL_BYTES
            ),
        }
    }
}

/// What came of a feedback request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Items counted.
    pub accepted: usize,
    /// Items refused, by index.
    pub rejected: Vec<(usize, Refusal)>,
}

/// The nonces seen on this pod, oldest first out.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<[u8; NONCE_BYTES]>,
    order: VecDeque<[u8; NONCE_BYTES]>,
}

impl Seen {
    /// Remembers `nonce`; false when it was already there.
    fn insert(&mut self, nonce: [u8; NONCE_BYTES], capacity: usize) -> bool {
        if !self.set.insert(nonce) {
            return false;
        }
        self.order.push_back(nonce);
        while self.order.len() > capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }
}

/// Judges and counts feedback.
pub struct Feedback {
    seen: Mutex<Seen>,
    capacity: usize,
    counts: Family<VariantOutcome, Counter>,
    rejected: Family<RejectReason, Counter>,
}

impl Feedback {
    /// Counting into `metrics`, remembering up to `capacity` ids.
    pub fn new(metrics: &RouterMetrics, capacity: usize) -> Self {
        Self {
            seen: Mutex::new(Seen::default()),
            capacity,
            counts: metrics.feedback.clone(),
            rejected: metrics.feedback_rejected.clone(),
        }
    }

    /// Checks each item under `key` at `now` (unix seconds) and counts it.
    pub fn judge(&self, key: &FeedbackKey, now: u64, items: &[Item]) -> Report {
        let mut report = Report::default();
        // A poisoned lock still holds a consistent set (each insert completes).
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (index, item) in items.iter().enumerate() {
            match check(key, now, item).and_then(|id| {
                if seen.insert(id.nonce, self.capacity) { Ok(id) } else { Err(Refusal::Replayed) }
            }) {
                Ok(id) => {
                    report.accepted += 1;
                    self.count(&id, &item.labels);
                }
                Err(refusal) => {
                    self.rejected.get_or_create(&RejectReason { reason: refusal.reason() }).inc();
                    report.rejected.push((index, refusal));
                }
            }
        }
        report
    }

    fn count(&self, id: &RequestId, truth: &[String]) {
        let answered = id.labels.as_deref().unwrap_or_default();
        for (answered, truth) in answered.iter().zip(truth) {
            let outcome = if answered == truth { OUTCOME_CORRECT } else { OUTCOME_INCORRECT };
            self.counts.get_or_create(&VariantOutcome { variant: id.variant.clone(), outcome }).inc();
        }
    }
}

/// The id of an item, if its signature, age and label count are right.
/// (Whether it was seen before is the caller's check, made last so a
/// refused item does not use its id up.)
fn check(key: &FeedbackKey, now: u64, item: &Item) -> Result<RequestId, Refusal> {
    let id = token::verify(key, &item.request_id).map_err(Refusal::BadId)?;
    let age = now.saturating_sub(id.issued);
    if age > MAX_AGE_SECONDS {
        return Err(Refusal::Expired { age });
    }
    let answered = id.labels.as_ref().map(Vec::len);
    if answered != Some(item.labels.len()) {
        return Err(Refusal::Mismatch { sent: item.labels.len(), answered });
    }
    Ok(id)
}

/// Any other method on `/feedback`: 405, counted as the router's refusal.
pub async fn wrong_method(State(state): State<Arc<RouterState>>) -> Response {
    let rejection = Rejection::MethodNotAllowed { allowed: "POST" };
    state.metrics.rejected.get_or_create(&RejectReason { reason: rejection.reason() }).inc();
    rejection.into_response()
}

/// `POST /feedback`: read, judge, answer what was counted and what not.
pub async fn receive(State(state): State<Arc<RouterState>>, request: Request) -> Response {
    match judge_request(&state, request).await {
        Ok(report) => render(&report),
        Err(rejection) => {
            state.metrics.rejected.get_or_create(&RejectReason { reason: rejection.reason() }).inc();
            rejection.into_response()
        }
    }
}

async fn judge_request(state: &RouterState, request: Request) -> Result<Report, Rejection> {
    let table = state.current();
    let key = table.feedback_key.as_ref().ok_or(Rejection::FeedbackDisabled)?;
    let declared = body::declared_length(request.headers())?;
    let limits = BodyLimits { max_bytes: MAX_BODY_BYTES, read_timeout: state.body_limits.read_timeout };
    let body = body::read(request.into_body(), declared, &limits, &state.budget).await?;
    let items = parse(&body.bytes).map_err(Rejection::BadFeedback)?;
    Ok(state.feedback.judge(key, unix_now(), &items))
}

fn render(report: &Report) -> Response {
    let rejected: Vec<serde_json::Value> = report
        .rejected
        .iter()
        .map(|(index, r)| json!({"index": index, "reason": r.reason(), "message": r.message()}))
        .collect();
    (StatusCode::OK, axum::Json(json!({"accepted": report.accepted, "rejected": rejected}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FeedbackKey {
        FeedbackKey::from_hex(&"5a".repeat(32)).unwrap()
    }

    const NOW: u64 = 1_800_000_000;

    fn signed(variant: &str, issued: u64, nonce: u8, labels: Option<&[&str]>) -> String {
        let labels = labels.map(|l| l.iter().map(|s| (*s).to_owned()).collect());
        token::sign(&key(), &RequestId::new(variant, issued, [nonce; NONCE_BYTES], labels))
    }

    fn item(request_id: String, labels: &[&str]) -> Item {
        Item { request_id, labels: labels.iter().map(|s| (*s).to_owned()).collect() }
    }

    #[test]
    fn feedback_counts_per_sample_for_the_signed_variant() {
        let (metrics, registry) = RouterMetrics::new();
        let feedback = Feedback::new(&metrics, 10);
        let items = [
            item(signed("a-v2", NOW - 10, 1, Some(&["3"])), &["3"]),
            item(signed("a", NOW, 2, Some(&["1", "2", "3"])), &["1", "0", "3"]),
        ];
        assert_eq!(feedback.judge(&key(), NOW, &items), Report { accepted: 2, rejected: vec![] });
        let text = crate::metrics::render(&registry).unwrap();
        for needle in [
            r#"hone_router_feedback_total{variant="a-v2",outcome="correct"} 1"#,
            r#"hone_router_feedback_total{variant="a",outcome="correct"} 2"#,
            r#"hone_router_feedback_total{variant="a",outcome="incorrect"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }

    #[test]
    fn forged_expired_replayed_and_mismatched_items_are_refused() {
        let (metrics, registry) = RouterMetrics::new();
        let feedback = Feedback::new(&metrics, 10);
        let good = signed("a", NOW, 1, Some(&["3"]));
        let other_key = token::sign(
            &FeedbackKey::from_hex(&"00".repeat(32)).unwrap(),
            &RequestId::new("a", NOW, [9; NONCE_BYTES], Some(vec!["3".into()])),
        );
        let items = [
            item(good.clone(), &["3", "4"]),
            item(good.clone(), &["3"]),
            item(good, &["3"]),
            item(other_key, &["3"]),
            item("garbage".into(), &["3"]),
            item(signed("a", NOW - MAX_AGE_SECONDS - 1, 3, Some(&["3"])), &["3"]),
            item(signed("a", NOW, 4, None), &["3"]),
        ];
        let report = feedback.judge(&key(), NOW, &items);
        assert_eq!(report.accepted, 1, "{report:?}");
        let reasons: Vec<(usize, &str)> = report.rejected.iter().map(|(i, r)| (*i, r.reason())).collect();
        assert_eq!(
            reasons,
            [(0, "mismatch"), (2, "replayed"), (3, "bad_id"), (4, "bad_id"), (5, "expired"), (6, "mismatch")],
            "a mismatched item does not use its id up"
        );
        assert!(report.rejected.iter().all(|(_, r)| !r.message().is_empty() && r.message().len() < 200));
        let text = crate::metrics::render(&registry).unwrap();
        assert!(text.contains(r#"hone_router_feedback_rejected_total{reason="bad_id"} 2"#), "{text}");
        assert!(text.contains(r#"hone_router_feedback_total{variant="a",outcome="correct"} 1"#), "{text}");
    }

    #[test]
    fn the_seen_set_is_bounded_and_forgets_the_oldest() {
        let mut seen = Seen::default();
        for n in 0..5u8 {
            assert!(seen.insert([n; NONCE_BYTES], 3));
        }
        assert_eq!((seen.set.len(), seen.order.len()), (3, 3));
        assert!(!seen.insert([4; NONCE_BYTES], 3), "recent ones are remembered");
        assert!(seen.insert([0; NONCE_BYTES], 3), "the oldest were forgotten");
    }
}

//! Shadow traffic: a copy of a share of one backend's inference requests
//! sent to another (usually a canary at weight 0), whose answer is compared
//! with the one the client got and never returned to anyone.
//!
//! A mirror never delays or alters the client's answer: it runs in a task of
//! its own, and is sent only when the bounds allow right now (at most
//! `--max-inflight-mirrors` in flight, their bodies within
//! `--max-inflight-mirror-bytes`); otherwise it is dropped and counted. The
//! request path hands the task the predictions the client got through a
//! oneshot, once it has them. Mirrors count only in the `shadow_*` series
//! (and their predictions in `predictions_total` under the target), never in
//! the series of what clients saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Request, Uri};
use hone_crds::router::metrics::{OUTCOME_COMPARED, OUTCOME_DROPPED, OUTCOME_FAILED, OUTCOME_SKIPPED};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::body::{Budget, BudgetShare};
use crate::config::RouterConfig;
use crate::metrics::{RouterMetrics, SIDE_SHADOW, SIDE_SOURCE, VariantLabel, VariantOutcome, VariantSide};
use crate::predictions::{self, Predictions, Sample};
use crate::routes::AnswerShape;
use crate::server::Table;

/// Request header marking a mirrored copy, so the backend can tell.
pub const SHADOW_HEADER: &str = "x-hone-shadow";

/// One source's mirror in a routing table.
#[derive(Debug)]
pub struct MirrorRoute {
    /// Backend index of the target.
    pub target: usize,
    percent: u32,
    ticks: AtomicU64,
}

impl MirrorRoute {
    /// Whether the next request of the source is mirrored.
    fn pick(&self) -> bool {
        selected(self.ticks.fetch_add(1, Ordering::Relaxed), self.percent)
    }
}

/// The mirror of each backend of a validated `config`, by backend index.
pub fn routes(config: &RouterConfig) -> Vec<Option<MirrorRoute>> {
    let index = |name: &str| config.variants.iter().position(|v| v.name == name);
    config
        .variants
        .iter()
        .map(|backend| {
            let mirror = config.mirrors.iter().find(|m| m.source == backend.name)?;
            let target = index(&mirror.target)?;
            Some(MirrorRoute { target, percent: mirror.percent.min(100), ticks: AtomicU64::new(0) })
        })
        .collect()
}

/// Whether request number `tick` of a source is mirrored at `percent`:
/// exactly `percent` of every 100 consecutive requests, spread evenly.
pub fn selected(tick: u64, percent: u32) -> bool {
    let (n, p) = (tick % 100, u64::from(percent.min(100)));
    (n + 1) * p / 100 > n * p / 100
}

/// The answer the client got, as a mirror compares it: its samples, or
/// `None` when it is not comparable (not a 2xx predictor answer read whole).
pub type SourceAnswer = Option<Vec<Sample>>;

/// What a mirror got back.
#[derive(Debug, Clone, PartialEq)]
pub enum MirrorAnswer {
    /// No answer in time, or a 5xx, or an answer that broke off.
    Failed,
    /// An answer below 500, with its samples when they could be read.
    Answered(Option<Vec<Sample>>),
}

/// How a mirrored request ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Both answers read, with as many samples.
    Compared(Comparison),
    /// The mirror failed (no answer, 5xx, unreadable).
    Failed,
    /// The client's answer was not comparable.
    Skipped,
}

/// Source and mirror answers side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Samples compared.
    pub samples: u64,
    /// Samples whose top-1 labels agreed.
    pub agreements: u64,
    /// Sum of the source's confidences.
    pub source_confidence: f64,
    /// Sum of the mirror's confidences.
    pub shadow_confidence: f64,
}

/// Compares a mirror's answer with the client's (`None`: not comparable).
/// A mirror that failed to answer failed whatever the source did; otherwise
/// an incomparable source answer skips the comparison.
pub fn judge(source: Option<&[Sample]>, mirror: &MirrorAnswer) -> Outcome {
    let shadow = match mirror {
        MirrorAnswer::Failed => return Outcome::Failed,
        MirrorAnswer::Answered(shadow) => shadow,
    };
    let Some(source) = source else { return Outcome::Skipped };
    let Some(shadow) = shadow else { return Outcome::Failed };
    if source.len() != shadow.len() {
        return Outcome::Skipped;
    }
    let pairs = source.iter().zip(shadow);
    Outcome::Compared(Comparison {
        samples: source.len() as u64,
        agreements: pairs.clone().filter(|(s, m)| s.label == m.label).count() as u64,
        source_confidence: source.iter().map(|s| s.confidence).sum(),
        shadow_confidence: shadow.iter().map(|s| s.confidence).sum(),
    })
}

/// What every mirror task shares.
struct Shared {
    client: Client<HttpConnector, Body>,
    timeout: Duration,
    metrics: RouterMetrics,
    predictions: Arc<Predictions>,
}

/// Starts mirrors within the bounds.
pub struct Mirrors {
    permits: Arc<Semaphore>,
    budget: Budget,
    shared: Arc<Shared>,
}

/// Bounds on mirrors in flight.
#[derive(Debug, Clone, Copy)]
pub struct MirrorLimits {
    /// Most mirrors in flight.
    pub max_inflight: usize,
    /// Most body bytes they hold together.
    pub max_inflight_bytes: usize,
    /// Longest a mirror may take (the router's request timeout).
    pub timeout: Duration,
}

/// The request path's end of a started mirror: where the client's answer goes.
#[derive(Debug)]
pub struct Shadow(oneshot::Sender<SourceAnswer>);

impl Shadow {
    /// Hands the mirror the client's answer (a mirror already gone is fine).
    pub fn send(self, answer: SourceAnswer) {
        let _ = self.0.send(answer);
    }
}

impl Mirrors {
    /// Mirrors sent with `client`, counted in `metrics`.
    pub fn new(
        client: Client<HttpConnector, Body>,
        limits: MirrorLimits,
        metrics: RouterMetrics,
        predictions: Arc<Predictions>,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_inflight.min(Semaphore::MAX_PERMITS))),
            budget: Budget::new(limits.max_inflight_bytes),
            shared: Arc::new(Shared { client, timeout: limits.timeout, metrics, predictions }),
        }
    }

    /// Starts a copy of an inference request bound for backend `index`
    /// (`parts` as prepared for it) when that backend is a mirror source and
    /// this request is picked; `None` when nothing was started.
    pub fn start(
        &self,
        table: &Table,
        index: usize,
        shape: Option<AnswerShape>,
        parts: &Parts,
        body: &Bytes,
    ) -> Option<Shadow> {
        let route = table.mirrors.get(index)?.as_ref()?;
        let target = table.config.variants.get(route.target)?;
        if !route.pick() {
            return None;
        }
        let held = self.permits.clone().try_acquire_owned().ok().zip(self.budget.try_take(body.len()));
        let Some((permit, share)) = held else {
            self.shared.count(&target.name, OUTCOME_DROPPED);
            return None;
        };
        let Some(request) = copy(parts, body, &target.url) else {
            self.shared.count(&target.name, OUTCOME_FAILED);
            return None;
        };
        let (tx, rx) = oneshot::channel();
        let job = Job { request, target: target.name.clone(), shape, _permit: permit, share };
        tokio::spawn(run(self.shared.clone(), job, rx));
        Some(Shadow(tx))
    }
}

/// The copy of a prepared request for the backend at `url`.
fn copy(parts: &Parts, body: &Bytes, url: &str) -> Option<Request<Body>> {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("{}{}", url.trim_end_matches('/'), target).parse().ok()?;
    let mut request = Request::new(Body::from(body.clone()));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers.clone();
    request.headers_mut().insert(HeaderName::from_static(SHADOW_HEADER), HeaderValue::from_static("1"));
    Some(request)
}

/// One mirror in flight: it holds its place and its body's bytes.
struct Job {
    request: Request<Body>,
    target: String,
    shape: Option<AnswerShape>,
    _permit: OwnedSemaphorePermit,
    share: BudgetShare,
}

/// Sends the copy, waits for the client's answer, compares, counts.
async fn run(shared: Arc<Shared>, job: Job, source: oneshot::Receiver<SourceAnswer>) {
    let Job { request, target, shape, _permit, share } = job;
    let answer = shared.exchange(request, &target, shape).await;
    // The body has been sent (or never will be): its bytes are free.
    drop(share);
    // The client's answer is due within the request timeout too; a request
    // path that was cancelled (client gone) drops its end: not comparable.
    let source = tokio::time::timeout(shared.timeout, source).await.ok().and_then(Result::ok).flatten();
    if let MirrorAnswer::Answered(Some(samples)) = &answer {
        shared.predictions.record(&target, samples);
    }
    let metrics = &shared.metrics;
    match judge(source.as_deref(), &answer) {
        Outcome::Compared(c) => {
            let label = VariantLabel { variant: target.clone() };
            metrics.shadow_samples.get_or_create(&label).inc_by(c.samples);
            metrics.shadow_agreements.get_or_create(&label).inc_by(c.agreements);
            let side = |side| VariantSide { variant: target.clone(), side };
            metrics.shadow_confidence.get_or_create(&side(SIDE_SOURCE)).inc_by(c.source_confidence);
            metrics.shadow_confidence.get_or_create(&side(SIDE_SHADOW)).inc_by(c.shadow_confidence);
            shared.count(&target, OUTCOME_COMPARED);
        }
        Outcome::Failed => shared.count(&target, OUTCOME_FAILED),
        Outcome::Skipped => shared.count(&target, OUTCOME_SKIPPED),
    }
}

impl Shared {
    /// Sends the copy and reads its answer within the request timeout.
    async fn exchange(
        &self,
        request: Request<Body>,
        target: &str,
        shape: Option<AnswerShape>,
    ) -> MirrorAnswer {
        let started = std::time::Instant::now();
        let deadline = Instant::now() + self.timeout;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::debug!(%target, error = %e, "mirror unreachable");
                return MirrorAnswer::Failed;
            }
            Err(_) => return MirrorAnswer::Failed,
        };
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics
            .shadow_duration
            .get_or_create(&VariantLabel { variant: target.to_owned() })
            .observe(elapsed);
        if response.status().is_server_error() {
            return MirrorAnswer::Failed;
        }
        let Some(shape) = shape else { return MirrorAnswer::Answered(None) };
        if !predictions::worth_reading(response.status(), response.headers()) {
            return MirrorAnswer::Answered(None);
        }
        match predictions::read_whole(response.into_body(), deadline).await {
            Ok(bytes) => MirrorAnswer::Answered(predictions::parse(shape, &bytes)),
            Err(_) => MirrorAnswer::Failed,
        }
    }

    fn count(&self, target: &str, outcome: &'static str) {
        self.metrics
            .shadow_requests
            .get_or_create(&VariantOutcome { variant: target.to_owned(), outcome })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(labels: &[&str], confidence: f64) -> Vec<Sample> {
        labels.iter().map(|l| Sample { label: (*l).to_owned(), confidence }).collect()
    }

    #[test]
    fn exactly_percent_of_every_hundred_requests_are_mirrored() {
        for percent in [1, 7, 33, 50, 99, 100] {
            for start in [0, 100, 12_345] {
                let picked = (start..start + 100).filter(|&t| selected(t, percent)).count();
                assert_eq!(picked, percent as usize, "{percent}% from {start}");
            }
        }
        assert!((0..1000).all(|t| selected(t, 100)));
        let half: Vec<bool> = (0..4).map(|t| selected(t, 50)).collect();
        assert_eq!(half, [false, true, false, true], "spread, not bunched");
    }

    #[test]
    fn comparisons_count_agreements_and_confidences() {
        let source = samples(&["1", "2", "3"], 0.9);
        let mirror = MirrorAnswer::Answered(Some(samples(&["1", "0", "3"], 0.5)));
        let Outcome::Compared(c) = judge(Some(&source), &mirror) else { panic!("not compared") };
        assert_eq!((c.samples, c.agreements), (3, 2));
        assert!((c.source_confidence - 2.7).abs() < 1e-9 && (c.shadow_confidence - 1.5).abs() < 1e-9);
    }

    #[test]
    fn failures_and_incomparable_answers_are_told_apart() {
        let source = samples(&["1"], 0.9);
        assert_eq!(judge(Some(&source), &MirrorAnswer::Failed), Outcome::Failed);
        assert_eq!(judge(None, &MirrorAnswer::Failed), Outcome::Failed, "a dead target is its own failure");
        assert_eq!(judge(Some(&source), &MirrorAnswer::Answered(None)), Outcome::Failed, "unreadable");
        assert_eq!(judge(None, &MirrorAnswer::Answered(None)), Outcome::Skipped, "OIP, or a source 4xx");
        let two = MirrorAnswer::Answered(Some(samples(&["1", "1"], 0.9)));
        assert_eq!(judge(Some(&source), &two), Outcome::Skipped, "different sample counts");
        assert_eq!(judge(None, &two), Outcome::Skipped);
    }

    #[test]
    fn routes_follow_the_config_by_index() {
        let config = <RouterConfig as crate::config::RouterConfigExt>::parse(
            "variants:\n- {name: a, url: 'http://a', weight: 1}\n- {name: b, url: 'http://b', weight: 0}\nmirrors:\n- {source: a, target: b, percent: 100}\n",
        )
        .unwrap();
        let routes = routes(&config);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].as_ref().map(|r| r.target), Some(1));
        assert!(routes[1].is_none());
    }

    #[test]
    fn copies_keep_method_target_headers_and_body_and_say_they_are_copies() {
        let (mut parts, ()) =
            Request::post("http://source:8080/predict/batch?x=1").body(()).unwrap().into_parts();
        parts.headers.insert("x-user", HeaderValue::from_static("u1"));
        let copy = copy(&parts, &Bytes::from_static(b"[1]"), "http://target:8080/").unwrap();
        assert_eq!(copy.method(), "POST");
        assert_eq!(copy.uri(), "http://target:8080/predict/batch?x=1");
        assert_eq!(copy.headers()["x-user"], "u1");
        assert_eq!(copy.headers()[SHADOW_HEADER], "1");
    }
}

//! Canary analysis: what the canary backend did since its step started,
//! what the stable backend of its variant did over the same window, and
//! whether that meets `spec.rollout.analysis`. Pure.
//!
//! In a live step the canary's own client requests are judged; in the shadow
//! step its mirrored requests are (compared, or failed), and the agreement of
//! its answers with the stable version's on the same requests. Both judge
//! the prediction distribution (PSI of top-1 classes), the mean confidence
//! and, when labels came, the online accuracy against the stable version's
//! figures over the same window.

use std::collections::BTreeMap;

use hone_crds::inferenceservice::{Analysis, AnalysisResult, ClassCount, LatencyBucket, MetricsBaseline};
use hone_crds::router::metrics::{OUTCOME_COMPARED, OUTCOME_DROPPED, OUTCOME_FAILED};

use super::promtext::BackendMetrics;

/// Pseudo-count added to every class on both sides before PSI, so a class
/// one side never answered gives a large but finite term.
const PSI_SMOOTHING: f64 = 0.5;

/// The verdict on one step.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Enough requests, thresholds met, step interval over: move on.
    Pass,
    /// Enough requests and a threshold broken: abort, with the reason (naming the check).
    Fail(String),
    /// The step interval is over but fewer than `minRequests` came: wait.
    NotEnoughRequests,
    /// Within the step interval and nothing broken yet: wait.
    Wait,
}

/// Which kind of step is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The canary gets mirrored requests only.
    Shadow,
    /// The canary answers a share of the clients.
    Live,
}

/// The counters of `current` as a baseline for the next step.
pub fn baseline(current: &BackendMetrics) -> MetricsBaseline {
    MetricsBaseline {
        requests: count(current.requests),
        failures: count(current.failures()),
        latency_buckets: buckets(&current.buckets),
        predictions: current
            .predictions
            .iter()
            .map(|(class, n)| ClassCount { class: class.clone(), count: count(*n) })
            .collect(),
        confidence_sum: if current.confidence_sum.is_finite() {
            current.confidence_sum.max(0.0)
        } else {
            0.0
        },
        shadow_compared: count(shadow(current, OUTCOME_COMPARED)),
        shadow_failed: count(shadow(current, OUTCOME_FAILED)),
        shadow_dropped: count(shadow(current, OUTCOME_DROPPED)),
        shadow_samples: count(current.shadow_samples),
        shadow_agreements: count(current.shadow_agreements),
        shadow_latency_buckets: buckets(&current.shadow_buckets),
        feedback_correct: count(current.feedback_correct),
        feedback_incorrect: count(current.feedback_incorrect),
    }
}

fn shadow(current: &BackendMetrics, outcome: &str) -> f64 {
    current.shadow_requests.get(outcome).copied().unwrap_or(0.0)
}

fn buckets(from: &BTreeMap<String, f64>) -> Vec<LatencyBucket> {
    from.iter().map(|(le, n)| LatencyBucket { le: le.clone(), count: count(*n) }).collect()
}

/// What one backend did between two baselines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// Client requests answered.
    pub requests: i64,
    /// Of which failed.
    pub failures: i64,
    /// Latency buckets `(upper bound in seconds, cumulative count)`, sorted.
    pub latency: Vec<(f64, i64)>,
    /// Predictions by top-1 class.
    pub predictions: BTreeMap<String, i64>,
    /// Sum of their confidences.
    pub confidence_sum: f64,
    /// Mirrored requests compared.
    pub shadow_compared: i64,
    /// Mirrored requests that failed.
    pub shadow_failed: i64,
    /// Mirrored requests dropped.
    pub shadow_dropped: i64,
    /// Mirrored samples compared.
    pub shadow_samples: i64,
    /// Of which agreed.
    pub shadow_agreements: i64,
    /// Latency buckets of mirrored requests.
    pub shadow_latency: Vec<(f64, i64)>,
    /// Feedback labels that matched.
    pub feedback_correct: i64,
    /// Feedback labels that did not.
    pub feedback_incorrect: i64,
}

impl Window {
    fn predicted(&self) -> i64 {
        self.predictions.values().sum()
    }

    fn mean_confidence(&self) -> Option<f64> {
        let n = self.predicted();
        (n > 0).then(|| self.confidence_sum / n as f64)
    }
}

/// What happened since `start`. A counter that went down means a router
/// restarted (or left): the baseline no longer applies and everything counts.
pub fn window(current: &BackendMetrics, start: &MetricsBaseline) -> Window {
    let now = baseline(current);
    let total = |m: &[ClassCount]| m.iter().map(|c| c.count).sum::<i64>();
    let shadow_total = |b: &MetricsBaseline| b.shadow_compared + b.shadow_failed + b.shadow_dropped;
    let reset = now.requests < start.requests
        || now.failures < start.failures
        || total(&now.predictions) < total(&start.predictions)
        || shadow_total(&now) < shadow_total(start)
        || now.shadow_samples < start.shadow_samples
        || now.feedback_correct + now.feedback_incorrect < start.feedback_correct + start.feedback_incorrect;
    let empty = MetricsBaseline::default();
    let start = if reset { &empty } else { start };
    let then = |class: &str| start.predictions.iter().find(|c| c.class == class).map_or(0, |c| c.count);
    Window {
        requests: (now.requests - start.requests).max(0),
        failures: (now.failures - start.failures).max(0),
        latency: bucket_window(&now.latency_buckets, &start.latency_buckets),
        predictions: now
            .predictions
            .iter()
            .map(|c| (c.class.clone(), (c.count - then(&c.class)).max(0)))
            .collect(),
        confidence_sum: (now.confidence_sum - start.confidence_sum).max(0.0),
        shadow_compared: (now.shadow_compared - start.shadow_compared).max(0),
        shadow_failed: (now.shadow_failed - start.shadow_failed).max(0),
        shadow_dropped: (now.shadow_dropped - start.shadow_dropped).max(0),
        shadow_samples: (now.shadow_samples - start.shadow_samples).max(0),
        shadow_agreements: (now.shadow_agreements - start.shadow_agreements).max(0),
        shadow_latency: bucket_window(&now.shadow_latency_buckets, &start.shadow_latency_buckets),
        feedback_correct: (now.feedback_correct - start.feedback_correct).max(0),
        feedback_incorrect: (now.feedback_incorrect - start.feedback_incorrect).max(0),
    }
}

fn bucket_window(now: &[LatencyBucket], start: &[LatencyBucket]) -> Vec<(f64, i64)> {
    let base = |le: &str| start.iter().find(|b| b.le == le).map_or(0, |b| b.count);
    let mut buckets: Vec<(f64, i64)> = now
        .iter()
        .filter_map(|b| Some((b.le.parse::<f64>().ok()?, (b.count - base(&b.le)).max(0))))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The figures of one step: the canary's `canary` window judged as `step`,
/// against the stable backend's `stable` window over the same time.
pub fn measure(canary: &Window, stable: &Window, step: Step) -> AnalysisResult {
    let (requests, failures, latency) = match step {
        Step::Live => (canary.requests, canary.failures, &canary.latency),
        Step::Shadow => {
            (canary.shadow_compared + canary.shadow_failed, canary.shadow_failed, &canary.shadow_latency)
        }
    };
    let predicted = canary.predicted();
    let feedback = canary.feedback_correct + canary.feedback_incorrect;
    let shadow = step == Step::Shadow;
    AnalysisResult {
        requests,
        error_rate: if requests > 0 { ratio(failures, requests) } else { 0.0 },
        p99_latency_ms: quantile(0.99, latency) * 1000.0,
        stable_requests: Some(stable.requests),
        stable_error_rate: Some(if stable.requests > 0 {
            ratio(stable.failures, stable.requests)
        } else {
            0.0
        }),
        stable_p99_latency_ms: Some(quantile(0.99, &stable.latency) * 1000.0),
        prediction_psi: (predicted > 0 && stable.predicted() > 0)
            .then(|| net_psi(&canary.predictions, &stable.predictions)),
        predictions: Some(predicted),
        stable_predictions: Some(stable.predicted()),
        mean_confidence: canary.mean_confidence(),
        stable_mean_confidence: stable.mean_confidence(),
        shadow_agreement: (shadow && canary.shadow_samples > 0)
            .then(|| ratio(canary.shadow_agreements, canary.shadow_samples)),
        shadow_samples: shadow.then_some(canary.shadow_samples),
        shadow_dropped: shadow.then_some(canary.shadow_dropped),
        online_accuracy: (feedback > 0).then(|| ratio(canary.feedback_correct, feedback)),
        feedback: (feedback > 0).then_some(feedback),
    }
}

/// [`psi`] net of what two samples of one distribution show by chance at
/// these sizes, `(k - 1) * (1/n1 + 1/n2)` for `k` classes (its expectation
/// under no shift): without it, a sound canary's 100 predictions against
/// 600 would show about 0.1 from noise alone. Never below 0.
pub fn net_psi(canary: &BTreeMap<String, i64>, stable: &BTreeMap<String, i64>) -> f64 {
    let n = |m: &BTreeMap<String, i64>| m.values().map(|c| (*c).max(0)).sum::<i64>();
    let (n1, n2) = (n(canary), n(stable));
    if n1 == 0 || n2 == 0 {
        return 0.0;
    }
    let mut classes: Vec<&String> = canary.keys().chain(stable.keys()).collect();
    classes.sort();
    classes.dedup();
    let chance = (classes.len().saturating_sub(1)) as f64 * (1.0 / n1 as f64 + 1.0 / n2 as f64);
    (psi(canary, stable) - chance).max(0.0)
}

/// Population stability index of two class-count distributions:
/// `sum((p - q) * ln(p / q))` over the union of classes, each count smoothed
/// by [`PSI_SMOOTHING`]. 0 for identical shares; about 0.1 is a small shift,
/// above 0.25 a large one.
pub fn psi(canary: &BTreeMap<String, i64>, stable: &BTreeMap<String, i64>) -> f64 {
    let classes: Vec<&String> = {
        let mut all: Vec<&String> = canary.keys().chain(stable.keys()).collect();
        all.sort();
        all.dedup();
        all
    };
    let k = classes.len() as f64;
    let total =
        |m: &BTreeMap<String, i64>| m.values().map(|n| (*n).max(0) as f64).sum::<f64>() + PSI_SMOOTHING * k;
    let (nc, ns) = (total(canary), total(stable));
    classes
        .iter()
        .map(|class| {
            let share = |m: &BTreeMap<String, i64>, n: f64| {
                (m.get(*class).copied().unwrap_or(0).max(0) as f64 + PSI_SMOOTHING) / n
            };
            let (p, q) = (share(canary, nc), share(stable, ns));
            (p - q) * (p / q).ln()
        })
        .sum()
}

/// Judges `result` of a `step` against `analysis`. A broken threshold fails
/// as soon as its check has enough data (no need to wait out the step);
/// passing needs `minRequests` and the whole step interval. The checks, each
/// named in its failure: error rate (`maxErrorRate`, or
/// `maxErrorRateIncrease` over stable), p99 latency (`maxP99LatencyMs`, or
/// `maxP99LatencyRatio` to stable), `minShadowAgreement` (shadow step),
/// `maxPredictionPsi` and `maxConfidenceDrop` (once both sides have
/// `minPredictionSamples`), `minOnlineAccuracy` (once `minFeedback` labels came).
pub fn judge(result: &AnalysisResult, analysis: &Analysis, step: Step, interval_over: bool) -> Verdict {
    let checks: [Check; 6] = [errors, latency, agreement, distribution, confidence, online_accuracy];
    if let Some(why) = checks.iter().find_map(|check| check(result, analysis, step, interval_over)) {
        return Verdict::Fail(why);
    }
    if !interval_over {
        Verdict::Wait
    } else if result.requests < analysis.min_requests {
        Verdict::NotEnoughRequests
    } else {
        Verdict::Pass
    }
}

/// One check: the result, the spec, the step, and whether its interval is over.
type Check = fn(&AnalysisResult, &Analysis, Step, bool) -> Option<String>;

/// Whether enough canary requests came for the request checks.
fn enough(result: &AnalysisResult, analysis: &Analysis) -> bool {
    result.requests >= analysis.min_requests.max(0) && result.requests > 0
}

fn what(step: Step) -> &'static str {
    match step {
        Step::Shadow => "mirrored requests",
        Step::Live => "requests",
    }
}

fn errors(result: &AnalysisResult, analysis: &Analysis, step: Step, _: bool) -> Option<String> {
    if !enough(result, analysis) {
        return None;
    }
    let rate = result.error_rate;
    let n = result.requests;
    let kind = what(step);
    match (analysis.max_error_rate_increase, result.stable_error_rate) {
        (Some(increase), Some(stable)) => (rate - stable > increase).then(|| {
            format!(
                "error rate {:.2}% over {n} {kind} is {:.2} points above the stable version's {:.2}%, more than maxErrorRateIncrease {:.2}",
                rate * 100.0,
                (rate - stable) * 100.0,
                stable * 100.0,
                increase * 100.0
            )
        }),
        _ => (rate > analysis.max_error_rate).then(|| {
            format!(
                "error rate {:.2}% over {n} {kind} exceeds maxErrorRate {:.2}%",
                rate * 100.0,
                analysis.max_error_rate * 100.0
            )
        }),
    }
}

fn latency(result: &AnalysisResult, analysis: &Analysis, step: Step, _: bool) -> Option<String> {
    if !enough(result, analysis) {
        return None;
    }
    let p99 = result.p99_latency_ms;
    let n = result.requests;
    let kind = what(step);
    let stable = result.stable_p99_latency_ms.filter(|p| *p > 0.0 && result.stable_requests.unwrap_or(0) > 0);
    match (analysis.max_p99_latency_ratio, stable) {
        (Some(ratio), Some(stable)) => (p99 > ratio * stable).then(|| {
            format!(
                "p99 latency {p99:.0} ms over {n} {kind} is {:.1} times the stable version's {stable:.0} ms, more than maxP99LatencyRatio {ratio}",
                p99 / stable
            )
        }),
        _ => (p99 > analysis.max_p99_latency_ms).then(|| {
            format!(
                "p99 latency {p99:.0} ms over {n} {kind} exceeds maxP99LatencyMs {:.0} ms",
                analysis.max_p99_latency_ms
            )
        }),
    }
}

/// Within the step, agreement fails early only when it is clearly below the
/// minimum (the upper end of its 99% Wilson interval is), so the noise of the
/// first few dozen samples cannot abort a sound canary; at the end of the
/// step the measured share decides.
fn agreement(
    result: &AnalysisResult,
    analysis: &Analysis,
    step: Step,
    interval_over: bool,
) -> Option<String> {
    let (Step::Shadow, Some(agreement), Some(samples)) =
        (step, result.shadow_agreement, result.shadow_samples)
    else {
        return None;
    };
    let min = analysis.min_shadow_agreement;
    if samples < analysis.min_requests.max(1) {
        return None;
    }
    let judged = if interval_over { agreement } else { wilson_upper(agreement, samples) };
    (judged < min).then(|| {
        let how = if interval_over { "" } else { " (clearly: even the upper end of its 99% interval is)" };
        format!(
            "shadow agreement {:.1}% over {samples} compared samples is below minShadowAgreement {:.1}%{how}",
            agreement * 100.0,
            min * 100.0
        )
    })
}

/// Upper end of the 99% Wilson score interval of a share `p` of `n` trials.
pub fn wilson_upper(p: f64, n: i64) -> f64 {
    const Z: f64 = 2.576;
    if n <= 0 {
        return 1.0;
    }
    let n = n as f64;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre + spread) / (1.0 + z2 / n)).min(1.0)
}

/// Both sides have `minPredictionSamples` predictions.
fn comparable(result: &AnalysisResult, analysis: &Analysis) -> bool {
    let min = analysis.min_prediction_samples.max(1);
    result.predictions.unwrap_or(0) >= min && result.stable_predictions.unwrap_or(0) >= min
}

fn distribution(result: &AnalysisResult, analysis: &Analysis, _: Step, _: bool) -> Option<String> {
    let psi = result.prediction_psi?;
    (analysis.max_prediction_psi > 0.0 && comparable(result, analysis) && psi > analysis.max_prediction_psi).then(
        || {
            format!(
                "prediction PSI {psi:.3} (net of chance) of the canary's {} predictions against the stable version's exceeds maxPredictionPsi {}",
                result.predictions.unwrap_or(0),
                analysis.max_prediction_psi
            )
        },
    )
}

fn confidence(result: &AnalysisResult, analysis: &Analysis, _: Step, _: bool) -> Option<String> {
    let (Some(canary), Some(stable)) = (result.mean_confidence, result.stable_mean_confidence) else {
        return None;
    };
    (comparable(result, analysis) && stable - canary > analysis.max_confidence_drop).then(|| {
        format!(
            "mean confidence {canary:.3} is {:.3} below the stable version's {stable:.3}, more than maxConfidenceDrop {}",
            stable - canary,
            analysis.max_confidence_drop
        )
    })
}

fn online_accuracy(result: &AnalysisResult, analysis: &Analysis, _: Step, _: bool) -> Option<String> {
    let (Some(min), Some(accuracy), Some(labels)) =
        (analysis.min_online_accuracy, result.online_accuracy, result.feedback)
    else {
        return None;
    };
    (labels >= analysis.min_feedback.max(1) && accuracy < min).then(|| {
        format!(
            "online accuracy {:.1}% over {labels} feedback labels is below minOnlineAccuracy {:.1}%",
            accuracy * 100.0,
            min * 100.0
        )
    })
}

/// The `q` quantile of cumulative `(upper bound, count)` buckets sorted by
/// bound, interpolated linearly inside a bucket as Prometheus'
/// `histogram_quantile` does; above the last finite bound it answers that bound.
pub fn quantile(q: f64, buckets: &[(f64, i64)]) -> f64 {
    let Some(total) = buckets.iter().map(|(_, n)| *n).max() else { return 0.0 };
    if total <= 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0i64);
    for &(upper, count) in buckets {
        if count as f64 >= rank {
            if upper.is_infinite() {
                return lower;
            }
            let in_bucket = (count - below) as f64;
            if in_bucket <= 0.0 {
                return upper;
            }
            return lower + (upper - lower) * (rank - below as f64) / in_bucket;
        }
        (lower, below) = (upper, count);
    }
    lower
}

fn count(value: f64) -> i64 {
    // Counters are non-negative integers the router keeps as u64; clamp what does not fit.
    if value.is_finite() && value > 0.0 { value.round().min(i64::MAX as f64) as i64 } else { 0 }
}

fn ratio(part: i64, whole: i64) -> f64 {
    part as f64 / whole as f64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn backend(requests: f64, errors: f64, buckets: &[(&str, f64)]) -> BackendMetrics {
        BackendMetrics {
            requests,
            server_errors: errors,
            buckets: buckets.iter().map(|(le, n)| ((*le).to_owned(), *n)).collect(),
            ..Default::default()
        }
    }

    fn analysis(min_requests: i64) -> Analysis {
        Analysis { max_error_rate: 0.05, max_p99_latency_ms: 100.0, min_requests, ..Default::default() }
    }

    fn classes(counts: &[(&str, i64)]) -> BTreeMap<String, i64> {
        counts.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect()
    }

    /// 50 live requests at 1% errors and 40 ms, nothing else measured.
    fn ok() -> AnalysisResult {
        AnalysisResult { requests: 50, error_rate: 0.01, p99_latency_ms: 40.0, ..Default::default() }
    }

    #[test]
    fn p99_interpolates_inside_the_bucket() {
        // 100 requests: 90 under 10 ms, 10 between 10 and 20 ms.
        let buckets = [(0.01, 90), (0.02, 100), (f64::INFINITY, 100)];
        let p99 = quantile(0.99, &buckets);
        assert!((p99 - 0.019).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &[(0.01, 0), (f64::INFINITY, 0)]), 0.0);
        // Everything above the last finite bound: that bound.
        assert_eq!(quantile(0.99, &[(0.01, 0), (f64::INFINITY, 10)]), 0.01);
    }

    #[test]
    fn the_window_starts_at_the_baseline() {
        let start = backend(100.0, 1.0, &[("0.01", 100.0), ("+Inf", 100.0)]);
        let now = backend(200.0, 11.0, &[("0.01", 100.0), ("0.02", 200.0), ("+Inf", 200.0)]);
        let result = measure(&window(&now, &baseline(&start)), &Window::default(), Step::Live);
        assert_eq!(result.requests, 100);
        assert!((result.error_rate - 0.10).abs() < 1e-9);
        // All 100 new requests are in (0.01, 0.02]: p99 near 20 ms, not the 10 ms of before.
        assert!(result.p99_latency_ms > 19.0 && result.p99_latency_ms <= 20.0, "{result:?}");
    }

    #[test]
    fn a_counter_reset_counts_everything_since() {
        let start = backend(500.0, 0.0, &[("+Inf", 500.0)]);
        let now = backend(30.0, 3.0, &[("0.01", 30.0), ("+Inf", 30.0)]);
        let result = measure(&window(&now, &baseline(&start)), &Window::default(), Step::Live);
        assert_eq!(result.requests, 30);
        assert!((result.error_rate - 0.1).abs() < 1e-9);
        // A router that restarted lost its prediction counts too: they count from zero.
        let mut before = BackendMetrics::default();
        before.predictions.insert("1".into(), 400.0);
        let mut after = BackendMetrics::default();
        after.predictions.insert("1".into(), 30.0);
        assert_eq!(window(&after, &baseline(&before)).predictions["1"], 30);
    }

    #[test]
    fn verdicts_wait_for_requests_and_the_interval() {
        let live = Step::Live;
        assert_eq!(judge(&ok(), &analysis(20), live, true), Verdict::Pass);
        assert_eq!(judge(&ok(), &analysis(20), live, false), Verdict::Wait);
        assert_eq!(judge(&ok(), &analysis(80), live, true), Verdict::NotEnoughRequests);
        let errors = AnalysisResult { error_rate: 0.2, ..ok() };
        assert!(
            matches!(judge(&errors, &analysis(20), live, false), Verdict::Fail(m) if m.contains("maxErrorRate"))
        );
        assert_eq!(judge(&errors, &analysis(80), live, true), Verdict::NotEnoughRequests, "too few to judge");
        let slow = AnalysisResult { p99_latency_ms: 250.0, ..ok() };
        assert!(
            matches!(judge(&slow, &analysis(20), live, true), Verdict::Fail(m) if m.contains("maxP99LatencyMs"))
        );
        let idle = AnalysisResult::default();
        assert_eq!(judge(&idle, &analysis(0), live, true), Verdict::Pass, "minRequests 0 accepts no traffic");
    }

    #[test]
    fn comparative_limits_replace_the_fixed_ones_when_asked() {
        let spec = Analysis {
            max_error_rate_increase: Some(0.02),
            max_p99_latency_ratio: Some(1.5),
            ..analysis(20)
        };
        // 20% errors where stable has 19%: within 2 points, though far over maxErrorRate.
        let noisy = AnalysisResult { error_rate: 0.20, stable_error_rate: Some(0.19), ..ok() };
        assert_eq!(judge(&noisy, &spec, Step::Live, true), Verdict::Pass);
        let worse = AnalysisResult { error_rate: 0.25, stable_error_rate: Some(0.19), ..ok() };
        assert!(
            matches!(judge(&worse, &spec, Step::Live, true), Verdict::Fail(m) if m.contains("maxErrorRateIncrease"))
        );
        // 300 ms where stable takes 250 ms: 1.2 times, over maxP99LatencyMs but within the ratio.
        let slow_both = AnalysisResult {
            p99_latency_ms: 300.0,
            stable_p99_latency_ms: Some(250.0),
            stable_requests: Some(400),
            ..ok()
        };
        assert_eq!(judge(&slow_both, &spec, Step::Live, true), Verdict::Pass);
        let slower = AnalysisResult { p99_latency_ms: 400.0, ..slow_both.clone() };
        assert!(
            matches!(judge(&slower, &spec, Step::Live, true), Verdict::Fail(m) if m.contains("maxP99LatencyRatio"))
        );
        // No stable requests in the window: nothing to compare with, the fixed limit holds.
        let alone = AnalysisResult { stable_requests: Some(0), ..slow_both };
        assert!(
            matches!(judge(&alone, &spec, Step::Live, true), Verdict::Fail(m) if m.contains("maxP99LatencyMs"))
        );
    }

    #[test]
    fn psi_is_zero_for_equal_shares_and_grows_with_the_shift() {
        let stable = classes(&[("0", 500), ("1", 500)]);
        assert!(psi(&classes(&[("0", 50), ("1", 50)]), &stable).abs() < 1e-3);
        // 60/40 against 50/50: (0.1 ln 1.2) + (-0.1 ln 0.8) = 0.0405.
        let small = psi(&classes(&[("0", 600), ("1", 400)]), &stable);
        assert!((small - 0.0405).abs() < 0.002, "{small}");
        // One class the stable version never answers: large, finite.
        let new_class = psi(&classes(&[("0", 50), ("1", 0), ("9", 50)]), &stable);
        assert!(new_class.is_finite() && new_class > 1.0, "{new_class}");
    }

    #[test]
    fn psi_is_judged_net_of_what_chance_shows_at_the_window_sizes() {
        // 100 against 600 predictions of the same ten classes, shares a little off by chance.
        let canary = classes(&[
            ("0", 14),
            ("1", 8),
            ("2", 12),
            ("3", 7),
            ("4", 10),
            ("5", 9),
            ("6", 11),
            ("7", 6),
            ("8", 13),
            ("9", 10),
        ]);
        let stable = classes(&[
            ("0", 60),
            ("1", 60),
            ("2", 60),
            ("3", 60),
            ("4", 60),
            ("5", 60),
            ("6", 60),
            ("7", 60),
            ("8", 60),
            ("9", 60),
        ]);
        let raw = psi(&canary, &stable);
        assert!(raw > 0.05, "{raw}");
        // 9 * (1/100 + 1/600) = 0.105 is chance.
        assert!((net_psi(&canary, &stable) - (raw - 0.105).max(0.0)).abs() < 1e-9);
        assert!(net_psi(&canary, &stable) < 0.05, "{raw}");
        // A real shift stays: a third of the answers on one class.
        let shifted = classes(&[
            ("0", 40),
            ("1", 6),
            ("2", 7),
            ("3", 7),
            ("4", 7),
            ("5", 7),
            ("6", 6),
            ("7", 7),
            ("8", 7),
            ("9", 6),
        ]);
        assert!(net_psi(&shifted, &stable) > 0.25, "{}", net_psi(&shifted, &stable));
        assert_eq!(net_psi(&classes(&[]), &stable), 0.0);
    }

    #[test]
    fn wilson_bounds_shrink_with_samples() {
        assert!(wilson_upper(0.8, 20) > 0.9);
        assert!(wilson_upper(0.8, 2000) < 0.83);
        assert_eq!(wilson_upper(0.5, 0), 1.0);
        assert!(wilson_upper(1.0, 50) <= 1.0);
    }

    #[test]
    fn the_prediction_distribution_is_judged_once_both_sides_have_samples() {
        let shifted = AnalysisResult {
            prediction_psi: Some(0.8),
            predictions: Some(150),
            stable_predictions: Some(1500),
            ..ok()
        };
        let spec = analysis(20);
        assert!(
            matches!(judge(&shifted, &spec, Step::Live, false), Verdict::Fail(m) if m.contains("maxPredictionPsi"))
        );
        let few = AnalysisResult { predictions: Some(99), ..shifted.clone() };
        assert_eq!(judge(&few, &spec, Step::Live, true), Verdict::Pass, "99 predictions are too noisy");
        let off = Analysis { max_prediction_psi: 0.0, ..spec };
        assert_eq!(judge(&shifted, &off, Step::Live, true), Verdict::Pass, "0 turns the check off");
    }

    #[test]
    fn a_confidence_drop_against_stable_fails() {
        let unsure = AnalysisResult {
            mean_confidence: Some(0.70),
            stable_mean_confidence: Some(0.95),
            predictions: Some(200),
            stable_predictions: Some(2000),
            ..ok()
        };
        assert!(
            matches!(judge(&unsure, &analysis(20), Step::Live, true), Verdict::Fail(m) if m.contains("maxConfidenceDrop"))
        );
        let close = AnalysisResult { mean_confidence: Some(0.90), ..unsure.clone() };
        assert_eq!(judge(&close, &analysis(20), Step::Live, true), Verdict::Pass);
        let surer = AnalysisResult { mean_confidence: Some(0.99), ..unsure };
        assert_eq!(
            judge(&surer, &analysis(20), Step::Live, true),
            Verdict::Pass,
            "more confident is no drop"
        );
    }

    #[test]
    fn shadow_agreement_is_judged_in_the_shadow_step_only() {
        let shadow = AnalysisResult { shadow_agreement: Some(0.6), shadow_samples: Some(100), ..ok() };
        assert!(
            matches!(judge(&shadow, &analysis(20), Step::Shadow, false), Verdict::Fail(m) if m.contains("minShadowAgreement"))
        );
        let few = AnalysisResult { shadow_samples: Some(10), ..shadow.clone() };
        assert_eq!(
            judge(&few, &analysis(20), Step::Shadow, false),
            Verdict::Wait,
            "10 samples are fewer than minRequests"
        );
        assert_eq!(judge(&shadow, &analysis(20), Step::Live, true), Verdict::Pass);
        let agreeing = AnalysisResult { shadow_agreement: Some(0.97), ..shadow };
        assert_eq!(judge(&agreeing, &analysis(20), Step::Shadow, true), Verdict::Pass);
    }

    #[test]
    fn shadow_windows_judge_mirrored_requests_not_client_ones() {
        let mut canary =
            Window { shadow_compared: 90, shadow_failed: 10, shadow_dropped: 40, ..Default::default() };
        canary.shadow_samples = 90;
        canary.shadow_agreements = 81;
        canary.shadow_latency = vec![(0.01, 100), (f64::INFINITY, 100)];
        let stable =
            Window { requests: 500, latency: vec![(0.01, 500), (f64::INFINITY, 500)], ..Default::default() };
        let result = measure(&canary, &stable, Step::Shadow);
        assert_eq!(result.requests, 100, "compared and failed, not dropped or skipped");
        assert!((result.error_rate - 0.1).abs() < 1e-9);
        assert_eq!(result.shadow_agreement, Some(0.9));
        assert_eq!(result.shadow_dropped, Some(40));
        assert!(
            matches!(judge(&result, &analysis(20), Step::Shadow, true), Verdict::Fail(m) if m.contains("mirrored requests"))
        );
        let live = measure(&canary, &stable, Step::Live);
        assert_eq!((live.requests, live.shadow_agreement), (0, None));
    }

    #[test]
    fn online_accuracy_needs_min_feedback_and_a_threshold() {
        let labelled = AnalysisResult { online_accuracy: Some(0.7), feedback: Some(60), ..ok() };
        assert_eq!(judge(&labelled, &analysis(20), Step::Live, true), Verdict::Pass, "no minimum asked for");
        let spec = Analysis { min_online_accuracy: Some(0.9), ..analysis(20) };
        assert!(
            matches!(judge(&labelled, &spec, Step::Live, false), Verdict::Fail(m) if m.contains("minOnlineAccuracy"))
        );
        let few = AnalysisResult { feedback: Some(49), ..labelled };
        assert_eq!(
            judge(&few, &spec, Step::Live, true),
            Verdict::Pass,
            "49 labels are fewer than minFeedback"
        );
        let mut canary = Window { feedback_correct: 45, feedback_incorrect: 5, ..Default::default() };
        canary.predictions = classes(&[("1", 50)]);
        let result = measure(&canary, &Window::default(), Step::Live);
        assert_eq!((result.online_accuracy, result.feedback), (Some(0.9), Some(50)));
    }
}

//! Canary analysis: what the canary backend did since its step started, and
//! whether that meets `spec.rollout.analysis`. Pure.

use hone_crds::inferenceservice::{Analysis, AnalysisResult, LatencyBucket, MetricsBaseline};

use super::promtext::BackendMetrics;

/// The verdict on one step.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Enough requests, thresholds met, step interval over: move on.
    Pass,
    /// Enough requests and a threshold broken: abort, with the reason.
    Fail(String),
    /// The step interval is over but fewer than `minRequests` came: wait.
    NotEnoughRequests,
    /// Within the step interval and nothing broken yet: wait.
    Wait,
}

/// The counters of `current` as a baseline for the next step.
pub fn baseline(current: &BackendMetrics) -> MetricsBaseline {
    MetricsBaseline {
        requests: count(current.requests),
        failures: count(current.failures()),
        latency_buckets: current
            .buckets
            .iter()
            .map(|(le, n)| LatencyBucket { le: le.clone(), count: count(*n) })
            .collect(),
    }
}

/// What happened since `baseline`. Counters that went down mean a router
/// restarted (or left): the baseline no longer applies and everything counts.
pub fn since(current: &BackendMetrics, start: &MetricsBaseline) -> AnalysisResult {
    let now = baseline(current);
    let reset = now.requests < start.requests || now.failures < start.failures;
    let base = |le: &str| -> i64 {
        if reset {
            return 0;
        }
        start.latency_buckets.iter().find(|b| b.le == le).map_or(0, |b| b.count)
    };
    let requests = if reset { now.requests } else { now.requests - start.requests };
    let failures = if reset { now.failures } else { now.failures - start.failures };
    let mut buckets: Vec<(f64, i64)> = now
        .latency_buckets
        .iter()
        .filter_map(|b| Some((b.le.parse::<f64>().ok()?, (b.count - base(&b.le)).max(0))))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    AnalysisResult {
        requests,
        error_rate: if requests > 0 { ratio(failures, requests) } else { 0.0 },
        p99_latency_ms: quantile(0.99, &buckets) * 1000.0,
    }
}

/// Judges `result` against `analysis`. A broken threshold fails as soon as
/// `minRequests` came (no need to wait out the step); passing needs both the
/// requests and the whole step interval.
pub fn judge(result: &AnalysisResult, analysis: &Analysis, interval_over: bool) -> Verdict {
    let enough = result.requests >= analysis.min_requests.max(0) && result.requests > 0;
    if enough && result.error_rate > analysis.max_error_rate {
        return Verdict::Fail(format!(
            "error rate {:.2}% over {} requests exceeds maxErrorRate {:.2}%",
            result.error_rate * 100.0,
            result.requests,
            analysis.max_error_rate * 100.0
        ));
    }
    if enough && result.p99_latency_ms > analysis.max_p99_latency_ms {
        return Verdict::Fail(format!(
            "p99 latency {:.0} ms over {} requests exceeds maxP99LatencyMs {:.0} ms",
            result.p99_latency_ms, result.requests, analysis.max_p99_latency_ms
        ));
    }
    if !interval_over {
        Verdict::Wait
    } else if result.requests < analysis.min_requests {
        Verdict::NotEnoughRequests
    } else {
        Verdict::Pass
    }
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
    use std::collections::BTreeMap;

    use super::*;

    fn backend(requests: f64, errors: f64, buckets: &[(&str, f64)]) -> BackendMetrics {
        BackendMetrics {
            requests,
            server_errors: errors,
            transport_errors: 0.0,
            buckets: buckets.iter().map(|(le, n)| ((*le).to_owned(), *n)).collect::<BTreeMap<_, _>>(),
        }
    }

    fn analysis(min_requests: i64) -> Analysis {
        Analysis { max_error_rate: 0.05, max_p99_latency_ms: 100.0, min_requests }
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
        let result = since(&now, &baseline(&start));
        assert_eq!(result.requests, 100);
        assert!((result.error_rate - 0.10).abs() < 1e-9);
        // All 100 new requests are in (0.01, 0.02]: p99 near 20 ms, not the 10 ms of before.
        assert!(result.p99_latency_ms > 19.0 && result.p99_latency_ms <= 20.0, "{result:?}");
    }

    #[test]
    fn a_counter_reset_counts_everything_since() {
        let start = backend(500.0, 0.0, &[("+Inf", 500.0)]);
        let now = backend(30.0, 3.0, &[("0.01", 30.0), ("+Inf", 30.0)]);
        let result = since(&now, &baseline(&start));
        assert_eq!(result.requests, 30);
        assert!((result.error_rate - 0.1).abs() < 1e-9);
    }

    #[test]
    fn verdicts_wait_for_requests_and_the_interval() {
        let ok = AnalysisResult { requests: 50, error_rate: 0.01, p99_latency_ms: 40.0 };
        assert_eq!(judge(&ok, &analysis(20), true), Verdict::Pass);
        assert_eq!(judge(&ok, &analysis(20), false), Verdict::Wait);
        assert_eq!(judge(&ok, &analysis(80), true), Verdict::NotEnoughRequests);
        let errors = AnalysisResult { error_rate: 0.2, ..ok.clone() };
        assert!(matches!(judge(&errors, &analysis(20), false), Verdict::Fail(m) if m.contains("error rate")));
        assert_eq!(judge(&errors, &analysis(80), true), Verdict::NotEnoughRequests, "too few to judge");
        let slow = AnalysisResult { p99_latency_ms: 250.0, ..ok };
        assert!(matches!(judge(&slow, &analysis(20), true), Verdict::Fail(m) if m.contains("p99")));
        let idle = AnalysisResult { requests: 0, error_rate: 0.0, p99_latency_ms: 0.0 };
        assert_eq!(judge(&idle, &analysis(0), true), Verdict::Pass, "minRequests 0 accepts no traffic");
    }
}

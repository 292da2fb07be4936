//! Input drift: a rolling window of recent inputs per feature, compared with
//! the training distribution in `model.json` by the two-sample
//! Kolmogorov-Smirnov statistic and the population stability index.

use std::collections::VecDeque;
use std::sync::Mutex;

use hone_crds::contract::FeatureStats;
use serde::Serialize;

/// Smallest bin fraction in PSI, so an empty bin does not make it infinite.
const PSI_EPSILON: f64 = 1e-4;

/// Drift of one feature.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDrift {
    /// Feature name (or `channel_<i>`).
    pub name: String,
    /// Recent samples compared.
    pub samples: usize,
    /// Two-sample Kolmogorov-Smirnov statistic (0 = same distribution, 1 = disjoint).
    pub ks: f64,
    /// Asymptotic p-value of the KS statistic.
    pub ks_p_value: f64,
    /// Population stability index (< 0.1 stable, > 0.25 shifted).
    pub psi: f64,
    /// Mean of the recent samples.
    pub mean: f64,
    /// Mean of the training samples.
    pub reference_mean: f64,
}

/// The `/drift` answer.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// Most recent samples kept per feature.
    pub window: usize,
    /// Whether the model card has training statistics to compare with.
    pub reference_available: bool,
    /// One entry per feature; empty until a sample arrives.
    pub features: Vec<FeatureDrift>,
}

/// Keeps the recent inputs and compares them with the training statistics.
#[derive(Debug)]
pub struct DriftMonitor {
    window: usize,
    reference: Vec<FeatureStats>,
    recent: Mutex<Vec<VecDeque<f64>>>,
}

impl DriftMonitor {
    /// A monitor keeping `window` samples per feature, against `reference`.
    pub fn new(window: usize, reference: Vec<FeatureStats>) -> Self {
        let mut reference = reference;
        for f in &mut reference {
            f.reference.retain(|v| v.is_finite());
            f.reference.sort_by(f64::total_cmp);
        }
        let recent = (0..reference.len()).map(|_| VecDeque::with_capacity(window.min(4096))).collect();
        Self { window: window.max(1), reference, recent: Mutex::new(recent) }
    }

    /// Records one sample's drift features (ignored when the count differs
    /// from the reference's, e.g. a card without statistics).
    pub fn observe(&self, features: &[f64]) {
        if features.len() != self.reference.len() || features.is_empty() {
            return;
        }
        // A poisoned lock only means another thread panicked mid-push; the
        // window is still a valid deque, so keep using it.
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for (window, &x) in recent.iter_mut().zip(features) {
            if window.len() == self.window {
                window.pop_front();
            }
            window.push_back(x);
        }
    }

    /// The drift of every feature over the current window.
    pub fn report(&self) -> DriftReport {
        let snapshot: Vec<Vec<f64>> = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.iter().map(|w| w.iter().copied().collect()).collect()
        };
        let features = self
            .reference
            .iter()
            .zip(snapshot)
            .filter(|(_, sample)| !sample.is_empty())
            .map(|(reference, mut sample)| {
                let mean = sample.iter().sum::<f64>() / sample.len() as f64;
                let psi = psi(&sample, &reference.bin_edges, &reference.bin_fractions);
                sample.sort_by(f64::total_cmp);
                let ks = ks_statistic(&sample, &reference.reference);
                FeatureDrift {
                    name: reference.name.clone(),
                    samples: sample.len(),
                    ks,
                    ks_p_value: ks_p_value(ks, sample.len(), reference.reference.len()),
                    psi,
                    mean,
                    reference_mean: reference.mean,
                }
            })
            .collect();
        DriftReport { window: self.window, reference_available: !self.reference.is_empty(), features }
    }
}

/// Two-sample KS statistic of two sorted samples: the largest gap between
/// their empirical distribution functions. 0 when either is empty.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// Asymptotic p-value of a two-sample KS statistic `d` for sizes `n` and `m`
/// (Numerical Recipes' `probks` with the effective-size correction).
pub fn ks_p_value(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let en = ((n * m) as f64 / (n + m) as f64).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=100 {
        let term = sign * 2.0 * (-2.0 * (j * j) as f64 * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-10 {
            break;
        }
        sign = -sign;
    }
    sum.clamp(0.0, 1.0)
}

/// Population stability index of `sample` against the reference bins:
/// `edges` are the inner bin edges (a value `v` falls in bin `#{e <= v}`),
/// `fractions` the reference share of each bin.
pub fn psi(sample: &[f64], edges: &[f64], fractions: &[f64]) -> f64 {
    if sample.is_empty() || fractions.len() != edges.len() + 1 {
        return 0.0;
    }
    let mut counts = vec![0usize; fractions.len()];
    for &v in sample {
        counts[edges.partition_point(|&e| e <= v)] += 1;
    }
    counts
        .iter()
        .zip(fractions)
        .map(|(&c, &q)| {
            let p = (c as f64 / sample.len() as f64).max(PSI_EPSILON);
            let q = q.max(PSI_EPSILON);
            (p - q) * (p / q).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(name: &str, reference: Vec<f64>) -> FeatureStats {
        FeatureStats {
            name: name.into(),
            mean: reference.iter().sum::<f64>() / reference.len() as f64,
            std: 1.0,
            min: 0.0,
            max: 1.0,
            bin_edges: vec![0.25, 0.5, 0.75],
            bin_fractions: vec![0.25; 4],
            reference,
        }
    }

    fn uniform(n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|i| lo + (hi - lo) * (i as f64 + 0.5) / n as f64).collect()
    }

    #[test]
    fn ks_is_zero_for_same_and_one_for_disjoint_samples() {
        let a = uniform(100, 0.0, 1.0);
        assert_eq!(ks_statistic(&a, &a), 0.0);
        assert_eq!(ks_statistic(&uniform(10, 0.0, 1.0), &uniform(10, 2.0, 3.0)), 1.0);
        let d = ks_statistic(&uniform(100, 0.0, 1.0), &uniform(100, 0.5, 1.5));
        assert!((d - 0.5).abs() < 0.02, "{d}");
    }

    #[test]
    fn ks_p_value_separates_same_from_shifted() {
        assert!(ks_p_value(0.05, 200, 256) > 0.5);
        assert!(ks_p_value(0.5, 200, 256) < 1e-6);
    }

    #[test]
    fn psi_is_small_for_matching_bins_and_large_for_shifted() {
        let edges = [0.25, 0.5, 0.75];
        let fractions = [0.25; 4];
        assert!(psi(&uniform(400, 0.0, 1.0), &edges, &fractions) < 1e-9);
        assert!(psi(&uniform(400, 0.8, 1.0), &edges, &fractions) > 1.0);
    }

    #[test]
    fn monitor_keeps_a_rolling_window_and_reports_shift() {
        let monitor = DriftMonitor::new(50, vec![stats("x", uniform(256, 0.0, 1.0))]);
        assert!(monitor.report().features.is_empty());
        for v in uniform(50, 0.0, 1.0) {
            monitor.observe(&[v]);
        }
        let calm = monitor.report();
        assert_eq!(calm.features[0].samples, 50);
        assert!(calm.features[0].ks < 0.1 && calm.features[0].psi < 0.05);
        for v in uniform(50, 0.9, 1.0) {
            monitor.observe(&[v]);
        }
        let shifted = monitor.report();
        assert_eq!(shifted.features[0].samples, 50, "window is bounded");
        assert!(shifted.features[0].ks > 0.8 && shifted.features[0].psi > 1.0);
        monitor.observe(&[1.0, 2.0]);
        assert_eq!(monitor.report().features[0].samples, 50, "wrong-width samples are ignored");
    }
}

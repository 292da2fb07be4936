//! Reference statistics of the training inputs, written into model.json for
//! the predictor's drift detection (KS test and PSI).

use hone_crds::contract::{FeatureStats, InputStats};

/// Bins used for PSI (deciles of the training data).
const PSI_BINS: usize = 10;
/// Values kept for the KS test.
const REFERENCE_SIZE: usize = 256;

/// Statistics of each column of `values` (row-major, `columns` wide).
pub fn input_stats(names: &[String], values: &[f64], columns: usize) -> InputStats {
    let rows = values.len().checked_div(columns).unwrap_or(0);
    let features = names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let mut col: Vec<f64> = (0..rows).map(|i| values[i * columns + j]).collect();
            col.sort_by(f64::total_cmp);
            feature_stats(name, &col)
        })
        .collect();
    InputStats { samples: rows as u64, features }
}

/// Statistics of one feature from its sorted values.
fn feature_stats(name: &str, sorted: &[f64]) -> FeatureStats {
    let n = sorted.len().max(1) as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let std = (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let quantile = |q: f64| {
        sorted.get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize).copied().unwrap_or(0.0)
    };
    let mut edges: Vec<f64> = (1..PSI_BINS).map(|i| quantile(i as f64 / PSI_BINS as f64)).collect();
    edges.dedup();
    let mut counts = vec![0usize; edges.len() + 1];
    for v in sorted {
        counts[edges.partition_point(|e| e < v)] += 1;
    }
    let reference = if sorted.len() <= REFERENCE_SIZE {
        sorted.to_vec()
    } else {
        (0..REFERENCE_SIZE).map(|i| quantile(i as f64 / (REFERENCE_SIZE - 1) as f64)).collect()
    };
    FeatureStats {
        name: name.to_owned(),
        mean,
        std,
        min: sorted.first().copied().unwrap_or(0.0),
        max: sorted.last().copied().unwrap_or(0.0),
        bin_fractions: counts.iter().map(|&c| c as f64 / n).collect(),
        bin_edges: edges,
        reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_split_uniform_data_evenly() {
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let stats = input_stats(&["x".into()], &values, 1);
        let f = &stats.features[0];
        assert_eq!(stats.samples, 1000);
        assert_eq!(f.bin_edges.len(), 9);
        for frac in &f.bin_fractions {
            assert!((frac - 0.1).abs() < 0.01, "{:?}", f.bin_fractions);
        }
        assert!((f.bin_fractions.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(f.reference.len(), 256);
        assert_eq!((f.min, f.max), (0.0, 999.0));
        assert!((f.mean - 499.5).abs() < 1e-9);
    }

    #[test]
    fn columns_are_separate_and_constant_columns_work() {
        let values = vec![1.0, 5.0, 2.0, 5.0, 3.0, 5.0];
        let stats = input_stats(&["a".into(), "b".into()], &values, 2);
        assert!((stats.features[0].mean - 2.0).abs() < 1e-9);
        assert_eq!(stats.features[1].std, 0.0);
        assert_eq!(stats.features[1].bin_fractions, vec![1.0, 0.0], "one edge, everything at or below it");
    }
}

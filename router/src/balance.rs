//! Choosing a variant: exact weighted round robin for ordinary requests,
//! weighted rendezvous hashing for sticky ones (the same value always lands
//! on the same variant, and a weight change moves as few values as
//! possible), and the variant header for explicit picks.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::RouterConfig;

/// The variants of one config and the round-robin schedule over them.
#[derive(Debug)]
pub struct Balancer {
    names: Vec<String>,
    weights: Vec<u32>,
    schedule: Vec<usize>,
    next: AtomicU64,
}

/// Why no variant was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChooseError {
    /// The variant header names no variant.
    UnknownVariant(String),
}

impl Balancer {
    /// A balancer over a validated config (at least one positive weight).
    pub fn new(config: &RouterConfig) -> Self {
        let names = config.variants.iter().map(|v| v.name.clone()).collect();
        let weights: Vec<u32> = config.variants.iter().map(|v| v.weight).collect();
        Self { names, schedule: smooth_schedule(&weights), weights, next: AtomicU64::new(0) }
    }

    /// The variant for a request: the variant header wins, then the sticky
    /// value, then the round robin.
    pub fn choose(&self, variant: Option<&str>, sticky: Option<&str>) -> Result<usize, ChooseError> {
        if let Some(name) = variant {
            return self
                .names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| ChooseError::UnknownVariant(name.into()));
        }
        if let Some(key) = sticky {
            return Ok(self.rendezvous(key));
        }
        let tick = self.next.fetch_add(1, Ordering::Relaxed);
        // The schedule is non-empty: the config has a positive weight.
        Ok(self.schedule.get((tick % self.schedule.len().max(1) as u64) as usize).copied().unwrap_or(0))
    }

    /// Weighted rendezvous (highest random weight) hashing of `key`.
    pub fn rendezvous(&self, key: &str) -> usize {
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, (name, &weight)) in self.names.iter().zip(&self.weights).enumerate() {
            if weight == 0 {
                continue;
            }
            // Uniform in (0, 1): 53 random bits, never 0.
            let u = ((stable_hash(key, name) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = f64::from(weight) / -u.ln();
            if score > best.0 {
                best = (score, i);
            }
        }
        best.1
    }
}

/// Nginx's smooth weighted round robin, unrolled over one period: each
/// variant appears `weight` times, interleaved as evenly as possible.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let Some((best, _)) = current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        current[best] -= total;
        schedule.push(best);
    }
    schedule
}

/// FNV-1a over key and name, finished with a SplitMix64 mix: stable across
/// processes and versions, so every router replica agrees.
fn stable_hash(key: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VariantBackend;

    fn config(weights: &[(&str, u32)]) -> RouterConfig {
        RouterConfig {
            variants: weights
                .iter()
                .map(|(n, w)| VariantBackend { name: (*n).into(), url: "http://x".into(), weight: *w })
                .collect(),
            sticky_header: None,
            variant_header: "x-hone-variant".into(),
        }
    }

    #[test]
    fn round_robin_splits_exactly_by_weight() {
        let b = Balancer::new(&config(&[("a", 90), ("b", 10)]));
        let mut counts = [0; 2];
        for _ in 0..10_000 {
            counts[b.choose(None, None).unwrap()] += 1;
        }
        assert_eq!(counts, [9_000, 1_000]);
    }

    #[test]
    fn schedule_interleaves() {
        assert_eq!(smooth_schedule(&[2, 1]), vec![0, 1, 0]);
        assert_eq!(smooth_schedule(&[1, 0, 1]), vec![0, 2]);
    }

    #[test]
    fn variant_header_picks_even_weight_zero() {
        let b = Balancer::new(&config(&[("a", 100), ("b", 0)]));
        assert_eq!(b.choose(Some("b"), Some("u1")), Ok(1));
        assert_eq!(b.choose(Some("c"), None), Err(ChooseError::UnknownVariant("c".into())));
    }

    #[test]
    fn sticky_keys_follow_weights_and_stay_put() {
        let b = Balancer::new(&config(&[("a", 90), ("b", 10)]));
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let chosen: Vec<usize> = keys.iter().map(|k| b.choose(None, Some(k)).unwrap()).collect();
        let share_b = chosen.iter().filter(|&&c| c == 1).count() as f64 / keys.len() as f64;
        assert!((share_b - 0.10).abs() < 0.015, "{share_b}");
        assert!(keys.iter().zip(&chosen).all(|(k, &c)| b.rendezvous(k) == c), "deterministic");
        // Moving to 80/20 only moves keys from a to b.
        let wider = Balancer::new(&config(&[("a", 80), ("b", 20)]));
        for (k, &before) in keys.iter().zip(&chosen) {
            if before == 1 {
                assert_eq!(wider.rendezvous(k), 1, "{k} left b");
            }
        }
    }
}

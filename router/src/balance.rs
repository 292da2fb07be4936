//! Choosing a backend: exact weighted round robin for ordinary requests,
//! weighted rendezvous hashing for sticky ones (the same value always lands
//! on the same variant, and a weight change moves as few values as
//! possible), and the variant header for explicit picks of the backends the
//! config marks `pinnable`.
//!
//! A client must not be able to steer traffic to a canary (its metrics decide
//! the rollout): the variant header reaches only pinnable backends, and a
//! sticky value picks a variant together with its canaries, whose share
//! inside the variant is then split by round robin, so no choice of sticky
//! values lands on the canary more often than its weight says.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::RouterConfig;

/// The backends of one config and the schedules over them.
#[derive(Debug)]
pub struct Balancer {
    names: Vec<String>,
    pinnable: Vec<bool>,
    schedule: Schedule,
    groups: Vec<Group>,
}

/// A variant's stable backend and its canaries: what a sticky value picks.
#[derive(Debug)]
struct Group {
    /// Hashed with the sticky value: the stable backend's name.
    name: String,
    /// Sum of the members' weights.
    weight: u32,
    /// Backend indices of the members, stable first.
    members: Vec<usize>,
    /// Round robin over the members by weight.
    schedule: Schedule,
}

/// A smooth weighted round robin over indices.
#[derive(Debug)]
struct Schedule {
    order: Vec<usize>,
    next: AtomicU64,
}

impl Schedule {
    fn new(weights: &[u32]) -> Self {
        Self { order: smooth_schedule(weights), next: AtomicU64::new(0) }
    }

    /// The next index; `None` when every weight is 0.
    fn next(&self) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        let tick = self.next.fetch_add(1, Ordering::Relaxed);
        self.order.get((tick % self.order.len() as u64) as usize).copied()
    }
}

/// Why no backend was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChooseError {
    /// The variant header names no pinnable backend (or is not a name at all).
    NotSelectable,
}

impl Balancer {
    /// A balancer over a validated config (at least one positive weight;
    /// every `canaryOf` names a backend that is no canary itself).
    pub fn new(config: &RouterConfig) -> Self {
        let names: Vec<String> = config.variants.iter().map(|v| v.name.clone()).collect();
        let weights: Vec<u32> = config.variants.iter().map(|v| v.weight).collect();
        let mut groups: Vec<Group> = Vec::new();
        for (i, backend) in config.variants.iter().enumerate().filter(|(_, v)| v.canary_of.is_none()) {
            let members: Vec<usize> = std::iter::once(i)
                .chain(
                    config
                        .variants
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.canary_of.as_deref() == Some(backend.name.as_str()))
                        .map(|(j, _)| j),
                )
                .collect();
            let member_weights: Vec<u32> = members.iter().map(|&m| weights[m]).collect();
            groups.push(Group {
                name: backend.name.clone(),
                weight: member_weights.iter().sum(),
                schedule: Schedule::new(&member_weights),
                members,
            });
        }
        Self {
            pinnable: config.variants.iter().map(|v| v.pinnable).collect(),
            schedule: Schedule::new(&weights),
            names,
            groups,
        }
    }

    /// The backend for a request: the variant header wins (a pinnable
    /// backend only), then the sticky value, then the round robin.
    pub fn choose(&self, variant: Option<&[u8]>, sticky: Option<&[u8]>) -> Result<usize, ChooseError> {
        if let Some(name) = variant {
            return self
                .names
                .iter()
                .zip(&self.pinnable)
                .position(|(n, &pinnable)| pinnable && n.as_bytes() == name)
                .ok_or(ChooseError::NotSelectable);
        }
        if let Some(key) = sticky
            && let Some(group) = self.rendezvous(key)
        {
            let member = group.schedule.next().unwrap_or(0);
            return Ok(group.members.get(member).copied().unwrap_or(group.members[0]));
        }
        // The config has a positive weight, so the schedule is not empty.
        Ok(self.schedule.next().unwrap_or(0))
    }

    /// The names the variant header may carry.
    pub fn selectable(&self) -> Vec<String> {
        self.names.iter().zip(&self.pinnable).filter(|(_, p)| **p).map(|(n, _)| n.clone()).collect()
    }

    /// The group `key` sticks to: weighted rendezvous (highest random
    /// weight) hashing over the groups with traffic.
    fn rendezvous(&self, key: &[u8]) -> Option<&Group> {
        let mut best: Option<(f64, &Group)> = None;
        for group in self.groups.iter().filter(|g| g.weight > 0) {
            // Uniform in (0, 1): 53 random bits, never 0.
            let u = ((stable_hash(key, &group.name) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = f64::from(group.weight) / -u.ln();
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, group));
            }
        }
        best.map(|(_, g)| g)
    }

    /// The stable backend `key` sticks to (the canaries of its variant aside).
    pub fn sticky_variant(&self, key: &[u8]) -> Option<&str> {
        self.rendezvous(key).map(|g| g.name.as_str())
    }
}

/// Nginx's smooth weighted round robin, unrolled over one period: each
/// index appears `weight` times, interleaved as evenly as possible.
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
fn stable_hash(key: &[u8], name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.iter().chain(&[0xff]).chain(name.as_bytes()) {
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

    fn backend(name: &str, weight: u32, pinnable: bool, canary_of: Option<&str>) -> VariantBackend {
        VariantBackend {
            name: name.into(),
            url: "http://x".into(),
            weight,
            pinnable,
            canary_of: canary_of.map(str::to_owned),
        }
    }

    fn config(weights: &[(&str, u32)]) -> RouterConfig {
        RouterConfig {
            variants: weights.iter().map(|(n, w)| backend(n, *w, *w > 0, None)).collect(),
            sticky_header: None,
            variant_header: "x-hone-variant".into(),
            mirrors: Vec::new(),
            feedback_key: None,
        }
    }

    /// `a` 90 with its canary `a-v2` (10 of a's share) and `b` 0.
    fn canary_config() -> RouterConfig {
        RouterConfig {
            variants: vec![
                backend("a", 8100, true, None),
                backend("a-v2", 900, false, Some("a")),
                backend("b", 1000, true, None),
                backend("c", 0, false, None),
            ],
            sticky_header: Some("x-user".into()),
            variant_header: "x-hone-variant".into(),
            mirrors: Vec::new(),
            feedback_key: None,
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
        assert!(smooth_schedule(&[0, 0]).is_empty());
    }

    #[test]
    fn the_header_reaches_only_pinnable_backends() {
        let b = Balancer::new(&canary_config());
        assert_eq!(b.choose(Some(b"a"), Some(b"u1")), Ok(0), "the header beats stickiness");
        assert_eq!(b.choose(Some(b"b"), None), Ok(2));
        for refused in [&b"a-v2"[..], b"c", b"nope", b"", &[0xff, 0xfe], &[b'a'; 10_000]] {
            assert_eq!(b.choose(Some(refused), None), Err(ChooseError::NotSelectable), "{refused:?}");
        }
        assert_eq!(b.selectable(), ["a", "b"]);
    }

    #[test]
    fn a_pinnable_canary_or_idle_variant_can_be_pinned() {
        let mut config = canary_config();
        for v in &mut config.variants {
            v.pinnable = true;
        }
        let b = Balancer::new(&config);
        assert_eq!(b.choose(Some(b"a-v2"), None), Ok(1));
        assert_eq!(b.choose(Some(b"c"), None), Ok(3));
    }

    #[test]
    fn sticky_values_cannot_pick_the_canary() {
        let b = Balancer::new(&canary_config());
        // Every sticky value lands on variant a or b (never c, weight 0), and
        // a's traffic goes to its canary by round robin whatever the value:
        // 10 000 requests with values chosen to stick to a give the canary
        // exactly its share of a, 900 of 9 000.
        let on_a: Vec<String> = (0..100_000)
            .map(|i| format!("user-{i}"))
            .filter(|k| b.sticky_variant(k.as_bytes()) == Some("a"))
            .collect();
        assert!(!on_a.is_empty());
        let mut counts = [0; 4];
        for k in on_a.iter().cycle().take(9_000) {
            counts[b.choose(None, Some(k.as_bytes())).unwrap()] += 1;
        }
        assert_eq!(counts, [8_100, 900, 0, 0]);
        for i in 0..1_000 {
            let key = format!("k{i}");
            assert_ne!(b.sticky_variant(key.as_bytes()), Some("c"));
            assert_ne!(b.sticky_variant(key.as_bytes()), Some("a-v2"));
        }
    }

    #[test]
    fn sticky_keys_follow_weights_and_stay_put() {
        let b = Balancer::new(&config(&[("a", 90), ("b", 10)]));
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let chosen: Vec<usize> = keys.iter().map(|k| b.choose(None, Some(k.as_bytes())).unwrap()).collect();
        let share_b = chosen.iter().filter(|&&c| c == 1).count() as f64 / keys.len() as f64;
        assert!((share_b - 0.10).abs() < 0.015, "{share_b}");
        let again: Vec<usize> = keys.iter().map(|k| b.choose(None, Some(k.as_bytes())).unwrap()).collect();
        assert_eq!(chosen, again, "deterministic");
        // Moving to 80/20 only moves keys from a to b.
        let wider = Balancer::new(&config(&[("a", 80), ("b", 20)]));
        for (k, &before) in keys.iter().zip(&chosen) {
            if before == 1 {
                assert_eq!(wider.sticky_variant(k.as_bytes()), Some("b"), "{k} left b");
            }
        }
    }
}

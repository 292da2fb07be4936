//! Optional API keys (401 without a known one) with an optional per-key
//! token-bucket rate limit (429 with `Retry-After`).
//!
//! Keys are reread when their file or mounted Secret changes, so rotation
//! and revocation take effect within a second, without a restart. Keys are
//! kept as SHA-256 digests and compared in constant time. Failed attempts are
//! throttled, per client address and in all: past the budget, an unknown key
//! is answered 429 without being checked, while known keys still pass.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Failed key checks allowed per client address: (per second, burst).
const FAILURES_PER_CLIENT: (f64, f64) = (1.0, 10.0);
/// Failed key checks allowed across all clients: (per second, burst).
const FAILURES_IN_ALL: (f64, f64) = (20.0, 100.0);
/// Most client addresses tracked by the failure throttle (the oldest go first).
const MAX_TRACKED_CLIENTS: usize = 10_000;
/// How often the key file or Secret folder is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_millis(500);

type KeyDigest = [u8; 32];

/// Accepted keys and their rate limit.
#[derive(Debug)]
pub struct Auth {
    keys: Arc<RwLock<Vec<KeyDigest>>>,
    limiter: Option<RateLimiter>,
    failures: FailureThrottle,
}

impl Auth {
    /// Auth with `keys` and, when `rps` is set, a limit of `rps` requests per
    /// second per key with bursts of `burst` (default: `rps`, at least 1).
    pub fn new(keys: HashSet<String>, rps: Option<f64>, burst: Option<f64>) -> Self {
        let limiter =
            rps.filter(|r| *r > 0.0).map(|rps| RateLimiter::new(rps, burst.unwrap_or(rps).max(1.0)));
        Self { keys: Arc::new(RwLock::new(digests(&keys))), limiter, failures: FailureThrottle::default() }
    }

    /// Auth with the keys read from `path` (see [`Auth::load_keys`]).
    pub fn from_path(path: &Path, rps: Option<f64>, burst: Option<f64>) -> std::io::Result<Self> {
        Ok(Self::new(Self::load_keys(path)?, rps, burst))
    }

    /// How many keys are accepted now.
    pub fn key_count(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Rereads `path` whenever it changes (a Secret update swaps its `..data`
    /// link) and applies the new keys; a file that cannot be read or holds no
    /// key keeps the previous keys, with a warning.
    pub fn spawn_reload(&self, path: PathBuf) -> tokio::task::JoinHandle<()> {
        let keys = self.keys.clone();
        tokio::spawn(async move {
            // Nothing seen yet: the first tick rereads, which covers a change
            // between the first read and this task's start.
            let mut seen = None;
            let mut ticker = tokio::time::interval(RELOAD_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let now = Some(fingerprint(&path));
                if now == seen {
                    continue;
                }
                seen = now;
                match Self::load_keys(&path) {
                    Ok(new) if !new.is_empty() => {
                        let new = digests(&new);
                        let mut current = keys.write().unwrap_or_else(|p| p.into_inner());
                        if *current != new {
                            tracing::info!(keys = new.len(), "API keys reloaded");
                            *current = new;
                        }
                    }
                    Ok(_) => {
                        tracing::warn!(path = %path.display(), "API key file holds no key; keeping the previous keys")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot reread API keys; keeping the previous keys")
                    }
                }
            }
        })
    }

    /// Reads keys from a file (one per line) or a folder (one per file, as a
    /// mounted Secret); blank lines and `#` comments are skipped.
    pub fn load_keys(path: &Path) -> std::io::Result<HashSet<String>> {
        let mut texts = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let entry = entry?;
                // Secret volumes hold `..data` links and dot-folders; keys are the plain files.
                let name = entry.file_name();
                if !name.to_string_lossy().starts_with('.') && entry.path().is_file() {
                    texts.push(std::fs::read_to_string(entry.path())?);
                }
            }
        } else {
            texts.push(std::fs::read_to_string(path)?);
        }
        Ok(texts
            .iter()
            .flat_map(|t| t.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }

    /// Checks the request's key and charges its rate limit; `peer` is the
    /// client's address, for the failure throttle.
    pub fn check(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let key = request_key(headers);
        let known = key.is_some_and(|k| self.accepts(k));
        let Some(key) = key.filter(|_| known) else {
            let client = peer.map(|p| p.ip());
            return Err(match self.failures.charge(client, now) {
                Ok(()) => ApiError::Unauthorized,
                Err(retry_after_secs) => ApiError::AuthThrottled { retry_after_secs },
            });
        };
        match &self.limiter {
            Some(limiter) => {
                limiter.take(key, now).map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
            }
            None => Ok(()),
        }
    }

    /// Whether `key` is one of the keys, comparing digests in constant time
    /// and always against every key.
    fn accepts(&self, key: &str) -> bool {
        let wanted: KeyDigest = Sha256::digest(key.as_bytes()).into();
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter().fold(false, |found, k| found | constant_time_eq(k, &wanted))
    }
}

fn digests(keys: &HashSet<String>) -> Vec<KeyDigest> {
    let mut out: Vec<KeyDigest> = keys.iter().map(|k| Sha256::digest(k.as_bytes()).into()).collect();
    out.sort_unstable();
    out
}

fn constant_time_eq(a: &KeyDigest, b: &KeyDigest) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What changes when a key file or Secret is rewritten: the modification
/// time and size of the path and of every file in it (links followed).
fn fingerprint(path: &Path) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    let stamp = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut out = vec![(path.to_owned(), stamp(path))];
    if let Ok(entries) = std::fs::read_dir(path) {
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        out.extend(files.into_iter().map(|f| {
            let s = stamp(&f);
            (f, s)
        }));
    }
    out
}

/// Token buckets for failed key checks: one per client address, one for all.
#[derive(Debug)]
struct FailureThrottle {
    per_client: RateLimiter,
    in_all: RateLimiter,
}

impl Default for FailureThrottle {
    fn default() -> Self {
        Self {
            per_client: RateLimiter::new(FAILURES_PER_CLIENT.0, FAILURES_PER_CLIENT.1),
            in_all: RateLimiter::new(FAILURES_IN_ALL.0, FAILURES_IN_ALL.1),
        }
    }
}

impl FailureThrottle {
    /// Charges one failure to `client` and to all; `Err(seconds)` when either is spent.
    fn charge(&self, client: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        if let Some(ip) = client {
            self.per_client.take(&ip.to_string(), now)?;
        }
        self.in_all.take("", now)
    }
}

/// The key of `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn request_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(value.trim());
    }
    let auth = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// One token bucket per key.
#[derive(Debug)]
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rps` tokens per second, at most `burst` saved up.
    pub fn new(rps: f64, burst: f64) -> Self {
        Self { rps, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key` at `now`, or says in how many whole seconds one is due.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), u64> {
        // A poisoned lock only means another request panicked mid-update;
        // the map of buckets is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(key) {
            // Full buckets carry no state worth keeping: forget those first,
            // then the longest idle, so the map stays bounded under any load.
            let (burst, rps) = (self.burst, self.rps);
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.saturating_duration_since(*last).as_secs_f64() * rps < burst
            });
            if buckets.len() >= MAX_TRACKED_CLIENTS
                && let Some(oldest) =
                    buckets.iter().min_by_key(|(_, (_, last))| *last).map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refilled =
            (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.rps).min(self.burst);
        *last = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(((1.0 - refilled) / self.rps).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let auth = Auth::new(["k1".to_owned()].into(), None, None);
        let check = |h: &HeaderMap| auth.check(h, None);
        assert!(check(&headers(&[("authorization", "Bearer k1")])).is_ok());
        assert!(check(&headers(&[("x-api-key", "k1")])).is_ok());
        assert!(matches!(check(&headers(&[("x-api-key", "k2")])), Err(ApiError::Unauthorized)));
        assert!(matches!(check(&HeaderMap::new()), Err(ApiError::Unauthorized)));
        assert!(matches!(check(&headers(&[("authorization", "Basic k1")])), Err(ApiError::Unauthorized)));
    }

    #[test]
    fn failed_keys_are_throttled_per_client_but_known_keys_pass() {
        let auth = Auth::new(["good".to_owned()].into(), None, None);
        let attacker: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let bad = headers(&[("x-api-key", "guess")]);
        let results: Vec<_> = (0..15).map(|_| auth.check(&bad, Some(attacker))).collect();
        assert!(results[..10].iter().all(|r| matches!(r, Err(ApiError::Unauthorized))), "{results:?}");
        assert!(
            results[10..].iter().all(|r| matches!(r, Err(ApiError::AuthThrottled { .. }))),
            "{results:?}"
        );
        assert!(
            auth.check(&headers(&[("x-api-key", "good")]), Some(attacker)).is_ok(),
            "a valid key still passes"
        );
        assert!(
            matches!(auth.check(&bad, Some(other)), Err(ApiError::Unauthorized)),
            "other clients are not throttled"
        );
    }

    #[test]
    fn the_failure_budget_in_all_caps_many_addresses() {
        let auth = Auth::new(["good".to_owned()].into(), None, None);
        let bad = headers(&[("x-api-key", "guess")]);
        let throttled = (0..200)
            .map(|i| auth.check(&bad, Some(SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 1)))))
            .filter(|r| matches!(r, Err(ApiError::AuthThrottled { .. })))
            .count();
        assert!(throttled >= 90, "{throttled} of 200 throttled");
    }

    #[test]
    fn rate_limiter_memory_is_bounded() {
        let limiter = RateLimiter::new(1.0, 1.0);
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_CLIENTS + 500) {
            let _ = limiter.take(&i.to_string(), t0);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_TRACKED_CLIENTS);
    }

    #[tokio::test]
    async fn rotated_and_revoked_keys_apply_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "old\n").unwrap();
        let auth = Auth::from_path(&file, None, None).unwrap();
        let task = auth.spawn_reload(file.clone());
        let with = |k: &str| headers(&[("x-api-key", k)]).clone();
        assert!(auth.check(&with("old"), None).is_ok());
        std::fs::write(&file, "new-key\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while auth.check(&with("new-key"), None).is_err() {
            assert!(Instant::now() < deadline, "the new key was not picked up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(matches!(auth.check(&with("old"), None), Err(ApiError::Unauthorized)), "old key revoked");
        std::fs::write(&file, "# emptied by mistake\n").unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(auth.check(&with("new-key"), None).is_ok(), "an empty file keeps the previous keys");
        task.abort();
    }

    #[test]
    fn token_bucket_refills_over_time() {
        let limiter = RateLimiter::new(2.0, 2.0);
        let t0 = Instant::now();
        assert!(limiter.take("a", t0).is_ok());
        assert!(limiter.take("a", t0).is_ok());
        assert_eq!(limiter.take("a", t0), Err(1));
        assert!(limiter.take("b", t0).is_ok(), "keys have separate buckets");
        assert!(limiter.take("a", t0 + Duration::from_millis(600)).is_ok());
    }

    #[test]
    fn keys_load_from_a_file_or_a_secret_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.txt");
        std::fs::write(&file, "# comment\nk1\n\n k2 \n").unwrap();
        assert_eq!(Auth::load_keys(&file).unwrap(), ["k1".to_owned(), "k2".to_owned()].into());
        let secret = dir.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("alice"), "ka\n").unwrap();
        std::fs::create_dir(secret.join("..data")).unwrap();
        assert_eq!(Auth::load_keys(&secret).unwrap(), ["ka".to_owned()].into());
    }
}

//! Optional API keys (401 without a known one) with an optional per-key
//! token-bucket rate limit (429 with `Retry-After`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;

use crate::error::ApiError;

/// Accepted keys and their rate limit.
#[derive(Debug)]
pub struct Auth {
    keys: HashSet<String>,
    limiter: Option<RateLimiter>,
}

impl Auth {
    /// Auth with `keys` and, when `rps` is set, a limit of `rps` requests per
    /// second per key with bursts of `burst` (default: `rps`, at least 1).
    pub fn new(keys: HashSet<String>, rps: Option<f64>, burst: Option<f64>) -> Self {
        let limiter =
            rps.filter(|r| *r > 0.0).map(|rps| RateLimiter::new(rps, burst.unwrap_or(rps).max(1.0)));
        Self { keys, limiter }
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

    /// Checks the request's key and charges its rate limit.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let key = request_key(headers).ok_or(ApiError::Unauthorized)?;
        if !self.keys.contains(key) {
            return Err(ApiError::Unauthorized);
        }
        match &self.limiter {
            Some(limiter) => limiter
                .take(key, Instant::now())
                .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
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
    use std::time::Duration;

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
        assert!(auth.check(&headers(&[("authorization", "Bearer k1")])).is_ok());
        assert!(auth.check(&headers(&[("x-api-key", "k1")])).is_ok());
        assert!(matches!(auth.check(&headers(&[("x-api-key", "k2")])), Err(ApiError::Unauthorized)));
        assert!(matches!(auth.check(&HeaderMap::new()), Err(ApiError::Unauthorized)));
        assert!(matches!(
            auth.check(&headers(&[("authorization", "Basic k1")])),
            Err(ApiError::Unauthorized)
        ));
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

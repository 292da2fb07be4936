//! Reading a request body before it is forwarded. The router holds the
//! whole body first, so everything that can go wrong with it (too large, even
//! when chunked and only found out mid-stream; too slow; broken off) is the
//! router's own 4xx before any backend is involved, and a backend's measured
//! latency is its own, not the client's upload time. A memory budget shared
//! by all requests bounds what bodies in flight may hold.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::reject::Rejection;

/// Bytes per permit of the memory budget.
pub const BUDGET_UNIT: usize = 1024;

/// Limits on request bodies.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Longest the whole body may take to arrive.
    pub read_timeout: Duration,
}

/// What all bodies in flight may hold together, in [`BUDGET_UNIT`]s.
#[derive(Clone, Debug)]
pub struct Budget(Arc<Semaphore>);

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.div_ceil(BUDGET_UNIT).clamp(1, Semaphore::MAX_PERMITS))))
    }

    /// Takes `bytes` of the budget now (never waiting), or `None` when it is spent.
    pub fn try_take(&self, bytes: usize) -> Option<BudgetShare> {
        let mut held = None;
        self.cover(&mut held, bytes).ok()?;
        Some(BudgetShare { _permit: held })
    }

    /// Grows `held` to cover `bytes`, or fails when the budget is spent.
    fn cover(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), Rejection> {
        let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        let need = bytes.div_ceil(BUDGET_UNIT).saturating_sub(have);
        if need == 0 {
            return Ok(());
        }
        let need = u32::try_from(need).map_err(|_| Rejection::Overloaded)?;
        let more = self.0.clone().try_acquire_many_owned(need).map_err(|_| Rejection::Overloaded)?;
        match held {
            Some(permit) => permit.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

/// A share of a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct BudgetShare {
    _permit: Option<OwnedSemaphorePermit>,
}

/// A request's declared Content-Length, if it has one.
pub fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, Rejection> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()))
        .map(|n| n.ok_or_else(|| Rejection::BadBody("Content-Length is not a number".into())))
        .transpose()
}

/// A body read whole, and its share of the budget (released on drop).
#[derive(Debug)]
pub struct HeldBody {
    /// The bytes.
    pub bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Reads `body` whole. `declared` is its Content-Length, if any: a body
/// declared too large is refused before a byte is read, and a declared size
/// is charged to the budget up front (it is what gets allocated).
pub async fn read(
    body: Body,
    declared: Option<u64>,
    limits: &BodyLimits,
    budget: &Budget,
) -> Result<HeldBody, Rejection> {
    let too_large = Rejection::BodyTooLarge { limit: limits.max_bytes };
    let declared = match declared.map(usize::try_from) {
        Some(Ok(n)) if n <= limits.max_bytes => n,
        Some(_) => return Err(too_large),
        None => 0,
    };
    let mut held = None;
    budget.cover(&mut held, declared)?;
    let mut buffer = Vec::with_capacity(declared);
    let deadline = Instant::now() + limits.read_timeout;
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(Rejection::BodyTimeout { after: limits.read_timeout }),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Rejection::BadBody(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers are not forwarded.
        let Ok(data) = frame.into_data() else { continue };
        let len = buffer.len() + data.len();
        if len > limits.max_bytes {
            return Err(too_large);
        }
        budget.cover(&mut held, len)?;
        buffer.extend_from_slice(&data);
    }
    Ok(HeldBody { bytes: Bytes::from(buffer), _budget: held })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn limits(max_bytes: usize) -> BodyLimits {
        BodyLimits { max_bytes, read_timeout: Duration::from_secs(5) }
    }

    /// A chunked body (no Content-Length) of `chunks`.
    fn chunked(chunks: &[&'static [u8]]) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_whole() {
        let budget = Budget::new(1 << 20);
        let body = read(Body::from("hello"), Some(5), &limits(5), &budget).await.unwrap();
        assert_eq!(body.bytes, "hello");
        let body = read(chunked(&[b"he", b"llo"]), None, &limits(5), &budget).await.unwrap();
        assert_eq!(body.bytes, "hello");
    }

    #[tokio::test]
    async fn too_large_is_refused_declared_or_mid_stream() {
        let budget = Budget::new(1 << 20);
        let refused = Rejection::BodyTooLarge { limit: 4 };
        assert_eq!(read(Body::from("hello"), Some(5), &limits(4), &budget).await.unwrap_err(), refused);
        let late = chunked(&[b"abc", b"d", b"e"]);
        assert_eq!(read(late, None, &limits(4), &budget).await.unwrap_err(), refused);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_a_broken_one_is_a_bad_body() {
        let budget = Budget::new(1 << 20);
        let stalled = Body::from_stream(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"a"))])
                .chain(futures::stream::pending()),
        );
        let fast = BodyLimits { max_bytes: 10, read_timeout: Duration::from_millis(50) };
        assert!(matches!(read(stalled, None, &fast, &budget).await, Err(Rejection::BodyTimeout { .. })));
        let broken = Body::from_stream(futures::stream::iter([
            Ok(Bytes::from_static(b"a")),
            Err(std::io::Error::other("client went away")),
        ]));
        assert!(matches!(read(broken, None, &limits(10), &budget).await, Err(Rejection::BadBody(_))));
    }

    #[tokio::test]
    async fn the_budget_bounds_bodies_in_flight_and_is_returned() {
        let budget = Budget::new(2 * BUDGET_UNIT);
        let held =
            read(Body::from(vec![0u8; 2 * BUDGET_UNIT]), None, &limits(1 << 20), &budget).await.unwrap();
        let refused = read(Body::from("x"), None, &limits(1 << 20), &budget).await.unwrap_err();
        assert_eq!(refused, Rejection::Overloaded);
        // A declared size is charged before reading.
        drop(held);
        let declared = read(Body::from("x"), Some(3 * BUDGET_UNIT as u64), &limits(1 << 20), &budget).await;
        assert_eq!(declared.unwrap_err(), Rejection::Overloaded);
        assert_eq!(read(Body::from("x"), Some(1), &limits(1 << 20), &budget).await.unwrap().bytes, "x");
    }

    #[test]
    fn shares_are_taken_without_waiting_and_given_back() {
        let budget = Budget::new(2 * BUDGET_UNIT);
        let share = budget.try_take(2 * BUDGET_UNIT).unwrap();
        assert!(budget.try_take(1).is_none());
        assert!(budget.try_take(0).is_some(), "an empty body costs nothing");
        drop(share);
        assert!(budget.try_take(BUDGET_UNIT + 1).is_some());
    }
}

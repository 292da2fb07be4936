//! Admission control before any large allocation: a byte budget for request
//! bodies held in memory, and a bounded pool for CPU-heavy decoding (JSON,
//! images, multipart) off the async workers. Both refuse at once (429)
//! instead of queueing without bound.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::ApiError;

/// Bodies are budgeted in KiB so a `u32` permit count covers 4 TiB.
const UNIT: usize = 1024;

/// The bytes of request bodies held in memory at once, across all requests.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    units: u32,
}

/// Budget held by one request while its body is in memory.
#[derive(Debug)]
pub struct BodyPermit {
    permits: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).max(1);
        Self { permits: Arc::new(Semaphore::new(units as usize)), units }
    }

    /// An empty hold, grown with [`BodyPermit::grow_to`] as bytes arrive.
    pub fn hold(&self) -> BodyPermit {
        BodyPermit { permits: self.permits.clone(), held: None }
    }

    /// Bytes not held by any request now.
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits() * UNIT
    }

    /// The whole budget in bytes.
    pub fn total_bytes(&self) -> usize {
        self.units as usize * UNIT
    }
}

impl BodyPermit {
    /// Holds budget for `bytes` in all; 429 when the budget has no room.
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), ApiError> {
        let wanted = bytes.div_ceil(UNIT);
        let held = self.held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if wanted <= held {
            return Ok(());
        }
        let more = u32::try_from(wanted - held).map_err(|_| ApiError::BodyBudgetExhausted)?;
        let extra = match self.permits.clone().try_acquire_many_owned(more) {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                return Err(ApiError::BodyBudgetExhausted);
            }
        };
        match &mut self.held {
            Some(held) => held.merge(extra),
            None => self.held = Some(extra),
        }
        Ok(())
    }
}

/// Runs decoding on tokio's blocking threads, at most `threads` at once and
/// at most `queue` more waiting.
#[derive(Debug, Clone)]
pub struct DecodePool {
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl DecodePool {
    /// A pool of `threads` (0: one per core) with `queue` waiting places.
    pub fn new(threads: usize, queue: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        } else {
            threads
        };
        Self {
            admitted: Arc::new(Semaphore::new(threads + queue)),
            running: Arc::new(Semaphore::new(threads)),
        }
    }

    /// Runs `work` on a blocking thread; 429 when the pool and its queue are
    /// full, 500 (and the process lives on) when `work` panics.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let _admitted = self.admitted.clone().try_acquire_owned().map_err(|_| ApiError::DecodeOverloaded)?;
        let _running = self.running.acquire().await.map_err(|_| ApiError::NotReady)?;
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "a decoder panicked");
                Err(ApiError::Internal("decoding the request failed unexpectedly".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_budget_is_shared_and_returned() {
        let budget = BodyBudget::new(10 * UNIT);
        let mut a = budget.hold();
        a.grow_to(6 * UNIT).unwrap();
        a.grow_to(3 * UNIT).unwrap(); // never shrinks
        let mut b = budget.hold();
        assert!(matches!(b.grow_to(5 * UNIT), Err(ApiError::BodyBudgetExhausted)));
        b.grow_to(4 * UNIT).unwrap();
        assert_eq!(budget.available_bytes(), 0);
        drop(a);
        assert_eq!(budget.available_bytes(), 6 * UNIT);
    }

    #[tokio::test]
    async fn a_full_pool_refuses_and_a_panic_is_a_500() {
        let pool = DecodePool::new(1, 0);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.recv();
                    Ok(1)
                })
                .await
            })
        };
        while pool.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(pool.run(|| Ok(2)).await, Err(ApiError::DecodeOverloaded)));
        tx.send(()).unwrap();
        assert_eq!(busy.await.unwrap().unwrap(), 1);
        #[allow(clippy::panic)]
        let panicked = pool.run::<(), _>(|| panic!("decoder bug")).await;
        assert!(matches!(panicked, Err(ApiError::Internal(_))));
        assert_eq!(pool.run(|| Ok(3)).await.unwrap(), 3);
    }
}

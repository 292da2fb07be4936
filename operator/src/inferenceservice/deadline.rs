//! The rollout's progress deadline. Pure. A rollout that waits (for its new
//! predictors, for the router's metrics, for enough canary requests once a
//! step's interval is over) records what it waits for and since when
//! (`status.rollout.waitingFor`, `waitingSince`); still waiting once
//! `spec.rollout.progressDeadline` has passed from there, it is aborted with
//! reason `ProgressDeadlineExceeded`.
//!
//! Progress restarts the clock: the rollout starts, its predictors become
//! ready, a step moves or runs on schedule. Alternating between waiting for
//! metrics and waiting for requests is no progress, so a flaky router cannot
//! keep a stuck rollout alive.

use std::time::Duration;

use hone_crds::inferenceservice::{AbortedRollout, REASON_PROGRESS_DEADLINE_EXCEEDED, RolloutStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::validate::ValidService;

/// What a rollout can wait for: RolloutProgressing reasons and `status.rollout.waitingFor`.
pub mod waits {
    /// The new version's predictors have no ready replica yet.
    pub const PREDICTORS: &str = "WaitingForPredictors";
    /// The router's metrics could not be read.
    pub const METRICS: &str = "MetricsUnavailable";
    /// The step's interval is over but fewer than `minRequests` came.
    pub const REQUESTS: &str = "WaitingForRequests";
}

/// A waiting rollout, with its clock, against the progress deadline.
#[derive(Clone, Debug, PartialEq)]
pub enum Wait {
    /// Still within the deadline: the rollout with `waitingFor` and
    /// `waitingSince` set, and the time left.
    Within(RolloutStatus, Duration),
    /// Waited past the deadline: the rollout with its clock as it stood.
    Exceeded(RolloutStatus),
}

/// Records that rollout `r` (as it was in status) waits for `reason` at
/// `now`. The clock runs on from the first wait without progress in between;
/// it restarts when the rollout was not waiting, or when it waited for its
/// predictors and now waits for something else (they became ready).
pub fn wait(mut r: RolloutStatus, reason: &str, now: Timestamp, deadline: Duration) -> Wait {
    let predictors_became_ready =
        r.waiting_for.as_deref() == Some(waits::PREDICTORS) && reason != waits::PREDICTORS;
    let since = match (&r.waiting_for, &r.waiting_since) {
        (Some(_), Some(since)) if !predictors_became_ready => since.0,
        _ => now,
    };
    r.waiting_for = Some(reason.to_owned());
    r.waiting_since = Some(Time(since));
    // A start ahead of `now` (another replica's clock skew) counts as no time waited.
    let waited = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    if waited >= deadline { Wait::Exceeded(r) } else { Wait::Within(r, deadline - waited) }
}

/// The abort of rollout `r`, which waited (`waiting`: for what, in words)
/// past the deadline, and the note of its Event. All traffic stays on (or
/// goes back to) `fromVersion`; `toVersion` is not retried at this generation.
pub fn abort(r: RolloutStatus, waiting: &str, valid: &ValidService) -> (AbortedRollout, String) {
    let message = format!(
        "rollout of variant {} to {} made no progress within spec.rollout.progressDeadline ({}): {waiting}; \
         all traffic is back on {}",
        r.variant,
        r.to_version,
        human_duration(valid.progress_deadline),
        r.from_version
    );
    let abort = AbortedRollout {
        variant: r.variant,
        from_version: Some(r.from_version),
        to_version: r.to_version,
        generation: valid.generation,
        message: message.clone(),
        reason: Some(REASON_PROGRESS_DEADLINE_EXCEEDED.to_owned()),
    };
    (abort, message)
}

/// `90s`, `10m`, `2h`: the largest whole unit.
pub fn human_duration(duration: Duration) -> String {
    match duration.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

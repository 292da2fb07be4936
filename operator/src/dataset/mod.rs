//! The Dataset controller: verify the data with an inspect Job, pin it by digest.
//!
//! observe (list Jobs and pods) -> validate (pure) -> desired (pure) ->
//! apply (server-side apply, prune) -> status (pure compute, one patch).

pub mod apply;
pub mod desired;
pub mod observe;
pub mod status;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use hone_crds::Dataset;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::controllers::{controller_for, drain_results, phase_name, with_phase_report};

use crate::context::Context;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "dataset";

/// Why a Dataset reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object itself is unusable (missing metadata).
    #[error(transparent)]
    Validate(#[from] validate::Error),
    /// Applying or pruning children failed.
    #[error(transparent)]
    Apply(#[from] apply::Error),
    /// Writing status failed.
    #[error(transparent)]
    Status(#[from] status::Error),
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Validate(e) => e.category(),
            Self::Apply(e) => e.category(),
            Self::Status(e) => e.category(),
        }
    }
}

/// One reconcile of a Dataset, timed and counted.
pub async fn reconcile(ds: Arc<Dataset>, ctx: Arc<Context>) -> Result<Action, Error> {
    crate::controllers::instrumented(&ctx, CONTROLLER, &*ds, Error::category, reconcile_inner(&ds, &ctx))
        .await
}

async fn reconcile_inner(ds: &Dataset, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let time = Time(now);
    let namespace = ds.namespace().unwrap_or_default();
    let previous = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation;

    let observed = observe::observe(ctx, ds);
    let valid = match validate::validate(ds, &ctx.config.trainer_image) {
        Ok(valid) => valid,
        Err(validate::Error::InvalidSpec(message)) => {
            // No Job for a spec that cannot work: prune, report, wait for a change.
            apply::apply(ctx, &namespace, None, observed).await?;
            status::update(ctx, ds, status::invalid(&previous, generation, &message, &time)).await?;
            return Ok(Action::await_change());
        }
        Err(other) => return Err(other.into()),
    };
    let mut desired = desired::build(&valid, &observed, now);
    ctx.config.placement.apply_to_job(&mut desired.job);
    let applied = apply::apply(ctx, &namespace, Some(&desired), observed).await?;
    let input = status::StatusInput {
        generation,
        previous: &previous,
        job: applied.job.as_ref(),
        pods: &applied.pods,
        round: desired.round,
    };
    status::update(ctx, ds, status::compute(input, &time)).await?;
    Ok(match desired.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Transient errors retry with a per-object exponential backoff.
pub fn error_policy(ds: Arc<Dataset>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::controllers::retry_later(&ctx, CONTROLLER, &*ds, error.category(), error)
}

/// The Dataset controller over one scope, woken by `triggers`; resolves
/// when it has shut down.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    triggers: futures::stream::BoxStream<'static, kube::runtime::reflector::ObjectRef<Dataset>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> BoxFuture<'static, ()> {
    let metrics = ctx.metrics.clone();
    let store = ctx.caches.datasets.clone();
    let run = controller_for(store.clone(), triggers).graceful_shutdown_on(shutdown).run(
        reconcile,
        error_policy,
        ctx,
    );
    let phase = |ds: &Dataset| phase_name(ds.status.as_ref().and_then(|s| s.phase.as_ref()));
    with_phase_report(drain_results(run), store, "Dataset", namespace, metrics, phase)
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod mock_tests;

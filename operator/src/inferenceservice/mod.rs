//! The InferenceService controller: per-variant predictors, a router (or an
//! HTTPRoute) that splits traffic, and guarded rollouts.
//!
//! observe (children, ModelVersions, router metrics) -> validate (pure,
//! resolves each variant's ModelVersion) -> rollout (pure state machine, its
//! state in status) -> desired (pure) -> apply (server-side apply, prune after
//! a drain) -> status (pure compute with the served versions' history, one
//! patch).

pub mod analysis;
pub mod apply;
pub mod deadline;
pub mod desired;
pub mod drain;
pub mod history;
pub mod manual;
pub mod names;
pub mod observe;
pub mod predictor_metrics;
pub mod promtext;
pub mod registry_alias;
pub mod rollback;
pub mod rollout;
pub mod scrape;
pub mod status;
pub mod track;
pub mod validate;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use hone_crds::{InferenceService, ModelVersion};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::context::Context;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "inferenceservice";

/// Why an InferenceService reconcile failed.
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

/// One reconcile of an InferenceService, timed and counted.
pub async fn reconcile(isvc: Arc<InferenceService>, ctx: Arc<Context>) -> Result<Action, Error> {
    crate::controllers::instrumented(
        &ctx,
        CONTROLLER,
        &*isvc,
        Error::category,
        reconcile_inner(&isvc, &ctx, Timestamp::now()),
    )
    .await
}

async fn reconcile_inner(isvc: &InferenceService, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
    let time = Time(now);
    let namespace = isvc.namespace().unwrap_or_default();
    let previous = isvc.status.clone().unwrap_or_default();

    let observed = observe::observe(ctx, isvc).await;
    let (predictor_image, router_image) = (&ctx.config.predictor_image, &ctx.config.router_image);
    let allow_url = ctx.config.allow_router_metrics_url;
    let valid =
        match validate::validate(isvc, &observed.model_versions, predictor_image, router_image, allow_url) {
            Ok(valid) => valid,
            Err(validate::Error::InvalidSpec(message)) => {
                // The children stay as they are: traffic keeps flowing while the spec is fixed.
                let next = status::invalid(&previous, isvc.metadata.generation, &message, &time);
                status::update(ctx, isvc, next, Vec::new()).await?;
                return Ok(Action::await_change());
            }
            Err(other) => return Err(other.into()),
        };
    let valid = validate::ValidService {
        feedback_key: Some(ctx.config.feedback_secret.router_key(
            &namespace,
            &isvc.name_any(),
            isvc.uid().as_deref().unwrap_or_default(),
        )),
        ..valid
    };
    let ready = observed.ready_deployments();
    let plan = rollout::plan(&rollout::Input {
        valid: &valid,
        previous: &previous,
        ready: &ready,
        metrics: observed.router_metrics.as_ref(),
        now,
    });
    let mut desired = desired::build(&valid, &plan, observed.gateway_api);
    for deployment in &mut desired.deployments {
        ctx.config.placement.apply_to_deployment(deployment);
    }
    let router = names::router_name(&valid.name);
    let present: BTreeSet<String> = observed
        .deployments
        .iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter_map(|d| d.metadata.name.clone())
        .filter(|name| *name != router)
        .collect();
    let wanted: BTreeSet<String> = desired.predictor_names(&valid.name).into_iter().collect();
    let draining = drain::update(&previous.draining, &present, &wanted, now);
    let keep: BTreeSet<String> = draining.iter().map(|d| d.name.clone()).collect();
    let applied = apply::apply(ctx, &namespace, &desired, &observed, &keep).await?;

    let input = status::StatusInput {
        valid: &valid,
        plan: &plan,
        desired: &desired,
        deployments: &applied.deployments,
        route: applied.route.as_ref(),
        gateway_api: observed.gateway_api,
        draining: &draining,
        previous: &previous,
    };
    let mut next_status = status::compute(input, &time);
    let registry =
        isvc.spec.mlflow_alias.as_ref().and_then(|_| crate::modelversion::registry::registry(&ctx.config));
    let alias_retry =
        registry_alias::sync(registry, isvc, &observed.model_versions, &mut next_status, &time).await;
    status::update(ctx, isvc, next_status, plan.events.clone()).await?;
    let next =
        [plan.requeue_after, drain::next_deadline(&draining, now), alias_retry].into_iter().flatten().min();
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// Transient errors retry with a per-object exponential backoff; an invalid
/// spec never gets here (it is reported in status and waits for a change).
pub fn error_policy(isvc: Arc<InferenceService>, error: &Error, ctx: Arc<Context>) -> Action {
    crate::controllers::retry_later(&ctx, CONTROLLER, &*isvc, error.category(), error)
}

/// True when `isvc` serves, rolls out or tracks `mv` (the same test the
/// ModelVersion controller's `servedBy` makes, plus `track` by model name).
pub fn references(isvc: &InferenceService, mv: &ModelVersion) -> bool {
    if isvc.namespace() != mv.namespace() {
        return false;
    }
    let tracked =
        isvc.spec.variants.iter().any(|v| v.track.as_ref().is_some_and(|t| t.model == mv.spec.model));
    tracked || isvc.serves(&mv.name_any())
}

/// The InferenceService controller over one scope, woken by `triggers`;
/// resolves when it has shut down.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    triggers: futures::stream::BoxStream<'static, kube::runtime::reflector::ObjectRef<InferenceService>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> BoxFuture<'static, ()> {
    let metrics = ctx.metrics.clone();
    let store = ctx.caches.inference_services.clone();
    let run = crate::controllers::controller_for(store.clone(), triggers).graceful_shutdown_on(shutdown).run(
        reconcile,
        error_policy,
        ctx,
    );
    let phase = |isvc: &InferenceService| {
        crate::controllers::phase_name(isvc.status.as_ref().and_then(|s| s.phase.as_ref()))
    };
    crate::controllers::with_phase_report(
        crate::controllers::drain_results(run),
        store,
        "InferenceService",
        namespace,
        metrics,
        phase,
    )
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod mock_tests;

//! Server-side apply of every desired child, and pruning of the children
//! this InferenceService controls that are no longer desired (an old
//! version's predictors after promotion, once they have drained).

use std::collections::BTreeSet;
use std::fmt::Debug;

use hone_crds::consts::FIELD_MANAGER;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::desired::Desired;
use super::desired::gateway::http_route_resource;
use super::observe::Observed;
use crate::children::{needs_apply, stamp_desired_hash};
use crate::context::Context;

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server-side apply was refused.
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        /// The kind.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an object no longer desired failed.
    #[error("deleting {kind} {namespace}/{name}: {source}")]
    Prune {
        /// The kind.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Apply { .. } => "apply",
            Self::Prune { .. } => "prune",
        }
    }
}

/// The children as the apiserver holds them after apply.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Desired Deployments, with their status.
    pub deployments: Vec<Deployment>,
    /// The HTTPRoute, with its status.
    pub route: Option<DynamicObject>,
}

/// Applies `desired`, then deletes what `observed` holds beyond it, except
/// the predictors named in `draining`. Applies that do not depend on each
/// other go out together: first the router's ServiceAccount and Role, the
/// Services and the router config; then the RoleBinding (checked against its
/// Role), the Deployments (whose pods need all of those), HPAs, PDBs and the
/// route; then the prunes, all together (routes have changed by then).
pub async fn apply(
    ctx: &Context,
    namespace: &str,
    desired: &Desired,
    observed: &Observed,
    draining: &BTreeSet<String>,
) -> Result<Applied, Error> {
    let client = &ctx.client;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let autoscalers = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace);
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let routes = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &http_route_resource());
    let service_accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let roles = Api::<Role>::namespaced(client.clone(), namespace);
    let role_bindings = Api::<RoleBinding>::namespaced(client.clone(), namespace);

    // Every apply of a wave runs to its end even when a sibling fails (a
    // cancelled sibling could otherwise never get its turn); the first error
    // is reported after the wave.
    let (accounts, roles_applied, services_applied, maps) = futures::join!(
        apply_each(
            &service_accounts,
            &desired.service_accounts,
            &observed.service_accounts,
            "ServiceAccount"
        ),
        apply_each(&roles, &desired.roles, &observed.roles, "Role"),
        apply_each(&services, &desired.services, &observed.services, "Service"),
        apply_each(&config_maps, &desired.config_maps, &observed.config_maps, "ConfigMap"),
    );
    accounts?;
    roles_applied?;
    services_applied?;
    maps?;
    // A RoleBinding is checked against its Role, which must exist first.
    let (bindings, applied_deployments, autoscalers_applied, budgets_applied, route) = futures::join!(
        apply_each(&role_bindings, &desired.role_bindings, &observed.role_bindings, "RoleBinding"),
        apply_each(&deployments, &desired.deployments, &observed.deployments, "Deployment"),
        apply_each(&autoscalers, &desired.autoscalers, &observed.autoscalers, "HorizontalPodAutoscaler"),
        apply_each(
            &budgets,
            &desired.disruption_budgets,
            &observed.disruption_budgets,
            "PodDisruptionBudget"
        ),
        apply_each(&routes, desired.route.as_slice(), &observed.routes, "HTTPRoute"),
    );
    bindings?;
    let applied_deployments = applied_deployments?;
    autoscalers_applied?;
    budgets_applied?;
    let route = route?;
    // An unchanged Deployment is taken as observed (with its status).
    let applied_deployments: Vec<Deployment> = desired
        .deployments
        .iter()
        .zip(applied_deployments)
        .filter_map(|(wanted, applied)| {
            applied.or_else(|| {
                observed.deployments.iter().find(|d| d.metadata.name == wanted.metadata.name).cloned()
            })
        })
        .collect();
    let route = desired.route.as_ref().and_then(|wanted| {
        route
            .into_iter()
            .next()
            .flatten()
            .or_else(|| observed.routes.iter().find(|r| r.metadata.name == wanted.metadata.name).cloned())
    });

    let keep = |wanted: BTreeSet<String>| -> BTreeSet<String> { wanted.union(draining).cloned().collect() };
    let pruned = futures::join!(
        prune(&routes, &observed.routes, names(desired.route.iter()), "HTTPRoute"),
        prune(&config_maps, &observed.config_maps, names(desired.config_maps.iter()), "ConfigMap"),
        prune(&role_bindings, &observed.role_bindings, names(desired.role_bindings.iter()), "RoleBinding"),
        prune(&roles, &observed.roles, names(desired.roles.iter()), "Role"),
        prune(
            &service_accounts,
            &observed.service_accounts,
            names(desired.service_accounts.iter()),
            "ServiceAccount"
        ),
        prune(&deployments, &observed.deployments, keep(names(desired.deployments.iter())), "Deployment"),
        prune(&services, &observed.services, keep(names(desired.services.iter())), "Service"),
        prune(
            &autoscalers,
            &observed.autoscalers,
            keep(names(desired.autoscalers.iter())),
            "HorizontalPodAutoscaler"
        ),
        prune(
            &budgets,
            &observed.disruption_budgets,
            keep(names(desired.disruption_budgets.iter())),
            "PodDisruptionBudget"
        ),
    );
    let (a, b, c, d, e, f, g, h, i) = pruned;
    for result in [a, b, c, d, e, f, g, h, i] {
        result?;
    }
    Ok(Applied { deployments: applied_deployments, route })
}

fn names<'a, K: Resource + 'a>(objects: impl Iterator<Item = &'a K>) -> BTreeSet<String> {
    objects.filter_map(|o| o.meta().name.clone()).collect()
}

/// Applies, all at once, each object that [`needs_apply`] against what
/// `observed` holds of it; one entry per object, `None` where it was unchanged.
async fn apply_each<K, O>(
    api: &Api<K>,
    objects: &[K],
    observed: &[O],
    kind: &'static str,
) -> Result<Vec<Option<K>>, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    O: Resource,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let results = futures::future::join_all(objects.iter().map(|object| {
        let params = &params;
        async move {
            let name = object.name_any();
            let mut object = object.clone();
            let hash = stamp_desired_hash(&mut object);
            let current = observed.iter().find(|o| o.meta().name.as_deref() == Some(name.as_str()));
            if current.is_some_and(|c| !needs_apply(Some(c), &hash)) {
                return Ok(None);
            }
            let object = &object;
            api.patch(&name, params, &Patch::Apply(object)).await.map(Some).map_err(|source| Error::Apply {
                kind,
                namespace: object.namespace().unwrap_or_default(),
                name: name.clone(),
                source,
            })
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Deletes, all at once, what `observed` holds beyond `wanted` (and not
/// already going).
async fn prune<K, O>(
    api: &Api<K>,
    observed: &[O],
    wanted: BTreeSet<String>,
    kind: &'static str,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    O: Resource,
{
    let wanted = &wanted;
    let unwanted = observed.iter().filter(|o| o.meta().deletion_timestamp.is_none()).filter_map(|o| {
        let name = o.meta().name.as_deref()?;
        (!wanted.contains(name)).then(|| (name, o.meta().namespace.clone().unwrap_or_default()))
    });
    let results = futures::future::join_all(unwanted.map(|(name, namespace)| async move {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                tracing::info!(kind, name, namespace, "deleted an object no longer desired");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(Error::Prune { kind, namespace, name: name.to_owned(), source }),
        }
    }))
    .await;
    results.into_iter().collect()
}

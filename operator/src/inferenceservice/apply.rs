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
/// the predictors named in `draining`. Routes change before predictors go.
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

    // The router's identity before its pods, which run as it.
    apply_each(&service_accounts, &desired.service_accounts, &observed.service_accounts, "ServiceAccount")
        .await?;
    apply_each(&roles, &desired.roles, &observed.roles, "Role").await?;
    apply_each(&role_bindings, &desired.role_bindings, &observed.role_bindings, "RoleBinding").await?;
    apply_each(&services, &desired.services, &observed.services, "Service").await?;
    let applied_deployments =
        apply_each(&deployments, &desired.deployments, &observed.deployments, "Deployment").await?;
    apply_each(&autoscalers, &desired.autoscalers, &observed.autoscalers, "HorizontalPodAutoscaler").await?;
    apply_each(&budgets, &desired.disruption_budgets, &observed.disruption_budgets, "PodDisruptionBudget")
        .await?;
    apply_each(&config_maps, &desired.config_maps, &observed.config_maps, "ConfigMap").await?;
    let route = match &desired.route {
        Some(route) => apply_each(&routes, std::slice::from_ref(route), &observed.routes, "HTTPRoute")
            .await?
            .into_iter()
            .next(),
        None => None,
    };

    let keep = |wanted: BTreeSet<String>| -> BTreeSet<String> { wanted.union(draining).cloned().collect() };
    prune(&routes, &observed.routes, &names(desired.route.iter()), "HTTPRoute").await?;
    prune(&config_maps, &observed.config_maps, &names(desired.config_maps.iter()), "ConfigMap").await?;
    prune(&role_bindings, &observed.role_bindings, &names(desired.role_bindings.iter()), "RoleBinding")
        .await?;
    prune(&roles, &observed.roles, &names(desired.roles.iter()), "Role").await?;
    let wanted = names(desired.service_accounts.iter());
    prune(&service_accounts, &observed.service_accounts, &wanted, "ServiceAccount").await?;
    prune(&deployments, &observed.deployments, &keep(names(desired.deployments.iter())), "Deployment")
        .await?;
    prune(&services, &observed.services, &keep(names(desired.services.iter())), "Service").await?;
    let wanted = keep(names(desired.autoscalers.iter()));
    prune(&autoscalers, &observed.autoscalers, &wanted, "HorizontalPodAutoscaler").await?;
    let wanted = keep(names(desired.disruption_budgets.iter()));
    prune(&budgets, &observed.disruption_budgets, &wanted, "PodDisruptionBudget").await?;
    Ok(Applied { deployments: applied_deployments, route })
}

fn names<'a, K: Resource + 'a>(objects: impl Iterator<Item = &'a K>) -> BTreeSet<String> {
    objects.filter_map(|o| o.meta().name.clone()).collect()
}

/// Applies each object that [`needs_apply`]; an unchanged one is taken as observed.
async fn apply_each<K>(
    api: &Api<K>,
    objects: &[K],
    observed: &[K],
    kind: &'static str,
) -> Result<Vec<K>, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::with_capacity(objects.len());
    for object in objects {
        let name = object.name_any();
        let mut object = object.clone();
        let hash = stamp_desired_hash(&mut object);
        let current = observed.iter().find(|o| o.meta().name.as_deref() == Some(name.as_str()));
        if let Some(current) = current.filter(|c| !needs_apply(Some(*c), &hash)) {
            applied.push(current.clone());
            continue;
        }
        let object = &object;
        let result =
            api.patch(&name, &params, &Patch::Apply(object)).await.map_err(|source| Error::Apply {
                kind,
                namespace: object.namespace().unwrap_or_default(),
                name: name.clone(),
                source,
            })?;
        applied.push(result);
    }
    Ok(applied)
}

async fn prune<K>(
    api: &Api<K>,
    observed: &[K],
    wanted: &BTreeSet<String>,
    kind: &'static str,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    for object in observed {
        let Some(name) = object.meta().name.as_deref() else { continue };
        if wanted.contains(name) || object.meta().deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(
                kind,
                name,
                namespace = object.namespace(),
                "deleted an object no longer desired"
            ),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Prune {
                    kind,
                    namespace: object.namespace().unwrap_or_default(),
                    name: name.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

//! What the InferenceService controller reads: its children, the
//! namespace's ModelVersions, whether the Gateway API exists, and (during a
//! canary) the router's metrics. The only reads of a reconcile.

use std::collections::BTreeSet;
use std::fmt::Debug;

use hone_crds::consts::LABEL_INFERENCE_SERVICE;
use hone_crds::inferenceservice::{ANNOTATION_ROUTER_METRICS_URL, RolloutStrategy, TrafficProvider};
use hone_crds::{InferenceService, ModelVersion};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::desired::gateway::{GATEWAY_GROUP, GATEWAY_VERSION, HTTP_ROUTE_KIND, http_route_resource};
use super::promtext::RouterMetrics;
use super::scrape;
use crate::children::is_controlled_by;
use crate::context::Context;

/// Why observing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing one kind failed.
    #[error("listing {kind} of inferenceservice {namespace}/{name}: {source}")]
    List {
        /// The kind listed.
        kind: &'static str,
        /// Namespace of the InferenceService.
        namespace: String,
        /// Name of the InferenceService.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Discovery of the Gateway API failed (other than "not installed").
    #[error("discovering the Gateway API: {0}")]
    Discovery(#[source] kube::Error),
    /// Listing the router pods failed.
    #[error(transparent)]
    RouterPods(#[from] scrape::ListPodsError),
}

impl Error {
    /// Metric label and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Discovery(_) => "discovery",
            Self::List { .. } | Self::RouterPods(_) => "kube_api",
        }
    }
}

/// The InferenceService's world as it is.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Deployments it controls (predictors and router).
    pub deployments: Vec<Deployment>,
    /// Services it controls.
    pub services: Vec<Service>,
    /// HPAs it controls.
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    /// PodDisruptionBudgets it controls.
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// ConfigMaps it controls (the router config).
    pub config_maps: Vec<ConfigMap>,
    /// ServiceAccounts it controls (the router's).
    pub service_accounts: Vec<ServiceAccount>,
    /// Roles it controls (the router's).
    pub roles: Vec<Role>,
    /// RoleBindings it controls (the router's).
    pub role_bindings: Vec<RoleBinding>,
    /// HTTPRoutes it controls.
    pub routes: Vec<DynamicObject>,
    /// Whether HTTPRoutes exist in the cluster.
    pub gateway_api: bool,
    /// Every ModelVersion of the namespace.
    pub model_versions: Vec<ModelVersion>,
    /// The router's metrics during a canary rollout, or why they are unavailable.
    pub router_metrics: Option<Result<RouterMetrics, String>>,
}

impl Observed {
    /// Names of the Deployments with at least one ready replica.
    pub fn ready_deployments(&self) -> BTreeSet<String> {
        self.deployments
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) > 0)
            .filter_map(|d| d.metadata.name.clone())
            .collect()
    }
}

/// Reads everything one reconcile of `isvc` needs.
pub async fn observe(ctx: &Context, isvc: &InferenceService) -> Result<Observed, Error> {
    let namespace = isvc.namespace().unwrap_or_default();
    let name = isvc.name_any();
    let uid = isvc.uid().unwrap_or_default();
    let lister = Lister { client: &ctx.client, namespace: &namespace, name: &name, uid: &uid };
    let deployments = lister.owned("Deployments").await?;
    let services = lister.owned("Services").await?;
    let autoscalers = lister.owned("HorizontalPodAutoscalers").await?;
    let disruption_budgets = lister.owned("PodDisruptionBudgets").await?;
    let config_maps = lister.owned("ConfigMaps").await?;
    let service_accounts = lister.owned("ServiceAccounts").await?;
    let roles = lister.owned("Roles").await?;
    let role_bindings = lister.owned("RoleBindings").await?;
    let gateway_api = gateway_api_installed(&ctx.client).await?;
    let routes = if gateway_api {
        let api =
            Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &http_route_resource());
        lister.owned_from(api, "HTTPRoutes").await?
    } else {
        Vec::new()
    };
    let model_versions = Api::<ModelVersion>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(|source| lister.error("ModelVersions", source))?
        .items;
    let canary = isvc.spec.rollout.as_ref().is_some_and(|r| r.strategy == RolloutStrategy::Canary);
    let rolling_out = isvc.status.as_ref().is_some_and(|s| s.rollout.is_some());
    // Only when the operator is told to: otherwise an object's author could
    // make it fetch any URL (validation then refuses the object).
    let url = isvc
        .annotations()
        .get(ANNOTATION_ROUTER_METRICS_URL)
        .map(String::as_str)
        .filter(|_| ctx.config.allow_router_metrics_url);
    let gateway_provider =
        isvc.spec.traffic.as_ref().is_some_and(|t| t.provider == TrafficProvider::GatewayApi);
    let router_metrics = match (canary && rolling_out, url) {
        (false, _) => None,
        // No router runs under the GatewayAPI provider: only an explicit URL has its metrics.
        (true, None) if gateway_provider => Some(Err(format!(
            "with traffic.provider GatewayAPI there are no router pods to read; set the annotation \
             {ANNOTATION_ROUTER_METRICS_URL} to a page with the hone_router_* series of the canary"
        ))),
        (true, url) => Some(scrape::router_metrics(&ctx.client, &namespace, &name, url).await?),
    };
    Ok(Observed {
        deployments,
        services,
        autoscalers,
        disruption_budgets,
        config_maps,
        service_accounts,
        roles,
        role_bindings,
        routes,
        gateway_api,
        model_versions,
        router_metrics,
    })
}

/// True when the apiserver serves `gateway.networking.k8s.io/v1` HTTPRoutes
/// (discovery, so no RBAC on CustomResourceDefinitions is needed).
async fn gateway_api_installed(client: &kube::Client) -> Result<bool, Error> {
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, GATEWAY_VERSION, HTTP_ROUTE_KIND);
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(kube::Error::Discovery(_)) => Ok(false),
        Err(other) => Err(Error::Discovery(other)),
    }
}

struct Lister<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
}

impl Lister<'_> {
    fn error(&self, kind: &'static str, source: kube::Error) -> Error {
        Error::List { kind, namespace: self.namespace.to_owned(), name: self.name.to_owned(), source }
    }

    /// The objects of a kind labelled for this InferenceService that it controls
    /// (a deleted and recreated namesake leaves others behind).
    async fn owned<K>(&self, kind: &'static str) -> Result<Vec<K>, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        self.owned_from(Api::<K>::namespaced(self.client.clone(), self.namespace), kind).await
    }

    async fn owned_from<K>(&self, api: Api<K>, kind: &'static str) -> Result<Vec<K>, Error>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        let selector = ListParams::default().labels(&format!("{LABEL_INFERENCE_SERVICE}={}", self.name));
        Ok(api
            .list(&selector)
            .await
            .map_err(|source| self.error(kind, source))?
            .items
            .into_iter()
            .filter(|o| is_controlled_by(o.meta().owner_references.as_deref(), self.uid))
            .collect())
    }
}

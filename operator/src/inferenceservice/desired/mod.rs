//! The children an InferenceService should have. Pure: the validated spec and
//! the rollout plan in, k8s-openapi objects (and one HTTPRoute as a
//! `DynamicObject`) out, each with name, namespace, labels and controller
//! ownerReference.

pub mod gateway;
pub mod predictor;
pub mod router;
pub mod router_access;
pub mod scaling;

use hone_crds::inferenceservice::TrafficProvider;
use hone_crds::router::RouterConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::DynamicObject;

use super::names::{predictor_name, router_name, service_url};
use super::rollout::Plan;
use super::validate::ValidService;

/// One router backend (or HTTPRoute backendRef).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Backend name: the variant's for its stable version, `<variant>-v<version>` for a canary.
    pub name: String,
    /// The predictor Service.
    pub service: String,
    /// Its URL.
    pub url: String,
    /// Share of all traffic in basis points (variant percent times 100).
    pub weight: u32,
    /// For a canary, the name of its variant's stable backend.
    pub canary_of: Option<String>,
    /// Whether the variant header may select it: a variant's stable backend
    /// with traffic, or any backend under `spec.routing.allowCanaryPinning`.
    pub pinnable: bool,
    /// For a canary in its shadow step: the percent of its variant's
    /// requests mirrored to it.
    pub mirror_percent: Option<u32>,
}

/// Everything the InferenceService should own.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Predictor Deployments, then the router's.
    pub deployments: Vec<Deployment>,
    /// Predictor Services, then the router's.
    pub services: Vec<Service>,
    /// One per predictor Deployment.
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    /// One per Deployment.
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// The router config.
    pub config_maps: Vec<ConfigMap>,
    /// The router's ServiceAccount.
    pub service_accounts: Vec<ServiceAccount>,
    /// The router's Role: read its ConfigMap.
    pub roles: Vec<Role>,
    /// The router's RoleBinding.
    pub role_bindings: Vec<RoleBinding>,
    /// The HTTPRoute (GatewayAPI provider, when the Gateway API is installed).
    pub route: Option<DynamicObject>,
    /// The router config written, for status and tests.
    pub router_config: Option<RouterConfig>,
    /// The stable endpoint.
    pub url: Option<String>,
}

impl Desired {
    /// Names of the predictor Deployments (not the router's).
    pub fn predictor_names(&self, isvc: &str) -> Vec<String> {
        let router = router_name(isvc);
        self.deployments.iter().filter_map(|d| d.metadata.name.clone()).filter(|n| *n != router).collect()
    }
}

/// The backends of `plan`: each servable variant's stable version with its
/// share of the variant's weight, and its canary with the rest. Clients may
/// pin (variant header) only a variant's stable backend with traffic, unless
/// the spec allows canary pinning.
pub fn backends(valid: &ValidService, plan: &Plan) -> Vec<Backend> {
    let mut backends = Vec::new();
    for variant in &plan.variants {
        let Some(stable) = &variant.stable else { continue };
        let weight = u32::try_from(variant.weight.clamp(0, 100)).unwrap_or(0);
        let canary_percent =
            variant.canary.as_ref().map_or(0, |c| u32::try_from(c.weight.clamp(0, 100)).unwrap_or(0));
        let service = predictor_name(&valid.name, &variant.name, stable.version);
        let stable_weight = weight * (100 - canary_percent);
        backends.push(Backend {
            name: variant.name.clone(),
            url: service_url(&service, &valid.namespace),
            service,
            weight: stable_weight,
            canary_of: None,
            pinnable: stable_weight > 0 || valid.routing.allow_canary_pinning,
            mirror_percent: None,
        });
        if let Some(canary) = &variant.canary {
            let service = predictor_name(&valid.name, &variant.name, canary.model.version);
            backends.push(Backend {
                name: canary.backend.clone(),
                url: service_url(&service, &valid.namespace),
                service,
                weight: weight * canary_percent,
                canary_of: Some(variant.name.clone()),
                pinnable: valid.routing.allow_canary_pinning,
                mirror_percent: canary.shadow,
            });
        }
    }
    backends
}

/// Builds every child. `gateway_api` says whether HTTPRoutes exist in the cluster.
pub fn build(valid: &ValidService, plan: &Plan, gateway_api: bool) -> Desired {
    let mut desired = Desired::default();
    for variant in &plan.variants {
        let models = variant.stable.iter().chain(variant.canary.as_ref().map(|c| &c.model));
        for model in models {
            let objects = predictor::predictor_objects(valid, &variant.name, model);
            desired.deployments.push(objects.deployment);
            desired.services.push(objects.service);
            desired.autoscalers.push(objects.autoscaler);
            desired.disruption_budgets.push(objects.disruption_budget);
        }
    }
    let backends = backends(valid, plan);
    // The router refuses a config without a positive weight, and with no
    // servable variant there is nothing to route to.
    if !backends.iter().any(|b| b.weight > 0) {
        return desired;
    }
    match (valid.provider, &valid.gateway) {
        (TrafficProvider::Router, _) => {
            let router = router::router_objects(valid, &backends);
            desired.url = Some(service_url(&router_name(&valid.name), &valid.namespace));
            desired.router_config = Some(router.config);
            desired.config_maps.push(router.config_map);
            desired.service_accounts.push(router.access.service_account);
            desired.roles.push(router.access.role);
            desired.role_bindings.push(router.access.role_binding);
            desired.deployments.push(router.deployment);
            desired.services.push(router.service);
            desired.disruption_budgets.push(router.disruption_budget);
        }
        (TrafficProvider::GatewayApi, Some(gateway)) => {
            desired.url = gateway.hostnames.first().map(|host| format!("http://{host}"));
            if gateway_api {
                desired.route = Some(gateway::http_route(valid, gateway, &backends));
            }
        }
        // Validation refuses GatewayAPI without a gateway.
        (TrafficProvider::GatewayApi, None) => {}
    }
    desired
}

//! The `GatewayAPI` provider: one HTTPRoute (gateway.networking.k8s.io/v1)
//! with a rule per backend on the variant header and a weighted default rule.
//! Built as a `DynamicObject`, so the operator needs no Gateway API types and
//! runs on clusters without them.

use hone_crds::inferenceservice::GatewayTraffic;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::super::names::{PORT, route_name};
use super::super::validate::ValidService;
use super::Backend;
use super::scaling::meta;

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// The HTTPRoute version used.
pub const GATEWAY_VERSION: &str = "v1";
/// The HTTPRoute kind.
pub const HTTP_ROUTE_KIND: &str = "HTTPRoute";

/// The HTTPRoute API resource.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GATEWAY_GROUP, GATEWAY_VERSION, HTTP_ROUTE_KIND),
        "httproutes",
    )
}

/// The HTTPRoute sending `backends` their weights, and a request whose
/// variant header names a pinnable backend to that backend (a header naming
/// any other falls through to the weighted rule). The sticky header has no
/// Gateway API equivalent (no consistent hashing in the core API), so
/// validation refuses it with this provider; the `Router` provider honours it.
pub fn http_route(valid: &ValidService, gateway: &GatewayTraffic, backends: &[Backend]) -> DynamicObject {
    let name = route_name(&valid.name);
    let mut route = DynamicObject::new(&name, &http_route_resource()).within(&valid.namespace);
    route.metadata = meta(valid, &name, &Default::default());
    let parent_refs: Vec<Value> = gateway
        .parent_refs
        .iter()
        .map(|p| {
            let mut parent = json!({ "name": p.name });
            if let Some(namespace) = &p.namespace {
                parent["namespace"] = json!(namespace);
            }
            if let Some(section) = &p.section_name {
                parent["sectionName"] = json!(section);
            }
            parent
        })
        .collect();
    let mut rules: Vec<Value> = backends
        .iter()
        .filter(|b| b.pinnable)
        .map(|b| {
            json!({
                "matches": [{"headers": [{"type": "Exact", "name": valid.routing.variant_header, "value": b.name}]}],
                "backendRefs": [{"name": b.service, "port": PORT}],
            })
        })
        .collect();
    rules.push(json!({
        "backendRefs": backends
            .iter()
            .map(|b| json!({"name": b.service, "port": PORT, "weight": b.weight}))
            .collect::<Vec<_>>(),
    }));
    let mut spec = json!({ "parentRefs": parent_refs, "rules": rules });
    if !gateway.hostnames.is_empty() {
        spec["hostnames"] = json!(gateway.hostnames);
    }
    route.data = json!({ "spec": spec });
    route
}

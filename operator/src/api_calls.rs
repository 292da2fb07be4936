//! Counts every request the operator's client sends to the apiserver, by
//! verb, so "no LIST in steady state" can be read off the operator's own
//! `/metrics` (`hone_operator_api_requests_total{verb}`), per process and
//! without the apiserver's counters, which mix every client.

use std::sync::Arc;

use http::{Method, Request};
use kube::client::{Body, ClientBuilder};
use tower::util::MapRequestLayer;

use crate::metrics::Metrics;

/// The Kubernetes verb of a request, from its method, path and query:
/// `list`, `watch`, `get`, `create`, `apply`, `patch`, `update`, `delete`,
/// `deletecollection`, or `discovery` for the group and version documents.
pub fn verb(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    let query = query.unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/<res> or /api/v1/namespaces/<ns>/<res>: a collection;
    // /apis/<group>/<version>/... likewise, one segment further.
    let (collection_lengths, discovery_max) = match segments.first() {
        Some(&"api") => ([3, 5], 2),
        Some(&"apis") => ([4, 6], 3),
        _ => return "other",
    };
    let collection = collection_lengths.contains(&segments.len())
        // /api/v1/namespaces is itself a collection; /api/v1/namespaces/<ns> is not.
        && !(segments.len() == collection_lengths[0] + 1 && segments.get(collection_lengths[0] - 1) == Some(&"namespaces"));
    match *method {
        Method::GET if segments.len() <= discovery_max => "discovery",
        Method::GET if query.split('&').any(|p| p == "watch=true" || p == "watch=1") => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST => "create",
        // Server-side apply is told apart by its content type, in `verb_of`.
        Method::PATCH => "patch",
        Method::PUT => "update",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// The resource a request is about, from its path: `deployments`,
/// `inferenceservices/status`, `leases`; empty for discovery and others.
/// Bounded: the operator's own client builds every path.
pub fn resource(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.first() {
        Some(&"api") if segments.len() > 2 => &segments[2..],
        Some(&"apis") if segments.len() > 3 => &segments[3..],
        _ => return String::new(),
    };
    // namespaces/<ns>/<resource>[/<name>[/<subresource>]] or <resource>[/<name>[/<sub>]]
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    match rest {
        [resource] | [resource, _] => (*resource).to_owned(),
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
        [] => String::new(),
    }
}

/// The verb of `request` (see [`verb`]); a PATCH with the apply content type is `apply`.
pub fn verb_of<B>(request: &Request<B>) -> &'static str {
    let verb = verb(request.method(), request.uri().path(), request.uri().query());
    let apply = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"));
    if verb == "patch" && apply { "apply" } else { verb }
}

/// A client over `config` that counts its requests in `metrics`.
pub fn counted_client(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let layer = MapRequestLayer::new(move |request: Request<Body>| {
        metrics.record_api_request(verb_of(&request), resource(request.uri().path()));
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_from_paths() {
        let get = Method::GET;
        assert_eq!(verb(&get, "/api/v1/namespaces/ml/pods", Some("labelSelector=a")), "list");
        assert_eq!(verb(&get, "/api/v1/pods", None), "list");
        assert_eq!(verb(&get, "/api/v1/namespaces/ml/pods", Some("watch=true&resourceVersion=1")), "watch");
        assert_eq!(verb(&get, "/api/v1/namespaces/ml/pods/p", None), "get");
        assert_eq!(verb(&get, "/api/v1/namespaces", None), "list");
        assert_eq!(verb(&get, "/api/v1/namespaces/ml", None), "get");
        assert_eq!(verb(&get, "/apis/apps/v1/namespaces/ml/deployments", None), "list");
        assert_eq!(verb(&get, "/apis/apps/v1/deployments", None), "list");
        assert_eq!(verb(&get, "/apis/apps/v1/namespaces/ml/deployments/d", None), "get");
        assert_eq!(verb(&get, "/apis/hone.dev/v1alpha1/namespaces/ml/modelversions/m/status", None), "get");
        assert_eq!(verb(&get, "/apis/gateway.networking.k8s.io/v1", None), "discovery");
        assert_eq!(verb(&get, "/apis", None), "discovery");
        assert_eq!(verb(&get, "/version", None), "other");
        assert_eq!(verb(&Method::POST, "/apis/events.k8s.io/v1/namespaces/ml/events", None), "create");
        assert_eq!(verb(&Method::DELETE, "/apis/apps/v1/namespaces/ml/deployments/d", None), "delete");
        assert_eq!(verb(&Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/ml/leases/l", None), "update");
    }

    #[test]
    fn resources_from_paths() {
        assert_eq!(resource("/api/v1/namespaces/ml/pods"), "pods");
        assert_eq!(resource("/api/v1/namespaces/ml/pods/p"), "pods");
        assert_eq!(resource("/api/v1/namespaces"), "namespaces");
        assert_eq!(resource("/api/v1/namespaces/ml"), "namespaces");
        assert_eq!(resource("/apis/coordination.k8s.io/v1/namespaces/ml/leases/l"), "leases");
        assert_eq!(
            resource("/apis/hone.dev/v1alpha1/namespaces/ml/modelversions/m/status"),
            "modelversions/status"
        );
        assert_eq!(resource("/apis/apps/v1/deployments"), "deployments");
        assert_eq!(resource("/apis/gateway.networking.k8s.io/v1"), "");
        assert_eq!(resource("/version"), "");
    }

    #[test]
    fn server_side_apply_is_told_apart_by_its_content_type() {
        let request = Request::builder()
            .method(Method::PATCH)
            .uri("/apis/apps/v1/namespaces/ml/deployments/d?fieldManager=hone-operator&force=true")
            .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
            .body(())
            .unwrap_or_default();
        assert_eq!(verb_of(&request), "apply");
        let merge = Request::builder()
            .method(Method::PATCH)
            .uri("/apis/apps/v1/namespaces/ml/deployments/d")
            .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
            .body(())
            .unwrap_or_default();
        assert_eq!(verb_of(&merge), "patch");
    }
}

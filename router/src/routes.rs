//! Which requests canary analysis counts: only inference. Everything else the
//! router forwards (`GET /v2`, `/docs`, `/`, `/ui`, ...) is cheap to send and
//! says nothing about a model, so a flood of it must not dilute (or inflate) a
//! canary's error rate. Pure.

use axum::http::Method;

/// How a forwarded request is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteClass {
    /// `POST /predict`, `POST /predict/batch`, `POST /v2/models/{name}/infer`
    /// and `POST /v2/models/{name}/versions/{version}/infer`: the requests
    /// canary analysis reads (`hone_router_requests_total` and friends).
    Inference,
    /// Anything else (`hone_router_other_requests_total`).
    Other,
}

/// The class of a request by method and path (without the query). Paths
/// match exactly, as the predictor's routes do: `/predict/` or `//predict`
/// is not an inference route there either.
pub fn classify(method: &Method, path: &str) -> RouteClass {
    if method != Method::POST {
        return RouteClass::Other;
    }
    let inference = match path {
        "/predict" | "/predict/batch" => true,
        _ => path.strip_prefix("/v2/models/").is_some_and(is_infer_path),
    };
    if inference { RouteClass::Inference } else { RouteClass::Other }
}

/// The form of the predictor's answers on a route whose answers the router reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerShape {
    /// `POST /predict`: one object with `label` and `confidence`.
    Single,
    /// `POST /predict/batch`: `{"predictions": [...]}` of those objects.
    Batch,
}

/// The answer shape of `POST /predict` and `POST /predict/batch`; `None` for
/// everything else (an OIP `infer` answer is tensors, not predictions).
pub fn answer_shape(method: &Method, path: &str) -> Option<AnswerShape> {
    if method != Method::POST {
        return None;
    }
    match path {
        "/predict" => Some(AnswerShape::Single),
        "/predict/batch" => Some(AnswerShape::Batch),
        _ => None,
    }
}

/// `{name}/infer` or `{name}/versions/{version}/infer`, each segment non-empty.
fn is_infer_path(rest: &str) -> bool {
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        [name, "infer"] => !name.is_empty(),
        [name, "versions", version, "infer"] => !name.is_empty() && !version.is_empty(),
        _ => false,
    }
}

/// Paths the router keeps for itself on the client port and never forwards:
/// its metrics and introspection live on the admin listener, and a client
/// asking for them here gets 404 (not a predictor's page under the router's name).
pub fn is_reserved(path: &str) -> bool {
    path == "/metrics" || path == "/router" || path.starts_with("/router/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inference_posts_are_inference() {
        let inference =
            ["/predict", "/predict/batch", "/v2/models/digits/infer", "/v2/models/digits/versions/3/infer"];
        for path in inference {
            assert_eq!(classify(&Method::POST, path), RouteClass::Inference, "{path}");
            assert_eq!(classify(&Method::GET, path), RouteClass::Other, "GET {path}");
        }
        let other = [
            "/",
            "/ui",
            "/docs",
            "/v2",
            "/v2/models/digits",
            "/v2/models/digits/ready",
            "/v2/models//infer",
            "/v2/models/digits/versions//infer",
            "/v2/models/digits/infer/",
            "/v2/models/a/b/infer",
            "/predict/",
            "//predict",
            "/predict/batch/x",
            "/PREDICT",
            "/v2/health/ready",
        ];
        for path in other {
            assert_eq!(classify(&Method::POST, path), RouteClass::Other, "{path}");
        }
        assert_eq!(classify(&Method::PUT, "/predict"), RouteClass::Other);
    }

    #[test]
    fn only_predictor_routes_have_an_answer_shape() {
        assert_eq!(answer_shape(&Method::POST, "/predict"), Some(AnswerShape::Single));
        assert_eq!(answer_shape(&Method::POST, "/predict/batch"), Some(AnswerShape::Batch));
        assert_eq!(answer_shape(&Method::GET, "/predict"), None);
        for path in ["/v2/models/digits/infer", "/predict/", "/feedback", "/"] {
            assert_eq!(answer_shape(&Method::POST, path), None, "{path}");
        }
    }

    #[test]
    fn admin_paths_are_reserved() {
        for path in ["/metrics", "/router", "/router/config", "/router/x/y"] {
            assert!(is_reserved(path), "{path}");
        }
        for path in ["/", "/metricsx", "/routers", "/v2/metrics", "/predict"] {
            assert!(!is_reserved(path), "{path}");
        }
    }
}

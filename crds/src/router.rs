//! The contract between the operator and `hone-router`: the config file the
//! operator writes into a ConfigMap from an InferenceService (read and
//! validated by the router), the router's environment, and the names of the
//! metrics canary analysis reads.
//!
//! Plain serde types and constants, so the operator can write and read them
//! without linking the router; the router keeps the validation.

use serde::{Deserialize, Serialize};

/// Most weight a variant may have (weights are relative; the operator uses
/// basis points of the whole traffic, 10 000 in all).
pub const MAX_WEIGHT: u32 = 10_000;

/// Key of the config file in the router's ConfigMap.
pub const CONFIG_FILE: &str = "router.yaml";

/// Port of the router's admin listener (`/metrics`, `/router/config`): not
/// the client port, and not in the router's Service.
pub const ADMIN_PORT: u16 = 9090;

/// The router config file (YAML or JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterConfig {
    /// The backends and their shares.
    pub variants: Vec<VariantBackend>,
    /// A request with this header always lands on the same variant for the same value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// A request with this header goes to the variant it names.
    #[serde(default = "default_variant_header")]
    pub variant_header: String,
    /// Shadow traffic: copies of a share of one backend's inference requests
    /// sent to another backend, whose answers are compared with the ones the
    /// clients got and never returned to anyone. At most one per source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Key (64 hex digits) that signs the request ids the router issues;
    /// `POST /feedback` accepts only ids signed with it. Unset: the router
    /// issues no signed ids and answers `/feedback` with 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_key: Option<String>,
}

/// One shadow-traffic mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// The backend whose inference requests are copied (it answers the client).
    pub source: String,
    /// The backend the copies go to (usually a canary at weight 0).
    pub target: String,
    /// Percent (1 to 100) of `source`'s inference requests copied.
    pub percent: u32,
}

/// One variant's backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariantBackend {
    /// Variant name (also the `variant` label of the router's metrics).
    pub name: String,
    /// Base URL of its predictor Service, e.g. `http://iris-a.ns.svc:8080`.
    pub url: String,
    /// Relative share of traffic (0: only through the variant header, and
    /// only when [`pinnable`](Self::pinnable)).
    pub weight: u32,
    /// Whether the variant header may send a request here. The operator sets
    /// it for a named variant's backend with traffic, and for every backend
    /// (canaries and variants at weight 0 too) only when the InferenceService
    /// has `spec.routing.allowCanaryPinning`. Default false.
    #[serde(default)]
    pub pinnable: bool,
    /// On a canary backend (`<variant>-v<N>`): the backend of the variant it
    /// is the canary of. A sticky value then picks the variant, and the
    /// canary's share of it is split by round robin, so no sticky value
    /// steers a client to the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_of: Option<String>,
}

/// Environment variables of `hone-router` (every flag has one).
pub mod env {
    /// The config file.
    pub const CONFIG: &str = "HONE_ROUTER_CONFIG";
    /// Listen address of the client port.
    pub const ADDR: &str = "HONE_ADDR";
    /// How often the config file is checked for changes, in milliseconds.
    pub const RELOAD_MS: &str = "HONE_ROUTER_RELOAD_MS";
    /// Longest a forwarded request may take, in milliseconds.
    pub const REQUEST_TIMEOUT_MS: &str = "HONE_REQUEST_TIMEOUT_MS";
    /// Largest request body, in bytes.
    pub const MAX_BODY_BYTES: &str = "HONE_MAX_BODY_BYTES";
    /// Seconds to finish in-flight requests after SIGTERM.
    pub const SHUTDOWN_GRACE_SECONDS: &str = "HONE_SHUTDOWN_GRACE_SECONDS";
    /// Listen address of the admin port (`/metrics`, `/router/config`).
    pub const ADMIN_ADDR: &str = "HONE_ADMIN_ADDR";
    /// `<namespace>/<name>` of the ConfigMap to watch through the API.
    pub const CONFIG_MAP: &str = "HONE_ROUTER_CONFIG_MAP";
    /// Longest a client may take to send a request's headers, in milliseconds.
    pub const HEADER_READ_TIMEOUT_MS: &str = "HONE_HEADER_READ_TIMEOUT_MS";
    /// Longest a client may take to send a request's body, in milliseconds.
    pub const BODY_READ_TIMEOUT_MS: &str = "HONE_BODY_READ_TIMEOUT_MS";
    /// Most request-body bytes all requests in flight may hold together.
    pub const MAX_INFLIGHT_BODY_BYTES: &str = "HONE_MAX_INFLIGHT_BODY_BYTES";
    /// Most shadow (mirrored) requests in flight at once; more are dropped.
    pub const MAX_INFLIGHT_MIRRORS: &str = "HONE_MAX_INFLIGHT_MIRRORS";
}

/// The router's feedback endpoint (`POST /feedback` on the client port).
pub mod feedback {
    /// Path of the endpoint.
    pub const PATH: &str = "/feedback";
    /// Response header carrying the id a client echoes in its feedback
    /// (signed by the router when a feedback key is configured).
    pub const REQUEST_ID_HEADER: &str = "x-request-id";
    /// Response header echoing the client's own `x-request-id`, when the
    /// router replaced it with a signed one.
    pub const CLIENT_REQUEST_ID_HEADER: &str = "x-client-request-id";
    /// Oldest request id (seconds since it was issued) feedback is accepted for.
    pub const MAX_AGE_SECONDS: u64 = 24 * 3600;
    /// Most items in one feedback request.
    pub const MAX_ITEMS: usize = 1000;
    /// Largest feedback request body, in bytes.
    pub const MAX_BODY_BYTES: usize = 256 * 1024;
}

/// Names of the router's metric families and labels (`hone_router_*`), as
/// the router registers them and the operator's canary analysis reads them.
/// A counter's samples end in `_total`, a histogram's in `_bucket`, `_sum`
/// and `_count` (the exposition format adds them).
///
/// [`REQUESTS`], [`ERRORS`] and [`REQUEST_DURATION`] count inference only
/// (`POST /predict`, `/predict/batch`, `/v2/models/{name}[/versions/{v}]/infer`)
/// and only requests a backend was asked to answer; everything else
/// forwarded is in [`OTHER_REQUESTS`], the router's own refusals in
/// [`REJECTED`], and analysis reads neither.
pub mod metrics {
    /// Counter: inference requests forwarded, by [`LABEL_VARIANT`] and [`LABEL_STATUS_CLASS`].
    pub const REQUESTS: &str = "hone_router_requests";
    /// Counter: failed inference requests, by [`LABEL_VARIANT`] and [`LABEL_REASON`].
    pub const ERRORS: &str = "hone_router_errors";
    /// Histogram: time to the backend's response headers of inference requests, by [`LABEL_VARIANT`].
    pub const REQUEST_DURATION: &str = "hone_router_request_duration_seconds";
    /// Counter: other requests forwarded (not inference), by [`LABEL_VARIANT`].
    pub const OTHER_REQUESTS: &str = "hone_router_other_requests";
    /// Counter: requests the router answered itself with a 4xx (body too
    /// large or too slow, a variant that may not be pinned, ...), by [`LABEL_REASON`].
    pub const REJECTED: &str = "hone_router_rejected";
    /// Gauge: configured weight, by [`LABEL_VARIANT`].
    pub const VARIANT_WEIGHT: &str = "hone_router_variant_weight";
    /// Counter: config reloads, by `result` (`success`, `error`).
    pub const CONFIG_RELOADS: &str = "hone_router_config_reloads";

    /// Counter: predictions answered (top-1 class of each sample of a 2xx
    /// `/predict` or `/predict/batch` answer, and of a mirrored answer), by
    /// [`LABEL_VARIANT`] and [`LABEL_CLASS`].
    pub const PREDICTIONS: &str = "hone_router_predictions";
    /// Histogram: top-1 confidence of each counted prediction, by [`LABEL_VARIANT`].
    pub const PREDICTION_CONFIDENCE: &str = "hone_router_prediction_confidence";
    /// Counter: mirrored requests, by [`LABEL_VARIANT`] (the mirror's
    /// target) and [`LABEL_OUTCOME`] (`compared`, `failed`, `dropped`, `skipped`).
    pub const SHADOW_REQUESTS: &str = "hone_router_shadow_requests";
    /// Counter: samples compared between source and mirror answers, by [`LABEL_VARIANT`] (the target).
    pub const SHADOW_SAMPLES: &str = "hone_router_shadow_samples";
    /// Counter: compared samples whose top-1 class agreed, by [`LABEL_VARIANT`] (the target).
    pub const SHADOW_AGREEMENTS: &str = "hone_router_shadow_agreements";
    /// Counter: sum of top-1 confidences over compared samples, by
    /// [`LABEL_VARIANT`] (the target) and [`LABEL_SIDE`] (`source` or `shadow`).
    pub const SHADOW_CONFIDENCE: &str = "hone_router_shadow_confidence";
    /// Histogram: time to the mirror's response headers, by [`LABEL_VARIANT`] (the target).
    pub const SHADOW_DURATION: &str = "hone_router_shadow_duration_seconds";
    /// Counter: ground-truth labels received through `POST /feedback` for
    /// answers of a backend, by [`LABEL_VARIANT`] and [`LABEL_OUTCOME`] (`correct`, `incorrect`).
    pub const FEEDBACK: &str = "hone_router_feedback";
    /// Counter: feedback items refused, by [`LABEL_REASON`] (`bad_id`,
    /// `expired`, `replayed`, `mismatch`).
    pub const FEEDBACK_REJECTED: &str = "hone_router_feedback_rejected";

    /// Label of [`PREDICTIONS`]: the class name the backend answered (at
    /// most [`MAX_CLASSES`] distinct values per backend, then [`OTHER_CLASS`]).
    pub const LABEL_CLASS: &str = "class";
    /// Label of [`SHADOW_REQUESTS`] and [`FEEDBACK`].
    pub const LABEL_OUTCOME: &str = "outcome";
    /// Label of [`SHADOW_CONFIDENCE`].
    pub const LABEL_SIDE: &str = "side";
    /// Most distinct [`LABEL_CLASS`] values per backend.
    pub const MAX_CLASSES: usize = 64;
    /// [`LABEL_CLASS`] of classes beyond [`MAX_CLASSES`] or longer than 128 bytes.
    pub const OTHER_CLASS: &str = "__other__";
    /// [`LABEL_OUTCOME`] of [`SHADOW_REQUESTS`]: both answers were compared.
    pub const OUTCOME_COMPARED: &str = "compared";
    /// [`LABEL_OUTCOME`] of [`SHADOW_REQUESTS`]: the mirror failed (no answer, 5xx, unreadable).
    pub const OUTCOME_FAILED: &str = "failed";
    /// [`LABEL_OUTCOME`] of [`SHADOW_REQUESTS`]: not sent (too many mirrors or bytes in flight).
    pub const OUTCOME_DROPPED: &str = "dropped";
    /// [`LABEL_OUTCOME`] of [`SHADOW_REQUESTS`]: sent, but the source's answer was not comparable.
    pub const OUTCOME_SKIPPED: &str = "skipped";
    /// [`LABEL_OUTCOME`] of [`FEEDBACK`]: the true label was the answered class.
    pub const OUTCOME_CORRECT: &str = "correct";
    /// [`LABEL_OUTCOME`] of [`FEEDBACK`]: it was not.
    pub const OUTCOME_INCORRECT: &str = "incorrect";

    /// Label naming the backend (a variant, or `<variant>-v<N>` for a canary).
    pub const LABEL_VARIANT: &str = "variant";
    /// Label of [`REQUESTS`]: `1xx` to `5xx`.
    pub const LABEL_STATUS_CLASS: &str = "status_class";
    /// Label of [`ERRORS`]: one of the `REASON_*` values.
    pub const LABEL_REASON: &str = "reason";
    /// [`LABEL_REASON`]: the backend could not be reached.
    pub const REASON_CONNECT: &str = "connect";
    /// [`LABEL_REASON`]: the backend did not answer in time.
    pub const REASON_TIMEOUT: &str = "timeout";
    /// [`LABEL_REASON`]: the backend answered 5xx.
    pub const REASON_UPSTREAM_5XX: &str = "upstream_5xx";
}

fn default_variant_header() -> String {
    crate::consts::DEFAULT_VARIANT_HEADER.to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_round_trips_through_yaml_with_the_default_header() {
        let config: RouterConfig =
            serde_yaml::from_str("variants:\n- {name: a, url: 'http://a:8080', weight: 10000}\n").unwrap();
        assert_eq!(config.variant_header, "x-hone-variant");
        assert_eq!(config.sticky_header, None);
        assert!(!config.variants[0].pinnable, "the variant header pins nothing unless told");
        assert_eq!(config.variants[0].canary_of, None);
        let text = serde_yaml::to_string(&config).unwrap();
        assert!(text.contains("pinnable: false") && !text.contains("canaryOf"), "{text}");
        assert!(!text.contains("stickyHeader"), "{text}");
        assert_eq!(serde_yaml::from_str::<RouterConfig>(&text).unwrap(), config);
        assert!(serde_yaml::from_str::<RouterConfig>("variants: []\nextra: 1\n").is_err());
    }
}

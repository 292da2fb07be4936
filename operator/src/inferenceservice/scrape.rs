//! Reading the router's metrics for canary analysis: every router pod's
//! `/metrics` (the pods from the watch cache), summed, or one URL named by the `hone.dev/router-metrics-url`
//! annotation (KWOK pods have no network; a metrics proxy is one URL).

use bytes::Bytes;
use hone_crds::router::ADMIN_PORT;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;

use super::names::{METRICS_PATH, SCRAPE_MAX_BYTES, SCRAPE_TIMEOUT};
use super::promtext::{self, RouterMetrics};

/// The router's counters per backend, summed over `pods` (the router pods
/// of the InferenceService, from the watch cache), or read from `url_override`;
/// the error says why they are not available (no router pod running, a pod
/// not answering), which makes the rollout wait rather than fail.
pub async fn router_metrics(pods: &[Pod], url_override: Option<&str>) -> Result<RouterMetrics, String> {
    let http: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    if let Some(url) = url_override {
        return fetch(&http, url, SCRAPE_MAX_BYTES).await.map(|text| promtext::router_metrics(&text));
    }
    let addresses: Vec<String> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            (status.phase.as_deref() == Some("Running")).then_some(status.pod_ip.clone()?)
        })
        .collect();
    if addresses.is_empty() {
        return Err("no router pod is running".to_owned());
    }
    let mut pages = Vec::new();
    for ip in addresses {
        // Every pod counts: a sum without one of them would look like a counter reset.
        pages.push(promtext::router_metrics(&fetch(&http, &metrics_url(&ip), SCRAPE_MAX_BYTES).await?));
    }
    Ok(promtext::sum(pages))
}

/// A router pod's metrics: on its admin port, which clients cannot reach.
fn metrics_url(pod_ip: &str) -> String {
    format!("http://{pod_ip}:{ADMIN_PORT}{METRICS_PATH}")
}

/// GET `url` within [`SCRAPE_TIMEOUT`], reading at most `max_bytes` of its
/// body (the router's pages and the trainer's live figures alike).
pub(crate) async fn fetch(
    http: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    max_bytes: usize,
) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let read = async {
        let response = http.get(uri).await.map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, read)
        .await
        .map_err(|_| format!("GET {url}: no answer within {} s", SCRAPE_TIMEOUT.as_secs()))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testutil::serve_once;

    #[tokio::test]
    async fn an_override_url_is_read_and_parsed() {
        let url =
            serve_once("200 OK", "hone_router_requests_total{variant=\"a-v2\",status_class=\"2xx\"} 7\n");
        let http = Client::builder(TokioExecutor::new()).build_http();
        let text = fetch(&http, &url, SCRAPE_MAX_BYTES).await.unwrap();
        assert_eq!(promtext::router_metrics(&text)["a-v2"].requests, 7.0);
    }

    #[test]
    fn router_pods_are_scraped_on_the_admin_port() {
        assert_eq!(metrics_url("10.0.0.7"), "http://10.0.0.7:9090/metrics");
    }

    #[tokio::test]
    async fn an_error_answer_is_unavailable_not_empty() {
        let url = serve_once("503 Service Unavailable", "");
        let http = Client::builder(TokioExecutor::new()).build_http();
        let error = fetch(&http, &url, SCRAPE_MAX_BYTES).await.unwrap_err();
        assert!(error.contains("503"), "{error}");
        assert!(fetch(&http, "not a url", SCRAPE_MAX_BYTES).await.is_err());
    }
}

//! Following the router's ConfigMap through the Kubernetes API.
//!
//! A mounted ConfigMap reaches the pod only when the kubelet next syncs it
//! (up to about a minute), so a canary step or an abort would wait that
//! long. With `--config-map <namespace>/<name>` the router watches that one
//! ConfigMap (its ServiceAccount may read nothing else) and applies each
//! change as the apiserver sends it; the mounted file is then only the
//! starting point, and is no longer polled, so an older file can never undo
//! a newer config.

use std::time::Duration;

use futures::StreamExt;
use hone_crds::router::CONFIG_FILE;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::watcher::{self, Event};

/// A `namespace/name` reference to a ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::str::FromStr for ConfigMapRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((namespace, name)) if valid_name(namespace) && valid_name(name) => {
                Ok(Self { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(format!("{text:?} is not <namespace>/<name> of a ConfigMap")),
        }
    }
}

/// A DNS-1123 subdomain, as Kubernetes names are.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The router config text of a ConfigMap, if it has one.
pub fn config_text(config_map: &ConfigMap) -> Option<&str> {
    config_map.data.as_ref()?.get(CONFIG_FILE).map(String::as_str)
}

/// Watches `reference` until the task is dropped, calling `apply` with the
/// config text of every version the apiserver sends (the current one first).
/// Connection failures are retried with backoff and logged; a deleted
/// ConfigMap keeps the last config.
pub async fn watch_config_map(
    client: kube::Client,
    reference: ConfigMapRef,
    mut apply: impl FnMut(&str) + Send,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &reference.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", reference.name));
    let stream = watcher::watcher(api, config);
    let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::default_backoff(stream));
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(config_map) | Event::InitApply(config_map)) => match config_text(&config_map) {
                Some(text) => apply(text),
                None => {
                    tracing::warn!(configmap = %reference.name, "the ConfigMap has no {CONFIG_FILE}; keeping the current config")
                }
            },
            Ok(Event::Delete(_)) => {
                tracing::warn!(configmap = %reference.name, "the ConfigMap was deleted; keeping the current config");
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => {
                tracing::warn!(configmap = %reference.name, error = %e, "watching the router ConfigMap; retrying");
                // The backoff above paces the retries; this only avoids a hot log loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_namespace_slash_name() {
        let r: ConfigMapRef = "demo/digits-router".parse().unwrap();
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("demo", "digits-router"));
        for bad in ["digits-router", "/x", "x/", "a/b/c", "A/b", "a/-b", "a/b_c"] {
            assert!(bad.parse::<ConfigMapRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_config_text_is_the_router_file() {
        let mut cm = ConfigMap::default();
        assert_eq!(config_text(&cm), None);
        cm.data = Some([(CONFIG_FILE.to_owned(), "variants: []".to_owned())].into());
        assert_eq!(config_text(&cm), Some("variants: []"));
    }
}

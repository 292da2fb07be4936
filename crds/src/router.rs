//! The router's config file: written by the operator into a ConfigMap from an
//! InferenceService, read (and validated) by `hone-predictor router`.
//!
//! Plain serde types, so the operator can write them without linking the
//! predictor (and libtorch); the predictor keeps the validation.

use serde::{Deserialize, Serialize};

/// Most weight a variant may have (weights are relative; the operator uses
/// basis points of the whole traffic, 10 000 in all).
pub const MAX_WEIGHT: u32 = 10_000;

/// Key of the config file in the router's ConfigMap.
pub const CONFIG_FILE: &str = "router.yaml";

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
}

/// One variant's backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariantBackend {
    /// Variant name (also the `variant` label of the router's metrics).
    pub name: String,
    /// Base URL of its predictor Service, e.g. `http://iris-a.ns.svc:8080`.
    pub url: String,
    /// Relative share of traffic (0 = only reachable through the variant header).
    pub weight: u32,
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
        let text = serde_yaml::to_string(&config).unwrap();
        assert!(!text.contains("stickyHeader"), "{text}");
        assert_eq!(serde_yaml::from_str::<RouterConfig>(&text).unwrap(), config);
        assert!(serde_yaml::from_str::<RouterConfig>("variants: []\nextra: 1\n").is_err());
    }
}

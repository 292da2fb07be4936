//! The router's config: the file the operator writes into a ConfigMap from
//! the InferenceService (variants, backends, weights, headers). The types
//! live in `hone_crds::router`; the validation lives here.

pub use hone_crds::router::{MAX_WEIGHT, RouterConfig, VariantBackend};

/// Parsing and validation of [`RouterConfig`], which lives in `hone-crds`
/// as plain serde types so the operator can write it without this crate.
pub trait RouterConfigExt: Sized {
    /// Parses YAML (a superset of JSON) and validates.
    fn parse(text: &str) -> Result<Self, String>;
    /// Checks names, URLs, weights and header names.
    fn validate(&self) -> Result<(), String>;
}

impl RouterConfigExt for RouterConfig {
    fn parse(text: &str) -> Result<Self, String> {
        let config: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.variants.is_empty() {
            return Err("no variants".into());
        }
        for (i, v) in self.variants.iter().enumerate() {
            if v.name.is_empty() || self.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(format!("variant names must be non-empty and unique: {:?}", v.name));
            }
            if v.weight > MAX_WEIGHT {
                return Err(format!("variant {:?} weight {} exceeds {MAX_WEIGHT}", v.name, v.weight));
            }
            let uri: axum::http::Uri =
                v.url.parse().map_err(|e| format!("variant {:?} url {:?}: {e}", v.name, v.url))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(format!("variant {:?} url {:?} must be http://host[:port]", v.name, v.url));
            }
        }
        for v in &self.variants {
            let Some(stable) = &v.canary_of else { continue };
            let ok =
                self.variants.iter().any(|s| s.name == *stable && s.name != v.name && s.canary_of.is_none());
            if !ok {
                return Err(format!(
                    "variant {:?} is a canary of {stable:?}, which must be another variant that is no canary",
                    v.name
                ));
            }
        }
        if self.variants.iter().all(|v| v.weight == 0) {
            return Err("every variant has weight 0".into());
        }
        for header in std::iter::once(&self.variant_header).chain(self.sticky_header.as_ref()) {
            axum::http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("invalid header name {header:?}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_config_parses_with_default_variant_header() {
        let config = RouterConfig::parse(
            "variants:\n- {name: a, url: 'http://127.0.0.1:1', weight: 90}\n- {name: b, url: 'http://b:8080', weight: 10}\nstickyHeader: x-user\n",
        )
        .unwrap();
        assert_eq!(config.variant_header, "x-hone-variant");
        assert_eq!(config.variants[1].weight, 10);
        assert_eq!(config.sticky_header.as_deref(), Some("x-user"));
        assert!(config.variants.iter().all(|v| !v.pinnable), "not pinnable unless the config says so");
        let canary = RouterConfig::parse(
            "variants:\n- {name: a, url: 'http://a', weight: 9, pinnable: true}\n- {name: a-v2, url: 'http://b', weight: 1, canaryOf: a}\n",
        )
        .unwrap();
        assert!(canary.variants[0].pinnable);
        assert_eq!(canary.variants[1].canary_of.as_deref(), Some("a"));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = [
            r#"{"variants": []}"#,
            r#"{"variants": [{"name": "a", "url": "http://a", "weight": 0}]}"#,
            r#"{"variants": [{"name": "a", "url": "http://a", "weight": 1}, {"name": "a", "url": "http://b", "weight": 1}]}"#,
            r#"{"variants": [{"name": "a", "url": "ftp://a", "weight": 1}]}"#,
            r#"{"variants": [{"name": "a", "url": "http://a", "weight": 1}], "stickyHeader": "bad header"}"#,
            r#"{"variants": [{"name": "a", "url": "http://a", "weight": 1}], "extra": 1}"#,
            r#"{"variants": [{"name": "a", "url": "http://a", "weight": 1, "canaryOf": "a"}]}"#,
            r#"{"variants": [{"name": "a", "url": "http://a", "weight": 1}, {"name": "b", "url": "http://b", "weight": 1, "canaryOf": "c"}]}"#,
            r#"{"variants": [{"name": "a", "url": "http://a", "weight": 1}, {"name": "b", "url": "http://b", "weight": 1, "canaryOf": "a"}, {"name": "c", "url": "http://c", "weight": 1, "canaryOf": "b"}]}"#,
        ];
        for text in bad {
            assert!(RouterConfig::parse(text).is_err(), "{text}");
        }
    }
}

//! The router's config: the file the operator writes into a ConfigMap from
//! the InferenceService (variants, backends, weights, headers, mirrors, the
//! feedback key). The types live in `hone_crds::router`; the validation
//! lives here.

pub use hone_crds::router::{MAX_WEIGHT, Mirror, RouterConfig, VariantBackend};

use crate::token::FeedbackKey;

/// Parsing and validation of [`RouterConfig`], which lives in `hone-crds`
/// as plain serde types so the operator can write it without this crate.
pub trait RouterConfigExt: Sized {
    /// Parses YAML (a superset of JSON) and validates.
    fn parse(text: &str) -> Result<Self, String>;
    /// Checks names, URLs, weights, header names, mirrors and the feedback key.
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
        validate_mirrors(self)?;
        if let Some(key) = &self.feedback_key {
            FeedbackKey::from_hex(key)?;
        }
        Ok(())
    }
}

/// Each mirror copies one backend to another, at 1 to 100 percent, at most
/// one per source.
fn validate_mirrors(config: &RouterConfig) -> Result<(), String> {
    let known = |name: &str| config.variants.iter().any(|v| v.name == name);
    for (i, m) in config.mirrors.iter().enumerate() {
        for (role, name) in [("source", &m.source), ("target", &m.target)] {
            if !known(name) {
                return Err(format!("mirror {i}: {role} {name:?} is not a variant"));
            }
        }
        if m.source == m.target {
            return Err(format!("mirror {i}: {:?} cannot mirror to itself", m.source));
        }
        if !(1..=100).contains(&m.percent) {
            return Err(format!("mirror {i}: percent {} is not between 1 and 100", m.percent));
        }
        if config.mirrors[..i].iter().any(|earlier| earlier.source == m.source) {
            return Err(format!("mirror {i}: {:?} already has a mirror (at most one per source)", m.source));
        }
    }
    Ok(())
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

    const TWO: &str = r#""variants": [{"name": "a", "url": "http://a", "weight": 1}, {"name": "a-v2", "url": "http://b", "weight": 0, "canaryOf": "a"}]"#;

    #[test]
    fn mirrors_and_the_feedback_key_parse() {
        let key = "0123456789abcdef".repeat(4);
        let text = format!(
            r#"{{{TWO}, "mirrors": [{{"source": "a", "target": "a-v2", "percent": 25}}], "feedbackKey": "{key}"}}"#
        );
        let config = RouterConfig::parse(&text).unwrap();
        assert_eq!(config.mirrors, [Mirror { source: "a".into(), target: "a-v2".into(), percent: 25 }]);
        assert_eq!(config.feedback_key.as_deref(), Some(key.as_str()));
        let back = RouterConfig::parse(&format!(
            "{{{TWO}, \"mirrors\": [{{\"source\": \"a-v2\", \"target\": \"a\", \"percent\": 100}}]}}"
        ));
        assert!(back.is_ok(), "a canary may be a source too");
    }

    #[test]
    fn invalid_mirrors_and_keys_are_refused_with_the_reason() {
        let mirror = |m: &str| format!(r#"{{{TWO}, "mirrors": [{m}]}}"#);
        let cases = [
            (mirror(r#"{"source": "x", "target": "a-v2", "percent": 10}"#), r#"source "x" is not a variant"#),
            (mirror(r#"{"source": "a", "target": "x", "percent": 10}"#), r#"target "x" is not a variant"#),
            (mirror(r#"{"source": "a", "target": "a", "percent": 10}"#), "cannot mirror to itself"),
            (mirror(r#"{"source": "a", "target": "a-v2", "percent": 0}"#), "percent 0"),
            (mirror(r#"{"source": "a", "target": "a-v2", "percent": 101}"#), "percent 101"),
            (
                mirror(
                    r#"{"source": "a", "target": "a-v2", "percent": 1}, {"source": "a", "target": "a-v2", "percent": 2}"#,
                ),
                "at most one per source",
            ),
            (mirror(r#"{"source": "a", "target": "a-v2"}"#), "percent"),
            (format!(r#"{{{TWO}, "feedbackKey": "abc"}}"#), "64 hex digits"),
            (format!(r#"{{{TWO}, "feedbackKey": "{}"}}"#, "g".repeat(64)), "64 hex digits"),
        ];
        for (text, reason) in cases {
            let error = RouterConfig::parse(&text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
        let secret = "zz".repeat(32);
        let error = RouterConfig::parse(&format!(r#"{{{TWO}, "feedbackKey": "{secret}"}}"#)).unwrap_err();
        assert!(!error.contains(&secret), "the key is not echoed: {error}");
    }
}

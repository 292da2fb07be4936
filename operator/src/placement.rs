//! Operator-wide default placement of the pods Hone creates (inspect,
//! training, verify and purge Jobs; predictor and router Deployments).
//!
//! A cluster whose ML nodes are labelled and tainted (GPU pools, a dedicated
//! node) would otherwise need every TrainingJob and InferenceService to
//! repeat the same selector and tolerations. The defaults are filled in
//! where an object says nothing:
//! - the node selector only when the pod has none (a TrainingJob's own
//!   `nodeSelector` wins whole: merging two selectors could ask for a node
//!   that does not exist);
//! - tolerations are added to the pod's own (a toleration only permits, it
//!   never restricts), without duplicates.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodSpec, Toleration};

/// Default node selector and tolerations for the pods Hone creates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// Used when a pod has no node selector of its own.
    pub node_selector: BTreeMap<String, String>,
    /// Added to every pod's tolerations.
    pub tolerations: Vec<Toleration>,
}

/// A flag value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--pod-node-selector` entry without `=`.
    #[error("node selector entry {0:?} is not key=value (example: --pod-node-selector hone.dev/node=gpu)")]
    Selector(String),
    /// `--pod-tolerations` is not a JSON list of tolerations.
    #[error(
        "tolerations must be a JSON list of Kubernetes tolerations \
         (example: '[{{\"key\":\"hone.dev/node\",\"operator\":\"Exists\",\"effect\":\"NoSchedule\"}}]'): {0}"
    )]
    Tolerations(serde_json::Error),
}

impl Placement {
    /// Placement from the flag values: `key=value` entries and a JSON list.
    pub fn parse(selector: &[String], tolerations: Option<&str>) -> Result<Self, Error> {
        let mut node_selector = BTreeMap::new();
        for entry in selector.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (key, value) = entry.split_once('=').ok_or_else(|| Error::Selector(entry.to_owned()))?;
            if key.trim().is_empty() {
                return Err(Error::Selector(entry.to_owned()));
            }
            node_selector.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        let tolerations = match tolerations.map(str::trim).filter(|t| !t.is_empty()) {
            Some(json) => serde_json::from_str(json).map_err(Error::Tolerations)?,
            None => Vec::new(),
        };
        Ok(Self { node_selector, tolerations })
    }

    /// Whether there is anything to add.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.tolerations.is_empty()
    }

    /// Fills in the defaults on one pod spec.
    pub fn apply(&self, pod: &mut PodSpec) {
        if !self.node_selector.is_empty() && pod.node_selector.as_ref().is_none_or(BTreeMap::is_empty) {
            pod.node_selector = Some(self.node_selector.clone());
        }
        if !self.tolerations.is_empty() {
            let own = pod.tolerations.get_or_insert_with(Vec::new);
            for toleration in &self.tolerations {
                if !own.contains(toleration) {
                    own.push(toleration.clone());
                }
            }
        }
    }

    /// Fills in the defaults on a Job's pod template.
    pub fn apply_to_job(&self, job: &mut Job) {
        if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            self.apply(pod);
        }
    }

    /// Fills in the defaults on a Deployment's pod template.
    pub fn apply_to_deployment(&self, deployment: &mut Deployment) {
        if let Some(pod) = deployment.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            self.apply(pod);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(key: &str) -> Toleration {
        Toleration {
            key: Some(key.to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn flags_parse_into_a_placement() {
        let placement = Placement::parse(
            &["hone.dev/node=real".to_owned(), " zone = a ".to_owned(), String::new()],
            Some(r#"[{"key":"hone.dev/node","operator":"Exists","effect":"NoSchedule"}]"#),
        )
        .unwrap();
        assert_eq!(placement.node_selector["hone.dev/node"], "real");
        assert_eq!(placement.node_selector["zone"], "a");
        assert_eq!(placement.tolerations, vec![toleration("hone.dev/node")]);
        assert!(Placement::parse(&[], None).unwrap().is_empty());
    }

    #[test]
    fn bad_flags_say_what_is_expected() {
        let err = Placement::parse(&["no-equals".to_owned()], None).unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
        let err = Placement::parse(&[], Some("{not json")).unwrap_err();
        assert!(err.to_string().contains("JSON list of Kubernetes tolerations"), "{err}");
    }

    #[test]
    fn defaults_fill_only_what_the_pod_leaves_open() {
        let placement = Placement {
            node_selector: [("hone.dev/node".to_owned(), "real".to_owned())].into(),
            tolerations: vec![toleration("hone.dev/node")],
        };
        let mut bare = PodSpec::default();
        placement.apply(&mut bare);
        assert_eq!(bare.node_selector, Some(placement.node_selector.clone()));
        assert_eq!(bare.tolerations, Some(vec![toleration("hone.dev/node")]));

        let own_selector: BTreeMap<String, String> = [("gpu".to_owned(), "a100".to_owned())].into();
        let mut own = PodSpec {
            node_selector: Some(own_selector.clone()),
            tolerations: Some(vec![toleration("nvidia.com/gpu"), toleration("hone.dev/node")]),
            ..Default::default()
        };
        placement.apply(&mut own);
        assert_eq!(own.node_selector, Some(own_selector), "the pod's own selector wins whole");
        assert_eq!(
            own.tolerations,
            Some(vec![toleration("nvidia.com/gpu"), toleration("hone.dev/node")]),
            "tolerations are added once"
        );
    }
}

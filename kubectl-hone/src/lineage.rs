//! The lineage tree of one namespace: Dataset -> TrainingJob -> ModelVersion
//! -> InferenceService, each node with its phase, why it is not ready, and
//! its key figures. Pure: built from the listed objects.

use hone_crds::conditions::find_condition;
use hone_crds::consts::CONDITION_EVALUATED;
use hone_crds::contract::metric;
use hone_crds::inferenceservice::{
    CONDITION_DEGRADED, CONDITION_ROLLOUT_PROGRESSING, InferenceServicePhase, RolloutActionOutcome,
};
use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;
use serde_json::{Value, json};

/// Metrics shown for TrainingJobs and ModelVersions, in this order.
const KEY_METRICS: &[&str] = &["val_accuracy", "test_accuracy"];
/// Metrics Hone measured, shown for ModelVersions before the trainer's.
const MEASURED_METRICS: &[&str] = &[metric::ACCURACY, metric::MACRO_F1, metric::ROC_AUC];

/// Every Hone object of one namespace.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Datasets.
    pub datasets: Vec<Dataset>,
    /// TrainingJobs.
    pub training_jobs: Vec<TrainingJob>,
    /// ModelVersions.
    pub model_versions: Vec<ModelVersion>,
    /// InferenceServices.
    pub inference_services: Vec<InferenceService>,
}

/// The tree of one namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamespaceTree {
    /// The namespace.
    pub namespace: String,
    /// Datasets, then what has no parent here (imported ModelVersions,
    /// TrainingJobs whose Dataset is gone, InferenceServices serving nothing yet).
    pub roots: Vec<Node>,
}

/// One object in the tree.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// `Dataset`, `TrainingJob`, `ModelVersion` or `InferenceService`.
    pub kind: &'static str,
    /// Object name.
    pub name: String,
    /// `status.phase`, `Unknown` before the operator wrote any status.
    pub phase: String,
    /// Why it is not ready (a condition reason or failure reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The message that goes with `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Key figures, in display order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
    /// What came from it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

/// One key figure of a node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Detail {
    /// What it is, e.g. `val_accuracy`.
    pub name: String,
    /// Its value: a number or a text.
    pub value: Value,
}

fn detail(name: &str, value: impl Into<Value>) -> Detail {
    Detail { name: name.to_owned(), value: value.into() }
}

/// The lineage tree of `objects` (all of one namespace).
pub fn build(namespace: &str, objects: &Objects) -> NamespaceTree {
    let services = |mv: &ModelVersion| -> Vec<Node> {
        let name = mv.metadata.name.clone().unwrap_or_default();
        let served_by = mv.status.as_ref().map(|s| s.served_by.clone()).unwrap_or_default();
        objects
            .inference_services
            .iter()
            .filter(|isvc| isvc.serves(&name) || served_by.contains(&name_of(&isvc.metadata)))
            .map(service_node)
            .collect()
    };
    let versions_of = |tj: &TrainingJob| -> Vec<Node> {
        let tj_name = name_of(&tj.metadata);
        let registered = tj.status.as_ref().and_then(|s| s.model_version.clone());
        objects
            .model_versions
            .iter()
            .filter(|mv| {
                registered.as_deref() == mv.metadata.name.as_deref()
                    || produced_by(mv).is_some_and(|t| t == tj_name)
            })
            .map(|mv| Node { children: services(mv), ..version_node(mv) })
            .collect()
    };
    let jobs_of = |dataset: &str| -> Vec<Node> {
        objects
            .training_jobs
            .iter()
            .filter(|tj| tj.spec.dataset_ref.name == dataset)
            .map(|tj| Node { children: versions_of(tj), ..job_node(tj) })
            .collect()
    };
    let mut roots: Vec<Node> = objects
        .datasets
        .iter()
        .map(|ds| Node { children: jobs_of(&name_of(&ds.metadata)), ..dataset_node(ds) })
        .collect();
    let datasets: Vec<String> = objects.datasets.iter().map(|d| name_of(&d.metadata)).collect();
    for tj in objects.training_jobs.iter().filter(|tj| !datasets.contains(&tj.spec.dataset_ref.name)) {
        let mut node = Node { children: versions_of(tj), ..job_node(tj) };
        node.details.insert(0, detail("dataset", format!("{} (not found)", tj.spec.dataset_ref.name)));
        roots.push(node);
    }
    let jobs: Vec<&TrainingJob> = objects.training_jobs.iter().collect();
    let has_job = |mv: &ModelVersion| {
        jobs.iter().any(|tj| {
            tj.status.as_ref().and_then(|s| s.model_version.as_deref()) == mv.metadata.name.as_deref()
                || produced_by(mv).is_some_and(|t| t == name_of(&tj.metadata))
        })
    };
    for mv in objects.model_versions.iter().filter(|mv| !has_job(mv)) {
        roots.push(Node { children: services(mv), ..version_node(mv) });
    }
    for isvc in &objects.inference_services {
        let serves_any = objects.model_versions.iter().any(|mv| {
            isvc.serves(&name_of(&mv.metadata))
                || mv.status.as_ref().is_some_and(|s| s.served_by.contains(&name_of(&isvc.metadata)))
        });
        if !serves_any {
            roots.push(service_node(isvc));
        }
    }
    NamespaceTree { namespace: namespace.to_owned(), roots }
}

/// `tree` cut down to the branches that contain an object named `name`
/// (with everything below it); `None` when there is none.
pub fn only(tree: NamespaceTree, name: &str) -> Option<NamespaceTree> {
    fn keep(node: Node, name: &str) -> Option<Node> {
        if node.name == name {
            return Some(node);
        }
        let children: Vec<Node> = node.children.into_iter().filter_map(|c| keep(c, name)).collect();
        (!children.is_empty()).then_some(Node { children, ..node })
    }
    let roots: Vec<Node> = tree.roots.into_iter().filter_map(|n| keep(n, name)).collect();
    (!roots.is_empty()).then_some(NamespaceTree { roots, ..tree })
}

fn name_of(meta: &kube::api::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn produced_by(mv: &ModelVersion) -> Option<&str> {
    mv.spec.lineage.as_ref()?.training_job.as_deref()
}

fn phase_text<P: std::fmt::Debug>(phase: Option<P>) -> String {
    phase.map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}"))
}

/// Reason and message of `type_` when it is not `want` (`"True"` for Ready).
fn why(conditions: &[Condition], type_: &str, want: &str) -> (Option<String>, Option<String>) {
    match find_condition(conditions, type_) {
        Some(c) if c.status != want => (Some(c.reason.clone()), Some(c.message.clone())),
        _ => (None, None),
    }
}

fn metrics(map: Option<&std::collections::BTreeMap<String, f64>>) -> Vec<Detail> {
    KEY_METRICS.iter().filter_map(|k| map?.get(*k).map(|v| detail(k, *v))).collect()
}

fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", hex.get(..12).unwrap_or(hex))
}

fn dataset_node(ds: &Dataset) -> Node {
    let status = ds.status.clone().unwrap_or_default();
    let ready = status.phase == Some(hone_crds::dataset::DatasetPhase::Ready);
    let (reason, message) = if ready { (None, None) } else { why(&status.conditions, "Ready", "True") };
    let mut details = Vec::new();
    details.extend(status.samples.map(|n| detail("samples", n)));
    details.extend(status.classes.as_ref().map(|c| detail("classes", c.len())));
    details.extend(status.digest.as_deref().map(|d| detail("digest", short_digest(d))));
    Node {
        kind: "Dataset",
        name: name_of(&ds.metadata),
        phase: phase_text(status.phase),
        reason,
        message,
        details,
        children: Vec::new(),
    }
}

fn job_node(tj: &TrainingJob) -> Node {
    use hone_crds::trainingjob::TrainingJobPhase;
    let status = tj.status.clone().unwrap_or_default();
    let (reason, message) = match status.phase {
        Some(TrainingJobPhase::Succeeded) => (None, None),
        Some(TrainingJobPhase::Failed) => match status.failure_reason {
            Some(r) => (Some(format!("{r:?}")), status.message.clone()),
            None => why(&status.conditions, "Ready", "True"),
        },
        _ => why(&status.conditions, "Ready", "True"),
    };
    let mut details = Vec::new();
    if status.phase == Some(TrainingJobPhase::Running)
        && let Some(p) = &status.progress
    {
        details.push(detail("epoch", format!("{}/{}", p.epoch, p.total_epochs)));
    }
    details.extend(metrics(status.metrics.as_ref()));
    Node {
        kind: "TrainingJob",
        name: name_of(&tj.metadata),
        phase: phase_text(status.phase),
        reason,
        message,
        details,
        children: Vec::new(),
    }
}

fn version_node(mv: &ModelVersion) -> Node {
    let status = mv.status.clone().unwrap_or_default();
    let ready = status.phase == Some(hone_crds::modelversion::ModelVersionPhase::Ready);
    let (reason, message) = if ready { (None, None) } else { why(&status.conditions, "Ready", "True") };
    let mut details = vec![detail("model", format!("{} v{}", mv.spec.model, mv.spec.version))];
    // What Hone measured comes first; the trainer's own figures after.
    if let Some(evaluation) = &status.evaluation {
        details.extend(
            MEASURED_METRICS.iter().filter_map(|k| evaluation.metrics.get(*k).map(|v| detail(k, *v))),
        );
        details.push(detail(
            "evaluated",
            format!(
                "on {} held-out samples of Dataset {}",
                evaluation.samples,
                evaluation.dataset.as_deref().unwrap_or("?")
            ),
        ));
    } else if let (Some(reason), Some(message)) = why(&status.conditions, CONDITION_EVALUATED, "True") {
        details.push(detail("evaluation", format!("{reason}: {message}")));
    }
    details.extend(metrics(mv.spec.metrics.as_ref()));
    Node {
        kind: "ModelVersion",
        name: name_of(&mv.metadata),
        phase: phase_text(status.phase),
        reason,
        message,
        details,
        children: Vec::new(),
    }
}

fn service_node(isvc: &InferenceService) -> Node {
    let status = isvc.status.clone().unwrap_or_default();
    let (reason, message) = match status.phase {
        Some(InferenceServicePhase::Ready) => (None, None),
        Some(InferenceServicePhase::Degraded) => why(&status.conditions, CONDITION_DEGRADED, "False"),
        Some(InferenceServicePhase::Progressing) => {
            why(&status.conditions, CONDITION_ROLLOUT_PROGRESSING, "False")
        }
        _ => why(&status.conditions, "Ready", "True"),
    };
    let mut details = Vec::new();
    if status.variants.is_empty() {
        for v in &isvc.spec.variants {
            let source =
                v.model_version.clone().or_else(|| v.track.as_ref().map(|t| format!("track {}", t.model)));
            let text = format!("{} (spec), weight {}%", source.unwrap_or_default(), v.weight);
            details.push(detail(&format!("variant {}", v.name), text));
        }
    }
    for v in &status.variants {
        let serving = v.model_version.as_deref().unwrap_or("nothing yet");
        let text = format!("{serving}, weight {}%, {}/{} ready", v.weight, v.ready_replicas, v.replicas);
        details.push(detail(&format!("variant {}", v.name), text));
        if !v.gate_failures.is_empty() {
            let text = format!("{} (they fail a minMetrics gate)", v.gate_failures.join(", "));
            details.push(detail(&format!("variant {} skips", v.name), text));
        }
    }
    if let Some(r) = &status.rollout {
        let steps = isvc.spec.rollout.as_ref().map_or(0, |r| r.steps.len());
        details.push(detail(
            "rollout",
            format!("variant {}: {} -> {}", r.variant, r.from_version, r.to_version),
        ));
        if r.shadow {
            let percent = isvc.spec.rollout.as_ref().and_then(|r| r.shadow.as_ref()).map_or(0, |s| s.percent);
            details.push(detail(
                "step",
                format!("shadow ({percent}% of requests mirrored, clients answered by {})", r.from_version),
            ));
        } else {
            details.push(detail("canaryWeight", r.canary_weight));
        }
        if r.canary_weight > 0 {
            details.push(detail("step", format!("{}/{steps}", r.step.saturating_add(1))));
        }
        if let Some(a) = &r.last_analysis {
            details.push(detail("lastAnalysis", a.summary()));
        }
    }
    if let Some(last) = &status.last_rollout_action {
        let outcome = match last.outcome {
            RolloutActionOutcome::Promoted => "promoted",
            RolloutActionOutcome::RolledBack => "rolled back",
            RolloutActionOutcome::Ignored => "ignored",
        };
        details.push(detail("lastAction", json!(format!("{} {}: {outcome}", last.action, last.id))));
    }
    details.extend(status.url.as_deref().map(|u| detail("url", u)));
    Node {
        kind: "InferenceService",
        name: name_of(&isvc.metadata),
        phase: phase_text(status.phase),
        reason,
        message,
        details,
        children: Vec::new(),
    }
}

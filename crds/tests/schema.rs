//! Tests on the generated CRD schemas: every field of the API design is
//! present with its type, the CEL rules are there, print columns and names
//! are set, and the schema is structural.

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_crds::all_crds;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn crd(kind: &str) -> CustomResourceDefinition {
    all_crds().into_iter().find(|c| c.spec.names.kind == kind).unwrap()
}

fn schema(kind: &str) -> Value {
    let crd = crd(kind);
    let schema = crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap();
    serde_json::to_value(schema).unwrap()
}

/// The schema node at a dotted path; `[]` steps into array items.
fn node<'a>(root: &'a Value, path: &str) -> &'a Value {
    let mut cur = root;
    for part in path.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        cur = cur
            .get("properties")
            .and_then(|p| p.get(name))
            .unwrap_or_else(|| panic!("no field {name} on the way to {path}"));
        if items {
            cur = cur.get("items").unwrap_or_else(|| panic!("{name} in {path} is not an array"));
        }
    }
    cur
}

fn assert_fields(kind: &str, fields: &[(&str, &str)]) {
    let root = schema(kind);
    for (path, ty) in fields {
        let n = node(&root, path);
        assert_eq!(n.get("type").and_then(Value::as_str), Some(*ty), "{kind} {path}: {n}");
        assert!(
            n.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty()),
            "{kind} {path} has no description for kubectl explain"
        );
    }
}

fn enum_values(kind: &str, path: &str) -> Vec<String> {
    let root = schema(kind);
    let values = node(&root, path).get("enum").unwrap_or_else(|| panic!("{kind} {path} has no enum"));
    values.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// Messages of the CEL rules on the node at `path` ("" for the root).
fn rule_messages(kind: &str, path: &str) -> Vec<String> {
    let root = schema(kind);
    let n = if path.is_empty() { &root } else { node(&root, path) };
    n.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().map(|r| r["message"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

const STATUS_COMMON: &[(&str, &str)] = &[
    ("status.phase", "string"),
    ("status.observedGeneration", "integer"),
    ("status.conditions", "array"),
    ("status.conditions[].type", "string"),
    ("status.conditions[].status", "string"),
    ("status.conditions[].reason", "string"),
    ("status.conditions[].message", "string"),
    ("status.conditions[].lastTransitionTime", "string"),
];

#[test]
fn dataset_has_every_field() {
    assert_fields("Dataset", STATUS_COMMON);
    assert_fields(
        "Dataset",
        &[
            ("spec.source", "object"),
            ("spec.source.uri", "string"),
            ("spec.source.secretRef", "object"),
            ("spec.source.secretRef.name", "string"),
            ("spec.format", "string"),
            ("spec.csv", "object"),
            ("spec.csv.labelColumn", "string"),
            ("spec.csv.featureColumns", "array"),
            ("spec.image", "object"),
            ("spec.image.width", "integer"),
            ("spec.image.height", "integer"),
            ("spec.image.channels", "integer"),
            ("spec.split", "object"),
            ("spec.split.validation", "number"),
            ("spec.split.test", "number"),
            ("spec.split.seed", "integer"),
            ("spec.refreshInterval", "string"),
            ("status.digest", "string"),
            ("status.samples", "integer"),
            ("status.sizeBytes", "integer"),
            ("status.classes", "array"),
            ("status.classCounts", "object"),
            ("status.verifiedAt", "string"),
        ],
    );
    assert_eq!(enum_values("Dataset", "spec.format"), ["ImageFolder", "CSV"]);
    assert_eq!(enum_values("Dataset", "status.phase"), ["Pending", "Verifying", "Ready", "Failed"]);
}

#[test]
fn trainingjob_has_every_field() {
    assert_fields("TrainingJob", STATUS_COMMON);
    assert_fields(
        "TrainingJob",
        &[
            ("spec.datasetRef.name", "string"),
            ("spec.model.architecture", "string"),
            ("spec.model.pretrained", "object"),
            ("spec.model.pretrained.uri", "string"),
            ("spec.hyperparameters.epochs", "integer"),
            ("spec.hyperparameters.batchSize", "integer"),
            ("spec.hyperparameters.learningRate", "number"),
            ("spec.hyperparameters.optimizer", "string"),
            ("spec.hyperparameters.weightDecay", "number"),
            ("spec.hyperparameters.scheduler", "string"),
            ("spec.hyperparameters.warmupEpochs", "integer"),
            ("spec.hyperparameters.earlyStoppingPatience", "integer"),
            ("spec.hyperparameters.seed", "integer"),
            ("spec.hyperparameters.augmentation.horizontalFlip", "boolean"),
            ("spec.hyperparameters.augmentation.rotationDegrees", "number"),
            ("spec.hyperparameters.augmentation.colorJitter", "number"),
            ("spec.resources", "object"),
            ("spec.gpus", "integer"),
            ("spec.nodeSelector", "object"),
            ("spec.tolerations", "array"),
            ("spec.image", "string"),
            ("spec.command", "array"),
            ("spec.args", "array"),
            ("spec.env", "array"),
            ("spec.workers", "integer"),
            ("spec.output.uri", "string"),
            ("spec.runPolicy.backoffLimit", "integer"),
            ("spec.runPolicy.activeDeadlineSeconds", "integer"),
            ("spec.runPolicy.ttlSecondsAfterFinished", "integer"),
            ("spec.runPolicy.suspend", "boolean"),
            ("spec.queueName", "string"),
            ("spec.registerAs.model", "string"),
            ("spec.registerAs.labels", "object"),
            ("spec.tracking.mlflow.uri", "string"),
            ("spec.tracking.mlflow.experiment", "string"),
            ("status.jobName", "string"),
            ("status.startTime", "string"),
            ("status.completionTime", "string"),
            ("status.attempts", "integer"),
            ("status.datasetDigest", "string"),
            ("status.progress.epoch", "integer"),
            ("status.progress.totalEpochs", "integer"),
            ("status.metrics", "object"),
            ("status.artifact.uri", "string"),
            ("status.artifact.digest", "string"),
            ("status.artifact.sizeBytes", "integer"),
            ("status.modelVersion", "string"),
            ("status.failureReason", "string"),
            ("status.message", "string"),
        ],
    );
    assert_eq!(
        enum_values("TrainingJob", "spec.model.architecture"),
        ["mlp", "simple-cnn", "resnet18", "resnet34", "efficientnet-b0"]
    );
    assert_eq!(enum_values("TrainingJob", "spec.hyperparameters.optimizer"), ["adam", "adamw", "sgd"]);
    assert_eq!(enum_values("TrainingJob", "spec.hyperparameters.scheduler"), ["none", "cosine", "step"]);
    assert_eq!(
        enum_values("TrainingJob", "status.phase"),
        ["Pending", "Running", "Succeeded", "Failed", "Suspended"]
    );
    let reasons = enum_values("TrainingJob", "status.failureReason");
    for r in [
        "OOMKilled",
        "DeadlineExceeded",
        "BackoffLimitExceeded",
        "ImagePullBackOff",
        "DatasetNotReady",
        "TrainerError",
    ] {
        assert!(reasons.iter().any(|x| x == r), "failureReason lacks {r}");
    }
}

#[test]
fn modelversion_has_every_field() {
    assert_fields("ModelVersion", STATUS_COMMON);
    assert_fields(
        "ModelVersion",
        &[
            ("spec.model", "string"),
            ("spec.version", "integer"),
            ("spec.artifact.uri", "string"),
            ("spec.artifact.format", "string"),
            ("spec.artifact.digest", "string"),
            ("spec.artifact.secretRef.name", "string"),
            ("spec.signature.inputShape", "array"),
            ("spec.signature.classes", "array"),
            ("spec.signature.preprocessing.resize", "array"),
            ("spec.signature.preprocessing.mean", "array"),
            ("spec.signature.preprocessing.std", "array"),
            ("spec.lineage.trainingJob", "string"),
            ("spec.lineage.dataset", "string"),
            ("spec.lineage.datasetDigest", "string"),
            ("spec.metrics", "object"),
            ("spec.artifact.cardDigest", "string"),
            ("spec.evaluation.dataset.name", "string"),
            ("spec.evaluation.required", "boolean"),
            ("status.verifiedDigest", "string"),
            ("status.verifiedCardDigest", "string"),
            ("status.sizeBytes", "integer"),
            ("status.servedBy", "array"),
            ("status.evaluation.dataset", "string"),
            ("status.evaluation.datasetDigest", "string"),
            ("status.evaluation.samples", "integer"),
            ("status.evaluation.metrics", "object"),
            ("status.evaluation.perClass[].class", "string"),
            ("status.evaluation.perClass[].precision", "number"),
            ("status.evaluation.perClass[].recall", "number"),
            ("status.evaluation.perClass[].f1", "number"),
            ("status.evaluation.perClass[].support", "integer"),
            ("status.evaluation.confusionMatrix", "array"),
            ("status.evaluation.unknownLabels", "integer"),
            ("status.evaluation.evaluatedAt", "string"),
        ],
    );
    assert_eq!(enum_values("ModelVersion", "spec.artifact.format"), ["TorchScript", "ONNX"]);
}

#[test]
fn inferenceservice_has_every_field() {
    assert_fields("InferenceService", STATUS_COMMON);
    assert_fields(
        "InferenceService",
        &[
            ("spec.variants", "array"),
            ("spec.variants[].name", "string"),
            ("spec.variants[].modelVersion", "string"),
            ("spec.variants[].track.model", "string"),
            ("spec.variants[].track.minMetrics", "object"),
            ("spec.variants[].weight", "integer"),
            ("spec.predictor.image", "string"),
            ("spec.predictor.resources", "object"),
            ("spec.predictor.gpus", "integer"),
            ("spec.predictor.env", "array"),
            ("spec.predictor.batching.maxBatchSize", "integer"),
            ("spec.predictor.batching.maxLatencyMs", "integer"),
            ("spec.predictor.apiKeySecretRef.name", "string"),
            ("spec.autoscaling.minReplicas", "integer"),
            ("spec.autoscaling.maxReplicas", "integer"),
            ("spec.autoscaling.targetCPUUtilizationPercentage", "integer"),
            ("spec.autoscaling.targetRequestsPerSecond", "integer"),
            ("spec.routing.stickyHeader", "string"),
            ("spec.routing.variantHeader", "string"),
            ("spec.rollout.strategy", "string"),
            ("spec.rollout.steps", "array"),
            ("spec.rollout.stepInterval", "string"),
            ("spec.rollout.analysis.maxErrorRate", "number"),
            ("spec.rollout.analysis.maxP99LatencyMs", "number"),
            ("spec.rollout.analysis.minRequests", "integer"),
            ("spec.traffic.provider", "string"),
            ("spec.traffic.gateway.parentRefs", "array"),
            ("spec.traffic.gateway.hostnames", "array"),
            ("status.url", "string"),
            ("status.variants[].name", "string"),
            ("status.variants[].modelVersion", "string"),
            ("status.variants[].weight", "integer"),
            ("status.variants[].replicas", "integer"),
            ("status.variants[].readyReplicas", "integer"),
            ("status.rollout.variant", "string"),
            ("status.rollout.fromVersion", "string"),
            ("status.rollout.toVersion", "string"),
            ("status.rollout.step", "integer"),
            ("status.rollout.canaryWeight", "integer"),
            ("status.rollout.startedAt", "string"),
            ("status.rollout.lastAnalysis.requests", "integer"),
            ("status.rollout.lastAnalysis.errorRate", "number"),
            ("status.rollout.lastAnalysis.p99LatencyMs", "number"),
            ("status.history[].variant", "string"),
            ("status.history[].version", "string"),
            ("status.history[].from", "string"),
            ("status.history[].to", "string"),
            ("status.history[].outcome", "string"),
        ],
    );
    assert_eq!(enum_values("InferenceService", "spec.rollout.strategy"), ["Immediate", "Canary"]);
    assert_eq!(enum_values("InferenceService", "spec.traffic.provider"), ["Router", "GatewayAPI"]);
    assert_eq!(
        enum_values("InferenceService", "status.phase"),
        ["Pending", "Progressing", "Ready", "Degraded"]
    );
}

#[test]
fn ranges_live_in_the_schema() {
    let root = schema("InferenceService");
    let variants = node(&root, "spec.variants");
    assert_eq!((variants["minItems"].as_i64(), variants["maxItems"].as_i64()), (Some(1), Some(5)));
    let weight = node(&root, "spec.variants[].weight");
    assert_eq!((weight["minimum"].as_f64(), weight["maximum"].as_f64()), (Some(0.0), Some(100.0)));
    let tj = schema("TrainingJob");
    assert_eq!(node(&tj, "spec.hyperparameters.epochs")["minimum"].as_f64(), Some(1.0));
    assert_eq!(node(&tj, "spec.workers")["minimum"].as_f64(), Some(1.0));
    assert_eq!(node(&tj, "spec.registerAs.model")["maxLength"].as_i64(), Some(50));
}

#[test]
fn cel_rules_are_present() {
    use hone_crds::{inferenceservice as isvc, modelversion as mv, trainingjob as tj};
    let variants = rule_messages("InferenceService", "spec.variants");
    for m in [isvc::WEIGHTS_MESSAGE, isvc::UNIQUE_NAMES_MESSAGE, isvc::VARIANT_COUNT_MESSAGE] {
        assert!(variants.iter().any(|x| x == m), "spec.variants lacks rule {m:?}: {variants:?}");
    }
    assert!(
        rule_messages("InferenceService", "spec.variants[]").contains(&isvc::ONE_SOURCE_MESSAGE.to_owned())
    );
    assert!(rule_messages("TrainingJob", "spec").contains(&tj::IMMUTABLE_SPEC_MESSAGE.to_owned()));
    assert!(!rule_messages("TrainingJob", "spec.runPolicy").is_empty());
    assert!(rule_messages("ModelVersion", "spec").contains(&mv::IMMUTABLE_SPEC_MESSAGE.to_owned()));

    // The TrainingJob immutability rule names every spec field but runPolicy.
    let root = schema("TrainingJob");
    let spec = node(&root, "spec");
    for field in spec["properties"].as_object().unwrap().keys() {
        if field != "runPolicy" {
            assert!(tj::IMMUTABLE_SPEC_RULE.contains(&format!("self.{field} ")), "{field} is not immutable");
        }
    }
    assert!(!tj::IMMUTABLE_SPEC_RULE.contains("runPolicy"));
}

#[test]
fn names_columns_and_subresources() {
    for (kind, short, columns) in [
        ("Dataset", "ds", &["Phase", "Samples", "Age"][..]),
        ("TrainingJob", "tj", &["Phase", "Dataset", "Epoch", "Val-Accuracy", "Age"][..]),
        ("ModelVersion", "mv", &["Model", "Version", "Phase", "Age"][..]),
        ("InferenceService", "isvc", &["Phase", "URL", "Age"][..]),
    ] {
        let crd = crd(kind);
        assert_eq!(crd.spec.group, "hone.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_owned()][..]));
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["hone".to_owned()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{kind} status subresource"
        );
        let printed: Vec<&str> = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for c in columns {
            assert!(printed.contains(c), "{kind} lacks print column {c}: {printed:?}");
        }
    }
}

/// Paths allowed to be free-form maps (`additionalProperties`), per the API design.
const FREE_FORM_MAPS: &[&str] =
    &["classCounts", "nodeSelector", "labels", "metrics", "minMetrics", "limits", "requests"];

/// Walks a schema node and reports every non-structural spot.
fn structural_violations(path: &str, n: &Value, out: &mut Vec<String>) {
    let int_or_string = n.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if n.get("x-kubernetes-preserve-unknown-fields").is_some() {
        out.push(format!("{path}: preserves unknown fields"));
    }
    if n.get("$ref").is_some() {
        out.push(format!("{path}: $ref"));
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if n.get(combinator).is_some() && !int_or_string {
            out.push(format!("{path}: {combinator}"));
        }
    }
    if n.get("type").is_none() && !int_or_string {
        out.push(format!("{path}: no type"));
    }
    if n.get("type").and_then(Value::as_str) == Some("object") {
        match (n.get("properties"), n.get("additionalProperties")) {
            (Some(props), _) => {
                for (k, v) in props.as_object().unwrap() {
                    structural_violations(&format!("{path}.{k}"), v, out);
                }
            }
            (None, Some(additional)) => {
                let leaf = path.rsplit('.').next().unwrap_or_default();
                if !FREE_FORM_MAPS.contains(&leaf) {
                    out.push(format!("{path}: free-form map not allowed by the API design"));
                }
                structural_violations(&format!("{path}.*"), additional, out);
            }
            (None, None) => out.push(format!("{path}: untyped object")),
        }
    }
    if let Some(items) = n.get("items") {
        structural_violations(&format!("{path}[]"), items, out);
    }
}

#[test]
fn schemas_are_structural() {
    for kind in ["Dataset", "TrainingJob", "ModelVersion", "InferenceService"] {
        let root = schema(kind);
        let mut violations = Vec::new();
        for part in ["spec", "status"] {
            structural_violations(part, &root["properties"][part], &mut violations);
        }
        assert!(violations.is_empty(), "{kind}: {violations:#?}");
    }
}

#[test]
fn generated_yaml_is_committed_fresh() {
    // The same check CI runs through `make generate-check`, here so that
    // `cargo test` alone catches a stale chart too.
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for crd in all_crds() {
        let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
        let want = format!(
            "# Generated by crdgen from crds/src; do not edit.\n{}",
            serde_yaml::to_string(&crd).unwrap()
        );
        for dir in ["charts/hone/crds", "config/crd/bases"] {
            let have = std::fs::read_to_string(root.join(dir).join(&file)).unwrap_or_default();
            assert!(have == want, "{dir}/{file} is stale: run `make generate`");
        }
    }
}

//! Names shared by the controllers, the chart and the tests: one place for
//! every label key, annotation key, finalizer and field manager.

/// The API group of every Hone resource.
pub const GROUP: &str = "hone.dev";
/// The API version of every Hone resource.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get <category>` that lists every Hone resource.
pub const CATEGORY: &str = "hone";

/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "hone-operator";

/// `app.kubernetes.io/managed-by` label key.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of` label key.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Value of the managed-by and part-of labels on every child object.
pub const LABEL_VALUE_HONE: &str = "hone";
/// Label naming the Dataset a child belongs to.
pub const LABEL_DATASET: &str = "hone.dev/dataset";
/// Label naming the TrainingJob a child belongs to.
pub const LABEL_TRAINING_JOB: &str = "hone.dev/trainingjob";
/// Label on a registered ModelVersion: the uid of the TrainingJob that
/// produced it (one ModelVersion per TrainingJob run, across restarts).
pub const LABEL_TRAINING_JOB_UID: &str = "hone.dev/trainingjob-uid";
/// Label naming the ModelVersion a child belongs to.
pub const LABEL_MODEL_VERSION: &str = "hone.dev/modelversion";
/// Label naming the InferenceService a child belongs to.
pub const LABEL_INFERENCE_SERVICE: &str = "hone.dev/inferenceservice";
/// Label naming the model (registry name) of a ModelVersion.
pub const LABEL_MODEL: &str = "hone.dev/model";
/// Label naming the InferenceService variant a predictor serves.
pub const LABEL_VARIANT: &str = "hone.dev/variant";
/// Kueue's queue label, set when `spec.queueName` is given.
pub const LABEL_KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";

/// Annotation on a ModelVersion: `Delete` removes the artifact from storage
/// when the ModelVersion is deleted; anything else (or none) retains it.
pub const ANNOTATION_ARTIFACT_POLICY: &str = "hone.dev/artifact-policy";
/// The value of [`ANNOTATION_ARTIFACT_POLICY`] that deletes the artifact.
pub const ARTIFACT_POLICY_DELETE: &str = "Delete";

/// Finalizer that guards a served ModelVersion and cleans up its artifact.
pub const FINALIZER_MODEL_VERSION: &str = "hone.dev/model-version";

/// Default request header that pins a request to one variant.
pub const DEFAULT_VARIANT_HEADER: &str = "x-hone-variant";

/// Summary condition every kind carries.
pub const CONDITION_READY: &str = "Ready";
/// ModelVersion condition: Hone measured the model on held-out data.
pub const CONDITION_EVALUATED: &str = "Evaluated";
/// Condition: what the object asks of the operator's MLflow registry is
/// done (a ModelVersion's registration, an InferenceService's alias).
pub const CONDITION_REGISTRY_SYNCED: &str = "RegistrySynced";
/// Reason used when a spec is valid by schema but not usable.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

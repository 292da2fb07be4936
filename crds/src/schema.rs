//! Schema helpers for what schemars cannot say by attribute alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// `status.conditions`: a list-map of `metav1.Condition` keyed by `type`, so
/// server-side apply merges conditions by type instead of replacing the list.
pub(crate) fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

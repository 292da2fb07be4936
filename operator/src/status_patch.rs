//! The one way controllers write status: a server-side apply of the whole
//! status subresource, skipped when nothing changed.

use hone_crds::consts::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Whether a status write may overwrite a status it was not computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// The write wins whatever changed since (force, no precondition).
    LastWriteWins,
    /// The body carries `obj`'s `metadata.resourceVersion`: the apiserver
    /// refuses the write with 409 Conflict when the object changed since it
    /// was read, so a reconcile working from a stale cache cannot undo what
    /// a newer one wrote (e.g. move a rollout back a step).
    Optimistic,
}

/// Applies `next` as the status of `obj` when it differs from `previous`;
/// returns whether a patch was sent.
pub async fn apply_status<K, S>(client: &Client, obj: &K, previous: &S, next: &S) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    apply_status_with(client, obj, previous, next, Concurrency::LastWriteWins).await
}

/// [`apply_status`] with the given concurrency control. Under
/// [`Concurrency::Optimistic`] a stale write fails with an API error whose
/// code is 409 (see [`is_conflict`]); an object without a resourceVersion
/// (never the case for one read from the apiserver) is written unguarded.
pub async fn apply_status_with<K, S>(
    client: &Client,
    obj: &K,
    previous: &S,
    next: &S,
    concurrency: Concurrency,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if previous == next {
        return Ok(false);
    }
    let patch = status_body::<K, S>(next, precondition(obj, concurrency));
    Api::<K>::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
        .patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(true)
}

/// The resourceVersion a write of `obj`'s status is conditional on, if any.
fn precondition<K: Resource>(obj: &K, concurrency: Concurrency) -> Option<String> {
    match concurrency {
        Concurrency::LastWriteWins => None,
        Concurrency::Optimistic => obj.meta().resource_version.clone(),
    }
}

/// The apply body: the kind, the status, and the resourceVersion precondition when given.
fn status_body<K, S>(next: &S, resource_version: Option<String>) -> serde_json::Value
where
    K: Resource<DynamicType = ()>,
    S: Serialize,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": next,
    });
    if let Some(version) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    body
}

/// True when the apiserver refused a write because the object changed since
/// it was read (409 Conflict). Status applies are forced, so a 409 on them
/// is never a field-manager conflict.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use hone_crds::InferenceService;
    use hone_crds::inferenceservice::InferenceServiceStatus;

    use super::*;

    #[test]
    fn an_optimistic_body_carries_the_resource_version() {
        let mut isvc = InferenceService::new("digits", serde_yaml::from_str("variants: []").unwrap());
        isvc.metadata.resource_version = Some("42".into());
        let status = InferenceServiceStatus::default();
        let guarded =
            status_body::<InferenceService, _>(&status, precondition(&isvc, Concurrency::Optimistic));
        assert_eq!(guarded["metadata"]["resourceVersion"], "42");
        assert_eq!(guarded["kind"], "InferenceService");
        let plain =
            status_body::<InferenceService, _>(&status, precondition(&isvc, Concurrency::LastWriteWins));
        assert!(plain.get("metadata").is_none(), "{plain}");
    }
}

//! The one way controllers write status: a server-side apply of the whole
//! status subresource, skipped when nothing changed.

use hone_crds::consts::FIELD_MANAGER;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    if previous == next {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": next,
    });
    Api::<K>::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
        .patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(true)
}

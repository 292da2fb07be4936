//! Helpers every controller uses to build child objects: names, labels,
//! owner references and the Pod Security "restricted" security contexts.

use std::collections::BTreeMap;

use hone_crds::SecretRef;
use hone_crds::consts::{LABEL_MANAGED_BY, LABEL_PART_OF, LABEL_VALUE_HONE};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, SeccompProfile, SecretEnvSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::labels::{PVC_ROOT, SCRATCH_DIR};

/// Longest name a child may have: Job and Service names end up in label values.
pub const MAX_NAME_LEN: usize = 63;
/// Hex characters of a hash in a child name.
pub const NAME_HASH_LEN: usize = 10;
/// User and group every Hone pod runs as (the images' `nonroot` user).
pub const RUN_AS_ID: i64 = 65532;
/// Name of the writable scratch volume.
pub const SCRATCH_VOLUME: &str = "scratch";

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `<base>-<suffix>-<hash>` cut to [`MAX_NAME_LEN`]: the base is shortened
/// first, so the suffix and hash always survive and names stay unique.
pub fn child_name(base: &str, suffix: &str, hash: &str) -> String {
    let hash = &hash[..hash.len().min(NAME_HASH_LEN)];
    let tail = format!("-{suffix}-{hash}");
    let room = MAX_NAME_LEN.saturating_sub(tail.len());
    let mut head: String = base.chars().take(room).collect();
    // A cut can leave a trailing '-' or '.', which a DNS name may not have inside "-x".
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}{tail}")
}

/// The labels every child carries: managed-by, part-of and `<owner label>: <owner name>`.
pub fn child_labels(owner_label: &str, owner_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), LABEL_VALUE_HONE.to_owned()),
        (LABEL_PART_OF.to_owned(), LABEL_VALUE_HONE.to_owned()),
        (owner_label.to_owned(), owner_name.to_owned()),
    ])
}

/// A controller ownerReference to `owner` that blocks its deletion until the
/// child is gone; `None` when the owner has no name or uid yet.
pub fn controller_owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let meta = owner.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// True when `refs` names `uid` as controller.
pub fn is_controlled_by(refs: Option<&[OwnerReference]>, uid: &str) -> bool {
    refs.unwrap_or_default().iter().any(|r| r.uid == uid && r.controller == Some(true))
}

/// The pod of a run-to-completion Job Hone creates (inspect, train, verify):
/// never restarted in place, no API token or service links (the programs
/// never talk to the apiserver), Pod Security "restricted".
pub fn batch_pod_spec(container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(restricted_pod_security_context()),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// Pod-level security context that passes Pod Security "restricted".
pub fn restricted_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        fs_group: Some(RUN_AS_ID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    }
}

/// Container-level security context that passes Pod Security "restricted",
/// with a read-only root filesystem.
pub fn restricted_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_ID),
        run_as_group: Some(RUN_AS_ID),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }
}

/// The writable scratch volume (the root filesystem is read-only).
pub fn scratch_volume() -> Volume {
    Volume {
        name: SCRATCH_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// Where the scratch volume is mounted.
pub fn scratch_mount() -> VolumeMount {
    VolumeMount { name: SCRATCH_VOLUME.to_owned(), mount_path: SCRATCH_DIR.to_owned(), ..Default::default() }
}

/// The scratch volume plus one PersistentVolumeClaim volume per `(claim,
/// writable)`, mounted at `PVC_ROOT/<claim>` where the storage layer looks for
/// `pvc://<claim>/...`.
pub fn pod_volumes(claims: &[(String, bool)]) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![scratch_volume()];
    let mut mounts = vec![scratch_mount()];
    for (index, (claim, writable)) in claims.iter().enumerate() {
        let name = format!("pvc-{index}");
        volumes.push(Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(!writable),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: format!("{PVC_ROOT}/{claim}"),
            read_only: Some(!writable),
            ..Default::default()
        });
    }
    (volumes, mounts)
}

/// `envFrom` entries for each distinct Secret (storage credentials), or `None`.
pub fn secret_env_from<'a>(secrets: impl Iterator<Item = &'a SecretRef>) -> Option<Vec<EnvFromSource>> {
    let mut names: Vec<String> = Vec::new();
    for secret in secrets {
        if !names.contains(&secret.name) {
            names.push(secret.name.clone());
        }
    }
    (!names.is_empty()).then(|| {
        names
            .into_iter()
            .map(|name| EnvFromSource {
                secret_ref: Some(SecretEnvSource { name, optional: Some(false) }),
                ..Default::default()
            })
            .collect()
    })
}

/// Annotation holding the hash of the object as the operator last applied it.
pub const ANNOTATION_DESIRED_HASH: &str = "hone.dev/desired-hash";

/// Stamps `object` with the hash of its desired form (before the stamp).
pub fn stamp_desired_hash<K: Resource + serde::Serialize>(object: &mut K) -> String {
    let hash = sha256_hex(&serde_json::to_vec(&*object).unwrap_or_default())[..16].to_owned();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_DESIRED_HASH.to_owned(), hash.clone());
    hash
}

/// Whether the child must be applied again: it is missing, its desired form
/// changed (hash), or someone else now owns part of its spec or data (an edit
/// by hand is drift to undo). Status writers and subresources (`scale`,
/// `status`) do not count. Skipping unchanged children keeps a reconcile that
/// a child's status change triggered from re-sending every object.
pub fn needs_apply<K: Resource>(observed: Option<&K>, hash: &str) -> bool {
    let Some(observed) = observed else { return true };
    let meta = observed.meta();
    if meta.annotations.as_ref().and_then(|a| a.get(ANNOTATION_DESIRED_HASH)).map(String::as_str)
        != Some(hash)
    {
        return true;
    }
    meta.managed_fields.iter().flatten().any(|entry| {
        let main_resource = entry.subresource.as_deref().unwrap_or("").is_empty();
        let foreign = entry.manager.as_deref() != Some(hone_crds::consts::FIELD_MANAGER);
        let owns_content = entry.fields_v1.as_ref().is_some_and(|fields| {
            fields.0.as_object().is_some_and(|f| f.contains_key("f:spec") || f.contains_key("f:data"))
        });
        main_resource && foreign && owns_content
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hone_crds::Dataset;
    use kube::api::ObjectMeta;

    #[test]
    fn child_names_are_short_and_keep_the_hash() {
        assert_eq!(child_name("digits", "inspect", "0123456789abcdef"), "digits-inspect-0123456789");
        let long = "a".repeat(200);
        let name = child_name(&long, "inspect", "0123456789abcdef");
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.ends_with("-inspect-0123456789"));
        let dashed = format!("{}-{}", "a".repeat(43), "b".repeat(30));
        assert!(!child_name(&dashed, "inspect", "ff").contains("--"));
    }

    #[test]
    fn labels_name_the_owner_and_hone() {
        let labels = child_labels("hone.dev/dataset", "digits");
        assert_eq!(labels.get(LABEL_MANAGED_BY).map(String::as_str), Some("hone"));
        assert_eq!(labels.get(LABEL_PART_OF).map(String::as_str), Some("hone"));
        assert_eq!(labels.get("hone.dev/dataset").map(String::as_str), Some("digits"));
    }

    #[test]
    fn owner_ref_needs_a_uid() {
        let mut ds =
            Dataset::new("digits", serde_json::from_str(r#"{"source":{"uri":"s3://b/d"}}"#).unwrap());
        assert!(controller_owner_ref(&ds).is_none());
        ds.metadata = ObjectMeta { uid: Some("u1".into()), ..ds.metadata };
        let owner = controller_owner_ref(&ds).unwrap();
        assert_eq!(owner.kind, "Dataset");
        assert_eq!(owner.api_version, "hone.dev/v1alpha1");
        assert_eq!(owner.controller, Some(true));
        assert!(is_controlled_by(Some(&[owner]), "u1"));
        assert!(!is_controlled_by(None, "u1"));
    }

    #[test]
    fn unchanged_children_are_skipped_and_drift_is_not() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let desired = || {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some("c".into());
            cm.data = Some([("k".to_owned(), "v".to_owned())].into());
            cm
        };
        let mut wanted = desired();
        let hash = stamp_desired_hash(&mut wanted);
        assert!(needs_apply::<ConfigMap>(None, &hash), "missing");
        let mut observed = wanted.clone();
        let entry = |manager: &str, subresource: Option<&str>, fields: serde_json::Value| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                manager: Some(manager.into()),
                subresource: subresource.map(Into::into),
                fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(fields)),
                ..Default::default()
            }
        };
        observed.metadata.managed_fields = Some(vec![
            entry(hone_crds::consts::FIELD_MANAGER, None, serde_json::json!({"f:data": {}})),
            entry("kube-controller-manager", Some("status"), serde_json::json!({"f:status": {}})),
            entry("kube-controller-manager", None, serde_json::json!({"f:metadata": {}})),
        ]);
        assert!(!needs_apply(Some(&observed), &hash), "unchanged: skipped");
        let mut changed = desired();
        changed.data = Some([("k".to_owned(), "w".to_owned())].into());
        let new_hash = stamp_desired_hash(&mut changed);
        assert_ne!(new_hash, hash);
        assert!(needs_apply(Some(&observed), &new_hash), "desired changed");
        observed.metadata.managed_fields.get_or_insert_with(Vec::new).push(entry(
            "kubectl-edit",
            None,
            serde_json::json!({"f:data": {}}),
        ));
        assert!(needs_apply(Some(&observed), &hash), "edited by hand: applied again");
    }
}

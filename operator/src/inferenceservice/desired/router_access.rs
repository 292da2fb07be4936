//! The router's own identity: a ServiceAccount, and a Role that lets it read
//! exactly one object, its ConfigMap, which it watches through the API so a
//! weight change reaches it as soon as the status does (a mounted ConfigMap
//! waits for the kubelet's next sync, up to about a minute).
//!
//! RBAC matches `list` and `watch` by resource name only when the request
//! selects `metadata.name`, which is what the router's watch does; it can
//! read no other ConfigMap and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::super::validate::ValidService;
use super::scaling::meta;

/// The router's ServiceAccount, Role and RoleBinding, all named `name`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouterAccess {
    /// Who the router pods run as.
    pub service_account: ServiceAccount,
    /// What it may read: its ConfigMap.
    pub role: Role,
    /// The grant.
    pub role_binding: RoleBinding,
}

/// The verbs a ConfigMap watch needs: the initial list, then the watch.
const CONFIG_MAP_VERBS: [&str; 3] = ["get", "list", "watch"];

/// Access for the router pods `name` of `valid`, to the ConfigMap `config_map`.
pub fn router_access(
    valid: &ValidService,
    name: &str,
    config_map: &str,
    labels: &BTreeMap<String, String>,
) -> RouterAccess {
    let service_account = ServiceAccount {
        metadata: meta(valid, name, labels),
        // Only the router pods mount its token, and they ask for it explicitly.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(valid, name, labels),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            resource_names: Some(vec![config_map.to_owned()]),
            verbs: CONFIG_MAP_VERBS.iter().map(|v| (*v).to_owned()).collect(),
            ..Default::default()
        }]),
    };
    let role_binding = RoleBinding {
        metadata: meta(valid, name, labels),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(valid.namespace.clone()),
            ..Default::default()
        }]),
    };
    RouterAccess { service_account, role, role_binding }
}

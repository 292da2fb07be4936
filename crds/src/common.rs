//! Types shared by several resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where bytes live: an object-store URI plus optional credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageLocation {
    /// URI of the data. Schemes: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`, `http(s)://...` (read-only), `pvc://<claim>/<path>`
    /// (the claim is mounted into the pod) and `file:///path` (local runs only).
    #[schemars(length(min = 1, max = 2048), regex(pattern = crate::common::URI_PATTERN))]
    pub uri: String,
    /// Secret in the same namespace whose keys are passed to the pod as
    /// environment variables (for example `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `GOOGLE_SERVICE_ACCOUNT_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

impl StorageLocation {
    /// A location with no credentials.
    pub fn new(uri: impl Into<String>) -> Self {
        Self { uri: uri.into(), secret_ref: None }
    }
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to another object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A Go-style duration such as `30s`, `5m` or `1h30m`.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A DNS-1123 label: lower case alphanumerics and `-`, starting and ending alphanumeric.
pub(crate) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A content digest in the form `sha256:<64 hex>`.
pub(crate) const DIGEST_PATTERN: &str = r"^sha256:[a-f0-9]{64}$";

/// A storage URI with one of the supported schemes.
pub(crate) const URI_PATTERN: &str = r"^(s3|gs|az|https?|pvc|file)://.+$";

/// An HTTP header name.
pub(crate) const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9-]+$";

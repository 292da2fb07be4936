//! `spec.dataLoading`: how the built-in trainer holds decoded images.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the trainer holds decoded images: in memory, or streamed batch by
/// batch from a decode pool and an on-disk cache (docs/data.md).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataLoading {
    /// `auto` (default): in memory when the decoded images fit a quarter of
    /// the pod's memory limit (1 GiB without one), streamed otherwise;
    /// `memory`; `stream`.
    #[serde(default)]
    pub mode: DataLoadingMode,
    /// Storage reads in flight at most (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub reads: Option<u32>,
    /// An on-disk cache of decoded images: streamed epochs read it instead
    /// of fetching and decoding every file again. Unset: no cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<DataCache>,
}

/// Where training keeps decoded images.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataLoadingMode {
    /// In memory when they fit the budget, else streamed.
    #[default]
    Auto,
    /// Always in memory.
    Memory,
    /// Always streamed.
    Stream,
}

impl DataLoadingMode {
    /// The wire name (also the trainer's `--data-mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Memory => "memory",
            Self::Stream => "stream",
        }
    }
}

/// The volume of the decoded-image cache: an emptyDir (default) or a claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataCache {
    /// Size limit of the emptyDir, a quantity such as `20Gi` (its decoded
    /// images take samples x channels x height x width bytes); the kubelet
    /// evicts a pod that writes more. Ignored with `claimName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
    )]
    pub size_limit: Option<String>,
    /// An existing PersistentVolumeClaim in the TrainingJob's namespace to
    /// hold the cache instead of an emptyDir (for caches larger than the
    /// node's ephemeral storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub claim_name: Option<String>,
}

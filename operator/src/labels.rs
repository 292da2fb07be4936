//! Label keys and values the operator itself owns (shared ones live in
//! `hone_crds::consts`). One place, so builders never spell them out.

/// Label on inspect Jobs: hash of the Job spec, shared by every refresh round.
pub const LABEL_SPEC_HASH: &str = "hone.dev/spec-hash";
/// Label on inspect Jobs: the refresh round (0 for the first verification of a spec).
pub const LABEL_ROUND: &str = "hone.dev/round";
/// Label the Job controller puts on the pods of a Job.
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// Older form of [`LABEL_JOB_NAME`], still set by the Job controller.
pub const LABEL_JOB_NAME_LEGACY: &str = "job-name";

/// Mount root of `pvc://` claims inside pods (what `hone-storage` assumes unset).
pub use hone_crds::contract::DEFAULT_PVC_ROOT as PVC_ROOT;
/// Environment variable naming where `pvc://` claims are mounted in a pod
/// (`hone-storage` reads it in the trainer and the predictor).
pub use hone_crds::contract::env::PVC_ROOT as ENV_PVC_ROOT;
/// Where a writable scratch volume is mounted (the root filesystem is read-only).
pub const SCRATCH_DIR: &str = "/tmp";

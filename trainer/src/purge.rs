//! `hone-trainer purge`: deletes a model artifact (single objects, or whole
//! run folders) from any storage the trainer reads. The code lives in
//! `hone_storage::purge`, where the cluster tests run it against MinIO.

pub use hone_storage::purge::purge;

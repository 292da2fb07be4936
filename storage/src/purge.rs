//! Deleting a model artifact: what `hone-trainer purge` runs for a
//! ModelVersion with `hone.dev/artifact-policy: Delete`. Here, beside the
//! storage it deletes from, so the cluster tests run the same code against
//! MinIO that the purge pod runs.

use crate::{Location, StorageError};

/// Deletes each of `uris` (every object below it when `prefix`); returns how
/// many objects were deleted. Missing objects are not an error, so a retried
/// purge succeeds. A folder is matched by whole path segments (`run-1` never
/// reaches `run-10/`), and a bucket or filesystem root is refused as a folder.
pub async fn purge(uris: &[String], prefix: bool) -> Result<usize, StorageError> {
    let mut deleted = 0;
    for uri in uris {
        let location = Location::parse(uri)?;
        if prefix {
            if location.path.parts().next().is_none() {
                return Err(StorageError::InvalidUri {
                    uri: uri.clone(),
                    reason: "refusing to delete everything below a bucket or filesystem root".to_owned(),
                });
            }
            for object in location.list().await? {
                location.join(&object.relative_path).delete().await?;
                deleted += 1;
            }
        } else if location.exists().await? {
            location.delete().await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn deletes_files_and_folders_and_tolerates_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("checkpoints")).unwrap();
        std::fs::create_dir_all(dir.path().join("run-10")).unwrap();
        for f in ["model.pt", "model.json", "checkpoints/epoch-1.ot"] {
            std::fs::write(run.join(f), b"x").unwrap();
        }
        std::fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("run-10/model.pt"), b"x").unwrap();
        let uri = |p: &std::path::Path| format!("file://{}", p.display());

        let n = purge(&[uri(&run.join("model.pt")), uri(&run.join("absent"))], false).await.unwrap();
        assert_eq!(n, 1);
        assert!(!run.join("model.pt").exists() && run.join("model.json").exists());

        let n = purge(&[uri(&run)], true).await.unwrap();
        assert_eq!(n, 2);
        assert!(!run.join("model.json").exists() && !run.join("checkpoints/epoch-1.ot").exists());
        assert!(dir.path().join("keep.txt").exists(), "nothing outside the folder is touched");
        assert!(dir.path().join("run-10/model.pt").exists(), "a folder is matched by whole segments");
        assert_eq!(purge(&[uri(&run)], true).await.unwrap(), 0, "a second purge finds nothing and succeeds");
        assert!(purge(&["file:///".to_owned()], true).await.is_err(), "a root is never purged");
    }
}

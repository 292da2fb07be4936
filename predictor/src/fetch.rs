//! Reads model files from any storage URI `hone-storage` supports (`file://`,
//! `s3://`, `gs://`, `az://`, `http(s)://`, `pvc://`), plus plain local paths.
//! Without the `object-storage` feature, only local paths and `file://`.

use bytes::Bytes;
use hone_crds::contract::MODEL_CARD_FILE;
use hone_crds::modelversion::ArtifactFormat;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The storage backend failed.
    #[cfg(feature = "object-storage")]
    #[error(transparent)]
    Storage(Box<hone_storage::StorageError>),
    /// A local file could not be read.
    #[error("{0}")]
    Local(#[from] std::io::Error),
    /// The URI's scheme needs the `object-storage` feature.
    #[error("unsupported URI {0:?}: this build reads only local paths and file:// URIs")]
    Unsupported(String),
}

/// Reads a whole object; a plain path (no scheme) is a local file.
pub async fn fetch(uri: &str) -> Result<Bytes, FetchError> {
    read(&normalize(uri)).await
}

#[cfg(feature = "object-storage")]
async fn read(uri: &str) -> Result<Bytes, FetchError> {
    hone_storage::read(uri).await.map_err(|e| FetchError::Storage(Box::new(e)))
}

#[cfg(not(feature = "object-storage"))]
async fn read(uri: &str) -> Result<Bytes, FetchError> {
    let path = uri.strip_prefix("file://").ok_or_else(|| FetchError::Unsupported(uri.to_owned()))?;
    Ok(Bytes::from(tokio::fs::read(path).await?))
}

/// Turns a plain local path into a `file://` URI; URIs pass unchanged.
pub fn normalize(uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_owned();
    }
    let path = std::path::Path::new(uri);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    format!("file://{}", absolute.display())
}

/// The URIs of the model file and `model.json` for `--model`, which names
/// either the folder holding both (then the file is `format`'s, `model.pt`
/// or `model.onnx`) or the model file itself (`*.pt`, `*.onnx`: whatever
/// its format, which loading checks).
pub fn model_files(uri: &str, format: ArtifactFormat) -> (String, String) {
    let trimmed = uri.trim_end_matches('/');
    let is_model_file = |name: &str| name.ends_with(".pt") || name.ends_with(".onnx");
    match trimmed.rsplit_once('/') {
        Some((folder, file)) if is_model_file(file) => {
            (trimmed.to_owned(), format!("{folder}/{MODEL_CARD_FILE}"))
        }
        None if is_model_file(trimmed) => (trimmed.to_owned(), MODEL_CARD_FILE.to_owned()),
        _ => (format!("{trimmed}/{}", format.file_name()), format!("{trimmed}/{MODEL_CARD_FILE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_or_file_uris_name_both_files() {
        let (pt, card) = model_files("s3://bucket/job/0/", ArtifactFormat::TorchScript);
        assert_eq!(pt, "s3://bucket/job/0/model.pt");
        assert_eq!(card, "s3://bucket/job/0/model.json");
        let (pt, card) = model_files("/models/a/custom.pt", ArtifactFormat::TorchScript);
        assert_eq!(pt, "/models/a/custom.pt");
        assert_eq!(card, "/models/a/model.json");
        let (onnx, card) = model_files("s3://bucket/job/0", ArtifactFormat::Onnx);
        assert_eq!(onnx, "s3://bucket/job/0/model.onnx");
        assert_eq!(card, "s3://bucket/job/0/model.json");
        // A file URI is the file, whatever the format says: loading checks the bytes.
        let (file, card) = model_files("gs://b/m/model.onnx", ArtifactFormat::TorchScript);
        assert_eq!(file, "gs://b/m/model.onnx");
        assert_eq!(card, "gs://b/m/model.json");
        assert_eq!(model_files("model.pt", ArtifactFormat::TorchScript).1, "model.json");
    }

    #[test]
    fn plain_paths_become_file_uris() {
        assert_eq!(normalize("/tmp/x/model.pt"), "file:///tmp/x/model.pt");
        assert_eq!(normalize("gs://b/o"), "gs://b/o");
        assert!(normalize("rel/model.pt").starts_with("file:///"));
    }

    #[tokio::test]
    async fn local_files_are_read_and_missing_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.json");
        std::fs::write(&file, b"{}").unwrap();
        assert_eq!(fetch(file.to_str().unwrap()).await.unwrap(), Bytes::from_static(b"{}"));
        assert!(fetch(dir.path().join("missing").to_str().unwrap()).await.is_err());
    }
}

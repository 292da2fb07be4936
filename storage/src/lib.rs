//! Hone's storage: one abstraction over every URI scheme Hone accepts, on
//! top of `object_store`: `file://`, `s3://`, `gs://`, `az://`, `http(s)://`
//! (read) and `pvc://<claim>/<path>` (a claim mounted under [`PVC_ROOT_ENV`]).
//! Credentials come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`),
//! which the operator fills from the location's Secret.
//!
//! Used by the trainer and the predictor, which may import only contract
//! crates; [`cuda`] (libtorch's CUDA-backend loader) lives here for the same reason.

pub mod cuda;
pub mod purge;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ClientOptions;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

/// Where `pvc://` claims are mounted when [`PVC_ROOT_ENV`] is unset.
pub use hone_crds::contract::DEFAULT_PVC_ROOT;
/// Environment variable naming where `pvc://` claims are mounted (default
/// [`DEFAULT_PVC_ROOT`]); the operator sets it in every pod that mounts a claim.
pub use hone_crds::contract::env::PVC_ROOT as PVC_ROOT_ENV;

/// What can go wrong reaching storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URI cannot be parsed or has an unsupported scheme.
    #[error("invalid storage URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI given.
        uri: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The object does not exist.
    #[error("{uri} does not exist")]
    NotFound {
        /// The missing object.
        uri: String,
    },
    /// Any other failure of the backend.
    #[error("{op} {uri}: {source}")]
    Backend {
        /// The operation: read, write, list or delete.
        op: &'static str,
        /// The object or prefix.
        uri: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },
}

impl StorageError {
    /// A short category for logs, metrics and termination reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidUri { .. } => "InvalidUri",
            Self::NotFound { .. } => "NotFound",
            Self::Backend { .. } => "Storage",
        }
    }
}

/// An object found by [`Location::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the listed prefix, `/`-separated.
    pub relative_path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A parsed URI: the store that holds it and the path inside that store.
#[derive(Clone, Debug)]
pub struct Location {
    uri: String,
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl Location {
    /// Parses `uri` and builds its store from the environment's credentials.
    pub fn parse(uri: &str) -> Result<Self, StorageError> {
        let invalid = |reason: String| StorageError::InvalidUri { uri: uri.to_owned(), reason };
        let url = Url::parse(uri).map_err(|e| invalid(e.to_string()))?;
        let backend = |e: object_store::Error| invalid(e.to_string());
        let (store, path): (Arc<dyn ObjectStore>, Path) = match url.scheme() {
            "file" => {
                let fs_path = url.to_file_path().map_err(|()| invalid("not an absolute file path".into()))?;
                (Arc::new(LocalFileSystem::new()), local_path(&fs_path).map_err(invalid)?)
            }
            "pvc" => {
                let claim = url
                    .host_str()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| invalid("no claim name".into()))?;
                let root = std::env::var(PVC_ROOT_ENV).unwrap_or_else(|_| DEFAULT_PVC_ROOT.to_owned());
                let fs_path =
                    std::path::Path::new(&root).join(claim).join(url.path().trim_start_matches('/'));
                (Arc::new(LocalFileSystem::new()), local_path(&fs_path).map_err(invalid)?)
            }
            "s3" => {
                let store = AmazonS3Builder::from_env().with_url(uri).build().map_err(backend)?;
                (Arc::new(store), object_path(&url)?)
            }
            "gs" => {
                let store = GoogleCloudStorageBuilder::from_env().with_url(uri).build().map_err(backend)?;
                (Arc::new(store), object_path(&url)?)
            }
            "az" => {
                let store = MicrosoftAzureBuilder::from_env().with_url(uri).build().map_err(backend)?;
                (Arc::new(store), object_path(&url)?)
            }
            "http" | "https" => {
                let base = format!("{}://{}", url.scheme(), url.authority());
                // A plain-http URL was written on purpose (an in-cluster
                // MLflow artifact proxy, a test server): allow what it names.
                let options = ClientOptions::new().with_allow_http(url.scheme() == "http");
                let store = HttpBuilder::new()
                    .with_url(base)
                    .with_client_options(options)
                    .build()
                    .map_err(backend)?;
                (Arc::new(store), object_path(&url)?)
            }
            other => {
                return Err(invalid(format!(
                    "unsupported scheme {other:?}: use file, pvc, s3, gs, az or http(s)"
                )));
            }
        };
        Ok(Self { uri: uri.trim_end_matches('/').to_owned(), store, path })
    }

    /// The URI this location was parsed from (without a trailing `/`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The location `relative` below this one.
    pub fn join(&self, relative: &str) -> Self {
        let mut path = self.path.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        Self { uri: format!("{}/{}", self.uri, relative.trim_matches('/')), store: self.store.clone(), path }
    }

    /// Reads the whole object.
    pub async fn read(&self) -> Result<Bytes, StorageError> {
        let result = self.store.get(&self.path).await.map_err(|e| self.error("read", e))?;
        result.bytes().await.map_err(|e| self.error("read", e))
    }

    /// Writes the whole object; readers see either the old or the new bytes.
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<(), StorageError> {
        let payload = PutPayload::from_bytes(data.into());
        self.store.put(&self.path, payload).await.map_err(|e| self.error("write", e))?;
        Ok(())
    }

    /// Lists every object below this location, sorted by relative path.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        let prefix = self.path.clone();
        let prefix_parts = prefix.parts().count();
        let metas: Vec<_> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| self.error("list", e))?;
        let mut objects: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                relative_path: m
                    .location
                    .parts()
                    .skip(prefix_parts)
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: m.size,
            })
            .filter(|o| !o.relative_path.is_empty())
            .collect();
        objects.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
        Ok(objects)
    }

    /// Deletes the object (a missing object is not an error).
    pub async fn delete(&self) -> Result<(), StorageError> {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", e)),
        }
    }

    /// True when the object exists.
    pub async fn exists(&self) -> Result<bool, StorageError> {
        match self.store.head(&self.path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("read", e)),
        }
    }

    fn error(&self, op: &'static str, source: object_store::Error) -> StorageError {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound { uri: self.uri.clone() },
            source => StorageError::Backend { op, uri: self.uri.clone(), source },
        }
    }
}

fn local_path(path: &std::path::Path) -> Result<Path, String> {
    Path::from_absolute_path(path).map_err(|e| e.to_string())
}

fn object_path(url: &Url) -> Result<Path, StorageError> {
    Path::from_url_path(url.path())
        .map_err(|e| StorageError::InvalidUri { uri: url.to_string(), reason: e.to_string() })
}

/// Reads a whole object by URI.
pub async fn read(uri: &str) -> Result<Bytes, StorageError> {
    Location::parse(uri)?.read().await
}

/// Writes a whole object by URI.
pub async fn write(uri: &str, data: impl Into<Bytes>) -> Result<(), StorageError> {
    Location::parse(uri)?.write(data).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_round_trip_list_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(&format!("file://{}/", dir.path().display())).unwrap();
        root.join("b/two.txt").write(Bytes::from_static(b"22")).await.unwrap();
        root.join("a.txt").write(Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(root.join("a.txt").read().await.unwrap(), Bytes::from_static(b"1"));
        let listed = root.list().await.unwrap();
        let names: Vec<_> = listed.iter().map(|o| (o.relative_path.as_str(), o.size)).collect();
        assert_eq!(names, [("a.txt", 1), ("b/two.txt", 2)]);
        root.join("a.txt").delete().await.unwrap();
        assert!(!root.join("a.txt").exists().await.unwrap());
        assert!(matches!(root.join("a.txt").read().await, Err(StorageError::NotFound { .. })));
    }

    #[test]
    fn bad_uris_are_clear_errors() {
        for uri in ["ftp://host/x", "not a uri", "pvc:///no-claim"] {
            let err = Location::parse(uri).unwrap_err();
            assert_eq!(err.category(), "InvalidUri", "{uri}: {err}");
        }
    }

    #[test]
    fn pvc_maps_under_the_mount_root() {
        let loc = Location::parse("pvc://data/digits/train").unwrap();
        assert_eq!(loc.path.as_ref(), "mnt/pvc/data/digits/train");
    }
}

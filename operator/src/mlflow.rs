//! The operator's MLflow Model Registry client, over MLflow's REST API:
//! resolve a `models:/` artifact URI, register a verified ModelVersion as an
//! MLflow model version (tagged with Hone's lineage), and move an alias.
//!
//! The registry is the operator's (`--mlflow-uri`), never an object's: an
//! object's author cannot point the operator, and its credentials, at a
//! server of their choosing. Credentials come from the environment, which
//! the chart fills from a Secret; the operator never reads Secrets itself.
//!
//! Every call is bounded: a connect and a total timeout, and a cap on the
//! bytes of any answer read.

use std::time::Duration;

use hone_crds::modelversion::{ArtifactFormat, RegistryReference};
use serde_json::{Value, json};

/// Connect timeout of every call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total timeout of every call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The most bytes of an answer read; MLflow's answers here are a few KiB.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Tag keys Hone writes on the model versions it registers.
pub mod tags {
    /// `<namespace>/<name>` of the ModelVersion.
    pub const MODEL_VERSION: &str = "hone.model_version";
    /// Its uid: finds an earlier registration, so a retry never registers twice.
    pub const MODEL_VERSION_UID: &str = "hone.model_version_uid";
    /// The TrainingJob that trained it.
    pub const TRAINING_JOB: &str = "hone.training_job";
    /// The Dataset it was trained on.
    pub const DATASET: &str = "hone.dataset";
    /// The digest of that Dataset's content.
    pub const DATASET_DIGEST: &str = "hone.dataset_digest";
    /// The `sha256:` of the model file.
    pub const ARTIFACT_DIGEST: &str = "hone.artifact_digest";
}

/// How the operator authenticates to its registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>` (`MLFLOW_TRACKING_TOKEN`'s role).
    Token(String),
    /// HTTP basic auth (MLflow's basic-auth app).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Token(_) => "Token(..)",
            Self::Basic { .. } => "Basic(..)",
        })
    }
}

/// The operator's MLflow registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Tracking server base URI, e.g. `http://mlflow.mlflow:5000`.
    pub uri: String,
    /// Its credentials.
    pub credentials: Credentials,
}

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry did not answer, timed out, or answered 5xx/429: retried.
    #[error("the MLflow registry is unavailable: {0}")]
    Unavailable(String),
    /// 401/403: the credentials are missing or wrong; retried, since fixing
    /// the Secret needs no change to the object.
    #[error("the MLflow registry refused the operator's credentials: {0}")]
    Unauthorized(String),
    /// The registered model, version or alias does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Any other refusal, or an answer that makes no sense: not retried.
    #[error("{0}")]
    Refused(String),
}

impl RegistryError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Unauthorized(_))
    }

    /// CamelCase reason for conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "RegistryUnavailable",
            Self::Unauthorized(_) => "RegistryUnauthorized",
            Self::NotFound(_) => "ModelNotInRegistry",
            Self::Refused(_) => "RegistryRefused",
        }
    }
}

/// What a `models:/` URI resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Registered model name.
    pub registered_model: String,
    /// The version (an alias resolves to one).
    pub version: String,
    /// The MLflow run that produced it.
    pub run_id: Option<String>,
    /// MLflow's `source` of the version.
    pub source: Option<String>,
    /// Where a pod reads the model file.
    pub uri: String,
}

/// Lineage and identity of a ModelVersion being registered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Export {
    /// Registered model name.
    pub registered_model: String,
    /// The folder holding the model file and its card (the version's `source`).
    pub source: String,
    /// The MLflow run that produced it.
    pub run_id: Option<String>,
    /// A sentence for MLflow's description field.
    pub description: String,
    /// Tags; [`tags::MODEL_VERSION_UID`] must be among them.
    pub tags: Vec<(String, String)>,
}

/// A client of the operator's registry.
#[derive(Clone, Debug)]
pub struct Registry {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
}

impl Registry {
    /// A client for `config`.
    pub fn new(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RegistryError::Refused(format!("building the MLflow client: {e}")))?;
        Ok(Self {
            http,
            base: config.uri.trim().trim_end_matches('/').to_owned(),
            credentials: config.credentials.clone(),
        })
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => request,
            Credentials::Token(token) => request.bearer_auth(token),
            Credentials::Basic { username, password } => request.basic_auth(username, Some(password)),
        }
    }

    /// One call to `api/2.0/mlflow/<path>`: GET with `query`, or POST `body`.
    async fn call(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, RegistryError> {
        let base = format!("{}/api/2.0/mlflow/{path}", self.base);
        let url = url::Url::parse_with_params(&base, query)
            .map_err(|e| RegistryError::Refused(format!("{base}: {e}")))?;
        let request = match body {
            Some(body) => self.http.post(url.clone()).json(&body),
            None => self.http.get(url.clone()),
        };
        let shown = &base; // messages name the endpoint, not the query
        let mut resp = self
            .authorize(request)
            .send()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{shown}: {}", error_chain(&e))))?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| RegistryError::Unavailable(format!("{shown}: {}", error_chain(&e))))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(RegistryError::Refused(format!(
                    "{shown}: answer longer than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error_code"].as_str().unwrap_or_default();
        let message = value["message"].as_str().map_or_else(|| status.to_string(), |m| shorten(m, 300));
        let text = format!("{shown}: {status} {code} {message}");
        Err(match status.as_u16() {
            401 | 403 => RegistryError::Unauthorized(text),
            404 if code == "RESOURCE_DOES_NOT_EXIST" || code.is_empty() => RegistryError::NotFound(text),
            408 | 429 | 500..=599 => RegistryError::Unavailable(text),
            _ if code == "RESOURCE_DOES_NOT_EXIST" => RegistryError::NotFound(text),
            _ => RegistryError::Refused(text),
        })
    }

    /// Resolves `reference` to the model file of `format` a pod can read.
    pub async fn resolve(
        &self,
        reference: &RegistryReference,
        format: ArtifactFormat,
    ) -> Result<Resolved, RegistryError> {
        let model = reference.model();
        let found = match reference {
            RegistryReference::Version { version, .. } => {
                self.call("model-versions/get", &[("name", model), ("version", &version.to_string())], None)
                    .await
            }
            RegistryReference::Alias { alias, .. } => {
                // MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE
                // ("Registered model alias ... not found"), not 404.
                self.call("registered-models/alias", &[("name", model), ("alias", alias)], None)
                    .await
                    .map_err(|e| match e {
                        RegistryError::Refused(text) if missing_alias(&text) => RegistryError::NotFound(text),
                        other => other,
                    })
            }
        }
        .map_err(|e| match e {
            RegistryError::NotFound(text) => RegistryError::NotFound(format!(
                "{reference} is not in the MLflow registry ({text}); register it there, or name an existing \
                 version or alias"
            )),
            other => other,
        })?;
        let mv = &found["model_version"];
        let version = mv["version"]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                RegistryError::Refused(format!("{reference}: the registry's answer names no version"))
            })?
            .to_owned();
        match mv["status"].as_str() {
            None | Some("READY") => {}
            Some("PENDING_REGISTRATION") => {
                return Err(RegistryError::Unavailable(format!(
                    "{reference}: MLflow model version {version} is still PENDING_REGISTRATION"
                )));
            }
            Some(other) => {
                return Err(RegistryError::Refused(format!(
                    "{reference}: MLflow model version {version} is {other}, not READY"
                )));
            }
        }
        let download = self
            .call("model-versions/get-download-uri", &[("name", model), ("version", &version)], None)
            .await?;
        let artifact_uri = download["artifact_uri"].as_str().filter(|u| !u.is_empty()).ok_or_else(|| {
            RegistryError::Refused(format!("{reference}: the registry gave no download URI"))
        })?;
        let folder = self.readable(artifact_uri).map_err(|why| {
            RegistryError::Refused(format!(
                "{reference} (MLflow version {version}) is stored at {artifact_uri}: {why}"
            ))
        })?;
        Ok(Resolved {
            registered_model: model.to_owned(),
            version,
            run_id: mv["run_id"].as_str().filter(|r| !r.is_empty()).map(str::to_owned),
            source: mv["source"].as_str().filter(|s| !s.is_empty()).map(|s| shorten(s, 1024)),
            uri: model_file(&folder, format),
        })
    }

    /// `artifact_uri` as a location hone-storage reads from a pod: object
    /// storage as it is, MLflow's proxied artifacts through the server.
    fn readable(&self, artifact_uri: &str) -> Result<String, String> {
        let uri = artifact_uri.trim();
        if let Some(path) = uri.strip_prefix("mlflow-artifacts:") {
            // mlflow-artifacts:/<path> or mlflow-artifacts://<host>/<path>: served by the tracking server.
            let path = match path.strip_prefix("//") {
                Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
                None => path,
            };
            let path = path.trim_start_matches('/');
            if path.is_empty() || path.split('/').any(|part| part == "..") {
                return Err("not a usable artifact path".to_owned());
            }
            return Ok(format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", self.base));
        }
        match uri.split_once("://").map(|(scheme, _)| scheme) {
            Some("s3" | "gs" | "http" | "https") => Ok(uri.to_owned()),
            Some("wasbs" | "abfss") => Err("Azure Blob through MLflow's wasbs/abfss URIs is not read by Hone; \
                 serve the artifacts through the tracking server (mlflow server --serve-artifacts)"
                .to_owned()),
            _ => Err("pods cannot read this location (a path on the tracking server's disk?); run the server with \
                 --serve-artifacts, or keep artifacts in s3:// or gs://"
                .to_owned()),
        }
    }

    /// Registers `export` as a model version (creating the registered model
    /// when missing) and returns its version. A version already carrying
    /// the same [`tags::MODEL_VERSION_UID`] is returned instead of a second.
    pub async fn register(&self, export: &Export) -> Result<String, RegistryError> {
        let name = export.registered_model.as_str();
        match self.call("registered-models/create", &[], Some(json!({"name": name}))).await {
            Ok(_) => {}
            Err(RegistryError::Refused(text)) if text.contains("RESOURCE_ALREADY_EXISTS") => {}
            Err(other) => return Err(other),
        }
        let uid = export.tags.iter().find(|(k, _)| k == tags::MODEL_VERSION_UID).map(|(_, v)| v.as_str());
        if let Some(uid) = uid
            && let Some(version) = self.version_tagged(name, uid).await?
        {
            return Ok(version);
        }
        let tag_list: Vec<Value> = export.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let mut body = json!({
            "name": name,
            "source": export.source,
            "description": export.description,
            "tags": tag_list,
        });
        if let Some(run_id) = &export.run_id {
            body["run_id"] = json!(run_id);
        }
        let created = self.call("model-versions/create", &[], Some(body)).await?;
        created["model_version"]["version"].as_str().map(str::to_owned).ok_or_else(|| {
            RegistryError::Refused(format!("{name}: model-versions/create answered no version"))
        })
    }

    /// The version of `name` tagged with `uid`, if any.
    async fn version_tagged(&self, name: &str, uid: &str) -> Result<Option<String>, RegistryError> {
        let quote = |s: &str| s.replace('\'', "");
        let filter =
            format!("name = '{}' and tags.`{}` = '{}'", quote(name), tags::MODEL_VERSION_UID, quote(uid));
        let found =
            self.call("model-versions/search", &[("filter", &filter), ("max_results", "10")], None).await?;
        Ok(found["model_versions"]
            .as_array()
            .and_then(|versions| versions.iter().find_map(|v| v["version"].as_str()))
            .map(str::to_owned))
    }

    /// Points `alias` of `name` at `version`.
    pub async fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<(), RegistryError> {
        self.call(
            "registered-models/alias",
            &[],
            Some(json!({"name": name, "alias": alias, "version": version})),
        )
        .await
        .map(|_| ())
    }
}

/// Whether a refused alias lookup says the alias does not exist.
fn missing_alias(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    text.contains("INVALID_PARAMETER_VALUE") && lower.contains("alias") && lower.contains("not found")
}

/// The model file of `format` in `folder` (or `folder` itself when it names a model file).
pub fn model_file(folder: &str, format: ArtifactFormat) -> String {
    let trimmed = folder.trim_end_matches('/');
    if trimmed.ends_with(".pt") || trimmed.ends_with(".onnx") {
        return trimmed.to_owned();
    }
    format!("{trimmed}/{}", format.file_name())
}

/// The folder holding a model file (its `source` in MLflow).
pub fn folder_of(uri: &str) -> String {
    uri.trim().rsplit_once('/').map_or_else(|| uri.trim().to_owned(), |(folder, _)| folder.to_owned())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    shorten(&text, 300)
}

fn shorten(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        Registry::new(&RegistryConfig { uri: "http://mlflow:5000/".into(), credentials: Credentials::None })
            .unwrap()
    }

    #[test]
    fn proxied_artifacts_are_read_through_the_tracking_server() {
        let r = registry();
        assert_eq!(
            r.readable("mlflow-artifacts:/0/models/m-1/artifacts").unwrap(),
            "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/0/models/m-1/artifacts"
        );
        assert_eq!(
            r.readable("mlflow-artifacts://other:5000/1/abc/artifacts/model").unwrap(),
            "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model"
        );
        assert_eq!(
            r.readable("s3://bucket/mlruns/1/abc/artifacts/model").unwrap(),
            "s3://bucket/mlruns/1/abc/artifacts/model"
        );
        assert!(r.readable("mlflow-artifacts:/0/../../etc").is_err());
        assert!(r.readable("/mlruns/0/abc/artifacts/model").unwrap_err().contains("--serve-artifacts"));
        assert!(r.readable("file:///mlruns/0").is_err());
    }

    #[test]
    fn the_model_file_is_the_formats_file_in_the_folder() {
        assert_eq!(model_file("s3://b/run/", ArtifactFormat::Onnx), "s3://b/run/model.onnx");
        assert_eq!(model_file("s3://b/run", ArtifactFormat::TorchScript), "s3://b/run/model.pt");
        assert_eq!(model_file("s3://b/run/custom.onnx", ArtifactFormat::Onnx), "s3://b/run/custom.onnx");
        assert_eq!(folder_of("s3://b/run/model.pt"), "s3://b/run");
    }

    #[test]
    fn credentials_are_never_printed() {
        let config = RegistryConfig {
            uri: "http://m".into(),
            credentials: Credentials::Basic { username: "u".into(), password: "hunter2".into() },
        };
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Token("tok-123".into())).contains("tok-123"));
    }

    #[test]
    fn a_missing_alias_is_told_from_other_refusals() {
        assert!(missing_alias(
            "x/registered-models/alias: 400 Bad Request INVALID_PARAMETER_VALUE Registered model alias c not found."
        ));
        assert!(!missing_alias(
            "x/registered-models/alias: 400 Bad Request INVALID_PARAMETER_VALUE bad name"
        ));
        assert!(!missing_alias("x: 400 Bad Request BAD_REQUEST alias not found"));
    }

    #[test]
    fn only_unavailability_and_credentials_are_retried() {
        assert!(RegistryError::Unavailable(String::new()).retryable());
        assert!(RegistryError::Unauthorized(String::new()).retryable());
        assert!(!RegistryError::NotFound(String::new()).retryable());
        assert!(!RegistryError::Refused(String::new()).retryable());
    }
}

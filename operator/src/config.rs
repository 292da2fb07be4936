//! Operator configuration: flags with `HONE_*` environment fallbacks.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use hone_crds::{SecretRef, StorageLocation};
use sha2::{Digest, Sha256};

use crate::placement::Placement;

/// Default trainer image (what `hack/images/build.sh` builds).
pub const DEFAULT_TRAINER_IMAGE: &str = "hone.local/trainer:dev";
/// Default predictor image (what `hack/images/build.sh` builds).
pub const DEFAULT_PREDICTOR_IMAGE: &str = "hone.local/predictor:dev";
/// Default router image (what `hack/images/build.sh` builds).
pub const DEFAULT_ROUTER_IMAGE: &str = "hone.local/router:dev";

/// How logs are written.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for log pipelines).
    #[default]
    Json,
    /// Human-readable lines (for a terminal).
    Text,
}

/// `hone-operator run` flags.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HONE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespaces to watch (comma-separated); empty: all namespaces.
    #[arg(long = "namespaces", env = "HONE_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Trainer image for inspect and training Jobs that name none.
    #[arg(long, env = "HONE_TRAINER_IMAGE", default_value = DEFAULT_TRAINER_IMAGE)]
    pub trainer_image: String,
    /// Predictor image for verify Jobs and InferenceServices that name none.
    #[arg(long, env = "HONE_PREDICTOR_IMAGE", default_value = DEFAULT_PREDICTOR_IMAGE)]
    pub predictor_image: String,
    /// Router image of InferenceServices with the Router provider.
    #[arg(long, env = "HONE_ROUTER_IMAGE", default_value = DEFAULT_ROUTER_IMAGE)]
    pub router_image: String,
    /// Output location for TrainingJobs that name none (e.g. `s3://hone-models/`).
    #[arg(long, env = "HONE_DEFAULT_OUTPUT")]
    pub default_output: Option<String>,
    /// Secret (in the TrainingJob's namespace) with credentials for the default output.
    #[arg(long, env = "HONE_DEFAULT_OUTPUT_SECRET")]
    pub default_output_secret: Option<String>,
    /// Node selector (`key=value`, comma-separated) for the pods Hone creates
    /// when the object sets none (e.g. `hone.dev/node=gpu`).
    #[arg(long, env = "HONE_POD_NODE_SELECTOR", value_delimiter = ',')]
    pub pod_node_selector: Vec<String>,
    /// Tolerations (a JSON list) added to every pod Hone creates.
    #[arg(long, env = "HONE_POD_TOLERATIONS")]
    pub pod_tolerations: Option<String>,
    /// Log format.
    /// Honour the `hone.dev/router-metrics-url` annotation: the operator then
    /// fetches whatever http:// URL an InferenceService's author names. For
    /// tests and meshes you control; off by default (and in the chart).
    #[arg(long, env = "HONE_ALLOW_ROUTER_METRICS_URL")]
    pub allow_router_metrics_url: bool,
    /// Secret (at least 32 characters) the signing key of each
    /// InferenceService's router request ids is derived from. Unset: a random
    /// one per operator process, so ids issued before a restart can no longer
    /// carry feedback; the chart sets one from a Secret it keeps.
    #[arg(long, env = "HONE_FEEDBACK_SECRET", hide_env_values = true)]
    pub feedback_secret: Option<String>,
    /// The operator's MLflow tracking server (its Model Registry): resolves
    /// `models:/` artifact URIs, receives the ModelVersions of TrainingJobs
    /// with `tracking.mlflow`, and holds InferenceServices' aliases. Unset:
    /// none of these happen (and the objects say so).
    #[arg(long, env = "HONE_MLFLOW_URI")]
    pub mlflow_uri: Option<String>,
    /// Bearer token for the MLflow registry (the chart reads it from a Secret).
    #[arg(long, env = "HONE_MLFLOW_TOKEN", hide_env_values = true)]
    pub mlflow_token: Option<String>,
    /// Basic-auth user for the MLflow registry (with HONE_MLFLOW_PASSWORD).
    #[arg(long, env = "HONE_MLFLOW_USERNAME")]
    pub mlflow_username: Option<String>,
    /// Basic-auth password for the MLflow registry.
    #[arg(long, env = "HONE_MLFLOW_PASSWORD", hide_env_values = true)]
    pub mlflow_password: Option<String>,
    /// Read every training pod's live figures from this `host:port` instead
    /// of the pod's own IP and port 9091: for clusters whose pods the
    /// operator cannot reach (KWOK in the tests). Unset in the chart.
    #[arg(long, env = "HONE_TRAINER_METRICS_ADDRESS")]
    pub trainer_metrics_address: Option<std::net::SocketAddr>,
    /// Read every predictor pod's `/metrics` (canary analysis under the
    /// GatewayAPI provider) at this address instead of the pod's own IP and
    /// port 8080: for clusters whose pods the operator cannot reach (KWOK in
    /// the tests). Unset in the chart.
    #[arg(long, env = "HONE_PREDICTOR_METRICS_ADDRESS")]
    pub predictor_metrics_address: Option<std::net::SocketAddr>,
    /// Seconds between two reads of a running TrainingJob's live figures
    /// into its status (1 to 3600).
    #[arg(long, env = "HONE_TRAINER_PROGRESS_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub trainer_progress_seconds: u64,
    #[arg(long, env = "HONE_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax.
    #[arg(long, env = "HONE_LOG", default_value = "info,kube=warn,tower=warn,hyper=warn")]
    pub log_filter: String,
    /// Leader election.
    #[command(flatten)]
    pub leader: crate::leader::LeaderArgs,
}

/// What the controllers need from the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorConfig {
    /// Image of inspect and training Jobs that name none.
    pub trainer_image: String,
    /// Image of verify Jobs and predictors that name none.
    pub predictor_image: String,
    /// Image of the router Deployments.
    pub router_image: String,
    /// Output location of TrainingJobs that name none.
    pub default_output: Option<StorageLocation>,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Default node selector and tolerations of the pods Hone creates.
    pub placement: Placement,
    /// Whether `hone.dev/router-metrics-url` is honoured (see `RunArgs`).
    pub allow_router_metrics_url: bool,
    /// What the routers' feedback keys are derived from.
    pub feedback_secret: FeedbackSecret,
    /// The operator's MLflow Model Registry, if any.
    pub mlflow: Option<crate::mlflow::RegistryConfig>,
    /// Where training pods' live figures are read instead of the pods (see `RunArgs`).
    pub trainer_metrics_address: Option<std::net::SocketAddr>,
    /// How often a running TrainingJob's live figures are read.
    pub trainer_progress_interval: std::time::Duration,
    /// Where predictor pods' metrics are read instead of the pods (see `RunArgs`).
    pub predictor_metrics_address: Option<std::net::SocketAddr>,
}

/// Shortest `--feedback-secret` accepted.
pub const MIN_FEEDBACK_SECRET_LEN: usize = 32;

/// The secret the routers' feedback keys are derived from (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct FeedbackSecret([u8; 32]);

impl std::fmt::Debug for FeedbackSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedbackSecret(..)")
    }
}

impl FeedbackSecret {
    /// From `--feedback-secret`: hashed, so any text of at least
    /// [`MIN_FEEDBACK_SECRET_LEN`] characters will do.
    pub fn from_text(text: &str) -> Result<Self, String> {
        if text.trim().len() < MIN_FEEDBACK_SECRET_LEN {
            return Err(format!(
                "--feedback-secret (HONE_FEEDBACK_SECRET) has {} characters; give at least {MIN_FEEDBACK_SECRET_LEN}",
                text.trim().len()
            ));
        }
        Ok(Self(Sha256::digest(text.trim().as_bytes()).into()))
    }

    /// One random secret per process (every call answers the same).
    pub fn per_process() -> Self {
        static SECRET: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        Self(*SECRET.get_or_init(|| {
            let mut bytes = [0u8; 32];
            // Without an entropy source the process cannot keep secrets at
            // all; a hash of the time and pid is the last resort.
            if getrandom::fill(&mut bytes).is_err() {
                let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
                bytes = Sha256::digest(seed.as_bytes()).into();
            }
            bytes
        }))
    }

    /// The key (64 hex digits) that signs the request ids of the router of
    /// the InferenceService `namespace/name` with `uid`: a new object of the
    /// same name gets another key, so its predecessor's ids carry no feedback.
    pub fn router_key(&self, namespace: &str, name: &str, uid: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(b"hone-router-feedback-key/v1\0");
        hash.update(self.0);
        for part in [namespace, name, uid] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hex::encode(hash.finalize())
    }
}

impl OperatorConfig {
    /// The controller configuration from the command line; a placement flag
    /// or a feedback secret that does not parse is an error.
    pub fn from_args(args: &RunArgs) -> Result<Self, String> {
        let default_output =
            args.default_output.as_deref().filter(|uri| !uri.trim().is_empty()).map(|uri| StorageLocation {
                uri: uri.trim().to_owned(),
                secret_ref: args
                    .default_output_secret
                    .as_deref()
                    .filter(|name| !name.trim().is_empty())
                    .map(|name| SecretRef { name: name.trim().to_owned() }),
            });
        let namespaces =
            args.namespaces.iter().map(|ns| ns.trim().to_owned()).filter(|ns| !ns.is_empty()).collect();
        let placement = Placement::parse(&args.pod_node_selector, args.pod_tolerations.as_deref())
            .map_err(|e| e.to_string())?;
        let feedback_secret = match args.feedback_secret.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(text) => FeedbackSecret::from_text(text)?,
            None => FeedbackSecret::per_process(),
        };
        let mlflow = mlflow_config(args)?;
        Ok(Self {
            mlflow,
            trainer_image: args.trainer_image.clone(),
            predictor_image: args.predictor_image.clone(),
            router_image: args.router_image.clone(),
            default_output,
            namespaces,
            placement,
            allow_router_metrics_url: args.allow_router_metrics_url,
            feedback_secret,
            trainer_metrics_address: args.trainer_metrics_address,
            trainer_progress_interval: std::time::Duration::from_secs(args.trainer_progress_seconds),
            predictor_metrics_address: args.predictor_metrics_address,
        })
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            trainer_image: DEFAULT_TRAINER_IMAGE.to_owned(),
            predictor_image: DEFAULT_PREDICTOR_IMAGE.to_owned(),
            router_image: DEFAULT_ROUTER_IMAGE.to_owned(),
            default_output: None,
            namespaces: Vec::new(),
            placement: Placement::default(),
            allow_router_metrics_url: false,
            feedback_secret: FeedbackSecret::per_process(),
            mlflow: None,
            trainer_metrics_address: None,
            trainer_progress_interval: crate::trainingjob::live::INTERVAL,
            predictor_metrics_address: None,
        }
    }
}

/// The MLflow registry from `--mlflow-*`: an http(s) URI, and a token or a
/// user with a password (not both, not half of a pair).
fn mlflow_config(args: &RunArgs) -> Result<Option<crate::mlflow::RegistryConfig>, String> {
    use crate::mlflow::{Credentials, RegistryConfig};
    let set = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let Some(uri) = set(&args.mlflow_uri) else { return Ok(None) };
    let parsed = url::Url::parse(&uri).map_err(|e| format!("--mlflow-uri (HONE_MLFLOW_URI) {uri:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("--mlflow-uri (HONE_MLFLOW_URI) {uri:?}: give an http:// or https:// URL"));
    }
    let credentials = match (set(&args.mlflow_token), set(&args.mlflow_username), set(&args.mlflow_password))
    {
        (None, None, None) => Credentials::None,
        (Some(token), None, None) => Credentials::Token(token),
        (None, Some(username), Some(password)) => Credentials::Basic { username, password },
        (Some(_), _, _) => {
            return Err("give HONE_MLFLOW_TOKEN or HONE_MLFLOW_USERNAME with HONE_MLFLOW_PASSWORD, not both"
                .to_owned());
        }
        _ => return Err("HONE_MLFLOW_USERNAME and HONE_MLFLOW_PASSWORD go together".to_owned()),
    };
    Ok(Some(RegistryConfig { uri, credentials }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn flags_build_the_config() {
        let cli = TestCli::try_parse_from([
            "hone-operator",
            "--namespaces",
            "ml, team-a,,",
            "--trainer-image",
            "registry.example/trainer:1",
            "--router-image",
            "registry.example/router:1",
            "--default-output",
            "s3://models/",
            "--default-output-secret",
            "s3-creds",
            "--pod-node-selector",
            "hone.dev/node=real",
            "--pod-tolerations",
            r#"[{"key":"hone.dev/node","operator":"Exists","effect":"NoSchedule"}]"#,
        ])
        .unwrap();
        let config = OperatorConfig::from_args(&cli.run).unwrap();
        assert_eq!(config.namespaces, vec!["ml".to_owned(), "team-a".to_owned()]);
        assert_eq!(config.trainer_image, "registry.example/trainer:1");
        assert_eq!(config.predictor_image, DEFAULT_PREDICTOR_IMAGE);
        assert_eq!(config.router_image, "registry.example/router:1");
        let output = config.default_output.unwrap();
        assert_eq!(output.uri, "s3://models/");
        assert_eq!(output.secret_ref.unwrap().name, "s3-creds");
        assert_eq!(config.placement.node_selector["hone.dev/node"], "real");
        assert_eq!(config.placement.tolerations.len(), 1);
    }

    #[test]
    fn defaults_watch_everything_with_no_default_output() {
        let cli = TestCli::try_parse_from(["hone-operator"]).unwrap();
        let config = OperatorConfig::from_args(&cli.run).unwrap();
        assert!(config.namespaces.is_empty());
        assert_eq!(config.default_output, None);
        assert_eq!(config.router_image, DEFAULT_ROUTER_IMAGE);
        assert_eq!(cli.run.log_format, LogFormat::Json);
    }

    #[test]
    fn feedback_keys_are_per_object_and_stable_for_a_secret() {
        let secret = FeedbackSecret::from_text(&"s".repeat(40)).unwrap();
        let key = secret.router_key("ml", "digits", "uid-1");
        assert_eq!(key.len(), 64);
        assert_eq!(
            key,
            FeedbackSecret::from_text(&"s".repeat(40)).unwrap().router_key("ml", "digits", "uid-1")
        );
        assert_ne!(key, secret.router_key("ml", "digits", "uid-2"), "a new object gets a new key");
        assert_ne!(key, secret.router_key("ml", "digit", "suid-1"), "parts are length-delimited");
        assert_ne!(
            key,
            FeedbackSecret::from_text(&"t".repeat(40)).unwrap().router_key("ml", "digits", "uid-1")
        );
        assert_eq!(FeedbackSecret::per_process(), FeedbackSecret::per_process());
        assert!(!format!("{secret:?}").contains('s'.to_string().repeat(3).as_str()), "never printed");
        let short = FeedbackSecret::from_text("too short").unwrap_err();
        assert!(short.contains("at least 32"), "{short}");
        let cli = TestCli::try_parse_from(["hone-operator", "--feedback-secret", "short"]).unwrap();
        assert!(OperatorConfig::from_args(&cli.run).is_err());
    }
}

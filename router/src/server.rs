//! The router's server: its state (the routing table, the HTTP client, the
//! metrics, the body budget, the mirrors, the feedback seen-set), its two
//! listeners, and the config watcher.
//!
//! The client port forwards everything but the router's own health and
//! `POST /feedback`; the admin port serves `/metrics` and `/router/config`,
//! which clients must not reach (the router's Service exposes only the
//! client port).
//!
//! A reload swaps an `Arc` of the routing table: requests in flight finish on
//! the table they started with, so a change drops nothing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hone_crds::router::feedback as feedback_api;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::args::RouterArgs;
use crate::balance::Balancer;
use crate::body::{BodyLimits, Budget};
use crate::config::{RouterConfig, RouterConfigExt};
use crate::feedback::{self, Feedback, SEEN_CAPACITY};
use crate::metrics::{ReloadResult, RouterMetrics, VariantLabel};
use crate::mirror::{self, MirrorLimits, MirrorRoute, Mirrors};
use crate::predictions::Predictions;
use crate::reject::{error, quote};
use crate::token::FeedbackKey;
use crate::{http, proxy};

/// Why the router cannot run.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The config file cannot be read.
    #[error("reading router config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is invalid.
    #[error("invalid router config {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--config-map` is set but no Kubernetes API client could be made.
    #[error("{0}")]
    Kubernetes(String),
}

/// One config and what is derived from it.
#[derive(Debug)]
pub struct Table {
    /// The config.
    pub config: RouterConfig,
    /// Its balancer.
    pub balancer: Balancer,
    /// The mirror of each backend that is a mirror source, by backend index.
    pub mirrors: Vec<Option<MirrorRoute>>,
    /// The key that signs request ids, when feedback is enabled.
    pub feedback_key: Option<FeedbackKey>,
}

impl Table {
    /// The table of a validated config (an invalid feedback key, which
    /// validation refuses, would sign nothing).
    pub fn new(config: RouterConfig) -> Self {
        let feedback_key = config.feedback_key.as_deref().and_then(|k| FeedbackKey::from_hex(k).ok());
        Self { balancer: Balancer::new(&config), mirrors: mirror::routes(&config), feedback_key, config }
    }
}

/// Shared router state.
pub struct RouterState {
    table: RwLock<Arc<Table>>,
    pub(crate) client: Client<HttpConnector, axum::body::Body>,
    pub(crate) metrics: RouterMetrics,
    registry: Registry,
    pub(crate) timeout: Duration,
    pub(crate) body_limits: BodyLimits,
    pub(crate) budget: Budget,
    pub(crate) predictions: Arc<Predictions>,
    pub(crate) mirrors: Mirrors,
    pub(crate) feedback: Feedback,
}

impl RouterState {
    /// State routing by `config` with the limits of `args`.
    pub fn new(config: RouterConfig, args: &RouterArgs) -> Self {
        let (metrics, registry) = RouterMetrics::new();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        let predictions = Arc::new(Predictions::new(&metrics));
        let limits = MirrorLimits {
            max_inflight: args.max_inflight_mirrors,
            max_inflight_bytes: args.max_inflight_mirror_bytes,
            timeout: Duration::from_millis(args.request_timeout_ms),
        };
        let mirrors = Mirrors::new(client.clone(), limits, metrics.clone(), predictions.clone());
        let state = Self {
            table: RwLock::new(Arc::new(Table::new(config.clone()))),
            client,
            feedback: Feedback::new(&metrics, SEEN_CAPACITY),
            predictions,
            mirrors,
            metrics,
            registry,
            timeout: Duration::from_millis(args.request_timeout_ms),
            body_limits: BodyLimits {
                max_bytes: args.max_body_bytes,
                read_timeout: Duration::from_millis(args.body_read_timeout_ms),
            },
            budget: Budget::new(args.max_inflight_body_bytes),
        };
        state.publish_weights(&config);
        state
    }

    /// The table new requests use.
    pub fn current(&self) -> Arc<Table> {
        // A poisoned lock still holds a complete Arc; keep routing with it.
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Routes new requests by `config` from now on.
    pub fn replace(&self, config: RouterConfig) {
        self.publish_weights(&config);
        let table = Arc::new(Table::new(config));
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    fn publish_weights(&self, config: &RouterConfig) {
        self.metrics.weight.clear();
        for v in &config.variants {
            self.metrics
                .weight
                .get_or_create(&VariantLabel { variant: v.name.clone() })
                .set(i64::from(v.weight));
        }
    }
}

/// Reads and validates a config file.
pub fn load_config(path: &Path) -> Result<(RouterConfig, String), RouterError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| RouterError::Read { path: path.into(), source })?;
    let config =
        RouterConfig::parse(&text).map_err(|reason| RouterError::Invalid { path: path.into(), reason })?;
    Ok((config, text))
}

/// Runs the router, clients on `listener` and admin on `admin`, until
/// `shutdown` resolves; then in-flight requests get the shutdown grace.
pub async fn run(
    args: RouterArgs,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    let (config, text) = load_config(&args.config)?;
    tracing::info!(variants = config.variants.len(), "router config loaded");
    let state = Arc::new(RouterState::new(config, &args));
    let watcher = match &args.config_map {
        // In a cluster: the ConfigMap through the API, never the (older) file again.
        Some(reference) => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| RouterError::Kubernetes(format!("connecting to the Kubernetes API: {e}")))?;
            tracing::info!(configmap = %format!("{}/{}", reference.namespace, reference.name), "following the router ConfigMap through the API");
            let state = state.clone();
            let mut applied = text;
            tokio::spawn(crate::watch::watch_config_map(client, reference.clone(), move |new: &str| {
                if new != applied {
                    apply_text(&state, new, "api");
                    applied = new.to_owned();
                }
            }))
        }
        None => tokio::spawn(watch_config(
            state.clone(),
            args.config.clone(),
            text,
            Duration::from_millis(args.reload_ms.max(10)),
        )),
    };
    let header_timeout = Duration::from_millis(args.header_read_timeout_ms);
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which only happens on the way out.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let servers = async {
        tokio::join!(
            http::serve(listener, client_app(state.clone()), header_timeout, until_stopped(stopped.clone())),
            http::serve(admin, admin_app(state.clone()), header_timeout, until_stopped(stopped)),
        )
    };
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        _ = servers => {}
        () = signal => {}
    }
    watcher.abort();
    Ok(())
}

/// The client port: the router's own health and feedback, everything else forwarded.
pub fn client_app(state: Arc<RouterState>) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { axum::Json(serde_json::json!({ "live": true })) }))
        .route("/v2/health/ready", get(|| async { axum::Json(serde_json::json!({ "ready": true })) }))
        .route(feedback_api::PATH, post(feedback::receive).fallback(feedback::wrong_method))
        .fallback(proxy::forward)
        .with_state(state)
}

/// The admin port: metrics, the config in use, and health.
pub fn admin_app(state: Arc<RouterState>) -> Router {
    Router::new()
        .route("/metrics", get(router_metrics))
        .route("/router/config", get(current_config))
        .route("/v2/health/live", get(|| async { axum::Json(serde_json::json!({ "live": true })) }))
        .fallback(|uri: Uri| async move {
            let path = quote(uri.path().as_bytes());
            error(StatusCode::NOT_FOUND, "not_found", format!("no admin endpoint {path}"))
        })
        .with_state(state)
}

async fn router_metrics(State(state): State<Arc<RouterState>>) -> Response {
    match crate::metrics::render(&state.registry) {
        Ok(text) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// What `/router/config` shows for a feedback key: whether there is one, never the key.
pub const REDACTED: &str = "redacted";

async fn current_config(State(state): State<Arc<RouterState>>) -> axum::Json<RouterConfig> {
    let mut config = state.current().config.clone();
    if config.feedback_key.is_some() {
        config.feedback_key = Some(REDACTED.to_owned());
    }
    axum::Json(config)
}

/// Polls the file's modification time and size (a ConfigMap update swaps a
/// symlink, which changes both as seen through it) and applies valid changes;
/// an invalid file keeps the last good config.
async fn watch_config(state: Arc<RouterState>, path: PathBuf, mut applied: String, every: Duration) {
    let stamp = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
    };
    let mut seen = stamp(&path);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match std::fs::read_to_string(&path) {
            Ok(text) if text == applied => {}
            Ok(text) => {
                apply_text(&state, &text, "file");
                applied = text;
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "keeping the previous router config");
                state.metrics.reloads.get_or_create(&ReloadResult { result: "error" }).inc();
            }
        }
    }
}

/// Applies a new config text when it is valid; an invalid one keeps the
/// last good config. Counted in the reload metric either way.
fn apply_text(state: &RouterState, text: &str, source: &'static str) {
    match RouterConfig::parse(text) {
        Ok(config) => {
            tracing::info!(source, variants = ?config.variants.iter().map(|v| (&v.name, v.weight)).collect::<Vec<_>>(), "router config reloaded");
            state.replace(config);
            state.metrics.reloads.get_or_create(&ReloadResult { result: "success" }).inc();
        }
        Err(reason) => {
            tracing::warn!(source, %reason, "invalid router config; keeping the previous one");
            state.metrics.reloads.get_or_create(&ReloadResult { result: "error" }).inc();
        }
    }
}

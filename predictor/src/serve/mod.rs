//! `hone-predictor serve`: answer health probes at once (live, not ready),
//! fetch and check the model (the digests of model.pt and, when pinned,
//! model.json), load and warm it up on a blocking thread, then turn ready. A
//! slow download never fails liveness; a failed one, a digest mismatch, a
//! failed load or a dead inference thread ends the process with an error
//! (never ready).

mod admission;
mod auth;
mod body;
mod http;
mod ops;
mod predict;
mod state;
mod ui;
mod v2;

pub mod openapi;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use admission::{BodyBudget, DecodePool};
pub use auth::{Auth, RateLimiter};
pub use body::{BodyLimits, Media, ReadBody, media, multipart_files, read_body};
pub use state::{AppState, Health, Limits};

use crate::config::ServeArgs;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{self, LoadError};
use crate::runtime::{self, RuntimeConfig};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model could not be fetched, verified or loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A flag has a value that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading the API keys failed.
    #[error("reading API keys from {path}: {source}")]
    ApiKeys {
        /// The file or folder.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    /// The inference thread died (a panic); the process must restart.
    #[error("the inference thread died: {0}")]
    InferenceThread(String),
}

/// Serves the model of `args` on `listener` until `shutdown` resolves, then
/// finishes in-flight requests (up to the grace period) and returns.
pub async fn run(
    args: ServeArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let device = runtime::parse_device(&args.device).map_err(ServeError::Config)?;
    let threads = usize::try_from(args.torch_threads).unwrap_or(0);
    let runtime = RuntimeConfig::new(args.format, device, threads, args.onnxruntime.clone());
    if let Some(fault) = &args.fault_injection {
        crate::batcher::Fault::parse(fault).map_err(ServeError::Config)?;
        tracing::warn!(%fault, "FAULT INJECTION is on: this server will fail on purpose");
    }
    let auth = match &args.api_keys_file {
        Some(path) => {
            let auth = Auth::from_path(path, args.rate_limit_rps, args.rate_limit_burst)
                .map_err(|source| ServeError::ApiKeys { path: path.display().to_string(), source })?;
            if auth.key_count() == 0 {
                return Err(ServeError::Config(format!("{} holds no API key", path.display())));
            }
            Some(auth)
        }
        None => None,
    };
    // Health probes are answered from the start: live while the model is
    // fetched (however long that takes), not ready until it can answer.
    let (routes, current_routes) = tokio::sync::watch::channel(loading_router());
    let (stop_server, server_stopped) = tokio::sync::watch::channel(false);
    let header_read_timeout = Duration::from_millis(args.header_read_timeout_ms);
    tracing::info!(addr = ?listener.local_addr().ok(), "listening");
    let stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let (admin_routes, current_admin_routes) = tokio::sync::watch::channel(loading_router());
    let admin = match args.admin_addr {
        Some(addr) => {
            let admin = TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Config(format!("binding the admin address {addr}: {e}")))?;
            tracing::info!(addr = ?admin.local_addr().ok(), "admin port listening");
            let until = stopped(server_stopped.clone());
            Some(tokio::spawn(http::serve(admin, current_admin_routes, header_read_timeout, until)))
        }
        None => None,
    };
    let server =
        tokio::spawn(http::serve(listener, current_routes, header_read_timeout, stopped(server_stopped)));
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    tokio::pin!(shutdown);

    let fetched = tokio::select! {
        fetched = model::fetch_model(&args.model, args.format, model::ExpectedDigests {
            module: args.digest.as_deref(),
            card: args.card_digest.as_deref(),
        }) => fetched,
        () = &mut shutdown => {
            tracing::info!("shutting down before the model was fetched");
            return finish(&stop_server, server, grace).await;
        }
    };
    let files = match fetched {
        Ok(files) => files,
        Err(e) => {
            let _ = finish(&stop_server, server, grace).await;
            return Err(e.into());
        }
    };
    let version = args.model_version.clone().unwrap_or_else(|| short_digest(&files.digest));
    tracing::info!(model = %args.model, digest = %files.digest, %version, "model fetched and digest checked");
    let (metrics, registry) = Metrics::new(&args.model_name, &version);
    let key_reload =
        auth.as_ref().zip(args.api_keys_file.clone()).map(|(auth, path)| auth.spawn_reload(path));
    let state = Arc::new(AppState::new(&args, &files, version, metrics, registry, auth));
    let _ = routes.send(router(state.clone(), &args.cors_origins)?);
    let _ = admin_routes.send(admin_router(state.clone()));

    let failure = Arc::new(tokio::sync::Notify::new());
    let load_error = Arc::new(std::sync::Mutex::new(None::<LoadError>));
    {
        let (state, failure, load_error) = (state.clone(), failure.clone(), load_error.clone());
        let threads = args.torch_threads;
        tokio::task::spawn_blocking(move || {
            if threads > 0 {
                tch::set_num_threads(threads);
            }
            // `files` (the model's bytes) is dropped when this closure ends:
            // after loading, the module is the only copy in memory.
            if let Err(e) = state.load(&files.module, &runtime) {
                tracing::error!(error = %e, "cannot serve the model");
                *load_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                failure.notify_one();
            }
        });
    }
    tokio::select! {
        () = &mut shutdown => tracing::info!("shutting down: finishing in-flight requests"),
        () = failure.notified() => {}
        () = state.health.failed() => {}
    }
    state.stop_ready();
    let served = finish(&stop_server, server, grace).await;
    if let Some(admin) = admin {
        admin.abort();
    }
    if let Some(task) = key_reload {
        task.abort();
    }
    state.close();
    if let Some(reason) = state.health.failure() {
        return Err(ServeError::InferenceThread(reason.to_owned()));
    }
    match load_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e.into()),
        None => served,
    }
}

/// The admin port: metrics and drift for Prometheus and operators, with no
/// key (the port is not in the Service clients use), and health.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/drift", get(ops::drift))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .fallback(|uri: axum::http::Uri| async move { ApiError::NotFound(uri.path().to_owned()) })
        .layer(axum::middleware::from_fn(ops::request_id))
        .with_state(state)
}

/// Stops accepting connections and waits up to `grace` for the open ones.
async fn finish(
    stop: &tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: Duration,
) -> Result<(), ServeError> {
    let _ = stop.send(true);
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(ServeError::Http(e)),
        Ok(Err(e)) => Err(ServeError::Http(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!("grace period over; exiting with requests still in flight");
            Ok(())
        }
    }
}

/// What answers while the model is being fetched: live, not ready, and 503
/// for everything else.
fn loading_router() -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { axum::Json(serde_json::json!({ "live": true })) }))
        .fallback(|| async { ApiError::NotReady })
        .layer(axum::middleware::from_fn(ops::request_id))
}

/// The first 12 hex digits of a `sha256:` digest.
fn short_digest(digest: &str) -> String {
    digest.trim_start_matches("sha256:").chars().take(12).collect()
}

/// Every route, the auth layer on the model routes, metrics and CORS around all.
pub fn router(state: Arc<AppState>, cors_origins: &[String]) -> Result<Router, ServeError> {
    let protected = Router::new()
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(v2::model_metadata_versioned))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(v2::model_ready_versioned))
        .route("/v2/models/{name}/infer", post(v2::infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(v2::infer_versioned))
        .route("/predict", post(predict::predict))
        .route("/predict/batch", post(predict::predict_batch))
        .route("/drift", get(ops::drift))
        .route("/metrics", get(ops::metrics))
        .route("/ui/model", get(ui::model))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), ops::require_api_key));
    let public = Router::new()
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/docs", get(ops::docs))
        .route("/docs/openapi.json", get(ops::docs))
        .route("/", get(ui::page))
        .route("/ui", get(ui::page))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/style.css", get(ui::style))
        .route("/ui/icon.svg", get(ui::icon));
    let mut app = protected
        .merge(public)
        .fallback(|uri: axum::http::Uri| async move { ApiError::NotFound(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), ops::record_request))
        .layer(axum::middleware::from_fn(ops::request_id))
        .with_state(state);
    if !cors_origins.is_empty() {
        app = app.layer(cors(cors_origins)?);
    }
    Ok(app)
}

fn cors(origins: &[String]) -> Result<CorsLayer, ServeError> {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers(Any);
    if origins.iter().any(|o| o == "*") {
        return Ok(layer.allow_origin(Any));
    }
    let origins = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim())
                .map_err(|_| ServeError::Config(format!("invalid CORS origin {o:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(layer.allow_origin(AllowOrigin::list(origins)))
}

/// Resolves on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // The SIGTERM handler is installed now, not on the future's first poll:
    // a SIGTERM that arrives while the model is still loading must still end
    // in a graceful shutdown instead of the default action (killing us).
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = term => {}
        }
    }
}

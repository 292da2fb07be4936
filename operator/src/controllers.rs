//! Wires the controllers to the apiserver: one Controller per watched
//! namespace (or one for all), each stopping gracefully on `shutdown`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::context::Context;
use crate::metrics::Metrics;

/// The scope of one set of watches: a namespace, or the whole cluster.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The key of `obj` in the per-object retry backoff.
pub fn backoff_key<K: kube::Resource>(controller: &str, obj: &K) -> String {
    format!("{controller}/{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs one reconcile of `obj`, timed and counted under `controller`; a
/// success resets the object's backoff.
pub async fn instrumented<K, E>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    category: fn(&E) -> &'static str,
    reconcile: impl Future<Output = Result<Action, E>>,
) -> Result<Action, E>
where
    K: kube::Resource,
{
    let _timer = ctx.metrics.start(controller);
    let result = reconcile.await;
    match &result {
        Ok(_) => {
            ctx.metrics.record_success(controller);
            ctx.backoff.succeeded(&backoff_key(controller, obj));
        }
        Err(error) => ctx.metrics.record_error(controller, category(error)),
    }
    result
}

/// The error policy of every controller: log, then retry after the object's
/// next backoff delay (jittered, at least the apiserver's Retry-After). A
/// write refused for a stale resourceVersion (category `conflict`) retries
/// soon without growing the backoff: the watch brings the fresh object.
pub fn retry_later<K: kube::Resource>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    category: &'static str,
    error: &(dyn std::error::Error + 'static),
) -> Action {
    let delay: Duration = if category == "conflict" {
        crate::backoff::jitter(crate::backoff::CONFLICT, crate::backoff::random())
    } else {
        ctx.backoff.failed(&backoff_key(controller, obj), crate::backoff::retry_after(error))
    };
    tracing::warn!(
        controller,
        object = %obj.name_any(),
        namespace = obj.namespace().unwrap_or_default(),
        category,
        %error,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// Drives a controller's result stream to its end, logging each result.
pub fn drain_results<S, T, E>(results: S) -> BoxFuture<'static, ()>
where
    S: futures::Stream<Item = Result<T, E>> + Send + 'static,
    T: std::fmt::Debug + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    results
        .for_each(|result| async move {
            match result {
                Ok(reconciled) => tracing::debug!(?reconciled, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not finish"),
            }
        })
        .boxed()
}

/// How often the objects-by-phase gauge is refreshed from a controller's cache.
const PHASE_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The wire name of a status phase (`Unknown` before the first status).
pub fn phase_name<P: serde::Serialize>(phase: Option<&P>) -> String {
    phase
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "Unknown".to_owned())
}

/// Runs `controller` and, beside it, refreshes `hone_operator_objects` for
/// `kind` from its cache; resolves when the controller has shut down.
pub fn with_phase_report<K>(
    controller: BoxFuture<'static, ()>,
    store: Store<K>,
    kind: &'static str,
    scope: Option<&str>,
    metrics: Arc<Metrics>,
    phase: fn(&K) -> String,
) -> BoxFuture<'static, ()>
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let scope = scope.unwrap_or("*").to_owned();
    let report = async move {
        loop {
            tokio::time::sleep(PHASE_REPORT_INTERVAL).await;
            let mut counts: BTreeMap<String, i64> = BTreeMap::new();
            for obj in store.state() {
                *counts.entry(phase(&obj)).or_default() += 1;
            }
            metrics.record_phases(kind, &scope, counts);
        }
    };
    futures::future::select(controller, Box::pin(report)).map(|_| ()).boxed()
}

/// Reconciles at once per controller and scope. Reconciles mostly wait on
/// the apiserver, so a few run side by side; more would only queue there.
pub const CONCURRENCY: u16 = 8;
/// Triggers of one object closer together than this make one reconcile.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// A controller over `store`, reconciling what `triggers` names (see
/// [`crate::caches`]), with bounded concurrency and a debounce.
pub fn controller_for<K>(
    store: Store<K>,
    triggers: futures::stream::BoxStream<'static, ObjectRef<K>>,
) -> Controller<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let none = futures::stream::pending::<Result<K, watcher::Error>>();
    Controller::for_stream(none, store)
        .reconcile_on(triggers)
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY).debounce(DEBOUNCE))
}

/// The four controllers, by kind.
pub const KINDS: [&str; 4] = ["Dataset", "TrainingJob", "ModelVersion", "InferenceService"];

/// Runs every controller until `shutdown` resolves and they have drained.
/// Each scope (a namespace, or the cluster) gets its watches, filled before
/// its controllers start, so no reconcile reads a half-filled cache.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static) {
    let scopes: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    run_kinds(ctx, scopes, &KINDS, shutdown).await;
}

/// Runs the controllers of `kinds` (of [`KINDS`]) over `scopes`, with every
/// watch, until `shutdown` resolves and they have drained (tests run one
/// controller this way).
pub async fn run_kinds(
    ctx: Arc<Context>,
    scopes: Vec<Option<String>>,
    kinds: &[&str],
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let shutdown: futures::future::Shared<BoxFuture<'static, ()>> = shutdown.boxed().shared();
    let gateway_api = gateway_api_installed(&ctx.client).await;
    let wanted: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let mut controllers = Vec::new();
    let mut feeds = Vec::new();
    for scope in &scopes {
        let namespace = scope.as_deref();
        let crate::caches::Scope { caches, triggers, runs, ready } =
            crate::caches::build(&ctx.client, namespace, gateway_api, &ctx.metrics);
        feeds.extend(runs);
        let scoped = Arc::new(ctx.with_caches(caches));
        let shutdown = shutdown.clone();
        let scope_name = namespace.map(str::to_owned);
        let wanted = wanted.clone();
        controllers.push(
            async move {
                ready.await;
                let namespace = scope_name.as_deref();
                tracing::info!(
                    namespace = namespace.unwrap_or("*"),
                    "caches filled; starting the controllers"
                );
                let wants = |kind: &str| wanted.iter().any(|w| w == kind);
                let mut running: Vec<BoxFuture<'static, ()>> = Vec::new();
                if wants("Dataset") {
                    running.push(crate::dataset::controller(
                        scoped.clone(),
                        namespace,
                        triggers.datasets,
                        shutdown.clone(),
                    ));
                }
                if wants("TrainingJob") {
                    running.push(crate::trainingjob::controller(
                        scoped.clone(),
                        namespace,
                        triggers.training_jobs,
                        shutdown.clone(),
                    ));
                }
                if wants("ModelVersion") {
                    running.push(crate::modelversion::controller(
                        scoped.clone(),
                        namespace,
                        triggers.model_versions,
                        shutdown.clone(),
                    ));
                }
                if wants("InferenceService") {
                    running.push(crate::inferenceservice::controller(
                        scoped,
                        namespace,
                        triggers.inference_services,
                        shutdown,
                    ));
                }
                join_all(running).await;
            }
            .boxed(),
        );
    }
    // The watches run as long as the controllers (they stop together, so a
    // replica that loses the lease keeps no watch open).
    let handles: Vec<tokio::task::JoinHandle<()>> = feeds.into_iter().map(tokio::spawn).collect();
    let aborts: Vec<_> = handles.iter().map(tokio::task::JoinHandle::abort_handle).collect();
    let feeds = join_all(handles);
    futures::pin_mut!(feeds);
    let controllers = join_all(controllers);
    futures::pin_mut!(controllers);
    let _ = futures::future::select(controllers, feeds).await;
    for abort in aborts {
        abort.abort();
    }
}

/// True when the apiserver serves `gateway.networking.k8s.io/v1` HTTPRoutes
/// (discovery, so no RBAC on CustomResourceDefinitions is needed). Asked
/// once, at start: installing the Gateway API later needs an operator restart.
pub async fn gateway_api_installed(client: &Client) -> bool {
    use crate::inferenceservice::desired::gateway::{GATEWAY_GROUP, GATEWAY_VERSION, HTTP_ROUTE_KIND};
    let gvk = kube::api::GroupVersionKind::gvk(GATEWAY_GROUP, GATEWAY_VERSION, HTTP_ROUTE_KIND);
    for attempt in 1..=5u32 {
        match kube::discovery::pinned_kind(client, &gvk).await {
            Ok(_) => return true,
            Err(kube::Error::Api(status)) if status.code == 404 => return false,
            Err(kube::Error::Discovery(_)) => return false,
            Err(error) => {
                let wait = crate::backoff::delay(attempt);
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "discovering the Gateway API failed");
                tokio::time::sleep(wait).await;
            }
        }
    }
    tracing::warn!("the Gateway API could not be discovered; running without HTTPRoutes");
    false
}

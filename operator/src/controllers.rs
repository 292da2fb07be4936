//! Wires the controllers to the apiserver: one Controller per watched
//! namespace (or one for all), each stopping gracefully on `shutdown`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
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
/// next exponential backoff delay.
pub fn retry_later<K: kube::Resource>(
    ctx: &Context,
    controller: &'static str,
    obj: &K,
    category: &'static str,
    error: &dyn std::fmt::Display,
) -> Action {
    let delay: Duration = ctx.backoff.failed(&backoff_key(controller, obj));
    tracing::warn!(
        controller,
        object = %obj.name_any(),
        namespace = obj.namespace().unwrap_or_default(),
        category,
        %error,
        retry_in_s = delay.as_secs(),
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

/// Adds the watches of a controller that runs Jobs: its Jobs (owned), and
/// their pods mapped to the owner named in `label`. Pods matter because the
/// termination message lands on the pod, after which the Job may not change.
pub fn with_jobs_and_pods<K>(
    controller: Controller<K>,
    client: &Client,
    namespace: Option<&str>,
    label: &'static str,
) -> Controller<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let selector = watcher::Config::default().labels(label);
    let pod_to_owner = move |pod: Pod| {
        let name = pod.labels().get(label)?.clone();
        Some(ObjectRef::<K>::new(&name).within(&pod.namespace()?))
    };
    controller.owns(scoped_api::<Job>(client, namespace), selector.clone()).watches(
        scoped_api::<Pod>(client, namespace),
        selector,
        pod_to_owner,
    )
}

type ControllerFn =
    fn(Arc<Context>, Option<&str>, futures::future::Shared<BoxFuture<'static, ()>>) -> BoxFuture<'static, ()>;

/// Runs every controller until `shutdown` resolves and they have drained.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static) {
    let scopes: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    let shutdown: futures::future::Shared<BoxFuture<'static, ()>> = shutdown.boxed().shared();
    let kinds: [(&str, ControllerFn); 4] = [
        ("Dataset", |c, n, s| crate::dataset::controller(c, n, s)),
        ("TrainingJob", |c, n, s| crate::trainingjob::controller(c, n, s)),
        ("ModelVersion", |c, n, s| crate::modelversion::controller(c, n, s)),
        ("InferenceService", |c, n, s| crate::inferenceservice::controller(c, n, s)),
    ];
    let mut controllers = Vec::new();
    for scope in &scopes {
        for (kind, start) in kinds {
            tracing::info!(namespace = scope.as_deref().unwrap_or("*"), kind, "starting a controller");
            controllers.push(start(ctx.clone(), scope.as_deref(), shutdown.clone()));
        }
    }
    join_all(controllers).await;
}

//! Wires the controllers to the apiserver: one Controller per watched
//! namespace (or one for all), each stopping gracefully on `shutdown`.

use std::future::Future;
use std::sync::Arc;

use futures::future::{BoxFuture, join_all};
use futures::{FutureExt, StreamExt};
use hone_crds::Dataset;
use hone_crds::consts::LABEL_DATASET;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::context::Context;
use crate::dataset;

/// The scope of one set of watches: a namespace, or the whole cluster.
fn apis<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Dataset controller over one scope; resolves when it has shut down.
fn dataset_controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> BoxFuture<'static, ()> {
    let client = ctx.client.clone();
    let selector = watcher::Config::default().labels(LABEL_DATASET);
    // Pods are watched for their termination messages, which land on the pod
    // (the Job may not change again after them).
    let pod_to_dataset = |pod: Pod| {
        let name = pod.labels().get(LABEL_DATASET)?.clone();
        Some(ObjectRef::<Dataset>::new(&name).within(&pod.namespace()?))
    };
    Controller::new(apis::<Dataset>(&client, namespace), watcher::Config::default())
        .owns(apis::<Job>(&client, namespace), selector.clone())
        .watches(apis::<Pod>(&client, namespace), selector, pod_to_dataset)
        .graceful_shutdown_on(shutdown)
        .run(dataset::reconcile, dataset::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => tracing::debug!(%object, ?action, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not finish"),
            }
        })
        .boxed()
}

/// Runs every controller until `shutdown` resolves and they have drained.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static) {
    let scopes: Vec<Option<String>> = if ctx.config.namespaces.is_empty() {
        vec![None]
    } else {
        ctx.config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers = Vec::new();
    for scope in &scopes {
        tracing::info!(namespace = scope.as_deref().unwrap_or("*"), "starting the Dataset controller");
        controllers.push(dataset_controller(ctx.clone(), scope.as_deref(), shutdown.clone()));
    }
    join_all(controllers).await;
}

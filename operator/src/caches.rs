//! Every watch of one scope (a namespace, or the cluster), the stores the
//! reconciles read, and the triggers that wake each controller.
//!
//! One watch per kind and scope; each kind a controller reads is cached once,
//! stripped of bookkeeping (see [`crate::cache`]). The triggers carry meaning:
//! a status write of the operator's own does not wake the object it wrote, an
//! InferenceService wakes on a ModelVersion change only when something it
//! reads changed (spec, phase, digest, metrics: not `servedBy`), and a
//! ModelVersion wakes on an InferenceService change only when the set of
//! versions that InferenceService serves changed.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::Stream;
use futures::future::BoxFuture;
use hone_crds::consts::{
    LABEL_DATASET, LABEL_INFERENCE_SERVICE, LABEL_MODEL_VERSION, LABEL_TRAINING_JOB, LABEL_TRAINING_JOB_UID,
};
use hone_crds::modelversion::ModelVersionPhase;
use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::cache::{
    Feed, Trigger, changed_beyond_bookkeeping, child_metadata_changed, owner_in_label, primary_changed,
    trigger, trim_deployment, trim_job, trim_pod,
};
use crate::children::is_controlled_by;
use crate::controllers::scoped_api;
use crate::inferenceservice::names::{COMPONENT_PREDICTOR, COMPONENT_ROUTER, LABEL_COMPONENT};
use crate::metrics::Metrics;

/// A cached child kind of which reconciles read metadata only.
pub type MetaStore<K> = Store<PartialObjectMeta<K>>;

/// The Jobs and pods one controller runs (selected by its owner label).
#[derive(Clone)]
pub struct Batch {
    /// Jobs labelled for the controller's kind.
    pub jobs: Store<Job>,
    /// Their pods.
    pub pods: Store<Pod>,
}

/// The children of InferenceServices.
#[derive(Clone)]
pub struct Serving {
    /// Predictor and router Deployments (whole: their status matters).
    pub deployments: Store<Deployment>,
    /// Services.
    pub services: MetaStore<Service>,
    /// HPAs.
    pub autoscalers: MetaStore<HorizontalPodAutoscaler>,
    /// PodDisruptionBudgets.
    pub disruption_budgets: MetaStore<PodDisruptionBudget>,
    /// Router ConfigMaps.
    pub config_maps: MetaStore<ConfigMap>,
    /// Router ServiceAccounts.
    pub service_accounts: MetaStore<ServiceAccount>,
    /// Router Roles.
    pub roles: MetaStore<Role>,
    /// Router RoleBindings.
    pub role_bindings: MetaStore<RoleBinding>,
    /// HTTPRoutes, when the Gateway API is installed (found once, at start).
    pub routes: Option<Store<DynamicObject>>,
    /// Router and predictor pods (a canary's analysis reads their metrics:
    /// the router's, or under the GatewayAPI provider the predictors').
    pub router_pods: Store<Pod>,
}

/// The stores of one scope.
#[derive(Clone)]
pub struct Caches {
    /// Datasets.
    pub datasets: Store<Dataset>,
    /// TrainingJobs.
    pub training_jobs: Store<TrainingJob>,
    /// ModelVersions.
    pub model_versions: Store<ModelVersion>,
    /// InferenceServices.
    pub inference_services: Store<InferenceService>,
    /// Inspect Jobs and pods.
    pub dataset_batch: Batch,
    /// Training Jobs and pods.
    pub training_batch: Batch,
    /// Verify and purge Jobs and pods.
    pub model_version_batch: Batch,
    /// Services of distributed TrainingJobs.
    pub training_services: MetaStore<Service>,
    /// InferenceService children.
    pub serving: Serving,
}

fn empty<K>() -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    Writer::<K>::default().as_reader()
}

impl Caches {
    /// Stores that stay empty: for tests that build a [`crate::context::Context`] without a cluster.
    pub fn empty() -> Self {
        let batch = || Batch { jobs: empty(), pods: empty() };
        Self {
            datasets: empty(),
            training_jobs: empty(),
            model_versions: empty(),
            inference_services: empty(),
            dataset_batch: batch(),
            training_batch: batch(),
            model_version_batch: batch(),
            training_services: empty(),
            serving: Serving {
                deployments: empty(),
                services: empty(),
                autoscalers: empty(),
                disruption_budgets: empty(),
                config_maps: empty(),
                service_accounts: empty(),
                roles: empty(),
                role_bindings: empty(),
                routes: None,
                router_pods: empty(),
            },
        }
    }
}

/// The objects in `store` labelled `label=name` in `namespace` whose
/// controller is `uid` (a deleted and recreated namesake leaves others behind).
pub fn owned<K>(store: &Store<K>, label: &str, name: &str, namespace: &str, uid: &str) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .filter(|o| o.meta().labels.as_ref().and_then(|l| l.get(label)).map(String::as_str) == Some(name))
        .filter(|o| is_controlled_by(o.meta().owner_references.as_deref(), uid))
        .map(|o| (*o).clone())
        .collect()
}

/// The pods in `store` of the Jobs `jobs` (by the Job's uid as controller).
pub fn pods_of(store: &Store<Pod>, jobs: &[Job], namespace: &str) -> Vec<Pod> {
    let uids: Vec<&str> = jobs.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();
    store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| uids.iter().any(|uid| is_controlled_by(p.metadata.owner_references.as_deref(), uid)))
        .map(|p| (*p).clone())
        .collect()
}

/// The objects of `store` in `namespace`.
pub fn in_namespace<K>(store: &Store<K>, namespace: &str) -> Vec<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .map(|o| (*o).clone())
        .collect()
}

/// The ModelVersions registered for the TrainingJob with `uid`.
pub fn registered_for(store: &Store<ModelVersion>, namespace: &str, uid: &str) -> Vec<ModelVersion> {
    store
        .state()
        .into_iter()
        .filter(|mv| mv.metadata.namespace.as_deref() == Some(namespace))
        .filter(|mv| mv.labels().get(LABEL_TRAINING_JOB_UID).map(String::as_str) == Some(uid))
        .map(|mv| (*mv).clone())
        .collect()
}

/// The ModelVersion names an InferenceService serves or is about to serve
/// (the test behind `servedBy`).
pub fn served_names(isvc: &InferenceService) -> BTreeSet<String> {
    let mut names: BTreeSet<String> =
        isvc.spec.variants.iter().filter_map(|v| v.model_version.clone()).collect();
    if let Some(status) = &isvc.status {
        names.extend(status.variants.iter().filter_map(|v| v.model_version.clone()));
        if let Some(rollout) = &status.rollout {
            names.insert(rollout.from_version.clone());
            names.insert(rollout.to_version.clone());
        }
    }
    names
}

/// Whether a ModelVersion changed in anything an InferenceService reads:
/// its spec, labels, deletion, or its status apart from `servedBy`.
pub fn model_version_changed_for_serving(
    before: Option<&ModelVersion>,
    after: Option<&ModelVersion>,
) -> bool {
    match (before, after) {
        (Some(b), Some(a)) => {
            let status = |mv: &ModelVersion| {
                mv.status.clone().map(|mut s| {
                    s.served_by.clear();
                    s
                })
            };
            b.metadata.uid != a.metadata.uid
                || b.metadata.generation != a.metadata.generation
                || b.metadata.labels != a.metadata.labels
                || b.metadata.deletion_timestamp != a.metadata.deletion_timestamp
                || b.spec != a.spec
                || status(b) != status(a)
        }
        _ => true,
    }
}

/// Whether a Deployment changed in anything the InferenceService reads: its
/// metadata (see [`child_metadata_changed`]) or its replica counts.
pub fn deployment_changed(before: Option<&Deployment>, after: Option<&Deployment>) -> bool {
    let counts = |d: &Deployment| {
        d.status.as_ref().map(|s| {
            (s.observed_generation, s.replicas, s.ready_replicas, s.available_replicas, s.updated_replicas)
        })
    };
    child_metadata_changed(before.map(|d| &d.metadata), after.map(|d| &d.metadata))
        || before.map(counts) != after.map(counts)
}

/// Wakes the owner named in `label` of each changed child.
fn to_owner<C: Resource + 'static, O: Resource<DynamicType = ()> + 'static>(
    trigger: Trigger<O>,
    label: &'static str,
    changed: fn(Option<&C>, Option<&C>) -> bool,
) -> impl Fn(Option<&C>, Option<&C>) + Send + Sync + 'static
where
    Trigger<O>: Send + Sync,
{
    move |before, after| {
        if !changed(before, after) {
            return;
        }
        // Either side names the owner (a relabelled child wakes both).
        for side in [before, after].into_iter().flatten() {
            if let Some((name, namespace)) = owner_in_label(side, label) {
                trigger.send(name, namespace);
            }
        }
    }
}

fn meta_changed<K: Resource>(
    before: Option<&PartialObjectMeta<K>>,
    after: Option<&PartialObjectMeta<K>>,
) -> bool {
    child_metadata_changed(before.map(|o| &o.metadata), after.map(|o| &o.metadata))
}

/// The trigger streams of the four controllers of a scope.
pub struct Triggers {
    /// Dataset reconciles.
    pub datasets: futures::stream::BoxStream<'static, ObjectRef<Dataset>>,
    /// TrainingJob reconciles.
    pub training_jobs: futures::stream::BoxStream<'static, ObjectRef<TrainingJob>>,
    /// ModelVersion reconciles.
    pub model_versions: futures::stream::BoxStream<'static, ObjectRef<ModelVersion>>,
    /// InferenceService reconciles.
    pub inference_services: futures::stream::BoxStream<'static, ObjectRef<InferenceService>>,
}

fn boxed<T, S: Stream<Item = T> + Send + 'static>(s: S) -> futures::stream::BoxStream<'static, T> {
    Box::pin(s)
}

/// The watches of a scope as they are started: what drives them, and what
/// resolves once each has taken its first list.
struct Started {
    metrics: Arc<Metrics>,
    runs: Vec<BoxFuture<'static, ()>>,
    ready: Vec<BoxFuture<'static, ()>>,
}

impl Started {
    /// Takes `feed` into the scope; returns its store.
    fn start<K>(&mut self, feed: Feed<K>) -> Store<K>
    where
        K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let store = feed.store();
        let filled = store.clone();
        self.ready.push(Box::pin(async move {
            // Err only when the feed is gone, which ends the scope anyway.
            let _ = filled.wait_until_ready().await;
        }));
        self.runs.push(feed.run(self.metrics.clone()));
        store
    }
}

/// Wakes the object itself when [`primary_changed`].
fn to_self<K: Resource<DynamicType = ()> + 'static>(
    trigger: Trigger<K>,
) -> impl Fn(Option<&K>, Option<&K>) + Send + Sync
where
    Trigger<K>: Send + Sync,
{
    move |before, after| {
        if primary_changed(before, after) {
            after.into_iter().for_each(|o| trigger.send_obj(o));
        }
    }
}

/// Every watch of one scope, built by [`build`].
pub struct Scope {
    /// The stores.
    pub caches: Caches,
    /// The controllers' triggers.
    pub triggers: Triggers,
    /// The futures that drive the watches (run them all, for as long as the controllers).
    pub runs: Vec<BoxFuture<'static, ()>>,
    /// Resolves once every store has taken its first list: a reconcile before
    /// that would take a missing object for a deleted one.
    pub ready: BoxFuture<'static, ()>,
}

/// Builds every watch of `namespace` (`None`: the cluster): the stores, the
/// triggers of the four controllers, and the futures that drive the watches.
pub fn build(client: &Client, namespace: Option<&str>, gateway_api: bool, metrics: &Arc<Metrics>) -> Scope {
    let (ds_tx, ds_rx) = trigger::<Dataset>();
    let (tj_tx, tj_rx) = trigger::<TrainingJob>();
    let (mv_tx, mv_rx) = trigger::<ModelVersion>();
    let (isvc_tx, isvc_rx) = trigger::<InferenceService>();
    let all = watcher::Config::default;
    let mut started = Started { metrics: metrics.clone(), runs: Vec::new(), ready: Vec::new() };

    // Primaries.
    let mut tjs = Feed::watch("TrainingJob", scoped_api::<TrainingJob>(client, namespace), all());
    tjs.subscribe(to_self(tj_tx.clone()));
    let training_jobs = started.start(tjs);

    let mut mvs = Feed::watch("ModelVersion", scoped_api::<ModelVersion>(client, namespace), all());
    let mut datasets = Feed::watch("Dataset", scoped_api::<Dataset>(client, namespace), all());
    datasets.subscribe(to_self(ds_tx.clone()));
    // A Dataset turning Ready (or changing) wakes the ModelVersions not yet
    // verified that are evaluated on it.
    let (tx, store) = (mv_tx.clone(), mvs.store());
    datasets.subscribe(move |b, a| {
        if !changed_beyond_bookkeeping(b, a) {
            return;
        }
        let Some(ds) = a.or(b) else { return };
        for mv in store.state() {
            let settled = mv.status.as_ref().is_some_and(|s| {
                matches!(s.phase, Some(ModelVersionPhase::Ready | ModelVersionPhase::Failed))
            });
            if !settled
                && mv.namespace() == ds.namespace()
                && mv.spec.evaluation_dataset() == Some(ds.name_any().as_str())
            {
                tx.send_obj(&mv);
            }
        }
    });
    // A Dataset turning Ready (or changing) wakes the TrainingJobs that read it.
    let (tx, store) = (tj_tx.clone(), training_jobs.clone());
    datasets.subscribe(move |b, a| {
        if !changed_beyond_bookkeeping(b, a) {
            return;
        }
        let Some(ds) = a.or(b) else { return };
        for tj in store.state() {
            if tj.namespace() == ds.namespace() && tj.spec.dataset_ref.name == ds.name_any() {
                tx.send_obj(&tj);
            }
        }
    });
    let datasets = started.start(datasets);

    let mut isvcs = Feed::watch("InferenceService", scoped_api::<InferenceService>(client, namespace), all());
    isvcs.subscribe(to_self(isvc_tx.clone()));
    // servedBy: the versions an InferenceService starts or stops serving.
    let tx = mv_tx.clone();
    isvcs.subscribe(move |b, a| {
        let before = b.map(served_names).unwrap_or_default();
        let after = a.map(served_names).unwrap_or_default();
        let Some(namespace) = a.or(b).and_then(|o| o.namespace()) else { return };
        for name in before.symmetric_difference(&after) {
            tx.send(name, Some(&namespace));
        }
    });
    let inference_services = started.start(isvcs);

    mvs.subscribe(to_self(mv_tx.clone()));
    // A ModelVersion changing in what serving reads wakes the
    // InferenceServices that serve it or track its model.
    let (tx, store) = (isvc_tx.clone(), inference_services.clone());
    mvs.subscribe(move |b, a| {
        if !model_version_changed_for_serving(b, a) {
            return;
        }
        let Some(mv) = a.or(b) else { return };
        for isvc in store.state() {
            if crate::inferenceservice::references(&isvc, mv) {
                tx.send_obj(&isvc);
            }
        }
    });
    let model_versions = started.start(mvs);

    // Jobs and pods of the three controllers that run them.
    let dataset_batch = batch(
        &mut started,
        client,
        namespace,
        ("Job(dataset)", "Pod(dataset)"),
        LABEL_DATASET,
        LABEL_DATASET,
        &ds_tx,
    );
    let training_batch = batch(
        &mut started,
        client,
        namespace,
        ("Job(trainingjob)", "Pod(trainingjob)"),
        LABEL_TRAINING_JOB,
        LABEL_TRAINING_JOB,
        &tj_tx,
    );
    // Predictor pods carry the ModelVersion label too: not this controller's.
    let model_version_batch = batch(
        &mut started,
        client,
        namespace,
        ("Job(modelversion)", "Pod(modelversion)"),
        &format!("{LABEL_MODEL_VERSION},!{LABEL_INFERENCE_SERVICE}"),
        LABEL_MODEL_VERSION,
        &mv_tx,
    );

    let mut tj_services = Feed::watch(
        "Service(trainingjob)",
        scoped_api::<PartialObjectMeta<Service>>(client, namespace),
        watcher::Config::default().labels(LABEL_TRAINING_JOB),
    );
    tj_services.subscribe(to_owner(tj_tx.clone(), LABEL_TRAINING_JOB, meta_changed::<Service>));
    let training_services = started.start(tj_services);

    // InferenceService children.
    let children = || watcher::Config::default().labels(LABEL_INFERENCE_SERVICE);
    let mut deployments = Feed::watch_trimmed(
        "Deployment",
        scoped_api::<Deployment>(client, namespace),
        children(),
        trim_deployment,
    );
    deployments.subscribe(to_owner(isvc_tx.clone(), LABEL_INFERENCE_SERVICE, deployment_changed));
    let deployments = started.start(deployments);
    macro_rules! meta_feed {
        ($kind:ty, $name:literal) => {{
            let api = scoped_api::<PartialObjectMeta<$kind>>(client, namespace);
            let mut feed = Feed::watch($name, api, children());
            feed.subscribe(to_owner(isvc_tx.clone(), LABEL_INFERENCE_SERVICE, meta_changed::<$kind>));
            started.start(feed)
        }};
    }
    let services = meta_feed!(Service, "Service(inferenceservice)");
    let autoscalers = meta_feed!(HorizontalPodAutoscaler, "HorizontalPodAutoscaler");
    let disruption_budgets = meta_feed!(PodDisruptionBudget, "PodDisruptionBudget");
    let config_maps = meta_feed!(ConfigMap, "ConfigMap");
    let service_accounts = meta_feed!(ServiceAccount, "ServiceAccount");
    let roles = meta_feed!(Role, "Role");
    let role_bindings = meta_feed!(RoleBinding, "RoleBinding");
    // Router and predictor pods: read when a canary's metrics are scraped
    // (the predictors' under the GatewayAPI provider); their Deployment wakes the owner.
    let router_pods = started.start(Feed::watch_trimmed(
        "Pod(router, predictor)",
        scoped_api::<Pod>(client, namespace),
        watcher::Config::default().labels(&format!(
            "{LABEL_COMPONENT} in ({COMPONENT_ROUTER},{COMPONENT_PREDICTOR}),{LABEL_INFERENCE_SERVICE}"
        )),
        trim_pod,
    ));
    let routes = gateway_api.then(|| {
        let resource = crate::inferenceservice::desired::gateway::http_route_resource();
        let api = match namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
            None => Api::<DynamicObject>::all_with(client.clone(), &resource),
        };
        let mut feed = Feed::watch_with("HTTPRoute", api, children(), resource);
        feed.subscribe(to_owner(isvc_tx.clone(), LABEL_INFERENCE_SERVICE, changed_beyond_bookkeeping));
        started.start(feed)
    });

    let caches = Caches {
        datasets,
        training_jobs,
        model_versions,
        inference_services,
        dataset_batch,
        training_batch,
        model_version_batch,
        training_services,
        serving: Serving {
            deployments,
            services,
            autoscalers,
            disruption_budgets,
            config_maps,
            service_accounts,
            roles,
            role_bindings,
            routes,
            router_pods,
        },
    };
    let triggers = Triggers {
        datasets: boxed(ds_rx),
        training_jobs: boxed(tj_rx),
        model_versions: boxed(mv_rx),
        inference_services: boxed(isvc_rx),
    };
    let Started { runs, ready, .. } = started;
    let ready = Box::pin(async move {
        futures::future::join_all(ready).await;
    });
    Scope { caches, triggers, runs, ready }
}

/// The Jobs and pods of one controller (`selector` picks them), each of
/// their changes waking the owner named in `label`.
fn batch<O: Resource<DynamicType = ()> + 'static>(
    started: &mut Started,
    client: &Client,
    namespace: Option<&str>,
    (jobs_kind, pods_kind): (&'static str, &'static str),
    selector: &str,
    label: &'static str,
    trigger: &Trigger<O>,
) -> Batch
where
    Trigger<O>: Send + Sync,
{
    let config = watcher::Config::default().labels(selector);
    let mut jobs =
        Feed::watch_trimmed(jobs_kind, scoped_api::<Job>(client, namespace), config.clone(), trim_job);
    jobs.subscribe(to_owner(trigger.clone(), label, changed_beyond_bookkeeping));
    let mut pods = Feed::watch_trimmed(pods_kind, scoped_api::<Pod>(client, namespace), config, trim_pod);
    pods.subscribe(to_owner(trigger.clone(), label, changed_beyond_bookkeeping));
    Batch { jobs: started.start(jobs), pods: started.start(pods) }
}

/// A store holding `objects` (tests).
#[cfg(test)]
pub fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let mut writer = Writer::<K>::default();
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(object));
    }
    writer.as_reader()
}

#[cfg(test)]
impl Caches {
    /// These caches with `objects` as the ModelVersions.
    pub fn with_model_versions(mut self, objects: Vec<ModelVersion>) -> Self {
        self.model_versions = filled(objects);
        self
    }

    /// These caches with `objects` as the InferenceService Deployments.
    pub fn with_deployments(mut self, objects: Vec<Deployment>) -> Self {
        self.serving.deployments = filled(objects);
        self
    }

    /// These caches with `jobs` and `pods` as the Dataset's.
    pub fn with_dataset_batch(mut self, jobs: Vec<Job>, pods: Vec<Pod>) -> Self {
        self.dataset_batch = Batch { jobs: filled(jobs), pods: filled(pods) };
        self
    }
}

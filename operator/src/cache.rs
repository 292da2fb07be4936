//! Watch caches: one watch per kind and scope, kept in a reflector store
//! that every reconcile reads instead of the apiserver, and fanned out to
//! the controllers as triggers that fire only when something they use
//! changed.
//!
//! A [`Feed`] owns one watch. Each event is first written to the store, then
//! shown to the feed's subscribers as `(before, after)`, so a reconcile a
//! subscriber triggers always reads the new state. After the initial list
//! (and after every relist) subscribers see each object against what the
//! store held before, and every object that disappeared as a deletion.
//!
//! What the stores hold is trimmed on the way in: `managedFields` keep only
//! the entries [`crate::children::needs_apply`] reads (a foreign manager
//! owning spec or data, reduced to those top-level keys); pods keep no spec
//! and the pod templates of Jobs and Deployments only their init containers'
//! names ([`trim_job`], [`trim_deployment`], [`trim_pod`]), so a cache of
//! thousands of children stays small.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Called with `(before, after)` for every change the store took: `None`
/// before for a new object, `None` after for a deleted one.
pub type Subscriber<K> = Box<dyn Fn(Option<&K>, Option<&K>) + Send + Sync>;

/// One watch of one kind in one scope, its store and its subscribers.
pub struct Feed<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    kind: &'static str,
    stream: futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>,
    writer: Writer<K>,
    dyntype: K::DynamicType,
    subscribers: Vec<Subscriber<K>>,
}

/// Keeps of `meta.managedFields` only what drift detection reads: entries of
/// another manager on the main resource that own `spec` or `data`, with
/// their field set cut down to those keys.
pub fn trim_managed_fields(meta: &mut ObjectMeta) {
    let Some(entries) = meta.managed_fields.take() else { return };
    let kept: Vec<ManagedFieldsEntry> = entries
        .into_iter()
        .filter(|e| e.manager.as_deref() != Some(hone_crds::consts::FIELD_MANAGER))
        .filter(|e| e.subresource.as_deref().unwrap_or("").is_empty())
        .filter_map(|e| {
            let fields = e.fields_v1.as_ref()?.0.as_object()?;
            let owned: serde_json::Map<String, serde_json::Value> = ["f:spec", "f:data"]
                .into_iter()
                .filter(|key| fields.contains_key(*key))
                .map(|key| (key.to_owned(), serde_json::Value::Object(serde_json::Map::new())))
                .collect();
            (!owned.is_empty()).then(|| ManagedFieldsEntry {
                manager: e.manager,
                operation: e.operation,
                fields_v1: Some(FieldsV1(serde_json::Value::Object(owned))),
                ..ManagedFieldsEntry::default()
            })
        })
        .collect();
    meta.managed_fields = (!kept.is_empty()).then_some(kept);
}

/// Keeps of a pod template's spec only the names of its init containers
/// (whether a verify Job evaluates is read from them); nothing else of a
/// child's template is read (what a child should hold is compared through
/// the desired-form hash in its metadata).
fn trim_template(template: &mut PodTemplateSpec) {
    template.metadata = None;
    template.spec = template.spec.take().and_then(|spec| {
        let names: Vec<Container> = spec
            .init_containers?
            .into_iter()
            .map(|c| Container { name: c.name, ..Container::default() })
            .collect();
        Some(PodSpec { init_containers: Some(names), ..PodSpec::default() })
    });
}

/// A Job as the caches hold it: metadata, the spec's scalars (`suspend`
/// among them), its template reduced by [`trim_template`], and its status.
pub fn trim_job(job: &mut Job) {
    if let Some(spec) = job.spec.as_mut() {
        trim_template(&mut spec.template);
    }
}

/// A Deployment as the caches hold it: metadata, replica settings, its
/// template reduced by [`trim_template`], and its status.
pub fn trim_deployment(deployment: &mut Deployment) {
    if let Some(spec) = deployment.spec.as_mut() {
        trim_template(&mut spec.template);
    }
}

/// A pod as the caches hold it: metadata and, of its status,
/// what reconciles read: phase, pod IP, conditions, and each container's
/// name, state, last state, readiness and restarts (termination messages,
/// OOM kills, a pull that cannot start).
pub fn trim_pod(pod: &mut Pod) {
    pod.spec = None;
    let Some(status) = pod.status.take() else { return };
    let containers = |statuses: Option<Vec<ContainerStatus>>| {
        statuses.map(|statuses| {
            statuses
                .into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    state: c.state,
                    last_state: c.last_state,
                    ready: c.ready,
                    restart_count: c.restart_count,
                    started: c.started,
                    ..ContainerStatus::default()
                })
                .collect()
        })
    };
    pod.status = Some(PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        conditions: status.conditions,
        start_time: status.start_time,
        container_statuses: containers(status.container_statuses),
        init_container_statuses: containers(status.init_container_statuses),
        ..PodStatus::default()
    });
}

impl<K> Feed<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A feed of the objects of `api` matching `config`; an
    /// `Api<PartialObjectMeta<K>>` watches metadata only (for children of
    /// which a reconcile reads nothing but names, labels, owners and the
    /// desired-form hash).
    pub fn watch(kind: &'static str, api: Api<K>, config: watcher::Config) -> Self {
        Self::watch_with(kind, api, config, ())
    }

    /// [`Feed::watch`] that also passes each object through `trim` before the
    /// store takes it (for whole children of which reconciles read little).
    pub fn watch_trimmed(kind: &'static str, api: Api<K>, config: watcher::Config, trim: fn(&mut K)) -> Self {
        Self::build(kind, api, config, (), trim)
    }
}

impl<K> Feed<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// [`Feed::watch`] for a kind known at run time (`dyntype`).
    pub fn watch_with(
        kind: &'static str,
        api: Api<K>,
        config: watcher::Config,
        dyntype: K::DynamicType,
    ) -> Self {
        Self::build(kind, api, config, dyntype, |_| {})
    }

    fn build(
        kind: &'static str,
        api: Api<K>,
        config: watcher::Config,
        dyntype: K::DynamicType,
        trim: fn(&mut K),
    ) -> Self {
        let stream = watcher::watcher(api, config.any_semantic())
            .default_backoff()
            .modify(move |obj: &mut K| {
                trim_managed_fields(obj.meta_mut());
                trim(obj);
            })
            .boxed();
        Self { kind, stream, writer: Writer::new(dyntype.clone()), dyntype, subscribers: Vec::new() }
    }
}

impl<K> Feed<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// A feed over an arbitrary event stream (tests).
    pub fn from_stream(
        kind: &'static str,
        stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
        dyntype: K::DynamicType,
    ) -> Self {
        Self {
            kind,
            stream: stream.boxed(),
            writer: Writer::new(dyntype.clone()),
            dyntype,
            subscribers: Vec::new(),
        }
    }

    /// The store this feed fills.
    pub fn store(&self) -> Store<K> {
        self.writer.as_reader()
    }

    /// Adds a subscriber; see [`Subscriber`].
    pub fn subscribe(&mut self, subscriber: impl Fn(Option<&K>, Option<&K>) + Send + Sync + 'static) {
        self.subscribers.push(Box::new(subscriber));
    }

    /// Drives the watch for ever (the watcher retries with backoff); counts
    /// events and errors under `kind`.
    pub fn run(self, metrics: Arc<Metrics>) -> BoxFuture<'static, ()> {
        let Self { kind, mut stream, mut writer, dyntype, subscribers } = self;
        let reader = writer.as_reader();
        async move {
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => {
                        metrics.record_watch_event(kind);
                        apply(&mut writer, &reader, &subscribers, &dyntype, event);
                    }
                    Err(error) => {
                        metrics.record_watch_error(kind);
                        tracing::warn!(kind, %error, "watch failed; retrying with backoff");
                    }
                }
            }
        }
        .boxed()
    }
}

/// Writes `event` to the store, then tells the subscribers what changed.
fn apply<K>(
    writer: &mut Writer<K>,
    reader: &Store<K>,
    subscribers: &[Subscriber<K>],
    dyntype: &K::DynamicType,
    event: Event<K>,
) where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let key = |obj: &K| ObjectRef::from_obj_with(obj, dyntype.clone());
    match &event {
        Event::Apply(obj) => {
            let before = reader.get(&key(obj));
            writer.apply_watcher_event(&event);
            for subscriber in subscribers {
                subscriber(before.as_deref(), Some(obj));
            }
        }
        Event::Delete(obj) => {
            writer.apply_watcher_event(&event);
            for subscriber in subscribers {
                subscriber(Some(obj), None);
            }
        }
        Event::Init | Event::InitApply(_) => writer.apply_watcher_event(&event),
        Event::InitDone => {
            let before: HashMap<ObjectRef<K>, Arc<K>> =
                reader.state().into_iter().map(|o| (key(&o), o)).collect();
            writer.apply_watcher_event(&event);
            let after = reader.state();
            for obj in &after {
                let old = before.get(&key(obj));
                for subscriber in subscribers {
                    subscriber(old.map(|o| &**o), Some(obj));
                }
            }
            let present: std::collections::HashSet<ObjectRef<K>> = after.iter().map(|o| key(o)).collect();
            for (key, old) in &before {
                if !present.contains(key) {
                    for subscriber in subscribers {
                        subscriber(Some(old), None);
                    }
                }
            }
        }
    }
}

/// The sending side of a controller's trigger queue: each reference sent is
/// reconciled (the controller's scheduler merges repeats).
pub struct Trigger<K: Resource>(mpsc::UnboundedSender<ObjectRef<K>>);

impl<K: Resource> Clone for Trigger<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K> Trigger<K>
where
    K: Resource<DynamicType = ()>,
{
    /// Queues a reconcile of `name` in `namespace`.
    pub fn send(&self, name: &str, namespace: Option<&str>) {
        let mut reference = ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            reference = reference.within(ns);
        }
        // A closed queue means the controller has shut down: nothing to do.
        let _ = self.0.send(reference);
    }

    /// Queues a reconcile of `obj`.
    pub fn send_obj(&self, obj: &K) {
        let _ = self.0.send(ObjectRef::from_obj(obj));
    }
}

/// A trigger queue and the stream a controller reads it from.
pub fn trigger<K: Resource + 'static>() -> (Trigger<K>, impl Stream<Item = ObjectRef<K>> + Send + 'static)
where
    K::DynamicType: Send,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (Trigger(tx), stream)
}

/// The owner named in `label` of a child, with the child's namespace.
pub fn owner_in_label<'a, C: Resource>(child: &'a C, label: &str) -> Option<(&'a str, Option<&'a str>)> {
    let meta = child.meta();
    let name = meta.labels.as_ref()?.get(label)?;
    Some((name.as_str(), meta.namespace.as_deref()))
}

/// True when the two sides differ in anything but bookkeeping
/// (resourceVersion and managedFields): for children whose every change
/// matters to their owner (Jobs, pods).
pub fn changed_beyond_bookkeeping<K: Resource + Clone + PartialEq>(
    before: Option<&K>,
    after: Option<&K>,
) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => {
            let (mut b, mut a) = (before.clone(), after.clone());
            for meta in [b.meta_mut(), a.meta_mut()] {
                meta.resource_version = None;
                meta.managed_fields = None;
            }
            a != b
        }
        _ => true,
    }
}

/// Whether the metadata every kind is woken on differs: identity,
/// generation (spec), labels, annotations, deletion.
fn common_metadata_changed(b: &ObjectMeta, a: &ObjectMeta) -> bool {
    b.uid != a.uid
        || b.generation != a.generation
        || b.labels != a.labels
        || b.annotations != a.annotations
        || b.deletion_timestamp != a.deletion_timestamp
}

/// The part of a primary object's metadata whose change calls for a
/// reconcile: generation (spec), labels, annotations, finalizers, deletion.
/// Status writes (the operator's own) do not.
pub fn primary_changed<K: Resource>(before: Option<&K>, after: Option<&K>) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => {
            let (b, a) = (before.meta(), after.meta());
            common_metadata_changed(b, a) || b.finalizers != a.finalizers
        }
        // A new object is reconciled; a deleted one has nothing left to do
        // (its finalizers already held it while it was being deleted).
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// The part of a child's metadata whose change calls for its owner's
/// reconcile: creation, deletion (or its start), the desired-form hash,
/// labels, owners, and a foreign manager's claim on its content.
pub fn child_metadata_changed(before: Option<&ObjectMeta>, after: Option<&ObjectMeta>) -> bool {
    match (before, after) {
        (Some(b), Some(a)) => {
            common_metadata_changed(b, a)
                || b.owner_references != a.owner_references
                || b.managed_fields != a.managed_fields
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn cm(name: &str, rv: &str, data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                resource_version: Some(rv.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some([("k".to_owned(), data.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

    type Events = mpsc::UnboundedSender<Result<Event<ConfigMap>, watcher::Error>>;

    fn feed() -> (Feed<ConfigMap>, Seen, Events) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut feed = Feed::from_stream("ConfigMap", stream, ());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let data = |c: Option<&ConfigMap>| c.and_then(|c| c.data.as_ref()?.get("k").cloned());
        feed.subscribe(move |before, after| log.lock().unwrap().push((data(before), data(after))));
        (feed, seen, tx)
    }

    #[tokio::test]
    async fn subscribers_see_before_and_after_once_the_store_has_it() {
        let (feed, seen, tx) = feed();
        let store = feed.store();
        let checked = store.clone();
        let mut feed = feed;
        // A subscriber reads the store: it must already hold the new object.
        feed.subscribe(move |_, after| {
            if let Some(after) = after {
                let held = checked.get(&ObjectRef::from_obj(after)).unwrap();
                assert_eq!(held.data, after.data);
            }
        });
        let run = tokio::spawn(feed.run(Arc::new(Metrics::default())));
        tx.send(Ok(Event::Init)).unwrap();
        tx.send(Ok(Event::InitApply(cm("a", "1", "x")))).unwrap();
        tx.send(Ok(Event::InitDone)).unwrap();
        tx.send(Ok(Event::Apply(cm("a", "2", "y")))).unwrap();
        tx.send(Ok(Event::Delete(cm("a", "3", "y")))).unwrap();
        // A relist that finds a new object and misses none.
        tx.send(Ok(Event::Init)).unwrap();
        tx.send(Ok(Event::InitApply(cm("b", "4", "z")))).unwrap();
        tx.send(Ok(Event::InitDone)).unwrap();
        drop(tx);
        run.await.unwrap();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(None, s("x")), (s("x"), s("y")), (s("y"), None), (None, s("z"))]
        );
        assert_eq!(store.state().len(), 1);
    }

    #[tokio::test]
    async fn a_relist_reports_what_vanished_as_deleted() {
        let (feed, seen, tx) = feed();
        let run = tokio::spawn(feed.run(Arc::new(Metrics::default())));
        tx.send(Ok(Event::Init)).unwrap();
        tx.send(Ok(Event::InitApply(cm("a", "1", "x")))).unwrap();
        tx.send(Ok(Event::InitDone)).unwrap();
        tx.send(Ok(Event::Init)).unwrap();
        tx.send(Ok(Event::InitDone)).unwrap();
        drop(tx);
        run.await.unwrap();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(*seen.lock().unwrap(), vec![(None, s("x")), (s("x"), None)]);
    }

    #[test]
    fn managed_fields_keep_only_foreign_content_claims() {
        let entry = |manager: &str, sub: Option<&str>, fields: serde_json::Value| ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some("Apply".to_owned()),
            subresource: sub.map(str::to_owned),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        };
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry(hone_crds::consts::FIELD_MANAGER, None, serde_json::json!({"f:spec": {"f:a": {}}})),
                entry("kubectl", None, serde_json::json!({"f:spec": {"f:replicas": {}}, "f:metadata": {}})),
                entry("kube-controller-manager", Some("status"), serde_json::json!({"f:status": {}})),
                entry("someone", None, serde_json::json!({"f:metadata": {"f:labels": {}}})),
            ]),
            ..ObjectMeta::default()
        };
        trim_managed_fields(&mut meta);
        let kept = meta.managed_fields.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].manager.as_deref(), Some("kubectl"));
        assert_eq!(kept[0].fields_v1.as_ref().unwrap().0, serde_json::json!({"f:spec": {}}));
        let mut none = ObjectMeta {
            managed_fields: Some(vec![entry("x", Some("status"), serde_json::json!({}))]),
            ..ObjectMeta::default()
        };
        trim_managed_fields(&mut none);
        assert!(none.managed_fields.is_none());
    }

    #[test]
    fn status_writes_do_not_count_as_primary_changes() {
        let a = cm("a", "1", "x");
        let mut b = cm("a", "2", "y");
        assert!(!primary_changed(Some(&a), Some(&b)), "data stands in for status here");
        b.metadata.generation = Some(2);
        assert!(primary_changed(Some(&a), Some(&b)));
        assert!(primary_changed(None, Some(&a)));
        assert!(!primary_changed(Some(&a), None));
        assert!(!changed_beyond_bookkeeping(Some(&a), Some(&cm("a", "9", "x"))));
        assert!(changed_beyond_bookkeeping(Some(&a), Some(&cm("a", "9", "z"))));
    }
}

#[cfg(test)]
mod trim_tests {
    #![allow(clippy::unwrap_used)]

    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec, Volume};

    use super::*;

    fn full_pod_spec() -> PodSpec {
        let container = |name: &str| Container {
            name: name.to_owned(),
            image: Some("hone:latest".to_owned()),
            args: Some(vec!["train".to_owned(); 20]),
            env: Some(vec![EnvVar {
                name: "X".to_owned(),
                value: Some("y".repeat(500)),
                ..EnvVar::default()
            }]),
            ..Container::default()
        };
        PodSpec {
            containers: vec![container("trainer")],
            init_containers: Some(vec![container("eval-split")]),
            volumes: Some(vec![Volume { name: "data".to_owned(), ..Volume::default() }]),
            service_account_name: Some("hone".to_owned()),
            ..PodSpec::default()
        }
    }

    #[test]
    fn a_trimmed_job_keeps_suspend_names_and_status_and_is_much_smaller() {
        let mut job = Job {
            metadata: ObjectMeta { name: Some("j".to_owned()), ..ObjectMeta::default() },
            spec: Some(JobSpec {
                suspend: Some(true),
                backoff_limit: Some(3),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { name: Some("t".to_owned()), ..ObjectMeta::default() }),
                    spec: Some(full_pod_spec()),
                },
                ..JobSpec::default()
            }),
            status: Some(Default::default()),
        };
        let before = serde_json::to_vec(&job).unwrap().len();
        trim_job(&mut job);
        let after = serde_json::to_vec(&job).unwrap().len();
        assert!(after * 5 < before, "{after} bytes after trimming, {before} before");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.suspend, Some(true));
        assert_eq!(spec.backoff_limit, Some(3));
        assert!(spec.template.metadata.is_none());
        let pod = spec.template.spec.as_ref().unwrap();
        assert!(pod.containers.is_empty());
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(init[0].name, "eval-split");
        assert!(init[0].env.is_none() && pod.volumes.is_none());
        assert!(job.status.is_some());
    }

    #[test]
    fn trimmed_pods_and_deployments_keep_status_and_metadata() {
        let mut pod = Pod {
            metadata: ObjectMeta { name: Some("p".to_owned()), ..ObjectMeta::default() },
            spec: Some(full_pod_spec()),
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Running".to_owned()),
                ..Default::default()
            }),
        };
        trim_pod(&mut pod);
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
        assert!(pod.spec.is_none());

        let mut deployment = Deployment {
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                replicas: Some(2),
                template: PodTemplateSpec { metadata: None, spec: Some(full_pod_spec()) },
                ..Default::default()
            }),
            ..Deployment::default()
        };
        trim_deployment(&mut deployment);
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        assert!(pod.containers.is_empty() && pod.volumes.is_none());
        assert_eq!(pod.init_containers.unwrap()[0].name, "eval-split");
        let mut plain = Deployment {
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec { init_containers: None, ..full_pod_spec() }),
                },
                ..Default::default()
            }),
            ..Deployment::default()
        };
        trim_deployment(&mut plain);
        assert!(plain.spec.unwrap().template.spec.is_none(), "nothing else of a template is kept");
    }
}

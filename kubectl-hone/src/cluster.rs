//! The plugin's reads and writes against the apiserver.

use std::time::Duration;

use hone_crds::inferenceservice::RolloutActionRecord;
use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::action::{self, Action};
use crate::lineage::Objects;

/// Why talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing one kind failed.
    #[error("listing {kind} ({scope}): {source}")]
    List {
        /// The kind listed.
        kind: String,
        /// The namespace, or "all namespaces".
        scope: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The InferenceService does not exist.
    #[error("InferenceService {namespace}/{name} not found")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Reading or patching the InferenceService failed.
    #[error("{step} InferenceService {namespace}/{name}: {source}")]
    Service {
        /// What was being done.
        step: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The action cannot be asked for.
    #[error(transparent)]
    Refused(#[from] action::Refusal),
    /// The operator did not answer in time.
    #[error(
        "the operator has not handled request {id} on InferenceService {namespace}/{name} within {timeout:?}: \
         is hone-operator running? The annotation stays and is acted on at its next reconcile"
    )]
    NoAnswer {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The request id.
        id: String,
        /// How long it waited.
        timeout: Duration,
    },
}

async fn list<K>(client: &Client, namespace: Option<&str>) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list(&ListParams::default()).await.map(|l| l.items).map_err(|source| Error::List {
        kind: K::kind(&()).into_owned(),
        scope: namespace.map_or_else(|| "all namespaces".to_owned(), |ns| format!("namespace {ns}")),
        source,
    })
}

/// Every Hone object of `namespace` (all namespaces with `None`), by namespace, in name order.
pub async fn objects(
    client: &Client,
    namespace: Option<&str>,
) -> Result<std::collections::BTreeMap<String, Objects>, Error> {
    let mut by_namespace: std::collections::BTreeMap<String, Objects> = std::collections::BTreeMap::new();
    if let Some(ns) = namespace {
        by_namespace.entry(ns.to_owned()).or_default();
    }
    macro_rules! collect {
        ($kind:ty, $field:ident) => {
            for object in list::<$kind>(client, namespace).await? {
                let ns = object.namespace().unwrap_or_default();
                by_namespace.entry(ns).or_default().$field.push(object);
            }
        };
    }
    collect!(Dataset, datasets);
    collect!(TrainingJob, training_jobs);
    collect!(ModelVersion, model_versions);
    collect!(InferenceService, inference_services);
    for objects in by_namespace.values_mut() {
        objects.datasets.sort_by_key(ResourceExt::name_any);
        objects.training_jobs.sort_by_key(ResourceExt::name_any);
        objects.model_versions.sort_by_key(|mv| (mv.spec.model.clone(), mv.spec.version));
        objects.inference_services.sort_by_key(ResourceExt::name_any);
    }
    Ok(by_namespace)
}

/// Checks that `action` has something to act on in `name` (a rollout in
/// progress of `variant`, or for a rollback a previous good version), asks
/// the operator for it, and (with `wait`) returns its answer.
pub async fn request(
    client: &Client,
    namespace: &str,
    name: &str,
    action: Action,
    variant: Option<&str>,
    wait: Option<Duration>,
) -> Result<Option<RolloutActionRecord>, Error> {
    let api: Api<InferenceService> = Api::namespaced(client.clone(), namespace);
    let failed = |step: &'static str| {
        move |source| Error::Service { step, namespace: namespace.to_owned(), name: name.to_owned(), source }
    };
    let isvc = api
        .get_opt(name)
        .await
        .map_err(failed("reading"))?
        .ok_or_else(|| Error::NotFound { namespace: namespace.to_owned(), name: name.to_owned() })?;
    action::check(&isvc, action, variant)?;
    let id = action::request_id();
    let patch = action::patch(action, &id, variant);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(failed("annotating"))?;
    let Some(timeout) = wait else { return Ok(None) };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let isvc = api.get(name).await.map_err(failed("reading"))?;
        if let Some(answer) = action::answer(&isvc, &id) {
            return Ok(Some(answer.clone()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NoAnswer {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                id,
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! What every reconcile shares: the client, the configuration, metrics,
//! the Event recorder and the retry backoff.

use std::sync::Arc;

use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::backoff::Backoff;
use crate::caches::Caches;
use crate::config::OperatorConfig;
use crate::metrics::Metrics;

/// Name the operator reports Events under.
pub const REPORTER: &str = "hone-operator";

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    /// Client to the apiserver.
    pub client: Client,
    /// Operator configuration.
    pub config: Arc<OperatorConfig>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-object retry backoff.
    pub backoff: Arc<Backoff>,
    /// The watch caches of this context's scope (empty until
    /// [`Context::with_caches`]); every read of a reconcile comes from here.
    pub caches: Arc<Caches>,
    recorder: Recorder,
}

/// An Event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// True for a Warning, false for Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// A sentence for a person.
    pub note: String,
    /// CamelCase action that was taken.
    pub action: String,
}

impl Context {
    /// A context over `client`; `instance` names this replica in Events (the pod name).
    pub fn new(
        client: Client,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter { controller: REPORTER.to_owned(), instance };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            config: Arc::new(config),
            metrics,
            backoff: Arc::new(Backoff::default()),
            caches: Arc::new(Caches::empty()),
            recorder,
        }
    }

    /// This context reading `caches` (one scope's watches).
    pub fn with_caches(&self, caches: Caches) -> Self {
        Self { caches: Arc::new(caches), ..self.clone() }
    }

    /// Publishes `event` about `obj`. An Event that cannot be written is logged,
    /// never fatal: Events are for people, status is the record.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, event: EventSpec) {
        let reference = obj.object_ref(&());
        let ev = Event {
            type_: if event.warning { EventType::Warning } else { EventType::Normal },
            reason: event.reason,
            note: Some(event.note),
            action: event.action,
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(%error, reason = %ev.reason, "publishing an Event failed");
        }
    }
}

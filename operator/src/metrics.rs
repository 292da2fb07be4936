//! Prometheus metrics (`hone_operator_*`), bounded labels only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming one controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `dataset`, `trainingjob`, `modelversion` or `inferenceservice`.
    pub controller: &'static str,
}

/// Labels of a finished reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The controller.
    pub controller: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller.
    pub controller: &'static str,
    /// The error's `category()`.
    pub category: &'static str,
}

/// Labels naming one watched kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind, as the feed names it (`Deployment`, `Pod(trainingjob)`, ...).
    pub kind: &'static str,
}

/// Labels of a request to the apiserver.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// The Kubernetes verb (see [`crate::api_calls::verb`]).
    pub verb: &'static str,
    /// The resource (see [`crate::api_calls::resource`]).
    pub resource: String,
}

/// Labels of the objects-by-phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `Dataset`, `TrainingJob`, `ModelVersion` or `InferenceService`.
    pub kind: &'static str,
    /// The status phase (`Unknown` before the first status).
    pub phase: String,
}

type DurationFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 5 ms .. ~40 s: a reconcile is a few API calls, a slow one waits on the apiserver.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The operator's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: DurationFamily,
    leader: Gauge,
    objects: Family<PhaseLabels, Gauge>,
    phase_counts: Mutex<PhaseBook>,
    watch_events: Family<KindLabels, Counter>,
    watch_errors: Family<KindLabels, Counter>,
    api_requests: Family<VerbLabels, Counter>,
}

/// Phase counts per (kind, watch scope), whose sums the gauge shows, and every
/// phase seen per kind.
#[derive(Debug, Default)]
struct PhaseBook {
    per_scope: HashMap<(&'static str, String), BTreeMap<String, i64>>,
    seen: HashMap<&'static str, BTreeSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `hone_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hone_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register("reconciles", "Reconciles finished, by controller and result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and error category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            durations.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the controllers",
            leader.clone(),
        );
        let objects = Family::<PhaseLabels, Gauge>::default();
        registry.register("objects", "Objects watched, by kind and status phase", objects.clone());
        let watch_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "watch_events",
            "Watch events taken into the operator's caches, by kind",
            watch_events.clone(),
        );
        let watch_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Watch failures (each retried with backoff), by kind",
            watch_errors.clone(),
        );
        let api_requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests this process sent to the apiserver, by verb (list, watch, get, apply, ...) and resource",
            api_requests.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            durations,
            leader,
            objects,
            phase_counts: Mutex::default(),
            watch_events,
            watch_errors,
            api_requests,
        }
    }

    /// Counts one request to the apiserver.
    pub fn record_api_request(&self, verb: &'static str, resource: String) {
        self.api_requests.get_or_create(&VerbLabels { verb, resource }).inc();
    }

    /// Counts one watch event of `kind` taken into a cache.
    pub fn record_watch_event(&self, kind: &'static str) {
        self.watch_events.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts one failed watch of `kind`.
    pub fn record_watch_error(&self, kind: &'static str) {
        self.watch_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// Starts timing a reconcile of `controller`.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer { metrics: self, controller, started: Instant::now() }
    }

    /// Counts a successful reconcile.
    pub fn record_success(&self, controller: &'static str) {
        self.reconciles.get_or_create(&ResultLabels { controller, result: "success" }).inc();
    }

    /// Counts a failed reconcile under its error category.
    pub fn record_error(&self, controller: &'static str, category: &'static str) {
        self.reconciles.get_or_create(&ResultLabels { controller, result: "error" }).inc();
        self.errors.get_or_create(&ErrorLabels { controller, category }).inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records how many objects of `kind` in watch `scope` are in each phase;
    /// phases no longer present read 0.
    pub fn record_phases(&self, kind: &'static str, scope: &str, counts: BTreeMap<String, i64>) {
        let Ok(mut book) = self.phase_counts.lock() else { return };
        book.seen.entry(kind).or_default().extend(counts.keys().cloned());
        book.per_scope.insert((kind, scope.to_owned()), counts);
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for ((k, _), per_scope) in &book.per_scope {
            if *k == kind {
                for (phase, n) in per_scope {
                    *sums.entry(phase.as_str()).or_default() += n;
                }
            }
        }
        for phase in book.seen.get(kind).into_iter().flatten() {
            let value = sums.get(phase.as_str()).copied().unwrap_or(0);
            self.objects.get_or_create(&PhaseLabels { kind, phase: phase.clone() }).set(value);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Observes the reconcile duration when dropped, so every exit path counts.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .durations
            .get_or_create(&ControllerLabels { controller: self.controller })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_exported() {
        let metrics = Metrics::new();
        {
            let _timer = metrics.start("dataset");
            metrics.record_success("dataset");
        }
        metrics.record_error("dataset", "kube_api");
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"hone_operator_reconciles_total{controller="dataset",result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hone_operator_reconciles_total{controller="dataset",result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"hone_operator_reconcile_errors_total{controller="dataset",category="kube_api"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"hone_operator_reconcile_duration_seconds_count{controller="dataset"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn objects_by_phase_sum_scopes_and_drop_to_zero() {
        let metrics = Metrics::new();
        let counts = |pairs: &[(&str, i64)]| pairs.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect();
        metrics.record_phases("TrainingJob", "a", counts(&[("Running", 2)]));
        metrics.record_phases("TrainingJob", "b", counts(&[("Running", 1), ("Failed", 1)]));
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"hone_operator_objects{kind="TrainingJob",phase="Running"} 3"#), "{text}");
        metrics.record_phases("TrainingJob", "b", counts(&[("Succeeded", 1)]));
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"hone_operator_objects{kind="TrainingJob",phase="Failed"} 0"#), "{text}");
        assert!(text.contains(r#"hone_operator_objects{kind="TrainingJob",phase="Running"} 2"#), "{text}");
        assert!(text.contains(r#"hone_operator_objects{kind="TrainingJob",phase="Succeeded"} 1"#), "{text}");
        metrics.set_leader(true);
        assert!(metrics.encode().unwrap().contains("hone_operator_leader 1"));
    }
}

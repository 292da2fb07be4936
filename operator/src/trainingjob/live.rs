//! Live progress: while a TrainingJob trains, rank 0's `GET /metrics`
//! (`hone_trainer_*`, port [`TRAINER_METRICS_PORT`]) is read, bounded in time
//! and size like the router scrape, into `status.progress` and
//! `status.metrics`. A trainer that does not answer (starting, a
//! bring-your-own image without the page) leaves the last figures as they
//! were; it never fails the TrainingJob.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hone_crds::contract::TRAINER_METRICS_PORT;
use hone_crds::trainingjob::{Progress, TrainingJobStatus};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::status::is_rank0;
use crate::inferenceservice::scrape::fetch;

/// How often a running TrainingJob's figures are read by default
/// (`--trainer-progress-seconds`).
pub const INTERVAL: Duration = Duration::from_secs(15);
/// Largest page read (the trainer's is about 2 KiB).
pub const MAX_BYTES: usize = 64 << 10;
/// Largest step count or epoch taken from a page; more is not believed.
const MAX_COUNT: f64 = 1e12;

/// The trainer's figures, as far as its page gave them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// `hone_trainer_<name>` -> value, finite values only.
    pub values: BTreeMap<String, f64>,
}

/// Names copied into `status.metrics` while training.
const LIVE_METRICS: [&str; 6] =
    ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "data_wait_ratio"];

impl Figures {
    /// The `hone_trainer_*` samples of a Prometheus text page (labels
    /// ignored, the first sample of a name kept, anything else skipped).
    pub fn parse(text: &str) -> Self {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("hone_trainer_") else { continue };
            let mut parts = rest.split_whitespace();
            let (Some(series), Some(value)) = (parts.next(), parts.next()) else { continue };
            let name = series.split('{').next().unwrap_or_default();
            let ok = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if let (true, Ok(value)) = (ok, value.parse::<f64>())
                && value.is_finite()
            {
                values.entry(name.to_owned()).or_insert(value);
            }
        }
        Self { values }
    }

    fn count(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied().filter(|v| (0.0..=MAX_COUNT).contains(v))
    }
}

/// Where rank 0 of the running attempt serves its figures: `address` when
/// the operator is told one, else the running rank-0 pod's IP.
pub fn target(pods: &[Pod], address: Option<SocketAddr>) -> Option<String> {
    if let Some(address) = address {
        return Some(format!("http://{address}/metrics"));
    }
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && is_rank0(pod))
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            (status.phase.as_deref() == Some("Running")).then_some(status.pod_ip.clone()?)
        })
        .map(|ip| {
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
            format!("http://{host}:{TRAINER_METRICS_PORT}/metrics")
        })
        .next()
}

/// Reads the figures at `url`.
pub async fn read(url: &str) -> Result<Figures, String> {
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    fetch(&http, url, MAX_BYTES).await.map(|text| Figures::parse(&text))
}

/// Writes `figures` into `status`: progress (with an estimate of the end
/// from the pace since `status.startTime`) and the live metrics. A page
/// without the epoch counts, or before the run is planned, changes nothing.
pub fn record(status: &mut TrainingJobStatus, figures: &Figures, now: &Time) {
    let (Some(epoch), Some(total_epochs)) = (figures.count("epoch"), figures.count("epochs")) else {
        return;
    };
    // 0 epochs planned: the trainer is still loading its data.
    if total_epochs < 1.0 {
        return;
    }
    let step = figures.count("step").map(|v| v as i64);
    let total_steps = figures.count("steps").map(|v| v as i64);
    let started = status.start_time.as_ref().map(|t| t.0);
    let estimated_completion_time = match (step, total_steps, started) {
        (Some(step), Some(total), Some(started)) if step > 0 && total >= step => {
            let elapsed = now.0.duration_since(started).as_secs_f64();
            let left = elapsed / step as f64 * (total - step) as f64;
            (elapsed > 0.0 && left.is_finite() && left < 1e9)
                .then(|| now.0.checked_add(SignedDuration::from_secs(left.round() as i64)).ok())
                .flatten()
                .map(Time)
        }
        _ => None,
    };
    status.progress = Some(Progress {
        epoch: epoch as u32,
        total_epochs: total_epochs as u32,
        step,
        total_steps,
        samples_per_second: figures.values.get("samples_per_second").copied().filter(|v| *v >= 0.0),
        estimated_completion_time,
        observed_time: Some(now.clone()),
    });
    let live: BTreeMap<String, f64> = LIVE_METRICS
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), *figures.values.get(*name)?)))
        .collect();
    if !live.is_empty() {
        status.metrics = Some(live);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::UNIX_EPOCH.checked_add(SignedDuration::from_secs(1_800_000_000 + seconds)).unwrap())
    }

    const PAGE: &str = "# HELP hone_trainer_epoch Epochs finished\n# TYPE hone_trainer_epoch gauge\n\
        hone_trainer_epoch 2\nhone_trainer_epochs 10\nhone_trainer_step 50\nhone_trainer_steps 250\n\
        hone_trainer_samples_per_second 812.5\nhone_trainer_loss 0.42\nhone_trainer_val_accuracy 0.91\n\
        hone_trainer_learning_rate NaN\nhone_trainer_accuracy{rank=\"0\"} 0.88\nhone_trainer_accuracy 0.1\n\
        other_metric 7\nhone_trainer_broken\nhone_trainer_bad name 1\n";

    #[test]
    fn the_trainers_page_becomes_progress_with_an_estimate_and_live_metrics() {
        let figures = Figures::parse(PAGE);
        assert_eq!(figures.values.get("accuracy"), Some(&0.88), "the first sample of a name");
        assert!(!figures.values.contains_key("learning_rate"), "NaN is not a figure");
        assert!(!figures.values.keys().any(|k| k.contains("other") || k.contains("broken")));
        let mut status = TrainingJobStatus { start_time: Some(at(0)), ..Default::default() };
        record(&mut status, &figures, &at(100));
        let progress = status.progress.clone().unwrap();
        assert_eq!((progress.epoch, progress.total_epochs), (2, 10));
        assert_eq!((progress.step, progress.total_steps), (Some(50), Some(250)));
        assert_eq!(progress.samples_per_second, Some(812.5));
        // 50 steps in 100 s: 200 steps left take 400 s more.
        assert_eq!(progress.estimated_completion_time, Some(at(500)));
        assert_eq!(progress.observed_time, Some(at(100)));
        let metrics = status.metrics.unwrap();
        assert_eq!(metrics.keys().collect::<Vec<_>>(), ["accuracy", "loss", "val_accuracy"]);
    }

    #[test]
    fn a_page_without_epochs_or_with_absurd_counts_changes_nothing() {
        let before = TrainingJobStatus {
            progress: Some(Progress { epoch: 1, total_epochs: 3, ..Progress::default() }),
            ..Default::default()
        };
        for page in [
            "",
            "hone_trainer_loss 0.3\n",
            "hone_trainer_epoch 0\nhone_trainer_epochs 0\nhone_trainer_loss 0\n",
            "hone_trainer_epoch -1\nhone_trainer_epochs 3\n",
            "hone_trainer_epoch 1e300\nhone_trainer_epochs 3\n",
        ] {
            let mut status = before.clone();
            record(&mut status, &Figures::parse(page), &at(5));
            assert_eq!(status, before, "{page:?}");
        }
        // No step yet, or no start time: progress without an estimate.
        let mut status = TrainingJobStatus::default();
        record(
            &mut status,
            &Figures::parse("hone_trainer_epoch 0\nhone_trainer_epochs 3\nhone_trainer_step 0\n"),
            &at(5),
        );
        let progress = status.progress.unwrap();
        assert_eq!((progress.epoch, progress.step, progress.estimated_completion_time), (0, Some(0), None));
    }

    fn pod(rank: &str, phase: &str, ip: Option<&str>) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(
            [("batch.kubernetes.io/job-completion-index".to_owned(), rank.to_owned())].into_iter().collect(),
        );
        pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            pod_ip: ip.map(str::to_owned),
            ..Default::default()
        });
        pod
    }

    #[test]
    fn the_running_rank_zero_pod_is_read_or_the_address_the_operator_was_given() {
        let pods = [
            pod("1", "Running", Some("10.0.0.2")),
            pod("0", "Pending", None),
            pod("0", "Running", Some("10.0.0.1")),
        ];
        assert_eq!(target(&pods, None).as_deref(), Some("http://10.0.0.1:9091/metrics"));
        assert_eq!(target(&pods[..2], None), None, "rank 0 is not running yet");
        let v6 = [pod("0", "Running", Some("fd00::7"))];
        assert_eq!(target(&v6, None).as_deref(), Some("http://[fd00::7]:9091/metrics"));
        let fixed = "127.0.0.1:4000".parse().ok();
        assert_eq!(target(&[], fixed).as_deref(), Some("http://127.0.0.1:4000/metrics"));
    }

    #[tokio::test]
    async fn a_page_is_read_over_http_and_a_huge_one_refused() {
        let url = crate::testutil::serve_once("200 OK", "hone_trainer_epoch 1\nhone_trainer_epochs 4\n");
        let figures = read(&url).await.unwrap();
        assert_eq!(figures.values.get("epochs"), Some(&4.0));
        let huge: &'static str =
            Box::leak(format!("hone_trainer_loss 1\n{}", "# x\n".repeat(20_000)).into_boxed_str());
        let url = crate::testutil::serve_once("200 OK", huge);
        assert!(read(&url).await.is_err(), "a page over {MAX_BYTES} bytes");
    }
}

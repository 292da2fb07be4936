//! Unit tests of the Dataset builders and status computation, from YAML fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use hone_crds::Dataset;
use hone_crds::conditions::find_condition;
use hone_crds::dataset::{DatasetPhase, DatasetStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use serde_json::json;

use super::desired::{self, Desired, INSPECT_CONTAINER};
use super::observe::Observed;
use super::status::{self, StatusInput};
use super::validate::{ValidDataset, validate};
use crate::labels::{LABEL_ROUND, LABEL_SPEC_HASH};
use crate::testutil::{job_with_condition, pod_terminated};

/// A Dataset `ml/digits` (uid `uid-1`, generation 3) with the spec in `yaml`.
pub(crate) fn dataset(yaml: &str) -> Dataset {
    let spec = serde_yaml::from_str(yaml).expect("fixture spec parses");
    let mut ds = Dataset::new("digits", spec);
    ds.metadata = ObjectMeta {
        name: Some("digits".into()),
        namespace: Some("ml".into()),
        uid: Some("uid-1".into()),
        generation: Some(3),
        ..Default::default()
    };
    ds
}

fn valid(yaml: &str) -> ValidDataset {
    validate(&dataset(yaml), "hone.local/trainer:dev").unwrap()
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

fn build(yaml: &str) -> Desired {
    desired::build(&valid(yaml), &Observed::default(), at(0))
}

fn container(desired: &Desired) -> Container {
    desired.job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].clone()
}

fn env(desired: &Desired) -> BTreeMap<String, String> {
    container(desired).env.unwrap().into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect()
}

// ---- desired ----

#[test]
fn inspect_job_has_name_labels_owner_and_args() {
    let desired = build("source: {uri: s3://data/digits/}");
    let meta = &desired.job.metadata;
    let name = meta.name.clone().unwrap();
    assert!(name.starts_with("digits-inspect-"), "{name}");
    assert!(name.len() <= 63);
    assert_eq!(meta.namespace.as_deref(), Some("ml"));
    let labels = meta.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "hone");
    assert_eq!(labels["app.kubernetes.io/part-of"], "hone");
    assert_eq!(labels["hone.dev/dataset"], "digits");
    assert_eq!(labels[LABEL_ROUND], "0");
    assert_eq!(labels[LABEL_SPEC_HASH].len(), 16);
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Dataset", "uid-1", Some(true)));
    let spec = desired.job.spec.as_ref().unwrap();
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(pod_labels["hone.dev/dataset"], "digits");
    let c = container(&desired);
    assert_eq!(c.name, INSPECT_CONTAINER);
    assert_eq!(c.image.as_deref(), Some("hone.local/trainer:dev"));
    assert_eq!(c.args, Some(vec!["inspect".to_owned()]));
    assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
    assert_eq!(spec.template.spec.as_ref().unwrap().restart_policy.as_deref(), Some("Never"));
    assert_eq!(desired.requeue_after, None);
}

#[test]
fn job_name_is_deterministic_and_follows_the_spec() {
    let a = build("source: {uri: s3://data/digits/}").job.metadata.name;
    let b = build("source: {uri: s3://data/digits/}").job.metadata.name;
    let c = build("source: {uri: s3://data/other/}").job.metadata.name;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let other_image = desired::build(
        &validate(&dataset("source: {uri: s3://data/digits/}"), "trainer:2").unwrap(),
        &Observed::default(),
        at(0),
    );
    assert_ne!(a, other_image.job.metadata.name, "a new trainer image re-verifies");
}

#[test]
fn image_folder_env_carries_size_and_split() {
    let desired = build(
        "source: {uri: s3://data/digits/}\nimage: {width: 28, height: 28, channels: 1}\nsplit: {validation: 0.2, test: 0.05, seed: 7}",
    );
    let env = env(&desired);
    assert_eq!(env["HONE_DATASET_SOURCE"], "s3://data/digits/");
    assert_eq!(env["HONE_DATASET_FORMAT"], "ImageFolder");
    assert_eq!(env["HONE_IMAGE_WIDTH"], "28");
    assert_eq!(env["HONE_IMAGE_HEIGHT"], "28");
    assert_eq!(env["HONE_IMAGE_CHANNELS"], "1");
    assert_eq!(env["HONE_SPLIT_VALIDATION"], "0.2");
    assert_eq!(env["HONE_SPLIT_TEST"], "0.05");
    assert_eq!(env["HONE_SPLIT_SEED"], "7");
    assert!(!env.contains_key("HONE_CSV_LABEL_COLUMN"));
    assert!(!env.contains_key("HONE_PVC_ROOT"));
}

#[test]
fn csv_env_names_label_and_features() {
    let desired = build(
        "source: {uri: s3://data/iris.csv}\nformat: CSV\ncsv: {labelColumn: species, featureColumns: [a, b]}",
    );
    let env = env(&desired);
    assert_eq!(env["HONE_DATASET_FORMAT"], "CSV");
    assert_eq!(env["HONE_CSV_LABEL_COLUMN"], "species");
    assert_eq!(env["HONE_CSV_FEATURE_COLUMNS"], "a,b");
    assert!(!env.contains_key("HONE_IMAGE_WIDTH"));
    assert_eq!(env["HONE_SPLIT_SEED"], "42");
}

#[test]
fn secret_ref_becomes_env_from() {
    let desired = build("source: {uri: s3://data/digits/, secretRef: {name: s3-creds}}");
    let env_from = container(&desired).env_from.unwrap();
    assert_eq!(env_from[0].secret_ref.as_ref().unwrap().name, "s3-creds");
    assert!(container(&build("source: {uri: s3://data/digits/}")).env_from.is_none());
}

#[test]
fn pvc_source_is_mounted_read_only() {
    let desired = build("source: {uri: pvc://datasets/digits}");
    let pod = desired.job.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.persistent_volume_claim.is_some()).unwrap();
    let claim = volume.persistent_volume_claim.unwrap();
    assert_eq!((claim.claim_name.as_str(), claim.read_only), ("datasets", Some(true)));
    let mount =
        container(&desired).volume_mounts.unwrap().into_iter().find(|m| m.name == volume.name).unwrap();
    assert_eq!(mount.mount_path, "/mnt/pvc/datasets");
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(env(&desired)["HONE_PVC_ROOT"], "/mnt/pvc");
}

#[test]
fn pod_passes_pod_security_restricted() {
    let desired = build("source: {uri: s3://data/digits/}");
    let pod = desired.job.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let sc = container(&desired).security_context.unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert!(sc.privileged.is_none());
    let mounts = container(&desired).volume_mounts.unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/tmp"), "a read-only root needs a writable /tmp");
}

/// The desired Job of `yaml`, as the apiserver would report it after finishing at `finished`.
fn finished_job(desired: &Desired, finished: Timestamp) -> Job {
    let mut job = job_with_condition("Complete", None, None);
    job.metadata = desired.job.metadata.clone();
    job.status.as_mut().unwrap().completion_time = Some(Time(finished));
    job
}

#[test]
fn refresh_waits_for_the_interval_then_starts_a_new_round() {
    let yaml = "source: {uri: s3://data/digits/}\nrefreshInterval: 1h";
    let first = build(yaml);
    assert_eq!(first.round, 0);
    let observed = Observed { jobs: vec![finished_job(&first, at(0))], pods: vec![] };

    let early = desired::build(&valid(yaml), &observed, at(600));
    assert_eq!(early.round, 0);
    assert_eq!(early.job.metadata.name, first.job.metadata.name);
    assert_eq!(early.requeue_after, Some(Duration::from_secs(3000)));

    let due = desired::build(&valid(yaml), &observed, at(3600));
    assert_eq!(due.round, 1);
    assert_ne!(due.job.metadata.name, first.job.metadata.name);
    assert_eq!(due.job.metadata.labels.as_ref().unwrap()[LABEL_ROUND], "1");
    assert_eq!(due.requeue_after, None, "the new Job's completion triggers the next look");
}

#[test]
fn without_refresh_a_finished_job_stays() {
    let yaml = "source: {uri: s3://data/digits/}";
    let first = build(yaml);
    let observed = Observed { jobs: vec![finished_job(&first, at(0))], pods: vec![] };
    let later = desired::build(&valid(yaml), &observed, at(86_400 * 30));
    assert_eq!((later.round, later.requeue_after), (0, None));
    assert_eq!(later.job.metadata.name, first.job.metadata.name);
}

#[test]
fn a_spec_change_starts_over_at_round_zero() {
    let old = build("source: {uri: s3://data/digits/}\nrefreshInterval: 1h");
    let observed = Observed { jobs: vec![finished_job(&old, at(0))], pods: vec![] };
    let new =
        desired::build(&valid("source: {uri: s3://data/v2/}\nrefreshInterval: 1h"), &observed, at(7200));
    assert_eq!(new.round, 0);
}

// ---- status ----

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn time(seconds: i64) -> Time {
    Time(at(seconds))
}

fn named(mut job: Job, name: &str) -> Job {
    job.metadata.name = Some(name.to_owned());
    job
}

fn running_job() -> Job {
    serde_json::from_value(json!({"metadata": {"name": "digits-inspect-1"}, "status": {"active": 1}}))
        .unwrap()
}

fn inspect_pod(digest: &str) -> Pod {
    let summary = json!({
        "kind": "inspect", "digest": digest, "samples": 1797, "sizeBytes": 123456,
        "classes": ["0", "1"], "classCounts": {"0": 900, "1": 897}
    });
    pod_terminated("digits-inspect-1", INSPECT_CONTAINER, "2024-01-01T00:09:00Z", &summary.to_string())
}

fn compute(previous: &DatasetStatus, job: Option<&Job>, pods: &[Pod], round: u32, now: i64) -> DatasetStatus {
    status::compute(StatusInput { generation: Some(3), previous, job, pods, round }, &time(now))
}

fn ready(status: &DatasetStatus) -> (String, String, String) {
    let c = find_condition(&status.conditions, "Ready").expect("Ready condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn no_job_yet_is_pending() {
    let status = compute(&DatasetStatus::default(), None, &[], 0, 0);
    assert_eq!(status.phase, Some(DatasetPhase::Pending));
    assert_eq!(ready(&status).0, "False");
    assert_eq!(status.observed_generation, Some(3));
}

#[test]
fn running_job_is_verifying() {
    let job = running_job();
    let status = compute(&DatasetStatus::default(), Some(&job), &[], 0, 0);
    assert_eq!(status.phase, Some(DatasetPhase::Verifying));
    let (s, reason, message) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "Verifying"));
    assert!(message.contains("digits-inspect-1"));
    assert_eq!(status.inspect_job_name.as_deref(), Some("digits-inspect-1"));
    assert_eq!(status.verified_at, None);
}

#[test]
fn succeeded_with_summary_is_ready_with_counts() {
    let job = named(job_with_condition("Complete", None, None), "digits-inspect-1");
    let status = compute(&DatasetStatus::default(), Some(&job), &[inspect_pod(DIGEST_A)], 0, 10);
    assert_eq!(status.phase, Some(DatasetPhase::Ready));
    assert_eq!(status.digest.as_deref(), Some(DIGEST_A));
    assert_eq!(status.samples, Some(1797));
    assert_eq!(status.size_bytes, Some(123456));
    assert_eq!(status.classes, Some(vec!["0".to_owned(), "1".to_owned()]));
    assert_eq!(status.class_counts.as_ref().unwrap()["1"], 897);
    assert_eq!(status.content_version, Some(1));
    assert_eq!(status.verified_at, Some(time(10)));
    let (s, reason, message) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("True", "Verified"));
    assert!(message.contains("1797 samples"), "{message}");

    // The same world again: nothing moves, so no status patch.
    let again = compute(&status, Some(&job), &[inspect_pod(DIGEST_A)], 0, 500);
    assert_eq!(again, status);
    assert!(status::events(&status, &again).is_empty());
}

#[test]
fn failed_with_error_summary_reports_the_trainer_reason() {
    let job = named(
        job_with_condition(
            "Failed",
            Some("BackoffLimitExceeded"),
            Some("Job has reached the specified backoff limit"),
        ),
        "digits-inspect-1",
    );
    let pod = pod_terminated(
        "digits-inspect-1",
        INSPECT_CONTAINER,
        "2024-01-01T00:09:00Z",
        r#"{"kind":"error","reason":"InvalidData","message":"train/3/bad.png: not a PNG"}"#,
    );
    let status = compute(&DatasetStatus::default(), Some(&job), &[pod], 0, 0);
    assert_eq!(status.phase, Some(DatasetPhase::Failed));
    assert_eq!(
        ready(&status),
        ("False".to_owned(), "InvalidData".to_owned(), "train/3/bad.png: not a PNG".to_owned())
    );
    let events = status::events(&DatasetStatus::default(), &status);
    assert_eq!(events.len(), 1);
    assert!(events[0].warning);
    assert_eq!(events[0].reason, "InvalidData");
}

#[test]
fn failed_without_message_points_at_the_logs() {
    let job = named(
        job_with_condition(
            "Failed",
            Some("DeadlineExceeded"),
            Some("Job was active longer than specified deadline"),
        ),
        "digits-inspect-1",
    );
    let status = compute(&DatasetStatus::default(), Some(&job), &[], 0, 0);
    assert_eq!(status.phase, Some(DatasetPhase::Failed));
    let (s, reason, message) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "InspectJobFailed"));
    assert!(message.contains("DeadlineExceeded"), "{message}");
    assert!(message.contains("kubectl logs job/digits-inspect-1"), "{message}");
}

#[test]
fn failed_with_a_crash_log_quotes_it() {
    let job = named(job_with_condition("Failed", Some("BackoffLimitExceeded"), None), "digits-inspect-1");
    let pod = pod_terminated(
        "digits-inspect-1",
        INSPECT_CONTAINER,
        "2024-01-01T00:09:00Z",
        "thread 'main' panicked",
    );
    let status = compute(&DatasetStatus::default(), Some(&job), &[pod], 0, 0);
    assert!(ready(&status).2.contains("panicked"));
}

#[test]
fn succeeded_without_summary_is_failed_not_ready() {
    let job = named(job_with_condition("Complete", None, None), "digits-inspect-1");
    let status = compute(&DatasetStatus::default(), Some(&job), &[], 0, 0);
    assert_eq!(status.phase, Some(DatasetPhase::Failed));
    assert_eq!(ready(&status).1, "SummaryMissing");
    assert_eq!(status.digest, None);
}

#[test]
fn digest_change_bumps_content_version_with_an_event() {
    let job = named(job_with_condition("Complete", None, None), "digits-inspect-1");
    let first = compute(&DatasetStatus::default(), Some(&job), &[inspect_pod(DIGEST_A)], 0, 10);
    let second = compute(&first, Some(&job), &[inspect_pod(DIGEST_B)], 1, 7200);
    assert_eq!(second.digest.as_deref(), Some(DIGEST_B));
    assert_eq!(second.content_version, Some(2));
    assert_eq!(second.verified_at, Some(time(7200)));
    let condition = find_condition(&second.conditions, "Ready").unwrap();
    assert_eq!(condition.last_transition_time, time(10), "Ready stayed True");
    let events = status::events(&first, &second);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "ContentChanged");
    assert!(events[0].note.contains("content version 2"));
}

#[test]
fn same_digest_on_refresh_keeps_verified_at() {
    let job = named(job_with_condition("Complete", None, None), "digits-inspect-1");
    let first = compute(&DatasetStatus::default(), Some(&job), &[inspect_pod(DIGEST_A)], 0, 10);
    let refreshed = compute(&first, Some(&job), &[inspect_pod(DIGEST_A)], 1, 7200);
    assert_eq!(refreshed.verified_at, Some(time(10)));
    assert_eq!(refreshed.content_version, Some(1));
}

#[test]
fn refresh_of_a_ready_dataset_stays_ready_while_running() {
    let done = named(job_with_condition("Complete", None, None), "digits-inspect-1");
    let ready_status = compute(&DatasetStatus::default(), Some(&done), &[inspect_pod(DIGEST_A)], 0, 10);
    let refreshing = compute(&ready_status, Some(&running_job()), &[], 1, 3700);
    assert_eq!(refreshing.phase, Some(DatasetPhase::Ready));
    assert_eq!(ready(&refreshing).0, "True");
    // A spec change (round 0) is a new verification: not Ready until it passes.
    let respec = compute(&ready_status, Some(&running_job()), &[], 0, 3700);
    assert_eq!(respec.phase, Some(DatasetPhase::Verifying));
    assert_eq!(ready(&respec).0, "False");
}

#[test]
fn invalid_spec_is_failed_with_the_message() {
    let status = status::invalid(&DatasetStatus::default(), Some(3), "spec.refreshInterval is bad", &time(0));
    assert_eq!(status.phase, Some(DatasetPhase::Failed));
    assert_eq!(
        ready(&status),
        ("False".to_owned(), "InvalidSpec".to_owned(), "spec.refreshInterval is bad".to_owned())
    );
    let again = status::invalid(&status, Some(3), "spec.refreshInterval is bad", &time(60));
    assert_eq!(again, status, "an unchanged invalid spec writes nothing");
}

#[test]
fn odd_trainer_reasons_fall_back_to_a_generic_one() {
    let job = named(job_with_condition("Failed", Some("BackoffLimitExceeded"), None), "digits-inspect-1");
    let pod = pod_terminated(
        "digits-inspect-1",
        INSPECT_CONTAINER,
        "2024-01-01T00:09:00Z",
        r#"{"kind":"error","reason":"not camel case!","message":"m"}"#,
    );
    let status = compute(&DatasetStatus::default(), Some(&job), &[pod], 0, 0);
    assert_eq!(ready(&status).1, "InspectJobFailed");
}

//! Unit tests of the ModelVersion validation, Jobs, status and deletion steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_crds::conditions::find_condition;
use hone_crds::modelversion::{ArtifactFormat, ModelVersionPhase};
use hone_crds::{InferenceService, ModelVersion, ModelVersionStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::desired::{self, Error, PurgeScope, VERIFY_CONTAINER};
use super::finalize::{DeletionInput, Step, refused_for_good, step};
use super::status::{self, StatusInput};
use crate::config::OperatorConfig;
use crate::testutil::{job_with_condition, pod_terminated};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn model_version(uri: &str, labels: serde_json::Value) -> ModelVersion {
    serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": "digits-v3", "namespace": "ml", "uid": "mv-uid", "generation": 1, "labels": labels},
        "spec": {
            "model": "digits", "version": 3,
            "artifact": {"uri": uri, "format": "TorchScript", "digest": DIGEST, "secretRef": {"name": "s3"}},
            "signature": {"inputShape": [1, 32, 32], "classes": ["0", "1"]}
        }
    }))
    .unwrap()
}

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

#[test]
fn artifact_locations_a_pod_cannot_read_are_invalid_with_a_fix() {
    let config = OperatorConfig::default();
    for (uri, needle) in [
        ("file:///models/model.pt", "file:// cannot be read"),
        ("ftp://host/model.pt", "scheme \"ftp\""),
        ("s3://models/run/", "must name the TorchScript file"),
        ("pvc:///model.pt", "scheme \"pvc\""),
    ] {
        let err = desired::validate(&model_version(uri, json!({})), &config).unwrap_err();
        let Error::InvalidSpec(message) = err else { panic!("{uri}: not InvalidSpec") };
        assert!(message.contains(needle), "{uri}: {message}");
    }
    assert!(desired::validate(&model_version("s3://m/a/model.pt", json!({})), &config).is_ok());
    assert!(desired::validate(&model_version("pvc://claim/a/model.pt", json!({})), &config).is_ok());
}

#[test]
fn verify_job_runs_the_predictor_restricted_with_digest_and_credentials() {
    let valid = desired::validate(&model_version("s3://m/a/model.pt", json!({})), &OperatorConfig::default())
        .unwrap();
    let job = desired::verify_job(&valid, None);
    assert_eq!(job.metadata.name.as_deref(), Some(desired::verify_job_name(&valid).as_str()));
    assert_eq!(job.metadata.labels.as_ref().unwrap()["hone.dev/modelversion"], "digits-v3");
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("ModelVersion", Some(true)));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.name, VERIFY_CONTAINER);
    assert_eq!(c.image.as_deref(), Some(OperatorConfig::default().predictor_image.as_str()));
    assert_eq!(c.args.as_deref(), Some(&["verify".to_owned()][..]));
    let env: Vec<(String, String)> =
        c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
    assert!(env.contains(&("HONE_MODEL_URI".into(), "s3://m/a/model.pt".into())));
    assert!(env.contains(&("HONE_MODEL_DIGEST".into(), DIGEST.into())));
    assert_eq!(c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3");
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
}

#[test]
fn an_onnx_artifact_names_model_onnx_and_its_format_reaches_the_verify_pod() {
    let config = OperatorConfig::default();
    let onnx = |uri: &str| {
        let mut mv = model_version(uri, json!({}));
        mv.spec.artifact.format = ArtifactFormat::Onnx;
        mv
    };
    let err = desired::validate(&onnx("s3://m/a/model.pt"), &config).unwrap_err();
    let Error::InvalidSpec(message) = err else { panic!("not InvalidSpec") };
    assert!(message.contains("must name the ONNX file (model.onnx)"), "{message}");
    let valid = desired::validate(&onnx("s3://m/a/model.onnx"), &config).unwrap();
    let files = vec!["s3://m/a/model.onnx".to_owned(), "s3://m/a/model.json".to_owned()];
    assert_eq!(valid.purge_scope, PurgeScope::Files(files));
    let env_of = |valid: &desired::ValidModelVersion| -> Vec<(String, String)> {
        let job = desired::verify_job(valid, None);
        let pod = job.spec.unwrap().template.spec.unwrap();
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect()
    };
    assert!(env_of(&valid).contains(&("HONE_MODEL_FORMAT".into(), "ONNX".into())));
    let torchscript = desired::validate(&model_version("s3://m/a/model.pt", json!({})), &config).unwrap();
    assert!(env_of(&torchscript).contains(&("HONE_MODEL_FORMAT".into(), "TorchScript".into())));
}

fn with_run_folder(mut mv: ModelVersion, folder: &str) -> ModelVersion {
    mv.status = Some(ModelVersionStatus { run_folder: Some(folder.to_owned()), ..Default::default() });
    mv
}

fn named(mut mv: ModelVersion, name: &str) -> ModelVersion {
    mv.metadata.name = Some(name.to_owned());
    mv
}

#[test]
fn purge_deletes_the_recorded_run_folder_and_only_the_files_otherwise() {
    let config = OperatorConfig::default();
    let run =
        with_run_folder(model_version("s3://m/out/cnn/tj-uid/model.pt", json!({})), "s3://m/out/cnn/tj-uid");
    let valid = desired::validate(&run, &config).unwrap();
    assert_eq!(valid.purge_scope, PurgeScope::RunFolder("s3://m/out/cnn/tj-uid".to_owned()));
    let spec = desired::purge_job(&valid).spec.unwrap();
    let args = spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    assert_eq!(args, ["purge", "--uri", "s3://m/out/cnn/tj-uid", "--prefix"]);
    assert_eq!(spec.active_deadline_seconds, Some(desired::PURGE_DEADLINE_SECONDS), "a purge cannot hang");
    assert_eq!(spec.backoff_limit, Some(2));

    let by_hand = desired::validate(&model_version("s3://m/shared/model.pt", json!({})), &config).unwrap();
    let files = vec!["s3://m/shared/model.pt".to_owned(), "s3://m/shared/model.json".to_owned()];
    assert_eq!(by_hand.purge_scope, PurgeScope::Files(files.clone()));
    let args = desired::purge_job(&by_hand).spec.unwrap().template.spec.unwrap().containers[0].args.clone();
    assert_eq!(
        args.unwrap(),
        ["purge", "--uri", "s3://m/shared/model.pt", "--uri", "s3://m/shared/model.json"]
    );
}

#[test]
fn labels_never_widen_a_purge_and_a_run_folder_must_hold_the_artifact() {
    let files = |dir: &str| PurgeScope::Files(vec![format!("{dir}/model.pt"), format!("{dir}/model.json")]);
    // The label the old rule trusted, with a URI that matches it: still only the files.
    let hostile =
        model_version("s3://m/shared/tj-uid/model.pt", json!({"hone.dev/trainingjob-uid": "tj-uid"}));
    assert_eq!(desired::purge_scope(&hostile), files("s3://m/shared/tj-uid"));
    // A recorded folder that does not hold the artifact is not used.
    let elsewhere =
        with_run_folder(model_version("s3://m/shared/model.pt", json!({})), "s3://m/out/cnn/tj-uid");
    assert_eq!(desired::purge_scope(&elsewhere), files("s3://m/shared"));
    // Nor a bucket root, a folder that is a mere string prefix, or a folder without a scheme.
    for folder in ["s3://", "s3://m/out/cnn/tj", "m/out/cnn/tj-uid"] {
        let odd = with_run_folder(model_version("s3://m/out/cnn/tj-uid/model.pt", json!({})), folder);
        assert_eq!(desired::purge_scope(&odd), files("s3://m/out/cnn/tj-uid"), "{folder}");
    }
    let trailing = with_run_folder(model_version("s3://m/out/r/model.pt", json!({})), "s3://m/out/r/");
    assert_eq!(desired::purge_scope(&trailing), PurgeScope::RunFolder("s3://m/out/r".to_owned()));
}

#[test]
fn another_version_holding_the_files_keeps_them() {
    let deleting = named(model_version("s3://m/shared/model.pt", json!({})), "a");
    let same = named(model_version("s3://m/shared/model.pt", json!({})), "b");
    let other_file = named(model_version("s3://m/shared/other/model.pt", json!({})), "c");
    let around =
        named(with_run_folder(model_version("s3://m/shared/run/model.pt", json!({})), "s3://m/shared"), "d");
    assert_eq!(desired::kept_by(&deleting, &[deleting.clone(), same.clone(), other_file.clone()]), ["b"]);
    assert!(desired::kept_by(&deleting, &[deleting.clone(), other_file.clone()]).is_empty());
    // A run folder around this version's files holds them.
    assert_eq!(desired::kept_by(&deleting, std::slice::from_ref(&around)), ["d"]);
    // A run folder being purged holds what other versions point at inside it.
    let run =
        named(with_run_folder(model_version("s3://m/out/r1/model.pt", json!({})), "s3://m/out/r1"), "run");
    let checkpoint = named(model_version("s3://m/out/r1/best/model.pt", json!({})), "best");
    let neighbour = named(model_version("s3://m/out/r10/model.pt", json!({})), "r10");
    assert_eq!(desired::kept_by(&run, &[run.clone(), checkpoint, neighbour.clone()]), ["best"]);
    assert!(desired::kept_by(&run, &[neighbour]).is_empty(), "r10 is not inside r1");
    // A version being deleted too keeps nothing.
    let mut leaving = same;
    leaving.metadata.deletion_timestamp = Some(now());
    assert!(desired::kept_by(&deleting, &[leaving]).is_empty());
}

#[test]
fn scopes_overlap_by_whole_path_segments() {
    let folder = |f: &str| PurgeScope::RunFolder(f.to_owned());
    let files = |f: &[&str]| PurgeScope::Files(f.iter().map(|s| (*s).to_owned()).collect());
    assert!(folder("s3://b/a").overlaps(&folder("s3://b/a/c")));
    assert!(folder("s3://b/a/c").overlaps(&folder("s3://b/a")));
    assert!(!folder("s3://b/a").overlaps(&folder("s3://b/ab")));
    assert!(folder("s3://b/a").overlaps(&files(&["s3://b/a/model.pt"])));
    assert!(files(&["s3://b/a/model.pt"]).overlaps(&folder("s3://b/a")));
    assert!(!files(&["s3://b/a/model.pt"]).overlaps(&files(&["s3://b/a/x.pt"])));
    assert!(files(&["s3://b/a/model.json"]).overlaps(&files(&["s3://b/a/x.pt", "s3://b/a/model.json"])));
}

#[test]
fn served_by_reads_spec_status_and_both_sides_of_a_rollout() {
    let isvc = |name: &str, spec_mv: &str, status: serde_json::Value| -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {"variants": [{"name": "a", "modelVersion": spec_mv, "weight": 100}]},
            "status": status
        }))
        .unwrap()
    };
    let services = vec![
        isvc("z-spec", "digits-v3", json!({})),
        isvc(
            "b-status",
            "digits-v4",
            json!({"variants": [{"name": "a", "modelVersion": "digits-v3", "weight": 100, "replicas": 1, "readyReplicas": 1}]}),
        ),
        isvc(
            "a-rollout",
            "digits-v4",
            json!({"rollout": {"variant": "a", "fromVersion": "digits-v3", "toVersion": "digits-v4", "step": 0, "canaryWeight": 10}}),
        ),
        isvc("other", "digits-v5", json!({})),
    ];
    assert_eq!(desired::served_by("digits-v3", &services), ["a-rollout", "b-status", "z-spec"]);
    assert!(desired::served_by("digits-v9", &services).is_empty());
}

fn input<'a>(
    previous: &'a ModelVersionStatus,
    job: Option<&'a k8s_openapi::api::batch::v1::Job>,
    pods: &'a [k8s_openapi::api::core::v1::Pod],
) -> StatusInput<'a> {
    StatusInput {
        generation: Some(1),
        previous,
        job,
        pods,
        served_by: &[],
        spec_digest: Some(DIGEST),
        evaluation_dataset: None,
        evaluation_required: true,
        plan: &desired::EvaluationPlan::NoDataset,
    }
}

#[test]
fn status_follows_the_verify_job_and_its_summary() {
    let previous = ModelVersionStatus::default();
    let pending = status::compute(input(&previous, None, &[]), &now());
    assert_eq!(pending.phase, Some(ModelVersionPhase::Pending));

    let running = job_with_condition("Suspended", None, None);
    let verifying = status::compute(input(&previous, Some(&running), &[]), &now());
    assert_eq!(verifying.phase, Some(ModelVersionPhase::Verifying));

    let done = job_with_condition("Complete", None, None);
    let ok = format!(
        r#"{{"ok":true,"model":"s3://m/model.pt","digest":"{DIGEST}","sizeBytes":1234,"forwardMs":1.5}}"#
    );
    let pods = [pod_terminated("j", VERIFY_CONTAINER, "2024-01-01T00:09:00Z", &ok)];
    let ready = status::compute(input(&previous, Some(&done), &pods), &now());
    assert_eq!(ready.phase, Some(ModelVersionPhase::Ready));
    assert_eq!(ready.verified_digest.as_deref(), Some(DIGEST));
    assert_eq!(ready.size_bytes, Some(1234));
    assert_eq!(find_condition(&ready.conditions, "Ready").unwrap().status, "True");
    assert_eq!(ready.verify_job_name.as_deref(), Some("j"));

    // The recorded outcome stands when the Job is gone.
    assert_eq!(status::compute(input(&ready, None, &[]), &now()).phase, Some(ModelVersionPhase::Ready));
}

#[test]
fn each_failure_has_a_reason_and_a_message() {
    let previous = ModelVersionStatus::default();
    let failed = job_with_condition("Failed", Some("BackoffLimitExceeded"), Some("too many"));
    let mismatch = r#"{"ok":false,"model":"s3://m/model.pt","reason":"DigestMismatch","message":"expected sha256:1, found sha256:2"}"#;
    let pods = [pod_terminated("j", VERIFY_CONTAINER, "2024-01-01T00:09:00Z", mismatch)];
    let s = status::compute(input(&previous, Some(&failed), &pods), &now());
    let ready = find_condition(&s.conditions, "Ready").unwrap();
    assert_eq!((s.phase, ready.reason.as_str()), (Some(ModelVersionPhase::Failed), "DigestMismatch"));
    assert!(ready.message.contains("found sha256:2"));

    let crash = [pod_terminated("j", VERIFY_CONTAINER, "2024-01-01T00:09:00Z", "Segmentation fault")];
    let s = status::compute(input(&previous, Some(&failed), &crash), &now());
    let ready = find_condition(&s.conditions, "Ready").unwrap();
    assert_eq!(ready.reason, "VerifyFailed");
    assert!(
        ready.message.contains("Segmentation fault") && ready.message.contains("kubectl logs"),
        "{}",
        ready.message
    );

    let done = job_with_condition("Complete", None, None);
    let s = status::compute(input(&previous, Some(&done), &[]), &now());
    assert_eq!(find_condition(&s.conditions, "Ready").unwrap().reason, "VerifyFailed");

    // A verifier that read other bytes than the spec pins fails even if it says ok.
    let other = r#"{"ok":true,"model":"m","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222"}"#;
    let pods = [pod_terminated("j", VERIFY_CONTAINER, "2024-01-01T00:09:00Z", other)];
    let s = status::compute(input(&previous, Some(&done), &pods), &now());
    assert_eq!(find_condition(&s.conditions, "Ready").unwrap().reason, "DigestMismatch");

    let s = status::invalid(input(&previous, None, &[]), "bad uri", &now());
    assert_eq!(find_condition(&s.conditions, "Ready").unwrap().reason, "InvalidSpec");
}

#[test]
fn served_by_changes_and_new_outcomes_publish_events() {
    let previous = ModelVersionStatus::default();
    let mut next = previous.clone();
    next.served_by = vec!["web".into()];
    let events = status::events(&previous, &next);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "ServedByChanged");
    assert!(status::events(&next, &next).is_empty(), "an unchanged status publishes nothing");
}

fn deletion(
    served_by: &[String],
    purge: bool,
    kept_by: &[String],
    job: Option<&k8s_openapi::api::batch::v1::Job>,
) -> Step {
    step(DeletionInput { served_by, purge, kept_by, purge_job: job, purge_pods: &[] })
}

#[test]
fn deletion_waits_for_servers_then_purges_then_releases() {
    let served = vec!["web".to_owned()];
    assert_eq!(deletion(&served, true, &[], None), Step::Blocked(served.clone()));
    assert_eq!(deletion(&[], false, &[], None), Step::Release);
    assert_eq!(deletion(&[], true, &[], None), Step::StartPurge);
    let running = job_with_condition("Suspended", None, None);
    assert_eq!(deletion(&[], true, &[], Some(&running)), Step::Purging);
    let done = job_with_condition("Complete", None, None);
    assert_eq!(deletion(&[], true, &[], Some(&done)), Step::Release);
}

#[test]
fn a_shared_artifact_is_kept_and_a_purge_that_cannot_finish_releases() {
    let keepers = vec!["digits-v4".to_owned()];
    assert_eq!(deletion(&[], true, &keepers, None), Step::KeptBy(keepers.clone()));
    assert_eq!(deletion(&[], false, &keepers, None), Step::Release, "no policy, nothing to keep");
    // A purge already running finishes.
    let done = job_with_condition("Complete", None, None);
    assert_eq!(deletion(&[], true, &keepers, Some(&done)), Step::Release);
    // Failed or past its deadline: released, never held.
    let failed = job_with_condition("Failed", Some("DeadlineExceeded"), Some("too long"));
    assert!(
        matches!(deletion(&[], true, &[], Some(&failed)), Step::PurgeFailed(m) if m.contains("DeadlineExceeded"))
    );
    // A pod that cannot start (its Secret is gone) fails the purge at once.
    let running = job_with_condition("Suspended", None, None);
    let stuck: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "purge", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerConfigError",
            "message": "secret \"s3\" not found"}}}]}
    }))
    .unwrap();
    let pods = [&stuck];
    let input =
        DeletionInput { purge: true, purge_job: Some(&running), purge_pods: &pods, ..Default::default() };
    assert!(matches!(step(input), Step::PurgeFailed(m) if m.contains("secret \"s3\" not found")));
}

#[test]
fn a_refused_purge_job_is_final_only_for_403_and_404() {
    let api = |code: u16| {
        let message = "unable to create new content in namespace ml because it is being terminated";
        kube::Error::Api(Box::new(kube::core::Status::failure(message, "Forbidden").with_code(code)))
    };
    assert!(refused_for_good(&api(403)));
    assert!(refused_for_good(&api(404)));
    assert!(!refused_for_good(&api(500)));
    assert!(!refused_for_good(&api(409)));
}

#[test]
fn event_notes_name_at_most_three_objects() {
    let names: Vec<String> = (0..500).map(|i| format!("svc-{i}")).collect();
    assert_eq!(status::bounded_list(&names[..2], 3), "svc-0, svc-1");
    assert_eq!(status::bounded_list(&names[..3], 3), "svc-0, svc-1, svc-2");
    assert_eq!(status::bounded_list(&names, 3), "svc-0, svc-1, svc-2 and 497 more");
}

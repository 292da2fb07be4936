//! The binary as Kubernetes runs it: `verify` (the ModelVersion verify Job)
//! and `serve` exit statuses, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_hone-predictor");

fn digest_of(model: &str) -> String {
    let card: Value = serde_json::from_slice(&std::fs::read(format!("{model}/model.json")).unwrap()).unwrap();
    card["artifactDigest"].as_str().unwrap().to_owned()
}

fn verify(model: &str, digest: &str, log: &std::path::Path) -> (bool, Value) {
    let out = Command::new(BIN)
        .args(["verify", "--model", model, "--digest", digest, "--termination-log"])
        .arg(log)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    (out.status.success(), serde_json::from_str(&stdout).unwrap())
}

#[test]
fn verify_passes_a_good_model_and_fails_a_wrong_digest() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    let model = common::model("cnn");
    let digest = digest_of(&model);
    let (ok, summary) = verify(&model, &digest, &log);
    assert!(ok, "{summary}");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["digest"], digest.as_str());
    assert_eq!(summary["inputShape"], serde_json::json!([1, 8, 8]));
    assert_eq!(summary["classes"], 3);
    assert_eq!(serde_json::from_str::<Value>(&std::fs::read_to_string(&log).unwrap()).unwrap(), summary);

    let wrong = format!("sha256:{}", "a".repeat(64));
    let (ok, summary) = verify(&format!("file://{model}/model.pt"), &wrong, &log);
    assert!(!ok);
    assert_eq!(summary["reason"], "DigestMismatch");
    assert!(summary["message"].as_str().unwrap().contains(&wrong));

    let (ok, summary) = verify(&dir.path().display().to_string(), &digest, &log);
    assert!(!ok);
    assert_eq!(summary["reason"], "Storage");
}

#[test]
fn verify_fails_a_module_that_does_not_match_its_card() {
    let dir = tempfile::tempdir().unwrap();
    // The MLP module with the CNN's card: the forward pass on [1, 1, 8, 8] fails.
    std::fs::copy(format!("{}/model.pt", common::model("mlp")), dir.path().join("model.pt")).unwrap();
    let mut card: Value =
        serde_json::from_slice(&std::fs::read(format!("{}/model.json", common::model("cnn"))).unwrap())
            .unwrap();
    card.as_object_mut().unwrap().remove("artifactDigest");
    std::fs::write(dir.path().join("model.json"), card.to_string()).unwrap();
    let digest = digest_of(&common::model("mlp"));
    let (ok, summary) = verify(&dir.path().display().to_string(), &digest, &dir.path().join("log"));
    assert!(!ok);
    assert_eq!(summary["reason"], "ForwardFailed", "{summary}");
}

#[test]
fn serve_exits_non_zero_on_digest_mismatch() {
    let wrong = format!("sha256:{}", "b".repeat(64));
    let out = Command::new(BIN)
        .args(["serve", "--model", &common::model("mlp"), "--digest", &wrong, "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("digest mismatch") && stderr.contains(&wrong), "{stderr}");
}

#[test]
fn serve_refuses_a_card_that_is_not_the_pinned_one() {
    let model = common::model("mlp");
    let found = hone_predictor::model::sha256_digest(&std::fs::read(format!("{model}/model.json")).unwrap());
    let pinned = format!("sha256:{}", "c".repeat(64));
    let out = Command::new(BIN)
        .args(["serve", "--model", &model, "--addr", "127.0.0.1:0"])
        .env(hone_crds::predictor::env::MODEL_CARD_DIGEST, &pinned)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model card digest mismatch"), "{stderr}");
    assert!(stderr.contains(&pinned) && stderr.contains(&found), "{stderr}");
}

#[test]
fn verify_reads_the_pinned_card_digest_and_signature_from_the_environment() {
    use hone_crds::predictor::env;
    let dir = tempfile::tempdir().unwrap();
    let model = common::model("mlp");
    let card: hone_crds::contract::ModelCard =
        serde_json::from_slice(&std::fs::read(format!("{model}/model.json")).unwrap()).unwrap();
    let card_digest =
        hone_predictor::model::sha256_digest(&std::fs::read(format!("{model}/model.json")).unwrap());
    let expected = hone_crds::contract::ExpectedSignature::of(&card.signature);
    let run = |card_digest: &str, expected: &hone_crds::contract::ExpectedSignature| {
        let out = Command::new(BIN)
            .arg("verify")
            .env(env::MODEL_URI, &model)
            .env(env::MODEL_CARD_DIGEST, card_digest)
            .env(env::EXPECTED_SIGNATURE, serde_json::to_string(expected).unwrap())
            .env(env::TERMINATION_LOG, dir.path().join("log"))
            .output()
            .unwrap();
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), summary)
    };
    let (ok, summary) = run(&card_digest, &expected);
    assert!(ok, "{summary}");
    assert_eq!(summary["cardDigest"], card_digest.as_str());

    let mut other = expected.clone();
    other.input_shape = vec![5];
    let (ok, summary) = run(&card_digest, &other);
    assert!(!ok);
    assert_eq!(summary["reason"], "SignatureMismatch", "{summary}");

    let (ok, summary) = run(&format!("sha256:{}", "d".repeat(64)), &expected);
    assert!(!ok);
    assert_eq!(summary["reason"], "CardDigestMismatch", "{summary}");
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(BIN)
        .args(["serve", "--model", &common::model("mlp"), "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

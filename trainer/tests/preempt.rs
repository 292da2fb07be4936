//! Preemption and node drains: SIGTERM in the middle of an epoch makes the
//! trainer checkpoint the step it reached and stop well within Kubernetes'
//! default 30 s grace period; the next attempt on the same output resumes at
//! that step (not at the epoch's start) and ends like a whole run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{digits_args, gauge, log_lines, scrape, spawn_digits_with_metrics, trainer_bin};
use hone_crds::contract::TerminationSummary;
use serde_json::Value;

#[test]
fn sigterm_mid_epoch_checkpoints_that_step_and_the_next_attempt_resumes_there() {
    let out = tempfile::tempdir().unwrap();
    let (mut child, _lines, addr) = spawn_digits_with_metrics(out.path());
    // Wait until the run is part-way into an epoch after the first.
    let deadline = Instant::now() + Duration::from_secs(600);
    let per_epoch = loop {
        assert!(Instant::now() < deadline, "the run never got into its second epoch");
        let text = scrape(&addr).expect("the trainer answers while it trains");
        let (step, steps, epochs) = (
            gauge(&text, "hone_trainer_step").unwrap(),
            gauge(&text, "hone_trainer_steps").unwrap(),
            gauge(&text, "hone_trainer_epochs").unwrap(),
        );
        if epochs > 0.0 && steps > 0.0 {
            let per_epoch = (steps / epochs) as u64;
            let into = step as u64 % per_epoch;
            if step as u64 > per_epoch && into >= 3 && into + 3 < per_epoch {
                break per_epoch;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    let sent = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    assert!(!status.success(), "a stopped run is not a finished one");
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    let log: TerminationSummary =
        serde_json::from_slice(&std::fs::read(out.path().join("termination-log")).unwrap()).unwrap();
    let TerminationSummary::Error(error) = log else { panic!("expected an error summary, got {log:?}") };
    assert_eq!(error.reason, "Preempted");
    assert!(error.message.contains("resumes there"), "{}", error.message);

    // The checkpoint of the step it reached: after epoch E, S steps into E + 1.
    let checkpoints = out.path().join("checkpoints");
    let stopped: Vec<String> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("-step-") && checkpoints.join(name).join("COMMIT").exists())
        .collect();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(checkpoints.join(&stopped[0]).join("state.json")).unwrap())
            .unwrap();
    let (epoch, into, global) = (
        state["epoch"].as_u64().unwrap(),
        state["epochSteps"].as_u64().unwrap(),
        state["globalStep"].as_u64().unwrap(),
    );
    assert!(epoch >= 1 && into > 0 && into < per_epoch, "{state}");
    assert_eq!(global, epoch * per_epoch + into, "{state}");
    assert_eq!(stopped[0], format!("epoch-{epoch:05}-step-{into:08}"));
    eprintln!("stopped {took:?} after SIGTERM, {into} of {per_epoch} steps into epoch {}", epoch + 1);

    // The next attempt starts at that step and ends like a whole run.
    let mut child = Command::new(trainer_bin())
        .args(digits_args(out.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    assert!(child.wait().unwrap().success());
    let logged: Vec<Value> = lines.iter().collect();
    let resumed = logged.iter().find(|l| l["event"] == "resumed").expect("a resumed event");
    assert_eq!((resumed["epoch"].as_u64(), resumed["step"].as_u64()), (Some(epoch), Some(global)));
    let epochs: Vec<u32> = common::history(out.path()).iter().map(|m| m.epoch).collect();
    assert_eq!(epochs, [1, 2, 3, 4, 5]);
    let summary = common::train_summary(&out.path().join("termination-log"));
    assert_eq!(summary.epoch, 5);
    assert!(summary.metrics["test_accuracy"] >= 0.9, "{:?}", summary.metrics);
}

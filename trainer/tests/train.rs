//! Real training on real data: simple-cnn on digits, mlp on iris, a sigmoid
//! head on breast cancer, a regression head on diabetes, and a run killed during epoch 3 that resumes and
//! ends like an uninterrupted one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    digits_args, exported_data, file_uri, gauge, python, scrape, spawn_digits_with_metrics, trainer_bin,
};
use hone_crds::contract::{ModelCard, TerminationSummary, TrainSummary};
use hone_crds::modelversion::Task;

fn summary(out: &Path) -> TrainSummary {
    common::train_summary(&out.join("termination-log"))
}

fn epochs_logged(out: &Path) -> Vec<u32> {
    common::history(out).iter().map(|m| m.epoch).collect()
}

#[test]
fn simple_cnn_on_digits_and_a_killed_run_resumes() {
    // Uninterrupted run.
    let full = tempfile::tempdir().unwrap();
    let status = Command::new(trainer_bin())
        .args(digits_args(full.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let uninterrupted = summary(full.path());
    let accuracy = uninterrupted.metrics["test_accuracy"];
    assert!(accuracy >= 0.95, "simple-cnn reached only {accuracy} test accuracy on digits");
    assert_eq!(epochs_logged(full.path()), [1, 2, 3, 4, 5]);

    // The output contract.
    let card: ModelCard =
        serde_json::from_slice(&std::fs::read(full.path().join("model.json")).unwrap()).unwrap();
    assert_eq!(card.signature.input_shape, [1, 32, 32]);
    assert_eq!(card.signature.classes.len(), 10);
    assert_eq!(card.artifact_digest.as_deref(), Some(uninterrupted.artifact_digest.as_str()));
    assert_eq!(card.training_stats.as_ref().unwrap().features.len(), 1);
    let model_bytes = std::fs::read(full.path().join("model.pt")).unwrap();
    let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&model_bytes)));
    assert_eq!(digest, uninterrupted.artifact_digest);
    assert!(full.path().join("report.png").exists());
    // Loads in tch and runs at another batch size.
    let module = tch::CModule::load(full.path().join("model.pt")).unwrap();
    let out = module
        .forward_ts(&[tch::Tensor::zeros([3, 1, 32, 32], (tch::Kind::Float, tch::Device::Cpu))])
        .unwrap();
    assert_eq!(out.size(), [3, 10]);
    // Loads in Python's torch.jit.load and gives the same outputs at batch 1 and 4.
    let check = "import sys, torch\nm = torch.jit.load(sys.argv[1])\nx = torch.rand(4, 1, 32, 32)\n\
                 a = m(x); b = torch.cat([m(x[i:i+1]) for i in range(4)])\nassert a.shape == (4, 10)\n\
                 assert (a - b).abs().max() < 1e-4, (a - b).abs().max()\n";
    let py = Command::new(python()).args(["-c", check]).arg(full.path().join("model.pt")).output().unwrap();
    assert!(py.status.success(), "torch.jit.load failed: {}", String::from_utf8_lossy(&py.stderr));

    // Killed during epoch 3, then restarted on the same output.
    let resumed = tempfile::tempdir().unwrap();
    let mut child = Command::new(trainer_bin())
        .args(digits_args(resumed.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let epoch2 = resumed.path().join("checkpoints/epoch-00002/COMMIT");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !epoch2.exists() {
        assert!(Instant::now() < deadline, "epoch 2 never finished");
        assert!(child.try_wait().unwrap().is_none(), "trainer exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(
        !resumed.path().join("checkpoints/epoch-00003/COMMIT").exists(),
        "the kill came after epoch 3 ended"
    );
    assert_eq!(epochs_logged(resumed.path()), [1, 2]);

    let status = Command::new(trainer_bin())
        .args(digits_args(resumed.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(epochs_logged(resumed.path()), [1, 2, 3, 4, 5], "5 epochs in all, not 7");
    let after = summary(resumed.path());
    assert_eq!(after.epoch, 5);
    let (a, b) = (after.metrics["test_accuracy"], uninterrupted.metrics["test_accuracy"]);
    assert!((a - b).abs() <= 0.01, "resumed run ended at {a}, uninterrupted at {b}");
}

/// Trains on iris with `args` (after the source and format) and `env`;
/// returns whether it succeeded, the termination summary and the output dir.
fn train_iris(args: &[&str], env: &[(&str, &str)]) -> (bool, TerminationSummary, tempfile::TempDir) {
    train_csv("iris.csv", args, env)
}

/// Trains an mlp on the exported `csv` with `args` and `env`.
fn train_csv(
    csv: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, TerminationSummary, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let source = file_uri(&exported_data().join(csv));
    let status = Command::new(trainer_bin())
        .args(["train", "--source", &source, "--format", "CSV", "--architecture", "mlp", "--device", "cpu"])
        .args(args)
        .arg("--output")
        .arg(file_uri(out.path()))
        .arg("--termination-log")
        .arg(out.path().join("termination-log"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let log = serde_json::from_slice(&std::fs::read(out.path().join("termination-log")).unwrap()).unwrap();
    (status.success(), log, out)
}

#[test]
fn mlp_on_iris() {
    let args: Vec<&str> =
        "--epochs 60 --batch-size 16 --learning-rate 0.005 --seed 3 --split-validation 0.2 \
                           --split-test 0.2 --early-stopping-patience 15"
            .split_whitespace()
            .collect();
    let (ok, log, out) = train_iris(&args, &[]);
    assert!(ok, "{log:?}");
    let TerminationSummary::Train(s) = log else { panic!("expected a train summary") };
    assert!(s.metrics["test_accuracy"] >= 0.9, "mlp reached only {:?} on iris", s.metrics);
    let card: ModelCard =
        serde_json::from_slice(&std::fs::read(out.path().join("model.json")).unwrap()).unwrap();
    assert_eq!(card.feature_names.len(), 4);
    assert_eq!(card.training_stats.unwrap().features.len(), 4);
}

#[test]
fn a_sigmoid_head_trains_a_binary_model_on_breast_cancer() {
    let args: Vec<&str> = "--head sigmoid --epochs 30 --batch-size 32 --learning-rate 0.002 --seed 5 \
                           --split-validation 0.2 --split-test 0.2"
        .split_whitespace()
        .collect();
    let (ok, log, out) = train_csv("breast_cancer.csv", &args, &[]);
    assert!(ok, "{log:?}");
    let TerminationSummary::Train(s) = log else { panic!("expected a train summary") };
    assert!(s.metrics["test_accuracy"] >= 0.93, "the sigmoid head reached only {:?}", s.metrics);
    assert_eq!(s.task, Task::Binary);
    assert_eq!(s.classes, ["benign", "malignant"]);
    let card: ModelCard =
        serde_json::from_slice(&std::fs::read(out.path().join("model.json")).unwrap()).unwrap();
    assert_eq!((card.signature.task, card.signature.output_width()), (Task::Binary, 1));
    // The exported module answers one logit per sample.
    let module = tch::CModule::load(out.path().join("model.pt")).unwrap();
    let logits =
        module.forward_ts(&[tch::Tensor::zeros([3, 30], (tch::Kind::Float, tch::Device::Cpu))]).unwrap();
    assert_eq!(logits.size(), [3, 1]);
    // The contract checker agrees: card, module and summary fit a binary model.
    let (passed, report) = common::check_output(out.path(), Some(&out.path().join("termination-log")));
    assert!(passed, "check-output found problems:\n{report}");
    assert!(report.contains("tabular binary model"), "{report}");

    // Three classes have no single logit to give.
    let (ok, log, _out) = train_iris(&["--head", "sigmoid", "--epochs", "1"], &[]);
    assert!(!ok);
    let TerminationSummary::Error(e) = log else { panic!("expected an error summary") };
    assert!(e.message.contains("exactly two classes") && e.message.contains("has 3"), "{e:?}");
}

/// R² of `predicted` against `actual`.
fn r2(predicted: &[f64], actual: &[f64]) -> f64 {
    let mean = actual.iter().sum::<f64>() / actual.len() as f64;
    let residual: f64 = predicted.iter().zip(actual).map(|(p, a)| (p - a).powi(2)).sum();
    let total: f64 = actual.iter().map(|a| (a - mean).powi(2)).sum();
    1.0 - residual / total
}

#[test]
fn a_regression_head_trains_an_mlp_on_diabetes_that_answers_in_the_targets_units() {
    let args: Vec<&str> = "--head regression --epochs 200 --batch-size 32 --learning-rate 0.0005 \
                           --weight-decay 0.1 --seed 4 --split-validation 0.2 --split-test 0.2 \
                           --early-stopping-patience 30"
        .split_whitespace()
        .collect();
    let (ok, log, out) = train_csv("diabetes.csv", &args, &[]);
    assert!(ok, "{log:?}");
    let TerminationSummary::Train(s) = log else { panic!("expected a train summary") };
    assert_eq!((s.task, s.classes.as_slice()), (Task::Regression, ["label".to_owned()].as_slice()));
    for key in ["val_rmse", "val_mae", "val_r2", "test_rmse", "test_mae", "test_r2"] {
        assert!(s.metrics.contains_key(key), "no {key} in {:?}", s.metrics);
    }
    assert!(!s.metrics.contains_key("test_accuracy"), "a regression model has no accuracy: {:?}", s.metrics);
    // scikit-learn's least squares on the same data: its 5-fold held-out R²,
    // and its R² over every row when fitted on all of them.
    let reference = Command::new(python())
        .args([
            "-c",
            "from sklearn.datasets import load_diabetes\nfrom sklearn.linear_model import LinearRegression\n\
             from sklearn.model_selection import cross_val_score\nx, y = load_diabetes(return_X_y=True)\n\
             print(cross_val_score(LinearRegression(), x, y, cv=5).mean())\n\
             print(LinearRegression().fit(x, y).score(x, y))",
        ])
        .output()
        .unwrap();
    let reference: Vec<f64> =
        String::from_utf8_lossy(&reference.stdout).lines().map(|l| l.trim().parse().unwrap()).collect();
    let (held_out, fitted) = (reference[0], reference[1]);
    assert!(
        s.metrics["test_r2"] >= held_out - 0.1,
        "test R²: the regression mlp {:?}, least squares (5-fold) {held_out:.3}",
        s.metrics
    );

    // The exported module answers in the label's units: every row, with the
    // card's preprocessing as the predictor applies it.
    let card: ModelCard =
        serde_json::from_slice(&std::fs::read(out.path().join("model.json")).unwrap()).unwrap();
    assert_eq!((card.signature.task, card.signature.output_width()), (Task::Regression, 1));
    let prep = card.signature.preprocessing.clone().unwrap();
    let (mean, std) = (prep.mean.unwrap(), prep.std.unwrap());
    let csv = std::fs::read_to_string(exported_data().join("diabetes.csv")).unwrap();
    let rows: Vec<Vec<f64>> =
        csv.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    let features: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r[..10].iter().enumerate().map(|(i, v)| ((v - mean[i]) / std[i]) as f32).collect::<Vec<_>>()
        })
        .collect();
    let actual: Vec<f64> = rows.iter().map(|r| r[10]).collect();
    let module = tch::CModule::load(out.path().join("model.pt")).unwrap();
    let x = tch::Tensor::from_slice(&features).view([rows.len() as i64, 10]);
    let y = module.forward_ts(&[x]).unwrap();
    assert_eq!(y.size(), [rows.len() as i64, 1]);
    let predicted: Vec<f64> =
        Vec::<f32>::try_from(y.flatten(0, -1)).unwrap().into_iter().map(f64::from).collect();
    let hone = r2(&predicted, &actual);
    assert!(hone >= fitted - 0.1, "R² over every row: hone {hone:.3}, least squares {fitted:.3}");
    let mean_answer = predicted.iter().sum::<f64>() / predicted.len() as f64;
    let mean_label = actual.iter().sum::<f64>() / actual.len() as f64;
    assert!((mean_answer - mean_label).abs() < 0.1 * mean_label, "{mean_answer} vs {mean_label}");
    let (passed, report) = common::check_output(out.path(), Some(&out.path().join("termination-log")));
    assert!(passed, "check-output found problems:\n{report}");

    // Class names are not numbers.
    let (ok, log, _out) = train_iris(&["--head", "regression", "--epochs", "1"], &[]);
    assert!(!ok);
    let TerminationSummary::Error(e) = log else { panic!("expected an error summary") };
    assert!(e.message.contains("holds only numbers"), "{e:?}");
}

#[test]
fn changed_dataset_digest_fails_the_run() {
    let pinned = format!("sha256:{}", "0".repeat(64));
    let (ok, log, _out) = train_iris(&["--epochs", "1", "--dataset-digest", &pinned], &[]);
    assert!(!ok);
    let TerminationSummary::Error(e) = log else { panic!("expected an error summary") };
    assert_eq!(e.reason, "DatasetChanged");
    assert!(e.message.contains(&pinned));
}

#[test]
fn several_workers_without_a_rendezvous_are_refused_with_a_reason() {
    let (ok, log, _out) = train_iris(&[], &[("WORLD_SIZE", "2"), ("RANK", "0")]);
    assert!(!ok);
    let TerminationSummary::Error(e) = log else { panic!("expected an error summary") };
    assert_eq!(e.reason, "InvalidSpec");
    assert!(e.message.contains("MASTER_ADDR"), "{}", e.message);
}

#[test]
fn live_figures_are_served_on_metrics_while_the_run_trains() {
    let out = tempfile::tempdir().unwrap();
    let (mut child, _lines, addr) = spawn_digits_with_metrics(out.path());
    let (mut epochs, mut steps, mut last) = (std::collections::BTreeSet::new(), Vec::new(), None);
    while let Some(text) = scrape(&addr) {
        let epoch = gauge(&text, "hone_trainer_epoch").unwrap();
        // 0 until the data is loaded and the run planned.
        assert!(matches!(gauge(&text, "hone_trainer_epochs"), Some(0.0 | 5.0)), "{text}");
        let wait = gauge(&text, "hone_trainer_data_wait_ratio").unwrap();
        assert!((0.0..=1.0).contains(&wait), "{text}");
        epochs.insert(epoch as i64);
        steps.push(gauge(&text, "hone_trainer_step").unwrap());
        last = Some(text);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success());
    // Several epochs were seen while it ran, and the step count only grew.
    assert!(epochs.len() >= 3, "epochs seen: {epochs:?}");
    assert!(steps.windows(2).all(|w| w[0] <= w[1]) && steps.last() > steps.first(), "{steps:?}");
    let last = last.unwrap();
    assert_eq!(gauge(&last, "hone_trainer_epochs"), Some(5.0), "{last}");
    assert!(gauge(&last, "hone_trainer_samples_per_second").unwrap() > 0.0, "{last}");
    assert!(gauge(&last, "hone_trainer_steps").unwrap() >= *steps.last().unwrap(), "{last}");
}

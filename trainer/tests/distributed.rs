//! Data-parallel training with real processes on libtorch's c10d (Gloo):
//! two ranks with batch b match one process with batch 2b, a two-worker run
//! on digits matches a one-worker run with only rank 0 writing, and a
//! two-worker run killed during epoch 3 resumes with every epoch trained once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{exported_data, file_uri, history, train_summary, trainer_bin};
use hone_crds::contract::{WorkerSummary, env};

/// A port nobody listens on now (the OS picks it; it is free again once the probe closes).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One rank of a `world`-process run (world 1: a plain single-process run).
fn spawn_rank(args: &[String], out: &Path, log: &Path, world: usize, rank: usize, port: u16) -> Child {
    let mut cmd = Command::new(trainer_bin());
    cmd.args(args)
        .arg("--output")
        .arg(file_uri(out))
        .arg("--termination-log")
        .arg(log)
        .env_remove(env::WORLD_SIZE)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log.with_extension("stderr")).unwrap()));
    if world > 1 {
        cmd.env(env::WORLD_SIZE, world.to_string())
            .env(env::RANK, rank.to_string())
            .env(env::MASTER_ADDR, "127.0.0.1")
            .env(env::MASTER_PORT, port.to_string());
    }
    cmd.spawn().unwrap()
}

/// Runs every rank to the end; panics with a rank's stderr when one fails.
fn run_ranks(args: &[String], outs: &[PathBuf], logs: &[PathBuf]) {
    let port = free_port();
    let world = outs.len();
    let children: Vec<Child> =
        (0..world).map(|r| spawn_rank(args, &outs[r], &logs[r], world, r, port)).collect();
    for (rank, mut child) in children.into_iter().enumerate() {
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(logs[rank].with_extension("stderr")).unwrap_or_default();
        assert!(status.success(), "rank {rank} failed: {stderr}");
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The weights rank 0 checkpointed after `epoch`, by name.
fn checkpoint_weights(out: &Path, epoch: u32) -> Vec<(String, tch::Tensor)> {
    let mut w =
        tch::Tensor::load_multi(out.join(format!("checkpoints/epoch-{epoch:05}/weights.ot"))).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn max_abs_diff(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) -> f64 {
    assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>());
    a.iter().zip(b).map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

/// A CSV of `rows` samples, 6 features, 3 classes, from a fixed formula.
fn generated_csv(dir: &Path, rows: usize) -> PathBuf {
    let mut text = String::from("a,b,c,d,e,f,label\n");
    for i in 0..rows {
        let class = i % 3;
        let x = |k: usize| ((i * (k + 3) * 7919 + k * 104_729) % 1000) as f64 / 1000.0 + class as f64 * 0.4;
        text.push_str(&format!("{},{},{},{},{},{},c{class}\n", x(0), x(1), x(2), x(3), x(4), x(5)));
    }
    let path = dir.join("generated.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_ranks_with_batch_b_match_one_process_with_batch_2b() {
    let dir = tempfile::tempdir().unwrap();
    let csv = file_uri(&generated_csv(dir.path(), 256));
    let base = |batch: &str| {
        strings(&[
            "train",
            "--source",
            &csv,
            "--format",
            "CSV",
            "--architecture",
            "mlp",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--split-validation",
            "0",
            "--split-test",
            "0",
            "--epochs",
            "2",
            "--optimizer",
            "sgd",
            "--learning-rate",
            "0.05",
            "--seed",
            "11",
            "--batch-size",
            batch,
        ])
    };
    let run = |name: &str, batch: &str, world: usize| {
        let outs: Vec<PathBuf> = (0..world).map(|r| dir.path().join(format!("{name}-out{r}"))).collect();
        let logs: Vec<PathBuf> = (0..world).map(|r| dir.path().join(format!("{name}-log{r}"))).collect();
        run_ranks(&base(batch), &outs, &logs);
        checkpoint_weights(&outs[0], 2)
    };
    let two_ranks = run("dp", "16", 2);
    let one_big = run("big", "32", 1);
    let one_small = run("small", "16", 1);

    let diff = max_abs_diff(&two_ranks, &one_big);
    let control = max_abs_diff(&two_ranks, &one_small);
    eprintln!(
        "max |w(2 ranks, batch 16) - w(1 process, batch 32)| = {diff:e}; vs batch 16 alone: {control:e}"
    );
    assert!(diff < 1e-5, "two ranks drifted from one process with the doubled batch by {diff}");
    assert!(
        control > 1e-3,
        "the control run should differ (it takes twice the steps), but only by {control}"
    );
}

/// Training on digits at 16x16 on one CPU thread, batch 32 per rank.
fn digits(architecture: &str, epochs: &str, optimizer: &str, seed: &str) -> Vec<String> {
    let source = file_uri(&exported_data().join("digits"));
    strings(&[
        "train",
        "--source",
        &source,
        "--image-width",
        "16",
        "--image-height",
        "16",
        "--image-channels",
        "1",
        "--architecture",
        architecture,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--epochs",
        epochs,
        "--batch-size",
        "32",
        "--learning-rate",
        "0.002",
        "--optimizer",
        optimizer,
        "--seed",
        seed,
    ])
}

#[test]
fn two_workers_on_digits_match_one_and_only_rank_0_writes() {
    let dir = tempfile::tempdir().unwrap();
    // The MLP: small enough to train in seconds per epoch.
    let args = digits("mlp", "8", "adam", "5");
    let single_out = dir.path().join("single");
    let single_log = dir.path().join("single-log");
    run_ranks(&args, std::slice::from_ref(&single_out), std::slice::from_ref(&single_log));
    // Rank 1 gets its own (empty) output location, so anything it wrote would show.
    let outs = [dir.path().join("rank0"), dir.path().join("rank1")];
    let logs = [dir.path().join("rank0-log"), dir.path().join("rank1-log")];
    run_ranks(&args, &outs, &logs);

    let single = train_summary(&single_log);
    let leader = train_summary(&logs[0]);
    let worker: WorkerSummary = serde_json::from_slice(&std::fs::read(&logs[1]).unwrap()).unwrap();
    assert_eq!((worker.rank, worker.world_size, worker.epoch), (1, 2, 8));
    assert_eq!(leader.epoch, 8);
    for file in ["model.pt", "model.json", "metrics.jsonl", "report.png", "checkpoints"] {
        assert!(outs[0].join(file).exists(), "rank 0 did not write {file}");
    }
    let written: Vec<_> = std::fs::read_dir(&outs[1]).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(written.is_empty(), "rank 1 wrote {written:?}");

    let (one, two) = (single.metrics["test_accuracy"], leader.metrics["test_accuracy"]);
    let ms = history(&outs[0]).iter().filter_map(|m| m.allreduce_ms_per_step).collect::<Vec<_>>();
    eprintln!("test accuracy: 1 worker {one:.4}, 2 workers {two:.4}; all-reduce ms/step per epoch {ms:.3?}");
    assert!(one >= 0.9 && two >= 0.9, "digits mlp reached only {one} (1 worker) and {two} (2 workers)");
    assert!((one - two).abs() <= 0.03, "2 workers reached {two}, 1 worker {one}");
    assert_eq!(ms.len(), 8, "every epoch of the 2-worker run records its all-reduce time");
    assert!(history(&single_out).iter().all(|m| m.allreduce_ms_per_step.is_none()));
}

#[test]
fn two_workers_killed_in_epoch_3_resume_with_every_epoch_once() {
    let dir = tempfile::tempdir().unwrap();
    // simple-cnn makes an epoch long enough (seconds) to be killed inside.
    let args = digits("simple-cnn", "4", "adamw", "9");
    let out = dir.path().join("out");
    let logs = [dir.path().join("log0"), dir.path().join("log1")];
    let port = free_port();
    let mut children: Vec<Child> = (0..2).map(|r| spawn_rank(&args, &out, &logs[r], 2, r, port)).collect();
    let epoch2 = out.join("checkpoints/epoch-00002/COMMIT");
    let deadline = Instant::now() + Duration::from_secs(900);
    while !epoch2.exists() {
        assert!(Instant::now() < deadline, "epoch 2 never finished");
        for (rank, child) in children.iter_mut().enumerate() {
            assert!(child.try_wait().unwrap().is_none(), "rank {rank} exited early");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    for child in &mut children {
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
    }
    assert!(!out.join("checkpoints/epoch-00003/COMMIT").exists(), "the kill came after epoch 3 ended");
    assert_eq!(history(&out).iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2]);

    let outs = [out.clone(), out.clone()];
    run_ranks(&args, &outs, &logs);
    assert_eq!(history(&out).iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2, 3, 4], "4 epochs, not 6");
    for log in &logs {
        let stderr = std::fs::read_to_string(log.with_extension("stderr")).unwrap();
        let resumed: Vec<serde_json::Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "resumed")
            .collect();
        assert_eq!(resumed.len(), 1, "{stderr}");
        assert_eq!(resumed[0]["epoch"], 2, "every rank resumed after epoch 2: {stderr}");
        let epochs: Vec<u64> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "epoch")
            .filter_map(|v| v["epoch"].as_u64())
            .collect();
        assert_eq!(epochs, [3, 4], "the restarted rank trained epochs 3 and 4 only");
    }
    assert_eq!(train_summary(&logs[0]).epoch, 4);
    let worker: WorkerSummary = serde_json::from_slice(&std::fs::read(&logs[1]).unwrap()).unwrap();
    assert_eq!(worker.epoch, 4);
}

#[test]
fn info_reports_the_distributed_backends() {
    let out = Command::new(trainer_bin()).arg("info").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["distributed"]["gloo"], true, "{info}");
    // Where the plugin was not built (no CUDA headers) it must say so, not claim NCCL.
    assert_eq!(info["distributed"]["nccl_plugin"].as_bool(), Some(hone_dist::nccl_available()), "{info}");
}

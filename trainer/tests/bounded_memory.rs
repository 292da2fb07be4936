//! A dataset far larger than the memory the trainer may use: 20,000 PNGs at
//! 224x224x3 in train/ val/ test/ folders, 3.0 GB decoded. Inspection and
//! one epoch of training (streamed through the on-disk cache, as `auto`
//! chooses for data this size) finish with the process's peak RSS, read
//! from /proc, under 1.5 GiB; and the model learns, so the streamed batches
//! carry the right labels.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{file_uri, train_summary, trainer_bin};

/// Images generated (HONE_BOUNDED_IMAGES makes it smaller for a quick local run).
const IMAGES: usize = 20_000;
const SIDE: u32 = 224;
const CLASSES: usize = 4;
/// The bound asserted on peak RSS (the in-memory design needs 3.0 GB for the pixels alone).
const RSS_BOUND: u64 = 1536 << 20;

/// Writes `count` images: each class a colour gradient of its own, every
/// image shifted and speckled by its own seed, so they differ but compress.
fn generate(root: &Path, count: usize) {
    let splits = [("train", 8usize), ("val", 1), ("test", 1)];
    let jobs: Vec<(String, usize, usize)> = (0..count)
        .map(|i| {
            let split = match i % 10 {
                0 => "val",
                1 => "test",
                _ => "train",
            };
            (split.to_owned(), (i / 10) % CLASSES, i)
        })
        .collect();
    for (split, _) in splits {
        for class in 0..CLASSES {
            std::fs::create_dir_all(root.join(split).join(format!("class{class}"))).unwrap();
        }
    }
    std::thread::scope(|scope| {
        for part in jobs.chunks(jobs.len().div_ceil(2)) {
            scope.spawn(move || {
                for (split, class, i) in part {
                    let mut seed = (*i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let shift = (seed % 64) as u32;
                    let img = image::RgbImage::from_fn(SIDE, SIDE, |x, y| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let speck = if seed.is_multiple_of(97) { 60 } else { 0 };
                        let g = ((x + y + shift) / 4) as u8;
                        let channel = |c: usize| {
                            let base: u8 = if c == *class % 3 { 160 } else { 40 };
                            let tilt = if *class == 3 { g / 2 } else { g / 4 };
                            base.saturating_add(tilt).saturating_add(speck)
                        };
                        image::Rgb([channel(0), channel(1), channel(2)])
                    });
                    let path = root.join(split).join(format!("class{class}")).join(format!("{i:05}.png"));
                    img.save(&path).unwrap();
                }
            });
        }
    });
}

/// Runs the trainer, polling its peak RSS (VmHWM) until it exits; returns
/// success, the peak in bytes, and stderr.
fn run_measured(args: &[String]) -> (bool, u64, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(trainer_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), peak, std::fs::read_to_string(log.path()).unwrap_or_default())
}

#[test]
fn inspect_and_train_larger_than_memory_in_bounded_rss() {
    let count = std::env::var("HONE_BOUNDED_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(IMAGES);
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = work.path().join("data");
    generate(&data, count);
    let decoded = count as u64 * u64::from(SIDE * SIDE * 3);
    let source = file_uri(&data);
    let shape = ["--image-width", "224", "--image-height", "224", "--image-channels", "3"];

    let summary_path = work.path().join("inspect.json");
    let mut args: Vec<String> = vec!["inspect".into(), "--source".into(), source.clone()];
    args.extend(shape.iter().map(|s| (*s).to_owned()));
    args.extend(["--termination-log".into(), summary_path.display().to_string()]);
    let (ok, inspect_peak, tail) = run_measured(&args);
    assert!(ok, "inspect failed:\n{tail}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["samples"], count as u64, "{summary}");
    let digest = summary["digest"].as_str().unwrap().to_owned();

    let out = work.path().join("out");
    let log = work.path().join("train.json");
    let mut args: Vec<String> = vec!["train".into(), "--source".into(), source];
    args.extend(shape.iter().map(|s| (*s).to_owned()));
    for (flag, value) in [
        ("--architecture", "mlp".to_owned()),
        ("--epochs", "1".into()),
        ("--batch-size", "128".into()),
        ("--learning-rate", "0.001".into()),
        ("--device", "cpu".into()),
        ("--threads", "2".into()),
        // `auto`: 3.0 GB decoded is over the 1 GiB budget, so it streams.
        ("--data-mode", "auto".into()),
        ("--data-cache", work.path().join("cache").display().to_string()),
        ("--dataset-digest", digest),
        ("--output", file_uri(&out)),
        ("--termination-log", log.display().to_string()),
    ] {
        args.extend([flag.to_owned(), value]);
    }
    let (ok, train_peak, tail) = run_measured(&args);
    assert!(ok, "train failed:\n{tail}");
    // Over auto's 1 GiB budget (no memory limit here) the images are streamed.
    let streamed = decoded > 1 << 30;
    assert!(tail.contains(&format!("\"streamed\":{streamed}")), "streamed should be {streamed}:\n{tail}");
    let trained = train_summary(&log);
    let accuracy = trained.metrics["test_accuracy"];
    println!(
        "{count} images, {:.2} GB decoded: peak RSS inspect {:.0} MiB, train (1 epoch, streamed: {streamed}) {:.0} MiB; \
         test accuracy {accuracy:.3}",
        decoded as f64 / 1e9,
        inspect_peak as f64 / 1048576.0,
        train_peak as f64 / 1048576.0
    );
    assert_eq!(trained.epoch, 1);
    assert!(accuracy > 0.9, "the model did not learn the classes' colours: {accuracy}");
    assert!(inspect_peak > 0 && train_peak > 0, "no RSS was read");
    assert!(inspect_peak < RSS_BOUND, "inspect peaked at {inspect_peak} bytes for {decoded} decoded");
    assert!(train_peak < RSS_BOUND, "train peaked at {train_peak} bytes for {decoded} decoded");
    assert!(
        !work.path().join("cache").read_dir().is_ok_and(|mut d| d.next().is_some()),
        "the run left its pixel cache behind"
    );
}

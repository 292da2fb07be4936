//! `hone-trainer inspect` on real files: digests are stable, bad data fails
//! with the offending path (and line).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{exported_data, file_uri, trainer_bin};
use hone_crds::contract::TerminationSummary;

fn copy_tree(from: &Path, to: &Path, reverse: bool) {
    let mut entries: Vec<_> = walk(from);
    if reverse {
        entries.reverse(); // a different creation order must not matter
    }
    for src in entries {
        let dst = to.join(src.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&src, &dst).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() { out.extend(walk(&e.path())) } else { out.push(e.path()) }
    }
    out.sort();
    out
}

/// Runs inspect; returns (success, summary from the termination log, stderr).
fn inspect(args: &[&str]) -> (bool, TerminationSummary, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    let out = Command::new(trainer_bin())
        .arg("inspect")
        .args(args)
        .arg("--termination-log")
        .arg(&log)
        .output()
        .unwrap();
    let summary = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    (out.status.success(), summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn digest_of(dir: &Path) -> String {
    let (ok, summary, err) = inspect(&[
        "--source",
        &file_uri(dir),
        "--image-width",
        "32",
        "--image-height",
        "32",
        "--image-channels",
        "1",
    ]);
    assert!(ok, "{err}");
    match summary {
        TerminationSummary::Inspect(s) => {
            assert_eq!(s.samples, 1797);
            assert_eq!(s.classes.len(), 10);
            assert_eq!(s.class_counts.values().sum::<u64>(), 1797);
            s.digest
        }
        other => panic!("unexpected summary {other:?}"),
    }
}

#[test]
fn digest_is_stable_across_copies_and_changes_with_content() {
    let digits = exported_data().join("digits");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_tree(&digits, a.path(), false);
    copy_tree(&digits, b.path(), true);
    let original = digest_of(&digits);
    assert!(original.starts_with("sha256:") && original.len() == 71);
    assert_eq!(digest_of(a.path()), original);
    assert_eq!(digest_of(b.path()), original);

    // One byte more in one file is different content.
    let victim = a.path().join("3/0003.png");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&victim, bytes).unwrap();
    assert_ne!(digest_of(a.path()), original);
}

#[test]
fn undecodable_image_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&exported_data().join("digits/1"), &dir.path().join("1"), false);
    copy_tree(&exported_data().join("digits/7"), &dir.path().join("7"), false);
    std::fs::write(dir.path().join("7/broken.png"), b"this is not a png").unwrap();
    let (ok, summary, err) = inspect(&["--source", &file_uri(dir.path()), "--image-channels", "1"]);
    assert!(!ok);
    let TerminationSummary::Error(e) = summary else { panic!("expected an error summary") };
    assert_eq!(e.reason, "InvalidData");
    assert!(e.message.contains("7/broken.png"), "{}", e.message);
    assert!(err.contains("7/broken.png"));
}

#[test]
fn empty_class_folder_fails() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&exported_data().join("digits/1"), &dir.path().join("1"), false);
    std::fs::create_dir_all(dir.path().join("2")).unwrap();
    let (ok, summary, _) = inspect(&["--source", &file_uri(dir.path())]);
    assert!(!ok);
    let TerminationSummary::Error(e) = summary else { panic!("expected an error summary") };
    assert!(e.message.contains("class folder is empty") && e.message.contains('2'), "{}", e.message);
}

#[test]
fn csv_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("a,b,label\n1,2,x\n3,,y\n", "bad.csv:3", "missing value in column \"b\""),
        ("a,b,label\n1,2,x\n3,4,y\n5,abc,x\n", "bad.csv:4", "\"abc\" is not a finite number"),
        ("a,b,label\n1,2,x\n3,4,\n", "bad.csv:3", "missing value in column \"label\""),
    ];
    for (content, location, reason) in cases {
        let file = dir.path().join("bad.csv");
        std::fs::write(&file, content).unwrap();
        let (ok, summary, _) = inspect(&["--source", &file_uri(&file), "--format", "CSV"]);
        assert!(!ok, "{content:?} passed");
        let TerminationSummary::Error(e) = summary else { panic!("expected an error summary") };
        assert!(e.message.contains(location) && e.message.contains(reason), "{content:?}: {}", e.message);
    }
}

#[test]
fn iris_csv_is_read() {
    let (ok, summary, err) =
        inspect(&["--source", &file_uri(&exported_data().join("iris.csv")), "--format", "CSV"]);
    assert!(ok, "{err}");
    let TerminationSummary::Inspect(s) = summary else { panic!("expected an inspect summary") };
    assert_eq!(s.samples, 150);
    assert_eq!(s.classes, ["setosa", "versicolor", "virginica"]);
    assert!(s.class_counts.values().all(|&c| c == 50));
}

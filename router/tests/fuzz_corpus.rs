//! Replays every fuzz target's committed corpus (`fuzz/corpus/<target>/`)
//! and crash reproducers (`fuzz/regressions/<target>/`) through the same
//! harnesses libFuzzer runs, so `cargo test` catches a regression without
//! nightly or `make fuzz`.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hone_router::fuzzing;

/// A fuzz harness: any bytes, never a panic.
type Harness = fn(&[u8]);

/// Every target in `fuzz/fuzz_targets/`, by name, with its harness.
const TARGETS: [(&str, Harness); 2] = [("headers", fuzzing::headers), ("body", fuzzing::body)];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of a folder, sorted; READMEs and dotfiles are not inputs.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.') && !name.starts_with("README")
        })
        .collect();
    files.sort();
    files
}

/// Runs each file through `harness`; returns the files it panicked on.
fn replay(harness: Harness, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect()
}

#[test]
fn every_fuzz_target_has_a_harness_here() {
    let declared: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let replayed: BTreeSet<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(declared, replayed, "fuzz_targets/*.rs and the targets this test replays");
}

#[test]
fn committed_corpus_and_regressions_replay_without_a_panic() {
    let mut failures = Vec::new();
    for (name, harness) in TARGETS {
        let corpus = fuzz_dir().join("corpus").join(name);
        assert!(corpus.is_dir(), "{} is missing: every target needs a seed corpus", corpus.display());
        let files = inputs(&corpus);
        assert!(!files.is_empty(), "{} is empty: every target needs a seed corpus", corpus.display());
        failures.extend(replay(harness, &files));
        let regressions = fuzz_dir().join("regressions").join(name);
        if regressions.is_dir() {
            failures.extend(replay(harness, &inputs(&regressions)));
        }
    }
    assert!(
        failures.is_empty(),
        "harnesses panicked on (see the panic messages above):\n{}",
        failures.join("\n")
    );
}

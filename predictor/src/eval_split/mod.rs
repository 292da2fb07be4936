//! `verify`'s evaluation: reads the held-out test split the trainer's
//! `eval-split` wrote (`split.json`, `samples.jsonl`, `images/`), turns each
//! sample into model input with the preprocessing `/predict` uses, runs
//! batched forward passes, turns logits into probabilities as `/predict`
//! does and tallies the answers ([`crate::evaluation`]).
//!
//! Samples stream through in batches, so memory is one batch, whatever the
//! split holds; the files are bounded all the same (samples, line length,
//! image size), since a bad split must fail with a message, not an OOM kill.
//! Blocking (files and the model): run it on a blocking thread.

mod error;
mod inputs;
mod read;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use hone_crds::contract::{EVAL_MAX_SAMPLES, EVAL_SAMPLES_FILE, EvalSample, ModelCard};
use hone_crds::modelversion::Evaluation;
use tch::Device;

pub use error::EvalError;
pub use read::read_header;

use crate::evaluation::Tally;
use crate::head::Head;
use crate::preprocess::Sample;
use crate::runtime::{self, Model};
use inputs::SampleInputs;
use read::BoundedLines;

/// Samples in one forward pass.
pub const EVAL_BATCH_SIZE: usize = 64;
/// Longest line of `samples.jsonl` (a tabular row of ~100 000 features).
pub const EVAL_MAX_LINE_BYTES: usize = 1 << 20;
/// Largest `split.json` (it lists the Dataset's classes, up to 100 000).
pub const EVAL_MAX_HEADER_BYTES: usize = 32 << 20;

/// Evaluates `module` (with its `card`) on the test split in `dir`.
pub fn evaluate(
    dir: &Path,
    card: &ModelCard,
    module: &mut Model,
    device: Device,
) -> Result<Evaluation, EvalError> {
    let head = Head::new(&card.signature);
    if !head.task().is_single_label() {
        return Err(EvalError::UnsupportedTask(head.task()));
    }
    let header = read_header(dir)?;
    let inputs = SampleInputs::new(dir, &header, card)?;
    let samples_path = dir.join(EVAL_SAMPLES_FILE);
    let file =
        File::open(&samples_path).map_err(|source| EvalError::Read { path: samples_path.clone(), source })?;
    let mut lines = BoundedLines::new(BufReader::new(file), samples_path.clone());
    let classes = &card.signature.classes;
    let mut labels: HashMap<&str, usize> = HashMap::with_capacity(classes.len());
    for (i, class) in classes.iter().enumerate() {
        labels.entry(class.as_str()).or_insert(i);
    }
    let mut tally = Tally::with_head(head.clone());
    let mut batch = Batch::default();
    let mut read = 0usize;
    while let Some((line, text)) = lines.next_line()? {
        if text.trim_ascii().is_empty() {
            continue;
        }
        read += 1;
        if read > EVAL_MAX_SAMPLES {
            return Err(EvalError::TooManySamples { path: samples_path, limit: EVAL_MAX_SAMPLES });
        }
        let sample: EvalSample = serde_json::from_slice(text).map_err(|e| EvalError::Sample {
            path: samples_path.clone(),
            line,
            reason: e.to_string(),
        })?;
        let input = inputs.input(&sample, line)?;
        batch.push(line, labels.get(sample.label.as_str()).copied(), input);
        if batch.truths.len() == EVAL_BATCH_SIZE {
            batch.run(module, card, &head, device, &mut tally)?;
        }
    }
    batch.run(module, card, &head, device, &mut tally)?;
    if read == 0 {
        return Err(EvalError::Empty(samples_path));
    }
    if read as u64 != header.samples {
        return Err(EvalError::Count { path: samples_path, expected: header.samples, found: read as u64 });
    }
    Ok(tally.finish(classes, &header.dataset_digest))
}

/// Samples waiting for a forward pass.
#[derive(Default)]
struct Batch {
    lines: Vec<usize>,
    truths: Vec<Option<usize>>,
    values: Vec<f32>,
}

impl Batch {
    fn push(&mut self, line: usize, truth: Option<usize>, sample: Sample) {
        self.lines.push(line);
        self.truths.push(truth);
        self.values.extend_from_slice(&sample.values);
    }

    /// Runs the batch through the model, tallies the answers and empties it.
    fn run(
        &mut self,
        module: &mut Model,
        card: &ModelCard,
        head: &Head,
        device: Device,
        tally: &mut Tally,
    ) -> Result<(), EvalError> {
        if self.truths.is_empty() {
            return Ok(());
        }
        let logits = tch::no_grad(|| {
            runtime::forward_logits(
                module,
                &self.values,
                self.truths.len(),
                &card.signature.input_shape,
                head.outputs(),
                device,
            )
        })
        .map_err(|message| EvalError::Forward {
            first: self.lines.first().copied().unwrap_or(0),
            last: self.lines.last().copied().unwrap_or(0),
            message,
        })?;
        let probabilities = head.scores(&logits);
        for (truth, row) in self.truths.iter().zip(probabilities.chunks(head.score_width().max(1))) {
            tally.add(*truth, row);
        }
        self.lines.clear();
        self.truths.clear();
        self.values.clear();
        Ok(())
    }
}

//! Progress output: a progress bar on a terminal, JSON lines otherwise (the
//! form log collectors in a cluster expect).

use std::io::IsTerminal;
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

/// Writes one JSON log line to stderr: `{"ts", "level", "event", ...fields}`.
pub fn event(level: &str, name: &str, fields: Value) {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut line = Map::new();
    line.insert("ts".into(), json!((ts * 1000.0).round() / 1000.0));
    line.insert("level".into(), json!(level));
    line.insert("event".into(), json!(name));
    if let Value::Object(extra) = fields {
        line.extend(extra);
    }
    eprintln!("{}", Value::Object(line));
}

/// Progress of the batches of one epoch.
pub struct EpochProgress {
    bar: Option<ProgressBar>,
}

impl EpochProgress {
    /// A bar for `batches` steps when stderr is a terminal, silence otherwise
    /// (the epoch summary is logged as a JSON line instead).
    pub fn new(epoch: u32, total_epochs: u32, batches: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = ProgressBar::new(batches);
        let style = ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(format!("{epoch}/{total_epochs}"));
        Self { bar: Some(bar) }
    }

    /// One batch done, with the running loss.
    pub fn step(&self, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {loss:.4}"));
            bar.inc(1);
        }
    }

    /// Leaves the finished bar on screen with a summary.
    pub fn finish(&self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(summary.to_owned());
        }
    }

    /// True when a bar is shown (a terminal).
    pub fn interactive(&self) -> bool {
        self.bar.is_some()
    }
}

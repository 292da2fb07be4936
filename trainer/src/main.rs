//! `hone-trainer`: the program inside Dataset-inspection and TrainingJob pods.

use clap::{Parser, Subcommand};

/// Hone's trainer: inspects datasets and trains models with libtorch.
#[derive(Parser, Debug)]
#[command(name = "hone-trainer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read every sample of a dataset and report its digest, counts and classes.
    Inspect,
    /// Train a model and write the output contract (model.pt, model.json, ...).
    Train,
    /// Print the libtorch build this binary runs on, as JSON.
    Info,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Info => {
            let info = serde_json::json!({
                "trainer": env!("CARGO_PKG_VERSION"),
                "cuda_available": tch::Cuda::is_available(),
                "cuda_devices": tch::Cuda::device_count(),
                "threads": tch::get_num_threads(),
            });
            println!("{info}");
            Ok(())
        }
        Command::Inspect | Command::Train => {
            anyhow::bail!("not implemented yet (tracked in issue 4)")
        }
    }
}

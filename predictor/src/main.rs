//! `hone-predictor`: serves ModelVersions, verifies them, and routes traffic
//! between InferenceService variants.

use clap::{Parser, Subcommand};

/// Hone's predictor: model server, ModelVersion verifier and traffic router.
#[derive(Parser, Debug)]
#[command(name = "hone-predictor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a TorchScript model over Open Inference Protocol v2 and /predict.
    Serve,
    /// Fetch a model, check its digest, load it and run one forward pass.
    Verify,
    /// Split traffic between variant backends by weight and headers.
    Router,
    /// Print the libtorch build this binary runs on, as JSON.
    Info,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Info => {
            let info = serde_json::json!({
                "predictor": env!("CARGO_PKG_VERSION"),
                "cuda_available": tch::Cuda::is_available(),
                "cuda_devices": tch::Cuda::device_count(),
            });
            println!("{info}");
            Ok(())
        }
        Command::Serve | Command::Verify | Command::Router => {
            anyhow::bail!("not implemented yet (tracked in issue 5)")
        }
    }
}

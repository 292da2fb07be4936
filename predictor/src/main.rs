//! `hone-predictor`: serves ModelVersions and verifies them.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hone_predictor::config::{ServeArgs, VerifyArgs};
use hone_predictor::{serve, verify};

/// Hone's predictor: model server and ModelVersion verifier.
#[derive(Parser, Debug)]
#[command(name = "hone-predictor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a TorchScript model over Open Inference Protocol v2 and /predict.
    Serve(Box<ServeArgs>),
    /// Fetch a model, check its digest, load it and run one forward pass.
    Verify(VerifyArgs),
    /// Print the libtorch build this binary runs on, as JSON.
    Info,
}

fn main() -> ExitCode {
    // One TLS provider for the process (see hone-trainer's main).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HONE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // libtorch's CUDA kernels are in a library the linker drops; load it when
    // present (CUDA images, the dev venv) so a GPU is used. CPU images lack it.
    #[cfg(feature = "object-storage")]
    if let Err(e) = hone_storage::cuda::load_backend() {
        tracing::debug!("CUDA backend not loaded: {e}");
    }
    match command {
        Command::Info => {
            let info = serde_json::json!({
                "predictor": env!("CARGO_PKG_VERSION"),
                "cuda_available": tch::Cuda::is_available(),
                "cuda_devices": tch::Cuda::device_count(),
            });
            println!("{info}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => runtime.block_on(async {
            let args = *args;
            let shutdown = serve::shutdown_signal(); // before we listen: see shutdown_signal
            let listener = tokio::net::TcpListener::bind(args.addr)
                .await
                .with_context(|| format!("binding {}", args.addr))?;
            serve::run(args, listener, shutdown).await.context("serve")?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Verify(args) => {
            let summary = runtime.block_on(verify::verify(&args));
            let line = serde_json::to_string(&summary)?;
            println!("{line}");
            if let Some(path) = &args.termination_log {
                // Best effort: the summary is on stdout either way.
                if let Err(e) = std::fs::write(path, &line) {
                    eprintln!("warning: writing {}: {e}", path.display());
                }
            }
            Ok(if summary.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

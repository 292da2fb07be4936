//! `hone-router`: splits traffic between InferenceService variants.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hone_router::RouterArgs;

/// Hone's traffic router: splits requests between variant backends by weight and headers.
#[derive(Parser, Debug)]
#[command(name = "hone-router", version, about)]
struct Cli {
    #[command(flatten)]
    router: RouterArgs,
}

fn main() -> ExitCode {
    // One TLS provider for the process (see hone-trainer's main). The router
    // forwards plain HTTP today; this keeps a later HTTPS client from failing
    // to build when the workspace links rustls with two providers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HONE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().router) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RouterArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let shutdown = hone_router::shutdown_signal(); // before we listen: see shutdown_signal
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("binding {}", args.addr))?;
        let admin = tokio::net::TcpListener::bind(args.admin_addr)
            .await
            .with_context(|| format!("binding {} (admin)", args.admin_addr))?;
        hone_router::run(args, listener, admin, shutdown).await.context("router")
    })
}

//! `hone-operator`: runs the Dataset, TrainingJob, ModelVersion and
//! InferenceService controllers.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::FutureExt;
use hone_operator::config::{OperatorConfig, RunArgs};
use hone_operator::context::Context;
use hone_operator::leader::{self, Election};
use hone_operator::metrics::Metrics;
use hone_operator::server::{self, ServerState};
use hone_operator::{controllers, telemetry};

/// Hone's Kubernetes operator.
#[derive(Parser, Debug)]
#[command(name = "hone-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers against the cluster in KUBECONFIG (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions this operator serves, as YAML.
    Crds,
}

fn main() -> anyhow::Result<()> {
    // One TLS provider for the process: a binary built with the whole
    // workspace links rustls with both ring and aws-lc-rs, and then rustls
    // cannot pick one itself (the apiserver connection would panic).
    // An error means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(run(*args))
        }
        Command::Crds => {
            // Write through a handle so a closed pipe (`| head`) is an error, not a panic.
            let mut out = std::io::stdout().lock();
            for crd in hone_crds::all_crds() {
                match write!(out, "---\n{}", serde_yaml::to_string(&crd)?) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    other => other?,
                }
            }
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_filter)?;
    let config =
        OperatorConfig::from_args(&args).map_err(anyhow::Error::msg).context("reading the operator flags")?;
    tracing::info!(
        trainer_image = %config.trainer_image,
        predictor_image = %config.predictor_image,
        router_image = %config.router_image,
        default_output = config.default_output.as_ref().map(|o| o.uri.as_str()).unwrap_or(""),
        namespaces = %config.namespaces.join(","),
        pod_node_selector = ?config.placement.node_selector,
        pod_tolerations = config.placement.tolerations.len(),
        leader_election = args.leader.enabled,
        "starting hone-operator"
    );
    let metrics = Arc::new(Metrics::new());
    let kube_config = kube::Config::infer().await.context("reading the Kubernetes client configuration")?;
    let client = hone_operator::api_calls::counted_client(kube_config, metrics.clone())
        .context("building a Kubernetes client")?;
    let version = client.apiserver_version().await.context("reaching the apiserver")?;
    tracing::info!(apiserver = %version.git_version, "connected");

    let state = Arc::new(ServerState::new(metrics.clone()));
    let shutdown = shutdown_signal().shared();
    let election = match args.leader.enabled {
        true => Some(leader::start(client.clone(), &args.leader).await.context("starting leader election")?),
        false => None,
    };
    // Losing the Lease stops the controllers (and then the process) like a signal does.
    let lost = Arc::new(AtomicBool::new(false));
    let stop = {
        let (shutdown, lost) = (shutdown.clone(), lost.clone());
        let receiver = election.as_ref().map(|e| e.is_leader.clone());
        async move {
            let lost_lease = async {
                match receiver {
                    Some(receiver) => Election::lost(receiver).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown => {}
                () = lost_lease => lost.store(true, Ordering::SeqCst),
            }
        }
        .shared()
    };
    let server = tokio::spawn(server::serve(args.metrics_addr, state.clone(), stop.clone()));
    // A standby replica is ready: it serves metrics and takes over when the leader goes.
    state.set_ready(true);

    let leading = match election {
        Some(mut election) => {
            tracing::info!(lease = %args.leader.lease, namespace = %args.leader.namespace, "waiting for the leader Lease");
            let acquired = tokio::select! {
                acquired = election.acquired() => acquired,
                () = shutdown.clone() => false,
            };
            if !acquired {
                tracing::info!("stopping before becoming the leader");
                election.release(LEASE_RELEASE_TIMEOUT).await;
                return finish(server).await;
            }
            tracing::info!("acquired the leader Lease");
            Some(election)
        }
        None => None,
    };
    metrics.set_leader(true);
    let ctx = Arc::new(Context::new(client, config, metrics.clone(), std::env::var("POD_NAME").ok()));
    controllers::run(ctx, stop.clone()).await;
    metrics.set_leader(false);
    state.set_ready(false);
    if let Some(election) = leading {
        election.release(LEASE_RELEASE_TIMEOUT).await;
    }
    if lost.load(Ordering::SeqCst) {
        anyhow::bail!("lost the leader Lease: stopped the controllers; exiting to restart as a candidate");
    }
    tracing::info!("controllers stopped; stopping the HTTP server");
    finish(server).await
}

/// Longest wait for the Lease to be handed back on the way out.
const LEASE_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    server.await.context("HTTP server task")?.context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl+C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "listening for Ctrl+C failed");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "listening for SIGTERM failed");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl+C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

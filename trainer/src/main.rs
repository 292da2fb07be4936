//! `hone-trainer`: the program inside Dataset-inspection and TrainingJob pods
//! (and the init container that writes a verify Job's test split).

use std::process::ExitCode;

use clap::Parser;
use hone_crds::contract::{ErrorSummary, TerminationSummary};
use hone_trainer::cli::{
    CheckOutputArgs, Cli, Command, DeviceArg, EvalSplitArgs, InspectArgs, PurgeArgs, TrainArgs,
};
use hone_trainer::log::event;
use hone_trainer::tracking::{NoTracking, Tracker};
use hone_trainer::{dataset, distributed, evalsplit, termination, train};
use serde_json::json;

fn main() -> ExitCode {
    // One TLS provider for the process: a binary built with the whole
    // workspace links rustls with both ring (kube) and aws-lc-rs (reqwest),
    // and then no HTTP client can be built ("builder error"). An error means
    // one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hone-trainer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Info => {
            let cuda_backend = hone_storage::cuda::load_backend().err();
            let info = json!({
                "cuda_backend_error": cuda_backend,
                "trainer": env!("CARGO_PKG_VERSION"),
                "cuda_available": tch::Cuda::is_available(),
                "cuda_devices": tch::Cuda::device_count(),
                "threads": tch::get_num_threads(),
                // Data-parallel runs: Gloo is always there (in libtorch_cpu);
                // CUDA tensors need the NCCL plugin.
                "distributed": {"gloo": true, "nccl_plugin": hone_dist::nccl_available()},
            });
            println!("{info}");
            ExitCode::SUCCESS
        }
        Command::Inspect(args) => runtime.block_on(inspect(args)),
        Command::Train(args) => runtime.block_on(train_command(*args)),
        Command::EvalSplit(args) => runtime.block_on(eval_split(args)),
        Command::Purge(args) => runtime.block_on(purge(args)),
        Command::CheckOutput(args) => runtime.block_on(check_output(args)),
    }
}

/// Prints every check's line; fails when one found something wrong.
async fn check_output(args: CheckOutputArgs) -> ExitCode {
    let report = hone_trainer::check_output::check(&args.uri, args.summary.as_deref()).await;
    print!("{}", report.render());
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn purge(args: PurgeArgs) -> ExitCode {
    match hone_trainer::purge::purge(&args.uris, args.prefix).await {
        Ok(deleted) => {
            event("info", "purged", json!({"uris": args.uris, "prefix": args.prefix, "deleted": deleted}));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&args.summary.termination_log, e.category(), e.to_string()),
    }
}

/// Reports a failure on stderr and in the termination log.
fn fail(log_path: &str, reason: &str, message: String) -> ExitCode {
    event("error", "failed", json!({"reason": reason, "message": message}));
    termination::write(
        log_path,
        &TerminationSummary::Error(ErrorSummary { reason: reason.to_owned(), message }),
    );
    ExitCode::FAILURE
}

async fn inspect(args: InspectArgs) -> ExitCode {
    match dataset::load(&args.data.options(), None).await {
        Ok(data) => {
            let summary = TerminationSummary::Inspect(data.summary);
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            termination::write(&args.summary.termination_log, &summary);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&args.summary.termination_log, e.category(), e.to_string()),
    }
}

async fn eval_split(args: EvalSplitArgs) -> ExitCode {
    match evalsplit::run(&args.options()).await {
        Ok(header) => {
            let summary = TerminationSummary::EvalSplit(header);
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            termination::write(&args.summary.termination_log, &summary);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&args.summary.termination_log, e.category(), e.to_string()),
    }
}

async fn train_command(args: TrainArgs) -> ExitCode {
    let log_path = args.summary.termination_log.clone();
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads);
    }
    if args.device != DeviceArg::Cpu
        && let Err(e) = hone_storage::cuda::load_backend()
    {
        event("info", "cuda_backend_unavailable", json!({"reason": e}));
    }
    // WORLD_SIZE > 1 (the operator's `workers > 1`): join rank 0's c10d group.
    let group = match hone_dist::ProcessGroup::from_env() {
        Ok(group) => group,
        Err(e) => return fail(&log_path, e.category(), e.to_string()),
    };
    let (world, rank) = group.as_ref().map_or((1, 0), |g| (g.world_size(), g.rank()));
    let local_rank =
        std::env::var(hone_crds::contract::env::LOCAL_RANK).ok().and_then(|r| r.parse().ok()).unwrap_or(0);
    let cuda_devices =
        if args.device == DeviceArg::Cpu { 0 } else { tch::Cuda::device_count().max(0) as usize };
    let device = match distributed::pick_device(args.device, cuda_devices, world, local_rank) {
        Ok(device) => device,
        Err((category, message)) => return fail(&log_path, category, message),
    };
    let opts = train::TrainOptions {
        data: args.data.options(),
        architecture: args.architecture,
        head: args.head,
        pretrained: args.pretrained.clone(),
        hyperparameters: args.hyperparameters(),
        output: args.output.clone(),
        device,
        data_path: args.data_path(),
        compute_only: args.bench_compute_only,
        expected_dataset_digest: args.dataset_digest.clone(),
        metrics: hone_trainer::metrics::TrainerMetrics::new(),
        stop: Default::default(),
    };
    // Preemption or a node drain: checkpoint at the current step and stop
    // within the grace period; the Job's next attempt resumes there.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            let stop = opts.stop.clone();
            tokio::spawn(async move {
                if terminate.recv().await.is_some() {
                    event("warn", "sigterm", json!({"action": "checkpoint at the next step and stop"}));
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        Err(e) => event("warn", "sigterm_unhandled", json!({"error": e.to_string()})),
    }
    if let Some(addr) = args.metrics_addr {
        match hone_trainer::metrics::serve(addr, opts.metrics.clone()).await {
            Ok(bound) => event("info", "metrics_listening", json!({"addr": bound.to_string()})),
            // Figures are for watching; a taken port must not fail the run.
            Err(e) => event(
                "warn",
                "metrics_unavailable",
                json!({"addr": addr.to_string(), "error": e.to_string()}),
            ),
        }
    }
    let mut tracker: Box<dyn Tracker> = match &args.mlflow_uri {
        Some(uri) if rank == 0 => Box::new(hone_trainer::tracking::MlflowTracker::new(
            uri,
            &args.mlflow_experiment,
            args.run_name.as_deref().unwrap_or("hone-trainer"),
        )),
        _ => Box::new(NoTracking),
    };
    event(
        "info",
        "start",
        json!({"device": format!("{device:?}"), "threads": tch::get_num_threads(), "output": args.output,
               "rank": rank, "world": world}),
    );
    match train::run(&opts, tracker.as_mut(), group.as_ref()).await {
        Ok(train::TrainOutcome::Leader { summary, .. }) => {
            let summary = TerminationSummary::Train(*summary);
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            termination::write(&log_path, &summary);
            ExitCode::SUCCESS
        }
        Ok(train::TrainOutcome::Worker(summary)) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            termination::write_worker(&log_path, &summary);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&log_path, e.category(), e.to_string()),
    }
}

//! `hone-trainer`: the program inside Dataset-inspection and TrainingJob pods
//! (and the init container that writes a verify Job's test split).

use std::process::ExitCode;

use clap::Parser;
use hone_crds::contract::{ErrorSummary, TerminationSummary};
use hone_trainer::cli::{Cli, Command, DeviceArg, EvalSplitArgs, InspectArgs, PurgeArgs, TrainArgs};
use hone_trainer::log::event;
use hone_trainer::tracking::{NoTracking, Tracker};
use hone_trainer::{dataset, evalsplit, termination, train};
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
            });
            println!("{info}");
            ExitCode::SUCCESS
        }
        Command::Inspect(args) => runtime.block_on(inspect(args)),
        Command::Train(args) => runtime.block_on(train_command(*args)),
        Command::EvalSplit(args) => runtime.block_on(eval_split(args)),
        Command::Purge(args) => runtime.block_on(purge(args)),
    }
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
    match dataset::load(&args.data.options()).await {
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
    // The operator sets WORLD_SIZE for `workers > 1`; libtorch's distributed
    // backends are not reachable from tch, so refuse rather than have every
    // worker train the same model into the same output.
    if let Some(world) =
        std::env::var("WORLD_SIZE").ok().and_then(|w| w.parse::<u32>().ok()).filter(|&w| w > 1)
    {
        let message = format!(
            "WORLD_SIZE={world}: hone-trainer trains on one node (all its GPUs or cores); \
             set workers: 1, or use a bring-your-own image (spec.image) with a distributed trainer"
        );
        return fail(&log_path, "InvalidSpec", message);
    }
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads);
    }
    if args.device != DeviceArg::Cpu
        && let Err(e) = hone_storage::cuda::load_backend()
    {
        event("info", "cuda_backend_unavailable", json!({"reason": e}));
    }
    let device = match args.device {
        DeviceArg::Cpu => tch::Device::Cpu,
        DeviceArg::Auto => tch::Device::cuda_if_available(),
        DeviceArg::Cuda if tch::Cuda::is_available() => tch::Device::Cuda(0),
        DeviceArg::Cuda => {
            return fail(&log_path, "NoGpu", "--device cuda, but no CUDA device is visible".into());
        }
    };
    let opts = train::TrainOptions {
        data: args.data.options(),
        architecture: args.architecture,
        pretrained: args.pretrained.clone(),
        hyperparameters: args.hyperparameters(),
        output: args.output.clone(),
        device,
        expected_dataset_digest: args.dataset_digest.clone(),
    };
    let mut tracker: Box<dyn Tracker> = match &args.mlflow_uri {
        Some(uri) => Box::new(hone_trainer::tracking::MlflowTracker::new(
            uri,
            &args.mlflow_experiment,
            args.run_name.as_deref().unwrap_or("hone-trainer"),
        )),
        None => Box::new(NoTracking),
    };
    event(
        "info",
        "start",
        json!({"device": format!("{device:?}"), "threads": tch::get_num_threads(), "output": args.output}),
    );
    match train::run(&opts, tracker.as_mut()).await {
        Ok(outcome) => {
            let summary = TerminationSummary::Train(outcome.summary);
            println!("{}", serde_json::to_string(&summary).unwrap_or_default());
            termination::write(&log_path, &summary);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&log_path, e.category(), e.to_string()),
    }
}

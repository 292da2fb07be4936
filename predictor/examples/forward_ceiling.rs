//! The in-process batched forward throughput of a model (the ceiling a
//! server can approach): samples/s at batch 1 and at the given batch size.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use clap::Parser;
use hone_crds::modelversion::ArtifactFormat;
use hone_predictor::{model, runtime as model_runtime};
use tch::{Device, Kind, Tensor};

#[derive(Parser, Debug)]
struct Args {
    /// Model folder (model.pt + model.json).
    #[arg(long)]
    model: String,
    /// Batch size of the ceiling.
    #[arg(long, default_value_t = 32)]
    batch: i64,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

fn measure(module: &tch::CModule, shape: &[i64], batch: i64, seconds: f64) -> f64 {
    let mut full = vec![batch];
    full.extend_from_slice(shape);
    let input = Tensor::zeros(full.as_slice(), (Kind::Float, Device::Cpu));
    for _ in 0..3 {
        let _ = model_runtime::forward(module, input.shallow_clone()).unwrap();
    }
    let started = Instant::now();
    let mut samples = 0i64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        let _ = model_runtime::forward(module, input.shallow_clone()).unwrap();
        samples += batch;
    }
    samples as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let files = runtime
        .block_on(model::fetch_model(
            &args.model,
            ArtifactFormat::TorchScript,
            model::ExpectedDigests::default(),
        ))
        .unwrap();
    let module = model_runtime::load_module(&files.module, Device::Cpu).unwrap();
    let _guard = tch::no_grad_guard();
    let shape = files.card.signature.input_shape.clone();
    let single = measure(&module, &shape, 1, args.seconds);
    let batched = measure(&module, &shape, args.batch, args.seconds);
    let line = serde_json::json!({
        "label": "ceiling",
        "batch": args.batch,
        "samples_per_second_batch_1": single,
        "samples_per_second_batched": batched,
    });
    println!("{line}");
}

//! `hone-predictor verify`: what the ModelVersion verify Job runs. Fetches
//! the model, checks the digest, loads it and runs one forward pass on zeros
//! of the signature shape; prints a one-line JSON summary.

use crate::config::VerifyArgs;
use crate::model::{self, LoadError};

pub use hone_crds::contract::VerifySummary;

/// Runs every check and returns the summary (never an error: failures are in it).
pub async fn verify(args: &VerifyArgs) -> VerifySummary {
    let mut summary = VerifySummary {
        ok: false,
        model: args.model.clone(),
        digest: None,
        input_shape: None,
        classes: None,
        size_bytes: None,
        reason: None,
        message: None,
        forward_ms: None,
        card_digest: None,
        evaluation: None,
    };
    let fail = |mut s: VerifySummary, e: LoadError| {
        s.reason = Some(e.category().to_owned());
        s.message = Some(e.to_string());
        s
    };
    let device = match model::parse_device(&args.device) {
        Ok(d) => d,
        Err(message) => {
            summary.reason = Some("InvalidArgument".to_owned());
            summary.message = Some(message);
            return summary;
        }
    };
    let files = match model::fetch_model(&args.model, args.digest.as_deref()).await {
        Ok(files) => files,
        Err(e) => return fail(summary, e),
    };
    summary.digest = Some(files.digest.clone());
    summary.input_shape = Some(files.card.signature.input_shape.clone());
    summary.classes = Some(files.card.signature.classes.len());
    summary.size_bytes = Some(files.module.len() as u64);
    let checked = tokio::task::spawn_blocking(move || {
        let module = model::load_module(&files.module, device)?;
        let started = std::time::Instant::now();
        model::forward_zeros(&module, &files.card, 1, device)?;
        Ok::<f64, LoadError>(started.elapsed().as_secs_f64() * 1000.0)
    })
    .await;
    match checked {
        Ok(Ok(ms)) => {
            summary.ok = true;
            summary.forward_ms = Some((ms * 1000.0).round() / 1000.0);
            summary
        }
        Ok(Err(e)) => fail(summary, e),
        Err(join) => {
            summary.reason = Some("ForwardFailed".to_owned());
            summary.message = Some(format!("the forward pass crashed: {join}"));
            summary
        }
    }
}

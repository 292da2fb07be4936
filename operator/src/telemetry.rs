//! Structured logs: JSON lines by default, plain text for a terminal.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global `tracing` subscriber. Fails when the filter does not parse
/// or a subscriber is already installed.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
            .map_err(|e| anyhow::anyhow!(e))?,
        LogFormat::Text => builder.try_init().map_err(|e| anyhow::anyhow!(e))?,
    }
    Ok(())
}

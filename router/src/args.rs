//! Command-line flags; every flag is also an environment variable (`HONE_*`,
//! named in `hone_crds::router::env`), which is how the operator configures the pods.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use hone_crds::router::env;

/// `hone-router` flags.
#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Router config (YAML or JSON), reloaded when it changes.
    #[arg(long, env = env::CONFIG)]
    pub config: PathBuf,
    /// Listen address.
    #[arg(long, env = env::ADDR, default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// How often the config file is checked for changes, in milliseconds.
    #[arg(long, env = env::RELOAD_MS, default_value_t = 500)]
    pub reload_ms: u64,
    /// Longest a forwarded request may take, in milliseconds (504 after).
    #[arg(long, env = env::REQUEST_TIMEOUT_MS, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = env::MAX_BODY_BYTES, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Seconds to finish in-flight requests after SIGTERM.
    #[arg(long, env = env::SHUTDOWN_GRACE_SECONDS, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
}

//! Command-line flags; every flag is also an environment variable (`HONE_*`,
//! named in `hone_crds::router::env`), which is how the operator configures the pods.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use hone_crds::router::{ADMIN_PORT, env};

use crate::watch::ConfigMapRef;

/// Environment variable of `--max-inflight-mirror-bytes`. Local to the
/// router until the operator sets it (then it belongs in `hone_crds::router::env`).
pub const MAX_INFLIGHT_MIRROR_BYTES_ENV: &str = "HONE_MAX_INFLIGHT_MIRROR_BYTES";

/// `hone-router` flags.
#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Router config (YAML or JSON), reloaded when it changes.
    #[arg(long, env = env::CONFIG)]
    pub config: PathBuf,
    /// Listen address of the client port (forwarded traffic, health).
    #[arg(long, env = env::ADDR, default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Listen address of the admin port (`/metrics`, `/router/config`);
    /// keep it out of the clients' reach.
    #[arg(long, env = env::ADMIN_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)))]
    pub admin_addr: SocketAddr,
    /// Follow this ConfigMap (`<namespace>/<name>`) through the Kubernetes
    /// API instead of polling the file: a change applies as soon as the
    /// apiserver sends it. The file is then only the config to start with.
    #[arg(long, env = env::CONFIG_MAP)]
    pub config_map: Option<ConfigMapRef>,
    /// How often the config file is checked for changes, in milliseconds.
    #[arg(long, env = env::RELOAD_MS, default_value_t = 500)]
    pub reload_ms: u64,
    /// Longest a forwarded request may take at the backend, in milliseconds (504 after).
    #[arg(long, env = env::REQUEST_TIMEOUT_MS, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Largest request body, in bytes; larger ones are answered 413.
    #[arg(long, env = env::MAX_BODY_BYTES, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Most request-body bytes all requests in flight hold together; a
    /// request that would exceed it is answered 429.
    #[arg(long, env = env::MAX_INFLIGHT_BODY_BYTES, default_value_t = 256 << 20)]
    pub max_inflight_body_bytes: usize,
    /// Longest a client may take to send a request's headers (and longest an
    /// idle keep-alive connection is kept), in milliseconds.
    #[arg(long, env = env::HEADER_READ_TIMEOUT_MS, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// Longest a client may take to send a request's body, in milliseconds (408 after).
    #[arg(long, env = env::BODY_READ_TIMEOUT_MS, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,
    /// Most shadow (mirrored) requests in flight at once; a copy beyond is
    /// not sent (counted `dropped`).
    #[arg(long, env = env::MAX_INFLIGHT_MIRRORS, default_value_t = 32)]
    pub max_inflight_mirrors: usize,
    /// Most request-body bytes the mirrors in flight hold together, apart
    /// from `--max-inflight-body-bytes`; a copy beyond is not sent.
    #[arg(long, env = MAX_INFLIGHT_MIRROR_BYTES_ENV, default_value_t = 16 << 20)]
    pub max_inflight_mirror_bytes: usize,
    /// Seconds to finish in-flight requests after SIGTERM.
    #[arg(long, env = env::SHUTDOWN_GRACE_SECONDS, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
}

//! `hone-router`: splits traffic between InferenceService variants by
//! weight, sticky header or variant header, per a config file the operator
//! writes (a ConfigMap), reloaded on change without a restart.
//!
//! It owns its metrics (`hone_router_*`, what canary analysis reads) and
//! links no libtorch: its image carries only this binary.

pub mod args;
pub mod balance;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod shutdown;

pub use args::RouterArgs;
pub use server::{RouterError, run};
pub use shutdown::shutdown_signal;

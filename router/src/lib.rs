//! `hone-router`: splits traffic between InferenceService variants by
//! weight, sticky header or variant header, per a config file the operator
//! writes (a ConfigMap), reloaded on change without a restart.
//!
//! Clients cannot steer it: the variant header reaches only the backends the
//! config marks pinnable, a sticky value cannot pick a canary, and only
//! requests a backend actually answered on an inference route count in the
//! per-backend metrics canary analysis reads. The router's own refusals
//! (oversized or slow bodies, unknown variants) are 4xx answers of its own,
//! counted apart. Its metrics and config are on a separate admin listener.
//!
//! It also counts what the predictors answered (class and confidence of
//! small `/predict` answers), mirrors a share of a backend's inference
//! traffic to another and compares the answers (never delaying or altering
//! the client's), and, with a feedback key, signs the request ids of its
//! answers so `POST /feedback` can count ground truth per variant.
//!
//! It links no libtorch: its image carries only this binary.

pub mod args;
pub mod balance;
pub mod body;
pub mod config;
pub mod feedback;
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod mirror;
pub mod predictions;
pub mod proxy;
pub mod reject;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod token;
pub mod watch;

pub use args::RouterArgs;
pub use server::{RouterError, run};
pub use shutdown::shutdown_signal;

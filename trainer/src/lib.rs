//! Hone's trainer: dataset inspection, model training with libtorch (one
//! process or data-parallel ranks on c10d), and the held-out test split for
//! evaluation.

pub mod augment;
pub mod check_output;
pub mod checkpoint;
pub mod cli;
pub mod dataset;
pub mod distributed;
pub mod evalsplit;
mod export;
pub mod images;
pub mod log;
pub mod metrics;
pub mod model;
pub mod optim;
mod prepare;
pub mod purge;
pub mod report;
pub mod rng;
pub mod stats;
pub mod stream;
pub mod tensors;
pub mod termination;
pub mod tracking;
pub mod train;

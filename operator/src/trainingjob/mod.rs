//! The TrainingJob controller: wait for the Dataset, run the training Job,
//! map its outcome to status.
//!
//! So far the pure stages: validate (with the Dataset gate), desired (Job and
//! headless Service) and status (outcome mapping). observe, apply (server-side
//! apply; only `suspend` may change on an existing Job) and ModelVersion
//! registration come next.

pub mod desired;
pub mod status;
pub mod validate;

#[cfg(test)]
mod tests;

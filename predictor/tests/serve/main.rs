//! The model server over real HTTP on loopback: every route and every error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod limits;
mod oip_client;
mod routes;

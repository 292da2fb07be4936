//! Shared test harness: the router in this process on loopback, and small
//! real HTTP backends.
#![allow(dead_code)]

use std::path::Path;

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use clap::Parser;
use hone_router::RouterArgs;
use serde_json::json;
use tokio::net::TcpListener;

#[derive(Parser)]
struct RouterCli {
    #[command(flatten)]
    router: RouterArgs,
}

/// A router running in this process.
pub struct Router {
    /// `http://127.0.0.1:PORT` of the client port.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin port.
    pub admin: String,
}

impl Router {
    /// URL of `path` on the client port.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The admin port's metrics page.
    pub async fn metrics(&self) -> String {
        let r = reqwest::get(format!("{}/metrics", self.admin)).await.expect("GET /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.expect("metrics text")
    }
}

/// Starts a router on `config` (reread every 100 ms) with `extra` flags.
pub async fn start_router(config: &Path, extra: &[&str]) -> Router {
    let mut argv =
        vec!["hone-router", "--config", config.to_str().expect("UTF-8 path"), "--reload-ms", "100"];
    argv.extend_from_slice(extra);
    let args = RouterCli::try_parse_from(argv).expect("valid router flags").router;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let router = Router {
        base: format!("http://{}", listener.local_addr().expect("local address")),
        admin: format!("http://{}", admin.local_addr().expect("local address")),
    };
    tokio::spawn(hone_router::run(args, listener, admin, std::future::pending()));
    router
}

/// A backend that answers who it is and what it got.
pub async fn echo_backend(name: &'static str) -> String {
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| async move {
        let sticky = headers.get("x-user").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        axum::Json(json!({"backend": name, "path": uri.to_string(), "body": String::from_utf8_lossy(&body), "user": sticky}))
    });
    serve(app).await
}

/// Serves `app` on a loopback port; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Asserts a JSON error answer with `status` and `code`; returns the body.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    let got = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "body: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(body["status"], status);
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "body: {body}");
    body
}

//! Closed-loop HTTP load generator for `bench/predictor` (loopback only):
//! `concurrency` workers each send the same request back to back for a fixed
//! time (or until a request count), then it prints one JSON line with
//! requests/s, p50/p99 latency and which `x-hone-variant` answered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Parser, Debug)]
struct Args {
    /// Target URL (must be on loopback).
    #[arg(long)]
    url: String,
    /// File with the request body.
    #[arg(long)]
    body: std::path::PathBuf,
    /// Content-Type of the body.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// Extra header `name: value` (repeatable).
    #[arg(long)]
    header: Vec<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured warm-up seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many measured requests (instead of the duration).
    #[arg(long)]
    requests: Option<usize>,
    /// Label printed with the result.
    #[arg(long, default_value = "")]
    label: String,
}

struct Sample {
    latency: Duration,
    ok: bool,
    variant: Option<String>,
}

fn main() {
    let args = Args::parse();
    let uri: hyper::Uri = args.url.parse().expect("url");
    let host = uri.host().unwrap_or("");
    assert!(
        host == "localhost" || host.starts_with("127.") || host == "[::1]",
        "the load generator only targets loopback, not {host}"
    );
    // One thread: the load generator must leave the cores to the server.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let body = Bytes::from(std::fs::read(&args.body).expect("body file"));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(args.concurrency).build(connector);
    let headers: Vec<(String, String)> = args
        .header
        .iter()
        .map(|h| {
            let (k, v) = h.split_once(':').expect("header is name: value");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let send = {
        let (client, url, body, content_type, headers) =
            (client.clone(), args.url.clone(), body.clone(), args.content_type.clone(), headers.clone());
        move || {
            let mut request = hyper::Request::post(&url).header("content-type", &content_type);
            for (k, v) in &headers {
                request = request.header(k, v);
            }
            let request = request.body(Body::from(body.clone())).unwrap();
            let client = client.clone();
            async move {
                let started = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let variant = response
                            .headers()
                            .get("x-hone-variant")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let ok = response.into_body().collect().await.is_ok() && ok;
                        Sample { latency: started.elapsed(), ok, variant }
                    }
                    Err(_) => Sample { latency: started.elapsed(), ok: false, variant: None },
                }
            }
        }
    };
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let mut warm = Vec::new();
    for _ in 0..args.concurrency {
        let send = send.clone();
        warm.push(tokio::spawn(async move {
            while Instant::now() < warm_until {
                send().await;
            }
        }));
    }
    for w in warm {
        w.await.unwrap();
    }
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.duration);
    let budget = Arc::new(AtomicUsize::new(args.requests.unwrap_or(usize::MAX)));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (send, budget) = (send.clone(), budget.clone());
        let by_count = args.requests.is_some();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                if by_count {
                    if budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1)).is_err()
                    {
                        break;
                    }
                } else if Instant::now() >= until {
                    break;
                }
                samples.push(send().await);
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let errors = samples.iter().filter(|s| !s.ok).count();
    let mut latencies: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    let pct =
        |p: f64| latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
    let mut variants = BTreeMap::new();
    for s in &samples {
        if let Some(v) = &s.variant {
            *variants.entry(v.clone()).or_insert(0usize) += 1;
        }
    }
    let line = serde_json::json!({
        "label": args.label,
        "concurrency": args.concurrency,
        "requests": samples.len(),
        "errors": errors,
        "seconds": elapsed,
        "rps": samples.len() as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "variants": variants,
    });
    println!("{line}");
}

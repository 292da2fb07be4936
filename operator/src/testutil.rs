//! Fixtures shared by unit tests.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// A Job with one `True` condition of `type_`.
pub fn job_with_condition(type_: &str, reason: Option<&str>, message: Option<&str>) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": "j"},
        "status": {
            "conditions": [{
                "type": type_, "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": "2024-01-01T00:10:00Z"
            }],
            "completionTime": if type_ == "Complete" { Some("2024-01-01T00:10:00Z") } else { None },
        }
    }))
    .unwrap()
}

/// A pod of Job `job` whose container `container` terminated at `finished_at` with `message`.
pub fn pod_terminated(job: &str, container: &str, finished_at: &str, message: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{job}-abcde"), "labels": {"batch.kubernetes.io/job-name": job}},
        "status": {"containerStatuses": [{
            "name": container, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "finishedAt": finished_at, "message": message}}
        }]}
    }))
    .unwrap()
}

/// Serves one HTTP response (`status`, `body`) on a loopback port from a plain
/// thread, as a router's /metrics would; returns its URL.
pub fn serve_once(status: &'static str, body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).unwrap();
        let response =
            format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        socket.write_all(response.as_bytes()).unwrap();
    });
    format!("http://{address}/metrics")
}

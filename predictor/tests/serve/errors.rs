//! Every caller mistake gets its status and a JSON error body; none crashes the server.

use serde_json::json;

use crate::common::{args, expect_error, gray_png, start};

fn infer(shape: serde_json::Value, datatype: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tensors_are_400_or_422() {
    let server = start(args("mlp", &[])).await;
    let client = reqwest::Client::new();
    let url = server.url("/v2/models/mlp/infer");
    let send = |body: String| client.post(&url).header("content-type", "application/json").body(body).send();
    expect_error(send("{not json".into()).await.unwrap(), 400, "invalid_json").await;
    expect_error(send(r#"{"inputs": "x"}"#.into()).await.unwrap(), 400, "invalid_json").await;
    let cases = [
        (infer(json!([1, 3]), "FP32", json!([1, 2, 3])), "invalid_shape"),
        (infer(json!([1, 4]), "FP32", json!([1, 2, 3])), "invalid_count"),
        (infer(json!([1, 4]), "BYTES", json!(["a", "b", "c", "d"])), "invalid_datatype"),
        (infer(json!([1, 4]), "INT8", json!([1, 2, 3, 300])), "invalid_datatype"),
        (infer(json!([1, 4]), "FP32", json!([1, 2, 3, 1e300])), "non_finite"),
        (json!({"inputs": []}), "invalid_count"),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": "embedding"}]}),
            "unsupported",
        ),
    ];
    for (body, code) in cases {
        expect_error(send(body.to_string()).await.unwrap(), 422, code).await;
    }
    expect_error(
        send(infer(json!([1, 4]), "FP32", json!([1, 2, 3, "NaN"])).to_string()).await.unwrap(),
        422,
        "invalid_datatype",
    )
    .await;
    // An object where a number belongs is a JSON structure error.
    expect_error(
        send(infer(json!([1, 4]), "FP32", json!([1, 2, 3, {}])).to_string()).await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    // Still serving after all of that.
    let ok = send(infer(json!([1, 4]), "FP32", json!([1, 2, 3, 4])).to_string()).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_media_types_are_415() {
    let server = start(args("mlp", &[])).await;
    let client = reqwest::Client::new();
    let r =
        client.post(server.url("/predict")).header("content-type", "text/plain").body("1,2,3,4").send().await;
    expect_error(r.unwrap(), 415, "unsupported_media_type").await;
    let r = client
        .post(server.url("/predict"))
        .header("content-type", "image/png")
        .body(gray_png(4, 4, 1))
        .send();
    expect_error(r.await.unwrap(), 415, "unsupported_media_type").await;
    let r =
        client.post(server.url("/v2/models/mlp/infer")).header("content-type", "text/csv").body("1").send();
    expect_error(r.await.unwrap(), 415, "unsupported_media_type").await;
    let cnn = start(args("cnn", &[])).await;
    let r = client.post(cnn.url("/predict")).json(&json!([1, 2, 3, 4])).send();
    expect_error(r.await.unwrap(), 415, "unsupported_media_type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_images_and_rows_are_422() {
    let server = start(args("cnn", &["--max-image-dimension", "16", "--max-batch-items", "2"])).await;
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        client.post(server.url("/predict")).header("content-type", "image/png").body(body).send()
    };
    expect_error(post(b"definitely not a png".to_vec()).await.unwrap(), 422, "undecodable_image").await;
    let mut truncated = gray_png(8, 8, 9);
    truncated.truncate(40);
    expect_error(post(truncated).await.unwrap(), 422, "undecodable_image").await;
    let body = expect_error(post(gray_png(17, 4, 9)).await.unwrap(), 422, "image_too_large").await;
    assert!(body["error"].as_str().unwrap().contains("17x4"));
    let mut form = reqwest::multipart::Form::new();
    for i in 0..3 {
        form =
            form.part(format!("f{i}"), reqwest::multipart::Part::bytes(gray_png(8, 8, 1)).file_name("a.png"));
    }
    let r = client.post(server.url("/predict/batch")).multipart(form).send().await.unwrap();
    expect_error(r, 422, "too_many_items").await;
    let form = reqwest::multipart::Form::new()
        .part("a", reqwest::multipart::Part::bytes(gray_png(8, 8, 1)).file_name("a.png"))
        .part("b", reqwest::multipart::Part::bytes(b"junk".to_vec()).file_name("b.png"));
    let r = client.post(server.url("/predict/batch")).multipart(form).send().await.unwrap();
    let body = expect_error(r, 422, "undecodable_image").await;
    assert!(body["error"].as_str().unwrap().contains("item 1"), "{body}");
    let r = client
        .post(server.url("/predict"))
        .header("content-type", "multipart/form-data; boundary=zzz")
        .body("--zzz\r\nbroken")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_multipart").await;

    let mlp = start(args("mlp", &[])).await;
    let post = |body: serde_json::Value| client.post(mlp.url("/predict")).json(&body).send();
    expect_error(post(json!([1.0, 2.0])).await.unwrap(), 422, "invalid_count").await;
    expect_error(post(json!({"sepal_length": 1.0})).await.unwrap(), 422, "invalid_feature").await;
    expect_error(post(json!("text")).await.unwrap(), 400, "invalid_json").await;
    let r = client.post(mlp.url("/predict/batch")).json(&json!({"instances": []})).send().await.unwrap();
    expect_error(r, 400, "invalid_json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let server = start(args("cnn", &["--max-body-bytes", "1024"])).await;
    let client = reqwest::Client::new();
    let big = vec![0u8; 4096];
    let r = client.post(server.url("/predict")).header("content-type", "image/png").body(big.clone()).send();
    let body = expect_error(r.await.unwrap(), 413, "payload_too_large").await;
    assert!(body["error"].as_str().unwrap().contains("1024"));
    // Chunked, so no Content-Length: the limit applies while reading.
    let stream = futures::stream::iter(
        big.chunks(512).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let r = client
        .post(server.url("/v2/models/cnn/infer"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_routes_and_methods_are_json_404_405() {
    let server = start(args("mlp", &[])).await;
    let client = reqwest::Client::new();
    expect_error(reqwest::get(server.url("/v2/models/other")).await.unwrap(), 404, "model_not_found").await;
    expect_error(
        reqwest::get(server.url("/v2/models/mlp/versions/nope")).await.unwrap(),
        404,
        "model_not_found",
    )
    .await;
    let r =
        client.post(server.url("/v2/models/other/infer")).json(&json!({"inputs": []})).send().await.unwrap();
    expect_error(r, 404, "model_not_found").await;
    expect_error(reqwest::get(server.url("/nowhere")).await.unwrap(), 404, "not_found").await;
    expect_error(reqwest::get(server.url("/predict")).await.unwrap(), 405, "method_not_allowed").await;
}

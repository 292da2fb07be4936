//! The operator's MLflow Model Registry client against a real `mlflow
//! server` (the PyPI package, on loopback): resolving `models:/` URIs by
//! version and by alias to files a pod can read, registering a ModelVersion
//! with Hone's lineage tags (once, however often it is retried), moving an
//! alias, and a registry that is down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_crds::modelversion::{ArtifactFormat, RegistryReference};
use hone_operator::mlflow::{Credentials, Export, Registry, RegistryConfig, RegistryError, tags};
use hone_storage::testing::MlflowServer;

fn registry(uri: &str) -> Registry {
    Registry::new(&RegistryConfig { uri: uri.to_owned(), credentials: Credentials::None }).unwrap()
}

fn export(uid: &str) -> Export {
    Export {
        registered_model: "digits-hone".into(),
        source: format!("s3://hone-models/cnn/{uid}"),
        run_id: None,
        description: "Hone ModelVersion ns/digits-v1".into(),
        tags: vec![
            (tags::MODEL_VERSION.into(), "ns/digits-v1".into()),
            (tags::MODEL_VERSION_UID.into(), uid.into()),
            (tags::TRAINING_JOB.into(), "ns/cnn".into()),
            (tags::DATASET_DIGEST.into(), "sha256:d1".into()),
        ],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn models_uris_resolve_registrations_carry_lineage_and_an_alias_moves() {
    let Some(mut server) = MlflowServer::start() else { return };
    let run_id = server.register_iris("iris", "model.onnx", "champion");
    let client = registry(&format!("{}/", server.uri));

    // Import, by version and by alias: the same version, its run, and a URI a pod reads.
    let by_version = RegistryReference::parse("models:/iris/1").unwrap();
    let resolved = client.resolve(&by_version, ArtifactFormat::Onnx).await.unwrap();
    assert_eq!((resolved.registered_model.as_str(), resolved.version.as_str()), ("iris", "1"));
    assert_eq!(resolved.run_id.as_deref(), Some(run_id.as_str()));
    assert!(
        resolved.uri.starts_with(&format!("{}/api/2.0/mlflow-artifacts/artifacts/", server.uri)),
        "{resolved:?}"
    );
    assert!(resolved.uri.ends_with("/model/model.onnx"), "{resolved:?}");
    let by_alias = RegistryReference::parse("models:/iris@champion").unwrap();
    assert_eq!(client.resolve(&by_alias, ArtifactFormat::Onnx).await.unwrap(), resolved);
    // What the verify pod and the predictors do: read the files through hone-storage.
    let model = hone_storage::read(&resolved.uri).await.unwrap();
    assert_eq!(model, std::fs::read(server.dir().join("model/model.onnx")).unwrap());
    let card = hone_storage::read(&resolved.uri.replace("model.onnx", "model.json")).await.unwrap();
    assert!(String::from_utf8_lossy(&card).contains("classes"));

    // What is not there is NotFound (never retried), with the reference named.
    for missing in ["models:/iris/7", "models:/iris@challenger", "models:/no-such-model/1"] {
        let reference = RegistryReference::parse(missing).unwrap();
        match client.resolve(&reference, ArtifactFormat::Onnx).await {
            Err(RegistryError::NotFound(message)) => assert!(message.contains(missing), "{message}"),
            other => panic!("{missing}: {other:?}"),
        }
    }

    // Export: a new registered model, lineage tags, the run; a retry of the
    // same ModelVersion (same uid) finds its version instead of adding one.
    assert_eq!(client.register(&export("uid-1")).await.unwrap(), "1");
    assert_eq!(client.register(&export("uid-1")).await.unwrap(), "1", "registered once");
    let mut with_run = export("uid-2");
    with_run.run_id = Some(run_id.clone());
    assert_eq!(client.register(&with_run).await.unwrap(), "2");
    let check = format!(
        "from mlflow import MlflowClient\nc = MlflowClient()\n\
         vs = sorted(c.search_model_versions(\"name = 'digits-hone'\"), key=lambda v: int(v.version))\n\
         assert [v.version for v in vs] == ['1', '2'], [v.version for v in vs]\n\
         assert vs[0].source == 's3://hone-models/cnn/uid-1', vs[0].source\n\
         assert vs[0].tags['{}'] == 'ns/cnn' and vs[0].tags['{}'] == 'sha256:d1', vs[0].tags\n\
         assert vs[1].run_id == '{run_id}', vs[1].run_id\n",
        tags::TRAINING_JOB,
        tags::DATASET_DIGEST
    );
    server.python(&check);
    // Hone's own export resolves back to Hone's files (TorchScript: model.pt).
    let exported = RegistryReference::parse("models:/digits-hone/1").unwrap();
    let back = client.resolve(&exported, ArtifactFormat::TorchScript).await.unwrap();
    assert_eq!(back.uri, "s3://hone-models/cnn/uid-1/model.pt");

    // An alias follows what is served.
    client.set_alias("digits-hone", "production", "1").await.unwrap();
    client.set_alias("digits-hone", "production", "2").await.unwrap();
    server.python(
        "from mlflow import MlflowClient\n\
         v = MlflowClient().get_model_version_by_alias('digits-hone', 'production')\n\
         assert v.version == '2', v.version\n",
    );
    match client.set_alias("digits-hone", "production", "9").await {
        Err(e) => assert!(!e.retryable(), "a missing version is not retried: {e:?}"),
        Ok(()) => panic!("an alias on a missing version was accepted"),
    }

    // Down: every call is Unavailable, which is retried; nothing is lost.
    server.stop();
    for outcome in [
        client.resolve(&by_version, ArtifactFormat::Onnx).await.map(|_| ()),
        client.register(&export("uid-3")).await.map(|_| ()),
        client.set_alias("digits-hone", "production", "1").await,
    ] {
        match outcome {
            Err(e @ RegistryError::Unavailable(_)) => assert!(e.retryable()),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    // Back up on the same store: the retried export lands as version 3.
    server.restart();
    assert_eq!(client.register(&export("uid-3")).await.unwrap(), "3");
}

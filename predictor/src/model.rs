//! Loading a ModelVersion: fetch the model file (`model.pt` or
//! `model.onnx`) and `model.json`, check the digests and validate the card.
//! Loading and running the model itself is [`crate::runtime`].

use bytes::Bytes;
use hone_crds::contract::{InputKind, ModelCard};
use hone_crds::modelversion::ArtifactFormat;
use sha2::{Digest, Sha256};

use crate::fetch;
use crate::onnx::OnnxError;

/// Why a model cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read from storage.
    #[error("fetching {uri}: {source}")]
    Fetch {
        /// The URI read.
        uri: String,
        /// The storage error.
        #[source]
        source: crate::fetch::FetchError,
    },
    /// The model file does not have the expected digest.
    #[error("digest mismatch for {uri}: expected {expected}, found {found}")]
    DigestMismatch {
        /// The URI read.
        uri: String,
        /// The digest asked for.
        expected: String,
        /// The digest of the bytes read.
        found: String,
    },
    /// `model.json` does not have the expected digest: the card is not the
    /// one the ModelVersion pinned.
    #[error("model card digest mismatch for {uri}: expected {expected}, found {found}")]
    CardDigestMismatch {
        /// The URI read.
        uri: String,
        /// The digest asked for.
        expected: String,
        /// The digest of the bytes read.
        found: String,
    },
    /// `model.json` is not a valid model card.
    #[error("invalid model card {uri}: {reason}")]
    Card {
        /// The URI read.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// libtorch cannot load the module.
    #[error("loading TorchScript module: {0}")]
    Module(#[source] tch::TchError),
    /// The file is not in the declared format: its bytes are the other one's.
    #[error("the model is declared {declared} but the file is {found}: {detail}")]
    FormatMismatch {
        /// The format asked for (`spec.artifact.format`, `--format`).
        declared: ArtifactFormat,
        /// The format the bytes are in.
        found: ArtifactFormat,
        /// What the declared format's loader said of the bytes.
        detail: String,
    },
    /// ONNX Runtime is unavailable or cannot run the ONNX model.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// The warm-up forward pass failed or returned the wrong shape.
    #[error("warm-up forward pass: {0}")]
    WarmUp(String),
}

impl LoadError {
    /// A short category for logs and the verify summary.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Fetch { .. } => "Storage",
            Self::DigestMismatch { .. } => "DigestMismatch",
            Self::CardDigestMismatch { .. } => "CardDigestMismatch",
            Self::Card { .. } => "InvalidModelCard",
            Self::Module(_) => "InvalidModule",
            Self::FormatMismatch { .. } => "FormatMismatch",
            Self::Onnx(OnnxError::Runtime(_)) => "OnnxRuntimeUnavailable",
            Self::Onnx(OnnxError::Model(_) | OnnxError::Signature(_)) => "InvalidModule",
            Self::WarmUp(_) => "ForwardFailed",
        }
    }
}

/// The raw files of a model, with the digests of the model file and `model.json`.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Bytes of the model file.
    pub module: Bytes,
    /// The parsed `model.json`.
    pub card: ModelCard,
    /// `sha256:<hex>` of the model file.
    pub digest: String,
    /// `sha256:<hex>` of `model.json`, as read.
    pub card_digest: String,
}

/// The digests a model's files must have; `None` accepts any (for
/// the model file, then the card's `artifactDigest` is checked, if it has one).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExpectedDigests<'a> {
    /// Expected `sha256:` of the model file.
    pub module: Option<&'a str>,
    /// Expected `sha256:` of `model.json`.
    pub card: Option<&'a str>,
}

/// Both files as read from storage, nothing checked yet.
#[derive(Debug, Clone)]
pub struct FetchedFiles {
    /// URI of the model file.
    pub module_uri: String,
    /// URI of `model.json`.
    pub card_uri: String,
    /// Bytes of the model file.
    pub module: Bytes,
    /// Bytes of `model.json`.
    pub card: Bytes,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Fetches the model file and `model.json` and checks them (see [`check_files`]).
pub async fn fetch_model(
    uri: &str,
    format: ArtifactFormat,
    expected: ExpectedDigests<'_>,
) -> Result<ModelFiles, LoadError> {
    check_files(fetch_files(uri, format).await?, expected)
}

/// Reads the model file and `model.json` for `--model` (a folder, or the
/// model file itself); a folder holds `format`'s file (`model.pt`, `model.onnx`).
pub async fn fetch_files(uri: &str, format: ArtifactFormat) -> Result<FetchedFiles, LoadError> {
    let (module_uri, card_uri) = fetch::model_files(uri, format);
    let read = |uri: String| async move {
        fetch::fetch(&uri).await.map_err(|source| LoadError::Fetch { uri: uri.clone(), source })
    };
    let (module, card) = tokio::try_join!(read(module_uri.clone()), read(card_uri.clone()))?;
    Ok(FetchedFiles { module_uri, card_uri, module, card })
}

/// Checks the card's digest, parses and validates the card, then checks
/// the module's digest against `expected.module` or, when none is given,
/// the card's `artifactDigest`. The card is checked first: a card that is
/// not the pinned one must not vouch for the module.
pub fn check_files(files: FetchedFiles, expected: ExpectedDigests<'_>) -> Result<ModelFiles, LoadError> {
    let FetchedFiles { module_uri, card_uri, module, card: card_bytes } = files;
    let card_digest = sha256_digest(&card_bytes);
    if let Some(expected) = expected.card
        && !expected.eq_ignore_ascii_case(&card_digest)
    {
        return Err(LoadError::CardDigestMismatch {
            uri: card_uri,
            expected: expected.to_owned(),
            found: card_digest,
        });
    }
    let card: ModelCard = serde_json::from_slice(&card_bytes)
        .map_err(|e| LoadError::Card { uri: card_uri.clone(), reason: e.to_string() })?;
    validate_card(&card).map_err(|reason| LoadError::Card { uri: card_uri, reason })?;
    let digest = sha256_digest(&module);
    if let Some(expected) = expected.module.or(card.artifact_digest.as_deref())
        && !expected.eq_ignore_ascii_case(&digest)
    {
        return Err(LoadError::DigestMismatch {
            uri: module_uri,
            expected: expected.to_owned(),
            found: digest,
        });
    }
    Ok(ModelFiles { module, card, digest, card_digest })
}

/// Checks what the predictor relies on in a card.
pub fn validate_card(card: &ModelCard) -> Result<(), String> {
    let shape = &card.signature.input_shape;
    if shape.is_empty() || shape.iter().any(|&d| d <= 0) {
        return Err(format!("signature.inputShape {shape:?} must be non-empty and positive"));
    }
    if shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d)).is_none_or(|n| n > 1 << 28) {
        return Err(format!("signature.inputShape {shape:?} is too large"));
    }
    card.signature.check_head()?;
    let width = match card.input {
        InputKind::Image => {
            if shape.len() != 3 || !(shape[0] == 1 || shape[0] == 3) {
                return Err(format!("image models need inputShape [1|3, height, width], got {shape:?}"));
            }
            shape[0] as usize
        }
        InputKind::Tabular => {
            if shape.len() != 1 {
                return Err(format!("tabular models need inputShape [features], got {shape:?}"));
            }
            if !card.feature_names.is_empty() && card.feature_names.len() as i64 != shape[0] {
                return Err(format!(
                    "featureNames has {} names but inputShape is {shape:?}",
                    card.feature_names.len()
                ));
            }
            shape[0] as usize
        }
    };
    if let Some(pre) = &card.signature.preprocessing {
        for (what, values) in [("mean", &pre.mean), ("std", &pre.std)] {
            if let Some(values) = values {
                if values.len() != width && values.len() != 1 {
                    return Err(format!(
                        "preprocessing.{what} has {} values, expected {width}",
                        values.len()
                    ));
                }
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(format!("preprocessing.{what} has a non-finite value"));
                }
            }
        }
        if pre.std.as_ref().is_some_and(|s| s.contains(&0.0)) {
            return Err("preprocessing.std has a zero".into());
        }
        if let Some(resize) = &pre.resize
            && (resize.len() != 2 || resize.contains(&0))
        {
            return Err(format!("preprocessing.resize {resize:?} must be [height, width]"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(json: &str) -> ModelCard {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            sha256_digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cards_with_wrong_shapes_are_rejected() {
        let ok = r#"{"formatVersion":1,"input":"image","signature":{"inputShape":[1,8,8],"classes":["a"]}}"#;
        assert!(validate_card(&card(ok)).is_ok());
        let bad = r#"{"formatVersion":1,"input":"image","signature":{"inputShape":[4],"classes":["a"]}}"#;
        assert!(validate_card(&card(bad)).is_err());
        let zero = r#"{"formatVersion":1,"input":"tabular","signature":{"inputShape":[0],"classes":["a"]}}"#;
        assert!(validate_card(&card(zero)).is_err());
        let std0 = r#"{"formatVersion":1,"input":"tabular","signature":{"inputShape":[2],"classes":["a"],
            "preprocessing":{"std":[1.0,0.0]}}}"#;
        assert!(validate_card(&card(std0)).unwrap_err().contains("zero"));
        let names = r#"{"formatVersion":1,"input":"tabular","featureNames":["x"],"signature":{"inputShape":[2],"classes":["a"]}}"#;
        assert!(validate_card(&card(names)).is_err());
    }

    #[test]
    fn cards_are_held_to_their_task() {
        let with = |signature: &str| {
            card(&format!(r#"{{"formatVersion":1,"input":"tabular","signature":{signature}}}"#))
        };
        let no_classes = with(r#"{"inputShape":[2]}"#);
        assert!(validate_card(&no_classes).unwrap_err().contains("at least one class"));
        assert!(validate_card(&with(r#"{"inputShape":[2],"task":"regression"}"#)).is_ok());
        let three = with(r#"{"inputShape":[2],"task":"binary","classes":["a","b","c"]}"#);
        assert!(validate_card(&three).unwrap_err().contains("exactly two classes"));
        assert!(
            validate_card(&with(r#"{"inputShape":[2],"task":"binary","classes":["a","b"],"threshold":0.3}"#))
                .is_ok()
        );
        let on_softmax = with(r#"{"inputShape":[2],"classes":["a","b"],"threshold":0.3}"#);
        assert!(validate_card(&on_softmax).unwrap_err().contains("binary or multilabel only"));
        let one = with(r#"{"inputShape":[2],"task":"multilabel","classes":["a","b"],"threshold":1.0}"#);
        assert!(validate_card(&one).unwrap_err().contains("strictly between 0 and 1"));
        let unknown = r#"{"formatVersion":1,"input":"tabular","signature":{"inputShape":[2],"classes":["a"],"task":"ranking"}}"#;
        assert!(serde_json::from_str::<ModelCard>(unknown).is_err());
    }

    fn fetched(card: &str) -> FetchedFiles {
        FetchedFiles {
            module_uri: "file:///m/model.pt".into(),
            card_uri: "file:///m/model.json".into(),
            module: Bytes::from_static(b"module"),
            card: Bytes::from(card.to_owned()),
        }
    }

    #[test]
    fn a_card_with_another_digest_is_refused_before_it_is_read() {
        let pinned = format!("sha256:{}", "c".repeat(64));
        let found = sha256_digest(b"not even JSON");
        let err =
            check_files(fetched("not even JSON"), ExpectedDigests { module: None, card: Some(&pinned) })
                .unwrap_err();
        assert_eq!(err.category(), "CardDigestMismatch");
        let message = err.to_string();
        assert!(message.contains(&pinned) && message.contains(&found), "{message}");
        assert!(message.contains("file:///m/model.json"), "{message}");
    }

    #[test]
    fn the_pinned_card_passes_and_its_digest_is_returned() {
        let json = r#"{"formatVersion":1,"input":"tabular","signature":{"inputShape":[2],"classes":["a"]}}"#;
        let digest = sha256_digest(json.as_bytes());
        let upper = digest.to_uppercase().replace("SHA256:", "sha256:");
        let files = check_files(fetched(json), ExpectedDigests { module: None, card: Some(&upper) }).unwrap();
        assert_eq!(files.card_digest, digest);
        assert_eq!(files.digest, sha256_digest(b"module"));
        let unpinned = check_files(fetched(json), ExpectedDigests::default()).unwrap();
        assert_eq!(unpinned.card_digest, digest);
    }
}

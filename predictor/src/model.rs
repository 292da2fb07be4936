//! Loading a ModelVersion: fetch `model.pt` and `model.json`, check the
//! digest, validate the card, load the TorchScript module, and run it.

use bytes::Bytes;
use hone_crds::contract::{InputKind, ModelCard};
use sha2::{Digest, Sha256};
use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::fetch;

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
    /// `model.pt` does not have the expected digest.
    #[error("digest mismatch for {uri}: expected {expected}, found {found}")]
    DigestMismatch {
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
            Self::Card { .. } => "InvalidModelCard",
            Self::Module(_) => "InvalidModule",
            Self::WarmUp(_) => "ForwardFailed",
        }
    }
}

/// The raw files of a model, with the digest of `model.pt`.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Bytes of `model.pt`.
    pub module: Bytes,
    /// The parsed `model.json`.
    pub card: ModelCard,
    /// `sha256:<hex>` of `model.pt`.
    pub digest: String,
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

/// Fetches `model.pt` and `model.json`, checks the digest against `expected`
/// (or, when none is given, against the card's `artifactDigest`) and
/// validates the card.
pub async fn fetch_model(uri: &str, expected: Option<&str>) -> Result<ModelFiles, LoadError> {
    let (module_uri, card_uri) = fetch::model_files(uri);
    let read = |uri: String| async move {
        fetch::fetch(&uri).await.map_err(|source| LoadError::Fetch { uri: uri.clone(), source })
    };
    let (module, card_bytes) = tokio::try_join!(read(module_uri.clone()), read(card_uri.clone()))?;
    let card: ModelCard = serde_json::from_slice(&card_bytes)
        .map_err(|e| LoadError::Card { uri: card_uri.clone(), reason: e.to_string() })?;
    validate_card(&card).map_err(|reason| LoadError::Card { uri: card_uri, reason })?;
    let digest = sha256_digest(&module);
    if let Some(expected) = expected.or(card.artifact_digest.as_deref())
        && !expected.eq_ignore_ascii_case(&digest)
    {
        return Err(LoadError::DigestMismatch {
            uri: module_uri,
            expected: expected.to_owned(),
            found: digest,
        });
    }
    Ok(ModelFiles { module, card, digest })
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
    if card.signature.classes.is_empty() {
        return Err("signature.classes is empty".into());
    }
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

/// Loads the TorchScript module onto `device` in eval mode.
pub fn load_module(bytes: &[u8], device: Device) -> Result<CModule, LoadError> {
    let mut module =
        CModule::load_data_on_device(&mut std::io::Cursor::new(bytes), device).map_err(LoadError::Module)?;
    module.set_eval();
    Ok(module)
}

/// Runs `module` on `input`; a tuple or list output yields its first tensor.
pub fn forward(module: &CModule, input: Tensor) -> Result<Tensor, tch::TchError> {
    match module.forward_is(&[IValue::Tensor(input)])? {
        IValue::Tensor(t) => Ok(t),
        IValue::Tuple(items) | IValue::GenericList(items) => match items.into_iter().next() {
            Some(IValue::Tensor(t)) => Ok(t),
            _ => Err(tch::TchError::Kind("model output's first element is not a tensor".into())),
        },
        IValue::TensorList(items) => items
            .into_iter()
            .next()
            .ok_or_else(|| tch::TchError::Kind("model returned an empty tensor list".into())),
        _ => Err(tch::TchError::Kind("model output is not a tensor".into())),
    }
}

/// Runs `batch` zero samples through `module` and checks the output is
/// `[batch, classes]`: the warm-up before readiness and the verify check.
pub fn forward_zeros(
    module: &CModule,
    card: &ModelCard,
    batch: i64,
    device: Device,
) -> Result<(), LoadError> {
    let mut shape = vec![batch];
    shape.extend_from_slice(&card.signature.input_shape);
    let output = tch::no_grad(|| forward(module, Tensor::zeros(shape.as_slice(), (Kind::Float, device))))
        .map_err(|e| LoadError::WarmUp(e.to_string()))?;
    let classes = card.signature.classes.len() as i64;
    if output.size() != [batch, classes] {
        return Err(LoadError::WarmUp(format!(
            "output shape {:?}, expected [{batch}, {classes}] (one logit per class)",
            output.size()
        )));
    }
    Ok(())
}

/// The device for `--device`: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when present).
pub fn parse_device(name: &str) -> Result<Device, String> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("unknown device {other:?}: use auto, cpu, cuda or cuda:N")),
    }
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
    fn devices_parse() {
        assert_eq!(parse_device("cpu"), Ok(Device::Cpu));
        assert_eq!(parse_device("cuda:1"), Ok(Device::Cuda(1)));
        assert!(parse_device("tpu").is_err());
    }
}

//! Does the model card say what the ModelVersion says? `verify` compares the
//! card's signature with the ModelVersion's `spec.signature` (passed as an
//! [`ExpectedSignature`]), so a version never serves a card it did not
//! declare: a different input shape, class order or preprocessing would
//! answer wrong labels without any error.

use hone_crds::contract::{ExpectedSignature, classes_digest};
use hone_crds::modelversion::{Preprocessing, Signature};

/// Relative tolerance of `mean` and `std`: the expected values went through
/// JSON (and an environment variable) on their way here.
pub const PREPROCESSING_TOLERANCE: f64 = 1e-9;

/// The first difference between the expected signature and the card's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureMismatch {
    /// A field (or one element of it) differs.
    #[error("spec.signature.{field} is {expected} but model.json says {found}")]
    Field {
        /// Path below `spec.signature`, e.g. `inputShape` or `classes[3]`.
        field: String,
        /// The ModelVersion's value.
        expected: String,
        /// The card's value.
        found: String,
    },
    /// The class lists have different lengths.
    #[error("spec.signature.classes has {expected} classes but model.json has {found}")]
    ClassCount {
        /// The ModelVersion's number of classes.
        expected: usize,
        /// The card's.
        found: usize,
    },
    /// The class lists differ, known only by their digests (the expected
    /// names were too long to pass in full).
    #[error(
        "spec.signature.classes differ from model.json's classes: {count} classes with digest {expected}, \
         model.json's have digest {found}"
    )]
    ClassesDigest {
        /// Number of classes on both sides.
        count: usize,
        /// The ModelVersion's [`classes_digest`].
        expected: String,
        /// The card's [`classes_digest`].
        found: String,
    },
}

/// Compares `card` with `expected`, field by field; `Ok` when they match.
pub fn check(expected: &ExpectedSignature, card: &Signature) -> Result<(), SignatureMismatch> {
    if expected.input_shape != card.input_shape {
        return Err(field("inputShape", &expected.input_shape, &card.input_shape));
    }
    if expected.task != card.task {
        return Err(SignatureMismatch::Field {
            field: "task".into(),
            expected: expected.task.to_string(),
            found: card.task.to_string(),
        });
    }
    if expected.output != card.output {
        return Err(SignatureMismatch::Field {
            field: "output".into(),
            expected: expected.output.to_string(),
            found: card.output.to_string(),
        });
    }
    if let Some(threshold) = expected.threshold
        && !card.threshold.is_some_and(|t| close(t, threshold))
    {
        return Err(field_opt("threshold", &expected.threshold, &card.threshold));
    }
    check_classes(expected, &card.classes)?;
    if let Some(pre) = &expected.preprocessing {
        check_preprocessing(pre, &card.preprocessing.clone().unwrap_or_default())?;
    }
    Ok(())
}

fn check_classes(expected: &ExpectedSignature, classes: &[String]) -> Result<(), SignatureMismatch> {
    if let Some(names) = &expected.classes {
        if let Some((i, (want, got))) = names.iter().zip(classes).enumerate().find(|(_, (w, g))| w != g) {
            return Err(field(&format!("classes[{i}]"), want, got));
        }
        if names.len() != classes.len() {
            return Err(count_mismatch(names.len(), classes.len()));
        }
        return Ok(());
    }
    if expected.class_count != classes.len() {
        return Err(count_mismatch(expected.class_count, classes.len()));
    }
    let found = classes_digest(classes);
    if !expected.classes_digest.eq_ignore_ascii_case(&found) {
        return Err(SignatureMismatch::ClassesDigest {
            count: classes.len(),
            expected: expected.classes_digest.clone(),
            found,
        });
    }
    Ok(())
}

fn count_mismatch(expected: usize, found: usize) -> SignatureMismatch {
    SignatureMismatch::ClassCount { expected, found }
}

fn check_preprocessing(expected: &Preprocessing, card: &Preprocessing) -> Result<(), SignatureMismatch> {
    if expected.resize != card.resize {
        return Err(field_opt("preprocessing.resize", &expected.resize, &card.resize));
    }
    for (name, want, got) in [("mean", &expected.mean, &card.mean), ("std", &expected.std, &card.std)] {
        let same = match (want, got) {
            (Some(want), Some(got)) => {
                want.len() == got.len() && want.iter().zip(got).all(|(&w, &g)| close(w, g))
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            return Err(field_opt(&format!("preprocessing.{name}"), want, got));
        }
    }
    Ok(())
}

/// Equal within [`PREPROCESSING_TOLERANCE`] of the larger magnitude.
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= PREPROCESSING_TOLERANCE * a.abs().max(b.abs())
}

fn field(name: &str, expected: &impl std::fmt::Debug, found: &impl std::fmt::Debug) -> SignatureMismatch {
    SignatureMismatch::Field {
        field: name.to_owned(),
        expected: format!("{expected:?}"),
        found: format!("{found:?}"),
    }
}

fn field_opt<T: std::fmt::Debug>(name: &str, expected: &Option<T>, found: &Option<T>) -> SignatureMismatch {
    let show = |v: &Option<T>| v.as_ref().map_or_else(|| "unset".to_owned(), |v| format!("{v:?}"));
    SignatureMismatch::Field { field: name.to_owned(), expected: show(expected), found: show(found) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(shape: &[i64], classes: &[&str], pre: Option<Preprocessing>) -> Signature {
        Signature {
            input_shape: shape.to_vec(),
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            preprocessing: pre,
            ..Signature::default()
        }
    }

    fn digits() -> Vec<&'static str> {
        vec!["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    }

    fn normalise(mean: f64, std: f64) -> Preprocessing {
        Preprocessing { resize: Some(vec![28, 28]), mean: Some(vec![mean]), std: Some(vec![std]) }
    }

    #[test]
    fn the_same_signature_matches() {
        let card = signature(&[1, 28, 28], &digits(), Some(normalise(0.1307, 0.3081)));
        assert_eq!(check(&ExpectedSignature::of(&card), &card), Ok(()));
    }

    #[test]
    fn a_different_input_shape_is_named() {
        let spec = signature(&[1, 8, 8], &digits(), None);
        let card = signature(&[1, 28, 28], &digits(), None);
        let err = check(&ExpectedSignature::of(&spec), &card).unwrap_err();
        assert_eq!(err.to_string(), "spec.signature.inputShape is [1, 8, 8] but model.json says [1, 28, 28]");
    }

    #[test]
    fn the_first_different_class_is_named() {
        let spec = signature(&[4], &digits(), None);
        let mut swapped = digits();
        swapped.swap(3, 5);
        let err = check(&ExpectedSignature::of(&spec), &signature(&[4], &swapped, None)).unwrap_err();
        assert_eq!(err.to_string(), r#"spec.signature.classes[3] is "3" but model.json says "5""#);
    }

    #[test]
    fn a_class_list_with_an_extra_class_is_refused() {
        let spec = signature(&[4], &digits(), None);
        let err = check(&ExpectedSignature::of(&spec), &signature(&[4], &digits()[..9], None)).unwrap_err();
        assert_eq!(err.to_string(), "spec.signature.classes has 10 classes but model.json has 9");
    }

    #[test]
    fn classes_known_by_digest_are_compared_by_count_then_digest() {
        let spec = signature(&[4], &digits(), None);
        let mut expected = ExpectedSignature::of(&spec);
        expected.classes = None;
        assert_eq!(check(&expected, &spec), Ok(()));
        let fewer = check(&expected, &signature(&[4], &digits()[..9], None)).unwrap_err();
        assert!(fewer.to_string().contains("10 classes but model.json has 9"), "{fewer}");
        let mut swapped = digits();
        swapped.swap(3, 5);
        let err = check(&expected, &signature(&[4], &swapped, None)).unwrap_err();
        assert!(matches!(err, SignatureMismatch::ClassesDigest { count: 10, .. }), "{err:?}");
        assert!(err.to_string().contains("differ"), "{err}");
    }

    #[test]
    fn preprocessing_is_checked_only_when_the_spec_has_one() {
        let card = signature(&[1, 28, 28], &digits(), Some(normalise(0.1307, 0.3081)));
        let spec = signature(&[1, 28, 28], &digits(), None);
        assert_eq!(check(&ExpectedSignature::of(&spec), &card), Ok(()));
        let plain = signature(&[1, 28, 28], &digits(), None);
        let spec = signature(&[1, 28, 28], &digits(), Some(normalise(0.1307, 0.3081)));
        let err = check(&ExpectedSignature::of(&spec), &plain).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.signature.preprocessing.resize is [28, 28] but model.json says unset"
        );
    }

    #[test]
    fn the_task_and_a_declared_threshold_must_match() {
        let card = signature(&[4], &["cat", "dog"], None);
        let mut binary = card.clone();
        binary.task = hone_crds::modelversion::Task::Binary;
        let err = check(&ExpectedSignature::of(&binary), &card).unwrap_err();
        assert_eq!(err.to_string(), "spec.signature.task is binary but model.json says classification");
        // No threshold in the spec accepts the card's; a declared one must be the card's.
        let mut card_binary = binary.clone();
        card_binary.threshold = Some(0.3);
        assert_eq!(check(&ExpectedSignature::of(&binary), &card_binary), Ok(()));
        let mut strict = binary.clone();
        strict.threshold = Some(0.7);
        let err = check(&ExpectedSignature::of(&strict), &card_binary).unwrap_err();
        assert_eq!(err.to_string(), "spec.signature.threshold is 0.7 but model.json says 0.3");
        let err = check(&ExpectedSignature::of(&strict), &binary).unwrap_err();
        assert_eq!(err.to_string(), "spec.signature.threshold is 0.7 but model.json says unset");
    }

    #[test]
    fn resize_is_exact() {
        let spec = signature(&[1, 28, 28], &digits(), Some(normalise(0.5, 0.5)));
        let mut other = normalise(0.5, 0.5);
        other.resize = Some(vec![28, 27]);
        let err = check(&ExpectedSignature::of(&spec), &signature(&[1, 28, 28], &digits(), Some(other)));
        assert!(err.unwrap_err().to_string().starts_with("spec.signature.preprocessing.resize is [28, 28]"));
    }

    #[test]
    fn mean_and_std_allow_only_json_rounding() {
        let spec = signature(&[1, 28, 28], &digits(), Some(normalise(0.1307, 0.3081)));
        let expected = ExpectedSignature::of(&spec);
        let nearly = signature(&[1, 28, 28], &digits(), Some(normalise(0.1307 * (1.0 + 1e-12), 0.3081)));
        assert_eq!(check(&expected, &nearly), Ok(()));
        let off = signature(&[1, 28, 28], &digits(), Some(normalise(0.1307, 0.3081 * (1.0 + 1e-6))));
        let err = check(&expected, &off).unwrap_err();
        assert!(err.to_string().starts_with("spec.signature.preprocessing.std is [0.3081] but"), "{err}");
        let mut longer = normalise(0.1307, 0.3081);
        longer.mean = Some(vec![0.1307, 0.1307, 0.1307]);
        let err = check(&expected, &signature(&[1, 28, 28], &digits(), Some(longer))).unwrap_err();
        assert!(err.to_string().starts_with("spec.signature.preprocessing.mean is [0.1307]"), "{err}");
    }
}

//! Raw input to model input: image decoding (PNG, JPEG) with a pixel-size
//! limit, resize and normalisation; feature rows with standardisation. Each
//! sample also yields its drift features (per-channel mean intensity in
//! [0, 1] for images, the raw values for tabular rows), per `model.json`.

use std::io::Cursor;

use hone_crds::contract::{InputKind, ModelCard};
use image::{DynamicImage, ImageFormat, ImageReader, Limits, imageops::FilterType};
use serde_json::Value;

use crate::input::InputError;

/// A preprocessed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Model input values, in signature order (CHW for images).
    pub values: Vec<f32>,
    /// Features the drift monitor watches.
    pub drift: Vec<f64>,
}

/// Turns raw requests into model input per a model card.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    kind: InputKind,
    /// Channels (images) or features (tabular).
    width: usize,
    height: u32,
    pixels_wide: u32,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    feature_names: Vec<String>,
    limits: ImageLimits,
}

impl Preprocessor {
    /// Builds the preprocessor of a validated card (see [`crate::model::validate_card`]).
    pub fn new(card: &ModelCard, max_dimension: u32, max_pixels: u64) -> Self {
        let shape = &card.signature.input_shape;
        let width = shape.first().copied().unwrap_or(1).max(1) as usize;
        let (height, pixels_wide) = match (card.input, shape.as_slice()) {
            (InputKind::Image, [_, h, w]) => (*h as u32, *w as u32),
            _ => (0, 0),
        };
        let pre = card.signature.preprocessing.clone().unwrap_or_default();
        let expand = |values: Option<Vec<f64>>, default: f64| -> Vec<f32> {
            match values {
                Some(v) if v.len() == width => v.iter().map(|&x| x as f32).collect(),
                Some(v) if v.len() == 1 => vec![v[0] as f32; width],
                _ => vec![default as f32; width],
            }
        };
        let mean = expand(pre.mean, 0.0);
        let inv_std = expand(pre.std, 1.0).iter().map(|s| 1.0 / s).collect();
        Self {
            kind: card.input,
            width,
            height,
            pixels_wide,
            mean,
            inv_std,
            feature_names: card.feature_names.clone(),
            limits: ImageLimits { max_dimension, max_pixels },
        }
    }

    /// The kind of input this model takes.
    pub fn kind(&self) -> InputKind {
        self.kind
    }

    /// Values in one sample.
    pub fn sample_len(&self) -> usize {
        match self.kind {
            InputKind::Image => self.width * self.height as usize * self.pixels_wide as usize,
            InputKind::Tabular => self.width,
        }
    }

    /// Decodes a PNG or JPEG and turns it into a normalised CHW sample.
    pub fn image(&self, bytes: &[u8]) -> Result<Sample, InputError> {
        if self.kind != InputKind::Image {
            return Err(InputError::Unsupported(
                "this model takes tabular input: send a JSON feature row, not an image".into(),
            ));
        }
        let image = decode_image(bytes, self.limits)?;
        let (h, w) = (self.height, self.pixels_wide);
        let plane = (h * w) as usize;
        let mut values = Vec::with_capacity(self.width * plane);
        let mut drift = Vec::with_capacity(self.width);
        let raw: Vec<u8> = if self.width == 1 {
            let gray = image.to_luma8();
            let gray = if gray.dimensions() == (w, h) {
                gray
            } else {
                image::imageops::resize(&gray, w, h, FilterType::Triangle)
            };
            gray.into_raw()
        } else {
            let rgb = image.to_rgb8();
            let rgb = if rgb.dimensions() == (w, h) {
                rgb
            } else {
                image::imageops::resize(&rgb, w, h, FilterType::Triangle)
            };
            rgb.into_raw()
        };
        for c in 0..self.width {
            let (mean, inv_std) = (self.mean[c], self.inv_std[c]);
            let mut sum = 0.0f64;
            for &px in raw.iter().skip(c).step_by(self.width) {
                let x = f32::from(px) / 255.0;
                sum += f64::from(x);
                values.push((x - mean) * inv_std);
            }
            drift.push(sum / plane.max(1) as f64);
        }
        Ok(Sample { values, drift })
    }

    /// Standardises one feature row: a JSON array of numbers in feature order,
    /// an object of feature name to number, or `{"features": <either>}`.
    pub fn row(&self, row: &Value) -> Result<Sample, InputError> {
        self.expect_tabular()?;
        let raw = match row {
            Value::Object(map) if map.len() == 1 && map.contains_key("features") => {
                return self.row(&map["features"]);
            }
            Value::Array(items) => {
                self.expect_row_len(items.len())?;
                items.iter().map(number).collect::<Result<Vec<f64>, _>>()?
            }
            Value::Object(map) => {
                if self.feature_names.is_empty() {
                    return Err(InputError::Feature(
                        "this model's card has no featureNames: send the row as an array".into(),
                    ));
                }
                if let Some(unknown) = map.keys().find(|k| !self.feature_names.contains(k)) {
                    return Err(InputError::Feature(format!("unknown feature {unknown:?}")));
                }
                self.feature_names
                    .iter()
                    .map(|name| {
                        map.get(name)
                            .ok_or_else(|| InputError::Feature(format!("missing feature {name:?}")))
                            .and_then(number)
                    })
                    .collect::<Result<Vec<f64>, _>>()?
            }
            _ => {
                return Err(InputError::Json(
                    "a feature row is an array of numbers or an object of feature name to number".into(),
                ));
            }
        };
        self.standardize(raw)
    }

    /// Standardises one row of raw values in feature order, as [`Self::row`]
    /// does an array: how `verify` feeds the held-out test split's rows.
    pub fn feature_row(&self, raw: &[f32]) -> Result<Sample, InputError> {
        self.expect_tabular()?;
        self.expect_row_len(raw.len())?;
        self.standardize(raw.iter().map(|&x| f64::from(x)).collect())
    }

    fn expect_tabular(&self) -> Result<(), InputError> {
        if self.kind != InputKind::Tabular {
            return Err(InputError::Unsupported(
                "this model takes images: send PNG or JPEG bytes or a multipart file".into(),
            ));
        }
        Ok(())
    }

    fn expect_row_len(&self, found: usize) -> Result<(), InputError> {
        if found != self.width {
            return Err(InputError::Count { what: "feature row".into(), expected: self.width, found });
        }
        Ok(())
    }

    /// Standardises raw feature values (already in feature order).
    pub fn standardize(&self, raw: Vec<f64>) -> Result<Sample, InputError> {
        let values = raw
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let v = (x as f32 - self.mean[i]) * self.inv_std[i];
                if v.is_finite() { Ok(v) } else { Err(InputError::NonFinite) }
            })
            .collect::<Result<Vec<f32>, _>>()?;
        Ok(Sample { values, drift: raw })
    }
}

impl Preprocessor {
    /// Drift features of one sample that is already model input (OIP
    /// tensors): undoes the normalisation, then measures as for raw input.
    pub fn drift_of_model_input(&self, sample: &[f32]) -> Vec<f64> {
        let raw = |c: usize, v: f32| f64::from(v / self.inv_std[c] + self.mean[c]);
        match self.kind {
            InputKind::Tabular => {
                sample.iter().enumerate().take(self.width).map(|(c, &v)| raw(c, v)).collect()
            }
            InputKind::Image => {
                let plane = (sample.len() / self.width.max(1)).max(1);
                sample
                    .chunks(plane)
                    .take(self.width)
                    .enumerate()
                    .map(|(c, values)| values.iter().map(|&v| raw(c, v)).sum::<f64>() / plane as f64)
                    .collect()
            }
        }
    }
}

fn number(value: &Value) -> Result<f64, InputError> {
    let x =
        value.as_f64().ok_or_else(|| InputError::Json(format!("feature value {value} is not a number")))?;
    if x.is_finite() && (x as f32).is_finite() { Ok(x) } else { Err(InputError::NonFinite) }
}

/// The largest image a request may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels on a side.
    pub max_dimension: u32,
    /// Most pixels in all (width x height).
    pub max_pixels: u64,
}

impl ImageLimits {
    /// The most bytes one decode may allocate: RGBA16 of the largest accepted
    /// image plus decoder scratch space (the memory formula in docs/predictor.md).
    pub fn max_alloc(&self) -> u64 {
        self.max_pixels.min(u64::from(self.max_dimension).pow(2)) * 8 + (16 << 20)
    }
}

/// Decodes PNG or JPEG bytes, refusing images over the limits from their
/// header, before any pixel buffer is allocated.
pub fn decode_image(bytes: &[u8], limits: ImageLimits) -> Result<DynamicImage, InputError> {
    let max_dimension = limits.max_dimension;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InputError::UndecodableImage(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => {
            return Err(InputError::UndecodableImage(format!(
                "{other:?} images are not accepted; send PNG or JPEG"
            )));
        }
        None => return Err(InputError::UndecodableImage("not a PNG or JPEG image".into())),
    }
    let (width, height) =
        reader.into_dimensions().map_err(|e| InputError::UndecodableImage(e.to_string()))?;
    let too_large =
        || InputError::ImageTooLarge { width, height, limit: max_dimension, max_pixels: limits.max_pixels };
    if width > max_dimension
        || height > max_dimension
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(too_large());
    }
    if width == 0 || height == 0 {
        return Err(InputError::UndecodableImage("image has no pixels".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InputError::UndecodableImage(e.to_string()))?;
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(max_dimension);
    decoder_limits.max_image_height = Some(max_dimension);
    decoder_limits.max_alloc = Some(limits.max_alloc());
    reader.limits(decoder_limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => too_large(),
        other => InputError::UndecodableImage(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, RgbImage};

    fn card(json: &str) -> ModelCard {
        serde_json::from_str(json).unwrap()
    }

    fn image_card() -> ModelCard {
        card(
            r#"{"formatVersion":1,"input":"image","signature":{"inputShape":[1,2,2],"classes":["a"],
            "preprocessing":{"mean":[0.5],"std":[0.5]}}}"#,
        )
    }

    fn tabular_card() -> ModelCard {
        card(
            r#"{"formatVersion":1,"input":"tabular","featureNames":["x","y"],
            "signature":{"inputShape":[2],"classes":["a"],"preprocessing":{"mean":[1.0,2.0],"std":[2.0,4.0]}}}"#,
        )
    }

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn gray_png_is_scaled_normalised_and_measured() {
        let pre = Preprocessor::new(&image_card(), 64, 1 << 20);
        let img = GrayImage::from_raw(2, 2, vec![0, 255, 255, 0]).unwrap();
        let sample = pre.image(&png(DynamicImage::ImageLuma8(img))).unwrap();
        assert_eq!(sample.values, vec![-1.0, 1.0, 1.0, -1.0]);
        assert_eq!(sample.drift, vec![0.5]);
    }

    #[test]
    fn rgb_images_are_resized_and_converted_to_the_signature() {
        let pre = Preprocessor::new(&image_card(), 64, 1 << 20);
        let img = RgbImage::from_pixel(5, 7, image::Rgb([255, 255, 255]));
        let sample = pre.image(&png(DynamicImage::ImageRgb8(img))).unwrap();
        assert_eq!(sample.values.len(), 4);
        assert!(sample.values.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn oversized_and_garbage_images_are_refused() {
        let pre = Preprocessor::new(&image_card(), 4, 1 << 20);
        let big = png(DynamicImage::ImageLuma8(GrayImage::new(5, 3)));
        assert!(matches!(
            pre.image(&big),
            Err(InputError::ImageTooLarge { width: 5, height: 3, limit: 4, .. })
        ));
        let few_pixels = Preprocessor::new(&image_card(), 64, 14);
        assert!(matches!(few_pixels.image(&big), Err(InputError::ImageTooLarge { max_pixels: 14, .. })));
        assert!(matches!(pre.image(b"not an image"), Err(InputError::UndecodableImage(_))));
        let mut truncated = png(DynamicImage::ImageLuma8(GrayImage::new(4, 4)));
        truncated.truncate(30);
        assert!(matches!(pre.image(&truncated), Err(InputError::UndecodableImage(_))));
    }

    #[test]
    fn rows_are_standardised_in_feature_order() {
        let pre = Preprocessor::new(&tabular_card(), 64, 1 << 20);
        let by_array = pre.row(&serde_json::json!([3.0, 6.0])).unwrap();
        assert_eq!(by_array.values, vec![1.0, 1.0]);
        assert_eq!(by_array.drift, vec![3.0, 6.0]);
        let by_name = pre.row(&serde_json::json!({"features": {"y": 6.0, "x": 3.0}})).unwrap();
        assert_eq!(by_name, by_array);
    }

    #[test]
    fn feature_rows_are_standardised_as_json_arrays_are() {
        let pre = Preprocessor::new(&tabular_card(), 64, 1 << 20);
        assert_eq!(pre.feature_row(&[3.0, 6.0]).unwrap(), pre.row(&serde_json::json!([3.0, 6.0])).unwrap());
        assert!(matches!(pre.feature_row(&[1.0]), Err(InputError::Count { expected: 2, found: 1, .. })));
        assert!(matches!(pre.feature_row(&[1.0, f32::NAN]), Err(InputError::NonFinite)));
        let image = Preprocessor::new(&image_card(), 64, 1 << 20);
        assert!(matches!(image.feature_row(&[1.0]), Err(InputError::Unsupported(_))));
    }

    #[test]
    fn bad_rows_are_refused_with_reasons() {
        let pre = Preprocessor::new(&tabular_card(), 64, 1 << 20);
        assert!(matches!(pre.row(&serde_json::json!([1.0])), Err(InputError::Count { .. })));
        assert!(matches!(pre.row(&serde_json::json!({"x": 1.0})), Err(InputError::Feature(_))));
        assert!(matches!(
            pre.row(&serde_json::json!({"x": 1.0, "y": 1, "z": 2})),
            Err(InputError::Feature(_))
        ));
        assert!(matches!(pre.row(&serde_json::json!([1.0, "a"])), Err(InputError::Json(_))));
        assert!(matches!(pre.row(&serde_json::json!([1.0, 1e300])), Err(InputError::NonFinite)));
        assert!(matches!(pre.image(b"\x89PNG"), Err(InputError::Unsupported(_))));
    }

    #[test]
    fn drift_of_model_input_undoes_normalisation() {
        let pre = Preprocessor::new(&tabular_card(), 64, 1 << 20);
        assert_eq!(pre.drift_of_model_input(&[1.0, 1.0]), vec![3.0, 6.0]);
        let pre = Preprocessor::new(&image_card(), 64, 1 << 20);
        assert_eq!(pre.drift_of_model_input(&[-1.0, 1.0, 1.0, -1.0]), vec![0.5]);
    }
}

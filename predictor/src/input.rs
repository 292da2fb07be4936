//! What is wrong with a caller's input: one enum shared by the image decoder,
//! the feature-row parser and the OIP tensor parser.

/// Bad input. [`InputError::is_syntax`] errors are answered 400, the rest 422.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The body is not valid JSON, or not the expected JSON structure.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A multipart body that cannot be parsed or has no file part.
    #[error("invalid multipart body: {0}")]
    Multipart(String),
    /// The image bytes are not a PNG or JPEG that decodes.
    #[error("cannot decode image: {0}")]
    UndecodableImage(String),
    /// The image is wider, taller or larger than allowed.
    #[error("image is {width}x{height} pixels; the limits are {limit} on each side and {max_pixels} in all")]
    ImageTooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Limit per side.
        limit: u32,
        /// Limit of width x height.
        max_pixels: u64,
    },
    /// A tensor's shape does not match the model's signature.
    #[error("input {name:?} has shape {found:?}; the model expects {expected}")]
    Shape {
        /// Input name.
        name: String,
        /// Shape sent.
        found: Vec<i64>,
        /// Shape wanted, in words.
        expected: String,
    },
    /// The number of values does not match the shape or the feature count.
    #[error("{what}: expected {expected} values, got {found}")]
    Count {
        /// Which part of the input.
        what: String,
        /// Values wanted.
        expected: usize,
        /// Values sent.
        found: usize,
    },
    /// A datatype this server does not accept, or values that do not fit it.
    #[error("{0}")]
    Datatype(String),
    /// NaN, infinity, or a value out of the model's float range.
    #[error("input contains a non-finite number (NaN, infinity or out of float range)")]
    NonFinite,
    /// A tabular row names a feature the model does not have, or misses one.
    #[error("{0}")]
    Feature(String),
    /// More items than the configured limit (e.g. images per batch call).
    #[error("{what}: {found} items exceed the limit of {limit}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Items sent.
        found: usize,
        /// Limit.
        limit: usize,
    },
    /// The request asks for something this model cannot answer.
    #[error("{0}")]
    Unsupported(String),
}

impl InputError {
    /// Syntax errors (unparseable body) are 400; everything else is 422.
    pub fn is_syntax(&self) -> bool {
        matches!(self, Self::Json(_) | Self::Multipart(_))
    }

    /// A stable code for clients and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Json(_) => "invalid_json",
            Self::Multipart(_) => "invalid_multipart",
            Self::UndecodableImage(_) => "undecodable_image",
            Self::ImageTooLarge { .. } => "image_too_large",
            Self::Shape { .. } => "invalid_shape",
            Self::Count { .. } => "invalid_count",
            Self::Datatype(_) => "invalid_datatype",
            Self::NonFinite => "non_finite",
            Self::Feature(_) => "invalid_feature",
            Self::TooMany { .. } => "too_many_items",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

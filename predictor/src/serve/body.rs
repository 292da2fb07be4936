//! Reading request bodies within the size limit, and media types.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::error::ApiError;

/// Reads the whole body, refusing more than `limit` bytes (413) before
/// reading it when `Content-Length` already says so.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n: u64| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge { limit }),
        Err(e) => Err(ApiError::BadRequest(format!("reading the request body: {e}"))),
    }
}

/// What a body holds, from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// `application/json` (or `+json`).
    Json,
    /// `image/png`, `image/jpeg` or `application/octet-stream`.
    Image,
    /// `multipart/form-data` with this boundary.
    Multipart(String),
    /// No `Content-Type` header.
    Missing,
    /// Anything else.
    Other(String),
}

/// Classifies the request's `Content-Type`.
pub fn media(headers: &HeaderMap) -> Media {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Media::Missing;
    };
    let Ok(text) = value.to_str() else {
        return Media::Other("<not ASCII>".into());
    };
    let essence = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Media::Json,
        e if e.starts_with("application/") && e.ends_with("+json") => Media::Json,
        "image/png" | "image/jpeg" | "image/jpg" | "application/octet-stream" => Media::Image,
        "multipart/form-data" => match multer::parse_boundary(text) {
            Ok(boundary) => Media::Multipart(boundary),
            Err(_) => Media::Other(text.to_owned()),
        },
        _ => Media::Other(text.to_owned()),
    }
}

/// The contents of every file part (or, failing that, every part) of a multipart body.
pub async fn multipart_files(
    body: Bytes,
    boundary: String,
    max_parts: usize,
) -> Result<Vec<Bytes>, ApiError> {
    use crate::input::InputError;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut files = Vec::new();
    let mut others = Vec::new();
    while let Some(field) =
        multipart.next_field().await.map_err(|e| ApiError::Input(InputError::Multipart(e.to_string())))?
    {
        let is_file = field.file_name().is_some()
            || field.content_type().is_some_and(|m| m.type_() == "image" || m.subtype() == "octet-stream");
        let data = field.bytes().await.map_err(|e| ApiError::Input(InputError::Multipart(e.to_string())))?;
        if is_file {
            files.push(data)
        } else {
            others.push(data)
        }
        if files.len() + others.len() > max_parts {
            return Err(ApiError::Input(InputError::TooMany {
                what: "multipart parts",
                found: files.len() + others.len(),
                limit: max_parts,
            }));
        }
    }
    let parts = if files.is_empty() { others } else { files };
    if parts.is_empty() {
        return Err(ApiError::Input(InputError::Multipart("no file part".into())));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, value.parse().unwrap());
        h
    }

    #[test]
    fn media_types_are_classified() {
        assert_eq!(media(&with_type("application/json; charset=utf-8")), Media::Json);
        assert_eq!(media(&with_type("IMAGE/PNG")), Media::Image);
        assert_eq!(media(&with_type("multipart/form-data; boundary=xyz")), Media::Multipart("xyz".into()));
        assert_eq!(media(&with_type("text/plain")), Media::Other("text/plain".into()));
        assert_eq!(media(&HeaderMap::new()), Media::Missing);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let err = read_body(&HeaderMap::new(), Body::from(vec![0u8; 11]), 10).await.unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge { limit: 10 }));
        let ok = read_body(&HeaderMap::new(), Body::from(vec![0u8; 10]), 10).await.unwrap();
        assert_eq!(ok.len(), 10);
    }

    #[tokio::test]
    async fn multipart_file_parts_are_extracted() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\
                    Content-Type: image/png\r\n\r\nPNGDATA\r\n--b--\r\n";
        let files = multipart_files(Bytes::from(body), "b".into(), 8).await.unwrap();
        assert_eq!(files, vec![Bytes::from("PNGDATA")]);
        assert!(multipart_files(Bytes::from("garbage"), "b".into(), 8).await.is_err());
    }
}

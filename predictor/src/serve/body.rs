//! Reading request bodies within the size limit, and media types.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};

use super::admission::{BodyBudget, BodyPermit};
use crate::error::ApiError;

/// A request body in memory, with the share of the server's body budget it holds.
#[derive(Debug)]
pub struct ReadBody {
    /// The bytes.
    pub bytes: Bytes,
    /// Returned to the budget when the body is dropped.
    pub permit: BodyPermit,
}

/// How a body may be read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes (413 beyond).
    pub max_bytes: usize,
    /// Longest the whole body may take to arrive (408 beyond).
    pub timeout: Duration,
}

/// Reads the whole body, refusing more than `limits.max_bytes` (413) before
/// reading when `Content-Length` already says so, taking budget for the bytes
/// as they arrive (429 when the server holds too many) and giving up after
/// `limits.timeout` (408): a slow client holds neither memory nor a request slot.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    budget: &BodyBudget,
) -> Result<ReadBody, ApiError> {
    let limit = limits.max_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n: u64| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut permit = budget.hold();
    if let Some(n) = declared {
        // Within the limit, so it fits in usize.
        permit.grow_to(n as usize)?;
    }
    let collect = async {
        let mut body = Limited::new(body, limit);
        let mut buffer = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::BadRequest(format!("reading the request body: {e}"))
                }
            })?;
            if let Ok(data) = frame.into_data() {
                permit.grow_to(buffer.len() + data.len())?;
                buffer.extend_from_slice(&data);
            }
        }
        Ok::<_, ApiError>(buffer.freeze())
    };
    match tokio::time::timeout(limits.timeout, collect).await {
        Ok(Ok(bytes)) => Ok(ReadBody { bytes, permit }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::RequestTimeout(limits.timeout.as_millis() as u64)),
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

/// The contents of every file part (or, failing that, every part) of a
/// multipart body; more than `max_parts` parts, or a part header over 8 KiB,
/// is refused. Blocking: runs on the decode pool.
pub fn multipart_files(body: Bytes, boundary: String, max_parts: usize) -> Result<Vec<Bytes>, ApiError> {
    use crate::input::InputError;
    let limit = body.len() as u64;
    let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let bad = |e: multer::Error| ApiError::Input(InputError::Multipart(e.to_string()));
    let mut files = Vec::new();
    let mut others = Vec::new();
    futures::executor::block_on(async {
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            if files.len() + others.len() >= max_parts {
                return Err(ApiError::Input(InputError::TooMany {
                    what: "multipart parts",
                    found: files.len() + others.len() + 1,
                    limit: max_parts,
                }));
            }
            let is_file = field.file_name().is_some()
                || field
                    .content_type()
                    .is_some_and(|m| m.type_() == "image" || m.subtype() == "octet-stream");
            let data = field.bytes().await.map_err(bad)?;
            if is_file { files.push(data) } else { others.push(data) }
        }
        Ok(())
    })?;
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

    fn limits(max_bytes: usize) -> BodyLimits {
        BodyLimits { max_bytes, timeout: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let budget = BodyBudget::new(1 << 20);
        let err =
            read_body(&HeaderMap::new(), Body::from(vec![0u8; 11]), limits(10), &budget).await.unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge { limit: 10 }));
        let ok = read_body(&HeaderMap::new(), Body::from(vec![0u8; 10]), limits(10), &budget).await.unwrap();
        assert_eq!(ok.bytes.len(), 10);
    }

    #[tokio::test]
    async fn bodies_beyond_the_shared_budget_are_429_and_slow_ones_408() {
        let budget = BodyBudget::new(4096);
        let held =
            read_body(&HeaderMap::new(), Body::from(vec![0u8; 3000]), limits(8192), &budget).await.unwrap();
        let err = read_body(&HeaderMap::new(), Body::from(vec![0u8; 3000]), limits(8192), &budget).await;
        assert!(matches!(err, Err(ApiError::BodyBudgetExhausted)), "{err:?}");
        drop(held);
        assert_eq!(budget.available_bytes(), 4096);
        let never = Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let slow = BodyLimits { max_bytes: 10, timeout: Duration::from_millis(20) };
        assert!(matches!(
            read_body(&HeaderMap::new(), never, slow, &budget).await,
            Err(ApiError::RequestTimeout(20))
        ));
    }

    #[test]
    fn multipart_file_parts_are_extracted() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\
                    Content-Type: image/png\r\n\r\nPNGDATA\r\n--b--\r\n";
        let files = multipart_files(Bytes::from(body), "b".into(), 8).unwrap();
        assert_eq!(files, vec![Bytes::from("PNGDATA")]);
        assert!(multipart_files(Bytes::from("garbage"), "b".into(), 8).is_err());
        let unterminated =
            "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\nPNG";
        assert!(multipart_files(Bytes::from(unterminated), "b".into(), 8).is_err());
        let many: String = (0..5000)
            .map(|i| format!("--b\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n"))
            .collect();
        let err = multipart_files(Bytes::from(many + "--b--\r\n"), "b".into(), 8).unwrap_err();
        assert!(
            matches!(err, ApiError::Input(crate::input::InputError::TooMany { limit: 8, .. })),
            "{err:?}"
        );
    }
}

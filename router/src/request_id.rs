//! The request ids of answers, when the config has a `feedbackKey`: every 2xx
//! `/predict` or `/predict/batch` answer the router returns carries a signed
//! `x-request-id` ([`crate::token`]) that `POST /feedback` accepts.
//!
//! The backend sees the client's own `x-request-id` unchanged when it sent
//! one (the answer then echoes it in `x-client-request-id`), else the
//! token's nonce, so backend logs can be joined with feedback either way.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hone_crds::router::feedback::{CLIENT_REQUEST_ID_HEADER, REQUEST_ID_HEADER};

use crate::routes::AnswerShape;
use crate::token::{self, FeedbackKey, NONCE_BYTES, RequestId};

/// An id to issue for one request, if its answer is a success.
#[derive(Debug)]
pub struct Ticket {
    nonce: [u8; NONCE_BYTES],
    client_id: Option<HeaderValue>,
}

/// The ticket of a request on a predictor route under `key`; sets the id
/// the backend sees (`headers` are the outgoing request's).
pub fn prepare(
    key: Option<&FeedbackKey>,
    shape: Option<AnswerShape>,
    headers: &mut HeaderMap,
) -> Option<Ticket> {
    key?;
    shape?;
    let Some(nonce) = token::nonce() else {
        tracing::warn!("no randomness for a request id nonce; answering without a signed id");
        return None;
    };
    let client_id = headers.get(REQUEST_ID_HEADER).cloned();
    if client_id.is_none()
        && let Ok(value) = HeaderValue::from_str(&hex::encode(nonce))
    {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Some(Ticket { nonce, client_id })
}

impl Ticket {
    /// Puts the signed id of `variant`'s answer with top-1 `labels` (`None`:
    /// not read) issued at `now` on the answer's `headers`.
    pub fn attach(
        self,
        key: &FeedbackKey,
        variant: &str,
        labels: Option<Vec<String>>,
        now: u64,
        headers: &mut HeaderMap,
    ) {
        let signed = token::sign(key, &RequestId::new(variant, now, self.nonce, labels));
        // base64url is always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&signed) {
            headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
        }
        match self.client_id {
            Some(id) => headers.insert(HeaderName::from_static(CLIENT_REQUEST_ID_HEADER), id),
            None => headers.remove(CLIENT_REQUEST_ID_HEADER),
        };
    }
}

/// Now in unix seconds (0 before 1970, which no clock in a cluster reads).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FeedbackKey {
        FeedbackKey::from_hex(&"0f".repeat(32)).unwrap()
    }

    #[test]
    fn without_a_key_or_off_predictor_routes_nothing_changes() {
        let mut headers = HeaderMap::new();
        assert!(prepare(None, Some(AnswerShape::Single), &mut headers).is_none());
        assert!(prepare(Some(&key()), None, &mut headers).is_none());
        assert!(headers.is_empty());
    }

    #[test]
    fn the_backend_sees_the_nonce_and_the_client_a_signed_id() {
        let mut upstream = HeaderMap::new();
        let ticket = prepare(Some(&key()), Some(AnswerShape::Single), &mut upstream).unwrap();
        let nonce = upstream[REQUEST_ID_HEADER].to_str().unwrap().to_owned();
        assert_eq!(nonce.len(), 2 * NONCE_BYTES);
        let mut answer = HeaderMap::new();
        answer.insert(REQUEST_ID_HEADER, nonce.parse().unwrap());
        answer.insert(CLIENT_REQUEST_ID_HEADER, "from-the-backend".parse().unwrap());
        ticket.attach(&key(), "a", Some(vec!["3".into()]), 1000, &mut answer);
        let id = token::verify(&key(), answer[REQUEST_ID_HEADER].to_str().unwrap()).unwrap();
        assert_eq!((id.variant.as_str(), id.issued, hex::encode(id.nonce)), ("a", 1000, nonce));
        assert_eq!(id.labels, Some(vec!["3".to_owned()]));
        assert!(answer.get(CLIENT_REQUEST_ID_HEADER).is_none());
    }

    #[test]
    fn a_client_id_goes_upstream_unchanged_and_comes_back_beside_the_signed_one() {
        let mut upstream = HeaderMap::new();
        upstream.insert(REQUEST_ID_HEADER, "client-1".parse().unwrap());
        let ticket = prepare(Some(&key()), Some(AnswerShape::Batch), &mut upstream).unwrap();
        assert_eq!(upstream[REQUEST_ID_HEADER], "client-1");
        let mut answer = HeaderMap::new();
        ticket.attach(&key(), "a", None, 1000, &mut answer);
        assert_eq!(answer[CLIENT_REQUEST_ID_HEADER], "client-1");
        assert_eq!(token::verify(&key(), answer[REQUEST_ID_HEADER].to_str().unwrap()).unwrap().labels, None);
    }
}

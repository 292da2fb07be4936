//! Signed request ids: the `x-request-id` the router puts on the inference
//! answers it returns when the config has a `feedbackKey`, and checks when a
//! client sends feedback for one. Pure.
//!
//! A token is base64url (no padding) of a payload and its HMAC-SHA256 under
//! the key, truncated to [`MAC_BYTES`]. The payload names the backend that
//! answered, when, a random nonce (what makes a token count once), and the
//! top-1 labels of the answer's samples, so feedback is judged against what
//! the client was really told, and a client can neither invent ids nor
//! attribute labels to another variant.
//!
//! Payload layout: version (1 byte), issue time in unix seconds (8, big
//! endian), nonce ([`NONCE_BYTES`]), variant name (2-byte length, bytes),
//! label count (1 byte, 255 when none were recorded), then each
//! label (2-byte length, bytes).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the random nonce in a token.
pub const NONCE_BYTES: usize = 16;
/// Bytes of the MAC kept in a token.
pub const MAC_BYTES: usize = 16;
/// Most samples whose labels a token records.
pub const MAX_LABELS: usize = 32;
/// Most label bytes (all labels together) a token records.
pub const MAX_LABEL_BYTES: usize = 2048;
/// Longest token accepted for checking (far above any the router issues).
pub const MAX_TOKEN_CHARS: usize = 8192;
/// Label count of a token that recorded no labels.
const NO_LABELS: u8 = u8::MAX;
/// Payload version.
const VERSION: u8 = 1;
/// Hex digits of a key.
const KEY_HEX_DIGITS: usize = 64;
/// Prefix of every MAC input: a key reused elsewhere cannot sign router ids.
const DOMAIN: &[u8] = b"hone-router request id\0";

/// Why a token is not one the router issued under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Too long, not base64url, or too short to hold a MAC.
    #[error("the request id is not a router-issued id")]
    Encoding,
    /// The MAC does not match (forged, altered, or another key).
    #[error("the request id's signature does not match")]
    Mac,
    /// Signed, but its payload does not parse (another version).
    #[error("the request id has an unknown layout")]
    Layout,
}

/// The key that signs request ids (never printed): HMAC-SHA256 keyed and
/// fed the domain prefix, cloned for each token.
#[derive(Clone)]
pub struct FeedbackKey(Hmac<Sha256>);

impl std::fmt::Debug for FeedbackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedbackKey(..)")
    }
}

impl FeedbackKey {
    /// A key from its 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        if text.len() != KEY_HEX_DIGITS {
            return Err(format!("feedbackKey must be {KEY_HEX_DIGITS} hex digits, not {}", text.len()));
        }
        let mut key = [0u8; KEY_HEX_DIGITS / 2];
        hex::decode_to_slice(text, &mut key)
            .map_err(|_| format!("feedbackKey must be {KEY_HEX_DIGITS} hex digits"))?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| format!("feedbackKey: {e}"))?;
        mac.update(DOMAIN);
        Ok(Self(mac))
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// The backend (variant) that answered.
    pub variant: String,
    /// When the router issued it, in unix seconds.
    pub issued: u64,
    /// Random; what makes the id count once.
    pub nonce: [u8; NONCE_BYTES],
    /// The top-1 label of each sample of the answer, in order; `None` when
    /// the answer had more than [`MAX_LABELS`] samples or [`MAX_LABEL_BYTES`]
    /// of labels, or was not read.
    pub labels: Option<Vec<String>>,
}

impl RequestId {
    /// An id for an answer with `labels` (`None`: not read); records them
    /// only within [`MAX_LABELS`] and [`MAX_LABEL_BYTES`].
    pub fn new(variant: &str, issued: u64, nonce: [u8; NONCE_BYTES], labels: Option<Vec<String>>) -> Self {
        let labels = labels.filter(|l| {
            l.len() <= MAX_LABELS
                && l.iter().map(String::len).sum::<usize>() <= MAX_LABEL_BYTES
                && l.iter().all(|label| label.len() <= usize::from(u16::MAX))
        });
        Self { variant: variant.to_owned(), issued, nonce, labels }
    }

    fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.variant.len());
        out.push(VERSION);
        out.extend_from_slice(&self.issued.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        push_field(&mut out, self.variant.as_bytes());
        match &self.labels {
            // `new` bounds the count to MAX_LABELS, far below NO_LABELS.
            Some(labels) => {
                out.push(u8::try_from(labels.len()).unwrap_or(NO_LABELS));
                for label in labels {
                    push_field(&mut out, label.as_bytes());
                }
            }
            None => out.push(NO_LABELS),
        }
        out
    }
}

/// Appends a 2-byte length and the bytes (cut at 64 KiB, which no variant
/// name or recorded label reaches).
fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The token of `id` under `key`.
pub fn sign(key: &FeedbackKey, id: &RequestId) -> String {
    let mut token = id.payload();
    let mut mac = key.mac();
    mac.update(&token);
    let tag = mac.finalize().into_bytes();
    token.extend_from_slice(&tag[..MAC_BYTES]);
    URL_SAFE_NO_PAD.encode(token)
}

/// What `token` says, if the router signed it under `key` (compared in constant time).
pub fn verify(key: &FeedbackKey, token: &str) -> Result<RequestId, TokenError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::Encoding);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Encoding)?;
    let split = bytes.len().checked_sub(MAC_BYTES).ok_or(TokenError::Encoding)?;
    let (payload, tag) = bytes.split_at(split);
    let mut mac = key.mac();
    mac.update(payload);
    mac.verify_truncated_left(tag).map_err(|_| TokenError::Mac)?;
    parse_payload(payload).ok_or(TokenError::Layout)
}

/// Reads a payload the router signed.
fn parse_payload(payload: &[u8]) -> Option<RequestId> {
    let mut reader = Reader(payload);
    if reader.take(1)? != [VERSION] {
        return None;
    }
    let issued = u64::from_be_bytes(reader.take(8)?.try_into().ok()?);
    let nonce: [u8; NONCE_BYTES] = reader.take(NONCE_BYTES)?.try_into().ok()?;
    let variant = reader.field()?;
    let count = *reader.take(1)?.first()?;
    let labels = if count == NO_LABELS {
        None
    } else {
        Some((0..count).map(|_| reader.field()).collect::<Option<Vec<String>>>()?)
    };
    reader.0.is_empty().then_some(RequestId { variant, issued, nonce, labels })
}

/// A cursor over a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn field(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        String::from_utf8(self.take(usize::from(len))?.to_vec()).ok()
    }
}

/// A fresh random nonce; `None` if the system has no randomness to give.
pub fn nonce() -> Option<[u8; NONCE_BYTES]> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).ok()?;
    Some(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key() -> FeedbackKey {
        FeedbackKey::from_hex(KEY).unwrap()
    }

    fn id(labels: Option<Vec<String>>) -> RequestId {
        RequestId::new("digits-v2", 1_700_000_000, [7; NONCE_BYTES], labels)
    }

    #[test]
    fn tokens_round_trip_with_and_without_labels() {
        for labels in [None, Some(vec![]), Some(vec!["3".to_owned()]), Some(vec!["é".into(), "1".into()])] {
            let issued = id(labels);
            let token = sign(&key(), &issued);
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
            assert_eq!(verify(&key(), &token), Ok(issued));
        }
    }

    #[test]
    fn labels_are_recorded_only_within_the_bounds() {
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| i.to_string()).collect();
        assert_eq!(id(Some(many.clone())).labels, None, "more than {MAX_LABELS} samples");
        assert_eq!(id(Some(many[..MAX_LABELS].to_vec())).labels.map(|l| l.len()), Some(MAX_LABELS));
        let long = vec!["x".repeat(MAX_LABEL_BYTES / 2 + 1); 2];
        assert_eq!(id(Some(long)).labels, None, "more than {MAX_LABEL_BYTES} bytes");
        assert_eq!(id(Some(vec!["x".repeat(MAX_LABEL_BYTES)])).labels.map(|l| l.len()), Some(1));
    }

    #[test]
    fn any_changed_byte_or_another_key_is_refused() {
        let token = sign(&key(), &id(Some(vec!["3".into()])));
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 0x01;
            let forged = URL_SAFE_NO_PAD.encode(forged);
            assert_eq!(verify(&key(), &forged), Err(TokenError::Mac), "byte {i}");
        }
        let other = FeedbackKey::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(verify(&other, &token), Err(TokenError::Mac));
        // Re-signing a changed variant needs the key.
        let mut claims = verify(&key(), &token).unwrap();
        claims.variant = "digits".into();
        assert_eq!(verify(&key(), &sign(&other, &claims)), Err(TokenError::Mac));
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let token = sign(&key(), &id(None));
        for bad in
            ["", "a", "====", "not base64!", &token[..token.len() - 1], &"A".repeat(MAX_TOKEN_CHARS + 4)]
        {
            assert!(verify(&key(), bad).is_err(), "{bad:?}");
        }
        assert_eq!(verify(&key(), &"A".repeat(MAX_TOKEN_CHARS + 4)), Err(TokenError::Encoding));
        // A well-signed payload of another layout.
        let mut mac = key().mac();
        mac.update(b"\x02junk");
        let mut bytes = b"\x02junk".to_vec();
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..MAC_BYTES]);
        assert_eq!(verify(&key(), &URL_SAFE_NO_PAD.encode(bytes)), Err(TokenError::Layout));
    }

    #[test]
    fn keys_are_exactly_64_hex_digits_and_never_printed() {
        assert!(FeedbackKey::from_hex(KEY).is_ok());
        assert!(FeedbackKey::from_hex(&KEY.to_uppercase()).is_ok());
        for bad in ["", &KEY[..62], &format!("{KEY}00"), &format!("{}zz", &KEY[..62])] {
            assert!(FeedbackKey::from_hex(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{:?}", key()), "FeedbackKey(..)");
        assert_ne!(nonce(), nonce());
    }
}

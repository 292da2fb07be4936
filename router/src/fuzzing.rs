//! The fuzz harnesses: one function per target in `router/fuzz`, each fed
//! arbitrary bytes by libFuzzer (`make fuzz`) and replayed over the committed
//! corpus by an ordinary test (`tests/fuzz_corpus.rs`). None may panic on any
//! input; their `assert!`s are the properties a client must not be able to
//! break (a harness that only calls a function finds only its panics).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use hyper::body::Frame;

use crate::balance::Balancer;
use crate::body::{self, BUDGET_UNIT, BodyLimits, Budget};
use crate::config::{RouterConfig, RouterConfigExt, VariantBackend};
use crate::proxy;
use crate::reject::{QUOTE_MAX_CHARS, Rejection, quote};
use crate::routes::{self, RouteClass};
use crate::server::Table;

/// Backend names of the `headers` target, in order; one is not ASCII, since
/// the variant header is compared as bytes.
const NAMES: [&str; 4] = ["a", "b", "a-v2", "\u{e9}"];
/// The variant header of the `headers` target's config.
const VARIANT_HEADER: &str = "x-hone-variant";
/// The sticky header of the `headers` target's config (unless it reuses the variant header).
const STICKY_HEADER: &str = "x-user";
/// Length a header value is repeated to when the input asks for a long one:
/// libFuzzer's inputs are short, a client's headers need not be.
const LONG_VALUE_BYTES: usize = 16 * 1024;
/// Longest quote: every shown character escaped as `\u{10ffff}`, an
/// ellipsis, two quotes.
const QUOTE_MAX_BYTES: usize = QUOTE_MAX_CHARS * "\\u{10ffff}".len() + "...".len() + 2;

/// A `headers` input: the config and what one client sends.
struct HeaderCase<'a> {
    config: RouterConfig,
    /// The variant header's value, if sent.
    variant: Option<Vec<u8>>,
    /// The sticky header's value, if sent.
    sticky: Option<Vec<u8>>,
    method: &'a [u8],
    /// The request target as on the request line.
    target: &'a [u8],
}

/// Byte 0: bits 0-1 the number of backends less one, bit 2 a variant header
/// is sent, bit 3 a sticky header is sent, bit 4 the config has a sticky
/// header, bit 5 which is the variant header itself, bit 6 the config spells
/// header names in capitals, bit 7 the values sent are long. Then two bytes
/// per backend: its weight, and bit 0 pinnable, bit 1 a canary of the backend
/// `(bits >> 2) % index` before it. The rest: variant value, sticky value,
/// method and request target, separated by NUL (no header value has one).
fn header_case(data: &[u8]) -> Option<HeaderCase<'_>> {
    let (&flags, rest) = data.split_first()?;
    let count = usize::from(flags & 0b11) + 1;
    let (backends, rest) = rest.split_at_checked(2 * count)?;
    let variants = backends
        .chunks_exact(2)
        .zip(NAMES)
        .enumerate()
        .map(|(i, (pair, name))| {
            let (weight, bits) = (pair[0], pair[1]);
            let canary_of = (bits & 0b10 != 0 && i > 0).then(|| NAMES[usize::from(bits >> 2) % i].to_owned());
            VariantBackend {
                name: name.to_owned(),
                url: format!("http://backend-{i}.ns.svc:8080"),
                weight: u32::from(weight),
                pinnable: bits & 1 != 0,
                canary_of,
            }
        })
        .collect();
    let spell = |name: &str| if flags & 0x40 != 0 { name.to_ascii_uppercase() } else { name.to_owned() };
    let sticky_header = if flags & 0x20 != 0 { VARIANT_HEADER } else { STICKY_HEADER };
    let config = RouterConfig {
        variants,
        sticky_header: (flags & 0x10 != 0).then(|| spell(sticky_header)),
        variant_header: spell(VARIANT_HEADER),
        mirrors: Vec::new(),
        feedback_key: None,
    };
    let mut fields = rest.splitn(4, |&b| b == 0);
    let mut next = || fields.next().unwrap_or_default();
    let (variant, sticky, method, target) = (next(), next(), next(), next());
    let sent = |value: &[u8], bit: u8| {
        (flags & bit != 0).then(|| match value.len() {
            n if n > 0 && flags & 0x80 != 0 => value.repeat(LONG_VALUE_BYTES.div_ceil(n)),
            _ => value.to_vec(),
        })
    };
    Some(HeaderCase { variant: sent(variant, 0x04), sticky: sent(sticky, 0x08), config, method, target })
}

/// A config from the first bytes, then variant-header and sticky-header
/// values and a request line: the proxy's choice of backend (`proxy::choose`),
/// the balancer's on the raw bytes, route classification and quoting.
pub fn headers(data: &[u8]) {
    let Some(case) = header_case(data) else { return };
    check_route(case.method, case.target);
    for value in [&case.variant, &case.sticky].into_iter().flatten() {
        check_quote(value);
    }
    if case.config.validate().is_err() {
        return;
    }
    let table = Table::new(case.config);
    let config = &table.config;

    // What hyper hands the proxy: values it accepts, names in lower case, in
    // the order sent (a header in both roles is read as the variant header).
    let mut headers = HeaderMap::new();
    let mut sent: Vec<(&str, &[u8])> = Vec::new();
    let sticky_header = config.sticky_header.as_deref().unwrap_or(STICKY_HEADER);
    for (name, value) in [(config.variant_header.as_str(), &case.variant), (sticky_header, &case.sticky)] {
        let Some(value) = value else { continue };
        let (Ok(header), Ok(header_value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        headers.append(header, header_value);
        sent.push((name, value));
    }
    let first = |header: &str| sent.iter().find(|(n, _)| n.eq_ignore_ascii_case(header)).map(|(_, v)| *v);
    let pinned = first(&config.variant_header);
    let sticky = config.sticky_header.as_deref().and_then(first);
    let decided = proxy::choose(&table, &headers);
    let refused_pin = matches!(decided, Err(Rejection::VariantNotSelectable { .. }));
    assert!(decided.is_ok() || (pinned.is_some() && refused_pin), "pinned {pinned:?}: {decided:?}");
    match (pinned, decided) {
        (Some(value), Ok(index)) => check_pinned(config, value, Some(index)),
        (Some(value), Err(Rejection::VariantNotSelectable { value: quoted, selectable })) => {
            check_pinned(config, value, None);
            assert_eq!(quoted, quote(value), "the rejection quotes the value sent");
            let pinnable: Vec<&str> =
                config.variants.iter().filter(|v| v.pinnable).map(|v| v.name.as_str()).collect();
            assert_eq!(selectable, pinnable, "the rejection lists exactly the pinnable backends");
        }
        (None, Ok(index)) => check_unpinned(&table.balancer, config, sticky, index),
        _ => {}
    }

    // The balancer on the raw bytes, which hyper would refuse (control
    // characters) as well as those it lets through.
    if let Some(value) = &case.variant {
        check_pinned(config, value, table.balancer.choose(Some(value), None).ok());
    }
    if let Some(value) = &case.sticky {
        let chosen = table.balancer.choose(None, Some(value));
        assert!(chosen.is_ok(), "an unpinned request was refused: {chosen:?}");
        if let Ok(index) = chosen {
            check_unpinned(&table.balancer, config, Some(value), index);
        }
    }
}

/// A pin reaches exactly the pinnable backend of that name, or nothing.
fn check_pinned(config: &RouterConfig, value: &[u8], chosen: Option<usize>) {
    let expected = config.variants.iter().position(|v| v.pinnable && v.name.as_bytes() == value);
    assert_eq!(chosen, expected, "pinned to {} with {:?}", quote(value), config.variants);
}

/// An unpinned request lands on a backend with traffic; a sticky one on its
/// variant or that variant's canary, the same variant on every replica and
/// every time, and which of the two does not depend on the value.
fn check_unpinned(balancer: &Balancer, config: &RouterConfig, sticky: Option<&[u8]>, index: usize) {
    let backends = &config.variants;
    assert!(index < backends.len(), "backend {index} of {}", backends.len());
    assert!(backends[index].weight > 0, "landed on {:?} without traffic", backends[index].name);
    let Some(key) = sticky else { return };
    let stable = balancer.sticky_variant(key).and_then(|name| backends.iter().find(|v| v.name == name));
    // Validation leaves a positive weight, so some variant has traffic.
    assert!(stable.is_some(), "{} sticks to no backend", quote(key));
    let Some(stable) = stable else { return };
    assert!(stable.canary_of.is_none(), "{} sticks to the canary {:?}", quote(key), stable.name);
    let in_group = |i: usize| {
        backends[i].name == stable.name || backends[i].canary_of.as_deref() == Some(stable.name.as_str())
    };
    assert!(
        in_group(index),
        "{} sticks to {:?} but landed on {:?}",
        quote(key),
        stable.name,
        backends[index].name
    );
    for _ in 0..3 {
        let again = balancer.choose(None, Some(key));
        assert!(again.is_ok_and(in_group), "{} moved off {:?}: {again:?}", quote(key), stable.name);
    }
    // A replica agrees, and on a fresh balancer any value sticking to the same
    // variant gets the same first backend: the value picks no canary.
    let replica = Balancer::new(config);
    assert_eq!(replica.sticky_variant(key), Some(stable.name.as_str()), "replicas disagree");
    let first = replica.choose(None, Some(key));
    let others = [[key, b"x"].concat(), key.iter().rev().copied().collect(), Vec::new()];
    for other in others {
        let fresh = Balancer::new(config);
        if fresh.sticky_variant(&other) == Some(stable.name.as_str()) {
            assert_eq!(
                fresh.choose(None, Some(&other)),
                first,
                "{} steered within {:?}",
                quote(&other),
                stable.name
            );
        }
    }
}

/// Classification of a request line as the proxy sees it (method, and the
/// path of the parsed target); the path as a reserved-path refusal quotes it.
fn check_route(method: &[u8], target: &[u8]) {
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(target)) else { return };
    let path = uri.path();
    check_quote(path.as_bytes());
    let class = routes::classify(&method, path);
    let reserved = routes::is_reserved(path);
    assert_eq!(routes::classify(&Method::GET, path), RouteClass::Other, "GET {path} counted as inference");
    if let Ok(with_query) = Uri::try_from(format!("{path}?next=/predict&x=/infer")) {
        assert_eq!(
            routes::classify(&method, with_query.path()),
            class,
            "the query changed the class of {path}"
        );
    }
    if reserved {
        assert!(path.starts_with("/metrics") || path.starts_with("/router"), "{path} reserved");
    }
    if class == RouteClass::Inference {
        assert!(method == Method::POST && !reserved, "{method} {path} counted as inference");
        let shaped = path == "/predict"
            || path == "/predict/batch"
            || (path.starts_with("/v2/models/") && path.ends_with("/infer") && !path.contains("//"));
        assert!(shaped, "{path} counted as inference");
    }
}

/// A quoted value is short, quoted, printable, and says when it was cut.
fn check_quote(raw: &[u8]) {
    let quoted = quote(raw);
    assert!(quoted.len() <= QUOTE_MAX_BYTES, "quote of {} bytes is {} long", raw.len(), quoted.len());
    assert!(quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'), "{quoted}");
    assert!(!quoted.chars().any(char::is_control), "control character in {quoted:?}");
    if String::from_utf8_lossy(raw).chars().count() > QUOTE_MAX_CHARS {
        assert!(quoted.ends_with("...\""), "a cut value is not marked: {quoted}");
    }
}

/// A request body as a client streams it: chunks, maybe trailers, maybe a
/// connection that breaks off at the end.
struct ClientBody {
    chunks: VecDeque<Bytes>,
    trailers: bool,
    breaks_off: bool,
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        Poll::Ready(if let Some(chunk) = this.chunks.pop_front() {
            Some(Ok(Frame::data(chunk)))
        } else if std::mem::take(&mut this.trailers) {
            Some(Ok(Frame::trailers(HeaderMap::new())))
        } else if std::mem::take(&mut this.breaks_off) {
            Some(Err(std::io::Error::other("client went away")))
        } else {
            None
        })
    }
}

/// What `body::read` must answer, from the limits alone.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Whole,
    TooLarge,
    Overloaded,
    BrokenOff,
}

thread_local! {
    /// One runtime per fuzzing thread: `body::read` is async (its timeout).
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
}

/// Byte 0 the body limit and byte 3 the declared length (x64 bytes), byte 1
/// the memory budget (x256 bytes), byte 2 bit 0 a Content-Length is declared,
/// bit 1 it is `u64::MAX` less byte 3 instead, bit 2 trailers follow, bit 3
/// the client breaks off; byte 4 the chunk size. The rest is the body.
pub fn body(data: &[u8]) {
    let [max, budget, flags, declared, chunk, ref sent @ ..] = *data else { return };
    let limits = BodyLimits { max_bytes: usize::from(max) * 64, read_timeout: Duration::from_secs(60) };
    let budget_bytes = usize::from(budget) * 256;
    let budget_units = budget_bytes.div_ceil(BUDGET_UNIT).max(1);
    let declared = (flags & 1 != 0).then(|| match flags & 2 {
        0 => u64::from(declared) * 64,
        _ => u64::MAX - u64::from(declared),
    });
    let stream = ClientBody {
        chunks: sent.chunks(usize::from(chunk).max(1)).map(Bytes::copy_from_slice).collect(),
        trailers: flags & 4 != 0,
        breaks_off: flags & 8 != 0,
    };

    // The chunks in order: too large first, then over budget, per chunk.
    let units = |bytes: u64| bytes.div_ceil(BUDGET_UNIT as u64);
    let over_limit = |bytes: u64| bytes > limits.max_bytes as u64;
    let over_budget = |bytes: u64| units(bytes) > budget_units as u64;
    let prefixes = stream.chunks.iter().scan(0u64, |len, c| {
        *len += c.len() as u64;
        Some(*len)
    });
    let expected = match declared {
        Some(n) if over_limit(n) => Expected::TooLarge,
        Some(n) if over_budget(n) => Expected::Overloaded,
        _ => prefixes
            .map(|len| match (over_limit(len), over_budget(len)) {
                (true, _) => Some(Expected::TooLarge),
                (false, true) => Some(Expected::Overloaded),
                (false, false) => None,
            })
            .find_map(|refused| refused)
            .unwrap_or(if stream.breaks_off { Expected::BrokenOff } else { Expected::Whole }),
    };

    RUNTIME.with(|runtime| {
        assert!(runtime.is_some(), "no tokio runtime");
        let Some(runtime) = runtime else { return };
        runtime.block_on(async {
            let budget = Budget::new(budget_bytes);
            let answer = body::read(Body::new(stream), declared, &limits, &budget).await;
            let got = match &answer {
                Ok(held) => {
                    assert_eq!(held.bytes, sent, "the body read is not the body sent");
                    Some(Expected::Whole)
                }
                Err(Rejection::BodyTooLarge { limit }) => {
                    assert_eq!(*limit, limits.max_bytes, "the refusal names another limit");
                    Some(Expected::TooLarge)
                }
                Err(Rejection::Overloaded) => Some(Expected::Overloaded),
                Err(Rejection::BadBody(_)) => Some(Expected::BrokenOff),
                Err(_) => None,
            };
            assert_eq!(
                got,
                Some(expected),
                "{answer:?}: declared {declared:?}, {} bytes sent, {limits:?}, {budget_bytes} bytes of budget",
                sent.len()
            );
            // Whatever happened, the budget is whole again once the body is gone.
            drop(answer);
            let all = budget_units * BUDGET_UNIT;
            let everything = BodyLimits { max_bytes: all, ..limits };
            let refill = body::read(Body::from(vec![0u8; all]), Some(all as u64), &everything, &budget).await;
            assert!(refill.is_ok(), "the budget was not returned: {refill:?}");
        });
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Four backends: `a` 90 pinnable, `b` 10 pinnable, `a-v2` 10 a canary of `a`, `é` 0.
    const FOUR: [u8; 8] = [90, 1, 10, 1, 10, 0b10, 0, 0];

    #[test]
    fn header_inputs_become_a_valid_config_and_a_request() {
        let data = [&[0x1f][..], &FOUR, b"a-v2\0user-1\0POST\0/predict"].concat();
        let case = header_case(&data).unwrap();
        assert_eq!(case.config.validate(), Ok(()));
        let canaries: Vec<_> = case.config.variants.iter().map(|v| v.canary_of.as_deref()).collect();
        assert_eq!(canaries, [None, None, Some("a"), None]);
        assert_eq!(case.config.sticky_header.as_deref(), Some(STICKY_HEADER));
        assert_eq!(
            (case.variant.as_deref(), case.sticky.as_deref()),
            (Some(&b"a-v2"[..]), Some(&b"user-1"[..]))
        );
        assert_eq!((case.method, case.target), (&b"POST"[..], &b"/predict"[..]));
        let long = [&[0x9f][..], &FOUR, b"a\0"].concat();
        assert_eq!(header_case(&long).unwrap().variant.unwrap().len(), LONG_VALUE_BYTES);
        headers(&data);
    }

    #[test]
    #[should_panic(expected = "pinned to")]
    fn a_pin_to_a_canary_that_may_not_be_pinned_is_caught() {
        let data = [&[0x1f][..], &FOUR].concat();
        check_pinned(&header_case(&data).unwrap().config, b"a-v2", Some(2));
    }

    #[test]
    #[should_panic(expected = "landed on")]
    fn a_sticky_value_landing_outside_its_variant_is_caught() {
        let data = [&[0x1f][..], &FOUR].concat();
        let config = header_case(&data).unwrap().config;
        let balancer = Balancer::new(&config);
        let elsewhere = usize::from(balancer.sticky_variant(b"k") == Some("a"));
        check_unpinned(&balancer, &config, Some(b"k"), elsewhere);
    }
}

//! Parsing OIP v2 input tensors: JSON data (flat or nested arrays) or
//! binary data after the JSON header, checked against the model's shape and
//! converted to `f32`. Never panics on any input (fuzzed).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::{HEADER_CONTENT_LENGTH, InferRequest, RequestInput};
use crate::input::InputError;

/// OIP tensor datatypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    /// Booleans.
    Bool,
    /// Unsigned integers of 8, 16, 32, 64 bits.
    U8,
    /// 16-bit unsigned.
    U16,
    /// 32-bit unsigned.
    U32,
    /// 64-bit unsigned.
    U64,
    /// 8-bit signed.
    I8,
    /// 16-bit signed.
    I16,
    /// 32-bit signed.
    I32,
    /// 64-bit signed.
    I64,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
    /// IEEE double.
    F64,
}

impl Datatype {
    /// Parses an OIP datatype name; `BYTES` and unknown names are refused.
    pub fn parse(name: &str) -> Result<Self, InputError> {
        Ok(match name {
            "BOOL" => Self::Bool,
            "UINT8" => Self::U8,
            "UINT16" => Self::U16,
            "UINT32" => Self::U32,
            "UINT64" => Self::U64,
            "INT8" => Self::I8,
            "INT16" => Self::I16,
            "INT32" => Self::I32,
            "INT64" => Self::I64,
            "FP16" => Self::F16,
            "FP32" => Self::F32,
            "FP64" => Self::F64,
            other => {
                return Err(InputError::Datatype(format!(
                    "datatype {other:?} is not accepted: use FP32, FP64, FP16, INT8..INT64, UINT8..UINT64 or BOOL"
                )));
            }
        })
    }

    /// Bytes per element in binary data.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 | Self::F16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    fn integer_range(self) -> Option<(f64, f64)> {
        Some(match self {
            Self::U8 => (0.0, u8::MAX as f64),
            Self::U16 => (0.0, u16::MAX as f64),
            Self::U32 => (0.0, u32::MAX as f64),
            Self::U64 => (0.0, u64::MAX as f64),
            Self::I8 => (i8::MIN as f64, i8::MAX as f64),
            Self::I16 => (i16::MIN as f64, i16::MAX as f64),
            Self::I32 => (i32::MIN as f64, i32::MAX as f64),
            Self::I64 => (i64::MIN as f64, i64::MAX as f64),
            Self::Bool | Self::F16 | Self::F32 | Self::F64 => return None,
        })
    }
}

/// JSON tensor data flattened in row-major order, whatever its nesting.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatData {
    /// Most values accepted; parsing stops with an error past it.
    cap: usize,
    /// The values, booleans as 0 and 1.
    pub values: Vec<f64>,
    /// Whether any value was a JSON float (not allowed for integer types).
    pub has_float: bool,
    /// Whether any value was a boolean.
    pub has_bool: bool,
    /// Whether any value was a number (not allowed for BOOL).
    pub has_number: bool,
    /// Whether any value was a string (BYTES data, or "NaN" and the like).
    pub has_string: bool,
}

impl FlatData {
    /// Flattens raw JSON data, refusing more than `cap` values as soon as
    /// the next one arrives (so the buffer never outgrows the shape).
    pub fn parse(raw: &str, cap: usize) -> Result<Self, serde_json::Error> {
        let mut flat = FlatData {
            cap,
            values: Vec::with_capacity(cap.min(1 << 20)),
            has_float: false,
            has_bool: false,
            has_number: false,
            has_string: false,
        };
        let mut deserializer = serde_json::Deserializer::from_str(raw);
        Flatten(&mut flat).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(flat)
    }

    fn push<E: de::Error>(&mut self, value: f64) -> Result<(), E> {
        if self.values.len() >= self.cap {
            return Err(E::custom(format_args!("more values than the shape holds ({})", self.cap)));
        }
        self.values.push(value);
        Ok(())
    }
}

/// Appends every scalar of a (nested) array to the flat data.
struct Flatten<'a>(&'a mut FlatData);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a boolean or a (nested) array of them")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.has_bool = true;
        self.0.push(if v { 1.0 } else { 0.0 })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.has_number = true;
        self.0.push(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.has_number = true;
        self.0.push(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.has_number = true;
        self.0.has_float = true;
        self.0.push(v)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.0.has_string = true;
        self.0.push(f64::NAN)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// Parses a request body: all JSON, or (with the
/// `Inference-Header-Content-Length` header) a JSON part followed by binary
/// tensor data, which is returned alongside.
pub fn parse_request(body: &[u8], header_length: Option<usize>) -> Result<(InferRequest, &[u8]), InputError> {
    let (json, binary) = match header_length {
        Some(n) if n > body.len() => {
            return Err(InputError::Json(format!(
                "{HEADER_CONTENT_LENGTH} is {n} but the body has {} bytes",
                body.len()
            )));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let request: InferRequest = serde_json::from_slice(json).map_err(|e| InputError::Json(e.to_string()))?;
    Ok((request, binary))
}

/// Checks one input against the model's sample shape and the largest batch
/// (before parsing any value) and returns its values as `f32` and its batch
/// size. Binary inputs consume their bytes from `binary`.
pub fn decode_input(
    input: &RequestInput,
    binary: &mut &[u8],
    sample_shape: &[i64],
    max_batch: usize,
) -> Result<(Vec<f32>, usize), InputError> {
    let datatype = Datatype::parse(&input.datatype)?;
    let shape_error = || InputError::Shape {
        name: input.name.clone(),
        found: input.shape.clone(),
        expected: format!("[batch, {}] with batch >= 1", join(sample_shape)),
    };
    if input.shape.len() != sample_shape.len() + 1 || input.shape[1..] != *sample_shape || input.shape[0] < 1
    {
        return Err(shape_error());
    }
    if input.shape[0] as u64 > max_batch as u64 {
        return Err(InputError::TooMany {
            what: "samples in the batch dimension",
            found: usize::try_from(input.shape[0]).unwrap_or(usize::MAX),
            limit: max_batch,
        });
    }
    let count = input
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
        .ok_or_else(shape_error)?;
    let batch = input.shape[0] as usize;
    let binary_size = input.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
    let values = match (&input.data, binary_size) {
        (Some(_), Some(_)) => {
            return Err(InputError::Json(format!(
                "input {:?} has both data and binary_data_size",
                input.name
            )));
        }
        (None, None) => return Err(InputError::Json(format!("input {:?} has no data", input.name))),
        (Some(data), None) => {
            // One more than the shape holds, so a long array is a Count error.
            let data = FlatData::parse(data.get(), count.saturating_add(1))
                .map_err(|e| InputError::Json(format!("input {:?} data: {e}", input.name)))?;
            from_json(&data, datatype, count, &input.name)?
        }
        (None, Some(size)) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| InputError::Json("binary_data_size must be a non-negative integer".into()))?;
            if size > binary.len() {
                return Err(InputError::Json(format!(
                    "input {:?} declares {size} binary bytes but only {} remain",
                    input.name,
                    binary.len()
                )));
            }
            let (bytes, rest) = binary.split_at(size);
            *binary = rest;
            from_binary(bytes, datatype, count, &input.name)?
        }
    };
    Ok((values, batch))
}

fn from_json(data: &FlatData, datatype: Datatype, count: usize, name: &str) -> Result<Vec<f32>, InputError> {
    if data.values.len() != count {
        return Err(InputError::Count {
            what: format!("input {name:?}"),
            expected: count,
            found: data.values.len(),
        });
    }
    if data.has_string {
        return Err(InputError::Datatype(format!("input {name:?} is {datatype:?} but has strings")));
    }
    match datatype {
        Datatype::Bool if data.has_number => {
            return Err(InputError::Datatype(format!("input {name:?} is BOOL but has numbers")));
        }
        Datatype::Bool => {}
        _ if data.has_bool => {
            return Err(InputError::Datatype(format!("input {name:?} is {datatype:?} but has booleans")));
        }
        _ => {}
    }
    if let Some((lo, hi)) = datatype.integer_range()
        && (data.has_float || data.values.iter().any(|&v| v < lo || v > hi))
    {
        return Err(InputError::Datatype(format!(
            "input {name:?} is {datatype:?}: every value must be an integer in [{lo}, {hi}]"
        )));
    }
    to_f32(data.values.iter().copied())
}

fn from_binary(bytes: &[u8], datatype: Datatype, count: usize, name: &str) -> Result<Vec<f32>, InputError> {
    let size = datatype.size();
    if bytes.len() != count.saturating_mul(size) {
        return Err(InputError::Count {
            what: format!("binary input {name:?} ({datatype:?}, {} bytes)", bytes.len()),
            expected: count,
            found: bytes.len() / size,
        });
    }
    let chunks = bytes.chunks_exact(size);
    let le = |c: &[u8]| -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        b
    };
    let values: Box<dyn Iterator<Item = f64>> = match datatype {
        Datatype::Bool => {
            if bytes.iter().any(|&b| b > 1) {
                return Err(InputError::Datatype(format!(
                    "binary BOOL input {name:?} has bytes other than 0 and 1"
                )));
            }
            Box::new(bytes.iter().map(|&b| f64::from(b)))
        }
        Datatype::U8 => Box::new(bytes.iter().map(|&b| f64::from(b))),
        Datatype::I8 => Box::new(bytes.iter().map(|&b| f64::from(b as i8))),
        Datatype::U16 => Box::new(chunks.map(move |c| f64::from(u16::from_le_bytes([c[0], c[1]])))),
        Datatype::I16 => Box::new(chunks.map(move |c| f64::from(i16::from_le_bytes([c[0], c[1]])))),
        Datatype::F16 => Box::new(chunks.map(move |c| f16_to_f64(u16::from_le_bytes([c[0], c[1]])))),
        Datatype::U32 => {
            Box::new(chunks.map(move |c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
        }
        Datatype::I32 => {
            Box::new(chunks.map(move |c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
        }
        Datatype::F32 => {
            Box::new(chunks.map(move |c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
        }
        Datatype::U64 => Box::new(chunks.map(move |c| u64::from_le_bytes(le(c)) as f64)),
        Datatype::I64 => Box::new(chunks.map(move |c| i64::from_le_bytes(le(c)) as f64)),
        Datatype::F64 => Box::new(chunks.map(move |c| f64::from_le_bytes(le(c)))),
    };
    to_f32(values)
}

fn to_f32(values: impl Iterator<Item = f64>) -> Result<Vec<f32>, InputError> {
    values
        .map(|v| {
            let x = v as f32;
            if x.is_finite() { Ok(x) } else { Err(InputError::NonFinite) }
        })
        .collect()
}

/// IEEE 754 half to double (subnormals, infinities and NaN included).
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f64::from(bits & 0x3ff);
    match exponent {
        0 => sign * fraction * 2f64.powi(-24),
        31 if fraction == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + fraction / 1024.0) * 2f64.powi(e - 15),
    }
}

fn join(shape: &[i64]) -> String {
    shape.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str, shape: &[i64]) -> Result<(Vec<f32>, usize), InputError> {
        let (request, mut rest) = parse_request(json.as_bytes(), None)?;
        decode_input(&request.inputs[0], &mut rest, shape, 64)
    }

    fn request(datatype: &str, shape: &str, data: &str) -> String {
        format!(r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{datatype}","data":{data}}}]}}"#)
    }

    #[test]
    fn flat_and_nested_data_decode_the_same() {
        let flat = decode(&request("FP32", "[2,2]", "[1,2,3,4]"), &[2]).unwrap();
        let nested = decode(&request("FP32", "[2,2]", "[[1,2],[3,4.0]]"), &[2]).unwrap();
        assert_eq!(flat, (vec![1.0, 2.0, 3.0, 4.0], 2));
        assert_eq!(flat, nested);
    }

    #[test]
    fn every_numeric_datatype_is_accepted() {
        for dt in
            ["FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"]
        {
            assert_eq!(decode(&request(dt, "[1,2]", "[1,2]"), &[2]).unwrap().0, vec![1.0, 2.0], "{dt}");
        }
        assert_eq!(decode(&request("BOOL", "[1,2]", "[true,false]"), &[2]).unwrap().0, vec![1.0, 0.0]);
    }

    #[test]
    fn shape_count_and_datatype_errors_are_reported() {
        let err = |r: String| decode(&r, &[2]).unwrap_err();
        assert!(matches!(err(request("FP32", "[1,3]", "[1,2,3]")), InputError::Shape { .. }));
        assert!(matches!(err(request("FP32", "[0,2]", "[]")), InputError::Shape { .. }));
        assert!(matches!(err(request("FP32", "[2]", "[1,2]")), InputError::Shape { .. }));
        assert!(matches!(err(request("FP32", "[1,2]", "[1,2,3]")), InputError::Count { .. }));
        assert!(matches!(err(request("FP32", "[1,2]", "[1,2,3,4,5,6]")), InputError::Json(_)));
        assert!(matches!(err(request("FP32", "[65,2]", "[1,2]")), InputError::TooMany { limit: 64, .. }));
        assert!(matches!(err(request("BYTES", "[1,2]", "[1,2]")), InputError::Datatype(_)));
        assert!(matches!(err(request("INT8", "[1,2]", "[1,200]")), InputError::Datatype(_)));
        assert!(matches!(err(request("INT32", "[1,2]", "[1,2.5]")), InputError::Datatype(_)));
        assert!(matches!(err(request("BOOL", "[1,2]", "[1,0]")), InputError::Datatype(_)));
        assert!(matches!(err(request("FP32", "[1,2]", "[1,1e300]")), InputError::NonFinite));
        assert!(matches!(err(request("FP32", "[1,2]", r#"[1,"NaN"]"#)), InputError::Datatype(_)));
        assert!(matches!(err(request("FP32", "[1,2]", r#"[1,{}]"#)), InputError::Json(_)));
        let huge = request("FP32", "[9223372036854775807,2]", "[1,2]");
        assert!(matches!(err(huge), InputError::TooMany { .. }));
    }

    #[test]
    fn binary_tensors_follow_the_json_header() {
        let json = r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        let (request, mut rest) = parse_request(&body, Some(json.len())).unwrap();
        assert_eq!(decode_input(&request.inputs[0], &mut rest, &[2], 64).unwrap(), (vec![1.5, -2.0], 1));
        assert!(rest.is_empty());
        let (request, mut short) = parse_request(&body[..body.len() - 1], Some(json.len())).unwrap();
        assert!(decode_input(&request.inputs[0], &mut short, &[2], 64).is_err());
        assert!(parse_request(&body, Some(body.len() + 1)).is_err());
    }

    #[test]
    fn binary_nan_and_half_floats() {
        let mut nan = &f32::NAN.to_le_bytes()[..];
        assert_eq!(from_binary(nan, Datatype::F32, 1, "x"), Err(InputError::NonFinite));
        nan = &[0x00, 0x3c];
        assert_eq!(from_binary(nan, Datatype::F16, 1, "x").unwrap(), vec![1.0]);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert!(from_binary(&[0x00, 0x7c], Datatype::F16, 1, "x").is_err());
    }
}

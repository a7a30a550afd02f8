//! CTAP2 canonical CBOR for hybridge.
//!
//! Everything hybridge puts on the wire in CBOR — the QR payload, the post-handshake message,
//! linking data, CTAP2 requests and responses — goes through this crate, so that:
//!
//! * **output is always canonical** in the CTAP2 sense: integers and lengths in their shortest
//!   form, definite lengths only, and map keys sorted by major type, then shorter encoded key
//!   first, then bytewise (CTAP 2.1 §8). Google Play Services rejects maps that are not sorted this way
//!   (docs/protocol.md §9), and the ordering puts integer keys before text keys, `"alg"` before `"type"`;
//! * **input is decoded strictly and within bounds**: one data item and nothing after it,
//!   nesting depth limited, no indefinite lengths, no tags, no duplicate map keys, valid UTF-8,
//!   and no length is believed before the bytes are there, so a hostile 5-byte message cannot
//!   make us allocate gigabytes. Unknown map keys are kept in the value; the typed layers above
//!   simply ignore them, as real peers add keys over time.
//!
//! ```
//! use hybridge_cbor::{Value, encode, decode};
//! let v = Value::map([(Value::from("type"), Value::from("public-key")), (Value::from("alg"), Value::from(-7))]);
//! let bytes = encode(&v);
//! // "alg" (4 encoded bytes) sorts before "type" (5 encoded bytes).
//! assert_eq!(&bytes[..5], &[0xa2, 0x63, b'a', b'l', b'g']);
//! assert_eq!(decode(&bytes).unwrap().get("alg").and_then(Value::as_int), Some(-7));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::collections::HashSet;

/// A CBOR data item, as CTAP2 uses them.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Major types 0 and 1: any integer from −2⁶⁴ to 2⁶⁴−1.
    Int(i128),
    /// Major type 2.
    Bytes(Vec<u8>),
    /// Major type 3.
    Text(String),
    /// Major type 4.
    Array(Vec<Value>),
    /// Major type 5, in the order written; [`encode`] sorts canonically.
    Map(Vec<(Value, Value)>),
    /// Simple values 20 and 21.
    Bool(bool),
    /// Simple value 22.
    Null,
    /// Half, single and double precision floats. CTAP2 does not use them, but a peer may put
    /// one under a key we do not know, and that must not fail the whole message.
    Float(f64),
}

/// Why bytes were not accepted as CBOR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ended inside a data item.
    #[error("CBOR data is truncated")]
    Truncated,
    /// A complete data item was followed by more bytes.
    #[error("CBOR data item is followed by {} unexpected bytes", total - consumed)]
    TrailingBytes {
        /// Bytes the data item took.
        consumed: usize,
        /// Bytes given.
        total: usize,
    },
    /// Arrays and maps are nested more deeply than allowed.
    #[error("CBOR nesting is deeper than {max} levels")]
    TooDeep {
        /// The deepest nesting allowed.
        max: usize,
    },
    /// Indefinite-length strings, arrays and maps are not used by CTAP2.
    #[error("indefinite-length CBOR items are not supported")]
    IndefiniteLength,
    /// Tags are not used by CTAP2.
    #[error("CBOR tags are not supported")]
    Tag,
    /// A simple value other than false, true and null, or a reserved encoding.
    #[error("unsupported CBOR simple value or reserved encoding")]
    Unsupported,
    /// A text string is not valid UTF-8.
    #[error("CBOR text string is not valid UTF-8")]
    InvalidUtf8,
    /// A map has the same key twice.
    #[error("CBOR map has a duplicate key")]
    DuplicateKey,
}

/// Bounds for [`decode_with`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How many arrays and maps may be nested inside each other.
    pub max_depth: usize,
}

impl Default for Limits {
    /// Depth 16: CTAP2 messages nest at most about 5 deep (request → extensions → prf → eval →
    /// salts), so this leaves room for peers' additions while keeping recursion shallow.
    fn default() -> Self {
        Self { max_depth: 16 }
    }
}

// ---------------------------------------------------------------------------------------------
// Value helpers

impl Value {
    /// A map from key/value pairs; [`encode`] puts them in canonical order.
    pub fn map<K: Into<Value>, V: Into<Value>>(entries: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// An array of values.
    pub fn array<V: Into<Value>>(items: impl IntoIterator<Item = V>) -> Value {
        Value::Array(items.into_iter().map(Into::into).collect())
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The integer as a `u64`, if this is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|i| u64::try_from(i).ok())
    }

    /// The integer as an `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|i| i64::try_from(i).ok())
    }

    /// The byte string's contents, if this is one.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The text string's contents, if this is one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Whether this is a map.
    pub fn is_map(&self) -> bool {
        matches!(self, Value::Map(_))
    }

    /// Looks up `key` in a map. `None` if this is not a map or the key is absent.
    pub fn get(&self, key: impl Into<Value>) -> Option<&Value> {
        let key = key.into();
        self.as_map()?
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Consumes a map into its entries, or returns `self` unchanged if it is not a map.
    pub fn into_map(self) -> Result<Vec<(Value, Value)>, Value> {
        match self {
            Value::Map(m) => Ok(m),
            other => Err(other),
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "byte string",
            Value::Text(_) => "text string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
            Value::Float(_) => "float",
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(i: $t) -> Self {
                Value::Int(i128::from(i))
            }
        }
    )*};
}
from_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl From<usize> for Value {
    fn from(i: usize) -> Self {
        // usize is at most 64 bits on every platform Rust supports.
        Value::Int(i as i128)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bytes(b.to_vec())
    }
}

impl<const N: usize> From<[u8; N]> for Value {
    fn from(b: [u8; N]) -> Self {
        Value::Bytes(b.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Value {
    fn from(b: &[u8; N]) -> Self {
        Value::Bytes(b.to_vec())
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Encodes `value` in CTAP2 canonical form.
///
/// Integers outside −2⁶⁴…2⁶⁴−1 cannot be represented in CBOR and are clamped to the nearest
/// representable value; no CTAP2 structure comes near that range.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => {
            if *i >= 0 {
                put_head(out, 0, u64::try_from(*i).unwrap_or(u64::MAX));
            } else {
                put_head(out, 1, u64::try_from(-1 - *i).unwrap_or(u64::MAX));
            }
        }
        Value::Bytes(b) => {
            put_head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Text(s) => {
            put_head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(items) => {
            put_head(out, 4, items.len() as u64);
            for item in items {
                encode_into(item, out);
            }
        }
        Value::Map(entries) => {
            put_head(out, 5, entries.len() as u64);
            // CTAP2 canonical order (CTAP 2.1 §8): by major type, then shorter encoded key
            // first, then bytewise.
            let mut encoded: Vec<(Vec<u8>, &Value)> =
                entries.iter().map(|(k, v)| (encode(k), v)).collect();
            encoded.sort_by(|(a, _), (b, _)| {
                let major = |k: &[u8]| k.first().map(|h| h >> 5);
                major(a)
                    .cmp(&major(b))
                    .then(a.len().cmp(&b.len()))
                    .then_with(|| a.cmp(b))
            });
            for (k, v) in encoded {
                out.extend_from_slice(&k);
                encode_into(v, out);
            }
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
        Value::Float(f) => {
            // Shortest of single and double precision that keeps the value exactly.
            let single = *f as f32;
            if f64::from(single) == *f || f.is_nan() {
                out.push(0xfa);
                out.extend_from_slice(&single.to_bits().to_be_bytes());
            } else {
                out.push(0xfb);
                out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes exactly one data item that fills `bytes`, with the default [`Limits`].
pub fn decode(bytes: &[u8]) -> Result<Value, Error> {
    decode_with(bytes, Limits::default())
}

/// Decodes exactly one data item that fills `bytes`.
pub fn decode_with(bytes: &[u8], limits: Limits) -> Result<Value, Error> {
    let (value, consumed) = decode_prefix_with(bytes, limits)?;
    if consumed != bytes.len() {
        return Err(Error::TrailingBytes {
            consumed,
            total: bytes.len(),
        });
    }
    Ok(value)
}

/// Decodes the first data item in `bytes` and returns it with the number of bytes it used.
/// Used where a peer legitimately appends bytes, such as padded CBOR (docs/protocol.md §8.3).
pub fn decode_prefix(bytes: &[u8]) -> Result<(Value, usize), Error> {
    decode_prefix_with(bytes, Limits::default())
}

/// [`decode_prefix`] with explicit limits.
pub fn decode_prefix_with(bytes: &[u8], limits: Limits) -> Result<(Value, usize), Error> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        limits,
    };
    let v = r.item(0)?;
    Ok((v, r.pos))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: Limits,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, Error> {
        let b = self.take(n)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Reads the argument of a head whose additional information is `info`.
    fn argument(&mut self, info: u8) -> Result<u64, Error> {
        match info {
            0..=23 => Ok(u64::from(info)),
            24 => self.uint(1),
            25 => self.uint(2),
            26 => self.uint(4),
            27 => self.uint(8),
            31 => Err(Error::IndefiniteLength),
            _ => Err(Error::Unsupported),
        }
    }

    /// A length that must be backed by at least `min_bytes_each` input bytes per unit, checked
    /// before anything is allocated.
    fn length(&mut self, info: u8, min_bytes_each: usize) -> Result<usize, Error> {
        let n = self.argument(info)?;
        let n = usize::try_from(n).map_err(|_| Error::Truncated)?;
        if n.checked_mul(min_bytes_each)
            .is_none_or(|need| need > self.remaining())
        {
            return Err(Error::Truncated);
        }
        Ok(n)
    }

    fn item(&mut self, depth: usize) -> Result<Value, Error> {
        let head = *self.take(1)?.first().ok_or(Error::Truncated)?;
        let (major, info) = (head >> 5, head & 0x1f);
        match major {
            0 => Ok(Value::Int(i128::from(self.argument(info)?))),
            1 => Ok(Value::Int(-1 - i128::from(self.argument(info)?))),
            2 => {
                let n = self.length(info, 1)?;
                Ok(Value::Bytes(self.take(n)?.to_vec()))
            }
            3 => {
                let n = self.length(info, 1)?;
                let s = std::str::from_utf8(self.take(n)?).map_err(|_| Error::InvalidUtf8)?;
                Ok(Value::Text(s.to_owned()))
            }
            4 => {
                let n = self.length(info, 1)?;
                self.check_depth(depth)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            5 => {
                let n = self.length(info, 2)?;
                self.check_depth(depth)?;
                let mut entries = Vec::with_capacity(n);
                let mut seen = HashSet::with_capacity(n);
                for _ in 0..n {
                    let start = self.pos;
                    let k = self.item(depth + 1)?;
                    if !seen.insert(&self.buf[start..self.pos]) {
                        return Err(Error::DuplicateKey);
                    }
                    let v = self.item(depth + 1)?;
                    entries.push((k, v));
                }
                Ok(Value::Map(entries))
            }
            6 => Err(Error::Tag),
            _ => match info {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 => Ok(Value::Null),
                25 => Ok(Value::Float(half_to_f64(self.uint(2)? as u16))),
                26 => Ok(Value::Float(f64::from(
                    f32::from_bits(self.uint(4)? as u32),
                ))),
                27 => Ok(Value::Float(f64::from_bits(self.uint(8)?))),
                31 => Err(Error::IndefiniteLength),
                _ => Err(Error::Unsupported),
            },
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), Error> {
        if depth >= self.limits.max_depth {
            Err(Error::TooDeep {
                max: self.limits.max_depth,
            })
        } else {
            Ok(())
        }
    }
}

fn half_to_f64(h: u16) -> f64 {
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    let mag = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mant + 1024.0) * 2f64.powi(exp - 25),
    };
    if h & 0x8000 != 0 { -mag } else { mag }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(v: &Value) -> String {
        hex::encode(encode(v))
    }

    #[test]
    fn rfc8949_integer_and_string_vectors() {
        for (v, h) in [
            (Value::from(0u8), "00"),
            (Value::from(23u8), "17"),
            (Value::from(24u8), "1818"),
            (Value::from(1000u32), "1903e8"),
            (Value::from(1000000u32), "1a000f4240"),
            (Value::from(u64::MAX), "1bffffffffffffffff"),
            (Value::Int(-(1i128 << 64)), "3bffffffffffffffff"),
            (Value::from(-1i8), "20"),
            (Value::from(-100i8), "3863"),
            (Value::from(-1000i16), "3903e7"),
            (Value::from(&b""[..]), "40"),
            (Value::from(vec![1u8, 2, 3, 4]), "4401020304"),
            (Value::from(""), "60"),
            (Value::from("IETF"), "6449455446"),
            (Value::from("\u{00fc}"), "62c3bc"),
            (Value::from(false), "f4"),
            (Value::from(true), "f5"),
            (Value::Null, "f6"),
            (Value::array([1u8, 2, 3]), "83010203"),
            (Value::Float(1.5), "fa3fc00000"),
            (Value::Float(1.1), "fb3ff199999999999a"),
        ] {
            assert_eq!(hex(&v), h, "encoding {v:?}");
            assert_eq!(decode(&hex::decode(h).unwrap()).unwrap(), v, "decoding {h}");
        }
        assert_eq!(
            decode(&hex::decode("f93c00").unwrap()).unwrap(),
            Value::Float(1.0)
        );
        assert_eq!(
            decode(&hex::decode("f9c400").unwrap()).unwrap(),
            Value::Float(-4.0)
        );
        assert_eq!(
            decode(&hex::decode("f90001").unwrap()).unwrap(),
            Value::Float(5.960464477539063e-8)
        );
    }

    #[test]
    fn maps_are_sorted_canonically() {
        // A COSE key: 1, 3, -1, -2, -3 (0x01, 0x03, 0x20, 0x21, 0x22).
        let cose = Value::map([
            (Value::from(-2i8), Value::from(vec![0u8])),
            (Value::from(3u8), Value::from(-7i8)),
            (Value::from(-1i8), Value::from(1u8)),
            (Value::from(1u8), Value::from(2u8)),
            (Value::from(-3i8), Value::from(vec![1u8])),
        ]);
        assert_eq!(hex(&cose), "a5010203262001214100224101");
        // Text keys: length first, then bytewise; integers before text.
        let m = Value::map([
            (Value::from("type"), Value::Null),
            (Value::from("alg"), Value::Null),
            (Value::from("b"), Value::Null),
            (Value::from(256u16), Value::Null),
            (Value::from("a"), Value::Null),
            (Value::from(10u8), Value::Null),
        ]);
        // Major type first: 256 (major 0, 3 bytes) sorts before "a" (major 3, 2 bytes).
        let want = "a6 0a f6 190100 f6 6161 f6 6162 f6 63616c67 f6 6474797065 f6";
        assert_eq!(hex(&m), want.replace(' ', ""));
    }

    #[test]
    fn map_lookup() {
        let m = Value::map([
            (Value::from(1u8), Value::from("one")),
            (Value::from("two"), Value::from(2u8)),
        ]);
        assert_eq!(m.get(1u8).and_then(Value::as_text), Some("one"));
        assert_eq!(m.get("two").and_then(Value::as_u64), Some(2));
        assert!(m.get(3u8).is_none());
        assert!(Value::Null.get(1u8).is_none());
    }

    #[test]
    fn strict_decoding() {
        let cases: &[(&str, Error)] = &[
            ("", Error::Truncated),
            ("18", Error::Truncated),
            ("5a00000010", Error::Truncated),
            ("5bffffffffffffffff00", Error::Truncated),
            ("9bffffffffffffffff", Error::Truncated),
            ("bbffffffffffffffff", Error::Truncated),
            ("a1", Error::Truncated),
            (
                "0000",
                Error::TrailingBytes {
                    consumed: 1,
                    total: 2,
                },
            ),
            ("5f", Error::IndefiniteLength),
            ("9f", Error::IndefiniteLength),
            ("bf", Error::IndefiniteLength),
            ("ff", Error::IndefiniteLength),
            ("c11a514b67b0", Error::Tag),
            ("f7", Error::Unsupported),
            ("f0", Error::Unsupported),
            ("1c", Error::Unsupported),
            ("62c328", Error::InvalidUtf8),
            ("a2010201f6", Error::DuplicateKey),
            ("a2616101616102", Error::DuplicateKey),
        ];
        for (h, want) in cases {
            assert_eq!(
                decode(&hex::decode(h).unwrap()).unwrap_err(),
                *want,
                "input {h}"
            );
        }
    }

    #[test]
    fn depth_is_limited() {
        // 17 nested arrays are one too many; 16 are fine.
        let mut deep = vec![0x81u8; 17];
        deep.push(0x00);
        assert_eq!(decode(&deep).unwrap_err(), Error::TooDeep { max: 16 });
        assert!(decode(&deep[1..]).is_ok());
        assert!(decode_with(&deep, Limits { max_depth: 17 }).is_ok());
    }

    #[test]
    fn prefix_decoding_reports_consumed() {
        assert_eq!(
            decode_prefix(&[0xa0, 0, 0, 0]).unwrap(),
            (Value::Map(vec![]), 1)
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            (-(1i128 << 64)..(1i128 << 64)).prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            ".{0,20}".prop_map(Value::Text),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            any::<f32>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(|f| Value::Float(f64::from(f))),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(any::<i64>(), inner, 0..8)
                    .prop_map(|m| Value::map(m.into_iter().map(|(k, v)| (Value::from(k), v)))),
            ]
        })
    }

    /// Puts map entries in canonical order so values compare equal after a round trip.
    fn canonicalise(v: Value) -> Value {
        decode(&encode(&v)).unwrap()
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            let bytes = encode(&v);
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(encode(&back), bytes);
            prop_assert_eq!(back, canonicalise(v));
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let _ = decode_prefix(&bytes);
        }
    }
}

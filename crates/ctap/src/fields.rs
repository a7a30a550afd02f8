//! Typed field extraction from CBOR maps, with the CTAP status each failure deserves:
//! a missing required member is `CTAP2_ERR_MISSING_PARAMETER`, a member of the wrong type is
//! `CTAP2_ERR_CBOR_UNEXPECTED_TYPE`. Unknown members are ignored (real peers add keys).
//!
//! ```
//! use hybridge_cbor::Value;
//! use hybridge_ctap::fields::Fields;
//! let v = Value::map([(Value::from(1), Value::from("example.com"))]);
//! let f = Fields::new(&v, "request").unwrap();
//! assert_eq!(f.text(1).unwrap(), "example.com");
//! assert_eq!(f.bytes(2).unwrap_err().status.0, 0x14); // missing parameter
//! assert_eq!(f.opt_bool(1).unwrap_err().status.0, 0x11); // unexpected type
//! ```

use hybridge_cbor::Value;

use crate::status::CtapError;

/// A CBOR map being read as a CTAP structure.
#[derive(Clone, Copy, Debug)]
pub struct Fields<'a> {
    entries: &'a [(Value, Value)],
    what: &'static str,
}

/// A map key: an integer (requests, responses) or a text string (entities, extensions).
pub trait Key: Copy + std::fmt::Display {
    /// Whether the CBOR `k` is this key.
    fn matches(self, k: &Value) -> bool;
}

impl Key for i64 {
    fn matches(self, k: &Value) -> bool {
        k.as_int() == Some(i128::from(self))
    }
}

impl Key for i32 {
    fn matches(self, k: &Value) -> bool {
        k.as_int() == Some(i128::from(self))
    }
}

impl Key for &str {
    fn matches(self, k: &Value) -> bool {
        k.as_text() == Some(self)
    }
}

impl<'a> Fields<'a> {
    /// Reads `value` as a map; `what` names the structure in error messages.
    pub fn new(value: &'a Value, what: &'static str) -> Result<Self, CtapError> {
        match value.as_map() {
            Some(entries) => Ok(Self { entries, what }),
            None => Err(CtapError::unexpected_type(format!(
                "{what} must be a map, not a {}",
                value.type_name()
            ))),
        }
    }

    /// The entries of the map.
    pub fn entries(&self) -> &'a [(Value, Value)] {
        self.entries
    }

    /// The member under `key`, if present.
    pub fn get<K: Key>(&self, key: K) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(k, _)| key.matches(k))
            .map(|(_, v)| v)
    }

    /// The member under `key`, or `CTAP2_ERR_MISSING_PARAMETER`.
    pub fn required<K: Key>(&self, key: K) -> Result<&'a Value, CtapError> {
        self.get(key)
            .ok_or_else(|| CtapError::missing(format!("{} is missing member {key}", self.what)))
    }

    fn typed<K: Key, T>(
        &self,
        key: K,
        v: Option<&'a Value>,
        want: &'static str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, CtapError> {
        match v {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| {
                CtapError::unexpected_type(format!(
                    "{} member {key} must be a {want}, not a {}",
                    self.what,
                    v.type_name()
                ))
            }),
        }
    }

    /// Optional byte string.
    pub fn opt_bytes<K: Key>(&self, key: K) -> Result<Option<&'a [u8]>, CtapError> {
        self.typed(key, self.get(key), "byte string", Value::as_bytes)
    }

    /// Required byte string.
    pub fn bytes<K: Key>(&self, key: K) -> Result<&'a [u8], CtapError> {
        self.required(key)?;
        self.opt_bytes(key)?
            .ok_or_else(|| CtapError::missing("unreachable"))
    }

    /// Optional text string.
    pub fn opt_text<K: Key>(&self, key: K) -> Result<Option<&'a str>, CtapError> {
        self.typed(key, self.get(key), "text string", Value::as_text)
    }

    /// Required text string.
    pub fn text<K: Key>(&self, key: K) -> Result<&'a str, CtapError> {
        self.required(key)?;
        self.opt_text(key)?
            .ok_or_else(|| CtapError::missing("unreachable"))
    }

    /// Optional boolean.
    pub fn opt_bool<K: Key>(&self, key: K) -> Result<Option<bool>, CtapError> {
        self.typed(key, self.get(key), "boolean", Value::as_bool)
    }

    /// Optional integer that fits an `i64`.
    pub fn opt_int<K: Key>(&self, key: K) -> Result<Option<i64>, CtapError> {
        self.typed(key, self.get(key), "integer", Value::as_i64)
    }

    /// Required integer that fits an `i64`.
    pub fn int<K: Key>(&self, key: K) -> Result<i64, CtapError> {
        self.required(key)?;
        self.opt_int(key)?
            .ok_or_else(|| CtapError::missing("unreachable"))
    }

    /// Optional unsigned integer.
    pub fn opt_uint<K: Key>(&self, key: K) -> Result<Option<u64>, CtapError> {
        self.typed(key, self.get(key), "unsigned integer", Value::as_u64)
    }

    /// Optional array.
    pub fn opt_array<K: Key>(&self, key: K) -> Result<Option<&'a [Value]>, CtapError> {
        self.typed(key, self.get(key), "array", Value::as_array)
    }

    /// Required array.
    pub fn array<K: Key>(&self, key: K) -> Result<&'a [Value], CtapError> {
        self.required(key)?;
        self.opt_array(key)?
            .ok_or_else(|| CtapError::missing("unreachable"))
    }

    /// Optional map, as [`Fields`].
    pub fn opt_map<K: Key>(
        &self,
        key: K,
        what: &'static str,
    ) -> Result<Option<Fields<'a>>, CtapError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Fields::new(v, what).map(Some),
        }
    }

    /// Required map, as [`Fields`].
    pub fn map<K: Key>(&self, key: K, what: &'static str) -> Result<Fields<'a>, CtapError> {
        Fields::new(self.required(key)?, what)
    }

    /// Optional array of text strings.
    pub fn opt_text_array<K: Key>(&self, key: K) -> Result<Option<Vec<String>>, CtapError> {
        match self.opt_array(key)? {
            None => Ok(None),
            Some(items) => items
                .iter()
                .map(|i| {
                    i.as_text().map(str::to_owned).ok_or_else(|| {
                        CtapError::unexpected_type(format!(
                            "{} member {key} must hold text strings",
                            self.what
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }
}

/// Reads a fixed-size byte string, failing with `CTAP1_ERR_INVALID_LENGTH`.
pub fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], CtapError> {
    <[u8; N]>::try_from(bytes).map_err(|_| {
        CtapError::invalid_length(format!("{what} must be {N} bytes, not {}", bytes.len()))
    })
}

//! The small structures CTAP2 messages are made of: entities, credential descriptors,
//! algorithm parameters and options (CTAP 2.1 §6.1, WebAuthn §5).

use hybridge_cbor::Value;

use crate::fields::Fields;
use crate::status::CtapError;

/// COSE algorithm identifier of ES256 (ECDSA P-256 with SHA-256).
pub const ES256: i64 = -7;

/// The only credential type WebAuthn defines.
pub const PUBLIC_KEY: &str = "public-key";

/// Maximum length of a user handle (WebAuthn `user.id`).
pub const MAX_USER_ID_LEN: usize = 64;

/// How many entries an allowList or excludeList may have before the request is refused with
/// `CTAP2_ERR_LIMIT_EXCEEDED`; well above what any browser sends.
pub const MAX_CREDENTIAL_LIST_LEN: usize = 256;

/// WebAuthn caps credential IDs at 1023 bytes.
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// `PublicKeyCredentialRpEntity`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpEntity {
    /// The RP ID.
    pub id: String,
    /// Human-palatable name.
    pub name: Option<String>,
}

impl RpEntity {
    /// CBOR form.
    pub fn to_value(&self) -> Value {
        let mut m = vec![(Value::from("id"), Value::from(self.id.as_str()))];
        if let Some(n) = &self.name {
            m.push((Value::from("name"), Value::from(n.as_str())));
        }
        Value::Map(m)
    }

    /// Parses the CBOR form. `id` is required.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "rp")?;
        Ok(Self {
            id: f.text("id")?.to_owned(),
            name: f.opt_text("name")?.map(str::to_owned),
        })
    }
}

/// `PublicKeyCredentialUserEntity`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserEntity {
    /// The user handle, 1 to 64 bytes.
    pub id: Vec<u8>,
    /// `user.name`.
    pub name: Option<String>,
    /// `user.displayName`.
    pub display_name: Option<String>,
}

impl UserEntity {
    /// CBOR form.
    pub fn to_value(&self) -> Value {
        let mut m = vec![(Value::from("id"), Value::from(self.id.clone()))];
        if let Some(n) = &self.name {
            m.push((Value::from("name"), Value::from(n.as_str())));
        }
        if let Some(n) = &self.display_name {
            m.push((Value::from("displayName"), Value::from(n.as_str())));
        }
        Value::Map(m)
    }

    /// Parses the CBOR form. `id` is required; its length is checked by the authenticator,
    /// not here, so that a client can still read what a peer sent.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "user")?;
        Ok(Self {
            id: f.bytes("id")?.to_vec(),
            name: f.opt_text("name")?.map(str::to_owned),
            display_name: f.opt_text("displayName")?.map(str::to_owned),
        })
    }
}

/// `PublicKeyCredentialDescriptor`, as in allowList, excludeList and getAssertion responses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialDescriptor {
    /// `"public-key"`; other types are carried so a peer can skip them.
    pub type_: String,
    /// The credential ID.
    pub id: Vec<u8>,
    /// Transport hints, if given.
    pub transports: Option<Vec<String>>,
}

impl CredentialDescriptor {
    /// A `public-key` descriptor for `id` with no transports.
    pub fn public_key(id: impl Into<Vec<u8>>) -> Self {
        Self {
            type_: PUBLIC_KEY.to_owned(),
            id: id.into(),
            transports: None,
        }
    }

    /// Whether the descriptor is of type `public-key`.
    pub fn is_public_key(&self) -> bool {
        self.type_ == PUBLIC_KEY
    }

    /// CBOR form.
    pub fn to_value(&self) -> Value {
        let mut m = vec![
            (Value::from("type"), Value::from(self.type_.as_str())),
            (Value::from("id"), Value::from(self.id.clone())),
        ];
        if let Some(t) = &self.transports {
            m.push((
                Value::from("transports"),
                Value::array(t.iter().map(|s| Value::from(s.as_str()))),
            ));
        }
        Value::Map(m)
    }

    /// Parses the CBOR form; `type` and `id` are required.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "credential descriptor")?;
        let type_ = f.text("type")?.to_owned();
        let id = f.bytes("id")?.to_vec();
        // Transports are a hint; a malformed list is dropped rather than failing the request.
        let transports = f.opt_text_array("transports").ok().flatten();
        Ok(Self {
            type_,
            id,
            transports,
        })
    }
}

/// Parses an allowList or excludeList.
pub(crate) fn descriptor_list(items: &[Value]) -> Result<Vec<CredentialDescriptor>, CtapError> {
    if items.len() > MAX_CREDENTIAL_LIST_LEN {
        return Err(CtapError::new(
            crate::StatusCode::CTAP2_ERR_LIMIT_EXCEEDED,
            format!("credential list has {} entries", items.len()),
        ));
    }
    items.iter().map(CredentialDescriptor::from_value).collect()
}

/// One entry of `pubKeyCredParams`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubKeyCredParam {
    /// `"public-key"`.
    pub type_: String,
    /// COSE algorithm identifier.
    pub alg: i64,
}

impl PubKeyCredParam {
    /// The ES256 `public-key` parameter.
    pub fn es256() -> Self {
        Self {
            type_: PUBLIC_KEY.to_owned(),
            alg: ES256,
        }
    }

    /// CBOR form.
    pub fn to_value(&self) -> Value {
        Value::map([
            (Value::from("alg"), Value::from(self.alg)),
            (Value::from("type"), Value::from(self.type_.as_str())),
        ])
    }

    /// Parses the CBOR form; both members are required.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "pubKeyCredParams entry")?;
        let type_ = f.text("type")?.to_owned();
        // Algorithms outside i64 cannot be ones we know; keep them as an impossible value
        // rather than failing, as CTAP says to skip unknown algorithms.
        let alg = match f.required("alg")? {
            Value::Int(i) => i64::try_from(*i).unwrap_or(i64::MIN),
            other => {
                return Err(CtapError::unexpected_type(format!(
                    "pubKeyCredParams alg must be an integer, not a {}",
                    other.type_name()
                )));
            }
        };
        Ok(Self { type_, alg })
    }
}

/// The `options` map of makeCredential and getAssertion. Absent means "default".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Resident (discoverable) key.
    pub rk: Option<bool>,
    /// User presence.
    pub up: Option<bool>,
    /// User verification.
    pub uv: Option<bool>,
}

impl Options {
    /// Whether no option is set (the map is then omitted).
    pub fn is_empty(&self) -> bool {
        self.rk.is_none() && self.up.is_none() && self.uv.is_none()
    }

    /// CBOR form.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        for (k, v) in [("rk", self.rk), ("up", self.up), ("uv", self.uv)] {
            if let Some(b) = v {
                m.push((Value::from(k), Value::from(b)));
            }
        }
        Value::Map(m)
    }

    /// Parses the CBOR form; unknown options are ignored, known ones must be booleans.
    pub fn from_fields(f: &Fields<'_>) -> Result<Self, CtapError> {
        Ok(Self {
            rk: f.opt_bool("rk")?,
            up: f.opt_bool("up")?,
            uv: f.opt_bool("uv")?,
        })
    }
}

//! CTAP2 requests as they travel over hybrid: `command byte || canonical CBOR parameters`
//! (docs/protocol.md §9; CTAP 2.1 §6).

use hybridge_cbor::{Value, decode};

use crate::extensions::{HMAC_SECRET, PRF, PrfInputs};
use crate::fields::{Fields, fixed};
use crate::status::{CtapError, StatusCode};
use crate::types::{
    CredentialDescriptor, Options, PubKeyCredParam, RpEntity, UserEntity, descriptor_list,
};

/// The largest request this crate decodes. Real requests are a few KiB at most (an allowList
/// of a few dozen IDs); anything bigger is refused with `CTAP2_ERR_REQUEST_TOO_LARGE` before
/// the CBOR is looked at.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// CTAP2 command bytes that hybrid phones accept (docs/protocol.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// authenticatorMakeCredential.
    MakeCredential,
    /// authenticatorGetAssertion.
    GetAssertion,
    /// authenticatorGetInfo.
    GetInfo,
    /// authenticatorSelection.
    Selection,
}

impl Command {
    /// The command's name in the CTAP 2.1 specification, without the `authenticator` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Command::MakeCredential => "makeCredential",
            Command::GetAssertion => "getAssertion",
            Command::GetInfo => "getInfo",
            Command::Selection => "selection",
        }
    }

    /// The command byte.
    pub fn byte(self) -> u8 {
        match self {
            Command::MakeCredential => 0x01,
            Command::GetAssertion => 0x02,
            Command::GetInfo => 0x04,
            Command::Selection => 0x0B,
        }
    }

    /// The command for a byte, if it is one we know.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(Command::MakeCredential),
            0x02 => Some(Command::GetAssertion),
            0x04 => Some(Command::GetInfo),
            0x0B => Some(Command::Selection),
            _ => None,
        }
    }
}

/// makeCredential extension inputs that this crate understands; others are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MakeCredentialExtensions {
    /// `"hmac-secret": true`.
    pub hmac_secret: Option<bool>,
    /// `"prf": {...}`; `eval` here asks for outputs at creation.
    pub prf: Option<PrfInputs>,
}

impl MakeCredentialExtensions {
    fn is_empty(&self) -> bool {
        self.hmac_secret.is_none() && self.prf.is_none()
    }

    fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(h) = self.hmac_secret {
            m.push((Value::from(HMAC_SECRET), Value::from(h)));
        }
        if let Some(p) = &self.prf {
            m.push((Value::from(PRF), p.to_value()));
        }
        Value::Map(m)
    }

    fn from_fields(f: &Fields<'_>) -> Result<Self, CtapError> {
        Ok(Self {
            hmac_secret: f.opt_bool(HMAC_SECRET)?,
            prf: match f.get(PRF) {
                Some(p) => Some(PrfInputs::from_value(p)?),
                None => None,
            },
        })
    }
}

/// authenticatorMakeCredential parameters (CTAP 2.2 §6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MakeCredentialRequest {
    /// 0x01: SHA-256 of clientDataJSON.
    pub client_data_hash: [u8; 32],
    /// 0x02.
    pub rp: RpEntity,
    /// 0x03.
    pub user: UserEntity,
    /// 0x04, in the RP's order of preference.
    pub pub_key_cred_params: Vec<PubKeyCredParam>,
    /// 0x05.
    pub exclude_list: Vec<CredentialDescriptor>,
    /// 0x06.
    pub extensions: MakeCredentialExtensions,
    /// 0x07.
    pub options: Options,
    /// 0x08.
    pub pin_uv_auth_param: Option<Vec<u8>>,
    /// 0x09.
    pub pin_uv_auth_protocol: Option<u64>,
    /// 0x0A.
    pub enterprise_attestation: Option<u64>,
    /// 0x0B (CTAP 2.2): attestation formats in order of preference.
    pub attestation_formats_preference: Option<Vec<String>>,
}

impl MakeCredentialRequest {
    /// The parameters as a CBOR map.
    pub fn to_value(&self) -> Value {
        let mut m = vec![
            (Value::from(1), Value::from(self.client_data_hash)),
            (Value::from(2), self.rp.to_value()),
            (Value::from(3), self.user.to_value()),
            (
                Value::from(4),
                Value::array(
                    self.pub_key_cred_params
                        .iter()
                        .map(PubKeyCredParam::to_value),
                ),
            ),
        ];
        if !self.exclude_list.is_empty() {
            m.push((
                Value::from(5),
                Value::array(self.exclude_list.iter().map(CredentialDescriptor::to_value)),
            ));
        }
        if !self.extensions.is_empty() {
            m.push((Value::from(6), self.extensions.to_value()));
        }
        if !self.options.is_empty() {
            m.push((Value::from(7), self.options.to_value()));
        }
        if let Some(p) = &self.pin_uv_auth_param {
            m.push((Value::from(8), Value::from(p.clone())));
        }
        if let Some(p) = self.pin_uv_auth_protocol {
            m.push((Value::from(9), Value::from(p)));
        }
        if let Some(e) = self.enterprise_attestation {
            m.push((Value::from(10), Value::from(e)));
        }
        if let Some(f) = &self.attestation_formats_preference {
            m.push((
                Value::from(11),
                Value::array(f.iter().map(|s| Value::from(s.as_str()))),
            ));
        }
        Value::Map(m)
    }

    /// Reads the parameters map.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "makeCredential parameters")?;
        let client_data_hash = fixed::<32>(f.bytes(1)?, "clientDataHash")?;
        let rp = RpEntity::from_value(f.required(2)?)?;
        let user = UserEntity::from_value(f.required(3)?)?;
        let pub_key_cred_params = f
            .array(4)?
            .iter()
            .map(PubKeyCredParam::from_value)
            .collect::<Result<Vec<_>, _>>()?;
        let exclude_list = match f.opt_array(5)? {
            Some(items) => descriptor_list(items)?,
            None => Vec::new(),
        };
        let extensions = match f.opt_map(6, "extensions")? {
            Some(e) => MakeCredentialExtensions::from_fields(&e)?,
            None => MakeCredentialExtensions::default(),
        };
        let options = match f.opt_map(7, "options")? {
            Some(o) => Options::from_fields(&o)?,
            None => Options::default(),
        };
        Ok(Self {
            client_data_hash,
            rp,
            user,
            pub_key_cred_params,
            exclude_list,
            extensions,
            options,
            pin_uv_auth_param: f.opt_bytes(8)?.map(<[u8]>::to_vec),
            pin_uv_auth_protocol: f.opt_uint(9)?,
            enterprise_attestation: f.opt_uint(10)?,
            attestation_formats_preference: f.opt_text_array(11)?,
        })
    }
}

/// getAssertion extension inputs that this crate understands; others are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetAssertionExtensions {
    /// `"prf": {"eval"?, "evalByCredential"?}` with already-hashed salts.
    pub prf: Option<PrfInputs>,
}

/// authenticatorGetAssertion parameters (CTAP 2.2 §6.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetAssertionRequest {
    /// 0x01.
    pub rp_id: String,
    /// 0x02: SHA-256 of clientDataJSON.
    pub client_data_hash: [u8; 32],
    /// 0x03; empty means "discoverable credentials".
    pub allow_list: Vec<CredentialDescriptor>,
    /// 0x04.
    pub extensions: GetAssertionExtensions,
    /// 0x05. `rk` is not a valid getAssertion option; it is parsed so that the authenticator
    /// can refuse it with `CTAP2_ERR_UNSUPPORTED_OPTION`.
    pub options: Options,
    /// 0x06.
    pub pin_uv_auth_param: Option<Vec<u8>>,
    /// 0x07.
    pub pin_uv_auth_protocol: Option<u64>,
}

impl GetAssertionRequest {
    /// The parameters as a CBOR map.
    pub fn to_value(&self) -> Value {
        let mut m = vec![
            (Value::from(1), Value::from(self.rp_id.as_str())),
            (Value::from(2), Value::from(self.client_data_hash)),
        ];
        if !self.allow_list.is_empty() {
            m.push((
                Value::from(3),
                Value::array(self.allow_list.iter().map(CredentialDescriptor::to_value)),
            ));
        }
        if let Some(p) = &self.extensions.prf {
            m.push((
                Value::from(4),
                Value::map([(Value::from(PRF), p.to_value())]),
            ));
        }
        if !self.options.is_empty() {
            m.push((Value::from(5), self.options.to_value()));
        }
        if let Some(p) = &self.pin_uv_auth_param {
            m.push((Value::from(6), Value::from(p.clone())));
        }
        if let Some(p) = self.pin_uv_auth_protocol {
            m.push((Value::from(7), Value::from(p)));
        }
        Value::Map(m)
    }

    /// Reads the parameters map.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "getAssertion parameters")?;
        let rp_id = f.text(1)?.to_owned();
        let client_data_hash = fixed::<32>(f.bytes(2)?, "clientDataHash")?;
        let allow_list = match f.opt_array(3)? {
            Some(items) => descriptor_list(items)?,
            None => Vec::new(),
        };
        let extensions = match f.opt_map(4, "extensions")? {
            Some(e) => GetAssertionExtensions {
                prf: match e.get(PRF) {
                    Some(p) => Some(PrfInputs::from_value(p)?),
                    None => None,
                },
            },
            None => GetAssertionExtensions::default(),
        };
        let options = match f.opt_map(5, "options")? {
            Some(o) => Options::from_fields(&o)?,
            None => Options::default(),
        };
        Ok(Self {
            rp_id,
            client_data_hash,
            allow_list,
            extensions,
            options,
            pin_uv_auth_param: f.opt_bytes(6)?.map(<[u8]>::to_vec),
            pin_uv_auth_protocol: f.opt_uint(7)?,
        })
    }
}

/// A CTAP2 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// 0x01.
    MakeCredential(Box<MakeCredentialRequest>),
    /// 0x02.
    GetAssertion(Box<GetAssertionRequest>),
    /// 0x04, no parameters.
    GetInfo,
    /// 0x0B, no parameters.
    Selection,
}

impl Request {
    /// The command.
    pub fn command(&self) -> Command {
        match self {
            Request::MakeCredential(_) => Command::MakeCredential,
            Request::GetAssertion(_) => Command::GetAssertion,
            Request::GetInfo => Command::GetInfo,
            Request::Selection => Command::Selection,
        }
    }

    /// `command || canonical CBOR`, as sent in a hybrid CTAP message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.command().byte()];
        match self {
            Request::MakeCredential(r) => hybridge_cbor::encode_into(&r.to_value(), &mut out),
            Request::GetAssertion(r) => hybridge_cbor::encode_into(&r.to_value(), &mut out),
            Request::GetInfo | Request::Selection => {}
        }
        out
    }

    /// Decodes `command || CBOR`. The error carries the status code an authenticator answers
    /// with: unknown command → `CTAP1_ERR_INVALID_COMMAND`, bad CBOR (including trailing
    /// bytes or excessive nesting) → `CTAP2_ERR_INVALID_CBOR`, a missing member →
    /// `CTAP2_ERR_MISSING_PARAMETER`, a mistyped one → `CTAP2_ERR_CBOR_UNEXPECTED_TYPE`.
    pub fn decode(bytes: &[u8]) -> Result<Self, CtapError> {
        if bytes.len() > MAX_REQUEST_LEN {
            return Err(CtapError::new(
                StatusCode::CTAP2_ERR_REQUEST_TOO_LARGE,
                format!("request of {} bytes", bytes.len()),
            ));
        }
        let (&cmd, body) = bytes
            .split_first()
            .ok_or_else(|| CtapError::invalid_length("empty request"))?;
        let command = Command::from_byte(cmd).ok_or_else(|| {
            CtapError::new(
                StatusCode::CTAP1_ERR_INVALID_COMMAND,
                format!("unsupported command 0x{cmd:02x}"),
            )
        })?;
        match command {
            Command::GetInfo | Command::Selection => {
                if !body.is_empty() {
                    return Err(CtapError::invalid_length(format!(
                        "{command:?} takes no parameters"
                    )));
                }
                Ok(if command == Command::GetInfo {
                    Request::GetInfo
                } else {
                    Request::Selection
                })
            }
            Command::MakeCredential | Command::GetAssertion => {
                if body.is_empty() {
                    return Err(CtapError::missing(format!(
                        "{command:?} without parameters"
                    )));
                }
                let v = decode(body)?;
                Ok(if command == Command::MakeCredential {
                    Request::MakeCredential(Box::new(MakeCredentialRequest::from_value(&v)?))
                } else {
                    Request::GetAssertion(Box::new(GetAssertionRequest::from_value(&v)?))
                })
            }
        }
    }
}

impl From<MakeCredentialRequest> for Request {
    fn from(r: MakeCredentialRequest) -> Self {
        Request::MakeCredential(Box::new(r))
    }
}

impl From<GetAssertionRequest> for Request {
    fn from(r: GetAssertionRequest) -> Self {
        Request::GetAssertion(Box::new(r))
    }
}

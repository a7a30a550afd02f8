//! CTAP2 responses as they travel over hybrid: `status byte || CBOR`, the CBOR present only on
//! success (docs/protocol.md §9; CTAP 2.1 §6).

use hybridge_cbor::{Value, decode, encode_into};

use crate::attestation::{AttestationStatement, attestation_object};
use crate::authdata::AuthenticatorData;
use crate::extensions::UnsignedExtensionOutputs;
use crate::fields::{Fields, fixed};
use crate::request::Command;
use crate::status::{CtapError, StatusCode};
use crate::types::{CredentialDescriptor, PubKeyCredParam, UserEntity};

/// The largest response this crate decodes (a client reading a phone's answer).
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

/// authenticatorMakeCredential response.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MakeCredentialResponse {
    /// 0x01 and 0x03: the attestation statement and its format.
    pub attestation: AttestationStatement,
    /// 0x02: authenticator data, exactly as signed.
    pub auth_data: Vec<u8>,
    /// 0x04.
    pub ep_att: Option<bool>,
    /// 0x05.
    pub large_blob_key: Option<Vec<u8>>,
    /// 0x06.
    pub unsigned_extension_outputs: UnsignedExtensionOutputs,
}

impl MakeCredentialResponse {
    /// The WebAuthn attestation object (`response.attestationObject`).
    pub fn attestation_object(&self) -> Vec<u8> {
        attestation_object(&self.auth_data, &self.attestation)
    }

    /// The authenticator data, parsed.
    pub fn authenticator_data(&self) -> Result<AuthenticatorData, CtapError> {
        AuthenticatorData::parse(&self.auth_data)
    }

    /// The response map.
    pub fn to_value(&self) -> Value {
        let mut m = vec![
            (Value::from(1), Value::from(self.attestation.fmt())),
            (Value::from(2), Value::from(self.auth_data.clone())),
            (Value::from(3), self.attestation.to_value()),
        ];
        if let Some(e) = self.ep_att {
            m.push((Value::from(4), Value::from(e)));
        }
        if let Some(k) = &self.large_blob_key {
            m.push((Value::from(5), Value::from(k.clone())));
        }
        if !self.unsigned_extension_outputs.is_empty() {
            m.push((Value::from(6), self.unsigned_extension_outputs.to_value()));
        }
        Value::Map(m)
    }

    /// Reads the response map.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "makeCredential response")?;
        let fmt = f.text(1)?;
        let auth_data = f.bytes(2)?.to_vec();
        let attestation = AttestationStatement::from_value(fmt, f.required(3)?)?;
        Ok(Self {
            attestation,
            auth_data,
            ep_att: f.opt_bool(4)?,
            large_blob_key: f.opt_bytes(5)?.map(<[u8]>::to_vec),
            unsigned_extension_outputs: match f.get(6) {
                Some(u) => UnsignedExtensionOutputs::from_value(u)?,
                None => UnsignedExtensionOutputs::default(),
            },
        })
    }
}

/// authenticatorGetAssertion response.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct GetAssertionResponse {
    /// 0x01: the credential used.
    pub credential: Option<CredentialDescriptor>,
    /// 0x02: authenticator data, exactly as signed.
    pub auth_data: Vec<u8>,
    /// 0x03: signature over `authData || clientDataHash` (DER ECDSA for ES256).
    pub signature: Vec<u8>,
    /// 0x04: the user; `id` is the WebAuthn `userHandle`.
    pub user: Option<UserEntity>,
    /// 0x05.
    pub number_of_credentials: Option<u64>,
    /// 0x06.
    pub user_selected: Option<bool>,
    /// 0x07.
    pub large_blob_key: Option<Vec<u8>>,
    /// 0x08.
    pub unsigned_extension_outputs: UnsignedExtensionOutputs,
}

impl GetAssertionResponse {
    /// The authenticator data, parsed.
    pub fn authenticator_data(&self) -> Result<AuthenticatorData, CtapError> {
        AuthenticatorData::parse(&self.auth_data)
    }

    /// The WebAuthn `userHandle`, if the authenticator returned one.
    pub fn user_handle(&self) -> Option<&[u8]> {
        self.user.as_ref().map(|u| u.id.as_slice())
    }

    /// The response map.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(c) = &self.credential {
            m.push((Value::from(1), c.to_value()));
        }
        m.push((Value::from(2), Value::from(self.auth_data.clone())));
        m.push((Value::from(3), Value::from(self.signature.clone())));
        if let Some(u) = &self.user {
            m.push((Value::from(4), u.to_value()));
        }
        if let Some(n) = self.number_of_credentials {
            m.push((Value::from(5), Value::from(n)));
        }
        if let Some(s) = self.user_selected {
            m.push((Value::from(6), Value::from(s)));
        }
        if let Some(k) = &self.large_blob_key {
            m.push((Value::from(7), Value::from(k.clone())));
        }
        if !self.unsigned_extension_outputs.is_empty() {
            m.push((Value::from(8), self.unsigned_extension_outputs.to_value()));
        }
        Value::Map(m)
    }

    /// Reads the response map.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "getAssertion response")?;
        Ok(Self {
            credential: match f.get(1) {
                Some(c) => Some(CredentialDescriptor::from_value(c)?),
                None => None,
            },
            auth_data: f.bytes(2)?.to_vec(),
            signature: f.bytes(3)?.to_vec(),
            user: match f.get(4) {
                Some(u) => Some(UserEntity::from_value(u)?),
                None => None,
            },
            number_of_credentials: f.opt_uint(5)?,
            user_selected: f.opt_bool(6)?,
            large_blob_key: f.opt_bytes(7)?.map(<[u8]>::to_vec),
            unsigned_extension_outputs: match f.get(8) {
                Some(u) => UnsignedExtensionOutputs::from_value(u)?,
                None => UnsignedExtensionOutputs::default(),
            },
        })
    }
}

/// authenticatorGetInfo response (also the key-1 payload of the post-handshake message,
/// docs/protocol.md §8.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetInfoResponse {
    /// 0x01.
    pub versions: Vec<String>,
    /// 0x02.
    pub extensions: Vec<String>,
    /// 0x03.
    pub aaguid: [u8; 16],
    /// 0x04, in order.
    pub options: Vec<(String, bool)>,
    /// 0x05.
    pub max_msg_size: Option<u64>,
    /// 0x06; hybrid phones send none (docs/protocol.md §8.3).
    pub pin_uv_auth_protocols: Vec<u64>,
    /// 0x07.
    pub max_credential_count_in_list: Option<u64>,
    /// 0x08.
    pub max_credential_id_length: Option<u64>,
    /// 0x09.
    pub transports: Vec<String>,
    /// 0x0A.
    pub algorithms: Vec<PubKeyCredParam>,
}

impl GetInfoResponse {
    /// The value of option `name`, if reported.
    pub fn option(&self, name: &str) -> Option<bool> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }

    /// The response map.
    pub fn to_value(&self) -> Value {
        let texts = |v: &[String]| Value::array(v.iter().map(|s| Value::from(s.as_str())));
        let mut m = vec![(Value::from(1), texts(&self.versions))];
        if !self.extensions.is_empty() {
            m.push((Value::from(2), texts(&self.extensions)));
        }
        m.push((Value::from(3), Value::from(self.aaguid)));
        if !self.options.is_empty() {
            m.push((
                Value::from(4),
                Value::Map(
                    self.options
                        .iter()
                        .map(|(k, v)| (Value::from(k.as_str()), Value::from(*v)))
                        .collect(),
                ),
            ));
        }
        if let Some(n) = self.max_msg_size {
            m.push((Value::from(5), Value::from(n)));
        }
        if !self.pin_uv_auth_protocols.is_empty() {
            m.push((
                Value::from(6),
                Value::array(self.pin_uv_auth_protocols.iter().copied()),
            ));
        }
        if let Some(n) = self.max_credential_count_in_list {
            m.push((Value::from(7), Value::from(n)));
        }
        if let Some(n) = self.max_credential_id_length {
            m.push((Value::from(8), Value::from(n)));
        }
        if !self.transports.is_empty() {
            m.push((Value::from(9), texts(&self.transports)));
        }
        if !self.algorithms.is_empty() {
            m.push((
                Value::from(10),
                Value::array(self.algorithms.iter().map(PubKeyCredParam::to_value)),
            ));
        }
        Value::Map(m)
    }

    /// The canonical CBOR map without a status byte, as key 1 of the post-handshake message.
    pub fn to_cbor(&self) -> Vec<u8> {
        hybridge_cbor::encode(&self.to_value())
    }

    /// Reads the response map; unknown members are ignored.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "getInfo response")?;
        let options = match f.opt_map(4, "getInfo options")? {
            None => Vec::new(),
            Some(o) => o
                .entries()
                .iter()
                .filter_map(|(k, v)| Some((k.as_text()?.to_owned(), v.as_bool()?)))
                .collect(),
        };
        let pin_uv_auth_protocols = match f.opt_array(6)? {
            None => Vec::new(),
            Some(items) => items.iter().filter_map(Value::as_u64).collect(),
        };
        let algorithms = match f.opt_array(10)? {
            None => Vec::new(),
            Some(items) => items
                .iter()
                .filter_map(|i| PubKeyCredParam::from_value(i).ok())
                .collect(),
        };
        let versions = f
            .opt_text_array(1)?
            .ok_or_else(|| CtapError::missing("getInfo versions"))?;
        Ok(Self {
            versions,
            extensions: f.opt_text_array(2)?.unwrap_or_default(),
            aaguid: fixed::<16>(f.bytes(3)?, "aaguid")?,
            options,
            max_msg_size: f.opt_uint(5)?,
            pin_uv_auth_protocols,
            max_credential_count_in_list: f.opt_uint(7)?,
            max_credential_id_length: f.opt_uint(8)?,
            transports: f.opt_text_array(9)?.unwrap_or_default(),
            algorithms,
        })
    }

    /// Parses the CBOR map alone (no status byte), e.g. key 1 of the post-handshake message.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CtapError> {
        Self::from_value(&decode(bytes)?)
    }
}

/// A CTAP2 response.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// Successful makeCredential.
    MakeCredential(Box<MakeCredentialResponse>),
    /// Successful getAssertion.
    GetAssertion(Box<GetAssertionResponse>),
    /// Successful getInfo.
    GetInfo(Box<GetInfoResponse>),
    /// Successful authenticatorSelection (no payload).
    Selection,
    /// Any non-zero status.
    Error(StatusCode),
}

impl Response {
    /// `status || CBOR`, as sent in a hybrid CTAP message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Response::Error(s) => out.push(s.0),
            Response::Selection => out.push(StatusCode::CTAP2_OK.0),
            Response::MakeCredential(r) => {
                out.push(StatusCode::CTAP2_OK.0);
                encode_into(&r.to_value(), &mut out);
            }
            Response::GetAssertion(r) => {
                out.push(StatusCode::CTAP2_OK.0);
                encode_into(&r.to_value(), &mut out);
            }
            Response::GetInfo(r) => {
                out.push(StatusCode::CTAP2_OK.0);
                encode_into(&r.to_value(), &mut out);
            }
        }
        out
    }

    /// Decodes the answer to a `command` request. A non-zero status becomes
    /// [`Response::Error`] (any bytes after it are ignored); a success whose CBOR is malformed
    /// is an error.
    pub fn decode(command: Command, bytes: &[u8]) -> Result<Self, CtapError> {
        if bytes.len() > MAX_RESPONSE_LEN {
            return Err(CtapError::new(
                StatusCode::CTAP2_ERR_REQUEST_TOO_LARGE,
                format!("response of {} bytes", bytes.len()),
            ));
        }
        let (&status, body) = bytes
            .split_first()
            .ok_or_else(|| CtapError::invalid_length("empty response"))?;
        if status != 0 {
            return Ok(Response::Error(StatusCode(status)));
        }
        if command == Command::Selection {
            if !body.is_empty() {
                return Err(CtapError::invalid_length(
                    "selection response has a payload",
                ));
            }
            return Ok(Response::Selection);
        }
        if body.is_empty() {
            return Err(CtapError::missing(format!(
                "{command:?} response without CBOR"
            )));
        }
        let v = decode(body)?;
        Ok(match command {
            Command::MakeCredential => {
                Response::MakeCredential(Box::new(MakeCredentialResponse::from_value(&v)?))
            }
            Command::GetAssertion => {
                Response::GetAssertion(Box::new(GetAssertionResponse::from_value(&v)?))
            }
            Command::GetInfo => Response::GetInfo(Box::new(GetInfoResponse::from_value(&v)?)),
            Command::Selection => Response::Selection,
        })
    }

    fn unexpected(self, want: &'static str) -> CtapError {
        match self {
            Response::Error(s) => CtapError::new(s, "authenticator returned an error status"),
            _ => CtapError::invalid_parameter(format!("expected a {want} response")),
        }
    }
}

impl MakeCredentialResponse {
    /// Decodes `status || CBOR`; an error status becomes `Err` with that status.
    pub fn decode_reply(bytes: &[u8]) -> Result<Self, CtapError> {
        match Response::decode(Command::MakeCredential, bytes)? {
            Response::MakeCredential(r) => Ok(*r),
            other => Err(other.unexpected("makeCredential")),
        }
    }
}

impl GetAssertionResponse {
    /// Decodes `status || CBOR`; an error status becomes `Err` with that status.
    pub fn decode_reply(bytes: &[u8]) -> Result<Self, CtapError> {
        match Response::decode(Command::GetAssertion, bytes)? {
            Response::GetAssertion(r) => Ok(*r),
            other => Err(other.unexpected("getAssertion")),
        }
    }
}

impl GetInfoResponse {
    /// Decodes `status || CBOR`; an error status becomes `Err` with that status.
    pub fn decode_reply(bytes: &[u8]) -> Result<Self, CtapError> {
        match Response::decode(Command::GetInfo, bytes)? {
            Response::GetInfo(r) => Ok(*r),
            other => Err(other.unexpected("getInfo")),
        }
    }
}

//! CTAP extensions hybridge speaks: `hmac-secret` (creation flag), `prf` as the Chromium /
//! Google Play Services hybrid authenticator accepts it, and the client-side `credProps`.
//!
//! Facts this module follows (checked against Chromium's `device/fido` sources):
//! * The WebAuthn PRF input is hashed **by the client** before it reaches the authenticator:
//!   `salt = SHA-256("WebAuthn PRF" || 0x00 || input)` (Chromium `HashPRFValue`, which hashes
//!   the prefix with its terminating NUL; WebAuthn L3 §10.1.4). The CTAP `prf` extension then
//!   carries these 32-byte salts under `first`/`second`; the phone marks them "already hashed".
//! * The authenticator evaluates `HMAC-SHA256(CredRandom, salt)` per salt, with the
//!   UV-dependent CredRandom of hmac-secret (CTAP 2.1 §12.5).
//! * Outputs of `prf` are **unsigned**: at makeCredential `{"prf": {"enabled": true}}` under
//!   response key 6 (`unsignedExtensionOutputs`), at getAssertion
//!   `{"prf": {"results": {"first", "second"?}}}` under response key 8 — not in the
//!   authenticator data (Chromium `v2_authenticator.cc` `OnMakeCredentialResponse`,
//!   `OnGetAssertionResponse`; `virtual_ctap2_device.cc`).
//! * `credProps` is a client extension: the client reports `rk` from what it asked for, since
//!   this authenticator always honours `rk` ([`cred_props_rk`]).

use std::fmt;

use hybridge_cbor::Value;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::fields::{Fields, fixed};
use crate::status::CtapError;

/// Extension identifier of PRF.
pub const PRF: &str = "prf";
/// Extension identifier of hmac-secret.
pub const HMAC_SECRET: &str = "hmac-secret";
/// Extension identifier of credProps (client extension).
pub const CRED_PROPS: &str = "credProps";

/// Turns a WebAuthn PRF input (any length) into the 32-byte salt the authenticator sees:
/// `SHA-256("WebAuthn PRF" || 0x00 || input)`. Clients call this; authenticators never do.
pub fn prf_salt(input: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"WebAuthn PRF\0");
    h.update(input);
    h.finalize().into()
}

/// What `credProps.rk` reports for a makeCredential request to this authenticator: it stores
/// every `rk: true` credential as discoverable and no other.
pub fn cred_props_rk(rk_option: Option<bool>) -> bool {
    rk_option.unwrap_or(false)
}

/// One or two 32-byte PRF values: salts in a request, outputs in a response. Outputs are
/// secrets: zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PrfValues {
    /// First value.
    pub first: [u8; 32],
    /// Optional second value.
    pub second: Option<[u8; 32]>,
}

impl fmt::Debug for PrfValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrfValues")
            .field("second", &self.second.is_some())
            .finish_non_exhaustive()
    }
}

impl PrfValues {
    /// Salts from WebAuthn PRF inputs, hashed with [`prf_salt`].
    pub fn from_inputs(first: &[u8], second: Option<&[u8]>) -> Self {
        Self {
            first: prf_salt(first),
            second: second.map(prf_salt),
        }
    }

    /// CBOR form `{"first": bstr, "second"?: bstr}`.
    pub fn to_value(&self) -> Value {
        let mut m = vec![(Value::from("first"), Value::from(self.first))];
        if let Some(s) = self.second {
            m.push((Value::from("second"), Value::from(s)));
        }
        Value::Map(m)
    }

    /// Parses the CBOR form; values must be exactly 32 bytes.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "prf values")?;
        let first = fixed::<32>(f.bytes("first")?, "prf first")?;
        let second = match f.opt_bytes("second")? {
            Some(b) => Some(fixed::<32>(b, "prf second")?),
            None => None,
        };
        Ok(Self { first, second })
    }
}

/// The `prf` extension input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrfInputs {
    /// Salts for whichever credential is used.
    pub eval: Option<PrfValues>,
    /// Salts per credential ID (getAssertion with an allowList only).
    pub eval_by_credential: Vec<(Vec<u8>, PrfValues)>,
}

impl PrfInputs {
    /// The salts that apply to `credential_id`: its own entry, else `eval`.
    pub fn for_credential(&self, credential_id: &[u8]) -> Option<&PrfValues> {
        self.eval_by_credential
            .iter()
            .find(|(id, _)| id == credential_id)
            .map(|(_, v)| v)
            .or(self.eval.as_ref())
    }

    /// CBOR form.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(e) = &self.eval {
            m.push((Value::from("eval"), e.to_value()));
        }
        if !self.eval_by_credential.is_empty() {
            m.push((
                Value::from("evalByCredential"),
                Value::Map(
                    self.eval_by_credential
                        .iter()
                        .map(|(id, v)| (Value::from(id.clone()), v.to_value()))
                        .collect(),
                ),
            ));
        }
        Value::Map(m)
    }

    /// Parses the CBOR form. As Chromium's phone does, `evalByCredential` keys must be
    /// non-empty byte strings.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "prf input")?;
        let eval = match f.get("eval") {
            Some(e) => Some(PrfValues::from_value(e)?),
            None => None,
        };
        let mut eval_by_credential = Vec::new();
        if let Some(by) = f.opt_map("evalByCredential", "prf evalByCredential")? {
            if by.entries().len() > crate::types::MAX_CREDENTIAL_LIST_LEN {
                return Err(CtapError::new(
                    crate::StatusCode::CTAP2_ERR_LIMIT_EXCEEDED,
                    "too many evalByCredential entries",
                ));
            }
            for (k, v) in by.entries() {
                let id = k.as_bytes().filter(|b| !b.is_empty()).ok_or_else(|| {
                    CtapError::unexpected_type("evalByCredential keys must be credential IDs")
                })?;
                eval_by_credential.push((id.to_vec(), PrfValues::from_value(v)?));
            }
        }
        Ok(Self {
            eval,
            eval_by_credential,
        })
    }
}

/// The `prf` extension output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrfOutputs {
    /// At registration: whether the credential supports PRF.
    pub enabled: Option<bool>,
    /// The evaluated PRF values.
    pub results: Option<PrfValues>,
}

impl PrfOutputs {
    /// CBOR form.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(e) = self.enabled {
            m.push((Value::from("enabled"), Value::from(e)));
        }
        if let Some(r) = &self.results {
            m.push((Value::from("results"), r.to_value()));
        }
        Value::Map(m)
    }

    /// Parses the CBOR form.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "prf output")?;
        Ok(Self {
            enabled: f.opt_bool("enabled")?,
            results: match f.get("results") {
                Some(r) => Some(PrfValues::from_value(r)?),
                None => None,
            },
        })
    }
}

/// Unsigned extension outputs (makeCredential key 6, getAssertion key 8).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnsignedExtensionOutputs {
    /// `prf`.
    pub prf: Option<PrfOutputs>,
}

impl UnsignedExtensionOutputs {
    /// Whether there is nothing to send (the member is then omitted).
    pub fn is_empty(&self) -> bool {
        self.prf.is_none()
    }

    /// CBOR form.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(p) = &self.prf {
            m.push((Value::from(PRF), p.to_value()));
        }
        Value::Map(m)
    }

    /// Parses the CBOR form; unknown extensions are ignored.
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "unsignedExtensionOutputs")?;
        Ok(Self {
            prf: match f.get(PRF) {
                Some(p) => Some(PrfOutputs::from_value(p)?),
                None => None,
            },
        })
    }
}

/// Computes PRF outputs: `HMAC-SHA256(cred_random, salt)` for each salt.
pub fn evaluate_prf(cred_random: &[u8; 32], salts: &PrfValues) -> PrfValues {
    use hmac::{Hmac, Mac};
    let one = |salt: &[u8; 32]| -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(cred_random) {
            Ok(m) => m,
            Err(_) => return [0u8; 32],
        };
        mac.update(salt);
        mac.finalize().into_bytes().into()
    };
    PrfValues {
        first: one(&salts.first),
        second: salts.second.as_ref().map(one),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_includes_nul_separator() {
        let mut h = Sha256::new();
        h.update(b"WebAuthn PRF");
        h.update([0u8]);
        h.update(b"abc");
        let expect: [u8; 32] = h.finalize().into();
        assert_eq!(prf_salt(b"abc"), expect);
        assert_ne!(prf_salt(b"abc"), prf_salt(b"abd"));
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2 uses a short key; check our wrapper against a direct HMAC.
        use hmac::{Hmac, Mac};
        let key = [0x0b; 32];
        let salts = PrfValues {
            first: [1; 32],
            second: Some([2; 32]),
        };
        let out = evaluate_prf(&key, &salts);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        m.update(&[1; 32]);
        let first: [u8; 32] = m.finalize().into_bytes().into();
        assert_eq!(out.first, first);
        assert_ne!(out.second, Some(first));
    }

    #[test]
    fn inputs_round_trip_and_select() {
        let p = PrfInputs {
            eval: Some(PrfValues {
                first: [1; 32],
                second: None,
            }),
            eval_by_credential: vec![(
                vec![9, 9],
                PrfValues {
                    first: [2; 32],
                    second: Some([3; 32]),
                },
            )],
        };
        let back = PrfInputs::from_value(&p.to_value()).unwrap();
        assert_eq!(back, p);
        assert_eq!(p.for_credential(&[9, 9]).unwrap().first, [2; 32]);
        assert_eq!(p.for_credential(&[1]).unwrap().first, [1; 32]);
        let short = Value::map([(
            Value::from("eval"),
            Value::map([(Value::from("first"), Value::from(vec![0u8; 31]))]),
        )]);
        assert_eq!(PrfInputs::from_value(&short).unwrap_err().status.0, 0x03);
    }
}

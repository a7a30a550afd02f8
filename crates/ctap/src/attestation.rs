//! Attestation statements and the WebAuthn attestation object (WebAuthn §6.5, §8.2, §8.7).

use hybridge_cbor::{Value, encode};

use crate::fields::Fields;
use crate::status::CtapError;

/// An attestation statement with its format.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum AttestationStatement {
    /// `"none"`: `attStmt` is the empty map.
    #[default]
    None,
    /// `"packed"`. Without `x5c` it is self attestation: `sig` is made with the credential's
    /// own private key over `authenticatorData || clientDataHash`.
    Packed {
        /// COSE algorithm of `sig`.
        alg: i64,
        /// The signature (DER-encoded ECDSA for ES256).
        sig: Vec<u8>,
        /// Attestation certificate chain; empty for self attestation.
        x5c: Vec<Vec<u8>>,
    },
    /// Any other format, kept as received.
    Other {
        /// The format identifier.
        fmt: String,
        /// The statement.
        stmt: Value,
    },
}

impl AttestationStatement {
    /// The format identifier.
    pub fn fmt(&self) -> &str {
        match self {
            AttestationStatement::None => "none",
            AttestationStatement::Packed { .. } => "packed",
            AttestationStatement::Other { fmt, .. } => fmt,
        }
    }

    /// The `attStmt` CBOR map.
    pub fn to_value(&self) -> Value {
        match self {
            AttestationStatement::None => Value::Map(Vec::new()),
            AttestationStatement::Packed { alg, sig, x5c } => {
                let mut m = vec![
                    (Value::from("alg"), Value::from(*alg)),
                    (Value::from("sig"), Value::from(sig.clone())),
                ];
                if !x5c.is_empty() {
                    m.push((
                        Value::from("x5c"),
                        Value::array(x5c.iter().map(|c| Value::from(c.clone()))),
                    ));
                }
                Value::Map(m)
            }
            AttestationStatement::Other { stmt, .. } => stmt.clone(),
        }
    }

    /// Reads `attStmt` for format `fmt`.
    pub fn from_value(fmt: &str, stmt: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(stmt, "attStmt")?;
        match fmt {
            "none" => {
                if !f.entries().is_empty() {
                    return Err(CtapError::invalid_parameter(
                        "\"none\" attStmt must be empty",
                    ));
                }
                Ok(AttestationStatement::None)
            }
            "packed" => {
                let alg = f.int("alg")?;
                let sig = f.bytes("sig")?.to_vec();
                let x5c = match f.opt_array("x5c")? {
                    None => Vec::new(),
                    Some(items) => items
                        .iter()
                        .map(|c| {
                            c.as_bytes().map(<[u8]>::to_vec).ok_or_else(|| {
                                CtapError::unexpected_type("x5c entries must be byte strings")
                            })
                        })
                        .collect::<Result<_, _>>()?,
                };
                Ok(AttestationStatement::Packed { alg, sig, x5c })
            }
            other => Ok(AttestationStatement::Other {
                fmt: other.to_owned(),
                stmt: stmt.clone(),
            }),
        }
    }
}

/// The WebAuthn attestation object, `{"fmt", "attStmt", "authData"}`, canonically encoded: the
/// bytes a client puts in `AuthenticatorAttestationResponse.attestationObject`.
pub fn attestation_object(auth_data: &[u8], statement: &AttestationStatement) -> Vec<u8> {
    encode(&Value::map([
        (Value::from("fmt"), Value::from(statement.fmt())),
        (Value::from("attStmt"), statement.to_value()),
        (Value::from("authData"), Value::from(auth_data)),
    ]))
}

/// Splits an attestation object into authenticator data and statement.
pub fn parse_attestation_object(
    bytes: &[u8],
) -> Result<(Vec<u8>, AttestationStatement), CtapError> {
    let v = hybridge_cbor::decode(bytes)?;
    let f = Fields::new(&v, "attestation object")?;
    let fmt = f.text("fmt")?;
    let stmt = AttestationStatement::from_value(fmt, f.required("attStmt")?)?;
    Ok((f.bytes("authData")?.to_vec(), stmt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_round_trip() {
        for st in [
            AttestationStatement::None,
            AttestationStatement::Packed {
                alg: -7,
                sig: vec![0x30, 1, 2],
                x5c: vec![],
            },
            AttestationStatement::Packed {
                alg: -7,
                sig: vec![0x30],
                x5c: vec![vec![1], vec![2]],
            },
        ] {
            let obj = attestation_object(&[7; 37], &st);
            let (ad, st2) = parse_attestation_object(&obj).unwrap();
            assert_eq!(ad, vec![7; 37]);
            assert_eq!(st2, st);
        }
        // Canonical order: "fmt" (3) < "attStmt" (7) < "authData" (8).
        let obj = attestation_object(&[], &AttestationStatement::None);
        assert_eq!(&obj[..5], &[0xa3, 0x63, b'f', b'm', b't']);
    }
}

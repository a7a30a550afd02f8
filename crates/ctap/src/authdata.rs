//! Authenticator data (WebAuthn §6.1): `rpIdHash(32) || flags(1) || signCount(4, BE) ||
//! [attestedCredentialData] || [extensions]`, and the COSE ES256 public key inside it.

use hybridge_cbor::{Value, decode_prefix, encode};
use sha2::{Digest, Sha256};

use crate::fields::Fields;
use crate::status::CtapError;

/// SHA-256 of the RP ID, the first 32 bytes of authenticator data.
pub fn rp_id_hash(rp_id: &str) -> [u8; 32] {
    Sha256::digest(rp_id.as_bytes()).into()
}

/// The flags byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    /// User present.
    pub const UP: u8 = 0x01;
    /// User verified.
    pub const UV: u8 = 0x04;
    /// Backup eligible.
    pub const BE: u8 = 0x08;
    /// Backed up.
    pub const BS: u8 = 0x10;
    /// Attested credential data included.
    pub const AT: u8 = 0x40;
    /// Extension data included.
    pub const ED: u8 = 0x80;

    /// Whether every bit of `bit` is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit == bit
    }

    /// User present.
    pub fn up(self) -> bool {
        self.has(Self::UP)
    }

    /// User verified.
    pub fn uv(self) -> bool {
        self.has(Self::UV)
    }

    /// Backup eligible.
    pub fn be(self) -> bool {
        self.has(Self::BE)
    }

    /// Backed up.
    pub fn bs(self) -> bool {
        self.has(Self::BS)
    }
}

/// A COSE_Key (RFC 9052) as credential public keys appear in attested credential data.
#[derive(Clone, Debug, PartialEq)]
pub enum CoseKey {
    /// EC2 key on P-256 for ES256: `{1: 2, 3: -7, -1: 1, -2: x, -3: y}`.
    Es256 {
        /// Affine x coordinate, big-endian.
        x: [u8; 32],
        /// Affine y coordinate, big-endian.
        y: [u8; 32],
    },
    /// Any other key, kept as CBOR.
    Other(Value),
}

impl CoseKey {
    /// An ES256 key from its SEC1 uncompressed encoding `04 || x || y`.
    pub fn es256_from_sec1(point: &[u8]) -> Option<Self> {
        if point.len() != 65 || point[0] != 0x04 {
            return None;
        }
        let x = point[1..33].try_into().ok()?;
        let y = point[33..65].try_into().ok()?;
        Some(CoseKey::Es256 { x, y })
    }

    /// The SEC1 uncompressed encoding of an ES256 key.
    pub fn to_sec1(&self) -> Option<[u8; 65]> {
        match self {
            CoseKey::Es256 { x, y } => {
                let mut out = [0u8; 65];
                out[0] = 0x04;
                out[1..33].copy_from_slice(x);
                out[33..].copy_from_slice(y);
                Some(out)
            }
            CoseKey::Other(_) => None,
        }
    }

    /// CBOR form.
    pub fn to_value(&self) -> Value {
        match self {
            CoseKey::Es256 { x, y } => Value::map([
                (Value::from(1), Value::from(2)),
                (Value::from(3), Value::from(-7)),
                (Value::from(-1), Value::from(1)),
                (Value::from(-2), Value::from(x)),
                (Value::from(-3), Value::from(y)),
            ]),
            CoseKey::Other(v) => v.clone(),
        }
    }

    /// Reads a COSE key; EC2/P-256/ES256 becomes [`CoseKey::Es256`], anything else that is a
    /// map is kept as [`CoseKey::Other`].
    pub fn from_value(v: &Value) -> Result<Self, CtapError> {
        let f = Fields::new(v, "COSE key")?;
        let es256 = f.opt_int(1).ok().flatten() == Some(2)
            && f.opt_int(3).ok().flatten() == Some(-7)
            && f.opt_int(-1).ok().flatten() == Some(1)
            && f.entries().len() == 5;
        if es256 {
            let x = crate::fields::fixed::<32>(f.bytes(-2)?, "COSE key x")?;
            let y = crate::fields::fixed::<32>(f.bytes(-3)?, "COSE key y")?;
            return Ok(CoseKey::Es256 { x, y });
        }
        Ok(CoseKey::Other(v.clone()))
    }
}

/// Attested credential data: AAGUID, credential ID and public key.
#[derive(Clone, Debug, PartialEq)]
pub struct AttestedCredentialData {
    /// The authenticator model's AAGUID.
    pub aaguid: [u8; 16],
    /// The new credential's ID (at most 1023 bytes).
    pub credential_id: Vec<u8>,
    /// The new credential's public key.
    pub public_key: CoseKey,
}

/// Authenticator data, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthenticatorData {
    /// SHA-256 of the RP ID.
    pub rp_id_hash: [u8; 32],
    /// Flags. [`AuthenticatorData::to_bytes`] sets AT and ED from the fields below, so they
    /// always tell the truth about what follows.
    pub flags: Flags,
    /// Signature counter.
    pub sign_count: u32,
    /// Present on registration.
    pub attested_credential_data: Option<AttestedCredentialData>,
    /// Authenticator extension outputs (a CBOR map), if any.
    pub extensions: Option<Value>,
}

impl AuthenticatorData {
    /// Serialises, setting AT and ED to match the optional parts.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut flags = self.flags.0 & !(Flags::AT | Flags::ED);
        if self.attested_credential_data.is_some() {
            flags |= Flags::AT;
        }
        if self.extensions.is_some() {
            flags |= Flags::ED;
        }
        let mut out = Vec::with_capacity(37 + 200);
        out.extend_from_slice(&self.rp_id_hash);
        out.push(flags);
        out.extend_from_slice(&self.sign_count.to_be_bytes());
        if let Some(acd) = &self.attested_credential_data {
            out.extend_from_slice(&acd.aaguid);
            // Credential IDs are at most 1023 bytes (WebAuthn), so this never truncates for
            // data we build; a longer ID from a caller is clamped rather than mis-framed.
            let len = u16::try_from(acd.credential_id.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&acd.credential_id[..usize::from(len)]);
            out.extend_from_slice(&encode(&acd.public_key.to_value()));
        }
        if let Some(ext) = &self.extensions {
            out.extend_from_slice(&encode(ext));
        }
        out
    }

    /// Parses authenticator data strictly: the AT and ED flags must match what follows, and
    /// nothing may trail it.
    pub fn parse(bytes: &[u8]) -> Result<Self, CtapError> {
        let bad =
            |why: &'static str| CtapError::invalid_parameter(format!("authenticator data: {why}"));
        if bytes.len() < 37 {
            return Err(bad("shorter than 37 bytes"));
        }
        let rp_id_hash: [u8; 32] = bytes[..32].try_into().map_err(|_| bad("rpIdHash"))?;
        let flags = Flags(bytes[32]);
        let sign_count =
            u32::from_be_bytes(bytes[33..37].try_into().map_err(|_| bad("signCount"))?);
        let mut rest = &bytes[37..];
        let attested_credential_data = if flags.has(Flags::AT) {
            if rest.len() < 18 {
                return Err(bad("attested credential data is truncated"));
            }
            let aaguid: [u8; 16] = rest[..16].try_into().map_err(|_| bad("aaguid"))?;
            let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            rest = &rest[18..];
            if rest.len() < len {
                return Err(bad("credential ID is truncated"));
            }
            let credential_id = rest[..len].to_vec();
            rest = &rest[len..];
            let (key, used) =
                decode_prefix(rest).map_err(|_| bad("credential public key is not CBOR"))?;
            rest = &rest[used..];
            Some(AttestedCredentialData {
                aaguid,
                credential_id,
                public_key: CoseKey::from_value(&key)?,
            })
        } else {
            None
        };
        let extensions = if flags.has(Flags::ED) {
            let (ext, used) = decode_prefix(rest).map_err(|_| bad("extensions are not CBOR"))?;
            if !ext.is_map() {
                return Err(bad("extensions are not a map"));
            }
            rest = &rest[used..];
            Some(ext)
        } else {
            None
        };
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(Self {
            rp_id_hash,
            flags,
            sign_count,
            attested_credential_data,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuthenticatorData {
        AuthenticatorData {
            rp_id_hash: rp_id_hash("example.com"),
            flags: Flags(Flags::UP | Flags::UV),
            sign_count: 7,
            attested_credential_data: Some(AttestedCredentialData {
                aaguid: [9; 16],
                credential_id: vec![1, 2, 3],
                public_key: CoseKey::Es256 {
                    x: [4; 32],
                    y: [5; 32],
                },
            }),
            extensions: Some(Value::map([(
                Value::from("hmac-secret"),
                Value::from(true),
            )])),
        }
    }

    #[test]
    fn round_trip_sets_at_and_ed() {
        let a = sample();
        let bytes = a.to_bytes();
        assert_eq!(bytes[32], Flags::UP | Flags::UV | Flags::AT | Flags::ED);
        assert_eq!(&bytes[33..37], &[0, 0, 0, 7]);
        let b = AuthenticatorData::parse(&bytes).unwrap();
        assert_eq!(b.flags.0, bytes[32]);
        assert_eq!(b.to_bytes(), bytes);
        assert_eq!(b.attested_credential_data, a.attested_credential_data);
    }

    #[test]
    fn rejects_trailing_and_truncated() {
        let mut bytes = sample().to_bytes();
        bytes.push(0);
        assert!(AuthenticatorData::parse(&bytes).is_err());
        bytes.truncate(bytes.len() - 3);
        assert!(AuthenticatorData::parse(&bytes).is_err());
        assert!(AuthenticatorData::parse(&[0; 36]).is_err());
        let plain = AuthenticatorData::parse(&[0; 37]).unwrap();
        assert!(plain.attested_credential_data.is_none() && plain.extensions.is_none());
    }

    #[test]
    fn cose_key_is_canonical() {
        let k = CoseKey::Es256 {
            x: [1; 32],
            y: [2; 32],
        };
        let bytes = encode(&k.to_value());
        // {1: 2, 3: -7, -1: 1, -2: x, -3: y} in canonical order.
        assert_eq!(&bytes[..7], &[0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01]);
        assert_eq!(
            CoseKey::from_value(&hybridge_cbor::decode(&bytes).unwrap()).unwrap(),
            k
        );
        let sec1 = k.to_sec1().unwrap();
        assert_eq!(CoseKey::es256_from_sec1(&sec1), Some(k));
    }
}

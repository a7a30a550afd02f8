//! Linking data (docs/protocol.md §8.5): what a phone gives a desktop so that later sessions can start
//! without a QR code, its handshake signature, and the client payload of `/cable/contact`.

use hmac::{Hmac, Mac};
use hybridge_cbor::Value;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::keys;
use crate::qr::RequestType;
use crate::secret::LinkSecret;
use crate::{Error, InvalidMessage};

/// Length of a pairing ("link") ID (`kPairingIDSize`).
pub const LINK_ID_LEN: usize = 8;
/// Length of the client nonce in the client payload; salts the linked EID key.
pub const CLIENT_NONCE_LEN: usize = 16;

/// `HMAC-SHA256(key = ECDH_x(private, peer), msg = handshake_hash)` — the phone signs with its
/// identity key and the desktop's QR key; the desktop verifies with the reverse pair.
pub fn handshake_signature(
    private: &SecretKey,
    peer: &PublicKey,
    handshake_hash: &[u8; 32],
) -> [u8; 32] {
    let shared = keys::ecdh_x(private, peer);
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(shared.expose()).unwrap_or_else(|_| unreachable!());
    mac.update(handshake_hash);
    mac.finalize().into_bytes().into()
}

/// The linking map a phone sends (in an update message, or the legacy post-handshake key 2).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkingInfo {
    /// Key 1: contact ID for `/cable/contact/` (Google: the FCM token).
    pub contact_id: Vec<u8>,
    /// Key 2: pairing ID, echoed in the client payload.
    pub link_id: Vec<u8>,
    /// Key 3: the link secret.
    pub link_secret: LinkSecret,
    /// Key 4: the phone's identity key (`s_p` of NKpsk0).
    pub authenticator_public_key: PublicKey,
    /// Key 5: display name.
    pub authenticator_name: String,
    /// Key 6: the handshake signature.
    pub handshake_signature: [u8; 32],
    /// Key 999: Google Play Services marks its linking data with `true`.
    pub from_play_services: bool,
}

impl LinkingInfo {
    /// Phone side: linking data for this session, signed over `handshake_hash` with the phone's
    /// identity key against the desktop's QR key.
    pub fn new_signed(
        contact_id: Vec<u8>,
        link_id: Vec<u8>,
        link_secret: LinkSecret,
        identity: &SecretKey,
        desktop_qr_key: &PublicKey,
        authenticator_name: String,
        handshake_hash: &[u8; 32],
    ) -> Self {
        Self {
            contact_id,
            link_id,
            link_secret,
            authenticator_public_key: identity.public_key(),
            authenticator_name,
            handshake_signature: handshake_signature(identity, desktop_qr_key, handshake_hash),
            from_play_services: false,
        }
    }

    /// Desktop side: checks the signature with the QR identity private key, in constant time.
    /// Only linking data received in a QR session can be verified (and should be kept).
    pub fn verify(&self, qr_identity: &SecretKey, handshake_hash: &[u8; 32]) -> Result<(), Error> {
        let expected =
            handshake_signature(qr_identity, &self.authenticator_public_key, handshake_hash);
        if bool::from(expected.ct_eq(&self.handshake_signature)) {
            Ok(())
        } else {
            Err(Error::BadLinkingSignature)
        }
    }

    /// The CBOR map.
    pub fn to_cbor(&self) -> Value {
        let mut m: Vec<(Value, Value)> = vec![
            (1u8.into(), self.contact_id.clone().into()),
            (2u8.into(), self.link_id.clone().into()),
            (3u8.into(), self.link_secret.expose().to_vec().into()),
            (
                4u8.into(),
                keys::uncompressed(&self.authenticator_public_key).into(),
            ),
            (5u8.into(), self.authenticator_name.as_str().into()),
            (6u8.into(), self.handshake_signature.into()),
        ];
        if self.from_play_services {
            m.push((999u16.into(), true.into()));
        }
        Value::Map(m)
    }

    /// Parses a linking map; unknown keys are ignored.
    pub fn from_cbor(v: &Value) -> Result<Self, Error> {
        if !v.is_map() {
            return Err(InvalidMessage::Field("linking data is not a CBOR map").into());
        }
        let bytes = |k: u8, what: &'static str| {
            v.get(k)
                .and_then(Value::as_bytes)
                .ok_or(InvalidMessage::Field(what))
        };
        let contact_id = bytes(1, "linking key 1 (contact ID) must be a byte string")?.to_vec();
        let link_id = bytes(2, "linking key 2 (link ID) must be a byte string")?.to_vec();
        let link_secret = LinkSecret::from_slice(bytes(
            3,
            "linking key 3 (link secret) must be a byte string",
        )?)
        .ok_or(InvalidMessage::Field(
            "linking key 3 (link secret) must be 32 bytes",
        ))?;
        let pk = bytes(4, "linking key 4 (public key) must be a byte string")?;
        if pk.len() != keys::UNCOMPRESSED_LEN {
            return Err(
                InvalidMessage::Field("linking key 4 (public key) must be 65 bytes").into(),
            );
        }
        let authenticator_public_key = keys::parse_public(pk)?;
        let authenticator_name = v
            .get(5u8)
            .and_then(Value::as_text)
            .ok_or(InvalidMessage::Field(
                "linking key 5 (name) must be a string",
            ))?
            .to_owned();
        let handshake_signature: [u8; 32] =
            bytes(6, "linking key 6 (signature) must be a byte string")?
                .try_into()
                .map_err(|_| InvalidMessage::Field("linking key 6 (signature) must be 32 bytes"))?;
        let from_play_services = v.get(999u16).and_then(Value::as_bool).unwrap_or(false);
        Ok(Self {
            contact_id,
            link_id,
            link_secret,
            authenticator_public_key,
            authenticator_name,
            handshake_signature,
            from_play_services,
        })
    }
}

/// The `X-caBLE-Client-Payload` of `/cable/contact` (docs/protocol.md §6.2): hex of
/// `{1: link ID, 2: client nonce, 3: "ga" | "mc"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPayload {
    /// The link ID from the linking data.
    pub link_id: Vec<u8>,
    /// A fresh nonce; it salts the linked EID key.
    pub client_nonce: [u8; CLIENT_NONCE_LEN],
    /// The request hint (only `ga` and `mc` are sent; others become `ga`).
    pub request_type: RequestType,
}

impl ClientPayload {
    /// A payload with a fresh nonce from `rng`.
    pub fn new(
        rng: &mut impl rand_core::CryptoRngCore,
        link_id: Vec<u8>,
        request_type: RequestType,
    ) -> Self {
        let mut client_nonce = [0u8; CLIENT_NONCE_LEN];
        rng.fill_bytes(&mut client_nonce);
        Self {
            link_id,
            client_nonce,
            request_type,
        }
    }

    /// Canonical CBOR bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let rt = match self.request_type {
            RequestType::MakeCredential => "mc",
            _ => "ga",
        };
        hybridge_cbor::encode(&Value::map([
            (Value::from(1u8), Value::from(self.link_id.clone())),
            (Value::from(2u8), Value::from(self.client_nonce)),
            (Value::from(3u8), Value::from(rt)),
        ]))
    }

    /// The header value: upper-case hex, as Chromium writes it.
    pub fn to_header_value(&self) -> String {
        hex::encode_upper(self.to_bytes())
    }

    /// Parses a header value (hex in either case).
    pub fn from_header_value(value: &str) -> Result<Self, Error> {
        if value.len() > 2048 {
            return Err(InvalidMessage::Field("client payload is too long").into());
        }
        let bytes = hex::decode(value.trim())
            .map_err(|_| InvalidMessage::Field("client payload is not hex"))?;
        Self::from_bytes(&bytes)
    }

    /// Parses the CBOR bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let v = hybridge_cbor::decode(bytes)?;
        let link_id = v
            .get(1u8)
            .and_then(Value::as_bytes)
            .ok_or(InvalidMessage::Field(
                "client payload key 1 (link ID) must be a byte string",
            ))?
            .to_vec();
        let client_nonce = v
            .get(2u8)
            .and_then(Value::as_bytes)
            .and_then(|b| <[u8; CLIENT_NONCE_LEN]>::try_from(b).ok())
            .ok_or(InvalidMessage::Field(
                "client payload key 2 (nonce) must be 16 bytes",
            ))?;
        let request_type = v
            .get(3u8)
            .and_then(Value::as_text)
            .map(RequestType::from_wire)
            .unwrap_or_default();
        Ok(Self {
            link_id,
            client_nonce,
            request_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signature_vector() {
        // docs/protocol.md §10.8 [computed]: identity seeds 00×32 and 01‖00×31, handshake hash 01‖00×31.
        let a = keys::from_seed(&[0u8; 32]).unwrap();
        let mut s1 = [0u8; 32];
        s1[0] = 1;
        let b = keys::from_seed(&s1).unwrap();
        let mut hh = [0u8; 32];
        hh[0] = 1;
        let sig = handshake_signature(&a, &b.public_key(), &hh);
        assert_eq!(
            hex::encode(sig),
            "23ce5926ee9e99d4d65b3e8a54d2764a16dcda691320aefab75bce15be5a9399"
        );
        assert_eq!(handshake_signature(&b, &a.public_key(), &hh), sig);
    }

    fn sample(hh: &[u8; 32], desktop: &SecretKey) -> LinkingInfo {
        let phone = keys::from_seed(&[9; 32]).unwrap();
        LinkingInfo::new_signed(
            b"fcm-token".to_vec(),
            vec![1; 8],
            LinkSecret::new([3; 32]),
            &phone,
            &desktop.public_key(),
            "Pixel".into(),
            hh,
        )
    }

    #[test]
    fn generate_verify_round_trip() {
        let desktop = keys::from_seed(&[8; 32]).unwrap();
        let hh = [5u8; 32];
        let l = sample(&hh, &desktop);
        l.verify(&desktop, &hh).unwrap();
        assert_eq!(
            l.verify(&desktop, &[6; 32]),
            Err(Error::BadLinkingSignature)
        );
        assert_eq!(
            l.verify(&keys::from_seed(&[7; 32]).unwrap(), &hh),
            Err(Error::BadLinkingSignature)
        );
        let parsed = LinkingInfo::from_cbor(
            &hybridge_cbor::decode(&hybridge_cbor::encode(&l.to_cbor())).unwrap(),
        )
        .unwrap();
        assert_eq!(parsed, l);
        assert!(!format!("{l:?}").contains("[3, 3"));
    }

    #[test]
    fn gms_tag_and_bad_maps() {
        let desktop = keys::from_seed(&[8; 32]).unwrap();
        let mut l = sample(&[0; 32], &desktop);
        l.from_play_services = true;
        let v = l.to_cbor();
        assert!(LinkingInfo::from_cbor(&v).unwrap().from_play_services);
        let Value::Map(mut m) = v else { unreachable!() };
        m.retain(|(k, _)| k.as_int() != Some(5));
        assert!(LinkingInfo::from_cbor(&Value::Map(m.clone())).is_err());
        m.push((5u8.into(), 5u8.into()));
        assert!(LinkingInfo::from_cbor(&Value::Map(m)).is_err());
        assert!(LinkingInfo::from_cbor(&Value::from(1u8)).is_err());
    }

    #[test]
    fn client_payload() {
        let p = ClientPayload {
            link_id: vec![1; 8],
            client_nonce: [2; 16],
            request_type: RequestType::MakeCredential,
        };
        let h = p.to_header_value();
        assert!(h.starts_with("A3"));
        assert_eq!(ClientPayload::from_header_value(&h).unwrap(), p);
        assert_eq!(
            ClientPayload::from_header_value(&h.to_ascii_lowercase()).unwrap(),
            p
        );
        assert!(ClientPayload::from_header_value("zz").is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(v) = hybridge_cbor::decode(&b) {
                let _ = LinkingInfo::from_cbor(&v);
            }
            let _ = ClientPayload::from_bytes(&b);
            let _ = ClientPayload::from_header_value(&hex::encode(&b));
        }
    }
}

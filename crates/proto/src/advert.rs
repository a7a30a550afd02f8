//! The BLE advert (docs/protocol.md §4): a 16-byte plaintext (reserved byte, nonce, routing ID, domain ID)
//! encrypted with one AES-256 block and authenticated with a 4-byte truncated HMAC-SHA256 tag,
//! sent as 20 bytes of service data under UUID `0xFFF9` (or Apple's `0xFDE2`).
//!
//! CTAP 2.3 may append a CBOR map after the 20 bytes; we accept and parse it (Chromium drops
//! such adverts, docs/protocol.md §11.6).

use aes::Aes256;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use hybridge_cbor::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain;
use crate::secret::EidKey;
use crate::tunnel::RoutingId;
use crate::{Error, InvalidMessage};

/// 16-bit UUID of the FIDO hybrid service (`0000fff9-0000-1000-8000-00805f9b34fb`).
pub const FIDO_UUID16: u16 = 0xFFF9;
/// Google's legacy 16-bit UUID, which iOS uses for its adverts (`0000fde2-…`).
pub const GOOGLE_UUID16: u16 = 0xFDE2;
/// Both UUIDs a scanner must accept, in Chromium's lookup order.
pub const UUIDS16: [u16; 2] = [GOOGLE_UUID16, FIDO_UUID16];
/// The full 128-bit form of [`FIDO_UUID16`].
pub const FIDO_UUID128: &str = "0000fff9-0000-1000-8000-00805f9b34fb";
/// The full 128-bit form of [`GOOGLE_UUID16`].
pub const GOOGLE_UUID128: &str = "0000fde2-0000-1000-8000-00805f9b34fb";
/// Length of an encrypted advert (`kAdvertSize`).
pub const ADVERT_LEN: usize = 20;
/// Length of the advert plaintext (one AES block).
pub const PLAINTEXT_LEN: usize = 16;
/// Length of the advert nonce (`kNonceSize`).
pub const NONCE_LEN: usize = 10;
/// CTAP 2.3 data-channel ID of BLE L2CAP in the advert suffix and QR key 6.
pub const CHANNEL_L2CAP: u64 = 1;

/// The fields of a decrypted advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertPlaintext {
    /// Random nonce; it salts the PSK.
    pub nonce: [u8; NONCE_LEN],
    /// The routing ID the phone got from its tunnel server.
    pub routing_id: RoutingId,
    /// The tunnel-server domain ID (docs/protocol.md §5).
    pub domain_id: u16,
}

impl AdvertPlaintext {
    /// A QR-flow plaintext with a fresh nonce from `rng`.
    pub fn new(
        rng: &mut impl rand_core::CryptoRngCore,
        routing_id: RoutingId,
        domain_id: u16,
    ) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        Self {
            nonce,
            routing_id,
            domain_id,
        }
    }

    /// A linked-flow plaintext: routing ID and domain carry no meaning there, so Chromium fills
    /// them randomly — which makes Chromium desktops drop ~0.4 % of adverts whose random
    /// domain lands in 2–255 (docs/protocol.md §11.7). We randomise nonce and routing ID but write the
    /// valid domain ID 0.
    pub fn linked(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut b = [0u8; NONCE_LEN + 3];
        rng.fill_bytes(&mut b);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&b[..NONCE_LEN]);
        Self {
            nonce,
            routing_id: RoutingId([b[10], b[11], b[12]]),
            domain_id: 0,
        }
    }

    /// The 16-byte plaintext: `00 ‖ nonce ‖ routing ID ‖ LE16(domain)`.
    pub fn to_bytes(&self) -> [u8; PLAINTEXT_LEN] {
        let mut b = [0u8; PLAINTEXT_LEN];
        b[1..11].copy_from_slice(&self.nonce);
        b[11..14].copy_from_slice(&self.routing_id.0);
        b[14..16].copy_from_slice(&self.domain_id.to_le_bytes());
        b
    }

    /// Splits a plaintext into fields; the reserved byte must be zero.
    pub fn from_bytes(b: &[u8; PLAINTEXT_LEN]) -> Result<Self, Error> {
        if b[0] != 0 {
            return Err(Error::AdvertReservedBits);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&b[1..11]);
        Ok(Self {
            nonce,
            routing_id: RoutingId([b[11], b[12], b[13]]),
            domain_id: u16::from_le_bytes([b[14], b[15]]),
        })
    }
}

fn aes(key: &EidKey) -> Aes256 {
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&key.expose()[..32]);
    Aes256::new(&(*k).into())
}

fn tag(key: &EidKey, ct: &[u8]) -> [u8; 4] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.expose()[32..])
        .unwrap_or_else(|_| unreachable!());
    mac.update(ct);
    let full = mac.finalize().into_bytes();
    [full[0], full[1], full[2], full[3]]
}

/// Encrypts a plaintext into the 20-byte advert: `AES-256(k[0..32], pt) ‖ HMAC(k[32..], ct)[..4]`.
pub fn encrypt(key: &EidKey, plaintext: &[u8; PLAINTEXT_LEN]) -> [u8; ADVERT_LEN] {
    let cipher = aes(key);
    let mut block = aes::Block::from(*plaintext);
    cipher.encrypt_block(&mut block);
    let mut out = [0u8; ADVERT_LEN];
    out[..16].copy_from_slice(&block);
    let t = tag(key, &out[..16]);
    out[16..].copy_from_slice(&t);
    out
}

/// Checks the tag (in constant time) of the first 20 bytes of `service_data` and decrypts the
/// block. Returns the raw plaintext, reserved byte included, or `None` if the advert was not
/// made with this key (the normal case for other people's adverts) or is shorter than 20 bytes.
pub fn decrypt_raw(key: &EidKey, service_data: &[u8]) -> Option<[u8; PLAINTEXT_LEN]> {
    let advert = service_data.get(..ADVERT_LEN)?;
    let expected = tag(key, &advert[..16]);
    if !bool::from(expected.ct_eq(&advert[16..20])) {
        return None;
    }
    let cipher = aes(key);
    let mut ct = [0u8; PLAINTEXT_LEN];
    ct.copy_from_slice(&advert[..16]);
    let mut block = aes::Block::from(ct);
    cipher.decrypt_block(&mut block);
    let mut out = [0u8; PLAINTEXT_LEN];
    out.copy_from_slice(&block);
    Some(out)
}

/// Which tunnel-server domain IDs a decrypted advert may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainCheck {
    /// QR flow: hashed IDs, or assigned IDs below this count (docs/protocol.md §4.3 step 4).
    KnownAssigned(u16),
    /// Linked flow: the domain bytes are random on Chromium phones, so do not check them
    /// (docs/protocol.md §11.7).
    Skip,
}

/// The CTAP 2.3 suffix after the 20 advert bytes: a CBOR map `{channel ID → extra}`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AdvertSuffix {
    /// The L2CAP PSM under channel 1, if present and ≤ 0xFFFF.
    pub l2cap_psm: Option<u16>,
    /// Every entry, as sent, for callers that know more channels.
    pub entries: Vec<(Value, Value)>,
}

impl AdvertSuffix {
    /// A suffix offering BLE L2CAP on `psm`.
    pub fn l2cap(psm: u16) -> Self {
        Self {
            l2cap_psm: Some(psm),
            entries: vec![(Value::from(CHANNEL_L2CAP), Value::from(psm))],
        }
    }

    /// Parses the suffix bytes (strict CBOR, must be a map).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let v = hybridge_cbor::decode(bytes)?;
        let Value::Map(entries) = v else {
            return Err(InvalidMessage::Field("advert suffix is not a CBOR map").into());
        };
        let l2cap_psm = entries
            .iter()
            .find(|(k, _)| k.as_int() == Some(i128::from(CHANNEL_L2CAP)))
            .and_then(|(_, v)| v.as_int())
            .and_then(|p| u16::try_from(p).ok());
        Ok(Self { l2cap_psm, entries })
    }

    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        hybridge_cbor::encode(&Value::Map(self.entries.clone()))
    }
}

/// Service data to broadcast: the 20-byte advert, plus a CTAP 2.3 suffix only when one is
/// given (only when the QR code offered channel 1; docs/protocol.md §11.6).
pub fn service_data(advert: &[u8; ADVERT_LEN], suffix: Option<&AdvertSuffix>) -> Vec<u8> {
    let mut v = advert.to_vec();
    if let Some(s) = suffix {
        v.extend_from_slice(&s.to_bytes());
    }
    v
}

/// A successfully trial-decrypted advert.
#[derive(Clone, Debug, PartialEq)]
pub struct DecryptedAdvert {
    /// The raw 16-byte plaintext: the salt of the PSK (`kdf::psk`).
    pub plaintext: [u8; PLAINTEXT_LEN],
    /// Its fields.
    pub fields: AdvertPlaintext,
    /// The CTAP 2.3 suffix, when the service data was longer than 20 bytes and it parsed.
    /// The suffix is not authenticated; a malformed one is ignored, not fatal.
    pub suffix: Option<AdvertSuffix>,
}

/// Desktop side: trial-decrypts service data seen under [`FIDO_UUID16`] or [`GOOGLE_UUID16`].
///
/// Errors: [`Error::AdvertTooShort`], [`Error::AdvertNotForUs`] (tag mismatch: someone
/// else's advert — ignore it), [`Error::AdvertReservedBits`], [`Error::UnknownDomain`].
pub fn trial_decrypt(
    key: &EidKey,
    service_data: &[u8],
    check: DomainCheck,
) -> Result<DecryptedAdvert, Error> {
    if service_data.len() < ADVERT_LEN {
        return Err(Error::AdvertTooShort(service_data.len()));
    }
    let plaintext = decrypt_raw(key, service_data).ok_or(Error::AdvertNotForUs)?;
    let fields = AdvertPlaintext::from_bytes(&plaintext)?;
    if let DomainCheck::KnownAssigned(n) = check {
        if !domain::is_acceptable(fields.domain_id, n) {
            return Err(Error::UnknownDomain(fields.domain_id));
        }
    }
    let suffix = match &service_data[ADVERT_LEN..] {
        [] => None,
        rest => AdvertSuffix::parse(rest).ok(),
    };
    Ok(DecryptedAdvert {
        plaintext,
        fields,
        suffix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf;
    use crate::secret::QrSecret;
    use proptest::prelude::*;

    fn key() -> EidKey {
        kdf::eid_key(&QrSecret::new([0; 16]))
    }

    fn pt(domain_id: u16) -> AdvertPlaintext {
        AdvertPlaintext {
            nonce: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            routing_id: RoutingId([9, 10, 11]),
            domain_id,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let p = pt(266);
        let b = p.to_bytes();
        assert_eq!(hex::encode(b), "000102030405060708090a090a0b0a01");
        let adv = encrypt(&key(), &b);
        let d = trial_decrypt(&key(), &adv, DomainCheck::KnownAssigned(2)).unwrap();
        assert_eq!(d.fields, p);
        assert_eq!(d.plaintext, b);
        assert_eq!(d.suffix, None);
    }

    #[test]
    fn pinned_ciphertext() {
        // Regression pin of AES-256 + truncated HMAC with the QR secret 00×16.
        let adv = encrypt(&key(), &pt(0).to_bytes());
        assert_eq!(hex::encode(adv), PINNED_ADVERT);
    }
    // Cross-checked with Python `cryptography` (HKDF, AES-ECB, HMAC).
    const PINNED_ADVERT: &str = "0ddeabd38ee45c94ae57e5e5a796240e2fc6deac";

    #[test]
    fn rejects() {
        let k = key();
        let adv = encrypt(&k, &pt(0).to_bytes());
        let mut bad = adv;
        bad[19] ^= 1;
        assert_eq!(
            trial_decrypt(&k, &bad, DomainCheck::KnownAssigned(2)),
            Err(Error::AdvertNotForUs)
        );
        assert_eq!(
            trial_decrypt(&k, &adv[..19], DomainCheck::KnownAssigned(2)),
            Err(Error::AdvertTooShort(19))
        );
        let other = kdf::eid_key(&QrSecret::new([1; 16]));
        assert_eq!(
            trial_decrypt(&other, &adv, DomainCheck::Skip),
            Err(Error::AdvertNotForUs)
        );
        for (d, n, ok) in [
            (1, 1, false),
            (1, 2, true),
            (2, 2, false),
            (255, 2, false),
            (256, 0, true),
        ] {
            let adv = encrypt(&k, &pt(d).to_bytes());
            assert_eq!(
                trial_decrypt(&k, &adv, DomainCheck::KnownAssigned(n)).is_ok(),
                ok,
                "{d} {n}"
            );
            assert!(trial_decrypt(&k, &adv, DomainCheck::Skip).is_ok());
        }
        let mut reserved = pt(0).to_bytes();
        reserved[0] = 1;
        let adv = encrypt(&k, &reserved);
        assert_eq!(
            trial_decrypt(&k, &adv, DomainCheck::Skip),
            Err(Error::AdvertReservedBits)
        );
    }

    #[test]
    fn suffix_is_parsed() {
        let k = key();
        let adv = encrypt(&k, &pt(0).to_bytes());
        let sd = service_data(&adv, Some(&AdvertSuffix::l2cap(0x0081)));
        assert_eq!(&sd[20..], &[0xa1, 0x01, 0x18, 0x81]);
        let d = trial_decrypt(&k, &sd, DomainCheck::KnownAssigned(2)).unwrap();
        assert_eq!(d.suffix.unwrap().l2cap_psm, Some(0x81));
        // A broken suffix does not lose the advert.
        let mut sd2 = adv.to_vec();
        sd2.extend_from_slice(&[0xff, 0x00]);
        assert_eq!(
            trial_decrypt(&k, &sd2, DomainCheck::KnownAssigned(2))
                .unwrap()
                .suffix,
            None
        );
    }

    #[test]
    fn linked_plaintext_has_valid_domain() {
        let mut rng = rand_core::OsRng;
        for _ in 0..50 {
            let p = AdvertPlaintext::linked(&mut rng);
            assert_eq!(p.domain_id, 0);
            assert_eq!(p.to_bytes()[0], 0);
        }
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), n in any::<u16>()) {
            let _ = trial_decrypt(&key(), &data, DomainCheck::KnownAssigned(n));
        }

        #[test]
        fn round_trips(nonce in any::<[u8; 10]>(), r in any::<[u8; 3]>(), d in any::<u16>(), s in any::<[u8; 16]>()) {
            let k = kdf::eid_key(&QrSecret::new(s));
            let p = AdvertPlaintext { nonce, routing_id: RoutingId(r), domain_id: d };
            let got = trial_decrypt(&k, &encrypt(&k, &p.to_bytes()), DomainCheck::Skip).unwrap();
            prop_assert_eq!(got.fields, p);
        }
    }
}

//! Key derivation (docs/protocol.md §3): `Derive(secret, salt, purpose, L)` is HKDF-SHA256 with
//! `info = LE32(purpose)`; an empty salt means RFC 5869's default of 32 zero bytes.

use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::{EidKey, LinkSecret, Psk, QrSecret, Secret};
use crate::tunnel::TunnelId;

/// The `purpose` of a derivation, sent as `LE32` in HKDF's info (docs/protocol.md §3.1 table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    /// Advert (EID) key: 32-byte AES-256 key ‖ 32-byte HMAC key.
    EidKey = 1,
    /// Tunnel ID for `/cable/new` and `/cable/connect`.
    TunnelId = 2,
    /// The Noise pre-shared key, salted with the decrypted advert.
    Psk = 3,
    /// The link secret a phone hands out, salted with the pairing ID.
    PairedSecret = 4,
    /// Seed of the phone's long-term identity key.
    IdentityKeySeed = 5,
    /// Per-contact-ID secret, so link secrets change when the contact ID rotates.
    PerContactIdSecret = 6,
}

/// `HKDF-SHA256(ikm = secret, salt, info = LE32(purpose))`, filling `out` (at most 8160 bytes).
pub fn derive_into(secret: &[u8], salt: &[u8], purpose: Purpose, out: &mut [u8]) {
    let hk = Hkdf::<Sha256>::new(Some(salt), secret);
    // Only fails for outputs longer than 255 * 32 bytes, which no caller asks for.
    if hk.expand(&(purpose as u32).to_le_bytes(), out).is_err() {
        out.fill(0);
        debug_assert!(false, "HKDF output too long");
    }
}

/// [`derive_into`] returning a fixed-size [`Secret`].
pub fn derive<const L: usize>(secret: &[u8], salt: &[u8], purpose: Purpose) -> Secret<L> {
    let mut out = [0u8; L];
    derive_into(secret, salt, purpose, &mut out);
    let s = Secret::new(out);
    zeroize::Zeroize::zeroize(&mut out);
    s
}

/// The advert key of the QR flow: `Derive(qr_secret, "", EIDKey, 64)`.
pub fn eid_key(qr_secret: &QrSecret) -> EidKey {
    derive(qr_secret.expose(), &[], Purpose::EidKey)
}

/// The advert key of the linked flow: `Derive(link_secret, client_nonce, EIDKey, 64)`.
pub fn linked_eid_key(link_secret: &LinkSecret, client_nonce: &[u8; 16]) -> EidKey {
    derive(link_secret.expose(), client_nonce, Purpose::EidKey)
}

/// The tunnel ID of the QR flow: `Derive(qr_secret, "", TunnelID, 16)`.
pub fn tunnel_id(qr_secret: &QrSecret) -> TunnelId {
    let s: Secret<16> = derive(qr_secret.expose(), &[], Purpose::TunnelId);
    TunnelId(*s.expose())
}

/// The Noise PSK: `Derive(secret, advert_plaintext, PSK, 32)`, where `secret` is the QR secret
/// or the link secret and the salt is the **decrypted** 16-byte advert.
pub fn psk(secret: &[u8], advert_plaintext: &[u8; 16]) -> Psk {
    derive(secret, advert_plaintext, Purpose::Psk)
}

/// A link secret: `Derive(secret, pairing_id, PairedSecret, 32)`.
pub fn paired_secret(secret: &[u8], pairing_id: &[u8]) -> LinkSecret {
    derive(secret, pairing_id, Purpose::PairedSecret)
}

/// The phone's identity-key seed: `Derive(root_secret, "", IdentityKeySeed, 32)`.
pub fn identity_key_seed(root_secret: &[u8]) -> Secret<32> {
    derive(root_secret, &[], Purpose::IdentityKeySeed)
}

/// `Derive(root_secret, contact_id, PerContactIDSecret, 32)`.
pub fn per_contact_id_secret(root_secret: &[u8], contact_id: &[u8]) -> Secret<32> {
    derive(root_secret, contact_id, Purpose::PerContactIdSecret)
}

/// The phone-side link secret as Chromium derives it (docs/protocol.md §3.1):
/// `Derive(Derive(root, contact_id, 6, 32), pairing_id, 4, 32)`, or straight from the root when
/// there is no contact ID.
pub fn phone_link_secret(
    root_secret: &[u8],
    contact_id: Option<&[u8]>,
    pairing_id: &[u8],
) -> LinkSecret {
    match contact_id {
        Some(c) => paired_secret(per_contact_id_secret(root_secret, c).expose(), pairing_id),
        None => paired_secret(root_secret, pairing_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: [u8; 16] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];

    #[test]
    fn hkdf_vectors() {
        // docs/protocol.md §10.1 (libwebauthn derive_eidkey_nosalt / derive_eidkey_salt).
        let k: Secret<64> = derive(&IN, &[], Purpose::EidKey);
        assert_eq!(
            hex::encode(k.expose()),
            "efafab5b2c84a11c80e3ad0770353138b414a859ccd3afcc99e3d3250dba65084ede8e38e75432617c0ccae1ffe5d8143df0db0cd6d296f489419cd6411ee505"
        );
        let salt = hex::decode("ffeeddccbbaa998877665544332211").unwrap();
        let k: Secret<64> = derive(&IN, &salt, Purpose::EidKey);
        assert_eq!(
            hex::encode(k.expose()),
            "168cf3dd220a7907f8bac30f559be92a3b6d937fe5594beeaf1e50e35976b7d654dd550e22ae4c801b9d1cdbf0d2b1472daa1328661eb889acae3023b7ffa509"
        );
        // Prefix-stable: libwebauthn expands 64 and truncates.
        let short: Secret<32> = derive(&IN, &[], Purpose::EidKey);
        assert_eq!(short.expose()[..], k_nosalt()[..32]);
    }

    fn k_nosalt() -> [u8; 64] {
        *derive::<64>(&IN, &[], Purpose::EidKey).expose()
    }

    #[test]
    fn tunnel_id_vector() {
        // docs/protocol.md §10.2.
        let t = tunnel_id(&QrSecret::new([0; 16]));
        assert_eq!(t.to_hex(), "3EEF97097986413B059EAA2A30D653D4");
        // And the connect URLs of docs/protocol.md §10.2, for domains 0 and 1.
        let path = crate::tunnel::TunnelPath::Connect {
            routing_id: crate::tunnel::RoutingId([9, 10, 11]),
            tunnel_id: t,
        };
        for (d, host) in [(0, "cable.ua5v.com"), (1, "cable.auth.com")] {
            assert_eq!(
                path.to_url(&crate::domain::hostname(d).unwrap()),
                format!("wss://{host}/cable/connect/090A0B/3EEF97097986413B059EAA2A30D653D4")
            );
        }
    }

    #[test]
    fn link_secret_with_and_without_contact() {
        let root = [7u8; 32];
        let a = phone_link_secret(&root, Some(b"contact"), &[1; 8]);
        let b = phone_link_secret(&root, None, &[1; 8]);
        assert_ne!(a, b);
        assert_eq!(b, paired_secret(&root, &[1; 8]));
    }
}

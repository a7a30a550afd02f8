//! P-256 keys as hybrid uses them: compressed keys in the QR code, uncompressed (65-byte X9.62)
//! keys in Noise and linking data, ECDH output as the 32-byte X coordinate, and Chromium's
//! seed → key derivation (docs/protocol.md §3.2).

use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{FieldBytes, PublicKey, Scalar, SecretKey, U256};

use crate::Error;
use crate::secret::Secret;

/// Length of an uncompressed SEC1 point (`04 ‖ X ‖ Y`).
pub const UNCOMPRESSED_LEN: usize = 65;
/// Length of a compressed SEC1 point (`02/03 ‖ X`).
pub const COMPRESSED_LEN: usize = 33;

/// A fresh private key from the caller's CSPRNG.
pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> SecretKey {
    SecretKey::random(rng)
}

/// The 65-byte uncompressed encoding of `key`.
pub fn uncompressed(key: &PublicKey) -> [u8; UNCOMPRESSED_LEN] {
    let mut out = [0u8; UNCOMPRESSED_LEN];
    out.copy_from_slice(key.to_encoded_point(false).as_bytes());
    out
}

/// The 33-byte compressed encoding of `key`.
pub fn compressed(key: &PublicKey) -> [u8; COMPRESSED_LEN] {
    let mut out = [0u8; COMPRESSED_LEN];
    out.copy_from_slice(key.to_encoded_point(true).as_bytes());
    out
}

/// Parses a compressed (33-byte) or uncompressed (65-byte) point and checks it is on the curve.
pub fn parse_public(bytes: &[u8]) -> Result<PublicKey, Error> {
    if bytes.len() != COMPRESSED_LEN && bytes.len() != UNCOMPRESSED_LEN {
        return Err(Error::InvalidPublicKey);
    }
    PublicKey::from_sec1_bytes(bytes).map_err(|_| Error::InvalidPublicKey)
}

/// ECDH: the 32-byte X coordinate of `private · public` (BoringSSL `ECDH_compute_key` with no
/// KDF, as Chromium uses it).
pub fn ecdh_x(private: &SecretKey, public: &PublicKey) -> Secret<32> {
    let shared = p256::ecdh::diffie_hellman(private.to_nonzero_scalar(), public.as_affine());
    let mut out = [0u8; 32];
    out.copy_from_slice(shared.raw_secret_bytes());
    let s = Secret::new(out);
    zeroize::Zeroize::zeroize(&mut out);
    s
}

/// Chromium's `ECKeyFromSeed` (BoringSSL `EC_KEY_derive_from_secret`, docs/protocol.md §3.2):
/// `int_BE(HKDF-SHA256(seed, salt = "", info = "derive EC key P-256", 48)) mod n`.
pub fn from_seed(seed: &[u8]) -> Result<SecretKey, Error> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, seed);
    let mut okm = zeroize::Zeroizing::new([0u8; 48]);
    hk.expand(b"derive EC key P-256", okm.as_mut())
        .map_err(|_| Error::InvalidPrivateKey)?;
    // value = hi · 2^256 + lo, with hi < 2^128 and lo < 2^256.
    let mut hi = FieldBytes::default();
    hi[16..].copy_from_slice(&okm[..16]);
    let mut lo = FieldBytes::default();
    lo.copy_from_slice(&okm[16..]);
    let mut two_128 = FieldBytes::default();
    two_128[15] = 1;
    let t = <Scalar as Reduce<U256>>::reduce_bytes(&two_128);
    let two_256 = t * t;
    let d = <Scalar as Reduce<U256>>::reduce_bytes(&hi) * two_256
        + <Scalar as Reduce<U256>>::reduce_bytes(&lo);
    SecretKey::from_bytes(&d.to_bytes()).map_err(|_| Error::InvalidPrivateKey)
}

/// Parses a 32-byte big-endian private scalar (1 ≤ d < n).
pub fn parse_private(bytes: &[u8]) -> Result<SecretKey, Error> {
    if bytes.len() != 32 {
        return Err(Error::InvalidPrivateKey);
    }
    SecretKey::from_slice(bytes).map_err(|_| Error::InvalidPrivateKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_vectors() {
        // docs/protocol.md §10.8.
        let k0 = from_seed(&[0u8; 32]).unwrap();
        assert_eq!(
            hex::encode(uncompressed(&k0.public_key())),
            "04fdbbc3e2b6d8de60f3a406c64e38067f3b35ccc9cdc943d36674fedbbd233ea13d8a49ead4e6cdaf882e4de7d43b204e2e31e073a8ecc3acebdbe4cf72bef2b2"
        );
        let mut s1 = [0u8; 32];
        s1[0] = 1;
        let k1 = from_seed(&s1).unwrap();
        assert_eq!(
            hex::encode(uncompressed(&k1.public_key())),
            "04e99450925e09343e117268a1fb386cfd0507f76ac8f7fd6a96afc3ce1d8d5efa3f9cf7f29bca3f71573907d313f92a2f6eda72ce6c6658ec2c145ded7dbaba78"
        );
    }

    #[test]
    fn ecdh_is_symmetric_and_x_only() {
        let a = from_seed(&[1; 32]).unwrap();
        let b = from_seed(&[2; 32]).unwrap();
        assert_eq!(ecdh_x(&a, &b.public_key()), ecdh_x(&b, &a.public_key()));
    }

    #[test]
    fn public_key_parsing() {
        let k = from_seed(&[3; 32]).unwrap().public_key();
        assert_eq!(parse_public(&compressed(&k)).unwrap(), k);
        assert_eq!(parse_public(&uncompressed(&k)).unwrap(), k);
        let mut bad = compressed(&k);
        bad[32] ^= 3;
        // Either not on the curve or a different point; never the same key.
        assert!(parse_public(&bad).map(|p| p != k).unwrap_or(true));
        assert!(parse_public(&[2; 10]).is_err());
    }
}

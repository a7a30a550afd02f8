//! Fixed-size secrets: zeroized on drop, redacted in `Debug`, compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes (a QR secret, an EID key, a PSK, a traffic key, a link secret, …).
///
/// The bytes are wiped when the value is dropped, never printed by `Debug`, and compared in
/// constant time by `==`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Wraps bytes the caller obtained from a CSPRNG, a derivation or storage.
    pub fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies exactly `N` bytes out of `bytes`; `None` if the length differs.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; N] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    /// Draws `N` fresh bytes from `rng`.
    pub fn random(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        let mut b = [0u8; N];
        rng.fill_bytes(&mut b);
        Self(b)
    }

    /// The secret bytes. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(redacted)")
    }
}

impl<const N: usize> PartialEq for Secret<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl<const N: usize> Eq for Secret<N> {}

/// The 16-byte secret shared through the QR code (`kQRSecretSize`, docs/protocol.md §2.1).
pub type QrSecret = Secret<16>;
/// A 32-byte Noise pre-shared key (docs/protocol.md §3.1, purpose PSK).
pub type Psk = Secret<32>;
/// A 32-byte link ("paired") secret from linking data (docs/protocol.md §8.5).
pub type LinkSecret = Secret<32>;
/// A 64-byte advert key: AES-256 key ‖ HMAC-SHA256 key (docs/protocol.md §3.1, purpose EIDKey).
pub type EidKey = Secret<64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_eq_works() {
        let s = Secret::new([0xabu8; 16]);
        let d = format!("{s:?}");
        assert!(!d.contains("ab") && !d.contains("171"), "{d}");
        assert_eq!(s, Secret::new([0xab; 16]));
        assert_ne!(s, Secret::new([0xac; 16]));
        assert!(Secret::<16>::from_slice(&[0; 15]).is_none());
    }
}

//! The record layer after the handshake (docs/protocol.md §8.1): AES-256-GCM over the Noise split keys,
//! one counter per direction, nonce `00×8 ‖ BE32(counter)`, empty AAD, and plaintexts padded
//! to a multiple of 32 bytes with the zero count in the last byte.
//!
//! This is our own implementation over the raw split keys so that messages up to 1 MiB work;
//! snow's transport mode would cap them at 65,535 bytes.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::Error;
use crate::secret::Secret;

/// Chromium fails every operation once a counter would exceed this (`kMaxSequence`).
pub const MAX_SEQUENCE: u32 = (1 << 24) - 1;
/// Padding granularity of Crypter plaintexts.
pub const PADDING_GRANULARITY: usize = 32;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// The largest plaintext we encrypt or accept: 1 MiB, Chromium's limit for one tunnel message.
pub const MAX_PLAINTEXT_LEN: usize = 1 << 20;
/// The largest ciphertext we accept: a padded [`MAX_PLAINTEXT_LEN`] plus the tag.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_PLAINTEXT_LEN + PADDING_GRANULARITY + TAG_LEN;

/// The additional data of the old construction (webauthn-rs `OLD_ADDITIONAL_BYTES`).
const OLD_AAD: [u8; 1] = [0x02];

/// Pads `msg` to the next multiple of 32 bytes, writing the zero count (0–31) in the last byte.
pub fn pad(msg: &[u8]) -> Vec<u8> {
    let padded_len = (msg.len() + 1).div_ceil(PADDING_GRANULARITY) * PADDING_GRANULARITY;
    let mut out = Vec::with_capacity(padded_len + TAG_LEN);
    out.extend_from_slice(msg);
    out.resize(padded_len, 0);
    let zeros = padded_len - msg.len() - 1;
    out[padded_len - 1] = zeros as u8; // < 32 by construction
    out
}

/// Removes [`pad`]ding: reads the last byte `p`, requires `p + 1 ≤ len`, drops `p + 1` bytes.
pub fn unpad(padded: &[u8]) -> Result<&[u8], Error> {
    let (&p, _) = padded.split_last().ok_or(Error::BadPadding)?;
    let cut = usize::from(p) + 1;
    if cut > padded.len() {
        return Err(Error::BadPadding);
    }
    Ok(&padded[..padded.len() - cut])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Construction {
    /// `00×8 ‖ BE32(counter)`, empty AAD: current Chromium, libwebauthn, the spec.
    New,
    /// `LE32(counter) ‖ 00×8`, AAD `[0x02]`: Chromium until about 2022.
    Old,
}

fn nonce(c: Construction, counter: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    match c {
        Construction::New => n[8..].copy_from_slice(&counter.to_be_bytes()),
        Construction::Old => n[..4].copy_from_slice(&counter.to_le_bytes()),
    }
    n
}

/// One side's record-layer state: keys and counters for both directions.
pub struct Crypter {
    read_key: Secret<32>,
    write_key: Secret<32>,
    read_counter: u32,
    write_counter: u32,
    construction: Construction,
    accept_old_first: bool,
}

impl fmt::Debug for Crypter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypter")
            .field("keys", &"redacted")
            .field("read_counter", &self.read_counter)
            .field("write_counter", &self.write_counter)
            .field("construction", &self.construction)
            .finish()
    }
}

impl Crypter {
    /// A crypter with the given traffic keys (see `handshake` for which split key is which).
    pub fn new(read_key: Secret<32>, write_key: Secret<32>) -> Self {
        Self {
            read_key,
            write_key,
            read_counter: 0,
            write_counter: 0,
            construction: Construction::New,
            accept_old_first: false,
        }
    }

    /// If the first incoming message does not decrypt with the new construction, try the old
    /// one, and if that works use it for both directions from then on (as webauthn-rs does for
    /// old Chromium peers). Off by default.
    pub fn accept_old_construction_on_first_message(&mut self, yes: bool) {
        self.accept_old_first = yes;
    }

    /// Whether the peer turned out to use the old construction.
    pub fn uses_old_construction(&self) -> bool {
        self.construction == Construction::Old
    }

    /// Messages encrypted and decrypted so far: `(written, read)`.
    pub fn counters(&self) -> (u32, u32) {
        (self.write_counter, self.read_counter)
    }

    /// Pads and encrypts one message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::MessageTooLong(plaintext.len()));
        }
        if self.write_counter > MAX_SEQUENCE {
            return Err(Error::CounterExhausted);
        }
        let padded = zeroize::Zeroizing::new(pad(plaintext));
        let out = seal(
            &self.write_key,
            self.construction,
            self.write_counter,
            &padded,
        )?;
        self.write_counter += 1;
        Ok(out)
    }

    /// Decrypts and unpads one message. A failure is fatal for the session; the counter only
    /// advances on success.
    pub fn decrypt(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        if ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(Error::MessageTooLong(ciphertext.len()));
        }
        if self.read_counter > MAX_SEQUENCE {
            return Err(Error::CounterExhausted);
        }
        let padded = match open(
            &self.read_key,
            self.construction,
            self.read_counter,
            ciphertext,
        ) {
            Ok(p) => p,
            Err(e) => {
                if !(self.accept_old_first && self.read_counter == 0 && self.write_counter == 0) {
                    return Err(e);
                }
                let p = open(&self.read_key, Construction::Old, 0, ciphertext)?;
                self.construction = Construction::Old;
                p
            }
        };
        let padded = zeroize::Zeroizing::new(padded);
        let msg = unpad(&padded)?.to_vec();
        self.read_counter += 1;
        self.accept_old_first = false;
        Ok(msg)
    }
}

fn aad(c: Construction) -> &'static [u8] {
    match c {
        Construction::New => &[],
        Construction::Old => &OLD_AAD,
    }
}

fn seal(key: &Secret<32>, c: Construction, counter: u32, padded: &[u8]) -> Result<Vec<u8>, Error> {
    let cipher = Aes256Gcm::new_from_slice(key.expose()).map_err(|_| Error::Encrypt)?;
    let n = nonce(c, counter);
    cipher
        .encrypt(
            &Nonce::from(n),
            Payload {
                msg: padded,
                aad: aad(c),
            },
        )
        .map_err(|_| Error::Encrypt)
}

fn open(
    key: &Secret<32>,
    c: Construction,
    counter: u32,
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    let cipher = Aes256Gcm::new_from_slice(key.expose()).map_err(|_| Error::Decrypt)?;
    let n = nonce(c, counter);
    cipher
        .decrypt(
            &Nonce::from(n),
            Payload {
                msg: ciphertext,
                aad: aad(c),
            },
        )
        .map_err(|_| Error::Decrypt)
}

/// Test helper: a crypter whose write side uses the old construction, to emulate an old
/// Chromium peer.
#[cfg(test)]
pub(crate) fn old_peer(read_key: Secret<32>, write_key: Secret<32>) -> Crypter {
    let mut c = Crypter::new(read_key, write_key);
    c.construction = Construction::Old;
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (Crypter, Crypter) {
        let k1 = Secret::new([1; 32]);
        let k2 = Secret::new([2; 32]);
        (Crypter::new(k2.clone(), k1.clone()), Crypter::new(k1, k2))
    }

    #[test]
    fn padding_vectors() {
        // docs/protocol.md §8.1 [computed].
        let p = pad(&[0x00]);
        assert_eq!(p.len(), 32);
        assert_eq!(p[31], 0x1e);
        assert_eq!(pad(&[7; 31]).len(), 32);
        assert_eq!(pad(&[7; 31])[31], 0);
        let p = pad(&[7; 32]);
        assert_eq!((p.len(), p[63]), (64, 31));
        assert!(unpad(&[]).is_err());
        assert!(unpad(&[5, 0, 3]).is_err());
        assert_eq!(unpad(&[5, 0, 1]).unwrap(), &[5]);
    }

    #[test]
    fn shutdown_is_48_bytes_and_pinned() {
        let (mut a, mut b) = pair();
        let ct = a.encrypt(&[0x00]).unwrap();
        assert_eq!(ct.len(), 48);
        assert_eq!(b.decrypt(&ct).unwrap(), vec![0]);
    }

    #[test]
    fn counters_and_order() {
        let (mut a, mut b) = pair();
        let m1 = a.encrypt(b"one").unwrap();
        let m2 = a.encrypt(b"two").unwrap();
        assert!(b.decrypt(&m2).is_err()); // out of order
        assert_eq!(b.decrypt(&m1).unwrap(), b"one"); // counter did not advance on failure
        assert_eq!(b.decrypt(&m2).unwrap(), b"two");
        assert!(b.decrypt(&m2).is_err()); // replay
        assert_eq!(a.counters(), (2, 0));
        assert_eq!(b.counters(), (0, 2));
    }

    #[test]
    fn counter_limit() {
        let (mut a, mut b) = pair();
        a.write_counter = MAX_SEQUENCE;
        b.read_counter = MAX_SEQUENCE;
        let m = a.encrypt(b"last").unwrap();
        assert_eq!(b.decrypt(&m).unwrap(), b"last");
        assert_eq!(a.encrypt(b"x"), Err(Error::CounterExhausted));
        assert_eq!(b.decrypt(&m), Err(Error::CounterExhausted));
    }

    #[test]
    fn one_mebibyte_messages() {
        let (mut a, mut b) = pair();
        let big = vec![0x5a; MAX_PLAINTEXT_LEN];
        let ct = a.encrypt(&big).unwrap();
        assert!(ct.len() > 65_535);
        assert_eq!(b.decrypt(&ct).unwrap(), big);
        assert!(a.encrypt(&vec![0; MAX_PLAINTEXT_LEN + 1]).is_err());
    }

    #[test]
    fn old_construction_only_on_first_message_when_enabled() {
        let k1 = Secret::new([1; 32]);
        let k2 = Secret::new([2; 32]);
        let mut old = old_peer(k2.clone(), k1.clone());
        let m = old.encrypt(b"hi").unwrap();
        let mut strict = Crypter::new(k1.clone(), k2.clone());
        assert_eq!(strict.decrypt(&m), Err(Error::Decrypt));
        let mut lenient = Crypter::new(k1, k2);
        lenient.accept_old_construction_on_first_message(true);
        assert_eq!(lenient.decrypt(&m).unwrap(), b"hi");
        assert!(lenient.uses_old_construction());
        let reply = lenient.encrypt(b"yo").unwrap();
        assert_eq!(old.decrypt(&reply).unwrap(), b"yo");
    }

    #[test]
    fn debug_redacts_keys() {
        let (a, _) = pair();
        let s = format!("{a:?}");
        assert!(!s.contains("[1, 1") && s.contains("redacted"));
    }

    proptest! {
        #[test]
        fn round_trip(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5)) {
            let (mut a, mut b) = pair();
            for m in msgs {
                let ct = a.encrypt(&m).unwrap();
                prop_assert_eq!(ct.len() % 32, 16);
                prop_assert_eq!(b.decrypt(&ct).unwrap(), m);
            }
        }

        #[test]
        fn decrypt_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, mut b) = pair();
            b.accept_old_construction_on_first_message(true);
            let _ = b.decrypt(&data);
            let _ = unpad(&data);
        }
    }
}

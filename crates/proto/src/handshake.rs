//! The Noise handshake (docs/protocol.md §7), through the `snow` crate.
//!
//! * QR flow: `Noise_KNpsk0_P256_AESGCM_SHA256`, prologue `[0x01]`; the desktop's static key is
//!   the QR identity key (pre-message known to the phone from QR key 0).
//! * Linked flow: `Noise_NKpsk0_P256_AESGCM_SHA256`, prologue `[0x00]`; the phone's static key
//!   is its identity key from linking data (key 4).
//!
//! The desktop is always the initiator. Each message is exactly 81 bytes: an uncompressed
//! ephemeral key and the 16-byte tag of an empty payload. After the handshake, the split
//! `(k1, k2)` gives the desktop `write = k1, read = k2` and the phone the reverse (§7.4), and
//! the handshake hash `h` is the channel binding the linking signature covers (§8.5).
//!
//! Ephemeral keys are passed in by the caller (draw them with [`keys::generate`]), so the
//! crate has no RNG of its own and tests can pin transcripts. snow calls this a "fixed
//! ephemeral key"; supplying a fresh CSPRNG key for every handshake is exactly as safe as
//! letting snow draw one.

use p256::{PublicKey, SecretKey};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

use crate::Error;
use crate::crypter::Crypter;
use crate::keys;
use crate::secret::{Psk, Secret};

/// Length of each handshake message: 65-byte ephemeral key + 16-byte tag (`kResponseSize`).
pub const MESSAGE_LEN: usize = 65 + 16;
/// Length of the handshake hash.
pub const HASH_LEN: usize = 32;
/// Noise protocol name of the QR flow.
pub const KN_PROTOCOL: &str = "Noise_KNpsk0_P256_AESGCM_SHA256";
/// Noise protocol name of the linked flow.
pub const NK_PROTOCOL: &str = "Noise_NKpsk0_P256_AESGCM_SHA256";
/// Prologue of the QR flow.
pub const KN_PROLOGUE: [u8; 1] = [0x01];
/// Prologue of the linked flow.
pub const NK_PROLOGUE: [u8; 1] = [0x00];

/// Which of the two handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// QR-initiated: KNpsk0.
    Qr,
    /// State-assisted ("linked"): NKpsk0.
    Linked,
}

impl Flow {
    fn params(self) -> (&'static str, &'static [u8]) {
        match self {
            Flow::Qr => (KN_PROTOCOL, &KN_PROLOGUE),
            Flow::Linked => (NK_PROTOCOL, &NK_PROLOGUE),
        }
    }
}

/// What a finished handshake yields.
#[derive(Debug)]
pub struct Handshaken {
    /// The record layer, keys assigned for this side.
    pub crypter: Crypter,
    /// The Noise handshake hash `h` after the last message.
    pub handshake_hash: [u8; HASH_LEN],
}

/// snow's default primitives, but no RNG: every ephemeral key is supplied by the caller.
struct NoRngResolver;

struct NoRandom;

impl Random for NoRandom {
    fn try_fill_bytes(&mut self, _dest: &mut [u8]) -> Result<(), snow::Error> {
        Err(snow::Error::Rng)
    }
}

impl CryptoResolver for NoRngResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(NoRandom))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn snow_err(e: snow::Error) -> Error {
    Error::Handshake(match e {
        snow::Error::Decrypt => {
            "the peer's handshake message did not authenticate (wrong QR code, PSK or key)"
        }
        snow::Error::Dh => "the peer's ephemeral key is not a valid P-256 point",
        _ => "the Noise handshake failed",
    })
}

struct Setup<'a> {
    flow: Flow,
    initiator: bool,
    psk: &'a Psk,
    local_static: Option<&'a SecretKey>,
    remote_static: Option<&'a PublicKey>,
    ephemeral: &'a SecretKey,
}

fn build(s: Setup<'_>) -> Result<snow::HandshakeState, Error> {
    let (name, prologue) = s.flow.params();
    let params: snow::params::NoiseParams = name.parse().map_err(snow_err)?;
    let e = Zeroizing::new(s.ephemeral.to_bytes());
    let local = s.local_static.map(|k| Zeroizing::new(k.to_bytes()));
    let remote = s.remote_static.map(keys::uncompressed);
    let mut b = snow::Builder::with_resolver(params, Box::new(NoRngResolver))
        .prologue(prologue)
        .map_err(snow_err)?
        .psk(0, s.psk.expose())
        .map_err(snow_err)?
        .fixed_ephemeral_key_for_testing_only(&e[..]);
    if let Some(l) = &local {
        b = b.local_private_key(&l[..]).map_err(snow_err)?;
    }
    if let Some(r) = &remote {
        b = b.remote_public_key(r).map_err(snow_err)?;
    }
    if s.initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .map_err(snow_err)
}

fn finish(mut hs: snow::HandshakeState, initiator: bool) -> Result<Handshaken, Error> {
    if !hs.is_handshake_finished() {
        return Err(Error::Handshake("the Noise handshake did not finish"));
    }
    let mut handshake_hash = [0u8; HASH_LEN];
    let h = hs.get_handshake_hash();
    if h.len() != HASH_LEN {
        return Err(Error::Handshake("unexpected handshake hash length"));
    }
    handshake_hash.copy_from_slice(h);
    let (k1, k2) = hs.dangerously_get_raw_split();
    let (k1, k2) = (Secret::new(k1), Secret::new(k2));
    // Chromium: desktop `[write, read] = traffic_keys()`, phone `[read, write]` (§7.4).
    let crypter = if initiator {
        Crypter::new(k2, k1)
    } else {
        Crypter::new(k1, k2)
    };
    Ok(Handshaken {
        crypter,
        handshake_hash,
    })
}

fn check_len(msg: &[u8]) -> Result<(), Error> {
    if msg.len() != MESSAGE_LEN {
        return Err(Error::HandshakeLength {
            expected: MESSAGE_LEN,
            got: msg.len(),
        });
    }
    Ok(())
}

/// The desktop's side of the handshake, waiting for the phone's reply.
pub struct Initiator {
    hs: snow::HandshakeState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator(..)")
    }
}

impl Initiator {
    /// QR flow: starts KNpsk0 with the desktop's QR identity key, returning the first message.
    pub fn qr(
        identity: &SecretKey,
        psk: &Psk,
        ephemeral: &SecretKey,
    ) -> Result<(Self, [u8; MESSAGE_LEN]), Error> {
        let hs = build(Setup {
            flow: Flow::Qr,
            initiator: true,
            psk,
            local_static: Some(identity),
            remote_static: None,
            ephemeral,
        })?;
        Self::start(hs)
    }

    /// Linked flow: starts NKpsk0 against the phone's identity key (linking key 4).
    pub fn linked(
        phone_identity: &PublicKey,
        psk: &Psk,
        ephemeral: &SecretKey,
    ) -> Result<(Self, [u8; MESSAGE_LEN]), Error> {
        let hs = build(Setup {
            flow: Flow::Linked,
            initiator: true,
            psk,
            local_static: None,
            remote_static: Some(phone_identity),
            ephemeral,
        })?;
        Self::start(hs)
    }

    fn start(mut hs: snow::HandshakeState) -> Result<(Self, [u8; MESSAGE_LEN]), Error> {
        let mut msg = [0u8; MESSAGE_LEN];
        let n = hs.write_message(&[], &mut msg).map_err(snow_err)?;
        if n != MESSAGE_LEN {
            return Err(Error::HandshakeLength {
                expected: MESSAGE_LEN,
                got: n,
            });
        }
        Ok((Self { hs }, msg))
    }

    /// Processes the phone's 81-byte reply and returns the traffic keys and handshake hash.
    pub fn finish(mut self, msg2: &[u8]) -> Result<Handshaken, Error> {
        check_len(msg2)?;
        let mut payload = [0u8; MESSAGE_LEN];
        let n = self.hs.read_message(msg2, &mut payload).map_err(snow_err)?;
        if n != 0 {
            return Err(Error::Handshake(
                "the phone's handshake message has a payload",
            ));
        }
        finish(self.hs, true)
    }
}

/// The phone's side of the handshake.
pub struct Responder {
    hs: snow::HandshakeState,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder(..)")
    }
}

impl Responder {
    /// QR flow: the desktop's static key is the QR's public key (key 0).
    pub fn qr(
        desktop_identity: &PublicKey,
        psk: &Psk,
        ephemeral: &SecretKey,
    ) -> Result<Self, Error> {
        let hs = build(Setup {
            flow: Flow::Qr,
            initiator: false,
            psk,
            local_static: None,
            remote_static: Some(desktop_identity),
            ephemeral,
        })?;
        Ok(Self { hs })
    }

    /// Linked flow: the phone proves possession of its identity key.
    pub fn linked(identity: &SecretKey, psk: &Psk, ephemeral: &SecretKey) -> Result<Self, Error> {
        let hs = build(Setup {
            flow: Flow::Linked,
            initiator: false,
            psk,
            local_static: Some(identity),
            remote_static: None,
            ephemeral,
        })?;
        Ok(Self { hs })
    }

    /// Processes the desktop's 81-byte first message and returns the reply to send with the
    /// traffic keys and handshake hash.
    pub fn respond(mut self, msg1: &[u8]) -> Result<(Handshaken, [u8; MESSAGE_LEN]), Error> {
        check_len(msg1)?;
        let mut payload = [0u8; MESSAGE_LEN];
        let n = self.hs.read_message(msg1, &mut payload).map_err(snow_err)?;
        if n != 0 {
            return Err(Error::Handshake(
                "the desktop's handshake message has a payload",
            ));
        }
        let mut msg2 = [0u8; MESSAGE_LEN];
        let n = self.hs.write_message(&[], &mut msg2).map_err(snow_err)?;
        if n != MESSAGE_LEN {
            return Err(Error::HandshakeLength {
                expected: MESSAGE_LEN,
                got: n,
            });
        }
        Ok((finish(self.hs, false)?, msg2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn key(seed: u8) -> SecretKey {
        keys::from_seed(&[seed; 32]).unwrap()
    }

    #[test]
    fn qr_round_trip() {
        let desktop = key(2);
        let psk = Psk::new([0; 32]);
        let (init, m1) = Initiator::qr(&desktop, &psk, &key(10)).unwrap();
        let resp = Responder::qr(&desktop.public_key(), &psk, &key(11)).unwrap();
        let (mut phone, m2) = resp.respond(&m1).unwrap();
        let mut laptop = init.finish(&m2).unwrap();
        assert_eq!(phone.handshake_hash, laptop.handshake_hash);
        let c = laptop.crypter.encrypt(b"ping").unwrap();
        assert_eq!(phone.crypter.decrypt(&c).unwrap(), b"ping");
        let c = phone.crypter.encrypt(b"pong").unwrap();
        assert_eq!(laptop.crypter.decrypt(&c).unwrap(), b"pong");
    }

    #[test]
    fn linked_round_trip_and_wrong_identity() {
        let phone_id = key(2);
        let psk = Psk::new([0; 32]);
        let (init, m1) = Initiator::linked(&phone_id.public_key(), &psk, &key(10)).unwrap();
        let (mut phone, m2) = Responder::linked(&phone_id, &psk, &key(11))
            .unwrap()
            .respond(&m1)
            .unwrap();
        let mut laptop = init.finish(&m2).unwrap();
        assert_eq!(phone.handshake_hash, laptop.handshake_hash);
        let c = laptop.crypter.encrypt(b"x").unwrap();
        assert_eq!(phone.crypter.decrypt(&c).unwrap(), b"x");
        // A phone without the identity key cannot answer.
        assert!(
            Responder::linked(&key(3), &psk, &key(11))
                .unwrap()
                .respond(&m1)
                .is_err()
        );
    }

    #[test]
    fn wrong_psk_or_static_fails() {
        let desktop = key(2);
        let (_, m1) = Initiator::qr(&desktop, &Psk::new([0; 32]), &key(10)).unwrap();
        assert!(
            Responder::qr(&desktop.public_key(), &Psk::new([1; 32]), &key(11))
                .unwrap()
                .respond(&m1)
                .is_err()
        );
        let (_, m1) = Initiator::qr(&desktop, &Psk::new([0; 32]), &key(10)).unwrap();
        let (_, m2) = Responder::qr(&desktop.public_key(), &Psk::new([0; 32]), &key(11))
            .unwrap()
            .respond(&m1)
            .unwrap();
        let (other, _) = Initiator::qr(&key(4), &Psk::new([0; 32]), &key(10)).unwrap();
        assert!(other.finish(&m2).is_err());
    }

    #[test]
    fn exact_lengths() {
        let desktop = key(2);
        let psk = Psk::new([0; 32]);
        let (init, m1) = Initiator::qr(&desktop, &psk, &key(10)).unwrap();
        let r = Responder::qr(&desktop.public_key(), &psk, &key(11)).unwrap();
        let mut long = m1.to_vec();
        long.push(0);
        assert_eq!(
            r.respond(&long).unwrap_err(),
            Error::HandshakeLength {
                expected: 81,
                got: 82
            }
        );
        assert!(init.finish(&m1[..80]).is_err());
    }

    // An independent, hand-written transcript of docs/protocol.md §7.2 msg1 (no snow), checking that snow
    // uses the exact name, prologue, pre-message, psk placement, DH = X coordinate and nonce.
    fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32], [u8; 32]) {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(ck), ikm);
        let mut o = [0u8; 96];
        hk.expand(&[], &mut o).unwrap();
        (
            o[..32].try_into().unwrap(),
            o[32..64].try_into().unwrap(),
            o[64..].try_into().unwrap(),
        )
    }
    fn mix_hash(h: &mut [u8; 32], x: &[u8]) {
        *h = Sha256::new()
            .chain_update(*h)
            .chain_update(x)
            .finalize()
            .into();
    }

    #[test]
    fn snow_matches_hand_written_kn_transcript() {
        let s_d = key(2);
        let e_d = key(10);
        let e_p = key(11);
        let psk = [0x42u8; 32];
        let mut h = [0u8; 32];
        h[..31].copy_from_slice(KN_PROTOCOL.as_bytes());
        let mut ck = h;
        mix_hash(&mut h, &[0x01]);
        mix_hash(&mut h, &keys::uncompressed(&s_d.public_key()));
        let (c, t, _) = hkdf2(&ck, &psk);
        ck = c;
        mix_hash(&mut h, &t);
        let ed_pub = keys::uncompressed(&e_d.public_key());
        mix_hash(&mut h, &ed_pub);
        let (mut ck, k) = {
            let (c, kk, _) = hkdf2(&ck, &ed_pub);
            (c, kk)
        };
        let aead = aes_gcm::Aes256Gcm::new_from_slice(&k).unwrap();
        let tag = aead
            .encrypt(&[0u8; 12].into(), Payload { msg: &[], aad: &h })
            .unwrap();
        mix_hash(&mut h, &tag);
        let mut expected = ed_pub.to_vec();
        expected.extend_from_slice(&tag);

        let (init, m1) = Initiator::qr(&s_d, &Psk::new(psk), &e_d).unwrap();
        assert_eq!(m1.to_vec(), expected);

        // msg2 from the phone's side, by hand.
        let ep_pub = keys::uncompressed(&e_p.public_key());
        mix_hash(&mut h, &ep_pub);
        (ck, _) = {
            let (c, kk, _) = hkdf2(&ck, &ep_pub);
            (c, kk)
        };
        let ee = keys::ecdh_x(&e_p, &e_d.public_key());
        (ck, _) = {
            let (c, kk, _) = hkdf2(&ck, ee.expose());
            (c, kk)
        };
        let se = keys::ecdh_x(&e_p, &s_d.public_key());
        let (ck, k) = {
            let (c, kk, _) = hkdf2(&ck, se.expose());
            (c, kk)
        };
        let aead = aes_gcm::Aes256Gcm::new_from_slice(&k).unwrap();
        let tag2 = aead
            .encrypt(&[0u8; 12].into(), Payload { msg: &[], aad: &h })
            .unwrap();
        mix_hash(&mut h, &tag2);
        let mut m2 = ep_pub.to_vec();
        m2.extend_from_slice(&tag2);
        let (_, m2_snow) = Responder::qr(&s_d.public_key(), &Psk::new(psk), &e_p)
            .unwrap()
            .respond(&m1)
            .unwrap();
        assert_eq!(m2_snow.to_vec(), m2);

        let mut done = init.finish(&m2).unwrap();
        assert_eq!(done.handshake_hash, h);
        let (k1, k2, _) = hkdf2(&ck, &[]);
        // Desktop writes with k1 using the new nonce construction.
        let ct = done.crypter.encrypt(b"hi").unwrap();
        let aead = aes_gcm::Aes256Gcm::new_from_slice(&k1).unwrap();
        let pt = aead
            .decrypt(&[0u8; 12].into(), Payload { msg: &ct, aad: &[] })
            .unwrap();
        assert_eq!(crate::crypter::unpad(&pt).unwrap(), b"hi");
        let aead = aes_gcm::Aes256Gcm::new_from_slice(&k2).unwrap();
        let reply = aead
            .encrypt(
                &[0u8; 12].into(),
                Payload {
                    msg: &crate::crypter::pad(b"ok"),
                    aad: &[],
                },
            )
            .unwrap();
        assert_eq!(done.crypter.decrypt(&reply).unwrap(), b"ok");
    }

    #[test]
    fn snow_matches_hand_written_nk_msg1() {
        // docs/protocol.md §7.3: Init(NKpsk0); MixHash([0x00]); MixHash(s_p); MixKeyAndHash(psk);
        // MixHash(e_d); MixKey(e_d); MixKey(ECDH(e_d, s_p)); EncryptAndHash("").
        let s_p = key(5);
        let e_d = key(10);
        let psk = [0x24u8; 32];
        let mut h = [0u8; 32];
        h[..31].copy_from_slice(NK_PROTOCOL.as_bytes());
        let ck = h;
        mix_hash(&mut h, &[0x00]);
        mix_hash(&mut h, &keys::uncompressed(&s_p.public_key()));
        let (ck, t, _) = hkdf2(&ck, &psk);
        mix_hash(&mut h, &t);
        let ed_pub = keys::uncompressed(&e_d.public_key());
        mix_hash(&mut h, &ed_pub);
        let (ck, _, _) = hkdf2(&ck, &ed_pub);
        let es = keys::ecdh_x(&e_d, &s_p.public_key());
        let (_, k, _) = hkdf2(&ck, es.expose());
        let aead = aes_gcm::Aes256Gcm::new_from_slice(&k).unwrap();
        let tag = aead
            .encrypt(&[0u8; 12].into(), Payload { msg: &[], aad: &h })
            .unwrap();
        let mut expected = ed_pub.to_vec();
        expected.extend_from_slice(&tag);
        let (_, m1) = Initiator::linked(&s_p.public_key(), &Psk::new(psk), &e_d).unwrap();
        assert_eq!(m1.to_vec(), expected);
    }

    proptest! {
        #[test]
        fn responder_never_panics(m in proptest::collection::vec(any::<u8>(), 0..100)) {
            let r = Responder::qr(&key(2).public_key(), &Psk::new([0; 32]), &key(11)).unwrap();
            let _ = r.respond(&m);
        }

        #[test]
        fn initiator_never_panics(m in proptest::collection::vec(any::<u8>(), 81..=81)) {
            let (i, _) = Initiator::qr(&key(2), &Psk::new([0; 32]), &key(10)).unwrap();
            let _ = i.finish(&m);
        }
    }
}

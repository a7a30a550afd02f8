//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the corpus-replay test, so CI
//! replays every corpus file through exactly the code the fuzzer exercises. Each function
//! takes arbitrary bytes and must never panic.

use crate::advert::{self, DomainCheck};
use crate::frame::{Message, PostHandshake, ProtocolRevision, Update};
use crate::kdf;
use crate::qr::QrPayload;
use crate::secret::QrSecret;

/// The QR URL parser: bytes as (lossy) UTF-8 through `QrPayload::from_url`. A successful
/// parse must re-encode to a URL that parses, and encoding must be stable from then on
/// (the first encoding normalises: key 4 is always written, unknown keys are dropped).
pub fn qr_url(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(p) = QrPayload::from_url(&s) {
        let url = p.to_url();
        let again = QrPayload::from_url(&url).map(|q| q.to_url());
        assert_eq!(
            again.ok().as_deref(),
            Some(url.as_str()),
            "QR payload does not round-trip"
        );
    }
    let _ = QrPayload::from_bytes(data);
}

/// The advert decryptor: the first byte picks a QR secret (so a corpus can contain adverts
/// that really decrypt under secret `00×16`); the rest is service data.
pub fn advert(data: &[u8]) {
    let Some((&sel, service_data)) = data.split_first() else {
        return;
    };
    let key = kdf::eid_key(&QrSecret::new([sel & 1; 16]));
    let _ = advert::trial_decrypt(
        &key,
        service_data,
        DomainCheck::KnownAssigned(u16::from(sel >> 1)),
    );
    let _ = advert::trial_decrypt(&key, service_data, DomainCheck::Skip);
    let _ = advert::AdvertSuffix::parse(service_data);
}

/// The post-handshake parser (strict CBOR, then both padded-CBOR forms).
pub fn post_handshake(data: &[u8]) {
    if let Ok((ph, rev)) = PostHandshake::decode(data) {
        let again = PostHandshake::decode(&ph.encode(rev));
        assert!(again.is_ok(), "post-handshake message does not re-parse");
    }
}

/// The frame decoder, both revisions, plus update payloads.
pub fn frame(data: &[u8]) {
    for rev in [ProtocolRevision::V0, ProtocolRevision::V1] {
        if let Ok(m) = Message::decode(data, rev) {
            if let Ok(enc) = m.encode(rev) {
                assert_eq!(
                    Message::decode(&enc, rev).ok(),
                    Some(m),
                    "frame does not round-trip"
                );
            }
        }
    }
    let _ = Update::decode(data);
}

/// The wake-up subscription's parsers and the strict client payload (`contact`): every
/// message a relay or phone reads from the other. What parses must re-encode to itself.
pub fn contact(data: &[u8]) {
    use crate::contact::{self, Ack, Challenge, Proof, Wake};
    if let Ok(p) = Proof::decode(data) {
        assert_eq!(
            Proof::decode(&p.encode()).ok(),
            Some(p.clone()),
            "proof does not round-trip"
        );
        let _ = p.verify(&Challenge([0; 32]), "relay.example");
    }
    if let Ok(w) = Wake::decode(data) {
        assert_eq!(
            Wake::decode(&w.encode()).ok(),
            Some(w),
            "wake does not round-trip"
        );
    }
    if let Ok(a) = Ack::decode(data) {
        assert_eq!(
            Ack::decode(&a.encode()).ok(),
            Some(a),
            "ack does not round-trip"
        );
    }
    let _ = Challenge::decode(data);
    let _ = contact::client_payload_from_bytes(data);
    let _ = contact::client_payload_from_header(data);
    let _ = contact::signing_host(&String::from_utf8_lossy(data));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entry_points_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::qr_url(&data);
            super::advert(&data);
            super::post_handshake(&data);
            super::frame(&data);
            super::contact(&data);
        }

        #[test]
        fn qr_digit_urls_never_panic(d in "[0-9]{0,250}") {
            super::qr_url(format!("FIDO:/{d}").as_bytes());
        }
    }
}

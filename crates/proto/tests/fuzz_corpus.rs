//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the same entry
//! points the cargo-fuzz targets call, so CI catches regressions without cargo-fuzz.

use std::fs;
use std::path::PathBuf;

use hybridge_testkit::replay_corpus as replay;

#[test]
fn qr_url_corpus() {
    replay("qr_url", hybridge_proto::fuzz::qr_url);
}

#[test]
fn advert_corpus() {
    replay("advert", hybridge_proto::fuzz::advert);
}

#[test]
fn post_handshake_corpus() {
    replay("post_handshake", hybridge_proto::fuzz::post_handshake);
}

#[test]
fn frame_corpus() {
    replay("frame", hybridge_proto::fuzz::frame);
}

#[test]
fn contact_corpus() {
    replay("contact", hybridge_proto::fuzz::contact);
}

#[test]
fn corpus_seeds_really_parse() {
    // The seeds are meant to reach deep code: check the important ones still parse.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let url = fs::read_to_string(root.join("qr_url/chrome_like")).unwrap();
    assert!(hybridge_proto::qr::QrPayload::from_url(&url).is_ok());
    use hybridge_proto::contact;
    let proof = contact::Proof::decode(&fs::read(root.join("contact/proof")).unwrap()).unwrap();
    assert!(
        proof
            .verify(&contact::Challenge([0x22; 32]), "relay.example")
            .is_ok()
    );
    assert!(contact::Wake::decode(&fs::read(root.join("contact/wake")).unwrap()).is_ok());
    assert!(contact::Ack::decode(&fs::read(root.join("contact/ack")).unwrap()).is_ok());
    let header = fs::read(root.join("contact/client_payload_header")).unwrap();
    assert!(contact::client_payload_from_header(&header).is_ok());
    let ph = fs::read(root.join("post_handshake/padded_empty")).unwrap();
    // An empty map lacks getInfo, so it is rejected, but as a padded (revision 0) message.
    assert!(hybridge_proto::frame::decode_padded_cbor(&ph).is_ok());
    for f in [
        "ctap_v1",
        "features",
        "padded_16bit",
        "padded_8bit",
        "key0_padding",
    ] {
        let b = fs::read(root.join("post_handshake").join(f)).unwrap();
        assert!(
            hybridge_proto::frame::PostHandshake::decode(&b).is_ok(),
            "{f}"
        );
    }
    let adv = fs::read(root.join("advert/with_l2cap_suffix")).unwrap();
    let key = hybridge_proto::kdf::eid_key(&hybridge_proto::secret::QrSecret::new([0; 16]));
    let d = hybridge_proto::advert::trial_decrypt(
        &key,
        &adv[1..],
        hybridge_proto::advert::DomainCheck::KnownAssigned(2),
    )
    .unwrap();
    assert_eq!(d.suffix.unwrap().l2cap_psm, Some(0x81));
}

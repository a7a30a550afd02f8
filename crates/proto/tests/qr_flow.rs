//! A complete QR-flow session between the laptop and phone state machines, in memory, with
//! fixed keys and nonces — every byte that would cross the radio or the tunnel is pinned, so
//! any change to the wire format shows up here.
//!
//! QR → advert → handshake → post-handshake → update (linking) → CTAP request/response →
//! shutdown.

use hybridge_proto::advert::AdvertPlaintext;
use hybridge_proto::frame::{PostHandshake, ProtocolRevision};
use hybridge_proto::keys;
use hybridge_proto::qr::{QrKeys, RequestType};
use hybridge_proto::secret::{LinkSecret, QrSecret};
use hybridge_proto::session::{
    LaptopEvent, LaptopLinked, LaptopQr, LinkedPhone, PhoneEvent, PhoneLinked, PhoneQr,
};
use hybridge_proto::tunnel::{RoutingId, TunnelPath};

/// Records every wire value; compares with the pinned transcript at the end and prints the
/// whole actual transcript on mismatch, so an intended change is easy to re-pin.
#[derive(Default)]
struct Transcript(Vec<(&'static str, String)>);

impl Transcript {
    fn rec(&mut self, name: &'static str, bytes: impl AsRef<[u8]>) {
        self.0.push((name, hex::encode(bytes)));
    }
    fn rec_text(&mut self, name: &'static str, text: &str) {
        self.0.push((name, text.to_owned()));
    }
    fn check(&self, pinned: &[(&str, &str)]) {
        let actual: Vec<(&str, &str)> = self.0.iter().map(|(n, h)| (*n, h.as_str())).collect();
        if actual != pinned {
            for (n, h) in &actual {
                eprintln!("    (\"{n}\", \"{h}\"),");
            }
            panic!("transcript changed; actual transcript printed above");
        }
    }
}

// Chromium's getInfo of the Android authenticator (docs/protocol.md §8.3), abbreviated: versions, aaguid.
const GET_INFO: &str =
    "a20182684649444f5f325f30684649444f5f325f31035000000000000000000000000000000000";
// getAssertion request `02 ‖ {1: "example.com", 2: h'00…'}` and a made-up success response.
const CTAP_REQUEST: &str = "02a2016b6578616d706c652e636f6d025820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const CTAP_RESPONSE: &str = "00a1014401020304";

fn seed(b: u8) -> p256::SecretKey {
    keys::from_seed(&[b; 32]).unwrap()
}

#[test]
fn qr_flow_transcript_is_pinned() {
    let mut t = Transcript::default();
    let get_info = hex::decode(GET_INFO).unwrap();

    // Laptop: QR code.
    let keys = QrKeys {
        identity: seed(1),
        secret: QrSecret::new([2; 16]),
    };
    let mut laptop = LaptopQr::new(keys, 1_700_000_000, true, RequestType::GetAssertion);
    let url = laptop.qr_url();
    t.rec_text("qr_url", &url);

    // Phone: scans, opens /cable/new, gets a routing ID, advertises.
    let mut phone = PhoneQr::from_qr_url(&url).unwrap();
    assert_eq!(phone.revision(), ProtocolRevision::V1);
    assert_eq!(
        phone.new_tunnel_path(),
        TunnelPath::New {
            tunnel_id: laptop.tunnel_id()
        }
    );
    t.rec("tunnel_id", laptop.tunnel_id().0);
    let plaintext = AdvertPlaintext {
        nonce: [7; 10],
        routing_id: RoutingId([0xa1, 0xb2, 0xc3]),
        domain_id: 0,
    };
    let service_data = phone.service_data(plaintext, Some(0x81)); // no L2CAP offered: no suffix
    assert_eq!(service_data.len(), 20);
    t.rec("advert", &service_data);

    // Laptop: someone else's advert is ignored; ours matches.
    assert_eq!(laptop.on_advert(&[0x55; 20]).unwrap(), None);
    let connect = laptop.on_advert(&service_data).unwrap().unwrap();
    assert_eq!(
        connect.url().unwrap(),
        format!(
            "wss://cable.ua5v.com/cable/connect/A1B2C3/{}",
            laptop.tunnel_id().to_hex()
        )
    );

    // Handshake.
    let msg1 = laptop.handshake_message(&seed(3)).unwrap();
    t.rec("noise_msg1", msg1);
    let (mut phone, msg2) = phone.respond(&msg1, &seed(4)).unwrap();
    t.rec("noise_msg2", msg2);
    let mut laptop = laptop.finish(&msg2).unwrap();
    assert_eq!(laptop.handshake_hash(), phone.handshake_hash());
    t.rec("handshake_hash", laptop.handshake_hash());

    // Phone: post-handshake message, then the padded update with linking data.
    let ph = phone
        .post_handshake(&PostHandshake::ctap(get_info.clone()))
        .unwrap();
    t.rec("post_handshake", &ph);
    let phone_identity = seed(5);
    let linking = phone
        .linking_info(
            &phone_identity,
            b"contact".to_vec(),
            vec![8; 8],
            LinkSecret::new([6; 32]),
            "Test phone".into(),
        )
        .unwrap();
    let update = phone.update(Some(&linking)).unwrap();
    assert_eq!(update.len(), 528);
    t.rec("update", &update);

    let events = laptop.on_message(&ph).unwrap();
    assert_eq!(
        events,
        vec![LaptopEvent::PostHandshake {
            message: PostHandshake::ctap(get_info.clone()),
            revision: ProtocolRevision::V1
        }]
    );
    assert_eq!(laptop.get_info(), Some(&get_info[..]));
    assert_eq!(
        laptop.on_message(&update).unwrap(),
        vec![LaptopEvent::Linked(linking.clone())]
    );

    // One CTAP request and response.
    let request = hex::decode(CTAP_REQUEST).unwrap();
    let req_ct = laptop.send_ctap(&request).unwrap();
    assert!(laptop.send_ctap(&request).is_err(), "no pipelining");
    t.rec("ctap_request", &req_ct);
    assert_eq!(
        phone.on_message(&req_ct).unwrap(),
        PhoneEvent::CtapRequest(request)
    );
    let response = hex::decode(CTAP_RESPONSE).unwrap();
    let resp_ct = phone.send_ctap(&response).unwrap();
    t.rec("ctap_response", &resp_ct);
    assert_eq!(
        laptop.on_message(&resp_ct).unwrap(),
        vec![LaptopEvent::CtapResponse(response)]
    );

    // Shutdown.
    let shutdown = laptop.shutdown().unwrap().unwrap();
    assert_eq!(shutdown.len(), 48);
    t.rec("shutdown", &shutdown);
    assert_eq!(phone.on_message(&shutdown).unwrap(), PhoneEvent::Shutdown);

    t.check(PINNED);

    // The linking data lets the next session skip the QR code: the linked flow.
    let stored = LinkedPhone::from_linking(&linking, connect.domain_id);
    assert_eq!(stored.name, "Test phone");
    let stored = LinkedPhone::from_bytes(&stored.to_bytes()).unwrap();
    assert!(LinkedPhone::from_bytes(&[0xa0]).is_err());
    hybridge_proto::session::check_connect_signal(&[0]).unwrap();
    assert!(hybridge_proto::session::check_connect_signal(&[0, 0]).is_err());
    let mut rng = rand::rngs::OsRng;
    let mut laptop = LaptopLinked::new(&mut rng, stored, RequestType::MakeCredential);
    assert_eq!(
        laptop.contact_path(),
        TunnelPath::Contact {
            contact_id: b"contact".to_vec()
        }
    );
    let payload =
        hybridge_proto::linking::ClientPayload::from_header_value(&laptop.client_payload_header())
            .unwrap();
    let secret = LinkSecret::new([6; 32]); // the phone recomputes it from payload.link_id
    let mut phone = PhoneLinked::new(secret, &payload);
    let sd = phone.service_data(AdvertPlaintext::linked(&mut rng));
    assert!(laptop.on_advert(&sd).unwrap());
    let m1 = laptop.handshake_message(&keys::generate(&mut rng)).unwrap();
    let (mut phone, m2) = phone
        .respond(&phone_identity, &m1, &keys::generate(&mut rng))
        .unwrap();
    let mut laptop = laptop.finish(&m2).unwrap();
    let ph = phone
        .post_handshake(&PostHandshake::ctap(get_info.clone()))
        .unwrap();
    assert!(matches!(
        laptop.on_message(&ph).unwrap()[0],
        LaptopEvent::PostHandshake { .. }
    ));
    // A getInfo sent over the tunnel is answered by the channel itself, from the
    // post-handshake getInfo; one with a payload gets INVALID_LENGTH. The request after it
    // is served as usual.
    for (request, answer) in [
        (vec![0x04], [&[0x00][..], &get_info].concat()),
        (vec![0x04, 0xa0], vec![0x03]),
    ] {
        let ct = laptop.send_ctap(&request).unwrap();
        let PhoneEvent::Answered(reply) = phone.on_message(&ct).unwrap() else {
            panic!("getInfo {request:02x?} is answered by the channel");
        };
        assert_eq!(
            laptop.on_message(&reply).unwrap(),
            vec![LaptopEvent::CtapResponse(answer)]
        );
    }
    let req = laptop.send_ctap(&[0x02, 0xa0]).unwrap();
    assert_eq!(
        phone.on_message(&req).unwrap(),
        PhoneEvent::CtapRequest(vec![0x02, 0xa0])
    );
    let resp = phone.send_ctap(&[0x2e]).unwrap();
    assert_eq!(
        laptop.on_message(&resp).unwrap(),
        vec![LaptopEvent::CtapResponse(vec![0x2e])]
    );
}

#[test]
fn revision_0_session() {
    // A desktop without QR key 4 (old "v2.0" convention) gets a revision-0 phone: padded
    // post-handshake message, no type bytes, no shutdown message.
    let keys = QrKeys {
        identity: seed(1),
        secret: QrSecret::new([2; 16]),
    };
    let laptop_qr = LaptopQr::new(keys.clone(), 1, false, RequestType::GetAssertion);
    let mut payload = laptop_qr.qr_payload().clone();
    payload.supports_linking = None;
    let mut phone = PhoneQr::from_payload(payload);
    assert_eq!(phone.revision(), ProtocolRevision::V0);
    let mut laptop = laptop_qr;
    let sd = phone.service_data(
        AdvertPlaintext {
            nonce: [1; 10],
            routing_id: RoutingId([1, 2, 3]),
            domain_id: 1,
        },
        None,
    );
    assert!(laptop.on_advert(&sd).unwrap().is_some());
    let m1 = laptop.handshake_message(&seed(3)).unwrap();
    let (mut phone, m2) = phone.respond(&m1, &seed(4)).unwrap();
    let mut laptop = laptop.finish(&m2).unwrap();
    let ph = phone
        .post_handshake(&PostHandshake::ctap(vec![0xa0]))
        .unwrap();
    assert_eq!(ph.len(), 512 + 32 + 16);
    let ev = laptop.on_message(&ph).unwrap();
    assert!(matches!(
        ev[0],
        LaptopEvent::PostHandshake {
            revision: ProtocolRevision::V0,
            ..
        }
    ));
    assert!(phone.update(None).is_err());
    let req = laptop.send_ctap(&[0x02, 0xa0]).unwrap();
    assert_eq!(
        phone.on_message(&req).unwrap(),
        PhoneEvent::CtapRequest(vec![0x02, 0xa0])
    );
    let resp = phone.send_ctap(&[0x00]).unwrap();
    assert_eq!(
        laptop.on_message(&resp).unwrap(),
        vec![LaptopEvent::CtapResponse(vec![0x00])]
    );
    assert_eq!(laptop.shutdown().unwrap(), None);
}

#[test]
fn tampering_and_misuse_are_errors() {
    let keys = QrKeys {
        identity: seed(1),
        secret: QrSecret::new([2; 16]),
    };
    let mut laptop = LaptopQr::new(keys, 1, true, RequestType::GetAssertion);
    assert!(laptop.handshake_message(&seed(3)).is_err(), "no advert yet");
    let mut phone = PhoneQr::from_qr_url(&laptop.qr_url()).unwrap();
    assert!(
        PhoneQr::from_qr_url(&laptop.qr_url())
            .unwrap()
            .respond(&[0; 81], &seed(4))
            .is_err()
    );
    let sd = phone.service_data(
        AdvertPlaintext {
            nonce: [1; 10],
            routing_id: RoutingId([1, 2, 3]),
            domain_id: 0,
        },
        None,
    );
    laptop.on_advert(&sd).unwrap().unwrap();
    let m1 = laptop.handshake_message(&seed(3)).unwrap();
    let mut bad = m1;
    bad[70] ^= 1;
    assert!(
        PhoneQr::from_qr_url(&laptop.qr_url())
            .unwrap()
            .respond(&bad, &seed(4))
            .is_err()
    );
    let (mut phone, m2) = phone.respond(&m1, &seed(4)).unwrap();
    let mut laptop = laptop.finish(&m2).unwrap();
    assert!(laptop.send_ctap(&[1]).is_err(), "before post-handshake");
    assert!(phone.on_message(&[0; 48]).is_err());
    let mut ph = phone
        .post_handshake(&PostHandshake::ctap(vec![0xa0]))
        .unwrap();
    ph[3] ^= 1;
    assert!(laptop.on_message(&ph).is_err());
}

#[rustfmt::skip]
const PINNED: &[(&str, &str)] = &[
    ("qr_url", "FIDO:/604720534603695745967440103507076031914903803906525241519053272300990700385978426558400565158908878399005651576002974740056515760029747400265340480783106107096654083332"),
    ("tunnel_id", "32b612f7624691d32388e08dc8ebaab4"),
    ("advert", "263f222391bd7391bc5379699329c8329aa02ec1"),
    ("noise_msg1", "04f71f5a3104b2a87d4a424ba3c57a6a07151da16d24c0889c0dc45e47b241e64aeea6df6890f4fbdaa4d21c3faeb069f1d956843d6211ef8db8eeb5cf39fec2f24fb9b2654bacb0642d999a6ec463f5b0"),
    ("noise_msg2", "04ab05ac46807cc24b7fb1c2c677b7f327ed8957c4c066cb8e543f38022611128375adaadf98e1270005d8fb7d899fa1baf418e42512a264b7618d51abd7087854c6d3124b8651768bf7e7ff8c0c1be7c9"),
    ("handshake_hash", "602540cadcb1c36d69713a33c005b76f637d71b8b5c310fd82ba93d901193958"),
    ("post_handshake", "c370d36327cb651bfc5c1ad28b38f22946f355ca835f6caf1a0f26b33f3ae6cf4106568bdc8bd65a31a8e99b648a2080656e3e144b7f2688be93001619fd8f7d2685863bcdd1f7634faa52754e77a94d"),
    ("update", "059ac18a2e0a2c3c7d31471f8be5d614d35fa0b3d77df05a98b3db57272f735a4d7b2a30a48ee34c9559b284eacfd86e70714fd86de6b4286aa0ad3e9b82195fe2a1ebc6799be76db57122b8fbeebf5b8f8565eb3ad32aeb26142eeaace475ac66b8a536a2624547bc2362bd348fc876a08a1723f412194ea2ec224a6ac87562db9bc8ab736b18551edc7a7ffe28c6b1b4b268fd6617e56c492c4db2873d82a1f589dac21db9feef5eda65af5a1f86472d33bd05c1d17ac1ac1abf6af57ad5e81bc33abd6ef4b2bf1f6a148336449b9d44b3836ba41666b9a8f115383bee5425c431a3db956408212aebd70cdf353ffdc8eccb4361b081d9543fc555081d42880193cf8dfc591e35ab90db653884de8d0c92c8df0d7849a161dc13e7a2af99f85522fdb65d88b2901e8bdbd4dd7c56e60cb288494ff873b0928dd7e87b5cdf0b4432a24b41e39e235700e3348f2962554b1c2b2b2554afa585f82bfe4d79f6ee7bdc5fadc4fb7f16c605d078b3a7229b155f544a297221dd184af515ccbd6608ad3def8ed67ea39218b0483f4f9d57d1ea67839fb0b4a902147586b33eeda2c909f145b79e21cbd0dcf934ce28410c3aaf0c5592719ed9069b7355d1d035c8c0a677c387bc1a235e76c25ce31b0922011a149cee9fc62b3f0ccd23c5d2bb10f0c2416d1e23a4b8d8451b654d4bc1b6a03e3b7f9134121c0212a43201bd8ad82eebcc2671275d3c169e97f00f1f72fcb6"),
    ("ctap_request", "0567b4d82ae4cadee27ba9174a0451843ffc794a89c62f08c14e28898f1bddd7688e359416ba04e7bacbf9cbbea134ad4da0630100e2d18d660e9bcea3bf538c02d708c350e6324b35f497691e99bfc1"),
    ("ctap_response", "a689f387f1cc91b9a1d98878cbd4b48e7edf8f67831f6efdd06ee4df68dc18637b820e2da93317bb76a48f21f0c75a85"),
    ("shutdown", "1a3d2167f724b6ccc1c8b5ae6e3a9d31c39eb1b633ce5e3c468ba79c1a1874448510ff6c14a84e7547658fd7e0529858"),
];

/// A deterministic "RNG" for pinning: repeats one byte. Only for tests.
struct FixedRng(u8);

impl rand_core::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(self.0);
        Ok(())
    }
}

impl rand_core::CryptoRng for FixedRng {}

#[test]
fn linked_flow_transcript_is_pinned() {
    let mut t = Transcript::default();
    // The phone derives link secrets from its root secret and the pairing ID (docs/protocol.md §3.1).
    let phone_identity = seed(5);
    let root = [6u8; 32];
    let link_id = vec![8u8; 8];
    let stored = LinkedPhone {
        contact_id: b"contact".to_vec(),
        link_id: link_id.clone(),
        link_secret: hybridge_proto::kdf::phone_link_secret(&root, Some(b"contact"), &link_id),
        public_key: phone_identity.public_key(),
        name: "Test phone".into(),
        domain_id: 0,
    };
    let mut laptop = LaptopLinked::new(&mut FixedRng(0x11), stored, RequestType::GetAssertion);
    t.rec_text("contact_path", &laptop.contact_path().to_path());
    t.rec_text("client_payload", &laptop.client_payload_header());

    // Phone: woken with the client payload, recomputes the link secret, advertises.
    let payload =
        hybridge_proto::linking::ClientPayload::from_header_value(&laptop.client_payload_header())
            .unwrap();
    let secret = hybridge_proto::kdf::phone_link_secret(&root, Some(b"contact"), &payload.link_id);
    let mut phone = PhoneLinked::new(secret, &payload);
    let sd = phone.service_data(AdvertPlaintext::linked(&mut FixedRng(0x22)));
    t.rec("linked_advert", &sd);
    assert!(!laptop.on_advert(&[0; 20]).unwrap());
    assert!(laptop.on_advert(&sd).unwrap());

    // NKpsk0 against the phone's identity key.
    let m1 = laptop.handshake_message(&seed(3)).unwrap();
    t.rec("nk_msg1", m1);
    let (mut phone, m2) = phone.respond(&phone_identity, &m1, &seed(4)).unwrap();
    t.rec("nk_msg2", m2);
    let mut laptop = laptop.finish(&m2).unwrap();
    t.rec("nk_handshake_hash", laptop.handshake_hash());
    let ph = phone
        .post_handshake(&PostHandshake::ctap(vec![0xa0]))
        .unwrap();
    t.rec("nk_post_handshake", &ph);
    assert!(matches!(
        laptop.on_message(&ph).unwrap()[0],
        LaptopEvent::PostHandshake { .. }
    ));
    // Linking data on a linked connection cannot be verified, so the phone offers none.
    assert!(
        phone
            .linking_info(
                &phone_identity,
                vec![],
                vec![],
                LinkSecret::new([0; 32]),
                String::new()
            )
            .is_none()
    );
    t.check(PINNED_LINKED);
}

#[rustfmt::skip]
const PINNED_LINKED: &[(&str, &str)] = &[
    ("contact_path", "/cable/contact/Y29udGFjdA"),
    ("client_payload", "A30148080808080808080802501111111111111111111111111111111103626761"),
    ("linked_advert", "c9fb77b60493c1ddc3ff1fa1d971b7b6a82da3e1"),
    ("nk_msg1", "04f71f5a3104b2a87d4a424ba3c57a6a07151da16d24c0889c0dc45e47b241e64aeea6df6890f4fbdaa4d21c3faeb069f1d956843d6211ef8db8eeb5cf39fec2f2ba2341308661fb6e36dd3958bb29651d"),
    ("nk_msg2", "04ab05ac46807cc24b7fb1c2c677b7f327ed8957c4c066cb8e543f38022611128375adaadf98e1270005d8fb7d899fa1baf418e42512a264b7618d51abd7087854d310d69058fbaeabf9a0a6ed4c7e00c0"),
    ("nk_handshake_hash", "ac5a048f042b2fd00cf044dde9709026eddb2d353b5a855241824316d139bd5a"),
    ("nk_post_handshake", "2d6bfc206b187a4ed293eea5f3bcf2fe0d2a0a004cbedfe522229daf2d43182c9317ca30d712043c29da5cbb4559b184"),
];

#[test]
fn authenticator_selection_ends_the_phone_channel() {
    let keys = QrKeys {
        identity: seed(1),
        secret: QrSecret::new([2; 16]),
    };
    let mut laptop = LaptopQr::new(keys, 1, true, RequestType::GetAssertion);
    let mut phone = PhoneQr::from_payload(laptop.qr_payload().clone());
    let sd = phone.service_data(
        AdvertPlaintext {
            nonce: [1; 10],
            routing_id: RoutingId([1, 2, 3]),
            domain_id: 1,
        },
        None,
    );
    assert!(laptop.on_advert(&sd).unwrap().is_some());
    let m1 = laptop.handshake_message(&seed(3)).unwrap();
    let (mut phone, m2) = phone.respond(&m1, &seed(4)).unwrap();
    let mut laptop = laptop.finish(&m2).unwrap();
    let ph = phone
        .post_handshake(&PostHandshake::ctap(vec![0xa0]))
        .unwrap();
    laptop.on_message(&ph).unwrap();
    let req = laptop.send_ctap(&[0x0B]).unwrap();
    assert_eq!(
        phone.on_message(&req).unwrap(),
        PhoneEvent::SelectionRefused
    );
    assert!(
        phone.send_ctap(&[0x00]).is_err(),
        "no answer: the channel is closed"
    );
}

/// Chrome on Linux accepts only 20 bytes of service data, so the CTAP 2.3 suffix is added only
/// when the QR code lists BLE L2CAP among its data channels (key 6 as a list), even when the
/// phone has a PSM to offer: not for an older QR code without key 6, nor for webauthn-rs's
/// boolean key 6, nor for a list without channel 1.
#[test]
fn the_advert_suffix_needs_a_qr_code_that_lists_l2cap() {
    use hybridge_proto::qr::{Key6, QrPayload};
    let keys = QrKeys {
        identity: seed(1),
        secret: QrSecret::new([2; 16]),
    };
    let plain = || AdvertPlaintext {
        nonce: [3; 10],
        routing_id: RoutingId([4, 5, 6]),
        domain_id: 0,
    };
    let with_key6 = |key6: Option<Key6>| {
        let mut payload: QrPayload =
            LaptopQr::new(keys.clone(), 1, true, RequestType::GetAssertion)
                .qr_payload()
                .clone();
        payload.key6 = key6;
        // Through the QR text, as a phone would read it.
        PhoneQr::from_qr_url(&payload.to_url()).unwrap()
    };
    for key6 in [
        None,
        Some(Key6::NonDiscoverableMc(true)),
        Some(Key6::DataChannels(vec![0])),
    ] {
        let mut phone = with_key6(key6.clone());
        assert_eq!(
            phone.service_data(plain(), Some(0x81)).len(),
            20,
            "{key6:?}"
        );
    }
    let mut phone = with_key6(Some(Key6::DataChannels(vec![0, 1])));
    assert_eq!(
        phone.service_data(plain(), None).len(),
        20,
        "no PSM, no suffix"
    );
    let sd = phone.service_data(plain(), Some(0x81));
    assert!(sd.len() > 20);
    let suffix = hybridge_proto::advert::AdvertSuffix::parse(&sd[20..]).unwrap();
    assert_eq!(suffix.l2cap_psm, Some(0x81));
}

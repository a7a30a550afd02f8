//! Message framing after the handshake (docs/protocol.md §8.2–§8.4).
//!
//! * The **first** message from the phone is the post-handshake message: a CBOR map with no
//!   type byte ([`PostHandshake`]). Protocol revision 0 phones pad it ("padded CBOR").
//! * Every later message in revision 1 is `type ‖ payload` ([`Message`]); in revision 0 there is
//!   no type byte (everything is CTAP) and no shutdown message.
//! * Phones send an [`Update`] right after the post-handshake message, padded so that the
//!   Crypter plaintext is 512 bytes whether or not it carries linking data.

use hybridge_cbor::Value;

use crate::linking::LinkingInfo;
use crate::{ApiMisuse, Error, InvalidMessage};

/// Protocol revision, decided by the phone from QR key 4 (docs/protocol.md §2.1, §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolRevision {
    /// caBLE v2.0: no type byte, no shutdown message, padded post-handshake message.
    V0 = 0,
    /// caBLE v2.1: type byte on every message after the first.
    V1 = 1,
}

impl ProtocolRevision {
    /// The revision a phone speaks for this QR code, as an old Chrome on Android decides it:
    /// 1 when key 4 is present, 0 when absent (docs/protocol.md §2.1).
    pub fn of_qr(payload: &crate::qr::QrPayload) -> Self {
        if payload.supports_linking.is_some() {
            Self::V1
        } else {
            Self::V0
        }
    }
}

/// The type byte of a revision-1 message (`MessageType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Desktop → phone: the session is over.
    Shutdown = 0,
    /// A CTAP2 request (`cmd ‖ CBOR`) or response (`status ‖ CBOR`).
    Ctap = 1,
    /// A CBOR map; from the phone it may carry linking data.
    Update = 2,
    /// UTF-8 JSON (digital credentials).
    Json = 3,
}

/// One framed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Type 0, empty payload.
    Shutdown,
    /// Type 1.
    Ctap(Vec<u8>),
    /// Type 2: raw CBOR payload (see [`Update`]).
    Update(Vec<u8>),
    /// Type 3.
    Json(String),
}

impl Message {
    /// The type byte.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Shutdown => MessageType::Shutdown,
            Self::Ctap(_) => MessageType::Ctap,
            Self::Update(_) => MessageType::Update,
            Self::Json(_) => MessageType::Json,
        }
    }

    /// The Crypter plaintext for this message. Revision 0 can only carry CTAP.
    pub fn encode(&self, rev: ProtocolRevision) -> Result<Vec<u8>, Error> {
        match (rev, self) {
            (ProtocolRevision::V0, Self::Ctap(p)) => Ok(p.clone()),
            (ProtocolRevision::V0, _) => Err(ApiMisuse::OnlyCtapInRevision0.into()),
            (ProtocolRevision::V1, m) => {
                let payload: &[u8] = match m {
                    Self::Shutdown => &[],
                    Self::Ctap(p) | Self::Update(p) => p,
                    Self::Json(s) => s.as_bytes(),
                };
                let mut out = Vec::with_capacity(1 + payload.len());
                out.push(m.message_type() as u8);
                out.extend_from_slice(payload);
                Ok(out)
            }
        }
    }

    /// Parses a Crypter plaintext (other than the post-handshake message).
    pub fn decode(plaintext: &[u8], rev: ProtocolRevision) -> Result<Self, Error> {
        if rev == ProtocolRevision::V0 {
            return Ok(Self::Ctap(plaintext.to_vec()));
        }
        let (&t, payload) = plaintext.split_first().ok_or(InvalidMessage::EmptyFrame)?;
        match t {
            0 if payload.is_empty() => Ok(Self::Shutdown),
            0 => Err(InvalidMessage::ShutdownWithPayload.into()),
            1 => Ok(Self::Ctap(payload.to_vec())),
            2 => Ok(Self::Update(payload.to_vec())),
            3 => String::from_utf8(payload.to_vec())
                .map(Self::Json)
                .map_err(|_| InvalidMessage::JsonNotUtf8.into()),
            t => Err(InvalidMessage::UnknownMessageType(t).into()),
        }
    }
}

/// Granularity of the current padded-CBOR form (`kPostHandshakeMsgPaddingGranularity`).
pub const PADDED_CBOR_GRANULARITY: usize = 512;
/// Granularity of the legacy (pre-M99) padded-CBOR form.
pub const LEGACY_PADDED_CBOR_GRANULARITY: usize = 256;
/// Length of an update message plaintext (type byte included) before Crypter padding: 511
/// pads to exactly 512, so the ciphertext is 528 bytes with or without linking data.
pub const UPDATE_TARGET_LEN: usize = 511;

/// Padded CBOR, current form: `cbor ‖ zeros ‖ LE16(zero count)`, a multiple of 512 bytes.
pub fn encode_padded_cbor(v: &Value) -> Vec<u8> {
    let mut out = hybridge_cbor::encode(v);
    let total = (out.len() + 2).div_ceil(PADDED_CBOR_GRANULARITY) * PADDED_CBOR_GRANULARITY;
    let zeros = total - out.len() - 2;
    out.resize(total - 2, 0);
    // zeros < 512, fits in u16.
    out.extend_from_slice(&(zeros as u16).to_le_bytes());
    out
}

/// Padded CBOR, legacy form: `cbor ‖ zeros ‖ u8(zero count)`, a multiple of 256 bytes.
pub fn encode_legacy_padded_cbor(v: &Value) -> Vec<u8> {
    let mut out = hybridge_cbor::encode(v);
    let total =
        (out.len() + 1).div_ceil(LEGACY_PADDED_CBOR_GRANULARITY) * LEGACY_PADDED_CBOR_GRANULARITY;
    let zeros = total - out.len() - 1;
    out.resize(total - 1, 0);
    out.push(zeros as u8);
    out
}

/// Decodes padded CBOR: the 16-bit form first, then the legacy 8-bit form (as Chromium does).
/// The payload must be a map.
pub fn decode_padded_cbor(b: &[u8]) -> Result<Value, Error> {
    let try_form = |granularity: usize, count_len: usize| -> Option<Value> {
        if b.is_empty() || b.len() % granularity != 0 {
            return None;
        }
        let (body, count) = b.split_at(b.len() - count_len);
        let zeros = match count_len {
            2 => usize::from(u16::from_le_bytes([count[0], count[1]])),
            _ => usize::from(count[0]),
        };
        let cbor = body.get(..body.len().checked_sub(zeros)?)?;
        hybridge_cbor::decode(cbor).ok().filter(Value::is_map)
    };
    try_form(PADDED_CBOR_GRANULARITY, 2)
        .or_else(|| try_form(LEGACY_PADDED_CBOR_GRANULARITY, 1))
        .ok_or(Error::from(InvalidMessage::Field(
            "message is neither a CBOR map nor padded CBOR",
        )))
}

/// authenticatorGetInfo's command byte (docs/protocol.md §9), and the status for one that carries a
/// payload (CTAP 2.1 §8.2 `CTAP1_ERR_INVALID_LENGTH`).
const CTAP_GET_INFO: u8 = 0x04;
/// authenticatorSelection's command byte (CTAP 2.1 §6.9, docs/protocol.md §9).
pub(crate) const CTAP_SELECTION: u8 = 0x0B;
const CTAP1_ERR_INVALID_LENGTH: u8 = 0x03;

/// The answer to a CTAP `request` (`cmd ‖ CBOR`) if it is authenticatorGetInfo, built from
/// the post-handshake message's `get_info` (docs/protocol.md §9): `0x00 ‖ getInfo`, or
/// `CTAP1_ERR_INVALID_LENGTH` when a payload follows the command. `None` for any other
/// command. Both sides answer getInfo this way: the laptop instead of sending it (as Chromium
/// and libwebauthn do), the phone when a laptop sends it anyway (as Chrome's phone does).
pub fn get_info_reply(request: &[u8], get_info: &[u8]) -> Option<Vec<u8>> {
    match request {
        [CTAP_GET_INFO] => Some([&[0x00][..], get_info].concat()),
        [CTAP_GET_INFO, ..] => Some(vec![CTAP1_ERR_INVALID_LENGTH]),
        _ => None,
    }
}

/// The phone's first message after the handshake (docs/protocol.md §8.3).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PostHandshake {
    /// Key 1: the authenticatorGetInfo response map as CBOR bytes (no status byte).
    pub get_info: Option<Vec<u8>>,
    /// Key 2: linking data in the legacy location; only meaningful in QR flows. Invalid
    /// linking data is dropped, not fatal.
    pub linking: Option<LinkingInfo>,
    /// Key 3: features (`"ctap"`, `"dc"`); `None` if absent, meaning CTAP only.
    pub features: Option<Vec<String>>,
}

impl PostHandshake {
    /// A CTAP-only post-handshake message.
    pub fn ctap(get_info: Vec<u8>) -> Self {
        Self {
            get_info: Some(get_info),
            linking: None,
            features: None,
        }
    }

    /// Whether the phone speaks CTAP (feature `"ctap"`, or no feature list).
    pub fn supports_ctap(&self) -> bool {
        self.features
            .as_ref()
            .is_none_or(|f| f.iter().any(|x| x == "ctap"))
    }

    /// Whether the phone offers digital credentials (feature `"dc"`).
    pub fn supports_dc(&self) -> bool {
        self.features
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == "dc"))
    }

    /// The CBOR map.
    pub fn to_cbor(&self) -> Value {
        let mut m = Vec::new();
        if let Some(g) = &self.get_info {
            m.push((Value::from(1u8), Value::from(g.clone())));
        }
        if let Some(l) = &self.linking {
            m.push((Value::from(2u8), l.to_cbor()));
        }
        if let Some(f) = &self.features {
            let mut f = f.clone();
            f.sort();
            m.push((
                Value::from(3u8),
                Value::Array(f.into_iter().map(Value::from).collect()),
            ));
        }
        Value::Map(m)
    }

    /// The Crypter plaintext: canonical CBOR in revision 1, padded CBOR in revision 0.
    pub fn encode(&self, rev: ProtocolRevision) -> Vec<u8> {
        match rev {
            ProtocolRevision::V1 => hybridge_cbor::encode(&self.to_cbor()),
            ProtocolRevision::V0 => encode_padded_cbor(&self.to_cbor()),
        }
    }

    /// Parses the first Crypter plaintext from the phone. Strict CBOR means revision 1; CBOR
    /// followed by trailing bytes means revision 0 padded CBOR.
    pub fn decode(plaintext: &[u8]) -> Result<(Self, ProtocolRevision), Error> {
        let (v, rev) = match hybridge_cbor::decode(plaintext) {
            Ok(v) => (v, ProtocolRevision::V1),
            Err(hybridge_cbor::Error::TrailingBytes { .. }) => {
                (decode_padded_cbor(plaintext)?, ProtocolRevision::V0)
            }
            Err(e) => return Err(e.into()),
        };
        Ok((Self::from_cbor(&v)?, rev))
    }

    /// Interprets the map; unknown keys (0 = padding, others) are ignored.
    pub fn from_cbor(v: &Value) -> Result<Self, Error> {
        if !v.is_map() {
            return Err(InvalidMessage::Field("post-handshake message is not a CBOR map").into());
        }
        let features = match v.get(3u8) {
            None => None,
            Some(f) => Some(
                f.as_array()
                    .ok_or(InvalidMessage::Field(
                        "post-handshake key 3 (features) must be an array",
                    ))?
                    .iter()
                    .filter_map(|x| x.as_text().map(str::to_owned))
                    .collect::<Vec<_>>(),
            ),
        };
        let linking = v.get(2u8).and_then(|l| LinkingInfo::from_cbor(l).ok());
        let mut ph = Self {
            get_info: None,
            linking,
            features,
        };
        // Key 1 is required only when the phone offers CTAP: then it must be a byte string.
        let key1 = v.get(1u8);
        ph.get_info = match (key1, ph.supports_ctap()) {
            (Some(g), ctap) => match g.as_bytes() {
                Some(b) => Some(b.to_vec()),
                None if ctap => return Err(Error::MissingGetInfo("key 1 is not a byte string")),
                None => None,
            },
            (None, true) => return Err(Error::MissingGetInfo("key 1 is absent")),
            (None, false) => None,
        };
        Ok(ph)
    }
}

/// An update message's payload (docs/protocol.md §8.4): `{0: zero padding, 1: linking map}`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Update {
    /// Key 1, if present and valid.
    pub linking: Option<LinkingInfo>,
    /// Whether key 1 was present but did not parse (dropped, per libwebauthn).
    pub invalid_linking: bool,
}

impl Update {
    /// The full revision-1 plaintext `0x02 ‖ CBOR`, padded with key 0 so it is
    /// [`UPDATE_TARGET_LEN`] bytes (or as close below as CBOR lengths allow) — linking or not.
    pub fn encode_padded(linking: Option<&LinkingInfo>) -> Vec<u8> {
        let build = |n: usize| {
            let mut m = vec![(Value::from(0u8), Value::Bytes(vec![0; n]))];
            if let Some(l) = linking {
                m.push((Value::from(1u8), l.to_cbor()));
            }
            let mut out = vec![MessageType::Update as u8];
            out.extend_from_slice(&hybridge_cbor::encode(&Value::Map(m)));
            out
        };
        let mut best = build(0);
        for n in 1..UPDATE_TARGET_LEN {
            let candidate = build(n);
            if candidate.len() > UPDATE_TARGET_LEN {
                break;
            }
            best = candidate;
        }
        best
    }

    /// Parses an update payload (after the type byte). It must be a CBOR map.
    pub fn decode(payload: &[u8]) -> Result<Self, Error> {
        let v = hybridge_cbor::decode(payload)?;
        if !v.is_map() {
            return Err(InvalidMessage::Field("update message is not a CBOR map").into());
        }
        Ok(match v.get(1u8) {
            None => Self::default(),
            Some(l) => match LinkingInfo::from_cbor(l) {
                Ok(l) => Self {
                    linking: Some(l),
                    invalid_linking: false,
                },
                Err(_) => Self {
                    linking: None,
                    invalid_linking: true,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_info_is_answered_from_the_post_handshake_get_info() {
        assert_eq!(get_info_reply(&[0x04], &[0xa0]), Some(vec![0x00, 0xa0]));
        assert_eq!(get_info_reply(&[0x04, 0xa0], &[0xa0]), Some(vec![0x03]));
        assert_eq!(get_info_reply(&[0x01, 0xa0], &[0xa0]), None);
        assert_eq!(get_info_reply(&[], &[0xa0]), None);
    }
    use crate::keys;
    use crate::secret::LinkSecret;
    use proptest::prelude::*;

    #[test]
    fn padded_cbor_vectors() {
        // docs/protocol.md §10.6 (Chromium PaddedCBOR) and §8.3 [computed].
        let empty = encode_padded_cbor(&Value::Map(vec![]));
        assert_eq!(empty.len(), 512);
        assert_eq!(&empty[510..], &[0xfd, 0x01]);
        assert_eq!(decode_padded_cbor(&empty).unwrap(), Value::Map(vec![]));
        let big = Value::map([(Value::from(1u8), Value::Bytes(vec![0; 512]))]);
        let enc = encode_padded_cbor(&big);
        assert_eq!(enc.len(), 1024);
        assert_eq!(decode_padded_cbor(&enc).unwrap(), big);
        let legacy = encode_legacy_padded_cbor(&big);
        assert_eq!(legacy.len() % 256, 0);
        assert_eq!(decode_padded_cbor(&legacy).unwrap(), big);
        let legacy_empty = encode_legacy_padded_cbor(&Value::Map(vec![]));
        assert_eq!((legacy_empty.len(), legacy_empty[255]), (256, 254));
        assert_eq!(
            decode_padded_cbor(&legacy_empty).unwrap(),
            Value::Map(vec![])
        );
        assert!(decode_padded_cbor(&[0xa0, 0, 0]).is_err());
        assert!(decode_padded_cbor(&[]).is_err());
    }

    #[test]
    fn framing() {
        let v1 = ProtocolRevision::V1;
        assert_eq!(Message::Shutdown.encode(v1).unwrap(), vec![0]);
        assert_eq!(Message::Ctap(vec![4]).encode(v1).unwrap(), vec![1, 4]);
        for m in [
            Message::Shutdown,
            Message::Ctap(vec![1, 2]),
            Message::Update(vec![0xa0]),
            Message::Json("{}".into()),
        ] {
            assert_eq!(Message::decode(&m.encode(v1).unwrap(), v1).unwrap(), m);
        }
        assert!(Message::decode(&[], v1).is_err());
        assert!(Message::decode(&[4], v1).is_err());
        assert!(Message::decode(&[0, 1], v1).is_err());
        assert!(Message::decode(&[3, 0xff], v1).is_err());
        let v0 = ProtocolRevision::V0;
        assert_eq!(Message::Ctap(vec![1, 2]).encode(v0).unwrap(), vec![1, 2]);
        assert!(Message::Shutdown.encode(v0).is_err());
        assert_eq!(Message::decode(&[0], v0).unwrap(), Message::Ctap(vec![0]));
    }

    #[test]
    fn post_handshake_revisions() {
        let ph = PostHandshake {
            get_info: Some(vec![0xa0]),
            linking: None,
            features: Some(vec!["dc".into(), "ctap".into()]),
        };
        let (got, rev) = PostHandshake::decode(&ph.encode(ProtocolRevision::V1)).unwrap();
        assert_eq!(rev, ProtocolRevision::V1);
        assert_eq!(
            got.features.as_deref(),
            Some(&["ctap".to_string(), "dc".to_string()][..])
        );
        assert!(got.supports_ctap() && got.supports_dc());
        let padded = ph.encode(ProtocolRevision::V0);
        assert_eq!(padded.len(), 512);
        assert_eq!(
            PostHandshake::decode(&padded).unwrap().1,
            ProtocolRevision::V0
        );
        let legacy = encode_legacy_padded_cbor(&ph.to_cbor());
        assert_eq!(
            PostHandshake::decode(&legacy).unwrap().1,
            ProtocolRevision::V0
        );
        // Key 0 padding and unknown keys tolerated; missing getInfo with ctap is an error.
        let v = Value::map([
            (Value::from(0u8), Value::Bytes(vec![0; 5])),
            (Value::from(1u8), Value::Bytes(vec![0xa0])),
            (Value::from(7u8), Value::Null),
        ]);
        assert!(PostHandshake::decode(&hybridge_cbor::encode(&v)).is_ok());
        assert_eq!(
            PostHandshake::decode(&hybridge_cbor::encode(&Value::Map(vec![]))),
            Err(Error::MissingGetInfo("key 1 is absent"))
        );
        let not_bytes = Value::map([(Value::from(1u8), Value::from("getInfo"))]);
        assert_eq!(
            PostHandshake::decode(&hybridge_cbor::encode(&not_bytes)),
            Err(Error::MissingGetInfo("key 1 is not a byte string"))
        );
        let dc_only = Value::map([(Value::from(3u8), Value::array(["dc"]))]);
        assert!(PostHandshake::decode(&hybridge_cbor::encode(&dc_only)).is_ok());
        // A phone without CTAP may send anything under key 1: it is not a getInfo problem.
        let dc_odd_key1 = Value::map([
            (Value::from(1u8), Value::from("whatever")),
            (Value::from(3u8), Value::array(["dc"])),
        ]);
        let (ph, _) = PostHandshake::decode(&hybridge_cbor::encode(&dc_odd_key1)).unwrap();
        assert!(!ph.supports_ctap() && ph.get_info.is_none());
        assert!(PostHandshake::decode(&[0x01]).is_err());
    }

    #[test]
    fn update_is_always_511_bytes() {
        let desktop = keys::from_seed(&[8; 32]).unwrap();
        let phone = keys::from_seed(&[9; 32]).unwrap();
        let l = LinkingInfo::new_signed(
            vec![7; 100],
            vec![1; 8],
            LinkSecret::new([3; 32]),
            &phone,
            &desktop.public_key(),
            "Pixel 9".into(),
            &[0; 32],
        );
        let with = Update::encode_padded(Some(&l));
        let without = Update::encode_padded(None);
        assert_eq!(with.len(), UPDATE_TARGET_LEN);
        assert_eq!(without.len(), UPDATE_TARGET_LEN);
        assert_eq!(crate::crypter::pad(&with).len(), 512);
        let Message::Update(p) = Message::decode(&with, ProtocolRevision::V1).unwrap() else {
            panic!()
        };
        assert_eq!(Update::decode(&p).unwrap().linking, Some(l));
        let Message::Update(p) = Message::decode(&without, ProtocolRevision::V1).unwrap() else {
            panic!()
        };
        assert_eq!(Update::decode(&p).unwrap(), Update::default());
        let bad = hybridge_cbor::encode(&Value::map([(Value::from(1u8), Value::from(5u8))]));
        assert!(Update::decode(&bad).unwrap().invalid_linking);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = PostHandshake::decode(&b);
            let _ = Message::decode(&b, ProtocolRevision::V1);
            let _ = Update::decode(&b);
            let _ = decode_padded_cbor(&b);
        }

        #[test]
        fn padded_round_trip(g in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let v = Value::map([(Value::from(1u8), Value::Bytes(g))]);
            prop_assert_eq!(decode_padded_cbor(&encode_padded_cbor(&v)).unwrap(), v.clone());
            prop_assert_eq!(decode_padded_cbor(&encode_legacy_padded_cbor(&v)).unwrap(), v);
        }
    }
}

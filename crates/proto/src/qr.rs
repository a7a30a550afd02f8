//! The QR code (docs/protocol.md §2): a CBOR map, encoded as decimal digits behind `FIDO:/`.
//!
//! | key | value |
//! |---|---|
//! | 0 | desktop identity key, compressed P-256 (33 bytes), validated as a curve point |
//! | 1 | QR secret (16 bytes) |
//! | 2 | number of assigned tunnel domains the desktop knows |
//! | 3 | current time, Unix seconds |
//! | 4 | the desktop can store linking data; **always emitted** by us (newer Chromium does) |
//! | 5 | request type hint: `"ga"`, `"mc"`, `"dcp"` (unknown → `"ga"`) |
//! | 6 | CTAP 2.3 data channels; **omitted** unless direct BLE is offered (older phones read key 6 as a bool) |
//!
//! Unknown keys are ignored.

use hybridge_cbor::Value;
use p256::{PublicKey, SecretKey};

use crate::digits;
use crate::domain;
use crate::keys;
use crate::secret::QrSecret;
use crate::{Error, InvalidMessage};

/// The URL scheme prefix, matched case-insensitively.
pub const PREFIX: &str = "FIDO:/";
/// Longest QR URL we try to parse; real ones are ~180 characters.
pub const MAX_URL_LEN: usize = 4096;

/// The request hint of QR key 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RequestType {
    /// `"ga"`: getAssertion (sign in). Also what unknown strings mean.
    #[default]
    GetAssertion,
    /// `"mc"`: makeCredential (register).
    MakeCredential,
    /// `"dcp"`: digital-credential presentation.
    DigitalCredentialPresentation,
}

impl RequestType {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetAssertion => "ga",
            Self::MakeCredential => "mc",
            Self::DigitalCredentialPresentation => "dcp",
        }
    }

    /// Parses the wire string; anything unknown is getAssertion, as in Chromium.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "mc" => Self::MakeCredential,
            "dcp" => Self::DigitalCredentialPresentation,
            _ => Self::GetAssertion,
        }
    }
}

/// QR key 6, which has two incompatible meanings in the wild (docs/protocol.md §2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key6 {
    /// CTAP 2.3 (libwebauthn): supported data channels, 0 = cloud WebSocket, 1 = BLE L2CAP.
    DataChannels(Vec<u64>),
    /// webauthn-rs: "supports non-discoverable makeCredential".
    NonDiscoverableMc(bool),
}

/// The decoded contents of a hybrid QR code.
#[derive(Clone, Debug, PartialEq)]
pub struct QrPayload {
    /// Key 0: the desktop's QR identity key (the Noise KN static key).
    pub identity_key: PublicKey,
    /// Key 1: the QR secret.
    pub secret: QrSecret,
    /// Key 2: how many assigned tunnel domains the desktop knows (0 when absent).
    pub known_domains: u64,
    /// Key 3: Unix time when the code was made, if present and an unsigned integer.
    pub timestamp: Option<u64>,
    /// Key 4: whether the desktop can store linking data. `None` if absent (an old
    /// "v2.0" desktop); we always emit it.
    pub supports_linking: Option<bool>,
    /// Key 5: the request hint.
    pub request_type: RequestType,
    /// Key 6, if present in a form we understand.
    pub key6: Option<Key6>,
    /// Keys we did not recognise (ignored, kept for `hybridge inspect`).
    pub unknown_keys: Vec<Value>,
}

impl QrPayload {
    /// A payload as our desktop emits it: key 2 = the assigned domains we know, key 4 always.
    pub fn new(
        identity_key: PublicKey,
        secret: QrSecret,
        timestamp: u64,
        supports_linking: bool,
        request_type: RequestType,
    ) -> Self {
        Self {
            identity_key,
            secret,
            known_domains: u64::from(domain::KNOWN_ASSIGNED_DOMAINS),
            timestamp: Some(timestamp),
            supports_linking: Some(supports_linking),
            request_type,
            key6: None,
            unknown_keys: Vec::new(),
        }
    }

    /// The canonical CBOR map.
    pub fn to_cbor(&self) -> Value {
        let mut m: Vec<(Value, Value)> = vec![
            (0u8.into(), keys::compressed(&self.identity_key).into()),
            (1u8.into(), self.secret.expose().to_vec().into()),
            (2u8.into(), self.known_domains.into()),
        ];
        if let Some(t) = self.timestamp {
            m.push((3u8.into(), t.into()));
        }
        m.push((4u8.into(), self.supports_linking.unwrap_or(false).into()));
        m.push((5u8.into(), self.request_type.as_str().into()));
        match &self.key6 {
            Some(Key6::DataChannels(c)) => m.push((
                6u8.into(),
                Value::Array(c.iter().map(|&x| x.into()).collect()),
            )),
            Some(Key6::NonDiscoverableMc(b)) => m.push((6u8.into(), (*b).into())),
            None => {}
        }
        Value::Map(m)
    }

    /// Canonical CBOR bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        hybridge_cbor::encode(&self.to_cbor())
    }

    /// The `FIDO:/` URL to render as a QR code (upper-case prefix, so QR alphanumeric mode
    /// covers it and numeric mode the rest).
    pub fn to_url(&self) -> String {
        format!("{PREFIX}{}", digits::encode(&self.to_bytes()))
    }

    /// Parses a `FIDO:/…` URL strictly (docs/protocol.md §2.3): the prefix in any case, then only digits
    /// of valid group lengths, then one CBOR map with nothing after it.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        if url.len() > MAX_URL_LEN {
            return Err(Error::InvalidQr(
                "the URL is too long to be a hybrid QR code",
            ));
        }
        let prefix = url.get(..PREFIX.len()).ok_or(Error::NotAFidoUrl)?;
        if !prefix.eq_ignore_ascii_case(PREFIX) {
            return Err(Error::NotAFidoUrl);
        }
        let d = &url[PREFIX.len()..];
        if d.is_empty() {
            return Err(InvalidMessage::NoDigits.into());
        }
        Self::from_bytes(&digits::decode(d)?)
    }

    /// Parses the CBOR bytes of a QR payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_cbor(&hybridge_cbor::decode(bytes)?)
    }

    /// Validates a decoded CBOR map as Chromium does (`v2_handshake.cc` `Parse`).
    pub fn from_cbor(v: &Value) -> Result<Self, Error> {
        let map = v
            .as_map()
            .ok_or(Error::InvalidQr("the payload is not a CBOR map"))?;
        let mut identity_key = None;
        let mut secret = None;
        let mut known_domains = 0;
        let mut timestamp = None;
        let mut supports_linking = None;
        let mut request_type = RequestType::GetAssertion;
        let mut key6 = None;
        let mut unknown_keys = Vec::new();
        for (k, val) in map {
            match k.as_int() {
                Some(0) => {
                    let b = val
                        .as_bytes()
                        .filter(|b| b.len() == keys::COMPRESSED_LEN)
                        .ok_or(Error::InvalidQr(
                            "key 0 must be a 33-byte compressed public key",
                        ))?;
                    identity_key = Some(
                        keys::parse_public(b)
                            .map_err(|_| Error::InvalidQr("key 0 is not a valid P-256 point"))?,
                    );
                }
                Some(1) => {
                    secret = Some(
                        val.as_bytes()
                            .and_then(QrSecret::from_slice)
                            .ok_or(Error::InvalidQr("key 1 must be a 16-byte secret"))?,
                    );
                }
                Some(2) => {
                    known_domains = val
                        .as_u64()
                        .ok_or(Error::InvalidQr("key 2 must be an unsigned integer"))?;
                }
                // Chromium ignores key 3; so do we if it is not an unsigned integer.
                Some(3) => timestamp = val.as_u64(),
                Some(4) => {
                    supports_linking = Some(
                        val.as_bool()
                            .ok_or(Error::InvalidQr("key 4 must be a boolean"))?,
                    );
                }
                Some(5) => {
                    request_type = RequestType::from_wire(
                        val.as_text()
                            .ok_or(Error::InvalidQr("key 5 must be a string"))?,
                    );
                }
                Some(6) => {
                    key6 = match val {
                        Value::Bool(b) => Some(Key6::NonDiscoverableMc(*b)),
                        Value::Array(items) => Some(Key6::DataChannels(
                            items.iter().filter_map(Value::as_u64).collect(),
                        )),
                        _ => None,
                    }
                }
                _ => unknown_keys.push(k.clone()),
            }
        }
        Ok(Self {
            identity_key: identity_key.ok_or(Error::InvalidQr("key 0 (public key) is missing"))?,
            secret: secret.ok_or(Error::InvalidQr("key 1 (QR secret) is missing"))?,
            known_domains,
            timestamp,
            supports_linking,
            request_type,
            key6,
            unknown_keys,
        })
    }

    /// Whether the desktop offers the CTAP 2.3 BLE L2CAP channel (key 6 lists channel 1).
    pub fn offers_l2cap(&self) -> bool {
        matches!(&self.key6, Some(Key6::DataChannels(c)) if c.contains(&crate::advert::CHANNEL_L2CAP))
    }

    /// How many assigned domains to accept in this session's adverts, clamped to u16.
    pub fn known_domains_u16(&self) -> u16 {
        u16::try_from(self.known_domains).unwrap_or(u16::MAX)
    }
}

/// The desktop's QR-session keys: the identity private key and the QR secret.
#[derive(Clone)]
pub struct QrKeys {
    /// Private half of QR key 0 (Noise KN static key; also verifies linking signatures).
    pub identity: SecretKey,
    /// The QR secret.
    pub secret: QrSecret,
}

impl std::fmt::Debug for QrKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QrKeys(redacted)")
    }
}

impl QrKeys {
    /// Fresh keys from the caller's CSPRNG.
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Self {
        Self {
            identity: keys::generate(rng),
            secret: QrSecret::random(rng),
        }
    }

    /// Chromium's 48-byte QR key format (`kQRKeySize`): 32-byte seed ‖ 16-byte QR secret,
    /// the identity key derived from the seed as in docs/protocol.md §3.2.
    pub fn from_chromium_qr_key(qr_key: &[u8]) -> Result<Self, Error> {
        if qr_key.len() != 48 {
            return Err(Error::InvalidPrivateKey);
        }
        let identity = keys::from_seed(&qr_key[..32])?;
        let secret = QrSecret::from_slice(&qr_key[32..]).ok_or(Error::InvalidPrivateKey)?;
        Ok(Self { identity, secret })
    }

    /// The payload for these keys (see [`QrPayload::new`]).
    pub fn payload(
        &self,
        timestamp: u64,
        supports_linking: bool,
        request_type: RequestType,
    ) -> QrPayload {
        QrPayload::new(
            self.identity.public_key(),
            self.secret.clone(),
            timestamp,
            supports_linking,
            request_type,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POINT: &str = "03364C15EEC34331D2865757421D497E569E1EBA6CFF9A69D32E90F19E7F6FD15E";

    fn map(entries: Vec<(Value, Value)>) -> Vec<u8> {
        hybridge_cbor::encode(&Value::Map(entries))
    }

    fn base(extra: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
        let mut m: Vec<(Value, Value)> = vec![
            (0u8.into(), hex::decode(POINT).unwrap().into()),
            (1u8.into(), vec![0u8; 16].into()),
        ];
        for (k, v) in extra {
            m.retain(|(kk, _)| *kk != k);
            m.push((k, v));
        }
        m
    }

    #[test]
    fn chromium_known_qrs() {
        // docs/protocol.md §10.4 (Chromium KnownQRs).
        let ok = QrPayload::from_bytes(&map(base(vec![]))).unwrap();
        assert_eq!(hex::encode_upper(keys::compressed(&ok.identity_key)), POINT);
        assert_eq!(ok.known_domains, 0);
        assert_eq!(ok.supports_linking, None);
        let with_unknown =
            QrPayload::from_bytes(&map(base(vec![(1000u16.into(), 42u8.into())]))).unwrap();
        assert_eq!(with_unknown.unknown_keys, vec![Value::from(1000u16)]);
        let mut bad_point = hex::decode(POINT).unwrap();
        bad_point[32] ^= 3;
        for bad in [
            base(vec![(0u8.into(), bad_point.into())]),
            base(vec![(0u8.into(), 42u8.into())]),
            base(vec![(2u8.into(), "foo".into())]),
            base(vec![(4u8.into(), "foo".into())]),
            base(vec![(5u8.into(), 42u8.into())]),
            base(vec![(1u8.into(), vec![0u8; 15].into())]),
        ] {
            assert!(QrPayload::from_bytes(&map(bad.clone())).is_err(), "{bad:?}");
        }
        let xx = QrPayload::from_bytes(&map(base(vec![(5u8.into(), "XX".into())]))).unwrap();
        assert_eq!(xx.request_type, RequestType::GetAssertion);
        let mc = QrPayload::from_bytes(&map(base(vec![(5u8.into(), "mc".into())]))).unwrap();
        assert_eq!(mc.request_type, RequestType::MakeCredential);
        let dcp = QrPayload::from_bytes(&map(base(vec![(5u8.into(), "dcp".into())]))).unwrap();
        assert_eq!(dcp.request_type, RequestType::DigitalCredentialPresentation);
    }

    #[test]
    fn invalid_urls() {
        // docs/protocol.md §10.4 (webauthn-rs invalid_urls).
        for bad in [
            "FIDO:/",
            "FIDO://",
            "FIDO:/0",
            "FIDO:/999",
            "FIDO:/000",
            "",
            "FIDO",
            "HTTP:/123",
            "FIDO:/１２３",
        ] {
            assert!(QrPayload::from_url(bad).is_err(), "{bad}");
        }
    }

    fn chrome_like() -> QrPayload {
        let keys =
            QrKeys::from_chromium_qr_key(&[[2u8; 32].as_slice(), &[0u8; 16]].concat()).unwrap();
        keys.payload(1_700_000_000, true, RequestType::MakeCredential)
    }

    #[test]
    fn round_trip_and_case_insensitive_prefix() {
        let p = chrome_like();
        let url = p.to_url();
        assert!(url.starts_with("FIDO:/"));
        assert_eq!(QrPayload::from_url(&url).unwrap(), p);
        let lower = url.replacen("FIDO:/", "fido:/", 1);
        assert_eq!(QrPayload::from_url(&lower).unwrap(), p);
        // Key 4 always emitted (false too), key 6 omitted.
        let mut q = p.clone();
        q.supports_linking = Some(false);
        let v = hybridge_cbor::decode(&q.to_bytes()).unwrap();
        assert_eq!(v.get(4u8), Some(&Value::Bool(false)));
        assert_eq!(v.get(6u8), None);
        assert_eq!(v.get(2u8), Some(&Value::from(2u8)));
    }

    #[test]
    fn safari_shape_and_key6() {
        // Safari: key 4 false; webauthn-rs key 6 as bool; libwebauthn key 6 as a list.
        let m = base(vec![
            (2u8.into(), 2u8.into()),
            (3u8.into(), 1_700_000_000u64.into()),
            (4u8.into(), false.into()),
            (5u8.into(), "ga".into()),
            (6u8.into(), true.into()),
        ]);
        let p = QrPayload::from_bytes(&map(m)).unwrap();
        assert_eq!(p.supports_linking, Some(false));
        assert_eq!(p.key6, Some(Key6::NonDiscoverableMc(true)));
        let m = base(vec![(
            6u8.into(),
            Value::Array(vec![0u8.into(), 1u8.into()]),
        )]);
        let p = QrPayload::from_bytes(&map(m)).unwrap();
        assert!(p.offers_l2cap());
        // Key 4 is absent here; we always emit it, as false.
        let again = QrPayload::from_bytes(&p.to_bytes()).unwrap();
        assert_eq!(again.supports_linking, Some(false));
        assert_eq!(
            QrPayload {
                supports_linking: None,
                ..again
            },
            p
        );
    }

    #[test]
    fn pinned_url() {
        // A Chromium-shaped QR from the 48-byte QR key 02×32 ‖ 00×16.
        let url = chrome_like().to_url();
        assert_eq!(url, PINNED_URL);
    }
    const PINNED_URL: &str = "FIDO:/527523780267869823807477988456094361690049144990957089661531273028156577806484634349100000001342264398000000000000000000056294995342131200265340480783106109321447142660";

    proptest! {
        #[test]
        fn from_url_never_panics(s in "\\PC*") {
            let _ = QrPayload::from_url(&s);
        }

        #[test]
        fn from_digits_never_panics(s in "FIDO:/[0-9]{0,200}") {
            let _ = QrPayload::from_url(&s);
        }

        #[test]
        fn from_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = QrPayload::from_bytes(&b);
        }

        #[test]
        fn round_trips(seed in any::<[u8; 32]>(), secret in any::<[u8; 16]>(), t in any::<u64>(), link in any::<bool>(), rt in 0u8..3) {
            let Ok(identity) = keys::from_seed(&seed) else { return Ok(()); };
            let rt = [RequestType::GetAssertion, RequestType::MakeCredential, RequestType::DigitalCredentialPresentation][rt as usize];
            let p = QrKeys { identity, secret: QrSecret::new(secret) }.payload(t, link, rt);
            prop_assert_eq!(QrPayload::from_url(&p.to_url()).unwrap(), p);
        }
    }
}

//! Sans-I/O state machines for a whole hybrid session, laptop side and phone side.
//!
//! They own every protocol decision — which key decrypts which advert, which tunnel URL to
//! open, the handshake, which message is allowed when — and only take and return bytes. The
//! async crates move those bytes over WebSockets and the radio.
//!
//! QR flow:
//!
//! | laptop ([`LaptopQr`] → [`LaptopChannel`]) | | phone ([`PhoneQr`] → [`PhoneChannel`]) |
//! |---|---|---|
//! | [`LaptopQr::qr_url`] | → QR code → | [`PhoneQr::from_qr_url`], opens [`PhoneQr::new_tunnel_path`] |
//! | [`LaptopQr::on_advert`] → [`Connect`] | ← BLE advert ← | [`PhoneQr::service_data`] (routing ID from the tunnel server) |
//! | [`LaptopQr::handshake_message`] | → 81 bytes → | [`PhoneQr::respond`] |
//! | [`LaptopQr::finish`] | ← 81 bytes ← | |
//! | [`LaptopChannel::on_message`] | ← post-handshake, update ← | [`PhoneChannel::post_handshake`], [`PhoneChannel::update`] |
//! | [`LaptopChannel::send_ctap`] | → request → | [`PhoneChannel::on_message`] |
//! | [`LaptopChannel::on_message`] | ← response ← | [`PhoneChannel::send_ctap`] |
//! | [`LaptopChannel::shutdown`] | → shutdown → | [`PhoneChannel::on_message`] |
//!
//! The linked flow swaps the first three rows: [`LaptopLinked`] opens `/cable/contact` with a
//! client payload, the phone ([`PhoneLinked`]) connects and advertises with the link secret.

use p256::{PublicKey, SecretKey};

use crate::advert::{self, AdvertPlaintext, AdvertSuffix, DecryptedAdvert, DomainCheck};
use crate::crypter::Crypter;
use crate::domain;
use crate::frame::{self, Message, MessageType, PostHandshake, ProtocolRevision, Update};
use crate::handshake::{self, Handshaken, Initiator, Responder};
use crate::kdf;
use crate::linking::{ClientPayload, LinkingInfo};
use crate::qr::{QrKeys, QrPayload, RequestType};
use crate::secret::{EidKey, LinkSecret, Psk};
use crate::tunnel::{RoutingId, TunnelId, TunnelPath};
use crate::{ApiMisuse, Error, InvalidMessage, PeerMisbehaved};

/// Where the laptop connects after matching an advert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// Domain ID from the advert.
    pub domain_id: u16,
    /// Its hostname, if the ID is known (assigned 0/1 or hashed ≥ 256).
    pub hostname: Option<String>,
    /// Routing ID from the advert.
    pub routing_id: RoutingId,
    /// Tunnel ID derived from the QR secret.
    pub tunnel_id: TunnelId,
}

impl Connect {
    /// `/cable/connect/<routing>/<tunnel>`.
    pub fn path(&self) -> TunnelPath {
        TunnelPath::Connect {
            routing_id: self.routing_id,
            tunnel_id: self.tunnel_id,
        }
    }

    /// `wss://<hostname>/cable/connect/…`, when the domain has a known hostname. Deployments
    /// that map domain IDs to their own relay build the URL from [`Connect::path`] instead.
    pub fn url(&self) -> Option<String> {
        self.hostname.as_deref().map(|h| self.path().to_url(h))
    }
}

// ---------------------------------------------------------------------------------------------
// Laptop

/// The laptop side of a QR-initiated session, until the handshake completes.
#[derive(Debug)]
pub struct LaptopQr {
    keys: QrKeys,
    payload: QrPayload,
    tunnel_id: TunnelId,
    handshake: LaptopHandshake,
}

impl LaptopQr {
    /// A new QR session. `timestamp` is the current Unix time (QR key 3);
    /// `supports_linking` is QR key 4 — true only if linking data will be stored.
    pub fn new(
        keys: QrKeys,
        timestamp: u64,
        supports_linking: bool,
        request_type: RequestType,
    ) -> Self {
        let payload = keys.payload(timestamp, supports_linking, request_type);
        let handshake = LaptopHandshake::new(kdf::eid_key(&keys.secret));
        let tunnel_id = kdf::tunnel_id(&keys.secret);
        Self {
            keys,
            payload,
            tunnel_id,
            handshake,
        }
    }

    /// Offers the CTAP 2.3 data channel (QR key 6 = `[0, 1]`: the tunnel and BLE L2CAP). Only
    /// for a laptop that can open one: phones that predate CTAP 2.3 may refuse a list in key 6.
    pub fn with_data_channel(mut self) -> Self {
        self.payload.key6 = Some(crate::qr::Key6::DataChannels(vec![
            0,
            advert::CHANNEL_L2CAP,
        ]));
        self
    }

    /// The payload shown in the QR code.
    pub fn qr_payload(&self) -> &QrPayload {
        &self.payload
    }

    /// The `FIDO:/` URL to render.
    pub fn qr_url(&self) -> String {
        self.payload.to_url()
    }

    /// The tunnel ID the phone will open.
    pub fn tunnel_id(&self) -> TunnelId {
        self.tunnel_id
    }

    /// Trial-decrypts one advert's service data. `Ok(None)`: someone else's advert, keep
    /// scanning. `Ok(Some(connect))`: ours — connect there. An error means the advert was made
    /// with our key but is unusable (reserved bits, unknown domain).
    pub fn on_advert(&mut self, service_data: &[u8]) -> Result<Option<Connect>, Error> {
        let check = DomainCheck::KnownAssigned(domain::KNOWN_ASSIGNED_DOMAINS);
        let matched = self.handshake.on_advert(service_data, check)?;
        Ok(matched.map(|d| Connect {
            domain_id: d.fields.domain_id,
            hostname: domain::hostname(d.fields.domain_id),
            routing_id: d.fields.routing_id,
            tunnel_id: self.tunnel_id,
        }))
    }

    /// The matched advert, if any.
    pub fn advert(&self) -> Option<&DecryptedAdvert> {
        self.handshake.advert.as_ref()
    }

    /// Noise message 1, to send as soon as the tunnel is connected. `ephemeral` must be fresh
    /// (`keys::generate(rng)`).
    pub fn handshake_message(
        &mut self,
        ephemeral: &SecretKey,
    ) -> Result<[u8; handshake::MESSAGE_LEN], Error> {
        let identity = &self.keys.identity;
        self.handshake.start(self.keys.secret.expose(), |psk| {
            Initiator::qr(identity, psk, ephemeral)
        })
    }

    /// Processes Noise message 2. The channel verifies linking data with the QR key.
    pub fn finish(mut self, msg2: &[u8]) -> Result<LaptopChannel, Error> {
        let handshaken = self.handshake.finish(msg2)?;
        let domain_id = self.advert().map(|a| a.fields.domain_id);
        Ok(LaptopChannel::new(
            handshaken,
            Some(self.keys.identity.clone()),
            domain_id,
        ))
    }
}

/// What the laptop holds from an earlier QR session to reach a linked phone.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkedPhone {
    /// Contact ID for `/cable/contact`.
    pub contact_id: Vec<u8>,
    /// Pairing ID for the client payload.
    pub link_id: Vec<u8>,
    /// The link secret.
    pub link_secret: LinkSecret,
    /// The phone's identity key (store links keyed by it, as libwebauthn does).
    pub public_key: PublicKey,
    /// The phone's display name.
    pub name: String,
    /// Tunnel-server domain of the QR session's advert.
    pub domain_id: u16,
}

impl LinkedPhone {
    /// From verified linking data and the domain of the session it came in.
    pub fn from_linking(l: &LinkingInfo, domain_id: u16) -> Self {
        Self {
            contact_id: l.contact_id.clone(),
            link_id: l.link_id.clone(),
            link_secret: l.link_secret.clone(),
            public_key: l.authenticator_public_key,
            name: l.authenticator_name.clone(),
            domain_id,
        }
    }

    /// A CBOR encoding for storage: `{1: contact ID, 2: link ID, 3: secret, 4: public key,
    /// 5: name, 6: domain ID}`. It contains the link secret: store it encrypted.
    pub fn to_bytes(&self) -> Vec<u8> {
        hybridge_cbor::encode(&hybridge_cbor::Value::map([
            (
                hybridge_cbor::Value::from(1u8),
                hybridge_cbor::Value::from(self.contact_id.clone()),
            ),
            (2u8.into(), self.link_id.clone().into()),
            (3u8.into(), self.link_secret.expose().to_vec().into()),
            (
                4u8.into(),
                crate::keys::uncompressed(&self.public_key).into(),
            ),
            (5u8.into(), self.name.as_str().into()),
            (6u8.into(), self.domain_id.into()),
        ]))
    }

    /// Parses [`LinkedPhone::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        use hybridge_cbor::Value;
        let v = hybridge_cbor::decode(bytes)?;
        let b = |k: u8| {
            v.get(k)
                .and_then(Value::as_bytes)
                .ok_or(InvalidMessage::Field("stored link is missing a field"))
        };
        Ok(Self {
            contact_id: b(1)?.to_vec(),
            link_id: b(2)?.to_vec(),
            link_secret: LinkSecret::from_slice(b(3)?)
                .ok_or(InvalidMessage::Field("stored link secret must be 32 bytes"))?,
            public_key: crate::keys::parse_public(b(4)?)?,
            name: v
                .get(5u8)
                .and_then(Value::as_text)
                .unwrap_or_default()
                .to_owned(),
            domain_id: v
                .get(6u8)
                .and_then(Value::as_u64)
                .and_then(|d| u16::try_from(d).ok())
                .ok_or(InvalidMessage::Field("stored link has no domain ID"))?,
        })
    }
}

/// Checks the connect signal of `/cable/contact` (docs/protocol.md §6.2): when the server echoed
/// `X-caBLE-Signal-Connection`, its first message must be exactly `[0x00]` and is consumed
/// before the handshake.
pub fn check_connect_signal(message: &[u8]) -> Result<(), Error> {
    if message == [0x00] {
        Ok(())
    } else {
        Err(PeerMisbehaved::BadConnectSignal.into())
    }
}

/// What the laptop asks the tunnel server to wake a linked phone: `/cable/contact/<contact
/// ID>` on the phone's tunnel-server domain, with the client payload header.
#[derive(Clone, PartialEq, Eq)]
pub struct ContactRequest {
    /// The tunnel-server domain the link came through.
    pub domain_id: u16,
    /// The phone's contact ID (linking map key 1).
    pub contact_id: Vec<u8>,
    /// The client payload (`X-caBLE-Client-Payload`: link ID, fresh nonce, request type).
    pub client_payload: ClientPayload,
}

impl std::fmt::Debug for ContactRequest {
    // The contact ID reaches whoever can wake the phone: kept out of logs, like tunnel IDs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactRequest")
            .field("domain_id", &self.domain_id)
            .field("contact_id_len", &self.contact_id.len())
            .finish_non_exhaustive()
    }
}

impl ContactRequest {
    /// `/cable/contact/<contact ID>`.
    pub fn path(&self) -> TunnelPath {
        TunnelPath::Contact {
            contact_id: self.contact_id.clone(),
        }
    }
}

/// The laptop side of a linked ("state-assisted") session, until the handshake completes.
#[derive(Debug)]
pub struct LaptopLinked {
    phone: LinkedPhone,
    client_payload: ClientPayload,
    handshake: LaptopHandshake,
}

impl LaptopLinked {
    /// Starts a linked session with a fresh client nonce from `rng`.
    pub fn new(
        rng: &mut impl rand_core::CryptoRngCore,
        phone: LinkedPhone,
        request_type: RequestType,
    ) -> Self {
        let client_payload = ClientPayload::new(rng, phone.link_id.clone(), request_type);
        let eid_key = kdf::linked_eid_key(&phone.link_secret, &client_payload.client_nonce);
        Self {
            phone,
            client_payload,
            handshake: LaptopHandshake::new(eid_key),
        }
    }

    /// `/cable/contact/<contact ID>`.
    pub fn contact_path(&self) -> TunnelPath {
        TunnelPath::Contact {
            contact_id: self.phone.contact_id.clone(),
        }
    }

    /// The `X-caBLE-Client-Payload` header value.
    pub fn client_payload_header(&self) -> String {
        self.client_payload.to_header_value()
    }

    /// Everything the driver needs to wake the phone.
    pub fn contact_request(&self) -> ContactRequest {
        ContactRequest {
            domain_id: self.phone.domain_id,
            contact_id: self.phone.contact_id.clone(),
            client_payload: self.client_payload.clone(),
        }
    }

    /// The client payload (what `hybridge_websocket::contact` sends).
    pub fn client_payload(&self) -> &ClientPayload {
        &self.client_payload
    }

    /// Trial-decrypts an advert with the linked key; the domain is not checked (§11.7).
    /// Returns whether it matched. In the linked flow the handshake can start as soon as the
    /// tunnel connects, but the PSK needs the advert, so wait for a match first.
    pub fn on_advert(&mut self, service_data: &[u8]) -> Result<bool, Error> {
        let matched = self.handshake.on_advert(service_data, DomainCheck::Skip)?;
        Ok(matched.is_some())
    }

    /// Noise message 1 (NKpsk0 against the phone's identity key).
    pub fn handshake_message(
        &mut self,
        ephemeral: &SecretKey,
    ) -> Result<[u8; handshake::MESSAGE_LEN], Error> {
        let phone_key = &self.phone.public_key;
        self.handshake
            .start(self.phone.link_secret.expose(), |psk| {
                Initiator::linked(phone_key, psk, ephemeral)
            })
    }

    /// Processes Noise message 2. Linking data on a linked connection is ignored (it cannot
    /// be verified without a QR key), as Chromium does.
    pub fn finish(mut self, msg2: &[u8]) -> Result<LaptopChannel, Error> {
        let handshaken = self.handshake.finish(msg2)?;
        Ok(LaptopChannel::new(
            handshaken,
            None,
            Some(self.phone.domain_id),
        ))
    }
}

/// The steps before the channel that both laptop flows share; only the advert key, the
/// domain check, the PSK's secret and the Noise pattern differ, and the flows pass those in.
#[derive(Debug)]
struct LaptopHandshake {
    eid_key: EidKey,
    advert: Option<DecryptedAdvert>,
    initiator: Option<Initiator>,
}

impl LaptopHandshake {
    fn new(eid_key: EidKey) -> Self {
        Self {
            eid_key,
            advert: None,
            initiator: None,
        }
    }

    /// Trial-decrypts one advert and keeps the first match. `Ok(None)`: someone else's advert,
    /// or one already matched.
    fn on_advert(
        &mut self,
        service_data: &[u8],
        check: DomainCheck,
    ) -> Result<Option<&DecryptedAdvert>, Error> {
        if self.advert.is_some() {
            return Ok(None);
        }
        match advert::trial_decrypt(&self.eid_key, service_data, check) {
            Ok(d) => Ok(Some(self.advert.insert(d))),
            Err(Error::AdvertNotForUs | Error::AdvertTooShort(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Noise message 1, once: the PSK is derived from `secret` salted with the matched
    /// advert's plaintext, and `initiator` starts the flow's pattern with it.
    fn start(
        &mut self,
        secret: &[u8],
        initiator: impl FnOnce(&Psk) -> Result<(Initiator, [u8; handshake::MESSAGE_LEN]), Error>,
    ) -> Result<[u8; handshake::MESSAGE_LEN], Error> {
        let advert = self.advert.as_ref().ok_or(ApiMisuse::NoAdvertMatched)?;
        if self.initiator.is_some() {
            return Err(ApiMisuse::HandshakeStarted.into());
        }
        let psk = kdf::psk(secret, &advert.plaintext);
        let (init, msg) = initiator(&psk)?;
        self.initiator = Some(init);
        Ok(msg)
    }

    /// Processes Noise message 2.
    fn finish(&mut self, msg2: &[u8]) -> Result<Handshaken, Error> {
        self.initiator
            .take()
            .ok_or(ApiMisuse::HandshakeNotStarted)?
            .finish(msg2)
    }
}

/// Why linking data from the phone was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkingRejected {
    /// The update's linking data does not parse.
    #[error("linking data did not parse")]
    Unparsable,
    /// Linking data arrived on a connection that was itself opened from a link: only a QR
    /// session may link (docs/protocol.md §8.4).
    #[error("linking data on a linked connection is ignored")]
    OnLinkedConnection,
    /// The linking data's signature does not verify against this session.
    #[error("linking data does not verify: {0}")]
    Invalid(#[source] crate::Error),
}

/// Something the laptop learned from a phone message.
#[derive(Clone, Debug, PartialEq)]
pub enum LaptopEvent {
    /// The post-handshake message: getInfo, features, and the revision the phone speaks.
    PostHandshake {
        /// The message.
        message: PostHandshake,
        /// Revision 0 if it was padded CBOR, else 1.
        revision: ProtocolRevision,
    },
    /// Linking data whose signature verified; store it (keyed by the phone's public key) to
    /// skip the QR code next time.
    Linked(LinkingInfo),
    /// Linking data that failed to parse or verify; dropped, any stored link is kept.
    LinkingRejected(LinkingRejected),
    /// An update without linking data (the user declined, or padding only).
    Update,
    /// The CTAP response to the pending request: `status ‖ CBOR`.
    CtapResponse(Vec<u8>),
    /// The JSON response to the pending request.
    JsonResponse(String),
    /// The phone sent a shutdown. Chromium treats this as an error; we report it so the caller
    /// can close cleanly (webauthn-rs phones send it after their response, docs/protocol.md §11.3).
    PhoneShutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LaptopState {
    AwaitingPostHandshake,
    Ready,
    AwaitingReply(MessageType),
    ShutDown,
}

/// The laptop side after the handshake: the encrypted, framed channel.
#[derive(Debug)]
pub struct LaptopChannel {
    crypter: Crypter,
    handshake_hash: [u8; 32],
    qr_identity: Option<SecretKey>,
    domain_id: Option<u16>,
    revision: Option<ProtocolRevision>,
    get_info: Option<Vec<u8>>,
    state: LaptopState,
}

impl LaptopChannel {
    fn new(
        Handshaken {
            crypter,
            handshake_hash,
        }: Handshaken,
        qr_identity: Option<SecretKey>,
        domain_id: Option<u16>,
    ) -> Self {
        Self {
            crypter,
            handshake_hash,
            qr_identity,
            domain_id,
            revision: None,
            get_info: None,
            state: LaptopState::AwaitingPostHandshake,
        }
    }

    /// Accept the pre-2022 Crypter construction on the phone's first message.
    pub fn accept_old_construction(&mut self) {
        self.crypter.accept_old_construction_on_first_message(true);
    }

    /// The Noise handshake hash.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The revision, known once the post-handshake message arrived.
    pub fn revision(&self) -> Option<ProtocolRevision> {
        self.revision
    }

    /// The phone's getInfo response (CBOR map bytes). Answer CTAP getInfo (0x04) from this
    /// instead of sending it, as Chromium and libwebauthn do.
    pub fn get_info(&self) -> Option<&[u8]> {
        self.get_info.as_deref()
    }

    /// The tunnel-server domain of this session's advert (to store with linking data).
    pub fn domain_id(&self) -> Option<u16> {
        self.domain_id
    }

    /// Decrypts and interprets one message from the phone.
    pub fn on_message(&mut self, ciphertext: &[u8]) -> Result<Vec<LaptopEvent>, Error> {
        let plaintext = zeroize::Zeroizing::new(self.crypter.decrypt(ciphertext)?);
        if self.state == LaptopState::AwaitingPostHandshake {
            let (message, revision) = PostHandshake::decode(&plaintext)?;
            self.revision = Some(revision);
            self.get_info = message.get_info.clone();
            self.state = LaptopState::Ready;
            let mut events = Vec::new();
            if let Some(l) = &message.linking {
                events.push(self.check_linking(l));
            }
            events.insert(0, LaptopEvent::PostHandshake { message, revision });
            return Ok(events);
        }
        let rev = self.revision.unwrap_or(ProtocolRevision::V1);
        match Message::decode(&plaintext, rev)? {
            Message::Update(payload) => {
                let u = Update::decode(&payload)?;
                Ok(vec![match (u.linking, u.invalid_linking) {
                    (Some(l), _) => self.check_linking(&l),
                    (None, true) => LaptopEvent::LinkingRejected(LinkingRejected::Unparsable),
                    (None, false) => LaptopEvent::Update,
                }])
            }
            Message::Ctap(r) if self.state == LaptopState::AwaitingReply(MessageType::Ctap) => {
                self.state = LaptopState::Ready;
                Ok(vec![LaptopEvent::CtapResponse(r)])
            }
            Message::Json(j) if self.state == LaptopState::AwaitingReply(MessageType::Json) => {
                self.state = LaptopState::Ready;
                Ok(vec![LaptopEvent::JsonResponse(j)])
            }
            Message::Shutdown => Ok(vec![LaptopEvent::PhoneShutdown]),
            Message::Ctap(_) | Message::Json(_) => Err(PeerMisbehaved::UnexpectedReply.into()),
        }
    }

    fn check_linking(&self, l: &LinkingInfo) -> LaptopEvent {
        match &self.qr_identity {
            None => LaptopEvent::LinkingRejected(LinkingRejected::OnLinkedConnection),
            Some(k) => match l.verify(k, &self.handshake_hash) {
                Ok(()) => LaptopEvent::Linked(l.clone()),
                Err(e) => LaptopEvent::LinkingRejected(LinkingRejected::Invalid(e)),
            },
        }
    }

    fn send(&mut self, m: Message) -> Result<Vec<u8>, Error> {
        let rev = self.revision.ok_or(ApiMisuse::NoPostHandshakeYet)?;
        let t = m.message_type();
        let ct = self
            .crypter
            .encrypt(&zeroize::Zeroizing::new(m.encode(rev)?))?;
        if matches!(t, MessageType::Ctap | MessageType::Json) {
            self.state = LaptopState::AwaitingReply(t);
        }
        Ok(ct)
    }

    fn check_ready(&self) -> Result<(), Error> {
        match self.state {
            LaptopState::Ready => Ok(()),
            LaptopState::AwaitingPostHandshake => Err(ApiMisuse::NoPostHandshakeYet.into()),
            LaptopState::AwaitingReply(_) => Err(ApiMisuse::RequestPending.into()),
            LaptopState::ShutDown => Err(ApiMisuse::ShutDown.into()),
        }
    }

    /// Encrypts a CTAP request `cmd ‖ CBOR`; exactly one may be pending.
    pub fn send_ctap(&mut self, request: &[u8]) -> Result<Vec<u8>, Error> {
        self.check_ready()?;
        self.send(Message::Ctap(request.to_vec()))
    }

    /// Encrypts a JSON request (digital credentials, revision 1 only).
    pub fn send_json(&mut self, json: &str) -> Result<Vec<u8>, Error> {
        self.check_ready()?;
        self.send(Message::Json(json.to_owned()))
    }

    /// Ends the session. Revision 1: returns the encrypted shutdown to send; then keep reading
    /// for late linking updates (Chromium waits up to 3 minutes). Revision 0: `None` — just
    /// close the connection.
    pub fn shutdown(&mut self) -> Result<Option<Vec<u8>>, Error> {
        if self.state == LaptopState::ShutDown {
            return Err(ApiMisuse::ShutDown.into());
        }
        let out = match self.revision {
            Some(ProtocolRevision::V1) => Some(self.send(Message::Shutdown)?),
            _ => None,
        };
        self.state = LaptopState::ShutDown;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Phone

/// The phone side of a QR-initiated session, until the handshake completes.
#[derive(Debug)]
pub struct PhoneQr {
    payload: QrPayload,
    tunnel_id: TunnelId,
    handshake: PhoneHandshake,
}

impl PhoneQr {
    /// Parses a scanned `FIDO:/` URL.
    pub fn from_qr_url(url: &str) -> Result<Self, Error> {
        Ok(Self::from_payload(QrPayload::from_url(url)?))
    }

    /// From an already parsed payload.
    pub fn from_payload(payload: QrPayload) -> Self {
        let handshake = PhoneHandshake::new(kdf::eid_key(&payload.secret));
        let tunnel_id = kdf::tunnel_id(&payload.secret);
        Self {
            payload,
            tunnel_id,
            handshake,
        }
    }

    /// The QR contents.
    pub fn qr_payload(&self) -> &QrPayload {
        &self.payload
    }

    /// The tunnel ID.
    pub fn tunnel_id(&self) -> TunnelId {
        self.tunnel_id
    }

    /// `/cable/new/<tunnel ID>` to open on the phone's own tunnel server.
    pub fn new_tunnel_path(&self) -> TunnelPath {
        TunnelPath::New {
            tunnel_id: self.tunnel_id,
        }
    }

    /// The revision this phone speaks: 1 when the QR code had key 4, else 0 (as older Chrome
    /// on Android did).
    pub fn revision(&self) -> ProtocolRevision {
        ProtocolRevision::of_qr(&self.payload)
    }

    /// The service data to broadcast, once the tunnel server gave a routing ID. Build
    /// `plaintext` with [`AdvertPlaintext::new`] (fresh nonce). The CTAP 2.3 suffix is added only
    /// if the QR code offered BLE L2CAP and `l2cap_psm` is given.
    pub fn service_data(&mut self, plaintext: AdvertPlaintext, l2cap_psm: Option<u16>) -> Vec<u8> {
        let adv = self.handshake.advert(plaintext);
        let suffix = l2cap_psm
            .filter(|_| self.payload.offers_l2cap())
            .map(AdvertSuffix::l2cap);
        advert::service_data(&adv, suffix.as_ref())
    }

    /// Answers Noise message 1 (KNpsk0 against the QR code's identity key) with message 2 and
    /// opens the channel. Call it after [`PhoneQr::service_data`]: the PSK is salted with the
    /// advert.
    pub fn respond(
        self,
        msg1: &[u8],
        ephemeral: &SecretKey,
    ) -> Result<(PhoneChannel, [u8; handshake::MESSAGE_LEN]), Error> {
        let psk = self.handshake.psk(self.payload.secret.expose())?;
        let desktop = self.payload.identity_key;
        let (handshaken, msg2) = Responder::qr(&desktop, &psk, ephemeral)?.respond(msg1)?;
        let channel = PhoneChannel::new(handshaken, self.revision(), Some(desktop));
        Ok((channel, msg2))
    }
}

/// The phone side of a linked session, woken by the tunnel server with a client payload.
#[derive(Debug)]
pub struct PhoneLinked {
    link_secret: LinkSecret,
    handshake: PhoneHandshake,
}

impl PhoneLinked {
    /// `link_secret` is recomputed from the client payload's link ID
    /// (`kdf::phone_link_secret`).
    pub fn new(link_secret: LinkSecret, client_payload: &ClientPayload) -> Self {
        let eid_key = kdf::linked_eid_key(&link_secret, &client_payload.client_nonce);
        Self {
            link_secret,
            handshake: PhoneHandshake::new(eid_key),
        }
    }

    /// The service data to broadcast; build `plaintext` with [`AdvertPlaintext::linked`].
    pub fn service_data(&mut self, plaintext: AdvertPlaintext) -> Vec<u8> {
        self.handshake.advert(plaintext).to_vec()
    }

    /// Answers Noise message 1 (NKpsk0) with the identity key, and opens the channel (always
    /// revision 1). Call it after [`PhoneLinked::service_data`]: the PSK is salted with the
    /// advert.
    pub fn respond(
        self,
        identity: &SecretKey,
        msg1: &[u8],
        ephemeral: &SecretKey,
    ) -> Result<(PhoneChannel, [u8; handshake::MESSAGE_LEN]), Error> {
        let psk = self.handshake.psk(self.link_secret.expose())?;
        let (handshaken, msg2) = Responder::linked(identity, &psk, ephemeral)?.respond(msg1)?;
        let channel = PhoneChannel::new(handshaken, ProtocolRevision::V1, None);
        Ok((channel, msg2))
    }
}

/// What both phone flows keep before the handshake: the advert key, and the plaintext of the
/// last advert, which salts the PSK. The flows differ in the PSK's secret, the Noise pattern
/// and the channel they open; each does those itself.
#[derive(Debug)]
struct PhoneHandshake {
    eid_key: EidKey,
    advert_plaintext: Option<[u8; advert::PLAINTEXT_LEN]>,
}

impl PhoneHandshake {
    fn new(eid_key: EidKey) -> Self {
        Self {
            eid_key,
            advert_plaintext: None,
        }
    }

    /// Encrypts the advert and keeps its plaintext: the salt of the PSK.
    fn advert(&mut self, plaintext: AdvertPlaintext) -> [u8; advert::ADVERT_LEN] {
        let pt = plaintext.to_bytes();
        self.advert_plaintext = Some(pt);
        advert::encrypt(&self.eid_key, &pt)
    }

    /// The Noise PSK: `secret` (the QR secret or the link secret) salted with the plaintext
    /// of the last advert built; an error before any advert.
    fn psk(&self, secret: &[u8]) -> Result<Psk, Error> {
        let pt = self
            .advert_plaintext
            .as_ref()
            .ok_or(ApiMisuse::NoAdvertBuilt)?;
        Ok(kdf::psk(secret, pt))
    }
}

/// Something the phone received from the laptop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhoneEvent {
    /// A CTAP request `cmd ‖ CBOR`; answer with [`PhoneChannel::send_ctap`].
    CtapRequest(Vec<u8>),
    /// A JSON request; answer with [`PhoneChannel::send_json`].
    JsonRequest(String),
    /// An update from the laptop (parsed as CBOR and otherwise ignored, as Chromium does).
    Update,
    /// The laptop ended the session; close the tunnel.
    Shutdown,
    /// An authenticatorGetInfo request (`0x04`), answered here from the getInfo of the
    /// post-handshake message ([`frame::get_info_reply`]): send this ciphertext to the laptop
    /// and keep waiting for its request. Chrome's phone accepts getInfo over the tunnel
    /// (docs/protocol.md §9), although Chromium and libwebauthn laptops answer it locally and never send
    /// it. Nobody needs to be asked.
    Answered(Vec<u8>),
    /// authenticatorSelection (`0x0B`): the session ends with an error and no answer, as
    /// Chrome's phone does (docs/protocol.md §9: a hybrid phone was chosen already). The channel is
    /// closed; nobody needs to be asked.
    SelectionRefused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PhoneState {
    NeedPostHandshake,
    Ready,
    Processing(MessageType),
    Closed,
}

/// The phone side after the handshake.
#[derive(Debug)]
pub struct PhoneChannel {
    crypter: Crypter,
    handshake_hash: [u8; 32],
    revision: ProtocolRevision,
    desktop_qr_key: Option<PublicKey>,
    state: PhoneState,
    /// The getInfo map sent in the post-handshake message, to answer getInfo requests with.
    get_info: Option<Vec<u8>>,
}

impl PhoneChannel {
    fn new(
        Handshaken {
            crypter,
            handshake_hash,
        }: Handshaken,
        revision: ProtocolRevision,
        desktop_qr_key: Option<PublicKey>,
    ) -> Self {
        Self {
            crypter,
            handshake_hash,
            revision,
            desktop_qr_key,
            state: PhoneState::NeedPostHandshake,
            get_info: None,
        }
    }

    /// The Noise handshake hash.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The revision in use.
    pub fn revision(&self) -> ProtocolRevision {
        self.revision
    }

    /// Encrypts the post-handshake message; must be the first message sent.
    pub fn post_handshake(&mut self, message: &PostHandshake) -> Result<Vec<u8>, Error> {
        if self.state != PhoneState::NeedPostHandshake {
            return Err(ApiMisuse::PostHandshakeSent.into());
        }
        let ct = self.crypter.encrypt(&message.encode(self.revision))?;
        self.state = PhoneState::Ready;
        self.get_info = message.get_info.clone();
        Ok(ct)
    }

    /// Signed linking data for this QR session (`None` on a linked session, whose laptop
    /// could not verify it).
    pub fn linking_info(
        &self,
        identity: &SecretKey,
        contact_id: Vec<u8>,
        link_id: Vec<u8>,
        link_secret: LinkSecret,
        name: String,
    ) -> Option<LinkingInfo> {
        let desktop = self.desktop_qr_key.as_ref()?;
        Some(LinkingInfo::new_signed(
            contact_id,
            link_id,
            link_secret,
            identity,
            desktop,
            name,
            &self.handshake_hash,
        ))
    }

    /// Encrypts the update message sent right after the post-handshake message: always 528
    /// bytes on the wire, with linking data only if the user allowed it. Revision 1 only.
    pub fn update(&mut self, linking: Option<&LinkingInfo>) -> Result<Vec<u8>, Error> {
        if self.revision != ProtocolRevision::V1 {
            return Err(ApiMisuse::NoUpdatesInRevision0.into());
        }
        if self.state == PhoneState::NeedPostHandshake {
            return Err(ApiMisuse::PostHandshakeFirst.into());
        }
        self.crypter
            .encrypt(&zeroize::Zeroizing::new(Update::encode_padded(linking)))
    }

    /// Decrypts and interprets one message from the laptop.
    pub fn on_message(&mut self, ciphertext: &[u8]) -> Result<PhoneEvent, Error> {
        if self.state == PhoneState::NeedPostHandshake {
            return Err(ApiMisuse::PostHandshakeFirst.into());
        }
        let plaintext = zeroize::Zeroizing::new(self.crypter.decrypt(ciphertext)?);
        match Message::decode(&plaintext, self.revision)? {
            Message::Shutdown => {
                self.state = PhoneState::Closed;
                Ok(PhoneEvent::Shutdown)
            }
            Message::Update(p) => {
                hybridge_cbor::decode(&p)?;
                Ok(PhoneEvent::Update)
            }
            Message::Ctap(r) => {
                self.expect_request(MessageType::Ctap)?;
                if r.first() == Some(&frame::CTAP_SELECTION) {
                    self.state = PhoneState::Closed;
                    return Ok(PhoneEvent::SelectionRefused);
                }
                let reply = self
                    .get_info
                    .as_deref()
                    .and_then(|info| frame::get_info_reply(&r, info));
                match reply {
                    Some(reply) => Ok(PhoneEvent::Answered(self.send_ctap(&reply)?)),
                    None => Ok(PhoneEvent::CtapRequest(r)),
                }
            }
            Message::Json(j) => {
                self.expect_request(MessageType::Json)?;
                Ok(PhoneEvent::JsonRequest(j))
            }
        }
    }

    fn expect_request(&mut self, t: MessageType) -> Result<(), Error> {
        match self.state {
            PhoneState::Ready => {
                self.state = PhoneState::Processing(t);
                Ok(())
            }
            PhoneState::Processing(_) => Err(PeerMisbehaved::SecondRequest.into()),
            _ => Err(PeerMisbehaved::RequestAfterClose.into()),
        }
    }

    fn reply(&mut self, m: Message) -> Result<Vec<u8>, Error> {
        if self.state != PhoneState::Processing(m.message_type()) {
            return Err(ApiMisuse::NoRequestPending.into());
        }
        let ct = self
            .crypter
            .encrypt(&zeroize::Zeroizing::new(m.encode(self.revision)?))?;
        self.state = PhoneState::Ready;
        Ok(ct)
    }

    /// Encrypts the CTAP response `status ‖ CBOR` to the pending request.
    pub fn send_ctap(&mut self, response: &[u8]) -> Result<Vec<u8>, Error> {
        self.reply(Message::Ctap(response.to_vec()))
    }

    /// Encrypts the JSON response to the pending request.
    pub fn send_json(&mut self, json: &str) -> Result<Vec<u8>, Error> {
        self.reply(Message::Json(json.to_owned()))
    }
}

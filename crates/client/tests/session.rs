//! Laptop and phone sessions end to end in one process: an in-process relay, the in-memory
//! radio, the software authenticator behind the phone session, and an independent relying
//! party (webauthn-rs-core) that issues the options and verifies the responses.

// The phone session against a scripted laptop: one test binary for the crate, not two.
#[path = "session/phone.rs"]
mod phone_session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hybridge_authenticator::authenticator::Authenticator;
use hybridge_authenticator::phone::{
    self, PhoneConfig, PhoneError, PhoneEvents, PhoneOutcome, PhoneProgress, PhoneTimeouts, QrInput,
};
use hybridge_authenticator::store::MemoryStore;
use hybridge_authenticator::user::{
    AccountChoice, Approval, ApprovalRequest, AutoApprove, UserAgent,
};
use hybridge_ble::{Advertiser, MemoryRadio, Scanner, UUID_FIDO, UUID_GOOGLE};
use hybridge_client::session::{
    self, Error, Event, Events, LaptopConfig, RelayOverrides, Step, Timeouts, ws,
};
use hybridge_client::webauthn::{Assertion, CreationOptions, Origin, Registration};
use hybridge_proto::advert::AdvertPlaintext;
use hybridge_proto::frame::PostHandshake;
use hybridge_proto::qr::{QrKeys, RequestType};
use hybridge_proto::session::{LaptopQr, PhoneQr};
use hybridge_proto::tunnel::{ROUTING_ID_HEADER, RoutingId, parse_routing_id_header};
use hybridge_relay::{Config, Relay};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use url::Url;
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    Credential, PublicKeyCredential, RegisterPublicKeyCredential, UserVerificationPolicy,
};

const ORIGIN: &str = "https://example.com";
const T: Duration = Duration::from_secs(20);

fn rp() -> WebauthnCore {
    WebauthnCore::new_unsafe_experts_only(
        "Example",
        "example.com",
        vec![Url::parse(ORIGIN).unwrap()],
        Duration::from_secs(60),
        None,
        None,
    )
}

fn laptop_config(relay: &str) -> LaptopConfig {
    LaptopConfig {
        relays: RelayOverrides::all(relay),
        timeouts: Timeouts {
            scan: Duration::from_secs(10),
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
            user: Duration::from_secs(10),
            close: Duration::from_secs(1),
            ..Timeouts::default()
        },
        ..LaptopConfig::default()
    }
}

fn phone_config(relay: &str) -> PhoneConfig {
    PhoneConfig {
        relay: Some(relay.into()),
        domain_id: 0,
        timeouts: PhoneTimeouts {
            laptop: Duration::from_secs(10),
            close: Duration::from_secs(1),
            ..PhoneTimeouts::default()
        },
        tls: None,
        data_channel: false,
        linking: None,
    }
}

type Phone<U> = phone::Phone<Authenticator<MemoryStore, U>>;

fn phone_with<U: UserAgent + 'static>(user: U) -> Phone<U> {
    phone::Phone::new(Authenticator::new(
        MemoryStore::new(),
        user,
        || 1_700_000_000,
        rand_core::OsRng,
    ))
}

/// What the laptop's user sees: the QR code (handed to whoever waits for it: the phone's
/// camera) and the progress events.
struct Screen {
    events: Events,
    camera: Mutex<Option<oneshot::Sender<String>>>,
}

impl Screen {
    /// A screen nobody points a camera at.
    fn new(events: Events) -> Self {
        Self {
            events,
            camera: Mutex::new(None),
        }
    }

    fn show_qr(&self, url: String) {
        assert!(url.starts_with("FIDO:/"), "{url}");
        if let Some(tx) = self.camera.lock().unwrap().take() {
            let _ = tx.send(url);
        }
    }
}

/// The laptop as the CLI runs it: the options prepared (parsed and checked, the QR code made),
/// the QR code shown, then the ceremony.
async fn register(
    options: &str,
    origin: &str,
    radio: &MemoryRadio,
    config: &LaptopConfig,
    screen: &Screen,
) -> Result<Registration, Error> {
    let prepared = session::register(options, origin, config)?;
    screen.show_qr(prepared.qr_url().expect("a QR ceremony has a QR code"));
    prepared.run(radio, &screen.events).await
}

/// [`register`] for a sign-in.
async fn sign_in(
    options: &str,
    origin: &str,
    radio: &MemoryRadio,
    config: &LaptopConfig,
    screen: &Screen,
) -> Result<Assertion, Error> {
    let prepared = session::sign_in(options, origin, config)?;
    screen.show_qr(prepared.qr_url().expect("a QR ceremony has a QR code"));
    prepared.run(radio, &screen.events).await
}

/// Collects the laptop's events; the QR code goes to the receiver.
fn watch_events() -> (Screen, oneshot::Receiver<String>, JoinHandle<Vec<Event>>) {
    let (events, mut rx) = Events::channel(64);
    let (qr_tx, qr_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(e) = rx.recv().await {
            seen.push(e);
        }
        seen
    });
    let screen = Screen {
        events,
        camera: Mutex::new(Some(qr_tx)),
    };
    (screen, qr_rx, task)
}

/// A phone that scans the QR code when it appears and serves one request.
fn spawn_phone<U: UserAgent + 'static>(
    qr: oneshot::Receiver<String>,
    radio: MemoryRadio,
    authenticator: Phone<U>,
    config: PhoneConfig,
    photo: bool,
) -> JoinHandle<Result<PhoneOutcome, PhoneError>> {
    tokio::spawn(async move {
        let url = qr.await.expect("the laptop shows a QR code");
        let qr = if photo {
            // The phone reads the QR code from a picture of it.
            QrInput::Image(hybridge_client::render::png(&url).unwrap())
        } else {
            QrInput::Text(url)
        };
        authenticator
            .with_config(config)
            .serve(&qr, &radio, &PhoneEvents::none())
            .await
    })
}

struct Rig {
    relay: Relay,
    radio: MemoryRadio,
    /// The phone reads the QR code from a PNG instead of its text.
    photo: bool,
    /// The relay's base URL.
    url: String,
    /// TLS trust for a `wss://` relay.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Rig {
    async fn new() -> Self {
        let relay = Relay::bind(Config::default()).await.unwrap();
        Self {
            url: relay.url(),
            relay,
            radio: MemoryRadio::new().with_interval(Duration::from_millis(10)),
            photo: false,
            tls: None,
        }
    }

    fn phone_config(&self) -> PhoneConfig {
        PhoneConfig {
            tls: self.tls.clone(),
            ..phone_config(&self.url)
        }
    }

    fn laptop_config(&self, relay: Option<&str>) -> LaptopConfig {
        LaptopConfig {
            tls: self.tls.clone(),
            ..laptop_config(relay.unwrap_or(&self.url))
        }
    }

    /// One registration through the whole stack; the laptop may talk to `laptop_relay`
    /// (a proxy) instead of the relay itself.
    async fn register<U: UserAgent + 'static>(
        &self,
        options: &str,
        authenticator: Phone<U>,
        laptop_relay: Option<&str>,
    ) -> (
        Result<Registration, Error>,
        Result<PhoneOutcome, PhoneError>,
        Vec<Event>,
    ) {
        let (events, qr, watcher) = watch_events();
        let phone = spawn_phone(
            qr,
            self.radio.clone(),
            authenticator,
            self.phone_config(),
            self.photo,
        );
        let config = self.laptop_config(laptop_relay);
        let result =
            tokio::time::timeout(T, register(options, ORIGIN, &self.radio, &config, &events))
                .await
                .expect("the laptop finishes");
        drop(events);
        let phone = tokio::time::timeout(T, phone)
            .await
            .expect("the phone finishes")
            .unwrap();
        (result, phone, watcher.await.unwrap())
    }

    async fn sign_in<U: UserAgent + 'static>(
        &self,
        options: &str,
        authenticator: Phone<U>,
    ) -> (
        Result<Assertion, Error>,
        Result<PhoneOutcome, PhoneError>,
        Vec<Event>,
    ) {
        let (events, qr, watcher) = watch_events();
        let phone = spawn_phone(
            qr,
            self.radio.clone(),
            authenticator,
            self.phone_config(),
            self.photo,
        );
        let config = self.laptop_config(None);
        let result =
            tokio::time::timeout(T, sign_in(options, ORIGIN, &self.radio, &config, &events))
                .await
                .expect("the laptop finishes");
        drop(events);
        let phone = tokio::time::timeout(T, phone)
            .await
            .expect("the phone finishes")
            .unwrap();
        (result, phone, watcher.await.unwrap())
    }
}

fn creation_options(
    rp: &WebauthnCore,
    user: &str,
) -> (String, webauthn_rs_core::proto::RegistrationState) {
    let builder = rp
        .new_challenge_register_builder(user.as_bytes(), user, &format!("{user} display"))
        .unwrap()
        .user_verification_policy(UserVerificationPolicy::Required)
        .require_resident_key(true);
    let (ccr, state) = rp.generate_challenge_register(builder).unwrap();
    (serde_json::to_string(&ccr).unwrap(), state)
}

/// The RP's sign-in challenge for these credentials (none: discoverable), user verification
/// required: the challenge as the RP sends it, and the state to verify the answer with.
fn request_options(
    rp: &WebauthnCore,
    allow: Vec<Credential>,
) -> (
    webauthn_rs_core::proto::RequestChallengeResponse,
    webauthn_rs_core::proto::AuthenticationState,
) {
    let builder = rp
        .new_challenge_authenticate_builder(allow, Some(UserVerificationPolicy::Required))
        .unwrap();
    rp.generate_challenge_authenticate(builder).unwrap()
}

fn verify_registration(
    rp: &WebauthnCore,
    reg: &Registration,
    state: &webauthn_rs_core::proto::RegistrationState,
) -> Credential {
    let json = reg.to_json();
    assert_eq!(
        json["response"]["transports"],
        serde_json::json!(["hybrid"])
    );
    assert_eq!(json["authenticatorAttachment"], "cross-platform");
    let rpc: RegisterPublicKeyCredential = serde_json::from_value(json).unwrap();
    rp.register_credential(&rpc, state, None)
        .expect("the RP accepts the registration")
}

#[tokio::test]
async fn register_then_sign_in_verified_by_an_independent_rp() {
    let rig = Rig::new().await;
    let rp = rp();
    let authenticator = phone_with(AutoApprove);

    let (options, state) = creation_options(&rp, "alice");
    let (reg, phone, events) = rig.register(&options, authenticator.clone(), None).await;
    let reg = reg.expect("registration succeeds");
    assert_eq!(
        phone.unwrap(),
        PhoneOutcome {
            command: 0x01,
            status: 0x00
        }
    );
    let cred = verify_registration(&rp, &reg, &state);
    assert!(reg.public_key.is_some_and(|p| p[0] == 0x04));
    // Every step was reported, in order.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Scanning => "scanning",
            Event::PhoneNearby { domain_id } => {
                assert_eq!(*domain_id, 0);
                "nearby"
            }
            Event::Connecting(url) => {
                assert_eq!(url, &rig.relay.url(), "no tunnel ID in the event");
                "connecting"
            }
            Event::OpeningDataChannel { .. } => "data channel",
            Event::HandshakeDone => "handshake",
            Event::WaitingForUser => "user",
            Event::AwaitingLinking(_) => "awaiting link",
            Event::Done => "done",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "scanning",
            "nearby",
            "connecting",
            "handshake",
            "user",
            "done"
        ]
    );

    // Sign in with the allow list, then discoverably.
    for allow in [vec![cred.clone()], vec![]] {
        let (rcr, mut state) = request_options(&rp, allow.clone());
        let options = serde_json::to_string(&rcr).unwrap();
        let (assertion, phone, _) = rig.sign_in(&options, authenticator.clone()).await;
        let assertion = assertion.expect("sign-in succeeds");
        assert_eq!(
            phone.unwrap(),
            PhoneOutcome {
                command: 0x02,
                status: 0x00
            }
        );
        assert_eq!(assertion.user_handle.as_deref(), Some(&b"alice"[..]));
        if allow.is_empty() {
            state.set_allowed_credentials(vec![cred.clone()]);
        }
        let pkc: PublicKeyCredential = serde_json::from_value(assertion.to_json()).unwrap();
        rp.authenticate_credential(&pkc, &state)
            .expect("the RP accepts the assertion");
    }
    // The relay notices the closes asynchronously.
    for _ in 0..200 {
        if rig.relay.tunnels() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rig.relay.tunnels(), 0, "every tunnel was closed");
}

/// Someone else's phone advertising nearby (under both UUIDs), and junk: ignored; ours is
/// found. (This phone reads the QR code from a PNG of it.)
#[tokio::test]
async fn adverts_of_other_sessions_are_ignored() {
    let mut rig = Rig::new().await;
    rig.photo = true;
    let other = LaptopQr::new(
        QrKeys::generate(&mut rand_core::OsRng),
        1_700_000_000,
        false,
        RequestType::MakeCredential,
    );
    let mut other_phone = PhoneQr::from_qr_url(&other.qr_url()).unwrap();
    let foreign = other_phone.service_data(
        AdvertPlaintext::new(&mut rand_core::OsRng, RoutingId([9, 9, 9]), 0),
        None,
    );
    let _a = rig.radio.advertise(UUID_FIDO, &foreign).await.unwrap();
    let _b = rig.radio.advertise(UUID_GOOGLE, &foreign).await.unwrap();
    let _c = rig.radio.advertise(UUID_FIDO, &[0u8; 20]).await.unwrap();
    let _d = rig.radio.advertise(UUID_FIDO, &[1u8; 5]).await.unwrap();

    let rp = rp();
    let (options, state) = creation_options(&rp, "bob");
    let (reg, phone, _) = rig.register(&options, phone_with(AutoApprove), None).await;
    verify_registration(&rp, &reg.expect("our phone is found"), &state);
    phone.unwrap();
}

/// No advert: a proximity error, and the relay never saw the laptop.
#[tokio::test]
async fn no_advert_is_a_proximity_timeout_without_contacting_the_relay() {
    let rig = Rig::new().await;
    let rp = rp();
    let (options, _) = creation_options(&rp, "carol");
    let mut config = laptop_config(&rig.relay.url());
    config.timeouts.scan = Duration::from_millis(300);
    let (events, _qr, watcher) = watch_events();
    let err = register(&options, ORIGIN, &rig.radio, &config, &events)
        .await
        .unwrap_err();
    drop(events);
    assert!(matches!(err, Error::ProximityTimeout(_)), "{err}");
    assert_eq!(err.step(), Some(Step::Scanning));
    assert!(err.to_string().contains("is Bluetooth on"), "{err}");
    assert!(
        rig.relay
            .metrics_text()
            .lines()
            .any(|l| l == "hybridge_relay_connections_total 0"),
        "the relay saw a connection:\n{}",
        rig.relay.metrics_text()
    );
    let events = watcher.await.unwrap();
    assert!(!events.iter().any(|e| matches!(e, Event::Connecting(_))));
}

struct Decline;

impl UserAgent for Decline {
    fn approve(&mut self, _: &ApprovalRequest) -> Approval {
        Approval::Declined
    }
    fn choose_account(&mut self, _: &str, _: &[AccountChoice]) -> Option<usize> {
        None
    }
}

#[tokio::test]
async fn user_declines_on_the_phone_is_not_allowed() {
    let rig = Rig::new().await;
    let rp = rp();
    let (options, _) = creation_options(&rp, "dave");
    let (reg, phone, _) = rig.register(&options, phone_with(Decline), None).await;
    let err = reg.unwrap_err();
    assert!(matches!(err, Error::NotAllowed(_)), "{err}");
    assert_eq!(err.dom_exception(), "NotAllowedError");
    assert_eq!(phone.unwrap().status, 0x27, "CTAP2_ERR_OPERATION_DENIED");
}

/// A phone that advertises for the QR code without a relay behind it.
fn spawn_fake_phone(qr: oneshot::Receiver<String>, radio: MemoryRadio) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(url) = qr.await else { return };
        let mut phone = PhoneQr::from_qr_url(&url).unwrap();
        let data = phone.service_data(
            AdvertPlaintext::new(&mut rand_core::OsRng, RoutingId([1, 2, 3]), 0),
            None,
        );
        let _h = radio.advertise(UUID_FIDO, &data).await.unwrap();
        tokio::time::sleep(T).await;
    })
}

#[tokio::test]
async fn relay_down_is_a_clear_connect_error() {
    let radio = MemoryRadio::new().with_interval(Duration::from_millis(10));
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relay = format!("ws://127.0.0.1:{port}");
    let rp = rp();
    let (options, _) = creation_options(&rp, "erin");
    let (events, qr, _watcher) = watch_events();
    let fake = spawn_fake_phone(qr, radio.clone());
    let err = register(&options, ORIGIN, &radio, &laptop_config(&relay), &events)
        .await
        .unwrap_err();
    fake.abort();
    match &err {
        Error::RelayUnreachable { url, source } => {
            assert_eq!(url, &relay);
            assert!(
                matches!(source, ws::ConnectError::Tcp { port: p, .. } if *p == port),
                "{source:?}"
            );
            assert!(err.to_string().contains("cannot connect"), "{err}");
        }
        other => panic!("expected RelayUnreachable, got {other}"),
    }
    assert_eq!(err.step(), Some(Step::Connecting));
}

#[tokio::test]
async fn rp_id_mismatch_is_refused_before_any_qr_code() {
    let radio = MemoryRadio::new();
    let rp = rp();
    let (options, _) = creation_options(&rp, "frank");
    let (events, rx) = Events::channel(8);
    let events = Screen::new(events);
    let config = laptop_config("ws://127.0.0.1:9");
    let err = register(
        &options,
        "https://evil.example.net",
        &radio,
        &config,
        &events,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WebAuthn(hybridge_client::webauthn::WebAuthnError::RpIdMismatch { .. })
        ),
        "{err}"
    );
    assert_eq!(err.dom_exception(), "SecurityError");
    nothing_shown(events, rx, &radio).await;

    let (rcr, _) = request_options(&rp, vec![]);
    let options = serde_json::to_string(&rcr).unwrap();
    let err = sign_in(
        &options,
        "https://example.org",
        &radio,
        &config,
        &Screen::new(Events::none()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.dom_exception(), "SecurityError", "{err}");

    // Options parsed for the right origin cannot be pointed at another RP afterwards: their
    // fields are private (a compile_fail doctest on `CreationOptions` pins it), and the
    // ceremony runs the RP ID that was checked.
    let origin = Origin::parse(ORIGIN).unwrap();
    let (json, _) = creation_options(&rp, "frank");
    let options = CreationOptions::from_json(&json, &origin).unwrap();
    assert_eq!(options.rp_id(), "example.com");
    assert_eq!(options.origin(), &origin);
}

/// `prf.evalByCredential` at registration is a NotSupportedError (WebAuthn L3 §10.1.4), raised
/// before any QR code is shown or any scan starts.
#[tokio::test]
async fn prf_eval_by_credential_at_registration_is_refused_before_any_qr_code() {
    let radio = MemoryRadio::new();
    let rp = rp();
    let (options, _) = creation_options(&rp, "olivia");
    let mut json: serde_json::Value = serde_json::from_str(&options).unwrap();
    json["publicKey"]["extensions"] = serde_json::json!({
        "prf": { "evalByCredential": { "AQID": { "first": "AQ" } } }
    });
    let (events, rx) = Events::channel(8);
    let events = Screen::new(events);
    let err = register(
        &json.to_string(),
        ORIGIN,
        &radio,
        &laptop_config("ws://127.0.0.1:9"),
        &events,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WebAuthn(hybridge_client::webauthn::WebAuthnError::NotSupported(_))
        ),
        "{err}"
    );
    assert_eq!(err.dom_exception(), "NotSupportedError");
    nothing_shown(events, rx, &radio).await;
}

/// The ceremony ended before it started: no event (so no QR code) and no BLE scan.
async fn nothing_shown(
    events: Screen,
    mut rx: tokio::sync::mpsc::Receiver<hybridge_client::session::Event>,
    radio: &MemoryRadio,
) {
    drop(events);
    assert!(
        rx.recv().await.is_none(),
        "no event, so no QR code was shown"
    );
    assert_eq!(radio.scanner_count(), 0, "no scan was started");
}

/// A phone that opens its tunnel, advertises, answers the handshake, and then sends `post` as
/// its post-handshake message.
fn spawn_scripted_phone(
    qr: oneshot::Receiver<String>,
    radio: MemoryRadio,
    relay: String,
    post: PostHandshake,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(url) = qr.await else { return };
        let mut phone = PhoneQr::from_qr_url(&url).unwrap();
        let (mut socket, response) =
            session::ws::connect(&phone.new_tunnel_path().to_url(&relay), None)
                .await
                .unwrap();
        let routing = response.headers().get(ROUTING_ID_HEADER).unwrap();
        let routing = parse_routing_id_header(routing.as_bytes()).unwrap();
        let data = phone.service_data(
            AdvertPlaintext::new(&mut rand_core::OsRng, routing, 0),
            None,
        );
        let _advert = radio.advertise(UUID_FIDO, &data).await.unwrap();
        let msg1 = session::ws::recv(&mut socket).await.unwrap().unwrap();
        let ephemeral = hybridge_proto::keys::generate(&mut rand_core::OsRng);
        let (mut channel, msg2) = phone.respond(&msg1, &ephemeral).unwrap();
        session::ws::send(&mut socket, msg2.to_vec()).await.unwrap();
        let post = channel.post_handshake(&post).unwrap();
        session::ws::send(&mut socket, post).await.unwrap();
        // Until the laptop hangs up.
        let _ = tokio::time::timeout(T, session::ws::recv(&mut socket)).await;
    })
}

/// A phone whose post-handshake message lacks getInfo, or carries one that does not parse:
/// a named error at the post-handshake step, and no request is sent.
#[tokio::test]
async fn missing_or_unparseable_get_info_is_a_named_error() {
    let rig = Rig::new().await;
    let rp = rp();
    for (what, post) in [
        ("absent", PostHandshake::default()),
        ("not CBOR", PostHandshake::ctap(vec![0xff, 0x00])),
        ("an empty map", PostHandshake::ctap(vec![0xa0])),
        ("a number", PostHandshake::ctap(vec![0x05])),
    ] {
        let (options, _) = creation_options(&rp, "nina");
        let (events, qr, watcher) = watch_events();
        let phone = spawn_scripted_phone(qr, rig.radio.clone(), rig.url.clone(), post);
        let err = tokio::time::timeout(
            T,
            register(
                &options,
                ORIGIN,
                &rig.radio,
                &rig.laptop_config(None),
                &events,
            ),
        )
        .await
        .expect("the laptop finishes")
        .unwrap_err();
        drop(events);
        assert!(matches!(err, Error::InvalidGetInfo(_)), "{what}: {err}");
        assert_eq!(err.step(), Some(Step::PostHandshake), "{what}");
        assert!(err.to_string().contains("getInfo"), "{what}: {err}");
        let events = watcher.await.unwrap();
        assert!(
            !events.contains(&Event::WaitingForUser),
            "{what}: no request was sent"
        );
        tokio::time::timeout(T, phone).await.unwrap().unwrap();
    }
}

/// A WebSocket proxy standing in for a malicious relay: forwards laptop ↔ relay, flipping one
/// bit of the `flip`-th message from the relay to the laptop (0 = Noise message 2).
async fn tampering_proxy(relay: String, flip: usize) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let path = Arc::new(Mutex::new(String::new()));
        let p = path.clone();
        // The callback's signature is tungstenite's; its error type is not ours to shrink.
        #[allow(clippy::result_large_err)]
        let callback = move |req: &WsRequest, mut resp: WsResponse| {
            *p.lock().unwrap() = req.uri().path().to_owned();
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("fido.cable"),
            );
            Ok(resp)
        };
        let Ok(laptop) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
            return;
        };
        let path = path.lock().unwrap().clone();
        let mut req = format!("{relay}{path}").into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("fido.cable"),
        );
        let Ok((upstream, _)) = tokio_tungstenite::connect_async(req).await else {
            return;
        };
        let (mut l_tx, mut l_rx) = laptop.split();
        let (mut u_tx, mut u_rx) = upstream.split();
        let up = async {
            while let Some(Ok(m)) = l_rx.next().await {
                if u_tx.send(m).await.is_err() {
                    break;
                }
            }
        };
        let down = async {
            let mut n = 0;
            while let Some(Ok(m)) = u_rx.next().await {
                let m = match m {
                    Message::Binary(b) => {
                        let mut b = b.to_vec();
                        if n == flip {
                            let last = b.len() - 1;
                            b[last / 2] ^= 0x01;
                        }
                        n += 1;
                        Message::Binary(b.into())
                    }
                    other => other,
                };
                if l_tx.send(m).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! { _ = up => {}, _ = down => {} }
    });
    (format!("ws://{addr}"), task)
}

#[tokio::test]
async fn a_flipped_bit_aborts_the_session_and_nothing_is_accepted() {
    let rp = rp();
    // 0: Noise message 2; 1: the post-handshake message; 3: the CTAP response (2 is the
    // padded update).
    for (flip, step) in [
        (0, Step::Handshake),
        (1, Step::PostHandshake),
        (3, Step::WaitingForUser),
    ] {
        let rig = Rig::new().await;
        let (proxy, task) = tampering_proxy(rig.relay.url(), flip).await;
        let (options, _) = creation_options(&rp, "mallory");
        let (reg, phone, events) = rig
            .register(&options, phone_with(AutoApprove), Some(&proxy))
            .await;
        task.abort();
        let err = reg.expect_err("a tampered session must fail");
        assert_eq!(err.step(), Some(step), "flip {flip}: {err}");
        match (&err, flip) {
            (Error::Handshake(_), 0) => {}
            (Error::Protocol { source, .. }, _) => {
                assert_eq!(source, &hybridge_proto::Error::Decrypt, "flip {flip}")
            }
            (other, _) => panic!("flip {flip}: unexpected {other}"),
        }
        assert!(
            !events.contains(&Event::Done),
            "flip {flip}: nothing was accepted"
        );
        if flip < 3 {
            // The laptop hung up before sending a request: Chromium's UNEXPECTED_EOF.
            assert!(
                matches!(phone, Err(PhoneError::UnexpectedEof)),
                "flip {flip}: {phone:?}"
            );
        }
    }
}

/// A laptop that never comes: the phone gives up in time and stops advertising.
#[tokio::test]
async fn phone_stops_advertising_when_no_laptop_comes() {
    let rig = Rig::new().await;
    let laptop = LaptopQr::new(
        QrKeys::generate(&mut rand_core::OsRng),
        1_700_000_000,
        false,
        RequestType::GetAssertion,
    );
    let mut config = phone_config(&rig.relay.url());
    config.timeouts.laptop = Duration::from_millis(300);
    let mut scan = rig.radio.scan(&hybridge_ble::CABLE_UUIDS).await.unwrap();
    let err = phone_with(AutoApprove)
        .with_config(config)
        .serve(
            &QrInput::Text(laptop.qr_url()),
            &rig.radio,
            &PhoneEvents::none(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PhoneError::Timeout {
                step: phone::PhoneStep::WaitingForLaptop,
                ..
            }
        ),
        "{err}"
    );
    // It did advertise, and stopped: drain what was queued, then silence.
    scan.next_timeout(Duration::from_secs(1)).await.unwrap();
    while scan.try_next().is_some() {}
    assert!(scan.next_timeout(Duration::from_millis(200)).await.is_err());
    for _ in 0..200 {
        if rig.relay.tunnels() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rig.relay.tunnels(), 0, "the tunnel was closed");
}

/// A `wss://` relay with a certificate from a private CA: registration and sign-in work when
/// both sides trust it, and a laptop with only the public roots refuses the relay.
#[tokio::test]
async fn over_tls_with_a_private_ca() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("hybridge-session-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let relay = Relay::bind(Config {
        tls: Some(hybridge_relay::TlsFiles { cert, key }),
        ..Config::default()
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("wss://localhost:{}", relay.local_addr().port());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let rig = Rig {
        relay,
        radio: MemoryRadio::new().with_interval(Duration::from_millis(10)),
        photo: false,
        url: url.clone(),
        tls: Some(Arc::new(session::ws::tls_with_roots(roots))),
    };
    let rp = rp();
    let authenticator = phone_with(AutoApprove);
    let (options, state) = creation_options(&rp, "grace");
    let (reg, phone, _) = rig.register(&options, authenticator.clone(), None).await;
    let cred = verify_registration(&rp, &reg.expect("registration over wss"), &state);
    phone.unwrap();
    let (rcr, state) = request_options(&rp, vec![cred]);
    let (assertion, phone, _) = rig
        .sign_in(&serde_json::to_string(&rcr).unwrap(), authenticator)
        .await;
    let pkc: PublicKeyCredential =
        serde_json::from_value(assertion.expect("sign-in over wss").to_json()).unwrap();
    rp.authenticate_credential(&pkc, &state).unwrap();
    phone.unwrap();

    // Public roots only: the self-signed relay is refused.
    let (options, _) = creation_options(&rp, "heidi");
    let (events, qr, _watcher) = watch_events();
    let fake = spawn_fake_phone(qr, rig.radio.clone());
    let err = register(&options, ORIGIN, &rig.radio, &laptop_config(&url), &events)
        .await
        .unwrap_err();
    fake.abort();
    match &err {
        Error::RelayUnreachable { source, .. } => {
            assert!(matches!(source, ws::ConnectError::Tls { .. }), "{source:?}");
            assert!(err.to_string().contains("TLS"), "{err}");
        }
        other => panic!("expected a TLS failure, got {other}"),
    }
}

/// credProps and prf through the whole stack: the client hashes PRF inputs, the phone
/// evaluates them, the client reports them; the RP still verifies both ceremonies.
#[tokio::test]
async fn cred_props_and_prf_end_to_end() {
    let rig = Rig::new().await;
    let rp = rp();
    let authenticator = phone_with(AutoApprove);
    let (options, state) = creation_options(&rp, "ivan");
    let mut json: serde_json::Value = serde_json::from_str(&options).unwrap();
    json["publicKey"]["extensions"] = serde_json::json!({ "credProps": true, "prf": {} });
    let (reg, _, _) = rig
        .register(&json.to_string(), authenticator.clone(), None)
        .await;
    let reg = reg.unwrap();
    assert_eq!(reg.extensions.cred_props_rk, Some(true));
    assert_eq!(reg.extensions.prf_enabled, Some(true));
    let out = reg.to_json();
    assert_eq!(out["clientExtensionResults"]["credProps"]["rk"], true);
    assert_eq!(out["clientExtensionResults"]["prf"]["enabled"], true);
    let cred = verify_registration(&rp, &reg, &state);

    let mut firsts = Vec::new();
    for input in ["salt one", "salt one", "salt two"] {
        let (rcr, state) = request_options(&rp, vec![cred.clone()]);
        let mut json = serde_json::to_value(&rcr).unwrap();
        json["publicKey"]["extensions"] = serde_json::json!({
            "prf": { "eval": { "first": hybridge_client::webauthn::b64url(input.as_bytes()) } }
        });
        let (assertion, _, _) = rig.sign_in(&json.to_string(), authenticator.clone()).await;
        let assertion = assertion.unwrap();
        let results = assertion
            .extensions
            .prf_results
            .clone()
            .expect("prf results");
        assert_eq!(results.first.len(), 32);
        assert!(results.second.is_none());
        firsts.push(results.first);
        let pkc: PublicKeyCredential = serde_json::from_value(assertion.to_json()).unwrap();
        rp.authenticate_credential(&pkc, &state).unwrap();
    }
    assert_eq!(firsts[0], firsts[1], "same input, same output");
    assert_ne!(firsts[0], firsts[2], "different input, different output");
}

// Keep the mpsc import honest: the events API takes a plain sender too.
#[test]
fn events_from_a_sender() {
    let (tx, _rx) = mpsc::channel::<Event>(1);
    let _ = Events::from(tx);
    fn _scanner_is_object_safe(_: &dyn Scanner) {}
}

/// The CTAP 2.3 data channel, end to end over the in-memory radio: the laptop offers it in
/// its QR code, the phone listens and names its PSM in the advert, and the whole ceremony
/// runs over the channel. The laptop's relay is a port nobody listens on, so touching it
/// would fail the ceremony; the phone's relay tunnel is closed as soon as the laptop comes.
/// An independent RP verifies the result.
#[tokio::test]
async fn a_data_channel_ceremony_leaves_the_relay_out_and_is_verified_by_an_independent_rp() {
    let rig = Rig::new().await;
    let rp = rp();
    let (options, state) = creation_options(&rp, "dana");
    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let (events, qr, watcher) = watch_events();
    let (phone_events, mut phone_progress) = PhoneEvents::channel(64);
    let phone = {
        let radio = rig.radio.clone();
        let phone = phone_with(AutoApprove)
            .with_config(rig.phone_config())
            .data_channel(true);
        tokio::spawn(async move {
            let url = qr.await.expect("the laptop shows a QR code");
            let r = phone
                .serve(&QrInput::Text(url), &radio, &phone_events)
                .await;
            drop(phone_events);
            r
        })
    };
    let config = LaptopConfig {
        data_channel: true,
        ..rig.laptop_config(Some(&nobody))
    };
    let reg = tokio::time::timeout(T, register(&options, ORIGIN, &rig.radio, &config, &events))
        .await
        .expect("the laptop finishes")
        .expect("registration over the data channel");
    drop(events);
    let outcome = tokio::time::timeout(T, phone)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((outcome.command, outcome.status), (0x01, 0x00));
    verify_registration(&rp, &reg, &state);
    let events = watcher.await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::OpeningDataChannel { psm } if *psm >= 0x80)),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Connecting(_))),
        "the laptop never went to a relay: {events:?}"
    );
    let mut progress = Vec::new();
    while let Some(p) = phone_progress.recv().await {
        progress.push(p);
    }
    assert!(
        progress.contains(&PhoneProgress::DataChannel),
        "{progress:?}"
    );
}

/// A laptop offering the data channel to a phone that does not offer one, and a phone
/// offering it to a laptop that did not ask: both ceremonies run through the relay as before.
#[tokio::test]
async fn one_side_without_the_data_channel_gets_the_relay() {
    let rig = Rig::new().await;
    let rp = rp();
    for (laptop_offers, phone_offers) in [(true, false), (false, true)] {
        let (options, state) = creation_options(&rp, "emil");
        let (events, qr, watcher) = watch_events();
        let phone = {
            let radio = rig.radio.clone();
            let phone = phone_with(AutoApprove)
                .with_config(rig.phone_config())
                .data_channel(phone_offers);
            tokio::spawn(async move {
                let url = qr.await.expect("the laptop shows a QR code");
                phone
                    .serve(&QrInput::Text(url), &radio, &PhoneEvents::none())
                    .await
            })
        };
        let config = LaptopConfig {
            data_channel: laptop_offers,
            ..rig.laptop_config(None)
        };
        let reg = tokio::time::timeout(T, register(&options, ORIGIN, &rig.radio, &config, &events))
            .await
            .expect("the laptop finishes")
            .expect("registration through the relay");
        drop(events);
        tokio::time::timeout(T, phone)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        verify_registration(&rp, &reg, &state);
        let events = watcher.await.unwrap();
        assert!(
            events.iter().any(|e| matches!(e, Event::Connecting(_))),
            "{laptop_offers}/{phone_offers}: {events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::OpeningDataChannel { .. })),
            "{laptop_offers}/{phone_offers}: {events:?}"
        );
    }
}

/// A QR code that offers linking, to a phone that does not link: the response is the
/// caller's before any wait, and the wait for a late link ends as soon as the phone closes
/// (not after Chromium's three minutes).
#[tokio::test]
async fn a_phone_that_does_not_link_ends_the_wait_for_a_late_link_when_it_closes() {
    let rig = Rig::new().await;
    let rp = rp();
    let mut lconfig = rig.laptop_config(None);
    lconfig.supports_linking = true;
    let (options, state) = creation_options(&rp, "nolink");
    let (screen, qr, watcher) = watch_events();
    let phone = spawn_phone(
        qr,
        rig.radio.clone(),
        phone_with(AutoApprove),
        phone_config(&rig.url),
        false,
    );
    let prepared = session::register(&options, ORIGIN, &lconfig).unwrap();
    screen.show_qr(prepared.qr_url().unwrap());
    let (reg, closing) = tokio::time::timeout(T, prepared.run_linking(&rig.radio, &screen.events))
        .await
        .unwrap()
        .expect("registration succeeds");
    // The response is usable now, with the tunnel still open.
    verify_registration(&rp, &reg, &state);
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), closing.finish(&screen.events))
        .await
        .expect("the wait ends with the phone's close");
    assert!(end.linking.is_none());
    assert!(started.elapsed() < Duration::from_secs(10));
    phone.await.unwrap().expect("the phone served");
    drop(screen);
    let events = watcher.await.unwrap();
    let waited = events
        .iter()
        .position(|e| *e == Event::AwaitingLinking(Duration::from_secs(180)));
    let done = events.iter().position(|e| *e == Event::Done);
    assert!(waited.is_some() && waited < done, "{events:?}");
}

/// Issue 14's loop in one process: a QR registration in which the phone offers a link and the
/// laptop keeps it (verified with the QR key), then a sign-in with no QR code at all: the
/// laptop contacts the phone through the relay, the phone (subscribed for wake-ups with its
/// wake key) joins, advertises with the link's key and answers NKpsk0; the RP verifies both.
/// A revoked link is refused by the phone; a phone that is not subscribed is a 410, said as
/// unreachable.
#[tokio::test]
async fn a_phone_linked_by_qr_code_is_reached_again_without_one() {
    use hybridge_authenticator::phone::LinkIdentity;
    use hybridge_authenticator::store::{FileStore, KdfParams};
    use hybridge_client::webauthn::RequestOptions;
    use hybridge_proto::session::LinkedPhone;

    let rig = Rig::new().await;
    let rp = rp();
    // The phone's linking identity, made by its encrypted store.
    let dir = std::env::temp_dir().join(format!("hybridge-linked-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store =
        FileStore::create(dir.join("store"), "1234", KdfParams::insecure_for_tests()).unwrap();
    let identity =
        LinkIdentity::from_state(&store.ensure_linking().unwrap(), "Test phone").unwrap();
    let authenticator = phone_with(AutoApprove).with_config(PhoneConfig {
        linking: Some(identity.clone()),
        ..rig.phone_config()
    });
    let mut lconfig = rig.laptop_config(None);
    lconfig.supports_linking = true;

    // 1. Register by QR code; the phone links.
    let (options, reg_state) = creation_options(&rp, "linda");
    let (screen, qr, _watcher) = watch_events();
    let (phone_events, mut phone_progress) = PhoneEvents::channel(64);
    let phone = tokio::spawn({
        let (radio, authenticator) = (rig.radio.clone(), authenticator.clone());
        async move {
            let url = qr.await.unwrap();
            authenticator
                .serve(&QrInput::Text(url), &radio, &phone_events)
                .await
        }
    });
    let prepared = session::register(&options, ORIGIN, &lconfig).unwrap();
    screen.show_qr(prepared.qr_url().unwrap());
    let (reg, closing) = tokio::time::timeout(T, prepared.run_linking(&rig.radio, &screen.events))
        .await
        .unwrap()
        .expect("registration succeeds");
    // The link came with the phone's first update: nothing to wait for.
    let end = tokio::time::timeout(Duration::from_secs(5), closing.finish(&screen.events))
        .await
        .expect("no wait for a link that came already");
    phone.await.unwrap().expect("the phone served");
    let cred = verify_registration(&rp, &reg, &reg_state);
    let mut link_id = None;
    while let Ok(p) = phone_progress.try_recv() {
        if let PhoneProgress::Linked { link_id: id } = p {
            link_id = Some(id);
        }
    }
    let link_id = link_id.expect("the phone said it linked");
    let linking = end.linking.expect("the laptop got verified linking data");
    assert_eq!(linking.link_id, link_id);
    assert_eq!(linking.authenticator_name, "Test phone");
    assert_eq!(linking.contact_id, identity.contact_id().0);
    let stored = LinkedPhone::from_linking(&linking, 0);

    // 2. The phone waits for wake-ups; the laptop signs in with no QR code.
    let sign_in_options = || {
        let (rcr, state) = request_options(&rp, vec![cred.clone()]);
        let options = RequestOptions::from_json(
            &serde_json::to_string(&rcr).unwrap(),
            &Origin::parse(ORIGIN).unwrap(),
        )
        .unwrap();
        (options, state)
    };
    // Subscribed when this returns; the wake-up is then served by the task it yields.
    #[allow(clippy::async_yields_async)]
    let listen = |allowed: Option<[u8; 8]>| {
        let (radio, authenticator, identity, url) = (
            rig.radio.clone(),
            authenticator.clone(),
            identity.clone(),
            rig.url.clone(),
        );
        async move {
            let mut sub = ws::subscribe(
                &url,
                identity.wake_key(),
                None,
                ws::linked::Timeouts::default(),
            )
            .await
            .expect("the phone subscribes");
            assert_eq!(sub.contact_id(), identity.contact_id());
            tokio::spawn(async move {
                let wake = sub.next_wake().await.expect("a wake-up");
                let is_linked = move |id: &[u8]| allowed.is_some_and(|a| a == id);
                let served = authenticator
                    .serve_linked(&wake, &is_linked, &radio, &PhoneEvents::none())
                    .await;
                (wake, served)
            })
        }
    };
    let phone = listen(Some(link_id)).await;
    let (options, state) = sign_in_options();
    let prepared = session::Prepared::linked(options, &lconfig, stored.clone());
    assert!(prepared.qr_url().is_none());
    let (events, _, _watcher) = watch_events();
    let assertion = tokio::time::timeout(T, prepared.run(&rig.radio, &events.events))
        .await
        .unwrap()
        .expect("the linked sign-in succeeds");
    let (wake, served) = phone.await.unwrap();
    assert_eq!(
        served.expect("the phone served"),
        PhoneOutcome {
            command: 0x02,
            status: 0x00
        }
    );
    // The same wake-up again (someone replaying the laptop's contact request): refused
    // before the phone advertises or asks anyone.
    let replayed = authenticator
        .serve_linked(&wake, &|_| true, &rig.radio, &PhoneEvents::none())
        .await;
    assert!(
        matches!(replayed, Err(PhoneError::ReplayedWake)),
        "{replayed:?}"
    );
    let pkc: PublicKeyCredential = serde_json::from_value(assertion.to_json()).unwrap();
    rp.authenticate_credential(&pkc, &state)
        .expect("the RP accepts the linked assertion");

    // 3. Revoked on the phone: the wake-up is refused, nothing is signed, and the laptop
    // never hears an advert.
    let phone = listen(None).await;
    let (options, _) = sign_in_options();
    let mut short = lconfig.clone();
    short.timeouts.scan = Duration::from_secs(2);
    let result = session::Prepared::linked(options, &short, stored.clone())
        .run(&rig.radio, &Events::none())
        .await;
    assert!(
        matches!(phone.await.unwrap().1, Err(PhoneError::NotLinked)),
        "the phone refuses a link it does not have"
    );
    assert!(
        matches!(result, Err(Error::ProximityTimeout(_))),
        "{result:?}"
    );

    // 4. Nobody subscribed: 410 from the relay, at once, said as the phone being unreachable.
    let (options, _) = sign_in_options();
    let started = std::time::Instant::now();
    let err = session::Prepared::linked(options, &lconfig, stored)
        .run(&rig.radio, &Events::none())
        .await
        .expect_err("no phone to wake");
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

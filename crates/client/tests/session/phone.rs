//! The phone session (`hybridge_authenticator::phone`) against a scripted laptop, over an
//! in-process relay and the in-memory radio: what the phone does when the laptop leaves while
//! the user decides, sends updates, or asks for authenticatorSelection. The laptop here is
//! built from `hybridge_proto`'s public pieces with a raw record layer, so it can send what
//! the real laptop session never would.

use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use hybridge_authenticator::authenticator::Authenticator;
use hybridge_authenticator::phone::{self, PhoneConfig, PhoneError, PhoneEvents, PhoneTimeouts};
use hybridge_authenticator::phone::{PhoneOutcome, QrInput};
use hybridge_authenticator::store::{CredentialStore, MemoryStore};
use hybridge_authenticator::user::{AccountChoice, Approval, ApprovalRequest, UserAgent};
use hybridge_ble::{MemoryRadio, Scanner};
use hybridge_client::session::ws;
use hybridge_ctap::{
    MakeCredentialExtensions, MakeCredentialRequest, Options, PubKeyCredParam, Request, RpEntity,
    UserEntity,
};
use hybridge_proto::crypter::Crypter;
use hybridge_proto::handshake::Initiator;
use hybridge_proto::qr::{QrKeys, RequestType};
use hybridge_proto::session::LaptopQr;
use hybridge_proto::{kdf, keys};
use hybridge_relay::{Config, Relay};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(20);
/// How long the phone may take to notice something the laptop did.
const NOTICE: Duration = Duration::from_secs(5);

/// The person holding the phone: reports that they were asked, then waits for the test to
/// tell them what to answer.
struct Gate {
    asked: mpsc::UnboundedSender<()>,
    answer: std_mpsc::Receiver<Approval>,
}

impl UserAgent for Gate {
    fn approve(&mut self, _: &ApprovalRequest) -> Approval {
        let _ = self.asked.send(());
        self.answer.recv_timeout(T).unwrap_or(Approval::Declined)
    }
    fn choose_account(&mut self, _: &str, _: &[AccountChoice]) -> Option<usize> {
        Some(0)
    }
}

type Phone = phone::Phone<Authenticator<MemoryStore, Gate>>;

struct Person {
    asked: mpsc::UnboundedReceiver<()>,
    answer: std_mpsc::Sender<Approval>,
}

fn gated_phone() -> (Phone, Person) {
    let (asked_tx, asked) = mpsc::unbounded_channel();
    let (answer, answer_rx) = std_mpsc::channel();
    let gate = Gate {
        asked: asked_tx,
        answer: answer_rx,
    };
    let a = Authenticator::new(MemoryStore::new(), gate, || 1_700_000_000, rand_core::OsRng);
    (phone::Phone::new(a), Person { asked, answer })
}

impl Person {
    async fn wait_until_asked(&mut self) {
        tokio::time::timeout(T, self.asked.recv())
            .await
            .expect("the user is asked")
            .expect("the user agent is alive");
    }
}

/// A laptop holding the raw record layer.
struct Laptop {
    socket: ws::Ws,
    crypter: Crypter,
}

impl Laptop {
    async fn send(&mut self, plaintext: &[u8]) {
        let ct = self.crypter.encrypt(plaintext).unwrap();
        ws::send(&mut self.socket, ct).await.unwrap();
    }

    /// The next message, decrypted; `None` when the tunnel closed.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let m = tokio::time::timeout(T, ws::recv(&mut self.socket))
            .await
            .expect("the phone answers or closes in time")
            .ok()
            .flatten()?;
        Some(self.crypter.decrypt(&m).unwrap())
    }
}

struct Rig {
    _relay: Relay,
    url: String,
    radio: MemoryRadio,
}

impl Rig {
    async fn new() -> Self {
        let relay = Relay::bind(Config::default()).await.unwrap();
        Self {
            url: relay.url(),
            _relay: relay,
            radio: MemoryRadio::new().with_interval(Duration::from_millis(10)),
        }
    }

    /// Starts a phone on a fresh QR code and connects a laptop to it: handshake done, the
    /// post-handshake message and the padded update read.
    async fn start(
        &self,
        handler: Phone,
        user_timeout: Duration,
    ) -> (Laptop, JoinHandle<Result<PhoneOutcome, PhoneError>>) {
        let keys = QrKeys::generate(&mut rand_core::OsRng);
        let mut qr = LaptopQr::new(
            keys.clone(),
            1_700_000_000,
            true,
            RequestType::MakeCredential,
        );
        let mut scan = self.radio.scan(&hybridge_ble::CABLE_UUIDS).await.unwrap();
        let config = PhoneConfig {
            relay: Some(self.url.clone()),
            domain_id: 0,
            timeouts: PhoneTimeouts {
                laptop: Duration::from_secs(10),
                user: user_timeout,
                close: Duration::from_secs(1),
                ..PhoneTimeouts::default()
            },
            tls: None,
            data_channel: false,
            linking: None,
        };
        let (radio, qr_url) = (self.radio.clone(), qr.qr_url());
        let phone = tokio::spawn(async move {
            handler
                .with_config(config)
                .serve(&QrInput::Text(qr_url), &radio, &PhoneEvents::none())
                .await
        });
        let connect = loop {
            let adv = scan.next_timeout(T).await.expect("the phone advertises");
            // Chrome on Linux takes exactly 20 bytes; no CTAP 2.3 suffix was asked for.
            assert_eq!(adv.service_data.len(), 20, "{:02x?}", adv.service_data);
            if let Some(c) = qr.on_advert(&adv.service_data).unwrap() {
                break c;
            }
        };
        let _ = scan.stop().await;
        let (mut socket, _) = ws::connect(&connect.path().to_url(&self.url), None)
            .await
            .unwrap();
        let psk = kdf::psk(keys.secret.expose(), &qr.advert().unwrap().plaintext);
        let ephemeral = keys::generate(&mut rand_core::OsRng);
        let (initiator, msg1) = Initiator::qr(&keys.identity, &psk, &ephemeral).unwrap();
        ws::send(&mut socket, msg1.to_vec()).await.unwrap();
        let msg2 = ws::recv(&mut socket).await.unwrap().unwrap();
        let crypter = initiator.finish(&msg2).unwrap().crypter;
        let mut laptop = Laptop { socket, crypter };
        let post = laptop.recv().await.expect("post-handshake message");
        assert_eq!(post.first(), Some(&0xa1), "a CBOR map: {post:02x?}");
        let update = laptop.recv().await.expect("the padded update");
        assert_eq!(update.first(), Some(&0x02));
        (laptop, phone)
    }
}

/// `0x01 ‖ makeCredential` for a discoverable credential.
fn make_credential() -> Vec<u8> {
    let request = {
        let mut v = MakeCredentialRequest::default();
        v.client_data_hash = [7; 32];
        v.rp = RpEntity {
            id: "example.com".into(),
            name: Some("Example".into()),
        };
        v.user = UserEntity {
            id: b"kim".to_vec(),
            name: Some("kim".into()),
            display_name: Some("Kim".into()),
        };
        v.pub_key_cred_params = vec![PubKeyCredParam::es256()];
        v.extensions = MakeCredentialExtensions::default();
        v.options = Options {
            rk: Some(true),
            up: None,
            uv: Some(true),
        };
        v
    };
    let mut m = vec![0x01];
    m.extend_from_slice(&Request::MakeCredential(Box::new(request)).encode());
    m
}

/// Waits until the blocking thread has let go of the authenticator, then returns how many
/// passkeys it holds.
async fn stored_after_user_finished(handler: &Phone) -> usize {
    for _ in 0..500 {
        if let Some(n) = handler.with_handler(|a| a.store().list().unwrap().len()) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the authenticator is still busy");
}

/// The user approves the pending makeCredential: its successful answer reaches the laptop,
/// the laptop shuts the session down, the phone reports it served it, and the passkey is
/// stored.
async fn approve_and_finish(
    laptop: &mut Laptop,
    person: &Person,
    phone: JoinHandle<Result<PhoneOutcome, PhoneError>>,
    handler: &Phone,
) {
    person
        .answer
        .send(Approval::Approved { verified: true })
        .unwrap();
    let response = laptop.recv().await.expect("the phone answers");
    assert_eq!(&response[..2], &[0x01, 0x00], "a successful CTAP answer");
    laptop.send(&[0x00]).await;
    let outcome = tokio::time::timeout(T, phone).await.unwrap().unwrap();
    assert_eq!(
        outcome.unwrap(),
        PhoneOutcome {
            command: 0x01,
            status: 0x00
        }
    );
    assert_eq!(stored_after_user_finished(handler).await, 1);
}

/// The laptop leaves while the user decides — by closing the tunnel, or by sending its
/// shutdown message — and the phone notices at once (Chromium's `EOF_WHILE_PROCESSING`):
/// the session ends with a clear error, and the approval the user gives afterwards writes
/// nothing.
#[tokio::test]
async fn laptop_leaving_while_the_user_decides_cancels_the_request() {
    let rig = Rig::new().await;
    for how in ["close", "shutdown"] {
        let (handler, mut person) = gated_phone();
        let (mut laptop, phone) = rig.start(handler.clone(), T).await;
        laptop.send(&make_credential()).await;
        person.wait_until_asked().await;
        match how {
            "close" => ws::close(&mut laptop.socket, Duration::from_secs(1)).await,
            _ => laptop.send(&[0x00]).await,
        }
        let result = tokio::time::timeout(NOTICE, phone)
            .await
            .unwrap_or_else(|_| panic!("{how}: the phone did not notice the laptop leave"))
            .unwrap();
        let err = result.expect_err(how);
        assert!(
            matches!(err, PhoneError::EofWhileProcessing),
            "{how}: {err}"
        );
        assert!(err.to_string().contains("nothing was saved"), "{err}");

        // The user approves anyway: nothing is written.
        person
            .answer
            .send(Approval::Approved { verified: true })
            .unwrap();
        assert_eq!(stored_after_user_finished(&handler).await, 0, "{how}");
        // The cancel ended only that request: the next session on the same authenticator
        // is served and stores its passkey.
        let (mut laptop, phone) = rig.start(handler.clone(), T).await;
        laptop.send(&make_credential()).await;
        person.wait_until_asked().await;
        approve_and_finish(&mut laptop, &person, phone, &handler).await;
    }
}

/// Updates from the laptop while the user decides — well-formed CBOR of any shape, even a
/// linking-looking map — are ignored (Chromium's phone only checks that they are CBOR): the
/// request goes on and its answer reaches the laptop.
#[tokio::test]
async fn updates_while_the_user_decides_are_ignored() {
    let rig = Rig::new().await;
    let (handler, mut person) = gated_phone();
    let (mut laptop, phone) = rig.start(handler.clone(), T).await;
    laptop.send(&make_credential()).await;
    person.wait_until_asked().await;
    // {}, 5, [], {1: "not linking data"}, {0: h'0000'}
    for update in [
        &[0x02, 0xa0][..],
        &[0x02, 0x05],
        &[0x02, 0x80],
        &[0x02, 0xa1, 0x01, 0x61, 0x78],
        &[0x02, 0xa1, 0x00, 0x42, 0x00, 0x00],
    ] {
        laptop.send(update).await;
    }
    // Give the phone time to read them while the user still decides.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!phone.is_finished(), "the phone gave up: {:?}", phone.await);
    approve_and_finish(&mut laptop, &person, phone, &handler).await;
}

/// An update that is not CBOR at all ends the session, as in Chromium's phone (docs/protocol.md §8.4:
/// it checks that the payload parses as CBOR): the request is cancelled and a late approval
/// writes nothing.
#[tokio::test]
async fn an_update_that_is_not_cbor_ends_the_session_and_cancels_the_request() {
    let rig = Rig::new().await;
    let (handler, mut person) = gated_phone();
    let (mut laptop, phone) = rig.start(handler.clone(), T).await;
    laptop.send(&make_credential()).await;
    person.wait_until_asked().await;
    laptop.send(&[0x02, 0xff]).await;
    let err = tokio::time::timeout(NOTICE, phone)
        .await
        .expect("the phone ends the session")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            PhoneError::Protocol {
                step: phone::PhoneStep::Processing,
                source: hybridge_proto::Error::Cbor(_),
            }
        ),
        "{err}"
    );
    person
        .answer
        .send(Approval::Approved { verified: true })
        .unwrap();
    assert_eq!(stored_after_user_finished(&handler).await, 0);
}

/// authenticatorSelection (0x0B): Chrome's phone ends the transaction with an error and no
/// answer (docs/protocol.md §9); so does ours, without asking the user.
#[tokio::test]
async fn authenticator_selection_ends_the_session_without_asking() {
    let rig = Rig::new().await;
    let (handler, mut person) = gated_phone();
    let (mut laptop, phone) = rig.start(handler.clone(), T).await;
    laptop.send(&[0x01, 0x0B]).await;
    let err = tokio::time::timeout(NOTICE, phone)
        .await
        .expect("the phone ends the session")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, PhoneError::AuthenticatorSelection), "{err}");
    assert!(err.to_string().contains("0x0B"), "{err}");
    assert!(
        laptop.recv().await.is_none(),
        "no answer, the tunnel closed"
    );
    assert!(person.asked.try_recv().is_err(), "nobody was asked");
}

/// A laptop that sends getInfo over the tunnel (Chromium's and libwebauthn's answer it
/// locally, but Chrome's phone accepts it, docs/protocol.md §9) gets the post-handshake getInfo back,
/// without anybody being asked, and the request after it is served as usual.
#[tokio::test]
async fn get_info_over_the_tunnel_is_answered_and_the_request_after_it_served() {
    let rig = Rig::new().await;
    let (handler, mut person) = gated_phone();
    let get_info = handler.with_handler(|a| a.get_info().to_cbor()).unwrap();
    let (mut laptop, phone) = rig.start(handler.clone(), T).await;
    laptop.send(&[0x01, 0x04]).await;
    let answer = laptop.recv().await.expect("the phone answers getInfo");
    assert_eq!(answer, [&[0x01, 0x00][..], &get_info].concat());
    laptop.send(&[0x01, 0x04, 0xa0]).await;
    let answer = laptop.recv().await.expect("the phone answers getInfo");
    assert_eq!(
        answer,
        [0x01, 0x03],
        "a getInfo with a payload: INVALID_LENGTH"
    );
    assert!(person.asked.try_recv().is_err(), "nobody was asked");

    laptop.send(&make_credential()).await;
    person.wait_until_asked().await;
    approve_and_finish(&mut laptop, &person, phone, &handler).await;
}

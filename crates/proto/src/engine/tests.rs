//! Both engines wired back to back in memory, with a simulated clock: every timeout and every
//! early end at every step, asserted by its exact failure.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;
use crate::keys;
use crate::qr::{QrKeys, RequestType};
use crate::session::{ContactRequest, LaptopLinked, LaptopQr, LinkedPhone, PhoneLinked, PhoneQr};

const GET_INFO: &[u8] = &[
    0xa1, 0x01, 0x81, 0x68, b'F', b'I', b'D', b'O', b'_', b'2', b'_', b'0',
];
const REQUEST: &[u8] = &[0x01, 0xa0];
const RESPONSE: &[u8] = &[0x00, 0xa1, 0x01, 0x02];

fn cbor_map(b: &[u8]) -> Result<(), String> {
    match hybridge_cbor::decode(b) {
        Ok(hybridge_cbor::Value::Map(_)) => Ok(()),
        Ok(_) => Err("not a map".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// What the simulated world does on its own.
#[derive(Clone, Copy)]
struct Script {
    /// The relay gives the phone a routing ID.
    routing_id: bool,
    /// The phone's advert reaches the laptop.
    advert: bool,
    /// Messages reach the phone / the laptop.
    to_phone: bool,
    to_laptop: bool,
    /// The laptop sends its request as soon as it is ready.
    request: bool,
    /// The phone's authenticator answers at once.
    answer: bool,
    /// The laptop closes once it has its response.
    close: bool,
    /// The laptop closes the tunnel without a shutdown message after its response.
    hang_up: bool,
    /// The laptop's L2CAP connection to the phone's PSM: opens, is refused, or hangs.
    l2cap: L2cap,
    /// The phone closing its end reaches the laptop (else the relay keeps the laptop's open).
    phone_close_heard: bool,
}

/// What opening the data channel does in the simulated world.
#[derive(Clone, Copy, PartialEq, Eq)]
enum L2cap {
    Opens,
    Refused,
    Hangs,
}

/// The PSM the simulated phone listens on.
const PSM: u16 = 0x0081;

impl Default for Script {
    fn default() -> Self {
        Self {
            routing_id: true,
            advert: true,
            to_phone: true,
            to_laptop: true,
            request: true,
            answer: true,
            close: true,
            hang_up: false,
            l2cap: L2cap::Opens,
            phone_close_heard: true,
        }
    }
}

/// The two engines and everything between them: the radio, the relay's tunnel, the user.
struct Pair {
    t0: Instant,
    now: Instant,
    script: Script,
    laptop: LaptopEngine,
    phone: PhoneEngine,
    advert: Option<Vec<u8>>,
    scanning: bool,
    phone_tunnel: bool,
    laptop_tunnel: bool,
    /// The phone accepts on its L2CAP PSM (it said so, and still advertises).
    phone_accepting: bool,
    /// The L2CAP channel between them is open; which side uses it.
    channel_open: bool,
    laptop_on_channel: bool,
    phone_on_channel: bool,
    /// Messages that crossed the relay.
    relayed: usize,
    /// The service data the phone advertised last.
    advertised: Vec<u8>,
    /// The advert carries the CTAP 2.3 suffix (`{1: PSM}`, 4 bytes), else exactly 20 bytes.
    expect_suffix: bool,
    /// What is on its way to each side, in order; `None` is the peer's close.
    to_phone: VecDeque<Option<Vec<u8>>>,
    to_laptop: VecDeque<Option<Vec<u8>>>,

    serving: Option<Vec<u8>>,
    laptop_log: Vec<LaptopOutput>,
    phone_log: Vec<PhoneOutput>,
    laptop_result: Option<Result<Option<LinkingInfo>, Failure>>,
    phone_result: Option<Result<PhoneOutcome, Failure>>,
    responses: Vec<Vec<u8>>,
}

impl Pair {
    fn new(script: Script) -> Self {
        Self::with(
            script,
            true,
            0,
            PhoneTimeouts::default(),
            LaptopTimeouts::default(),
        )
    }

    /// A pair where the laptop's QR code offers the data channel (`laptop_offers`) and the
    /// phone listens on [`PSM`] (`phone_listens`).
    fn data_channel(script: Script, laptop_offers: bool, phone_listens: bool) -> Self {
        let rng = &mut rand_core::OsRng;
        let mut pair = Self::new(script);
        let mut qr = LaptopQr::new(
            QrKeys::generate(rng),
            1_700_000_000,
            false,
            RequestType::MakeCredential,
        );
        if laptop_offers {
            qr = qr.with_data_channel();
        }
        let phone_qr = PhoneQr::from_payload(qr.qr_payload().clone());
        pair.laptop = LaptopEngine::new(
            qr,
            keys::generate(rng),
            LaptopTimeouts::default(),
            cbor_map,
            pair.t0,
        );
        let mut phone = PhoneEngine::new(
            phone_qr,
            GET_INFO.to_vec(),
            keys::generate(rng),
            [9; 10],
            0,
            PhoneTimeouts::default(),
            pair.t0,
        );
        if phone_listens {
            phone = phone.with_data_channel(PSM);
        }
        pair.phone = phone;
        pair.expect_suffix = laptop_offers && phone_listens;
        pair
    }

    fn with(
        script: Script,
        key4: bool,
        domain_id: u16,
        phone_t: PhoneTimeouts,
        laptop_t: LaptopTimeouts,
    ) -> Self {
        let rng = &mut rand_core::OsRng;
        let t0 = Instant::now();
        let qr = LaptopQr::new(
            QrKeys::generate(rng),
            1_700_000_000,
            false,
            RequestType::MakeCredential,
        );
        let mut payload = qr.qr_payload().clone();
        if !key4 {
            payload.supports_linking = None;
        }
        let phone_qr = PhoneQr::from_payload(payload);
        Self {
            t0,
            now: t0,
            script,
            laptop: LaptopEngine::new(qr, keys::generate(rng), laptop_t, cbor_map, t0),
            phone: PhoneEngine::new(
                phone_qr,
                GET_INFO.to_vec(),
                keys::generate(rng),
                [9; 10],
                domain_id,
                phone_t,
                t0,
            ),
            advert: None,
            scanning: false,
            phone_tunnel: false,
            laptop_tunnel: false,
            phone_accepting: false,
            channel_open: false,
            laptop_on_channel: false,
            phone_on_channel: false,
            relayed: 0,
            advertised: Vec::new(),
            expect_suffix: false,
            to_phone: VecDeque::new(),
            to_laptop: VecDeque::new(),
            serving: None,
            laptop_log: Vec::new(),
            phone_log: Vec::new(),
            laptop_result: None,
            phone_result: None,
            responses: Vec::new(),
        }
    }

    fn at(&self) -> Duration {
        self.now - self.t0
    }

    /// Carries out outputs and delivers messages until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.phone.poll_output() {
                moved = true;
                self.phone_log.push(out.clone());
                self.on_phone(out);
            }
            while let Some(out) = self.laptop.poll_output() {
                moved = true;
                self.laptop_log.push(out.clone());
                self.on_laptop(out);
            }
            if self.script.to_phone
                && let Some(m) = self.to_phone.pop_front()
            {
                moved = true;
                self.deliver_to_phone(m);
            }
            if self.script.to_laptop
                && let Some(m) = self.to_laptop.pop_front()
            {
                moved = true;
                self.deliver_to_laptop(m);
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver_to_phone(&mut self, m: Option<Vec<u8>>) {
        match m {
            Some(m) => self.phone.handle(self.now, PhoneInput::Received(m)),
            None => self.phone.handle(self.now, PhoneInput::Closed),
        }
    }

    fn deliver_to_laptop(&mut self, m: Option<Vec<u8>>) {
        match m {
            Some(m) => self.laptop.handle(self.now, LaptopInput::Received(m)),
            None => self.laptop.handle(self.now, LaptopInput::Closed),
        }
    }

    /// The phone closes: the laptop hears it after what was sent before.
    fn phone_closes(&mut self) {
        if self.phone_on_channel {
            if std::mem::take(&mut self.channel_open) {
                self.to_laptop.push_back(None);
            }
            return;
        }
        self.phone_tunnel = false;
        if self.laptop_tunnel && self.script.phone_close_heard {
            self.laptop_tunnel = false;
            self.to_laptop.push_back(None);
        }
    }

    /// The laptop closes: the phone hears it after what was sent before.
    fn laptop_closes(&mut self) {
        if self.laptop_on_channel {
            if std::mem::take(&mut self.channel_open) {
                self.to_phone.push_back(None);
            }
            return;
        }
        self.laptop_tunnel = false;
        if self.phone_tunnel {
            self.phone_tunnel = false;
            self.to_phone.push_back(None);
        }
    }

    fn on_phone(&mut self, out: PhoneOutput) {
        match out {
            PhoneOutput::OpenTunnel(_) => {
                self.phone_tunnel = true;
                let id = self.script.routing_id.then_some(RoutingId([1, 2, 3]));
                self.phone.handle(self.now, PhoneInput::TunnelOpened(id));
            }
            PhoneOutput::Advertise(data) => {
                let len = if self.expect_suffix { 24 } else { 20 };
                assert_eq!(data.len(), len, "{data:02x?}");
                self.advertised = data.clone();
                if self.scanning && self.script.advert {
                    self.laptop
                        .handle(self.now, LaptopInput::Advert(data.clone()));
                }
                self.advert = Some(data);
            }
            PhoneOutput::AcceptDataChannel => self.phone_accepting = true,
            PhoneOutput::StopAdvertising => {
                self.advert = None;
                self.phone_accepting = false;
            }
            PhoneOutput::UseDataChannel => {
                // The relay tunnel closes; nobody else is on it.
                self.phone_on_channel = true;
                self.phone_tunnel = false;
            }
            PhoneOutput::Send(m) => {
                if self.phone_on_channel {
                    if self.channel_open {
                        self.to_laptop.push_back(Some(m));
                    }
                } else if self.laptop_tunnel {
                    self.relayed += 1;
                    self.to_laptop.push_back(Some(m));
                }
            }
            PhoneOutput::Serve(r) => {
                assert_eq!(r, REQUEST);
                if self.script.answer {
                    self.phone
                        .handle(self.now, PhoneInput::Answer(RESPONSE.to_vec()));
                } else {
                    self.serving = Some(r);
                }
            }
            PhoneOutput::CloseTunnel => self.phone_closes(),
            PhoneOutput::Finished(r) => self.phone_result = Some(r),
            PhoneOutput::HandshakeDone
            | PhoneOutput::Cancel
            | PhoneOutput::Responded(_)
            | PhoneOutput::LinkSent(_) => {}
        }
    }

    fn on_laptop(&mut self, out: LaptopOutput) {
        match out {
            LaptopOutput::StartScan => {
                self.scanning = true;
                if let Some(a) = self.advert.clone().filter(|_| self.script.advert) {
                    self.laptop.handle(self.now, LaptopInput::Advert(a));
                }
            }
            LaptopOutput::StopScan => self.scanning = false,
            LaptopOutput::Contact(_) => {
                // The tunnel server accepts and wakes the phone; the phone joins on its own.
                self.laptop_tunnel = true;
                self.laptop.handle(self.now, LaptopInput::Connected);
            }
            LaptopOutput::Connect(_) => {
                if self.phone_tunnel {
                    self.laptop_tunnel = true;
                    self.laptop.handle(self.now, LaptopInput::Connected);
                } else {
                    self.laptop.handle(self.now, LaptopInput::ConnectFailed);
                }
            }
            LaptopOutput::OpenDataChannel { psm } => {
                assert_eq!(psm, PSM);
                match self.script.l2cap {
                    L2cap::Opens if self.phone_accepting => {
                        self.channel_open = true;
                        self.laptop_on_channel = true;
                        self.phone.handle(self.now, PhoneInput::DataChannelOpened);
                        self.laptop.handle(self.now, LaptopInput::Connected);
                    }
                    L2cap::Hangs => {}
                    _ => self.laptop.handle(self.now, LaptopInput::ConnectFailed),
                }
            }
            LaptopOutput::Send(m) => {
                if self.laptop_on_channel {
                    if self.channel_open {
                        self.to_phone.push_back(Some(m));
                    }
                } else if self.phone_tunnel {
                    self.relayed += 1;
                    self.to_phone.push_back(Some(m));
                }
            }
            LaptopOutput::Ready(info) => {
                assert_eq!(info, GET_INFO);
                if self.script.request {
                    self.laptop
                        .handle(self.now, LaptopInput::Request(REQUEST.to_vec()));
                }
            }
            LaptopOutput::Response(r) => {
                self.responses.push(r);
                if self.script.hang_up {
                    self.laptop_closes();
                } else if self.script.close {
                    self.laptop.handle(self.now, LaptopInput::Close);
                }
            }
            LaptopOutput::CloseTunnel => self.laptop_closes(),
            LaptopOutput::Finished(r) => self.laptop_result = Some(r),
            LaptopOutput::HandshakeDone
            | LaptopOutput::WaitingForUser
            | LaptopOutput::AwaitingLinking(_) => {}
        }
    }

    /// Moves the clock to the earliest timer and fires it; false when none is set.
    fn advance(&mut self) -> bool {
        let next = [self.laptop.poll_timeout(), self.phone.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return false };
        self.now = next;
        self.laptop.handle_timeout(self.now);
        self.phone.handle_timeout(self.now);
        self.run();
        true
    }

    /// Runs, advancing the clock, until both sides finished (or no timer is left).
    fn finish(&mut self) {
        self.run();
        while (self.laptop_result.is_none() || self.phone_result.is_none()) && self.advance() {}
    }

    fn phone_failure(&self) -> Failure {
        match &self.phone_result {
            Some(Err(f)) => f.clone(),
            other => panic!("the phone did not fail: {other:?}\n{:?}", self.phone_log),
        }
    }

    fn laptop_failure(&self) -> Failure {
        match &self.laptop_result {
            Some(Err(f)) => f.clone(),
            other => panic!("the laptop did not fail: {other:?}\n{:?}", self.laptop_log),
        }
    }
}

fn timeout(step: Step, secs: u64) -> Failure {
    Failure::Timeout {
        step,
        after: Duration::from_secs(secs),
    }
}

#[test]
fn a_whole_ceremony_takes_no_time_and_both_sides_succeed() {
    let mut p = Pair::new(Script::default());
    p.finish();
    assert_eq!(p.responses, vec![RESPONSE.to_vec()]);
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert_eq!(
        p.phone_result,
        Some(Ok(PhoneOutcome {
            command: 0x01,
            status: 0x00
        }))
    );
    assert_eq!(p.at(), Duration::ZERO);
    // The phone stopped advertising when the laptop's first message came, never cancelled
    // the request, and did not wait for its close timer: the laptop's shutdown ended it.
    assert!(p.phone_log.contains(&PhoneOutput::StopAdvertising));
    assert!(!p.phone_log.contains(&PhoneOutput::Cancel));
    assert!(p.advert.is_none());
    // Revision 1: message 2, post-handshake, padded update, response.
    let sent = p
        .phone_log
        .iter()
        .filter(|o| matches!(o, PhoneOutput::Send(_)))
        .count();
    assert_eq!(sent, 4);
    assert!(p.laptop.is_finished() && p.phone.is_finished());
}

#[test]
fn revision_0_sends_no_update_and_no_shutdown() {
    let mut p = Pair::with(
        Script::default(),
        false,
        0,
        PhoneTimeouts::default(),
        LaptopTimeouts::default(),
    );
    p.finish();
    assert_eq!(p.laptop_result, Some(Ok(None)));
    let sent = p
        .phone_log
        .iter()
        .filter(|o| matches!(o, PhoneOutput::Send(_)))
        .count();
    assert_eq!(sent, 3, "message 2, post-handshake, response");
    // No shutdown message: the laptop only closes; the phone takes the close as the end.
    let laptop_sent = p
        .laptop_log
        .iter()
        .filter(|o| matches!(o, LaptopOutput::Send(_)))
        .count();
    assert_eq!(laptop_sent, 2, "message 1 and the request");
    assert_eq!(p.phone_result.as_ref().map(Result::is_ok), Some(true));
}

#[test]
fn no_advert_is_a_proximity_timeout_and_the_relay_is_never_contacted() {
    let mut p = Pair::new(Script {
        advert: false,
        ..Script::default()
    });
    p.finish();
    assert_eq!(
        p.laptop_failure(),
        Failure::ProximityTimeout(Duration::from_secs(60))
    );
    assert!(
        !p.laptop_log
            .iter()
            .any(|o| matches!(o, LaptopOutput::Connect(_)))
    );
    assert!(p.laptop_log.contains(&LaptopOutput::StopScan));
    // The phone gave up advertising at its own limit, with its tunnel closed.
    assert_eq!(p.phone_failure(), timeout(Step::WaitingForLaptop, 60));
    assert!(p.phone_log.ends_with(&[
        PhoneOutput::StopAdvertising,
        PhoneOutput::CloseTunnel,
        PhoneOutput::Finished(Err(timeout(Step::WaitingForLaptop, 60))),
    ]));
}

#[test]
fn an_advert_of_ours_that_is_unusable_keeps_the_scan_going_and_is_reported_at_its_end() {
    // Domain 7 is reserved: the advert decrypts with our key but names no tunnel server.
    let mut p = Pair::with(
        Script::default(),
        true,
        7,
        PhoneTimeouts::default(),
        LaptopTimeouts::default(),
    );
    p.run();
    assert!(
        p.laptop_result.is_none(),
        "still scanning after the unusable advert"
    );
    p.finish();
    assert_eq!(
        p.laptop_failure(),
        Failure::BadAdvert(crate::Error::UnknownDomain(7))
    );
    assert_eq!(p.at(), Duration::from_secs(60));
}

#[test]
fn a_relay_without_a_routing_id_ends_the_phone_at_once() {
    let mut p = Pair::new(Script {
        routing_id: false,
        ..Script::default()
    });
    p.run();
    assert_eq!(p.phone_failure(), Failure::NoRoutingId);
    assert_eq!(
        p.phone_log,
        vec![
            PhoneOutput::OpenTunnel(p.phone_log[0].clone().open_path()),
            PhoneOutput::CloseTunnel,
            PhoneOutput::Finished(Err(Failure::NoRoutingId)),
        ]
    );
}

impl PhoneOutput {
    fn open_path(self) -> TunnelPath {
        match self {
            PhoneOutput::OpenTunnel(p) => p,
            other => panic!("not OpenTunnel: {other:?}"),
        }
    }
}

#[test]
fn the_phone_times_out_opening_its_tunnel() {
    let mut p = Pair::new(Script::default());
    // The driver never reports the tunnel: take the OpenTunnel and do nothing.
    assert!(matches!(
        p.phone.poll_output(),
        Some(PhoneOutput::OpenTunnel(_))
    ));
    p.now += Duration::from_secs(10) - Duration::from_millis(1);
    p.phone.handle_timeout(p.now);
    assert_eq!(p.phone.poll_output(), None, "not yet");
    p.now += Duration::from_millis(1);
    p.phone.handle_timeout(p.now);
    assert_eq!(
        p.phone.poll_output(),
        Some(PhoneOutput::Finished(Err(timeout(Step::Connecting, 10))))
    );
}

#[test]
fn a_laptop_whose_tunnel_cannot_open_says_so() {
    let mut p = Pair::new(Script {
        advert: false,
        ..Script::default()
    });
    p.run();
    // The phone's tunnel is gone by the time the laptop connects.
    p.phone_tunnel = false;
    let advert = p.advert.clone().expect("the phone advertises");
    p.laptop.handle(p.now, LaptopInput::Advert(advert));
    p.run();
    assert_eq!(p.laptop_failure(), Failure::ConnectFailed);
    assert!(
        !p.laptop_log.contains(&LaptopOutput::CloseTunnel),
        "nothing was open"
    );
    // And one whose connect never finishes times out.
    p.laptop = LaptopEngine::new(
        LaptopQr::new(
            QrKeys::generate(&mut rand_core::OsRng),
            1,
            false,
            RequestType::GetAssertion,
        ),
        keys::generate(&mut rand_core::OsRng),
        LaptopTimeouts::default(),
        cbor_map,
        p.now,
    );
    let qr = p.laptop.qr_url().to_owned();
    let mut phone = PhoneQr::from_qr_url(&qr).unwrap();
    let advert = phone.service_data(
        AdvertPlaintext {
            nonce: [1; 10],
            routing_id: RoutingId([4, 5, 6]),
            domain_id: 0,
        },
        None,
    );
    let _ = p.laptop.poll_output();
    p.laptop.handle(p.now, LaptopInput::Advert(advert));
    assert_eq!(p.laptop.poll_output(), Some(LaptopOutput::StopScan));
    assert!(matches!(
        p.laptop.poll_output(),
        Some(LaptopOutput::Connect(_))
    ));
    p.now += Duration::from_secs(10);
    p.laptop.handle_timeout(p.now);
    assert_eq!(
        p.laptop.poll_output(),
        Some(LaptopOutput::Finished(Err(timeout(Step::Connecting, 10))))
    );
}

#[test]
fn the_laptop_times_out_in_every_step_after_the_advert() {
    // Handshake: the phone never hears message 1.
    let mut p = Pair::new(Script {
        to_phone: false,
        ..Script::default()
    });
    p.finish();
    assert_eq!(p.laptop_failure(), timeout(Step::Handshake, 10));
    assert!(p.laptop_log.contains(&LaptopOutput::CloseTunnel));
    // The phone, hearing nothing (not even the close), gives up advertising at its limit.
    assert_eq!(p.phone_failure(), timeout(Step::WaitingForLaptop, 60));
    assert!(p.phone_log.contains(&PhoneOutput::StopAdvertising));

    // Post-handshake: message 2 arrives, the rest does not.
    let mut p = Pair::new(Script::default());
    p.script.to_laptop = true;
    p.run_until_laptop(|o| matches!(o, LaptopOutput::Send(_)));
    // Deliver exactly the phone's message 2, then cut the way back.
    p.run_phone_only();
    let msg2 = p.to_laptop.pop_front().flatten().expect("message 2");
    p.to_laptop.clear();
    p.script.to_laptop = false;
    p.laptop.handle(p.now, LaptopInput::Received(msg2));
    p.finish();
    assert_eq!(p.laptop_failure(), timeout(Step::PostHandshake, 10));

    // Waiting for the user: the phone's user never answers, and the laptop's limit is the
    // shorter one.
    let mut p = Pair::with(
        Script {
            answer: false,
            ..Script::default()
        },
        true,
        0,
        PhoneTimeouts::default(),
        LaptopTimeouts {
            user: Duration::from_secs(30),
            ..LaptopTimeouts::default()
        },
    );
    p.finish();
    assert_eq!(p.laptop_failure(), timeout(Step::WaitingForUser, 30));
    // The laptop left while the user decided: the phone cancels the request.
    assert_eq!(p.phone_failure(), Failure::EofWhileProcessing);
    assert!(p.phone_log.contains(&PhoneOutput::Cancel));
    assert_eq!(p.at(), Duration::from_secs(30));
}

impl Pair {
    /// Carries out laptop outputs (only) until one matches `stop`, which is carried out too.
    fn run_until_laptop(&mut self, stop: impl Fn(&LaptopOutput) -> bool) {
        // Let the phone open its tunnel and advertise first.
        self.run_phone_only();
        while let Some(out) = self.laptop.poll_output() {
            self.laptop_log.push(out.clone());
            let done = stop(&out);
            self.on_laptop(out);
            if done {
                return;
            }
        }
    }

    /// Carries out the phone's outputs and delivers what the laptop sent, nothing else.
    fn run_phone_only(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.phone.poll_output() {
                moved = true;
                self.phone_log.push(out.clone());
                self.on_phone(out);
            }
            if let Some(m) = self.to_phone.pop_front() {
                moved = true;
                self.deliver_to_phone(m);
            }
            if !moved {
                return;
            }
        }
    }
}

#[test]
fn the_user_running_out_of_time_on_the_phone_is_told_to_the_laptop() {
    let mut p = Pair::new(Script {
        answer: false,
        ..Script::default()
    });
    p.finish();
    // The phone's 60 s ran out first (the laptop allows 120 s).
    assert_eq!(p.phone_failure(), timeout(Step::Processing, 60));
    assert!(p.phone_log.contains(&PhoneOutput::Cancel));
    assert!(
        p.phone_log
            .contains(&PhoneOutput::Responded(STATUS_USER_ACTION_TIMEOUT))
    );
    // The laptop got CTAP2_ERR_USER_ACTION_TIMEOUT as the answer, at 60 s.
    assert_eq!(p.responses, vec![vec![STATUS_USER_ACTION_TIMEOUT]]);
    assert_eq!(p.at(), Duration::from_secs(60));
}

#[test]
fn the_laptop_leaving_before_its_request_is_an_unexpected_eof() {
    // It sends its shutdown instead of a request.
    let mut p = Pair::new(Script {
        request: false,
        ..Script::default()
    });
    p.run();
    assert!(
        p.laptop_log
            .iter()
            .any(|o| matches!(o, LaptopOutput::Ready(_)))
    );
    p.laptop.handle(p.now, LaptopInput::Close);
    p.finish();
    assert_eq!(p.phone_failure(), Failure::UnexpectedEof);
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert!(
        !p.phone_log
            .iter()
            .any(|o| matches!(o, PhoneOutput::Serve(_)))
    );

    // It never sends anything: the phone's request limit.
    let mut p = Pair::new(Script {
        request: false,
        ..Script::default()
    });
    p.finish();
    assert_eq!(p.phone_failure(), timeout(Step::WaitingForRequest, 60));
    // Its tunnel closed under the idle laptop.
    assert_eq!(
        p.laptop_failure(),
        Failure::TunnelClosed(Step::WaitingForUser)
    );
}

#[test]
fn the_tunnel_closing_at_each_step_is_named() {
    // Closed under the phone while it advertises.
    let mut p = Pair::new(Script {
        advert: false,
        ..Script::default()
    });
    p.run();
    p.phone.handle(p.now, PhoneInput::Closed);
    p.run();
    assert_eq!(
        p.phone_failure(),
        Failure::TunnelClosed(Step::WaitingForLaptop)
    );
    assert!(p.phone_log.contains(&PhoneOutput::StopAdvertising));

    // Closed under the laptop during the handshake.
    let mut p = Pair::new(Script {
        to_phone: false,
        ..Script::default()
    });
    p.run();
    p.laptop.handle(p.now, LaptopInput::Closed);
    p.run();
    assert_eq!(p.laptop_failure(), Failure::TunnelClosed(Step::Handshake));

    // Closed under both while the user decides (a relay restart).
    let mut p = Pair::new(Script {
        answer: false,
        ..Script::default()
    });
    p.run();
    p.phone.handle(p.now, PhoneInput::Closed);
    p.laptop.handle(p.now, LaptopInput::Closed);
    p.run();
    assert_eq!(p.phone_failure(), Failure::EofWhileProcessing);
    assert_eq!(
        p.laptop_failure(),
        Failure::TunnelClosed(Step::WaitingForUser)
    );

    // The laptop hangs up after its response without a shutdown: the phone is done anyway.
    let mut p = Pair::new(Script {
        hang_up: true,
        ..Script::default()
    });
    p.run();
    assert_eq!(
        p.phone_result,
        Some(Ok(PhoneOutcome {
            command: 1,
            status: 0
        }))
    );

    // A transport failure names its step.
    let mut p = Pair::new(Script {
        answer: false,
        ..Script::default()
    });
    p.run();
    p.laptop.handle(p.now, LaptopInput::TransportFailed);
    p.run();
    assert_eq!(
        p.laptop_failure(),
        Failure::Transport {
            step: Step::WaitingForUser,
        }
    );
}

#[test]
fn no_shutdown_after_the_response_ends_the_phone_well_at_its_close_limit() {
    let mut p = Pair::new(Script {
        close: false,
        ..Script::default()
    });
    p.finish();
    assert_eq!(p.responses, vec![RESPONSE.to_vec()]);
    assert_eq!(
        p.phone_result,
        Some(Ok(PhoneOutcome {
            command: 1,
            status: 0
        }))
    );
    assert_eq!(p.at(), Duration::from_secs(5));
    // The phone's close reaches the laptop, idle after its response.
    assert_eq!(
        p.laptop_failure(),
        Failure::TunnelClosed(Step::WaitingForUser)
    );
}

#[test]
fn a_tampered_message_aborts_either_side() {
    // The laptop's request, one bit flipped, reaches the phone.
    let mut p = Pair::new(Script {
        request: false,
        ..Script::default()
    });
    p.run();
    p.laptop
        .handle(p.now, LaptopInput::Request(REQUEST.to_vec()));
    let Some(LaptopOutput::Send(mut ct)) = p.laptop.poll_output() else {
        panic!("the request")
    };
    ct[5] ^= 1;
    p.phone.handle(p.now, PhoneInput::Received(ct));
    p.run();
    assert_eq!(
        p.phone_failure(),
        Failure::Protocol {
            step: Step::WaitingForRequest,
            source: crate::Error::Decrypt
        }
    );

    // The phone's message 2, damaged, fails the laptop's handshake.
    let mut p = Pair::new(Script::default());
    p.run_until_laptop(|o| matches!(o, LaptopOutput::Send(_)));
    p.run_phone_only();
    let mut msg2 = p.to_laptop.pop_front().flatten().expect("message 2");
    msg2[70] ^= 1;
    p.laptop.handle(p.now, LaptopInput::Received(msg2));
    p.run();
    assert!(matches!(p.laptop_failure(), Failure::Handshake(_)));
    assert!(p.laptop_log.contains(&LaptopOutput::CloseTunnel));
}

#[test]
fn a_get_info_that_does_not_parse_aborts_the_laptop_before_any_request() {
    fn refuse(_: &[u8]) -> Result<(), String> {
        Err("versions missing".into())
    }
    let mut p = Pair::new(Script::default());
    p.laptop.check_get_info = refuse;
    p.finish();
    assert_eq!(
        p.laptop_failure(),
        Failure::InvalidGetInfo("it does not parse: versions missing".into())
    );
    assert!(
        !p.phone_log
            .iter()
            .any(|o| matches!(o, PhoneOutput::Serve(_)))
    );
    assert_eq!(p.phone_failure(), Failure::UnexpectedEof);
}

#[test]
fn get_info_is_answered_by_the_laptop_itself() {
    let mut p = Pair::new(Script {
        request: false,
        ..Script::default()
    });
    p.run();
    p.laptop.handle(p.now, LaptopInput::Request(vec![0x04]));
    let mut expected = vec![0x00];
    expected.extend_from_slice(GET_INFO);
    assert_eq!(
        p.laptop.poll_output(),
        Some(LaptopOutput::Response(expected))
    );
    assert_eq!(p.laptop.poll_output(), None, "nothing sent to the phone");
}

#[test]
fn inputs_out_of_step_change_nothing() {
    let mut p = Pair::new(Script::default());
    // A request before the laptop is ready, an answer nobody asked for, a late advert.
    p.laptop
        .handle(p.now, LaptopInput::Request(REQUEST.to_vec()));
    p.phone.handle(p.now, PhoneInput::Answer(RESPONSE.to_vec()));
    p.finish();
    p.laptop.handle(p.now, LaptopInput::Advert(vec![0; 20]));
    p.phone.handle(p.now, PhoneInput::Received(vec![1, 2, 3]));
    assert_eq!(p.laptop.poll_output(), None);
    assert_eq!(p.phone.poll_output(), None);
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert!(p.phone_result.as_ref().is_some_and(Result::is_ok));
}

#[test]
fn no_limit_means_no_overflow() {
    let forever = Duration::MAX;
    let mut p = Pair::with(
        Script {
            advert: false,
            ..Script::default()
        },
        true,
        0,
        PhoneTimeouts {
            laptop: forever,
            ..PhoneTimeouts::default()
        },
        LaptopTimeouts {
            scan: forever,
            ..LaptopTimeouts::default()
        },
    );
    p.run();
    assert!(p.laptop.poll_timeout().is_some_and(|t| t > p.now));
    assert!(p.phone.poll_timeout().is_some_and(|t| t > p.now));
}

// ---------------------------------------------------------------------------------------------
// The CTAP 2.3 data channel (BLE L2CAP)

/// What a successful ceremony looks like from both ends.
fn assert_served(p: &Pair) {
    assert_eq!(p.responses, [RESPONSE.to_vec()], "{:?}", p.laptop_log);
    assert_eq!(p.laptop_result, Some(Ok(None)), "{:?}", p.laptop_log);
    assert_eq!(
        p.phone_result,
        Some(Ok(PhoneOutcome {
            command: 0x01,
            status: 0x00
        })),
        "{:?}",
        p.phone_log
    );
}

#[test]
fn data_channel_ceremony_keeps_the_relay_out() {
    let mut p = Pair::data_channel(Script::default(), true, true);
    p.finish();
    assert_served(&p);
    // The advert names the PSM in its suffix; the laptop went there and never to the relay.
    assert_eq!(&p.advertised[20..], [0xa1, 0x01, 0x18, 0x81]);
    assert!(
        p.laptop_log
            .contains(&LaptopOutput::OpenDataChannel { psm: PSM })
    );
    assert!(
        !p.laptop_log
            .iter()
            .any(|o| matches!(o, LaptopOutput::Connect(_))),
        "{:?}",
        p.laptop_log
    );
    assert_eq!(p.relayed, 0, "no ceremony byte crossed the relay");
    // The phone stopped advertising and left the relay as soon as the laptop came.
    let i = p
        .phone_log
        .iter()
        .position(|o| *o == PhoneOutput::UseDataChannel);
    let j = p
        .phone_log
        .iter()
        .position(|o| *o == PhoneOutput::HandshakeDone);
    assert!(i.is_some() && i < j, "{:?}", p.phone_log);
    assert_eq!(p.phone_log[i.unwrap() - 1], PhoneOutput::StopAdvertising);
    let stops = p
        .phone_log
        .iter()
        .filter(|o| **o == PhoneOutput::StopAdvertising);
    assert_eq!(stops.count(), 1, "{:?}", p.phone_log);
}

#[test]
fn a_qr_code_without_key_6_gets_the_old_advert_and_the_relay() {
    // The phone could listen, but the laptop did not ask: 20 bytes, no listener, the relay.
    let mut p = Pair::data_channel(Script::default(), false, true);
    p.finish();
    assert_served(&p);
    assert_eq!(p.advertised.len(), 20);
    assert!(!p.phone_log.contains(&PhoneOutput::AcceptDataChannel));
    assert!(p.relayed > 0);
}

#[test]
fn a_phone_without_a_data_channel_is_reached_through_the_relay() {
    let mut p = Pair::data_channel(Script::default(), true, false);
    p.finish();
    assert_served(&p);
    assert_eq!(p.advertised.len(), 20);
    assert!(
        !p.laptop_log
            .iter()
            .any(|o| matches!(o, LaptopOutput::OpenDataChannel { .. }))
    );
    assert!(p.relayed > 0);
}

/// Both sides offer the data channel and it does what `l2cap` says; the ceremony must still
/// be served, through the relay.
fn served_after_fallback(l2cap: L2cap) -> Pair {
    let script = Script {
        l2cap,
        ..Script::default()
    };
    let mut p = Pair::data_channel(script, true, true);
    p.finish();
    assert_served(&p);
    assert!(p.relayed > 0);
    p
}

#[test]
fn a_refused_data_channel_falls_back_to_the_relay_at_once() {
    let p = served_after_fallback(L2cap::Refused);
    assert_eq!(p.at(), Duration::ZERO, "no timer was waited for");
}

#[test]
fn a_data_channel_that_hangs_falls_back_to_the_relay_after_its_limit() {
    let p = served_after_fallback(L2cap::Hangs);
    assert_eq!(p.at(), LaptopTimeouts::default().data_channel);
    let open = p
        .laptop_log
        .iter()
        .position(|o| matches!(o, LaptopOutput::OpenDataChannel { .. }));
    let connect = p
        .laptop_log
        .iter()
        .position(|o| matches!(o, LaptopOutput::Connect(_)));
    assert!(open.is_some() && open < connect, "{:?}", p.laptop_log);
}

#[test]
fn the_laptop_leaving_the_data_channel_while_the_user_decides_cancels_the_request() {
    let mut p = Pair::data_channel(
        Script {
            answer: false,
            ..Script::default()
        },
        true,
        true,
    );
    p.run();
    assert!(p.serving.is_some(), "the user is deciding");
    p.laptop.handle(p.now, LaptopInput::Close);
    p.finish();
    assert_eq!(p.phone_failure(), Failure::EofWhileProcessing);
    assert!(p.phone_log.contains(&PhoneOutput::Cancel));
    assert_eq!(p.relayed, 0);
}

// ---------------------------------------------------------------------------------------------
// Linking: the phone offers a link in a QR session; a later linked session uses it.

/// The phone's long-lived linking state, as its store would keep it.
struct PhoneLinking {
    root: [u8; 32],
    identity: SecretKey,
    contact_id: Vec<u8>,
}

impl PhoneLinking {
    fn new() -> Self {
        Self {
            root: [7; 32],
            identity: keys::generate(&mut rand_core::OsRng),
            contact_id: vec![0xc0; 32],
        }
    }

    fn offer(&self, link_id: [u8; 8]) -> LinkingOffer {
        LinkingOffer {
            identity: self.identity.clone(),
            contact_id: self.contact_id.clone(),
            link_id: link_id.to_vec(),
            link_secret: crate::kdf::phone_link_secret(
                &self.root,
                Some(&self.contact_id),
                &link_id,
            ),
            name: "Test phone".into(),
        }
    }

    /// What the phone does when woken with `contact`'s client payload.
    fn wake(&self, contact: &ContactRequest) -> LinkedWake {
        let payload = contact.client_payload.clone();
        let secret =
            crate::kdf::phone_link_secret(&self.root, Some(&self.contact_id), &payload.link_id);
        LinkedWake {
            linked: PhoneLinked::new(secret, &payload),
            identity: self.identity.clone(),
            tunnel: TunnelPath::Connect {
                routing_id: RoutingId([4, 5, 6]),
                tunnel_id: crate::tunnel::TunnelId([8; 16]),
            },
            advert: AdvertPlaintext::linked(&mut rand_core::OsRng),
        }
    }
}

/// A QR ceremony in which the phone offers a link (ID `[1; 8]`) to a laptop that can store
/// links (`key4`) or cannot: the served pair.
fn qr_offering_a_link(phone: &PhoneLinking, key4: bool) -> Pair {
    let p = qr_pair(key4, Some(phone.offer([1; 8])), Script::default());
    assert_eq!(p.responses, [RESPONSE.to_vec()], "{:?}", p.laptop_log);
    assert!(matches!(p.phone_result, Some(Ok(_))), "{:?}", p.phone_log);
    p
}

/// A QR ceremony run to its end, the laptop's code saying it stores links (`key4`) or not,
/// the phone offering `offer`.
fn qr_pair(key4: bool, offer: Option<LinkingOffer>, script: Script) -> Pair {
    let mut p = qr_pair_unstarted(key4, offer, script);
    p.finish();
    p
}

/// [`qr_pair`] before anything ran.
fn qr_pair_unstarted(key4: bool, offer: Option<LinkingOffer>, script: Script) -> Pair {
    let mut p = Pair::new(script);
    let rng = &mut rand_core::OsRng;
    let qr = LaptopQr::new(
        QrKeys::generate(rng),
        1_700_000_000,
        key4,
        RequestType::MakeCredential,
    );
    let phone_qr = PhoneQr::from_payload(qr.qr_payload().clone());
    p.laptop = LaptopEngine::new(
        qr,
        keys::generate(rng),
        LaptopTimeouts::default(),
        cbor_map,
        p.t0,
    );
    let phone = PhoneEngine::new(
        phone_qr,
        GET_INFO.to_vec(),
        keys::generate(rng),
        [9; 10],
        0,
        PhoneTimeouts::default(),
        p.t0,
    );
    p.phone = match offer {
        Some(offer) => phone.with_linking(offer),
        None => phone,
    };
    p
}

/// A QR ceremony that links: the laptop's verified link.
fn link_by_qr(phone: &PhoneLinking) -> LinkingInfo {
    let p = qr_offering_a_link(phone, true);
    assert!(p.phone_log.contains(&PhoneOutput::LinkSent(vec![1; 8])));
    // It came with the first update: the shutdown ends the session at once.
    assert!(!awaited_linking(&p), "{:?}", p.laptop_log);
    assert_eq!(p.at(), Duration::ZERO);
    match p.laptop_result {
        Some(Ok(Some(linking))) => linking,
        other => panic!("no link: {other:?}"),
    }
}

/// A linked session to the phone `stored` describes, answered by `phone`.
fn linked_pair(stored: LinkedPhone, phone: &PhoneLinking, script: Script) -> Pair {
    let rng = &mut rand_core::OsRng;
    let mut p = Pair::new(script);
    let linked = LaptopLinked::new(rng, stored, RequestType::GetAssertion);
    let contact = linked.contact_request();
    p.laptop = LaptopEngine::linked(
        linked,
        keys::generate(rng),
        LaptopTimeouts::default(),
        cbor_map,
        p.t0,
    );
    p.phone = PhoneEngine::linked(
        phone.wake(&contact),
        GET_INFO.to_vec(),
        keys::generate(rng),
        PhoneTimeouts::default(),
        p.t0,
    );
    p
}

#[test]
fn a_link_offered_in_a_qr_session_reaches_the_phone_again_without_a_qr_code() {
    let phone = PhoneLinking::new();
    let linking = link_by_qr(&phone);
    assert_eq!(linking.contact_id, phone.contact_id);
    assert_eq!(linking.authenticator_name, "Test phone");
    let stored = LinkedPhone::from_linking(&linking, 0);
    let mut p = linked_pair(stored, &phone, Script::default());
    p.finish();
    assert_served(&p);
    // Contact first, then the scan: the advert made with the link's key was what it waited for.
    let contact = p
        .laptop_log
        .iter()
        .position(|o| matches!(o, LaptopOutput::Contact(_)));
    let scan = p
        .laptop_log
        .iter()
        .position(|o| *o == LaptopOutput::StartScan);
    assert!(contact < scan, "{:?}", p.laptop_log);
    // A linked session carries no new link (the laptop could not verify one).
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert!(!sent_a_link(&p), "{:?}", p.phone_log);
}

#[test]
fn a_laptop_that_cannot_store_links_is_offered_none() {
    let p = qr_offering_a_link(&PhoneLinking::new(), false);
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert!(!sent_a_link(&p), "{:?}", p.phone_log);
}

#[test]
fn a_stored_link_that_does_not_match_the_phone_fails_the_handshake_and_nothing_is_served() {
    let phone = PhoneLinking::new();
    let linking = link_by_qr(&phone);
    // The secret tampered with in storage.
    let mut stored = LinkedPhone::from_linking(&linking, 0);
    stored.link_secret = crate::secret::LinkSecret::from_slice(&[3; 32]).unwrap();
    let mut p = linked_pair(stored, &phone, Script::default());
    p.finish();
    // Its advert is made with another key: the laptop never hears "its" phone.
    assert_eq!(
        p.laptop_failure(),
        Failure::ProximityTimeout(LaptopTimeouts::default().scan)
    );
    assert!(p.responses.is_empty());
    // Another phone's identity key: the advert matches, the handshake does not. The phone
    // cannot read message 1 and hangs up; the laptop is told it ended in the handshake.
    let mut stored = LinkedPhone::from_linking(&linking, 0);
    stored.public_key = keys::generate(&mut rand_core::OsRng).public_key();
    let mut p = linked_pair(stored, &phone, Script::default());
    p.finish();
    assert!(
        matches!(p.phone_failure(), Failure::Handshake(_)),
        "{:?}",
        p.phone_failure()
    );
    assert_eq!(p.laptop_failure(), Failure::TunnelClosed(Step::Handshake));
    assert!(p.responses.is_empty());
    assert!(
        !p.phone_log
            .iter()
            .any(|o| matches!(o, PhoneOutput::Serve(_)))
    );
}

#[test]
fn a_linked_laptop_whose_contact_is_refused_or_unanswered_says_so() {
    let phone = PhoneLinking::new();
    let stored = LinkedPhone::from_linking(&link_by_qr(&phone), 0);
    let rng = &mut rand_core::OsRng;
    let t0 = Instant::now();
    let mut laptop = LaptopEngine::linked(
        LaptopLinked::new(rng, stored.clone(), RequestType::GetAssertion),
        keys::generate(rng),
        LaptopTimeouts::default(),
        cbor_map,
        t0,
    );
    assert!(matches!(
        laptop.poll_output(),
        Some(LaptopOutput::Contact(_))
    ));
    laptop.handle(t0, LaptopInput::ConnectFailed);
    assert_eq!(
        laptop.poll_output(),
        Some(LaptopOutput::Finished(Err(Failure::ConnectFailed)))
    );
    // Accepted, but the phone never advertises: a proximity timeout, and the tunnel closed.
    let mut laptop = LaptopEngine::linked(
        LaptopLinked::new(rng, stored, RequestType::GetAssertion),
        keys::generate(rng),
        LaptopTimeouts::default(),
        cbor_map,
        t0,
    );
    let _ = laptop.poll_output();
    laptop.handle(t0, LaptopInput::Connected);
    assert_eq!(laptop.poll_output(), Some(LaptopOutput::StartScan));
    assert_eq!(laptop.step(), Some(Step::Scanning));
    let end = laptop.poll_timeout().unwrap();
    laptop.handle_timeout(end);
    let outs: Vec<_> = std::iter::from_fn(|| laptop.poll_output()).collect();
    assert_eq!(
        outs,
        vec![
            LaptopOutput::StopScan,
            LaptopOutput::CloseTunnel,
            LaptopOutput::Finished(Err(Failure::ProximityTimeout(
                LaptopTimeouts::default().scan
            ))),
        ]
    );
}

/// Whether the phone sent linking data in `p`'s session.
fn sent_a_link(p: &Pair) -> bool {
    p.phone_log
        .iter()
        .any(|o| matches!(o, PhoneOutput::LinkSent(_)))
}

/// Whether the laptop kept its tunnel open after the shutdown for linking data.
fn awaited_linking(p: &Pair) -> bool {
    p.laptop_log
        .iter()
        .any(|o| matches!(o, LaptopOutput::AwaitingLinking(_)))
}

fn drain(laptop: &mut LaptopEngine) -> Vec<LaptopOutput> {
    std::iter::from_fn(|| laptop.poll_output()).collect()
}

/// The message in `outs` for the phone.
fn sent(outs: &[LaptopOutput]) -> Vec<u8> {
    outs.iter()
        .find_map(|o| match o {
            LaptopOutput::Send(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("nothing sent: {outs:?}"))
}

/// A QR ceremony that offered linking, with a phone driven by hand, step by step, that sent
/// no link in its first update, after the laptop's shutdown: the laptop waits for a late
/// link (as for Chromium's "late linking" test phone). The laptop, the phone's channel, and
/// the time of the shutdown.
fn awaiting_a_late_link() -> (LaptopEngine, crate::session::PhoneChannel, Instant) {
    use crate::frame::PostHandshake;
    use crate::session::PhoneEvent;
    let rng = &mut rand_core::OsRng;
    let t0 = Instant::now();
    let qr = LaptopQr::new(
        QrKeys::generate(rng),
        1_700_000_000,
        true,
        RequestType::MakeCredential,
    );
    let mut phone_qr = PhoneQr::from_payload(qr.qr_payload().clone());
    let mut laptop = LaptopEngine::new(
        qr,
        keys::generate(rng),
        LaptopTimeouts::default(),
        cbor_map,
        t0,
    );
    assert_eq!(drain(&mut laptop), [LaptopOutput::StartScan]);
    let advert = phone_qr.service_data(AdvertPlaintext::new(rng, RoutingId([1, 2, 3]), 0), None);
    laptop.handle(t0, LaptopInput::Advert(advert));
    assert!(matches!(
        drain(&mut laptop)[..],
        [LaptopOutput::StopScan, LaptopOutput::Connect(_)]
    ));
    laptop.handle(t0, LaptopInput::Connected);
    let msg1 = sent(&drain(&mut laptop));
    let (mut phone, msg2) = phone_qr.respond(&msg1, &keys::generate(rng)).unwrap();
    laptop.handle(t0, LaptopInput::Received(msg2.to_vec()));
    let post = phone
        .post_handshake(&PostHandshake::ctap(GET_INFO.to_vec()))
        .unwrap();
    laptop.handle(t0, LaptopInput::Received(post));
    laptop.handle(t0, LaptopInput::Received(phone.update(None).unwrap()));
    assert!(drain(&mut laptop).contains(&LaptopOutput::Ready(GET_INFO.to_vec())));
    laptop.handle(t0, LaptopInput::Request(REQUEST.to_vec()));
    let request = sent(&drain(&mut laptop));
    assert!(matches!(phone.on_message(&request), Ok(PhoneEvent::CtapRequest(r)) if r == REQUEST));
    laptop.handle(
        t0,
        LaptopInput::Received(phone.send_ctap(RESPONSE).unwrap()),
    );
    assert!(drain(&mut laptop).contains(&LaptopOutput::Response(RESPONSE.to_vec())));

    // The application has its response and closes: the shutdown goes, the tunnel stays.
    laptop.handle(t0, LaptopInput::Close);
    let outs = drain(&mut laptop);
    assert!(
        outs.contains(&LaptopOutput::AwaitingLinking(Duration::from_secs(180))),
        "{outs:?}"
    );
    assert!(!outs.contains(&LaptopOutput::CloseTunnel), "{outs:?}");
    assert_eq!(laptop.poll_timeout(), Some(t0 + Duration::from_secs(180)));
    assert!(matches!(
        phone.on_message(&sent(&outs)),
        Ok(PhoneEvent::Shutdown)
    ));

    (laptop, phone, t0)
}

#[test]
fn linking_data_that_comes_after_the_shutdown_is_still_taken() {
    // The laptop engine does not hold the response back for the link (it came first).
    let (mut laptop, mut phone, t0) = awaiting_a_late_link();
    // Ten seconds later an update with nothing in it: still waiting.
    let t = t0 + Duration::from_secs(10);
    laptop.handle(t, LaptopInput::Received(phone.update(None).unwrap()));
    assert_eq!(drain(&mut laptop), []);
    // Then the link, made for this QR code's handshake: taken, and the wait is over.
    let linking = PhoneLinking::new();
    let link = linking.offer([1; 8]).sign(&phone).unwrap();
    laptop.handle(t, LaptopInput::Received(phone.update(Some(&link)).unwrap()));
    let outs = drain(&mut laptop);
    assert_eq!(outs.first(), Some(&LaptopOutput::CloseTunnel), "{outs:?}");
    match outs.last() {
        Some(LaptopOutput::Finished(Ok(Some(l)))) => assert_eq!(l.contact_id, linking.contact_id),
        other => panic!("no link: {other:?}"),
    }
    assert!(laptop.is_finished() && laptop.poll_timeout().is_none());
}

#[test]
fn a_late_link_that_fails_verification_ends_the_wait_and_is_not_taken() {
    let (mut laptop, mut phone, t0) = awaiting_a_late_link();
    let linking = PhoneLinking::new();
    let mut link = linking.offer([1; 8]).sign(&phone).unwrap();
    // Not signed over this session's handshake.
    link.handshake_signature[0] ^= 1;
    laptop.handle(
        t0,
        LaptopInput::Received(phone.update(Some(&link)).unwrap()),
    );
    let outs = drain(&mut laptop);
    assert_eq!(
        outs,
        [LaptopOutput::CloseTunnel, LaptopOutput::Finished(Ok(None))]
    );
}

#[test]
fn a_laptop_waits_for_late_linking_data_until_the_phone_closes_or_its_limit() {
    // The phone offers nothing and closes after the shutdown: the wait ends with it.
    let p = qr_pair(true, None, Script::default());
    assert!(awaited_linking(&p), "{:?}", p.laptop_log);
    assert_eq!(p.responses, [RESPONSE.to_vec()]);
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert_eq!(p.at(), Duration::ZERO);

    // The relay keeps the laptop's end open after the phone left: three minutes, no more.
    let script = Script {
        phone_close_heard: false,
        ..Script::default()
    };
    let p = qr_pair(true, None, script);
    assert_eq!(p.responses, [RESPONSE.to_vec()]);
    assert_eq!(p.laptop_result, Some(Ok(None)), "{:?}", p.laptop_log);
    assert_eq!(p.at(), Duration::from_secs(180));
    assert_eq!(p.laptop_log.last(), Some(&LaptopOutput::Finished(Ok(None))));
    assert!(p.laptop_log.contains(&LaptopOutput::CloseTunnel));
}

#[test]
fn only_a_laptop_that_asked_for_a_link_waits_for_one() {
    let quiet = Script {
        phone_close_heard: false,
        ..Script::default()
    };
    // Its QR code did not offer to store links.
    let p = qr_pair(false, None, quiet);
    assert!(!awaited_linking(&p), "{:?}", p.laptop_log);
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert_eq!(p.at(), Duration::ZERO);

    // The application said it would not take a link.
    let mut p = qr_pair_unstarted(true, None, quiet);
    p.laptop.skip_late_linking();
    p.finish();
    assert!(!awaited_linking(&p), "{:?}", p.laptop_log);
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert_eq!(p.at(), Duration::ZERO);

    // A linked session: nothing on it could be verified.
    let phone = PhoneLinking::new();
    let stored = LinkedPhone::from_linking(&link_by_qr(&phone), 0);
    let mut p = linked_pair(stored, &phone, quiet);
    p.finish();
    assert_served(&p);
    assert!(!awaited_linking(&p), "{:?}", p.laptop_log);
    assert_eq!(p.laptop_result, Some(Ok(None)));
}

#[test]
fn the_application_may_stop_waiting_for_late_linking_data() {
    let script = Script {
        phone_close_heard: false,
        ..Script::default()
    };
    let mut p = qr_pair_unstarted(true, None, script);
    p.run();
    assert!(awaited_linking(&p), "{:?}", p.laptop_log);
    assert_eq!(p.laptop.step(), Some(Step::Closing));
    assert!(p.laptop_result.is_none());
    // Ten seconds later the application gives up (Ctrl-C): done at once, the tunnel closed.
    p.now += Duration::from_secs(10);
    p.laptop.handle(p.now, LaptopInput::Close);
    p.run();
    assert_eq!(p.laptop_result, Some(Ok(None)));
    assert_eq!(p.laptop_log.last(), Some(&LaptopOutput::Finished(Ok(None))));
    assert!(p.laptop_log.contains(&LaptopOutput::CloseTunnel));
    assert!(p.laptop.poll_timeout().is_none());
    // A message that does not decrypt ends a wait as well, taking nothing.
    let mut p = qr_pair_unstarted(true, None, script);
    p.run();
    p.laptop.handle(p.now, LaptopInput::Received(vec![0; 40]));
    p.run();
    assert_eq!(p.laptop_result, Some(Ok(None)));
}

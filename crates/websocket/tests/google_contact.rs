//! What [`hybridge_websocket::contact`] puts on the wire, read back by a bare TCP listener
//! that records the HTTP upgrade request and answers as Google's tunnel server would, and
//! compared with what Chrome sends for a linked phone.
//!
//! Chrome's request (chromium `device/fido/cable/fido_tunnel_device.cc` @ ccfdb09e, the
//! `FidoTunnelDevice` constructor for a `Pairing`; header names and the subprotocol from
//! `device/fido/fido_constants.h`; `GetContactURL` in `v2_handshake.cc` @ ccfdb09e):
//! - `GET /cable/contact/<contact ID, base64url without padding>`;
//! - the one requested subprotocol `fido.cable`;
//! - `X-caBLE-Client-Payload: <base::HexEncode (upper case) of the canonical CBOR
//!   {1: pairing ID, 2: client nonce, 3: "ga" | "mc"}>`, then
//!   `X-caBLE-Signal-Connection: true` (Chromium's mock server, v2_test_util.cc @ 5c96b9d3,
//!   checks that the payload is the first extra header and the signal header the only other;
//!   ours go out in the WebSocket library's order, see below);
//! - `Origin` = the tunnel URL's own origin, no cookies.
//!
//! The expected payload was derived by hand and with Python's `cbor2` (see
//! `hybridge_proto::contact`'s `google_contact_flow_bytes_match_chromium`), never with our
//! own encoder.

use std::time::Duration;

use hybridge_proto::linking::ClientPayload;
use hybridge_proto::qr::RequestType;
use hybridge_websocket::{ConnectError, Timeouts, contact, recv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const T: Duration = Duration::from_secs(10);

/// 17 bytes: base64 needs '+', '/' and one '=' for them, base64url without padding none.
const CONTACT_ID: [u8; 17] = [
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
    0x00,
];
const CONTACT_PATH: &str = "/cable/contact/8PHy8_T19vf4-fr7_P3-_wA";
/// `{1: 00..07, 2: 10..1f, 3: "ga"}`, canonical CBOR, upper-case hex.
const PAYLOAD_GA: &str = "A3014800010203040506070250101112131415161718191A1B1C1D1E1F03626761";
/// The same with `3: "mc"`.
const PAYLOAD_MC: &str = "A3014800010203040506070250101112131415161718191A1B1C1D1E1F03626D63";

fn payload(request_type: RequestType) -> ClientPayload {
    ClientPayload {
        link_id: (0u8..8).collect(),
        client_nonce: std::array::from_fn(|i| 0x10 + i as u8),
        request_type,
    }
}

/// One upgrade request as it arrived: the request line and the headers in order, names as
/// sent.
#[derive(Debug)]
struct Upgrade {
    request_line: String,
    headers: Vec<(String, String)>,
}

impl Upgrade {
    /// Every value of header `name` (case-insensitive, as HTTP field names are).
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of header `name`; fails when it is missing or repeated.
    fn one(&self, name: &str) -> &str {
        match self.all(name)[..] {
            [v] => v,
            ref other => panic!("expected one {name} header, got {other:?} in {self:#?}"),
        }
    }
}

/// How the fake tunnel server answers the upgrade.
enum Answer {
    /// 101 with `fido.cable`; with `signal`, echoing `X-caBLE-Signal-Connection: true`, and
    /// then sending these binary messages.
    Accept { signal: bool, then: Vec<Vec<u8>> },
    /// This HTTP status and nothing else.
    Status(u16),
}

/// A one-shot tunnel server on loopback: returns its base URL, and a task that yields the
/// recorded request (and keeps the socket open until the test ends).
async fn server(answer: Answer) -> (String, tokio::task::JoinHandle<(Upgrade, TcpStream)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        while !raw.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.unwrap();
            raw.push(byte[0]);
            assert!(raw.len() < 16 * 1024, "an upgrade request without an end");
        }
        let text = String::from_utf8(raw).expect("an ASCII request");
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let request_line = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("a header line");
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let up = Upgrade {
            request_line,
            headers,
        };
        match answer {
            Answer::Accept { signal, then } => {
                let key = up.one("Sec-WebSocket-Key").to_owned();
                let mut response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\
                     Sec-WebSocket-Protocol: fido.cable\r\n",
                    derive_accept_key(key.as_bytes())
                );
                if signal {
                    response.push_str("X-caBLE-Signal-Connection: true\r\n");
                }
                response.push_str("\r\n");
                tcp.write_all(response.as_bytes()).await.unwrap();
                for m in then {
                    // An unmasked server frame: FIN + binary, short length.
                    assert!(m.len() < 126);
                    let mut frame = vec![0x82, m.len() as u8];
                    frame.extend_from_slice(&m);
                    tcp.write_all(&frame).await.unwrap();
                }
            }
            Answer::Status(code) => {
                let response = format!(
                    "HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                tcp.write_all(response.as_bytes()).await.unwrap();
            }
        }
        (up, tcp)
    });
    (base, task)
}

#[tokio::test]
async fn the_contact_request_carries_what_chrome_sends() {
    let (base, server_task) = server(Answer::Accept {
        signal: true,
        then: vec![vec![0x00], b"noise message 2".to_vec()],
    })
    .await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let p = payload(RequestType::GetAssertion);
    let mut contacted = tokio::time::timeout(
        T,
        contact(&base, &CONTACT_ID, &p, true, None, Timeouts::default()),
    )
    .await
    .expect("in time")
    .expect("the fake server accepted");
    let (up, _tcp) = server_task.await.unwrap();

    assert_eq!(up.request_line, format!("GET {CONTACT_PATH} HTTP/1.1"));
    // Exactly the one subprotocol Chrome asks for.
    assert_eq!(up.one("Sec-WebSocket-Protocol"), "fido.cable");
    // The client payload: Chrome's bytes, Chrome's (upper) case.
    assert_eq!(up.one("X-caBLE-Client-Payload"), PAYLOAD_GA);
    assert_eq!(up.one("X-caBLE-Signal-Connection"), "true");
    // Two differences from Chrome that no HTTP server may act on (field names are
    // case-insensitive and the order of different fields is insignificant, RFC 9110 §5.1 and
    // §5.3), and that the WebSocket library decides: the names go out in lower case, and the
    // extra headers in its map's order (the `http` crate: "arbitrary, but consistent"),
    // which is not the order Chrome sends them in; only Chromium's own mock server looks at
    // that order. The lower case is pinned so that a change is seen.
    assert!(
        up.headers
            .iter()
            .any(|(n, _)| n == "x-cable-client-payload"),
        "{up:#?}"
    );
    // The tunnel URL's own origin; no cookie.
    assert_eq!(up.one("Origin"), format!("ws://127.0.0.1:{port}"));
    assert_eq!(up.one("Host"), format!("127.0.0.1:{port}"));
    assert!(up.all("Cookie").is_empty(), "{up:#?}");
    assert_eq!(up.one("Upgrade").to_ascii_lowercase(), "websocket");
    assert_eq!(up.one("Sec-WebSocket-Version"), "13");

    // The server echoed the signal header: [0x00] is consumed as the signal, and the next
    // message is the phone's, untouched.
    assert!(contacted.signal);
    contacted.phone_joined(T).await.expect("the connect signal");
    let next = tokio::time::timeout(T, recv(&mut contacted.ws))
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(next.as_deref(), Some(&b"noise message 2"[..]));
}

#[tokio::test]
async fn without_the_signal_no_signal_header_is_sent_and_mc_is_named() {
    let (base, server_task) = server(Answer::Accept {
        signal: false,
        then: Vec::new(),
    })
    .await;
    let p = payload(RequestType::MakeCredential);
    let contacted = contact(&base, &CONTACT_ID, &p, false, None, Timeouts::default())
        .await
        .expect("accepted");
    assert!(!contacted.signal);
    let (up, _tcp) = server_task.await.unwrap();
    assert_eq!(up.request_line, format!("GET {CONTACT_PATH} HTTP/1.1"));
    assert_eq!(up.one("X-caBLE-Client-Payload"), PAYLOAD_MC);
    assert!(up.all("X-caBLE-Signal-Connection").is_empty(), "{up:#?}");
    assert_eq!(up.one("Sec-WebSocket-Protocol"), "fido.cable");
}

/// A signal header the laptop did not ask for does not make it wait for a signal.
#[tokio::test]
async fn an_unasked_signal_echo_is_ignored() {
    let (base, _server_task) = server(Answer::Accept {
        signal: true,
        then: Vec::new(),
    })
    .await;
    let p = payload(RequestType::GetAssertion);
    let contacted = contact(&base, &CONTACT_ID, &p, false, None, Timeouts::default())
        .await
        .expect("accepted");
    assert!(!contacted.signal);
}

/// 410 Gone is how Google's server (and Chromium's mock) says the contact ID is dead.
#[tokio::test]
async fn gone_is_its_own_error() {
    let (base, server_task) = server(Answer::Status(410)).await;
    let p = payload(RequestType::GetAssertion);
    let err = contact(&base, &CONTACT_ID, &p, true, None, Timeouts::default())
        .await
        .expect_err("410 is not a tunnel");
    assert!(matches!(err, ConnectError::Gone), "{err:?}");
    let (up, _) = server_task.await.unwrap();
    assert_eq!(up.one("X-caBLE-Client-Payload"), PAYLOAD_GA);
    // Another failure is not "gone" (Chromium forgets the phone only on 410).
    let (base, _) = server(Answer::Status(503)).await;
    let err = contact(&base, &CONTACT_ID, &p, true, None, Timeouts::default())
        .await
        .expect_err("503 is not a tunnel");
    assert!(matches!(err, ConnectError::Refused(503)), "{err:?}");
}

//! Integration tests: the real `hybridge-relay` binary on 127.0.0.1, driven by a WebSocket
//! client (tokio-tungstenite) and by raw TCP where a client must misbehave.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

mod common;
use common::client;

const T: Duration = Duration::from_secs(10);

type Relay = common::relay::RelayChild;

/// Starts the relay binary with `args`; its log is shown only if the test fails.
async fn start(args: &[&str]) -> Relay {
    common::relay::start_relay(args).await
}

/// [`start`]; with `own_stderr` the relay's stderr is a pipe the test reads itself.
async fn start_with(args: &[&str], own_stderr: bool) -> Relay {
    if own_stderr {
        common::relay::start_relay_piped(args).await
    } else {
        start(args).await
    }
}

fn tid(n: u8) -> String {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(std::process::id() as u64).to_be_bytes());
    id[8] = n;
    id[9..].copy_from_slice(&rand_bytes());
    hex_upper(&id)
}

fn rand_bytes() -> [u8; 7] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut b = [0u8; 7];
    b.copy_from_slice(&t.to_le_bytes()[..7]);
    b
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

type Ws<S> = WebSocketStream<S>;

async fn ws_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    proto: Option<&str>,
) -> Result<(Ws<S>, Option<String>), WsError> {
    let mut req = url.into_client_request()?;
    if let Some(p) = proto {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    let (ws, resp) = client_async(req, stream).await?;
    let routing = resp
        .headers()
        .get("x-cable-routing-id")
        .map(|v| v.to_str().unwrap().to_owned());
    if proto.is_some() {
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.as_bytes()),
            Some(&b"fido.cable"[..])
        );
    }
    Ok((ws, routing))
}

async fn ws(addr: SocketAddr, path: &str) -> Result<(Ws<TcpStream>, Option<String>), WsError> {
    let tcp = TcpStream::connect(addr).await.map_err(WsError::Io)?;
    ws_on(tcp, &format!("ws://{addr}{path}"), Some("fido.cable")).await
}

async fn status_of(addr: SocketAddr, path: &str, proto: Option<&str>) -> u16 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    match timeout(T, ws_on(tcp, &format!("ws://{addr}{path}"), proto))
        .await
        .expect("in time")
    {
        Ok(_) => 101,
        Err(WsError::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Opens /new and /connect; returns (phone, laptop).
async fn pair(r: &Relay, id: &str) -> (Ws<TcpStream>, Ws<TcpStream>) {
    let (phone, routing) = ws(r.addr, &format!("/cable/new/{id}")).await.expect("new");
    let routing = routing.expect("routing ID header");
    assert_eq!(routing, r.routing);
    let (laptop, none) = ws(
        r.addr,
        &format!(
            "/cable/connect/{}/{}",
            routing.to_lowercase(),
            id.to_lowercase()
        ),
    )
    .await
    .expect("connect");
    assert_eq!(none, None);
    (phone, laptop)
}

async fn next_binary<S: AsyncRead + AsyncWrite + Unpin>(w: &mut Ws<S>) -> Vec<u8> {
    loop {
        match timeout(T, w.next()).await.expect("message in time") {
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

/// Waits for the close frame and returns its code.
async fn close_code<S: AsyncRead + AsyncWrite + Unpin>(w: &mut Ws<S>) -> u16 {
    loop {
        match timeout(T, w.next()).await.expect("close in time") {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    }
}

async fn raw_request(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    timeout(T, s.read_to_string(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    out
}

async fn get(addr: SocketAddr, path: &str) -> String {
    raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await
}

fn bin(v: &[u8]) -> Message {
    Message::Binary(v.to_vec().into())
}

#[tokio::test]
async fn pairs_and_relays_both_ways() {
    let r = start(&["--routing-id", "a1b2c3"]).await;
    assert_eq!(r.routing, "A1B2C3");
    let id = tid(1);
    let (mut phone, mut laptop) = pair(&r, &id).await;
    laptop.send(bin(b"noise message 1")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"noise message 1");
    phone.send(bin(b"noise message 2")).await.unwrap();
    assert_eq!(next_binary(&mut laptop).await, b"noise message 2");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    phone.send(bin(&big)).await.unwrap();
    laptop.send(bin(&big[..70_000])).await.unwrap();
    assert_eq!(next_binary(&mut laptop).await, big);
    assert_eq!(next_binary(&mut phone).await, &big[..70_000]);
    for i in 0..20u8 {
        laptop.send(bin(&[i; 3])).await.unwrap();
    }
    for i in 0..20u8 {
        assert_eq!(next_binary(&mut phone).await, [i; 3]);
    }
    // A ping is answered and not relayed.
    phone
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    laptop.send(bin(b"after ping")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"after ping");
    // A clean close by one peer closes the other with 1000.
    phone.close(None).await.unwrap();
    assert_eq!(close_code(&mut laptop).await, 1000);
    let m = get(r.addr, "/metrics").await;
    assert!(m.contains("hybridge_relay_pairings_total 1"), "{m}");
    assert!(
        m.contains("hybridge_relay_pairing_wait_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test]
async fn buffers_before_the_peer_joins() {
    let r = start(&[]).await;
    let id = tid(2);
    let (mut phone, routing) = ws(r.addr, &format!("/cable/new/{id}")).await.unwrap();
    for i in 0..5u8 {
        phone.send(bin(&[i; 10])).await.unwrap();
    }
    sleep(Duration::from_millis(100)).await;
    let (mut laptop, _) = ws(r.addr, &format!("/cable/connect/{}/{id}", routing.unwrap()))
        .await
        .unwrap();
    for i in 0..5u8 {
        assert_eq!(next_binary(&mut laptop).await, [i; 10]);
    }
    laptop.send(bin(b"reply")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"reply");
}

/// Polls `/metrics` until it contains `line`, for up to `within`.
async fn wait_metric(addr: SocketAddr, line: &str, within: Duration) {
    let t0 = Instant::now();
    loop {
        let m = get(addr, "/metrics").await;
        if m.contains(line) {
            return;
        }
        assert!(t0.elapsed() < within, "no {line:?} after {within:?}: {m}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// A phone may send a few KiB before its laptop joins (a real one sends nothing); beyond
/// that it is closed with 1008 and its tunnel ID is free again at once.
#[tokio::test]
async fn waiting_phone_over_its_early_allowance_gets_1008() {
    let r = start(&[]).await;
    let id = tid(39);
    let (mut phone, _) = ws(r.addr, &format!("/cable/new/{id}")).await.unwrap();
    phone.send(bin(&[7; 1000])).await.unwrap();
    phone.send(bin(&[8; 4000])).await.unwrap();
    assert_eq!(close_code(&mut phone).await, 1008);
    wait_metric(
        r.addr,
        "hybridge_relay_phones_waiting 0",
        Duration::from_secs(1),
    )
    .await;
    let (_again, _) = ws(r.addr, &format!("/cable/new/{id}"))
        .await
        .expect("the tunnel ID is free again");
}

/// A waiting phone that hangs up (TCP close or close frame) is noticed at once, even after
/// it sent more than the relay queues for the laptop (`--queue-bytes`): its slot, socket and
/// tunnel ID are released without waiting for the pairing timeout.
#[tokio::test]
async fn waiting_phone_that_hangs_up_is_released_at_once() {
    let r = start(&["--queue-bytes", "1024"]).await;
    for close_frame in [false, true] {
        let id = tid(40 + close_frame as u8);
        let (mut phone, _) = client::connect(r.addr, &format!("/cable/new/{id}"), None)
            .await
            .unwrap();
        wait_metric(r.addr, "hybridge_relay_phones_waiting 1", T).await;
        for i in 0..3 {
            phone.send(&[i; 1000]).await.unwrap();
        }
        if close_frame {
            phone.close(1000).await.unwrap();
            assert_eq!(raw_close(&mut phone).await, Some(1000));
        }
        drop(phone);
        wait_metric(
            r.addr,
            "hybridge_relay_phones_waiting 0",
            Duration::from_secs(1),
        )
        .await;
        let (_again, _) = ws(r.addr, &format!("/cable/new/{id}"))
            .await
            .expect("the tunnel ID is free again");
    }
}

#[tokio::test]
async fn http_statuses_before_the_upgrade() {
    let r = start(&[]).await;
    let id = tid(3);
    let a = r.addr;
    assert_eq!(
        status_of(a, &format!("/cable/new/{id}"), None).await,
        400,
        "missing subprotocol"
    );
    assert_eq!(
        status_of(a, &format!("/cable/new/{id}"), Some("chat")).await,
        400,
        "wrong subprotocol"
    );
    assert_eq!(
        status_of(a, "/cable/new/0011zz", Some("fido.cable")).await,
        400,
        "malformed"
    );
    assert_eq!(
        status_of(a, &format!("/cable/new/{id}/"), Some("fido.cable")).await,
        404,
        "unknown path"
    );
    assert_eq!(
        status_of(
            a,
            &format!("/cable/connect/{}/{id}", r.routing),
            Some("fido.cable")
        )
        .await,
        404
    );
    // /cable/contact without a client payload (tests/contact.rs has the rest).
    assert_eq!(
        status_of(a, "/cable/contact/AAAA", Some("fido.cable")).await,
        400
    );
    assert_eq!(status_of(a, "/elsewhere", Some("fido.cable")).await, 404);
    let (_phone, _) = ws(a, &format!("/cable/new/{id}")).await.unwrap();
    assert_eq!(
        status_of(
            a,
            &format!("/cable/new/{}", id.to_lowercase()),
            Some("fido.cable")
        )
        .await,
        409
    );
    let other = if r.routing == "000000" {
        "000001"
    } else {
        "000000"
    };
    assert_eq!(
        status_of(
            a,
            &format!("/cable/connect/{other}/{id}"),
            Some("fido.cable")
        )
        .await,
        404,
        "foreign routing ID"
    );
    let post = raw_request(
        a,
        &format!("POST /cable/new/{id} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let junk = raw_request(a, "\x16\x03\x01\x00junk\r\n\r\n").await;
    assert!(junk.starts_with("HTTP/1.1 400"), "{junk}");
    assert!(get(a, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(a, "/readyz").await.starts_with("HTTP/1.1 200"));
    let m = get(a, "/metrics").await;
    assert!(
        m.contains("hybridge_relay_rejections_total{reason=\"conflict\"} 1"),
        "{m}"
    );
    assert!(m.contains("hybridge_relay_phones_waiting 1"), "{m}");
}

/// Status of an upgrade to `path` with `Origin: origin` (none if `None`).
async fn status_with_origin(addr: SocketAddr, path: &str, origin: Option<&str>) -> u16 {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("fido.cable"),
    );
    if let Some(o) = origin {
        h.insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    match timeout(T, client_async(req, tcp)).await.expect("in time") {
        Ok(_) => 101,
        Err(WsError::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// `--origin HOST`: the tunnel endpoints take only requests whose `Origin` names HOST
/// (scheme ignored; the port may be left out); health and metrics do not ask.
#[tokio::test]
async fn origin_is_enforced_only_when_configured() {
    let r = start(&["--origin", "Cable.Example.org"]).await;
    let new = |n| format!("/cable/new/{}", tid(n));
    let a = r.addr;
    for (origin, want) in [
        (None, 403),
        (Some("wss://evil.example.org"), 403),
        (Some("wss://cable.example.org.evil.net"), 403),
        (Some("null"), 403),
        (Some("cable.example.org"), 403), // no scheme: not an origin
        (Some("wss://cable.example.org/path"), 403), // an origin has no path
        (Some("wss://user@cable.example.org"), 403), // nor credentials
        (Some("wss://cable.example.org"), 101),
        (Some("https://CABLE.example.ORG"), 101),
        (Some("wss://cable.example.org:443"), 101),
    ] {
        assert_eq!(
            status_with_origin(a, &new(31), origin).await,
            want,
            "{origin:?}"
        );
    }
    let connect = format!("/cable/connect/{}/{}", r.routing, tid(32));
    let contact = "/cable/contact/AAAA";
    for path in [connect.as_str(), contact] {
        assert_eq!(status_with_origin(a, path, None).await, 403, "{path}");
        assert_eq!(
            status_with_origin(a, path, Some("wss://a.example")).await,
            403,
            "{path}"
        );
        // Past the origin check: no such tunnel, or a contact without a client payload.
        let past = if path == contact { 400 } else { 404 };
        assert_eq!(
            status_with_origin(a, path, Some("wss://cable.example.org")).await,
            past,
            "{path}"
        );
    }
    assert!(get(a, "/healthz").await.starts_with("HTTP/1.1 200"));
    let m = get(a, "/metrics").await;
    assert!(
        m.contains("hybridge_relay_rejections_total{reason=\"origin\"} 11"),
        "{m}"
    );

    // A port in HOST must match the port in the Origin.
    let r = start(&["--origin", "127.0.0.1:8080"]).await;
    assert_eq!(
        status_with_origin(r.addr, &new(33), Some("wss://127.0.0.1:8080")).await,
        101
    );
    assert_eq!(
        status_with_origin(r.addr, &new(34), Some("wss://127.0.0.1:8081")).await,
        403
    );
    assert_eq!(
        status_with_origin(r.addr, &new(35), Some("wss://127.0.0.1")).await,
        403
    );
    let r = start(&["--origin", "[::1]"]).await;
    assert_eq!(
        status_with_origin(r.addr, &new(36), Some("wss://[::1]:8443")).await,
        101
    );

    // Without --origin, no Origin is needed and any is accepted.
    let r = start(&[]).await;
    assert_eq!(status_with_origin(r.addr, &new(37), None).await, 101);
    assert_eq!(
        status_with_origin(r.addr, &new(38), Some("wss://evil.example")).await,
        101
    );
}

/// A 400 for a missing or unsupported `Sec-WebSocket-Version` names the version the relay
/// speaks (RFC 6455 §4.2.2), so a client can retry with it; other 400s do not.
#[tokio::test]
async fn bad_websocket_version_is_answered_with_the_supported_one() {
    let r = start(&[]).await;
    let head = |version: &str| {
        format!(
            "GET /cable/new/{} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: fido.cable\r\n{version}\r\n",
            tid(30)
        )
    };
    for version in [
        "",
        "Sec-WebSocket-Version: 8\r\n",
        "Sec-WebSocket-Version: 13, 8\r\n",
    ] {
        let resp = raw_request(r.addr, &head(version)).await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{version:?}: {resp}");
        let (head, _) = resp.split_once("\r\n\r\n").expect("a complete head");
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("sec-websocket-version: 13")),
            "{version:?}: {resp}"
        );
    }
    // A request that is wrong in another way, with version 13, gets a plain 400.
    let no_key = "GET /cable/new/00112233445566778899AABBCCDDEEFF HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: fido.cable\r\n\r\n";
    let resp = raw_request(r.addr, no_key).await;
    assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
    assert!(
        !resp.to_ascii_lowercase().contains("sec-websocket-version"),
        "{resp}"
    );
}

#[tokio::test]
async fn close_codes_after_the_upgrade() {
    let r = start(&["--max-message-size", "1024", "--max-messages", "4"]).await;
    // Text frame: 1003 to the sender, the other side is told its peer left.
    let (mut phone, mut laptop) = pair(&r, &tid(4)).await;
    laptop.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(close_code(&mut laptop).await, 1003);
    assert_eq!(close_code(&mut phone).await, 1001);
    // Oversize: 1009.
    let (mut phone, mut laptop) = pair(&r, &tid(5)).await;
    phone.send(bin(&[0; 1024])).await.unwrap();
    assert_eq!(next_binary(&mut laptop).await.len(), 1024);
    phone.send(bin(&[0; 1025])).await.unwrap();
    assert_eq!(close_code(&mut phone).await, 1009);
    assert_eq!(close_code(&mut laptop).await, 1001);
    // Message count: the fifth message in the tunnel closes with 1008.
    let (mut phone, mut laptop) = pair(&r, &tid(6)).await;
    for _ in 0..2 {
        laptop.send(bin(b"q")).await.unwrap();
        next_binary(&mut phone).await;
        phone.send(bin(b"a")).await.unwrap();
        next_binary(&mut laptop).await;
    }
    laptop.send(bin(b"one too many")).await.unwrap();
    assert_eq!(close_code(&mut laptop).await, 1008);
    assert_eq!(close_code(&mut phone).await, 1001);
    // Clean close from the laptop: the phone gets 1000.
    let (mut phone, mut laptop) = pair(&r, &tid(7)).await;
    laptop.send(bin(b"bye")).await.unwrap();
    laptop.close(None).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"bye");
    assert_eq!(close_code(&mut phone).await, 1000);
    // A close frame with a code no endpoint may send, or a reason that is not UTF-8, is a
    // protocol error (1002), never echoed; the other side learns its peer left (1001).
    for (n, payload) in [
        (24u8, &[0x03, 0xed][..]),       // 1005: only for "no code" in APIs
        (25, &[0x03, 0xe7]),             // 999
        (26, &[0x0b, 0xb7]),             // 2999: reserved
        (27, &[0x03, 0xe8, 0xc3, 0x28]), // 1000 with a broken UTF-8 reason
    ] {
        let (mut phone, mut laptop) = raw_pair(&r, &tid(n)).await;
        phone.send_frame(0x88, payload).await.unwrap();
        assert_eq!(raw_close(&mut phone).await, Some(1002), "{payload:02x?}");
        assert_eq!(raw_close(&mut laptop).await, Some(1001), "{payload:02x?}");
    }
    // A code from the application range is echoed as sent.
    let (mut phone, mut laptop) = raw_pair(&r, &tid(28)).await;
    phone.send_frame(0x88, &[0x0f, 0xa0]).await.unwrap(); // 4000
    assert_eq!(raw_close(&mut phone).await, Some(4000));
    assert_eq!(raw_close(&mut laptop).await, Some(1000));
}

/// A pair of the relay crate's own minimal clients, which can send any frame.
async fn raw_pair(r: &Relay, id: &str) -> (client::Client, client::Client) {
    let (phone, routing) = client::connect(r.addr, &format!("/cable/new/{id}"), None)
        .await
        .expect("new");
    let routing = routing.expect("routing ID");
    let (laptop, _) = client::connect(r.addr, &format!("/cable/connect/{routing}/{id}"), None)
        .await
        .expect("connect");
    (phone, laptop)
}

async fn raw_close(c: &mut client::Client) -> Option<u16> {
    loop {
        match timeout(T, c.recv())
            .await
            .expect("close in time")
            .expect("read")
        {
            client::Frame::Close(code) => return code,
            _ => continue,
        }
    }
}

/// With --busy-poll the relay keeps polling for the window after traffic, then sleeps: an
/// idle relay must not burn a core.
#[tokio::test]
async fn busy_poll_spins_only_after_traffic() {
    let r = start(&["--busy-poll", "400ms"]).await;
    let cpu = || {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", r.pid)).unwrap();
        let f: Vec<u64> = s[s.rfind(')').unwrap() + 2..]
            .split(' ')
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        Duration::from_millis((f[0] + f[1]) * 10)
    };
    let (mut phone, mut laptop) = pair(&r, &tid(29)).await;
    sleep(Duration::from_millis(600)).await;
    for round in 0..2 {
        let before = cpu();
        laptop.send(bin(&[round; 64])).await.unwrap();
        assert_eq!(next_binary(&mut phone).await, [round; 64]);
        sleep(Duration::from_millis(300)).await;
        let spun = cpu().saturating_sub(before);
        assert!(
            spun >= Duration::from_millis(50),
            "round {round}: the relay did not poll after traffic ({spun:?} CPU in 300 ms)"
        );
        sleep(Duration::from_millis(300)).await;
        let before = cpu();
        sleep(Duration::from_secs(1)).await;
        let idle = cpu().saturating_sub(before);
        assert!(
            idle < Duration::from_millis(150),
            "round {round}: idle relay used {idle:?} of CPU in 1 s"
        );
    }
}

#[tokio::test]
async fn ttl_pairing_and_first_message_timeouts() {
    let r = start(&[
        "--tunnel-ttl",
        "1500ms",
        "--pairing-timeout",
        "500ms",
        "--first-message-timeout",
        "700ms",
    ])
    .await;
    // Pairing timeout: the lone phone is closed with 1008.
    let (mut lone, _) = ws(r.addr, &format!("/cable/new/{}", tid(8))).await.unwrap();
    let t0 = Instant::now();
    assert_eq!(close_code(&mut lone).await, 1008);
    assert!(t0.elapsed() >= Duration::from_millis(400));
    // First-message timeout: a silent pair is closed with 1008.
    let (mut phone, mut laptop) = pair(&r, &tid(9)).await;
    assert_eq!(close_code(&mut phone).await, 1008);
    assert_eq!(close_code(&mut laptop).await, 1008);
    // TTL: a busy tunnel is closed with 1008 at its lifetime.
    let (mut phone, mut laptop) = pair(&r, &tid(10)).await;
    let t0 = Instant::now();
    laptop.send(bin(b"x")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"x");
    assert_eq!(close_code(&mut phone).await, 1008);
    assert_eq!(close_code(&mut laptop).await, 1008);
    let e = t0.elapsed();
    assert!(
        e >= Duration::from_millis(700) && e < Duration::from_secs(5),
        "{e:?}"
    );
}

#[tokio::test]
async fn capacity_503_and_rate_limit_429() {
    let r = start(&["--max-tunnels", "2"]).await;
    let (_a, _) = ws(r.addr, &format!("/cable/new/{}", tid(11)))
        .await
        .unwrap();
    let (_b, _) = ws(r.addr, &format!("/cable/new/{}", tid(12)))
        .await
        .unwrap();
    assert_eq!(
        status_of(
            r.addr,
            &format!("/cable/new/{}", tid(13)),
            Some("fido.cable")
        )
        .await,
        503
    );
    drop(_a);
    sleep(Duration::from_millis(200)).await;
    let (_c, _) = ws(r.addr, &format!("/cable/new/{}", tid(14)))
        .await
        .expect("slot freed");

    let r = start(&["--rate-per-ip", "1", "--rate-burst", "3"]).await;
    for _ in 0..3 {
        assert_eq!(
            status_of(r.addr, "/cable/contact/AAAA", Some("fido.cable")).await,
            400
        );
    }
    assert_eq!(
        status_of(
            r.addr,
            &format!("/cable/new/{}", tid(15)),
            Some("fido.cable")
        )
        .await,
        429
    );
    // Behind a proxy the limit applies to the address the proxy reports.
    let r2 = start(&[
        "--rate-per-ip",
        "1",
        "--rate-burst",
        "2",
        "--client-ip-header",
        "X-Forwarded-For",
    ])
    .await;
    let via = |ip: &str| {
        format!(
            "GET /cable/contact/AAAA HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.9.9.9, {ip}\r\n\r\n"
        )
    };
    for _ in 0..2 {
        assert!(
            raw_request(r2.addr, &via("203.0.113.1"))
                .await
                .starts_with("HTTP/1.1 400")
        );
    }
    assert!(
        raw_request(r2.addr, &via("203.0.113.1"))
            .await
            .starts_with("HTTP/1.1 429")
    );
    assert!(
        raw_request(r2.addr, &via("203.0.113.2"))
            .await
            .starts_with("HTTP/1.1 400")
    );
    // Health checks are not rate-limited.
    assert!(get(r.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
}

/// Phones behind carrier-grade NAT share one address: with the default limits, 200
/// ceremonies at once from 127.0.0.1 (200 phones waiting, then 200 laptops) all pair and
/// relay. Tunnels that pair cost the address nothing.
#[tokio::test]
async fn two_hundred_concurrent_pairings_from_one_address() {
    const N: u8 = 200;
    let r = &start(&[]).await;
    let ids: Vec<String> = (0..N)
        .map(|i| format!("{}{i:02X}", &tid(43)[..30]))
        .collect();
    let phones = futures_util::future::join_all(
        ids.iter()
            .map(|id| async move { ws(r.addr, &format!("/cable/new/{id}")).await }),
    )
    .await;
    let mut phones: Vec<_> = phones
        .into_iter()
        .map(|p| p.expect("every phone is admitted").0)
        .collect();
    let laptops =
        futures_util::future::join_all(ids.iter().map(|id| async move {
            ws(r.addr, &format!("/cable/connect/{}/{id}", r.routing)).await
        }))
        .await;
    let mut laptops: Vec<_> = laptops
        .into_iter()
        .map(|l| l.expect("every laptop is admitted").0)
        .collect();
    futures_util::future::join_all(phones.iter_mut().zip(laptops.iter_mut()).enumerate().map(
        |(i, (phone, laptop))| async move {
            laptop.send(bin(&[i as u8; 32])).await.unwrap();
            assert_eq!(next_binary(phone).await, [i as u8; 32]);
            phone.send(bin(&[!(i as u8); 32])).await.unwrap();
            assert_eq!(next_binary(laptop).await, [!(i as u8); 32]);
        },
    ))
    .await;
    let m = get(r.addr, "/metrics").await;
    assert!(
        m.contains(&format!("hybridge_relay_tunnels_active {N}")),
        "{m}"
    );
    assert!(
        m.contains("hybridge_relay_rejections_total{reason=\"rate_limited\"} 0"),
        "{m}"
    );
}

/// What abuse looks like is charged to the address: junk that is not HTTP, and connections
/// that never finish their request. With the default budget (100 failures, 20 a second back)
/// a flood from one address gets 429 after about 100, and so does a real client there until
/// the failures are paid back.
#[tokio::test]
async fn junk_from_one_address_is_refused_after_its_budget() {
    let r = start(&[]).await;
    let mut bad_requests = 0;
    loop {
        let resp = raw_request(r.addr, "\x16\x03\x01\x00junk\r\n\r\n").await;
        if resp.starts_with("HTTP/1.1 429") {
            break;
        }
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        bad_requests += 1;
        assert!(
            bad_requests < 200,
            "no 429 after {bad_requests} bad requests"
        );
    }
    assert!(bad_requests >= 100, "refused after only {bad_requests}");
    assert_eq!(
        status_of(
            r.addr,
            &format!("/cable/new/{}", tid(44)),
            Some("fido.cable")
        )
        .await,
        429
    );

    // Connections that send half a request and hang up, all at once.
    let r = start(&[]).await;
    let half = futures_util::future::join_all((0..150).map(|_| async {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(b"GET /cable/new/").await.unwrap();
        s
    }))
    .await;
    drop(half);
    let t0 = Instant::now();
    loop {
        let status = status_of(
            r.addr,
            &format!("/cable/new/{}", tid(45)),
            Some("fido.cable"),
        )
        .await;
        if status == 429 {
            break;
        }
        assert!(
            t0.elapsed() < T,
            "the unfinished requests were never charged"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Which ends are charged: with a budget of 3 and almost no refill, many pairings in a row
/// pass; three phones that no laptop comes for spend the budget.
#[tokio::test]
async fn per_ip_budget_is_charged_for_failures_not_for_pairings() {
    let r = start(&[
        "--rate-burst",
        "3",
        "--rate-per-ip",
        "0.01",
        "--pairing-timeout",
        "200ms",
    ])
    .await;
    for i in 0..20 {
        let (mut phone, mut laptop) = pair(&r, &tid(46 + i)).await;
        laptop.send(bin(b"hi")).await.unwrap();
        assert_eq!(next_binary(&mut phone).await, b"hi");
        phone.close(None).await.unwrap();
        assert_eq!(close_code(&mut laptop).await, 1000);
    }
    for i in 0..3 {
        let (mut lone, _) = ws(r.addr, &format!("/cable/new/{}", tid(70 + i)))
            .await
            .unwrap();
        assert_eq!(close_code(&mut lone).await, 1008);
    }
    assert_eq!(
        status_of(
            r.addr,
            &format!("/cable/new/{}", tid(73)),
            Some("fido.cable")
        )
        .await,
        429
    );
    // Health checks are answered all the same.
    assert!(get(r.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
}

/// `--max-unpaired-per-ip`: an address holds at most that many connections outside paired
/// tunnels (phones waiting, laptops arriving); a pairing gives both places back.
#[tokio::test]
async fn unpaired_connections_per_ip_are_bounded() {
    let r = start(&["--max-unpaired-per-ip", "3"]).await;
    let ids: Vec<String> = (80..87).map(tid).collect();
    let new = |i: usize| format!("/cable/new/{}", ids[i]);
    let (mut a, _) = ws(r.addr, &new(0)).await.unwrap();
    let (_b, _) = ws(r.addr, &new(1)).await.unwrap();
    let (c, _) = ws(r.addr, &new(2)).await.unwrap();
    assert_eq!(status_of(r.addr, &new(3), Some("fido.cable")).await, 429);
    let connect_a = format!("/cable/connect/{}/{}", r.routing, ids[0]);
    assert_eq!(status_of(r.addr, &connect_a, Some("fido.cable")).await, 429);
    // A phone hangs up: its place is free, and the laptop gets in.
    drop(c);
    wait_metric(r.addr, "hybridge_relay_phones_waiting 2", T).await;
    let (mut laptop, _) = ws(r.addr, &connect_a).await.expect("a place was free");
    laptop.send(bin(b"paired")).await.unwrap();
    assert_eq!(next_binary(&mut a).await, b"paired");
    // The pair holds no place: two more phones fit beside the one still waiting.
    let (_e, _) = ws(r.addr, &new(4))
        .await
        .expect("paired tunnels hold no place");
    let (_f, _) = ws(r.addr, &new(5))
        .await
        .expect("paired tunnels hold no place");
    assert_eq!(status_of(r.addr, &new(6), Some("fido.cable")).await, 429);
    let m = get(r.addr, "/metrics").await;
    assert!(
        m.contains("hybridge_relay_rejections_total{reason=\"unpaired_per_ip\"} 3"),
        "{m}"
    );
}

#[tokio::test]
async fn silent_clients_do_not_block_others_and_are_dropped() {
    let r = start(&["--header-timeout", "1500ms", "--rate-per-ip", "0"]).await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(r.addr).await.unwrap());
    }
    // A half-sent request is just as silent.
    let mut half = TcpStream::connect(r.addr).await.unwrap();
    half.write_all(b"GET /cable/new/").await.unwrap();
    silent.push(half);
    let t0 = Instant::now();
    let (mut phone, mut laptop) = pair(&r, &tid(16)).await;
    laptop.send(bin(b"still works")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"still works");
    assert!(
        t0.elapsed() < Duration::from_millis(1200),
        "pairing was held up"
    );
    for mut s in silent {
        let mut b = [0u8; 16];
        let n = timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("dropped after the header timeout");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
    let m = get(r.addr, "/metrics").await;
    assert!(
        m.contains("hybridge_relay_rejections_total{reason=\"header_timeout\"} 201"),
        "{m}"
    );
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn graceful_shutdown_with_live_tunnels() {
    let mut r = start(&["--shutdown-grace", "1s", "--metrics-listen", "127.0.0.1:0"]).await;
    let metrics = r.metrics.expect("metrics listener");
    assert!(
        get(metrics, "/metrics")
            .await
            .contains("hybridge_relay_tunnels_active 0")
    );
    let (mut phone, mut laptop) = pair(&r, &tid(17)).await;
    laptop.send(bin(b"before")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"before");
    let (mut waiting, _) = ws(r.addr, &format!("/cable/new/{}", tid(18)))
        .await
        .unwrap();
    let t0 = Instant::now();
    signal(r.pid, "-TERM");
    // The waiting phone can no longer be reached: closed at once with 1001.
    assert_eq!(close_code(&mut waiting).await, 1001);
    // Not ready any more; the live tunnel keeps working during the grace period.
    assert!(get(metrics, "/readyz").await.starts_with("HTTP/1.1 503"));
    let t1 = Instant::now();
    while TcpStream::connect(r.addr).await.is_ok() {
        assert!(t1.elapsed() < Duration::from_millis(800), "still accepting");
        sleep(Duration::from_millis(20)).await;
    }
    phone.send(bin(b"during")).await.unwrap();
    assert_eq!(next_binary(&mut laptop).await, b"during");
    assert_eq!(close_code(&mut phone).await, 1001);
    assert_eq!(close_code(&mut laptop).await, 1001);
    assert!(t0.elapsed() >= Duration::from_millis(900));
    let status = timeout(T, r.child.wait()).await.expect("exits").unwrap();
    assert!(status.success());
}

/// A second SIGTERM (or SIGINT) during the drain ends it: every tunnel is closed with 1001
/// at once and the relay exits, without waiting out `--shutdown-grace`.
#[tokio::test]
async fn second_signal_closes_every_tunnel_at_once() {
    for sig in ["-TERM", "-INT"] {
        let mut r = start(&["--shutdown-grace", "60s", "--metrics-listen", "127.0.0.1:0"]).await;
        let metrics = r.metrics.expect("metrics listener");
        let (mut phone, mut laptop) = pair(&r, &tid(42)).await;
        laptop.send(bin(b"before")).await.unwrap();
        assert_eq!(next_binary(&mut phone).await, b"before");
        signal(r.pid, sig);
        // Draining: not ready, and the tunnel still works.
        let t0 = Instant::now();
        while !get(metrics, "/readyz").await.starts_with("HTTP/1.1 503") {
            assert!(t0.elapsed() < T, "{sig}: the drain never began");
            sleep(Duration::from_millis(20)).await;
        }
        phone.send(bin(b"during")).await.unwrap();
        assert_eq!(next_binary(&mut laptop).await, b"during");
        signal(r.pid, sig);
        let soon = Duration::from_secs(3);
        let codes = timeout(soon, async {
            (close_code(&mut phone).await, close_code(&mut laptop).await)
        })
        .await
        .unwrap_or_else(|_| panic!("{sig}: the second signal did not close the tunnel"));
        assert_eq!(codes, (1001, 1001), "{sig}");
        let status = timeout(soon, r.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{sig}: the relay did not exit"))
            .unwrap();
        assert!(status.success(), "{sig}: {status}");
    }
}

mod tls {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::TlsConnector;

    fn cert() -> (String, String, CertificateDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (
            ck.cert.pem(),
            ck.signing_key.serialize_pem(),
            ck.cert.der().clone(),
        )
    }

    fn connector(root: &CertificateDer<'static>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(cfg))
    }

    async fn wss(
        addr: SocketAddr,
        root: &CertificateDer<'static>,
        path: &str,
    ) -> std::io::Result<(
        Ws<tokio_rustls::client::TlsStream<TcpStream>>,
        Option<String>,
    )> {
        let tcp = TcpStream::connect(addr).await?;
        let tls = connector(root)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        ws_on(
            tls,
            &format!("wss://localhost:{}{path}", addr.port()),
            Some("fido.cable"),
        )
        .await
        .map_err(std::io::Error::other)
    }

    #[tokio::test]
    async fn tls_with_certificate_reload() {
        let dir = std::env::temp_dir().join(format!(
            "hybridge-relay-tls-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (c1, k1, root1) = cert();
        std::fs::write(&cert_path, c1).unwrap();
        std::fs::write(&key_path, k1).unwrap();
        let r = start(&[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ])
        .await;

        let id = tid(19);
        let (mut phone, routing) = wss(r.addr, &root1, &format!("/cable/new/{id}"))
            .await
            .unwrap();
        let routing = routing.unwrap();
        let (mut laptop, _) = wss(r.addr, &root1, &format!("/cable/connect/{routing}/{id}"))
            .await
            .unwrap();
        laptop.send(bin(b"over tls")).await.unwrap();
        assert_eq!(next_binary(&mut phone).await, b"over tls");

        // Replace the certificate and reload with SIGHUP.
        let (c2, k2, root2) = cert();
        std::fs::write(&cert_path, c2).unwrap();
        std::fs::write(&key_path, k2).unwrap();
        signal(r.pid, "-HUP");
        let t0 = Instant::now();
        let _p2 = loop {
            if let Ok(x) = wss(r.addr, &root2, &format!("/cable/new/{}", tid(21))).await {
                break x;
            }
            assert!(t0.elapsed() < T, "new certificate never served");
            sleep(Duration::from_millis(50)).await;
        };
        // New connections get the new certificate; the old one is no longer trusted...
        assert!(
            wss(r.addr, &root1, &format!("/cable/new/{}", tid(20)))
                .await
                .is_err()
        );
        // ...and the live tunnel was not dropped.
        phone.send(bin(b"after reload")).await.unwrap();
        assert_eq!(next_binary(&mut laptop).await, b"after reload");
        phone.close(None).await.unwrap();
        assert_eq!(close_code(&mut laptop).await, 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn load_tool_smoke() {
    let r = start(&["--rate-per-ip", "0", "--max-messages", "0"]).await;
    let out = Command::new(env!("CARGO_BIN_EXE_relay-load"))
        .args([
            "suite",
            "--url",
            &format!("ws://{}", r.addr),
            "--pid",
            &r.pid.to_string(),
        ])
        .args([
            "--pairings",
            "200",
            "--workers",
            "8",
            "--hold",
            "100",
            "--seconds",
            "0.5",
            "--in-flight",
            "10",
            "--runs",
            "2",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "relay-load failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pairings/s"), "{stdout}");
    assert!(stdout.contains("RSS per tunnel"), "{stdout}");
    assert!(stdout.contains("p99"), "{stdout}");
    assert!(stdout.contains("pairing run 2/2"), "{stdout}");
    assert!(stdout.contains("client polls"), "{stdout}");
}

/// The library API other crates embed: bind in-process, use `url()` and `routing_id()`,
/// shut down gracefully.
#[tokio::test]
async fn embedded_relay_api() {
    use hybridge_proto::tunnel::{TunnelId, TunnelPath};
    let relay = hybridge_relay::Relay::bind(hybridge_relay::Config::default())
        .await
        .unwrap();
    let base = relay.url();
    assert!(base.starts_with("ws://127.0.0.1:"));
    let tunnel_id = TunnelId(*b"embedded relay!!");
    let new = TunnelPath::New { tunnel_id }.to_url(&base);
    let tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let (mut phone, routing) = ws_on(tcp, &new, Some("fido.cable")).await.unwrap();
    let routing_id =
        hybridge_proto::tunnel::parse_routing_id_header(routing.unwrap().as_bytes()).unwrap();
    assert_eq!(routing_id, relay.routing_id());
    let connect = TunnelPath::Connect {
        routing_id,
        tunnel_id,
    }
    .to_url(&base);
    let tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let (mut laptop, _) = ws_on(tcp, &connect, Some("fido.cable")).await.unwrap();
    laptop.send(bin(b"in-process")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"in-process");
    assert_eq!(relay.tunnels(), 1);
    assert!(
        relay
            .metrics_text()
            .contains("hybridge_relay_tunnels_active 1")
    );
    let (_, code_p, code_l) = tokio::join!(
        relay.shutdown(Duration::from_millis(200)),
        close_code(&mut phone),
        close_code(&mut laptop)
    );
    assert_eq!((code_p, code_l), (1001, 1001));
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A sender whose peer does not read is throttled: the relay queues at most
/// `--queue-bytes` per direction and stops reading, so its memory stays flat.
#[tokio::test]
async fn backpressure_bounds_memory() {
    let r = start(&["--queue-bytes", "16384"]).await;
    let (phone, mut laptop) = pair(&r, &tid(22)).await;
    let rss0 = rss_kib(r.pid);
    const MSG: usize = 512 * 1024;
    const COUNT: usize = 80; // 40 MiB: far more than the socket buffers hold
    let sender = tokio::spawn(async move {
        let mut phone = phone;
        for i in 0..COUNT {
            phone.send(bin(&vec![i as u8; MSG])).await.unwrap();
        }
        phone
    });
    sleep(Duration::from_millis(1500)).await;
    assert!(
        !sender.is_finished(),
        "40 MiB went nowhere: no backpressure"
    );
    let grown = rss_kib(r.pid).saturating_sub(rss0);
    assert!(
        grown < 8 * 1024,
        "relay grew by {grown} KiB while its peer did not read"
    );
    for i in 0..COUNT {
        let m = next_binary(&mut laptop).await;
        assert_eq!((m.len(), m[0], m[MSG - 1]), (MSG, i as u8, i as u8));
    }
    let _phone = timeout(T, sender).await.expect("sender finishes").unwrap();
}

/// Debug logs name tunnels by a short tag, never by the full ID, and carry no message bytes.
#[tokio::test]
async fn logs_never_contain_tunnel_ids_or_payloads() {
    let mut r = start_with(&["--log", "debug", "--log-format", "json"], true).await;
    let id = tid(23);
    let (mut phone, mut laptop) = pair(&r, &id).await;
    laptop.send(bin(b"SECRET-PAYLOAD")).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, b"SECRET-PAYLOAD");
    phone.close(None).await.unwrap();
    assert_eq!(close_code(&mut laptop).await, 1000);
    signal(r.pid, "-TERM");
    let mut err = String::new();
    let mut stderr = r.child.stderr.take().unwrap();
    timeout(T, stderr.read_to_string(&mut err))
        .await
        .unwrap()
        .unwrap();
    assert!(err.contains("\"paired\""), "{err}");
    assert!(err.contains(&id[..4].to_lowercase()), "tag missing: {err}");
    assert!(
        !err.to_lowercase().contains(&id[4..].to_lowercase()),
        "full tunnel ID logged: {err}"
    );
    assert!(!err.contains("SECRET"), "payload logged: {err}");
    for line in err.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("JSON log line");
    }
}

/// `--help` shows where each flag's environment variable is, never its value: the NATS URL
/// may carry a password.
#[tokio::test]
async fn help_never_prints_the_nats_credentials() {
    let out = Command::new(env!("CARGO_BIN_EXE_hybridge-relay"))
        .arg("--help")
        .env(
            "HYBRIDGE_RELAY_NATS",
            "tls://relay:s3cret-pw@nats.internal:4222",
        )
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("HYBRIDGE_RELAY_NATS"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}

/// A log filter that does not parse stops the relay with a usage error that says so,
/// instead of running with some other level.
#[tokio::test]
async fn invalid_log_filter_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_hybridge-relay"))
        .args(["--log", "hybridge_relay=loud", "--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid --log filter"), "{err}");
}

/// A relay that logs a warning: `--max-tunnels` beyond what its open-files limit allows.
const WARNING_RELAY: [&str; 2] = ["--max-tunnels", "1000000000"];
const WARNING: &str = "--max-tunnels exceeds what the open-files limit allows";

#[tokio::test]
#[ignore = "a sample run by relay_logs_show_only_when_a_test_fails"]
async fn sample_passing_test_with_a_warning_relay() {
    let r = start(&WARNING_RELAY).await;
    assert!(get(r.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
#[ignore = "a sample run by relay_logs_show_only_when_a_test_fails"]
async fn sample_failing_test_with_a_warning_relay() {
    let r = start(&WARNING_RELAY).await;
    assert!(get(r.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    panic!("this sample fails on purpose");
}

/// The relays the tests start keep their logs out of `cargo test` output while the test
/// passes, and show them in the report when it fails. Runs this test binary on the two
/// samples above.
#[test]
fn relay_logs_show_only_when_a_test_fails() {
    let run = |name: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--ignored", "--test-threads", "1"])
            .env_remove("HYBRIDGE_RELAY_TEST_LOG")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run("sample_passing_test_with_a_warning_relay");
    assert!(ok && text.contains("1 passed"), "{text}");
    assert!(
        !text.contains(WARNING),
        "a passing test printed the relay's log:\n{text}"
    );
    let (ok, text) = run("sample_failing_test_with_a_warning_relay");
    assert!(
        !ok && text.contains("this sample fails on purpose"),
        "{text}"
    );
    assert!(
        text.contains(WARNING),
        "a failing test hid the relay's log:\n{text}"
    );
}

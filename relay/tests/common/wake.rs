//! A phone's wake-up subscription and a laptop's `/cable/contact`, spoken with
//! tokio-tungstenite (not the relay's own code) and the protocol crate's encodings.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hybridge_proto::contact::{Ack, Challenge, ContactId, Proof, WAKE_SUBPROTOCOL, Wake};
use hybridge_proto::linking::ClientPayload;
use hybridge_proto::qr::RequestType;
use hybridge_proto::tunnel::TunnelPath;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

pub use p256::SecretKey;

const T: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<TcpStream>;

/// A fresh wake key.
pub fn wake_key() -> SecretKey {
    hybridge_proto::keys::generate(&mut rand::rngs::OsRng)
}

/// A client payload as Chrome sends it, with a fresh nonce.
pub fn payload(request_type: RequestType) -> ClientPayload {
    ClientPayload::new(&mut rand::rngs::OsRng, vec![9; 8], request_type)
}

/// Opens a WebSocket on `path` with `headers`; the HTTP status when refused.
pub async fn open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Response), u16> {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).unwrap());
    }
    match timeout(T, client_async(req, tcp))
        .await
        .expect("upgrade in time")
    {
        Ok(r) => Ok(r),
        Err(WsError::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("unexpected upgrade error: {e}"),
    }
}

/// Opens `/cable/subscribe` and reads the challenge.
pub async fn subscribe_open(addr: SocketAddr) -> Result<(Ws, Challenge), u16> {
    let (mut ws, resp) = open(
        addr,
        "/cable/subscribe",
        &[("Sec-WebSocket-Protocol", WAKE_SUBPROTOCOL)],
    )
    .await?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(WAKE_SUBPROTOCOL.as_bytes())
    );
    let c = Challenge::decode(&next_binary(&mut ws).await).expect("a 32-byte challenge");
    Ok((ws, c))
}

/// Subscribes with `key` (signing for the host the relay is reached at) and reads the ack.
pub async fn subscribe(addr: SocketAddr, key: &SecretKey) -> (Ws, ContactId) {
    let (mut ws, c) = subscribe_open(addr).await.expect("subscribe upgrade");
    let proof = Proof::sign(key, &c, &addr.to_string()).unwrap();
    ws.send(Message::Binary(proof.encode().into()))
        .await
        .unwrap();
    let ack = Ack::decode(&next_binary(&mut ws).await).expect("an acknowledgement");
    assert_eq!(ack.contact_id, ContactId::of(&key.public_key()));
    (ws, ack.contact_id)
}

/// `/cable/contact/<id>` with a client payload header (raw), `fido.cable`, and the connect
/// signal when asked.
pub async fn contact_raw(
    addr: SocketAddr,
    id: &[u8],
    payload_header: Option<&str>,
    signal: bool,
) -> Result<(Ws, Response), u16> {
    let path = TunnelPath::Contact {
        contact_id: id.to_vec(),
    }
    .to_path();
    let mut headers = vec![("Sec-WebSocket-Protocol", "fido.cable")];
    if let Some(p) = payload_header {
        headers.push(("X-caBLE-Client-Payload", p));
    }
    if signal {
        headers.push(("X-caBLE-Signal-Connection", "true"));
    }
    open(addr, &path, &headers).await
}

/// A laptop's `/cable/contact` for `id` with a valid payload.
pub async fn contact(
    addr: SocketAddr,
    id: &ContactId,
    payload: &ClientPayload,
    signal: bool,
) -> Result<(Ws, Response), u16> {
    contact_raw(addr, &id.0, Some(&payload.to_header_value()), signal).await
}

/// The phone joins the tunnel a wake-up names, on the relay at `addr`.
pub async fn join(addr: SocketAddr, wake: &Wake) -> Ws {
    let path = wake.tunnel_path().to_path();
    open(addr, &path, &[("Sec-WebSocket-Protocol", "fido.cable")])
        .await
        .expect("the phone joins")
        .0
}

/// The next binary message (pings and pongs skipped).
pub async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match timeout(T, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

/// The next wake-up on a subscription.
pub async fn next_wake(ws: &mut Ws) -> Wake {
    Wake::decode(&next_binary(ws).await).expect("a wake message")
}

/// Waits (up to `within`) for the close frame: its code and reason.
pub async fn close_of(ws: &mut Ws, within: Duration) -> (u16, String) {
    loop {
        match timeout(within, ws.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

/// One message each way between a laptop and its phone.
pub async fn exchange(laptop: &mut Ws, phone: &mut Ws, tag: &[u8]) {
    laptop
        .send(Message::Binary(tag.to_vec().into()))
        .await
        .unwrap();
    assert_eq!(next_binary(phone).await, tag);
    let back: Vec<u8> = tag.iter().rev().copied().collect();
    phone
        .send(Message::Binary(back.clone().into()))
        .await
        .unwrap();
    assert_eq!(next_binary(laptop).await, back);
}

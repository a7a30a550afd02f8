//! Linked phones against the real `hybridge-relay` binary: a phone's wake-up subscription
//! (`/cable/subscribe`), a laptop's `/cable/contact`, and the woken phone's `/cable/connect`,
//! all spoken by tokio-tungstenite with the protocol crate's encodings.

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::SinkExt;
use hybridge_proto::contact::{Challenge, ContactId, Proof};
use hybridge_proto::qr::RequestType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::wake::*;

const T: Duration = Duration::from_secs(10);

type Relay = common::relay::RelayChild;

async fn start(args: &[&str]) -> Relay {
    common::relay::start_relay(args).await
}

impl Relay {
    async fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = timeout(T, s.read_to_string(&mut out)).await;
        out
    }

    async fn metric(&self, line_start: &str) -> f64 {
        let m = self.metrics().await;
        m.lines()
            .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
    }
}

#[tokio::test]
async fn a_contact_wakes_the_subscribed_phone_and_pairs_it_with_the_laptop() {
    let r = start(&[]).await;
    let key = wake_key();
    let (mut sub, id) = subscribe(r.addr, &key).await;

    for signal in [true, false] {
        let payload = payload(RequestType::MakeCredential);
        let (mut laptop, resp) = contact(r.addr, &id, &payload, signal)
            .await
            .expect("contact upgraded");
        let h = resp.headers();
        assert_eq!(h["sec-websocket-protocol"], "fido.cable");
        assert!(h.get("x-cable-routing-id").is_none(), "{h:?}");
        assert_eq!(
            h.get("x-cable-signal-connection").map(|v| v.as_bytes()),
            signal.then_some(&b"true"[..])
        );
        let wake = next_wake(&mut sub).await;
        assert_eq!(wake.routing_id.to_hex(), r.routing);
        assert_eq!(
            wake.client_payload,
            payload.to_bytes(),
            "the payload as sent"
        );
        assert_eq!(wake.client_payload().unwrap(), payload);

        // Before the phone joins, the laptop may already send (buffered for the phone).
        laptop
            .send(Message::Binary(b"early".to_vec().into()))
            .await
            .unwrap();
        let mut phone = join(r.addr, &wake).await;
        if signal {
            assert_eq!(next_binary(&mut laptop).await, [0x00], "the connect signal");
        }
        assert_eq!(next_binary(&mut phone).await, b"early");
        exchange(&mut laptop, &mut phone, b"noise message 1").await;
        exchange(&mut laptop, &mut phone, &[0xab; 40_000]).await;
        // The tunnel is used: its ID is not a second time.
        let again = TunnelPathFor(&wake).path();
        assert_eq!(
            open(r.addr, &again, &[("Sec-WebSocket-Protocol", "fido.cable")])
                .await
                .err(),
            Some(404)
        );
    }
    assert_eq!(
        r.metric("hybridge_relay_wakes_total{result=\"local\"}")
            .await,
        2.0
    );
    assert_eq!(r.metric("hybridge_relay_subscriptions").await, 1.0);
    assert_eq!(r.metric("hybridge_relay_pairings_total").await, 2.0);
}

struct TunnelPathFor<'a>(&'a hybridge_proto::contact::Wake);

impl TunnelPathFor<'_> {
    fn path(&self) -> String {
        hybridge_proto::tunnel::TunnelPath::Connect {
            routing_id: self.0.routing_id,
            tunnel_id: self.0.tunnel_id,
        }
        .to_path()
    }
}

#[tokio::test]
async fn no_subscriber_is_410_gone() {
    let r = start(&[]).await;
    let p = payload(RequestType::GetAssertion);
    let unknown = ContactId::of(&wake_key().public_key());
    let started = Instant::now();
    assert_eq!(contact(r.addr, &unknown, &p, false).await.err(), Some(410));
    // A contact ID of another length (Google's FCM tokens) has no subscriber here either.
    let fcm = vec![0x42u8; 150];
    assert_eq!(
        contact_raw(r.addr, &fcm, Some(&p.to_header_value()), true)
            .await
            .err(),
        Some(410)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    // A phone that subscribed and left is gone too.
    let key = wake_key();
    let (mut sub, id) = subscribe(r.addr, &key).await;
    sub.close(None).await.unwrap();
    let _ = close_of(&mut sub, T).await;
    sleep(Duration::from_millis(100)).await;
    assert_eq!(contact(r.addr, &id, &p, false).await.err(), Some(410));
    assert_eq!(
        r.metric("hybridge_relay_wakes_total{result=\"gone\"}")
            .await,
        3.0
    );
    assert_eq!(
        r.metric("hybridge_relay_rejections_total{reason=\"gone\"}")
            .await,
        3.0
    );
    assert_eq!(r.metric("hybridge_relay_subscriptions").await, 0.0);
}

#[tokio::test]
async fn a_stranger_who_knows_the_contact_id_can_neither_subscribe_nor_replace() {
    let r = start(&[]).await;
    let owner = wake_key();
    let stranger = wake_key();
    let (mut sub, id) = subscribe(r.addr, &owner).await;
    let host = r.addr.to_string();

    // The owner's proof, seen once, is no good for another challenge.
    let (_, c1) = subscribe_open(r.addr).await.unwrap();
    let old_proof = Proof::sign(&owner, &c1, &host).unwrap();
    type Forge<'a> = Box<dyn Fn(&Challenge) -> Proof + 'a>;
    let attempts: Vec<(&str, Forge)> = vec![
        (
            "the owner's public key with the stranger's signature",
            Box::new(|c| Proof {
                wake_public: owner.public_key(),
                ..Proof::sign(&stranger, c, &host).unwrap()
            }),
        ),
        (
            "a replayed proof of the owner",
            Box::new(|_| old_proof.clone()),
        ),
        (
            "the owner's proof for another host",
            Box::new(|c| Proof::sign(&owner, c, "evil.example").unwrap()),
        ),
    ];
    for (what, forge) in attempts {
        let (mut ws, c) = subscribe_open(r.addr).await.unwrap();
        ws.send(Message::Binary(forge(&c).encode().into()))
            .await
            .unwrap();
        let (code, reason) = close_of(&mut ws, T).await;
        assert_eq!(
            (code, reason.as_str()),
            (1008, "subscription proof does not verify"),
            "{what}"
        );
    }
    // Garbage and an oversized proof are refused as well.
    let (mut ws, _) = subscribe_open(r.addr).await.unwrap();
    ws.send(Message::Binary(vec![0xa0].into())).await.unwrap();
    assert_eq!(close_of(&mut ws, T).await.0, 1008);
    let (mut ws, _) = subscribe_open(r.addr).await.unwrap();
    ws.send(Message::Binary(vec![0; 300].into())).await.unwrap();
    assert_eq!(close_of(&mut ws, T).await.0, 1009);

    // The owner's subscription is untouched: it still gets the wake-up.
    let p = payload(RequestType::GetAssertion);
    let (_laptop, _) = contact(r.addr, &id, &p, false).await.expect("contact");
    assert_eq!(next_wake(&mut sub).await.client_payload, p.to_bytes());
    assert_eq!(
        r.metric("hybridge_relay_subscription_ends_total{reason=\"bad_proof\"}")
            .await,
        5.0
    );
    assert_eq!(r.metric("hybridge_relay_subscriptions").await, 1.0);
}

#[tokio::test]
async fn the_owner_replaces_its_own_subscription() {
    let r = start(&[]).await;
    let key = wake_key();
    let (mut first, id) = subscribe(r.addr, &key).await;
    let (mut second, id2) = subscribe(r.addr, &key).await;
    assert_eq!(id, id2);
    let (code, reason) = close_of(&mut first, T).await;
    assert_eq!(
        (code, reason.as_str()),
        (4001, "replaced by a newer subscription for this contact ID")
    );
    let p = payload(RequestType::GetAssertion);
    let (_laptop, _) = contact(r.addr, &id, &p, false).await.expect("contact");
    assert_eq!(next_wake(&mut second).await.client_payload, p.to_bytes());
    assert_eq!(
        r.metric("hybridge_relay_subscription_ends_total{reason=\"replaced\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn bad_contact_and_subscribe_requests_are_400() {
    let r = start(&[]).await;
    let key = wake_key();
    let (_sub, id) = subscribe(r.addr, &key).await;
    let good = payload(RequestType::GetAssertion).to_header_value();
    let cbor = |v: hybridge_cbor::Value| hex::encode(hybridge_cbor::encode(&v));
    let dcp = cbor(hybridge_cbor::Value::map([
        (
            hybridge_cbor::Value::from(1u8),
            hybridge_cbor::Value::from(vec![1u8; 8]),
        ),
        (2u8.into(), vec![2u8; 16].into()),
        (3u8.into(), "dcp".into()),
    ]));
    let short_link = cbor(hybridge_cbor::Value::map([
        (
            hybridge_cbor::Value::from(1u8),
            hybridge_cbor::Value::from(vec![1u8; 4]),
        ),
        (2u8.into(), vec![2u8; 16].into()),
        (3u8.into(), "ga".into()),
    ]));
    for (what, header) in [
        ("no client payload", None),
        ("not hex", Some("zz")),
        ("not CBOR", Some("ff")),
        ("request type dcp", Some(dcp.as_str())),
        ("link ID of 4 bytes", Some(short_link.as_str())),
        ("trailing bytes", Some(&*format!("{good}00"))),
        ("oversized", Some(&*"a0".repeat(200))),
    ] {
        assert_eq!(
            contact_raw(r.addr, &id.0, header, false).await.err(),
            Some(400),
            "{what}"
        );
    }
    // Without fido.cable, or with padding in the contact ID.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.0);
    let path = format!("/cable/contact/{b64}");
    assert_eq!(
        open(r.addr, &path, &[("X-caBLE-Client-Payload", &good)])
            .await
            .err(),
        Some(400)
    );
    let padded = format!("/cable/contact/{b64}=");
    assert_eq!(
        open(
            r.addr,
            &padded,
            &[
                ("X-caBLE-Client-Payload", &good),
                ("Sec-WebSocket-Protocol", "fido.cable")
            ]
        )
        .await
        .err(),
        Some(400)
    );
    // /cable/subscribe needs hybridge.wake (fido.cable is not it).
    assert_eq!(open(r.addr, "/cable/subscribe", &[]).await.err(), Some(400));
    assert_eq!(
        open(
            r.addr,
            "/cable/subscribe",
            &[("Sec-WebSocket-Protocol", "fido.cable")]
        )
        .await
        .err(),
        Some(400)
    );
    assert_eq!(
        r.metric("hybridge_relay_wakes_total{result=\"local\"}")
            .await,
        0.0,
        "no wake-up went out for a bad request"
    );
}

#[tokio::test]
async fn a_phone_that_never_joins_gets_the_laptop_closed_in_time() {
    let r = start(&["--contact-timeout", "1s"]).await;
    let (mut sub, id) = subscribe(r.addr, &wake_key()).await;
    let started = Instant::now();
    let (mut laptop, _) = contact(r.addr, &id, &payload(RequestType::GetAssertion), true)
        .await
        .expect("contact");
    let wake = next_wake(&mut sub).await;
    let (code, reason) = close_of(&mut laptop, T).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "the phone did not answer the wake-up in time")
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The tunnel is gone: a late phone finds nothing.
    assert_eq!(
        open(
            r.addr,
            &TunnelPathFor(&wake).path(),
            &[("Sec-WebSocket-Protocol", "fido.cable")]
        )
        .await
        .err(),
        Some(404)
    );
}

#[tokio::test]
async fn subscriptions_are_bounded_and_dead_ones_dropped() {
    let r = start(&[
        "--max-subscriptions-per-ip",
        "2",
        "--subscription-ping",
        "200ms",
        "--header-timeout",
        "1s",
    ])
    .await;
    // The per-IP limit counts subscriptions being proven too.
    // A phone that reads (and so answers pings: tungstenite pongs as it reads) stays; one
    // that stops (a client nobody reads never pongs) is dropped after two ping intervals.
    let (live, live_id) = subscribe(r.addr, &wake_key()).await;
    let (wakes_tx, mut wakes) = tokio::sync::mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let mut live = live;
        loop {
            let w = next_wake(&mut live).await;
            if wakes_tx.send(w).await.is_err() {
                return;
            }
        }
    });
    let (silent, _) = subscribe_open(r.addr).await.unwrap();
    assert_eq!(subscribe_open(r.addr).await.err(), Some(429));
    // No proof within the header timeout: closed, and the place is free again.
    let mut silent = silent;
    let (code, reason) = close_of(&mut silent, Duration::from_secs(3)).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "no subscription proof in time")
    );
    sleep(Duration::from_millis(100)).await;
    let (dead, dead_id) = subscribe(r.addr, &wake_key()).await;
    sleep(Duration::from_millis(1200)).await;
    let p = payload(RequestType::GetAssertion);
    assert_eq!(contact(r.addr, &dead_id, &p, false).await.err(), Some(410));
    drop(dead);
    let (_laptop, _) = contact(r.addr, &live_id, &p, false)
        .await
        .expect("the live subscriber is still there");
    let w = timeout(T, wakes.recv())
        .await
        .expect("in time")
        .expect("a wake");
    assert_eq!(w.client_payload, p.to_bytes());
    reader.abort();
    assert_eq!(
        r.metric("hybridge_relay_subscription_ends_total{reason=\"dead\"}")
            .await,
        1.0
    );
    assert_eq!(
        r.metric("hybridge_relay_subscription_ends_total{reason=\"proof_timeout\"}")
            .await,
        1.0
    );
    assert_eq!(
        r.metric("hybridge_relay_rejections_total{reason=\"subscriptions_per_ip\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn logs_name_no_contact_id_payload_or_tunnel_id() {
    let r = start(&["--log", "trace", "--contact-timeout", "1s"]).await;
    let key = wake_key();
    let (mut sub, id) = subscribe(r.addr, &key).await;
    let p = payload(RequestType::GetAssertion);
    let (mut laptop, _) = contact(r.addr, &id, &p, true).await.expect("contact");
    let wake = next_wake(&mut sub).await;
    let mut phone = join(r.addr, &wake).await;
    assert_eq!(next_binary(&mut laptop).await, [0]);
    exchange(&mut laptop, &mut phone, b"hello").await;
    drop((laptop, phone));
    // A refusal, a timeout and a replacement log too.
    let unknown = ContactId::of(&wake_key().public_key());
    assert_eq!(contact(r.addr, &unknown, &p, false).await.err(), Some(410));
    let (_l2, _) = contact(r.addr, &id, &p, false).await.expect("contact");
    let _ = next_wake(&mut sub).await;
    let (_again, _) = subscribe(r.addr, &key).await;
    sleep(Duration::from_millis(1500)).await;
    let log = r.log.as_ref().expect("the log file").text();
    assert!(log.contains("phone subscribed"), "the log is on:\n{log}");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let secrets = [
        ("contact ID", hex::encode(id.0)),
        ("contact ID", b64(&id.0)),
        ("other contact ID", hex::encode(unknown.0)),
        ("client payload", hex::encode(p.to_bytes())),
        ("client nonce", hex::encode(p.client_nonce)),
        ("tunnel ID", hex::encode(wake.tunnel_id.0)),
        (
            "wake public key",
            hex::encode(hybridge_proto::keys::uncompressed(&key.public_key())),
        ),
    ];
    let lower = log.to_ascii_lowercase();
    for (what, s) in secrets {
        // Any 8 consecutive bytes of it (16 hex digits) would be too much.
        let s = s.to_ascii_lowercase();
        for w in 0..s.len().saturating_sub(16) {
            assert!(
                !lower.contains(&s[w..w + 16]),
                "the log shows part of the {what}:\n{log}"
            );
        }
    }
}

//! The linked-phone client functions (`contact`, `subscribe`) against a real relay,
//! in-process on loopback.

use std::time::Duration;

use hybridge_proto::contact::ContactId;
use hybridge_proto::linking::ClientPayload;
use hybridge_proto::qr::RequestType;
use hybridge_relay::{Config, Limits, Relay};
use hybridge_websocket::{
    ConnectError, PhoneJoinError, SubscribeError, Timeouts, contact, recv, send, subscribe,
};

const T: Duration = Duration::from_secs(10);

async fn relay(limits: Limits) -> Relay {
    Relay::bind(Config {
        limits,
        ..Config::default()
    })
    .await
    .expect("relay")
}

fn key() -> p256::SecretKey {
    hybridge_proto::keys::generate(&mut rand::rngs::OsRng)
}

fn payload() -> ClientPayload {
    ClientPayload::new(
        &mut rand::rngs::OsRng,
        vec![5; 8],
        RequestType::GetAssertion,
    )
}

#[tokio::test]
async fn subscribe_contact_join_and_talk() {
    let r = relay(Limits::default()).await;
    let url = r.url();
    let wake_key = key();
    let mut sub = subscribe(&url, &wake_key, None, Timeouts::default())
        .await
        .expect("subscribed");
    assert_eq!(sub.contact_id(), ContactId::of(&wake_key.public_key()));
    let p = payload();
    let mut laptop = contact(
        &url,
        &sub.contact_id().0,
        &p,
        true,
        None,
        Timeouts::default(),
    )
    .await
    .expect("contacted");
    assert!(laptop.signal, "the relay echoes the signal header");
    let wake = tokio::time::timeout(T, sub.next_wake())
        .await
        .expect("in time")
        .expect("a wake-up");
    assert_eq!(wake.client_payload().unwrap(), p);
    assert_eq!(wake.routing_id, r.routing_id());
    let (mut phone, _) = hybridge_websocket::connect(&wake.tunnel_path().to_url(&url), None)
        .await
        .expect("the phone joins");
    laptop.phone_joined(T).await.expect("the connect signal");
    send(&mut laptop.ws, b"msg1".to_vec()).await.unwrap();
    assert_eq!(recv(&mut phone).await.unwrap().unwrap(), b"msg1");
    send(&mut phone, b"msg2".to_vec()).await.unwrap();
    assert_eq!(recv(&mut laptop.ws).await.unwrap().unwrap(), b"msg2");

    // Without the signal, phone_joined says there is none to wait for.
    let mut quiet = contact(
        &url,
        &sub.contact_id().0,
        &p,
        false,
        None,
        Timeouts::default(),
    )
    .await
    .expect("contacted");
    assert!(!quiet.signal);
    assert!(matches!(
        quiet.phone_joined(T).await,
        Err(PhoneJoinError::NoSignal)
    ));
}

#[tokio::test]
async fn an_unknown_contact_is_gone_and_says_so() {
    let r = relay(Limits::default()).await;
    let err = contact(
        &r.url(),
        &ContactId::of(&key().public_key()).0,
        &payload(),
        true,
        None,
        Timeouts::default(),
    )
    .await
    .expect_err("nobody subscribed");
    assert!(matches!(err, ConnectError::Gone), "{err:?}");
    assert!(err.to_string().contains("phone is unreachable"), "{err}");
}

#[tokio::test]
async fn a_second_subscription_replaces_the_first_and_shutdown_closes() {
    let r = relay(Limits::default()).await;
    let url = r.url();
    let k = key();
    let mut first = subscribe(&url, &k, None, Timeouts::default())
        .await
        .unwrap();
    let mut second = subscribe(&url, &k, None, Timeouts::default())
        .await
        .unwrap();
    let err = tokio::time::timeout(T, first.next_wake())
        .await
        .expect("in time")
        .expect_err("replaced");
    assert!(matches!(err, SubscribeError::Replaced), "{err:?}");
    let handle = r.handle();
    let stop = tokio::spawn(async move { handle.shutdown(Duration::from_millis(100)).await });
    let err = tokio::time::timeout(T, second.next_wake())
        .await
        .expect("in time")
        .expect_err("the relay stops");
    assert!(
        matches!(
            &err,
            SubscribeError::Closed {
                code: Some(1001),
                ..
            }
        ),
        "{err:?}"
    );
    stop.await.unwrap();
}

#[tokio::test]
async fn the_laptop_hears_why_when_the_phone_never_joins() {
    let r = relay(Limits {
        contact_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let sub = subscribe(&r.url(), &key(), None, Timeouts::default())
        .await
        .unwrap();
    let mut laptop = contact(
        &r.url(),
        &sub.contact_id().0,
        &payload(),
        true,
        None,
        Timeouts::default(),
    )
    .await
    .unwrap();
    let err = laptop.phone_joined(T).await.expect_err("no phone");
    match err {
        PhoneJoinError::Closed { code, reason } => {
            assert_eq!(code, Some(1008));
            assert_eq!(reason, "the phone did not answer the wake-up in time");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_silent_relay_times_out_each_step() {
    // Accepts TCP and says nothing: the upgrade times out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let quick = Timeouts {
        open: Duration::from_millis(300),
        ..Timeouts::default()
    };
    let err = subscribe(&format!("ws://{addr}"), &key(), None, quick)
        .await
        .expect_err("silent");
    assert!(
        matches!(err, SubscribeError::Connect(ConnectError::Timeout(_))),
        "{err:?}"
    );
    let err = contact(
        &format!("ws://{addr}"),
        &[1; 32],
        &payload(),
        false,
        None,
        quick,
    )
    .await
    .expect_err("silent");
    assert!(matches!(err, ConnectError::Timeout(_)), "{err:?}");
    hold.abort();
    // A relay that subscribes the phone and then goes silent (no pings: interval long) is
    // taken for dead after `idle`.
    let r = relay(Limits {
        subscription_ping_interval: Duration::from_secs(3600),
        ..Limits::default()
    })
    .await;
    let mut sub = subscribe(
        &r.url(),
        &key(),
        None,
        Timeouts {
            idle: Duration::from_millis(300),
            ..Timeouts::default()
        },
    )
    .await
    .unwrap();
    let err = sub.next_wake().await.expect_err("silent");
    assert!(matches!(err, SubscribeError::Silent(_)), "{err:?}");
}

//! Ceremony latency: the time from the phone getting the QR code to the laptop having the
//! response JSON, over loopback (an in-process relay on 127.0.0.1, the UDP radio on
//! 127.0.0.1), with the user's approval automatic (AutoApprove) so only the machinery is
//! measured. Prints p50/p90/p99 for registration and sign-in.
//!
//! Run: `cargo bench -p hybridge-tests --bench ceremony` (BENCH_ITERS=N, default 200).
//!
//! Measured on the two-core build machine (release, 200 iterations each): register p50 3.3 ms,
//! p99 7.4 ms; sign-in p50 3.4 ms, p99 8.0 ms (target: under 50 ms).

use std::time::{Duration, Instant};

use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
use hybridge_authenticator::phone::{self, PhoneEvents, QrInput};
use hybridge_authenticator::store::MemoryStore;
use hybridge_authenticator::user::AutoApprove;
use hybridge_ble::RadioSpec;
use hybridge_client::session::{self, Ceremony, Events, LaptopConfig, Prepared, RelayOverrides};
use hybridge_client::webauthn::{Assertion, Registration};
use hybridge_relay::{Config, Limits, Relay};
use hybridge_tests::rp::{ORIGIN, Rp};

type Phone = phone::Phone<Authenticator<MemoryStore, AutoApprove>>;

/// One ceremony: the laptop prepares `prepared` and shows its QR code, the phone takes it
/// (the clock starts) and serves, the laptop "prints" the response JSON (the clock stops).
async fn once<C: Ceremony>(
    relay: &str,
    phone: &Phone,
    prepared: Prepared<C>,
    to_json: fn(&C::Response) -> serde_json::Value,
) -> Duration {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let laptop_radio: RadioSpec = format!("udp:127.0.0.1:{port}").parse().expect("spec");
    let phone_radio: RadioSpec = format!("udp:127.0.0.1:{port},interval=20ms")
        .parse()
        .expect("spec");
    let scanner = laptop_radio.scanner().await.expect("scanner");
    let advertiser = phone_radio.advertiser().await.expect("advertiser");
    let url = prepared.qr_url().expect("a QR ceremony has a QR code");
    let phone = phone.clone().relay(relay);
    let phone_task = tokio::spawn(async move {
        let got_qr = Instant::now();
        let r = phone
            .serve(&QrInput::Text(url), &*advertiser, &PhoneEvents::none())
            .await;
        r.expect("phone session");
        got_qr
    });
    let response = prepared
        .run(&*scanner, &Events::none())
        .await
        .expect("the ceremony");
    // "Printing" the response: serialising it for stdout.
    let printed = serde_json::to_string(&to_json(&response)).expect("JSON");
    let done = Instant::now();
    assert!(!printed.is_empty());
    let got_qr = phone_task.await.expect("phone task");
    done.duration_since(got_qr)
}

/// Linked sign-ins: one QR registration links the phone, which then stays subscribed for
/// wake-ups; each sample is a sign-in with no QR code, from the laptop starting (what
/// `hybridge sign-in --phone NAME` does first) to the response JSON.
async fn linked_sign_ins(relay: &str, rp: &Rp, iters: usize) -> Vec<Duration> {
    use hybridge_authenticator::phone::LinkIdentity;
    use hybridge_authenticator::store::{FileStore, KdfParams};
    use hybridge_client::session::ws;
    use hybridge_client::webauthn::{Origin, RequestOptions};
    use hybridge_proto::session::LinkedPhone;

    let dir = std::env::temp_dir().join(format!("hybridge-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store =
        FileStore::create(dir.join("store"), "1234", KdfParams::insecure_for_tests()).unwrap();
    let identity = LinkIdentity::from_state(&store.ensure_linking().unwrap(), "bench").unwrap();
    let phone: Phone = phone::Phone::new(Authenticator::new(
        MemoryStore::new(),
        AutoApprove,
        SystemClock,
        rand_core::OsRng,
    ))
    .relay(relay)
    .linking(identity.clone());
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let scanner = format!("udp:127.0.0.1:{port}")
        .parse::<RadioSpec>()
        .unwrap()
        .scanner()
        .await
        .unwrap();
    let advertiser = format!("udp:127.0.0.1:{port},interval=20ms")
        .parse::<RadioSpec>()
        .unwrap()
        .advertiser()
        .await
        .unwrap();
    let laptop = LaptopConfig {
        relays: RelayOverrides::all(relay),
        supports_linking: true,
        ..LaptopConfig::default()
    };
    // Link by QR code.
    let (options, _) = rp.creation_options("linked");
    let prepared = session::register(&options, ORIGIN, &laptop).unwrap();
    let url = prepared.qr_url().unwrap();
    let qr_phone = phone.clone();
    let qr_advertiser = format!("udp:127.0.0.1:{port},interval=20ms")
        .parse::<RadioSpec>()
        .unwrap()
        .advertiser()
        .await
        .unwrap();
    let served = tokio::spawn(async move {
        qr_phone
            .serve(&QrInput::Text(url), &*qr_advertiser, &PhoneEvents::none())
            .await
    });
    let (_, closing) = prepared
        .run_linking(&*scanner, &Events::none())
        .await
        .unwrap();
    let end = closing.finish(&Events::none()).await;
    served.await.unwrap().unwrap();
    let stored = LinkedPhone::from_linking(&end.linking.expect("linked"), 0);
    // The phone waits for wake-ups and serves every link (the bench does not revoke).
    let mut sub = ws::subscribe(
        relay,
        identity.wake_key(),
        None,
        ws::linked::Timeouts::default(),
    )
    .await
    .unwrap();
    let server = tokio::spawn(async move {
        while let Ok(wake) = sub.next_wake().await {
            let _ = phone
                .serve_linked(&wake, &|_| true, &*advertiser, &PhoneEvents::none())
                .await;
        }
    });
    let (options, _) = rp.request_options(Vec::new());
    let origin = Origin::parse(ORIGIN).unwrap();
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        let options = RequestOptions::from_json(&options, &origin).unwrap();
        let response = Prepared::linked(options, &laptop, stored.clone())
            .run(&*scanner, &Events::none())
            .await
            .expect("linked sign-in");
        let printed = serde_json::to_string(&Assertion::to_json(&response)).unwrap();
        assert!(!printed.is_empty());
        samples.push(start.elapsed());
    }
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    samples
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "{name:>12}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let relay = Relay::bind(Config {
            limits: Limits {
                rate_per_ip: 0.0,
                ..Limits::default()
            },
            ..Config::default()
        })
        .await
        .expect("relay");
        let url = relay.url();
        let rp = Rp::new();
        let phone: Phone = phone::Phone::new(Authenticator::new(
            MemoryStore::new(),
            AutoApprove,
            SystemClock,
            rand_core::OsRng,
        ));
        // Warm up, and keep one credential to sign in with.
        let laptop = LaptopConfig {
            relays: RelayOverrides::all(&url),
            ..LaptopConfig::default()
        };
        let register = |options: &str| session::register(options, ORIGIN, &laptop).expect("options");
        let (options, _) = rp.creation_options("bench");
        let _ = once(&url, &phone, register(&options), Registration::to_json).await;
        let mut reg = Vec::with_capacity(iters);
        for i in 0..iters {
            let (options, _) = rp.creation_options(&format!("bench{i}"));
            reg.push(once(&url, &phone, register(&options), Registration::to_json).await);
        }
        let (options, _) = rp.request_options(Vec::new());
        let mut get = Vec::with_capacity(iters);
        for _ in 0..iters {
            let prepared = session::sign_in(&options, ORIGIN, &laptop).expect("options");
            get.push(once(&url, &phone, prepared, Assertion::to_json).await);
        }
        let linked = linked_sign_ins(&url, &rp, iters).await;
        println!("ceremony latency, phone gets the QR code -> laptop has the response JSON (loopback, AutoApprove):");
        report("register", reg);
        report("sign-in", get);
        println!("linked sign-in, `sign-in --phone` starts -> laptop has the response JSON (no QR code; the relay wakes the phone):");
        report("linked", linked);
        relay.shutdown(Duration::from_secs(1)).await;
    });
}

//! Radios end to end: UDP over loopback, the memory bus, and BlueZ failing cleanly on a
//! machine without Bluetooth.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hybridge_ble::bluez::{BluezAdvertiser, BluezScanner};
use hybridge_ble::udp::{UdpAdvertiser, UdpScanner};
use hybridge_ble::{
    Advertiser, CABLE_UUIDS, Error, MemoryRadio, RadioSpec, Scanner, UUID_FIDO, UUID_GOOGLE,
};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(5);

fn advert(tag: u8) -> Vec<u8> {
    (0..20).map(|i| i ^ tag).collect()
}

async fn udp_scan() -> (hybridge_ble::Scan, SocketAddr) {
    let scan = UdpScanner::new("127.0.0.1:0".parse().unwrap())
        .scan(&CABLE_UUIDS)
        .await
        .unwrap();
    let addr = scan.local_addr().unwrap();
    (scan, addr)
}

#[tokio::test]
async fn udp_round_trip_delivers_repeats() {
    let (mut scan, addr) = udp_scan().await;
    let advertiser = UdpAdvertiser::new(addr).with_interval(Duration::from_millis(10));
    let handle = advertiser.advertise(UUID_FIDO, &advert(1)).await.unwrap();
    // Another service's advert on the same radio is filtered out.
    let other = advertiser.advertise(0x1234, &advert(2)).await.unwrap();

    for _ in 0..3 {
        let adv = scan.next_timeout(WAIT).await.unwrap();
        assert_eq!(adv.uuid16, UUID_FIDO);
        assert_eq!(adv.service_data, advert(1));
        let from: SocketAddr = adv.address.unwrap().parse().unwrap();
        assert!(from.ip().is_loopback());
    }
    assert!(handle.sent() >= 3);
    assert!(handle.is_active());
    handle.stop().await.unwrap();
    other.stop().await.unwrap();
    let stats = scan.stats();
    assert!(stats.filtered >= 1, "{stats:?}");
    assert_eq!(stats.malformed, 0);
    scan.stop().await.unwrap();
}

#[tokio::test]
async fn udp_ipv6_round_trip() {
    let Ok(mut scan) = UdpScanner::new("[::1]:0".parse().unwrap())
        .scan(&CABLE_UUIDS)
        .await
    else {
        hybridge_testkit::missing(
            "udp_ipv6_round_trip",
            "an IPv6 loopback address (::1)",
            "enable IPv6 (sysctl net.ipv6.conf.lo.disable_ipv6=0)",
        );
        return;
    };
    let addr = scan.local_addr().unwrap();
    let spec: RadioSpec = format!("udp:{addr},interval=10ms").parse().unwrap();
    let handle = spec
        .advertiser()
        .await
        .unwrap()
        .advertise(UUID_GOOGLE, &advert(9))
        .await
        .unwrap();
    let adv = scan.next_timeout(WAIT).await.unwrap();
    assert_eq!((adv.uuid16, adv.service_data), (UUID_GOOGLE, advert(9)));
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn udp_accepts_both_cable_uuids_and_injected_text() {
    let (mut scan, addr) = udp_scan().await;
    let tool = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // What another tool would send by hand, trailing newline included.
    tool.send_to(b"ADV fde2 0102030405\n", addr).await.unwrap();
    let adv = scan.next_timeout(WAIT).await.unwrap();
    assert_eq!(adv.uuid16, UUID_GOOGLE);
    assert_eq!(adv.service_data, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn udp_malformed_datagrams_are_ignored() {
    let (mut scan, addr) = udp_scan().await;
    let tool = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for bad in [
        &b"hello"[..],
        b"ADV fff9 0",
        b"ADV fff9 zz",
        b"ADV ff 00",
        b"",
        &[0xff; 1500][..],
    ] {
        tool.send_to(bad, addr).await.unwrap();
    }
    tool.send_to(b"ADV fff9 aa55", addr).await.unwrap();
    let adv = scan.next_timeout(WAIT).await.unwrap();
    assert_eq!(adv.service_data, [0xaa, 0x55]);
    assert_eq!(scan.stats().malformed, 6);
    assert_eq!(scan.stats().delivered, 1);
    assert!(scan.try_next().is_none());
}

/// Receives datagrams until none arrives for `quiet`; returns how many arrived.
async fn drain(socket: &UdpSocket, quiet: Duration) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Ok(r) = tokio::time::timeout(quiet, socket.recv_from(&mut buf)).await {
        r.unwrap();
        n += 1;
        assert!(n < 100, "datagrams keep coming");
    }
    n
}

#[tokio::test]
async fn stopping_an_advertiser_stops_datagrams() {
    let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let advertiser = UdpAdvertiser::new(addr).with_interval(Duration::from_millis(10));

    // Explicit stop: once it returns, nothing more is sent.
    let handle = advertiser.advertise(UUID_FIDO, &advert(3)).await.unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        let (len, _) = tokio::time::timeout(WAIT, listener.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert_eq!(text, format!("ADV fff9 {}", hex(&advert(3))));
    }
    handle.stop().await.unwrap();
    let mut buf_now = [0u8; 2048];
    while listener.try_recv_from(&mut buf_now).is_ok() {}
    assert_eq!(drain(&listener, Duration::from_millis(300)).await, 0);

    // Drop: stops too (in the background, so allow what was already on its way).
    let handle = advertiser.advertise(UUID_FIDO, &advert(4)).await.unwrap();
    tokio::time::timeout(WAIT, listener.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    drop(handle);
    drain(&listener, Duration::from_millis(100)).await;
    assert_eq!(drain(&listener, Duration::from_millis(300)).await, 0);
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn udp_broadcast_round_trip() {
    // 127.255.255.255 is the loopback network's broadcast address (Linux's local routing
    // table): sending there fails with EACCES unless SO_BROADCAST is set. The same spec on
    // both sides works: the scanner binds the broadcast address itself.
    let laptop: RadioSpec = "udp:127.255.255.255:0".parse().unwrap();
    let mut scan = laptop
        .scanner()
        .await
        .unwrap()
        .scan(&CABLE_UUIDS)
        .await
        .unwrap();
    let port = scan.local_addr().unwrap().port();
    let spec: RadioSpec = format!("udp:127.255.255.255:{port},interval=10ms")
        .parse()
        .unwrap();
    let handle = spec
        .advertiser()
        .await
        .unwrap()
        .advertise(UUID_FIDO, &advert(5))
        .await
        .unwrap();
    let adv = scan.next_timeout(WAIT).await.unwrap();
    assert_eq!(adv.service_data, advert(5));
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn udp_scanner_reports_bind_errors() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = UdpScanner::new(addr).scan(&CABLE_UUIDS).await.unwrap_err();
    assert!(matches!(err, Error::Udp { action: "bind", .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()));
}

#[tokio::test]
async fn too_long_service_data_is_refused() {
    let radio = MemoryRadio::new();
    let err = radio.advertise(UUID_FIDO, &[0; 253]).await.unwrap_err();
    assert!(matches!(err, Error::ServiceDataTooLong { len: 253, .. }));
}

#[tokio::test]
async fn memory_radio_round_trip() {
    let radio = MemoryRadio::new().with_interval(Duration::from_millis(10));
    let mut early = radio.scan(&CABLE_UUIDS).await.unwrap();
    let handle = radio.advertise(UUID_GOOGLE, &advert(6)).await.unwrap();
    for _ in 0..2 {
        let adv = early.next_timeout(WAIT).await.unwrap();
        assert_eq!((adv.uuid16, adv.service_data), (UUID_GOOGLE, advert(6)));
    }
    // A scanner that starts after the advert began still hears its repeats.
    let mut late = radio.clone().scan(&[UUID_GOOGLE]).await.unwrap();
    assert_eq!(
        late.next_timeout(WAIT).await.unwrap().service_data,
        advert(6)
    );
    // A scanner for another UUID hears nothing.
    let mut deaf = radio.scan(&[UUID_FIDO]).await.unwrap();
    assert!(matches!(
        deaf.next_timeout(Duration::from_millis(100)).await,
        Err(Error::ScanTimeout(_))
    ));
    assert_eq!(radio.scanner_count(), 3);

    handle.stop().await.unwrap();
    // What was sent before the stop may still be on its way through the bus: let it arrive,
    // then the radio must stay silent.
    for _ in 0..50 {
        if late.next_timeout(Duration::from_millis(100)).await.is_err() {
            break;
        }
    }
    assert!(matches!(
        late.next_timeout(Duration::from_millis(300)).await,
        Err(Error::ScanTimeout(_))
    ));
    early.stop().await.unwrap();
    drop(deaf);
    late.stop().await.unwrap();
    eventually(|| radio.scanner_count() == 0).await;
}

/// Waits (at most [`WAIT`]) until `condition` holds.
async fn eventually(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn memory_scan_is_a_bounded_stream() {
    use futures_util::StreamExt;
    let radio = MemoryRadio::new()
        .with_interval(Duration::from_millis(1))
        .with_capacity(4);
    let mut scan = radio.scan(&CABLE_UUIDS).await.unwrap();
    let _handle = radio.advertise(UUID_FIDO, &advert(7)).await.unwrap();
    // The consumer is away: only 4 are kept, the rest dropped and counted.
    eventually(|| scan.stats().dropped > 0).await;
    let stats = scan.stats();
    assert_eq!(stats.delivered, 4, "{stats:?}");
    assert!(stats.dropped > 0, "{stats:?}");
    let first = tokio::time::timeout(WAIT, scan.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.service_data, advert(7));
    let adv = tokio::time::timeout(WAIT, StreamExt::next(&mut scan))
        .await
        .unwrap();
    assert!(adv.is_some());
}

#[tokio::test]
async fn radio_spec_selects_radios() {
    let memory: RadioSpec = "memory,interval=10ms".parse().unwrap();
    let mut scan = memory
        .scanner()
        .await
        .unwrap()
        .scan(&CABLE_UUIDS)
        .await
        .unwrap();
    let handle = memory
        .advertiser()
        .await
        .unwrap()
        .advertise(UUID_FIDO, &advert(8))
        .await
        .unwrap();
    assert_eq!(scan.radio(), "memory");
    assert_eq!(handle.radio(), "memory");
    // The global bus is shared with other tests in this binary: look for our advert.
    let deadline = Instant::now() + WAIT;
    loop {
        let adv = scan.next_timeout(WAIT).await.unwrap();
        if adv.service_data == advert(8) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    handle.stop().await.unwrap();

    let err = "udp:nowhere".parse::<RadioSpec>().unwrap_err();
    assert!(
        err.to_string().starts_with("invalid radio \"udp:nowhere\""),
        "{err}"
    );
}

// --- BlueZ on a machine without Bluetooth -------------------------------------------------

fn no_system_bus() -> bool {
    std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_none()
        && !Path::new("/run/dbus/system_bus_socket").exists()
        && !Path::new("/var/run/dbus/system_bus_socket").exists()
}

/// Both BlueZ backends fail with the clear error, within the connect timeout (plus slack).
async fn assert_bluez_fails_cleanly(connect_timeout: Duration, expect_unavailable: bool) {
    let started = Instant::now();
    let bound = connect_timeout + Duration::from_secs(3);
    let scanner = tokio::time::timeout(bound, BluezScanner::open(None, connect_timeout))
        .await
        .expect("BlueZ scanner open hung");
    let advertiser = tokio::time::timeout(bound, BluezAdvertiser::open(None, connect_timeout))
        .await
        .expect("bluer advertiser open hung");
    let spec: RadioSpec = format!("bluez:hci0,timeout={}ms", connect_timeout.as_millis())
        .parse()
        .unwrap();
    let via_spec = tokio::time::timeout(bound, spec.scanner())
        .await
        .expect("RadioSpec scanner hung");
    assert!(started.elapsed() < 3 * bound);

    for result in [
        scanner.map(|_| ()),
        advertiser.map(|_| ()),
        via_spec.map(|_| ()),
    ] {
        match result {
            Err(err @ Error::BluezUnavailable { .. }) => {
                let text = err.to_string();
                eprintln!("{text}");
                assert!(
                    text.starts_with("BlueZ (bluetoothd) is not running or D-Bus is unavailable"),
                    "{text}"
                );
            }
            Err(err @ Error::NoAdapter { .. }) if !expect_unavailable => {
                assert!(err.to_string().starts_with("no Bluetooth adapter found"));
            }
            Err(Error::Unsupported(_)) if !cfg!(target_os = "linux") => {}
            // A machine with real Bluetooth: nothing to check.
            Ok(()) if !expect_unavailable => {}
            Err(other) => panic!("unexpected error: {other}"),
            Ok(()) => panic!("BlueZ radio opened on a machine without Bluetooth"),
        }
    }
}

#[tokio::test]
async fn bluez_without_bluetooth_fails_cleanly() {
    assert_bluez_fails_cleanly(Duration::from_secs(3), no_system_bus()).await;
}

#[test]
fn no_adapter_message_is_clear() {
    let err = Error::NoAdapter { wanted: None };
    assert!(err.to_string().starts_with("no Bluetooth adapter found: "));
    let err = Error::NoAdapter {
        wanted: Some("hci1".into()),
    };
    assert!(
        err.to_string()
            .starts_with("no Bluetooth adapter found named \"hci1\"")
    );
}

/// Runs `child` (an ignored test in this binary) with the system bus pointed at `address`.
/// Its output is shown only if it fails.
fn run_child(child: &str, address: &str, limit: Duration) {
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            child,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .env("HYBRIDGE_BLE_CHILD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = process.kill();
            let _ = process.wait();
            panic!("{child} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = process.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "{child} failed: {status}\n{text}");
    assert!(text.contains("1 passed"), "{child} did not run:\n{text}");
}

/// Child of `bluez_with_dbus_but_no_bluetoothd`: a real bus without BlueZ on it.
#[test]
#[ignore = "run by bluez_with_dbus_but_no_bluetoothd"]
fn child_dbus_without_bluez() {
    if std::env::var_os("HYBRIDGE_BLE_CHILD").is_none() {
        return;
    }
    child_runtime(|| assert_bluez_fails_cleanly(Duration::from_secs(3), true));
}

/// Child of `bluez_with_unresponsive_dbus_times_out`: a socket that never answers.
#[test]
#[ignore = "run by bluez_with_unresponsive_dbus_times_out"]
fn child_unresponsive_dbus() {
    if std::env::var_os("HYBRIDGE_BLE_CHILD").is_none() {
        return;
    }
    child_runtime(|| assert_bluez_fails_cleanly(Duration::from_secs(1), true));
}

/// Runs `test` on both runtime flavours: the connect thread must work with either.
fn child_runtime<F: std::future::Future<Output = ()>>(test: impl Fn() -> F) {
    for multi_thread in [false, true] {
        let mut builder = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        let runtime = builder.worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(test());
        // A connect still stuck inside libdbus must not keep the process alive.
        runtime.shutdown_background();
    }
}

#[test]
fn bluez_with_dbus_but_no_bluetoothd() {
    let dir = tempdir().expect("a temporary directory");
    let socket = dir.join("bus");
    let daemon = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile"])
        .arg(format!("--address=unix:path={}", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut daemon) = daemon else {
        hybridge_testkit::missing(
            "bluez_with_dbus_but_no_bluetoothd",
            "dbus-daemon",
            "apt-get install dbus-daemon",
        );
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let address = format!("unix:path={}", socket.display());
    let result = std::panic::catch_unwind(|| {
        run_child(
            "child_dbus_without_bluez",
            &address,
            Duration::from_secs(30),
        )
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn bluez_with_unresponsive_dbus_times_out() {
    let dir = tempdir().expect("a temporary directory");
    let socket = dir.join("bus");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Accept connections and never answer, like a wedged daemon.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let address = format!("unix:path={}", socket.display());
    run_child("child_unresponsive_dbus", &address, Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "hybridge-ble-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

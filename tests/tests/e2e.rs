//! End to end, with real processes over real sockets: the `hybridge-relay` binary,
//! `hybridge phone` and `hybridge register` / `hybridge sign-in`, the BLE advert carried by
//! the UDP radio, and an independent relying party (webauthn-rs-core) that issues the options
//! and verifies both responses. Then the same across three network namespaces, and the ways
//! it must fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hybridge_testkit::{have_command, missing};
use hybridge_tests::netns::{self, Lab};
use hybridge_tests::proc::{Proc, RelayProc};
use hybridge_tests::proxy::BitFlipProxy;
use hybridge_tests::rp::{ORIGIN, Rp};
use hybridge_tests::{
    TempDir, closed_tcp_port, free_udp_port, hybridge, hybridge_command, is_root, relay_bin,
};

/// The same ceremonies over real BlueZ, in the VM tier (`tests/vm/run.sh`); ignored elsewhere.
#[path = "e2e/vm.rs"]
mod vm;

/// Limit on any one process; generous, for a loaded two-core machine.
const T: Duration = Duration::from_secs(90);
const PIN: &str = "2468";

/// Exit codes of `hybridge` (see its --help).
const EXIT_INVALID_INPUT: i32 = 1;
const EXIT_TIMEOUT: i32 = 3;
const EXIT_NOT_ALLOWED: i32 = 4;
const EXIT_NETWORK: i32 = 5;
const EXIT_SECURITY: i32 = 6;
const EXIT_PROTOCOL: i32 = 7;
const EXIT_STORE: i32 = 9;
const EXIT_INTERRUPTED: i32 = 130;
const EXIT_TERMINATED: i32 = 143;

/// One phone's store and PIN file, and where the options files go.
struct Phone {
    dir: TempDir,
}

impl Phone {
    fn new(name: &str) -> Phone {
        let dir = TempDir::new(name);
        std::fs::write(dir.path("pin"), format!("{PIN}\n")).unwrap();
        Phone { dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.path("passkeys.hbk")
    }

    fn pin_file(&self) -> PathBuf {
        self.dir.path("pin")
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

/// `hybridge register|sign-in` with a UDP radio and a relay override, started from `base`
/// (the binary, possibly inside a namespace).
fn laptop(
    mut base: Command,
    ceremony: &str,
    options: &Path,
    ble: &str,
    relay: &str,
    extra: &[&str],
) -> Proc {
    base.arg(ceremony)
        .arg("--options")
        .arg(options)
        .args(["--origin", ORIGIN, "--ble", ble, "--relay", relay])
        .args(extra);
    if !extra.contains(&"--scan-timeout") {
        base.args(["--scan-timeout", "45s"]);
    }
    Proc::spawn(&format!("laptop {ceremony}"), base)
}

/// `hybridge phone` for this QR code, given on standard input as the README does, approving
/// with the PIN file unless `extra` says otherwise.
fn phone(mut base: Command, p: &Phone, qr: &str, ble: &str, relay: &str, extra: &[&str]) -> Proc {
    base.args(["phone", "--qr", "-", "--relay", relay, "--ble", ble])
        .arg("--store")
        .arg(p.store())
        .arg("--pin-file")
        .arg(p.pin_file())
        .args(extra);
    Proc::spawn_with_input("phone", base, Some(format!("{qr}\n").as_bytes()))
}

/// The `FIDO:/` line the laptop printed under its QR code.
fn qr_of(laptop: &Proc) -> String {
    laptop
        .wait_stderr(T, |l| l.starts_with("FIDO:/"))
        .unwrap_or_else(|| panic!("the laptop showed no QR code\n{}", laptop.dump()))
}

fn local_laptop(ceremony: &str, options: &Path, port: u16, relay: &str, extra: &[&str]) -> Proc {
    laptop(
        hybridge_command(),
        ceremony,
        options,
        &format!("udp:127.0.0.1:{port}"),
        relay,
        extra,
    )
}

fn local_phone(p: &Phone, qr: &str, port: u16, relay: &str, extra: &[&str]) -> Proc {
    phone(
        hybridge_command(),
        p,
        qr,
        &format!("udp:127.0.0.1:{port},interval=20ms"),
        relay,
        extra,
    )
}

fn expect_code(proc: &mut Proc, code: i32) {
    let got = proc.code(T);
    assert_eq!(got, code, "unexpected exit code\n{}", proc.dump());
}

/// One ceremony on loopback; returns the laptop's stdout (the response JSON).
/// With `photo`, the laptop also writes the QR code as a PNG and the phone reads that image.
fn ceremony_local(
    ceremony: &str,
    p: &Phone,
    options: &str,
    relay: &RelayProc,
    photo: bool,
) -> String {
    let opts = p.file(&format!("{ceremony}.json"), options);
    let port = free_udp_port();
    let png = p.dir.path(&format!("{ceremony}-qr.png"));
    let png_arg = png.to_str().unwrap();
    let qr_out: &[&str] = if photo { &["--qr-out", png_arg] } else { &[] };
    let mut l = local_laptop(ceremony, &opts, port, &relay.url(), qr_out);
    let qr = qr_of(&l);
    let mut ph = if photo {
        // As big as a camera's photo: over the 1 MiB that other inputs may have.
        let big = p.dir.path(&format!("{ceremony}-qr-photo.png"));
        let png = std::fs::read(&png).expect("the laptop wrote the QR code");
        std::fs::write(&big, png_with_padding(&png, 3 << 20)).unwrap();
        let mut base = hybridge_command();
        base.arg("phone")
            .arg("--qr-image")
            .arg(&big)
            .args(["--relay", &relay.url()])
            .arg("--ble")
            .arg(format!("udp:127.0.0.1:{port},interval=20ms"))
            .arg("--store")
            .arg(p.store())
            .arg("--pin-file")
            .arg(p.pin_file())
            .arg("--yes");
        Proc::spawn("phone", base)
    } else {
        local_phone(p, &qr, port, &relay.url(), &["--yes"])
    };
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    l.stdout()
}

/// The laptop's QR code offers linking; this phone does not link. The response is printed
/// first, the laptop then waits for a late link, and that wait ends when the phone closes,
/// not after three minutes.
#[test]
fn a_laptop_offering_a_link_to_a_phone_that_declines_it_prints_and_ends_promptly() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("no-link");
    let (options, state) = rp.creation_options("nolink");
    let opts = p.file("register.json", &options);
    let phones = p.dir.path("phones.json");
    let port = free_udp_port();
    let started = Instant::now();
    let mut l = local_laptop(
        "register",
        &opts,
        port,
        &relay.url(),
        &["--phones", phones.to_str().unwrap()],
    );
    let qr = qr_of(&l);
    let mut ph = local_phone(&p, &qr, port, &relay.url(), &["--yes", "--no-link"]);
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    assert!(started.elapsed() < Duration::from_secs(60), "{}", l.dump());
    rp.verify_registration(&l.stdout(), &state)
        .expect("the RP accepts the registration");
    assert!(
        l.stderr()
            .contains("waiting up to 180 s for the phone to send its link"),
        "{}",
        l.dump()
    );
    assert!(!l.stderr().contains("linked phone"), "{}", l.dump());
    // Nothing was stored: the phones file lists no phone.
    let listed = hybridge_json(&[
        "phones",
        "list",
        "--json",
        "--phones",
        phones.to_str().unwrap(),
    ]);
    assert_eq!(listed, serde_json::json!([]), "{listed}");
}

fn hybridge_json(args: &[&str]) -> serde_json::Value {
    let out = hybridge_command()
        .args(args)
        .output()
        .expect("run hybridge");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn register_and_sign_in_as_separate_processes_verified_by_an_independent_rp() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("loopback");

    let (options, state) = rp.creation_options("alice");
    let out = ceremony_local("register", &p, &options, &relay, false);
    let credential = rp
        .verify_registration(&out, &state)
        .expect("the RP accepts the registration");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["response"]["transports"],
        serde_json::json!(["hybrid"])
    );
    assert_eq!(json["authenticatorAttachment"], "cross-platform");

    let (options, state) = rp.request_options(vec![credential.clone()]);
    // This time the phone reads a photo of the QR code.
    let out = ceremony_local("sign-in", &p, &options, &relay, true);
    let result = rp
        .verify_assertion(&out, &state)
        .expect("the RP accepts the assertion");
    assert!(result.user_verified());

    // The passkey is in the phone's store; rename and delete work through the CLI.
    let store = p.store();
    let store = store.to_str().unwrap();
    let pin = p.pin_file();
    let pin = pin.to_str().unwrap();
    let wrong = p.file("wrong-pin", "1357");
    let out = hybridge_command()
        .args(["passkeys", "list", "--store", store, "--pin-file"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9), "a wrong PIN is exit code 9");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong PIN"));
    let list = hybridge_json(&["passkeys", "list", "--store", store, "--pin-file", pin]);
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["rp_id"], "example.com");
    assert_eq!(list[0]["user_name"], "alice");
    assert_eq!(list[0]["discoverable"], true);
    assert!(
        list[0]["last_used"].is_string(),
        "the sign-in was recorded: {list:?}"
    );
    let id = list[0]["credential_id"].as_str().unwrap().to_owned();
    let renamed = hybridge_json(&[
        "passkeys",
        "rename",
        "--store",
        store,
        "--pin-file",
        pin,
        &id[..8],
        "Alice (work)",
    ]);
    assert_eq!(renamed["display_name"], "Alice (work)");
    let deleted = hybridge_json(&[
        "passkeys",
        "delete",
        "--store",
        store,
        "--pin-file",
        pin,
        &id,
    ]);
    assert_eq!(deleted["deleted"], id.as_str());
    let list = hybridge_json(&["passkeys", "list", "--store", store, "--pin-file", pin]);
    assert_eq!(list, serde_json::json!([]));
}

#[test]
fn two_machines_in_network_namespaces() {
    let test = "two_machines_in_network_namespaces";
    if !is_root() {
        missing(
            test,
            "root, for network namespaces",
            "run the tests as root, as CI does",
        );
        return;
    }
    if !have_command("ip", &["-V"]) {
        missing(test, "`ip` (iproute2)", "apt-get install iproute2");
        return;
    }
    // Build first, outside the namespaces.
    let hy = hybridge();
    let relay_path = relay_bin();
    let lab = Lab::new("e2e").unwrap_or_else(|e| panic!("cannot build the namespaces: {e}"));

    let mut relay_cmd = Lab::exec(&lab.relay, &relay_path);
    relay_cmd.args(["--listen", &format!("{}:8080", netns::RELAY_IP)]);
    let _relay = RelayProc::start(relay_cmd);
    let relay_url = format!("ws://{}:8080", netns::RELAY_IP);
    // The phone broadcasts its advert on the link; the laptop listens on every address.
    let phone_ble = format!("udp:{}:47000,interval=20ms", netns::BROADCAST);
    let laptop_ble = format!("udp:{}:47000,bind=0.0.0.0:47000", netns::BROADCAST);

    let rp = Rp::new();
    let p = Phone::new("netns");
    let run = |ceremony: &str, options: &str| -> String {
        let opts = p.file(&format!("{ceremony}.json"), options);
        let mut l = laptop(
            Lab::exec(&lab.laptop, &hy),
            ceremony,
            &opts,
            &laptop_ble,
            &relay_url,
            &[],
        );
        let qr = qr_of(&l);
        let mut ph = phone(
            Lab::exec(&lab.phone, &hy),
            &p,
            &qr,
            &phone_ble,
            &relay_url,
            &["--yes"],
        );
        expect_code(&mut l, 0);
        expect_code(&mut ph, 0);
        // The advert came over the link from the phone's address.
        l.stdout()
    };
    let (options, state) = rp.creation_options("bob");
    let out = run("register", &options);
    let credential = rp
        .verify_registration(&out, &state)
        .expect("the RP accepts the registration");
    let (options, state) = rp.request_options(vec![credential]);
    let out = run("sign-in", &options);
    rp.verify_assertion(&out, &state)
        .expect("the RP accepts the assertion");
}

#[test]
fn advert_from_another_qr_code_is_ignored() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("foreign");
    let (options, state) = rp.creation_options("carol");
    let opts = p.file("register.json", &options);
    let port = free_udp_port();
    let mut l = local_laptop("register", &opts, port, &relay.url(), &[]);
    let _ = qr_of(&l);
    // A phone that scanned someone else's QR code advertises to this laptop.
    let other = other_qr();
    let other_phone = Phone::new("foreign-other");
    let mut foreign = local_phone(
        &other_phone,
        &other,
        port,
        &relay.url(),
        &["--yes", "--wait", "4s"],
    );
    foreign
        .wait_stderr(T, |l| l.contains("advertising"))
        .unwrap_or_else(|| panic!("the foreign phone never advertised\n{}", foreign.dump()));
    std::thread::sleep(Duration::from_millis(500));
    // The laptop ignores it: the foreign phone's tunnel is never joined.
    expect_code(&mut foreign, EXIT_TIMEOUT);
    assert!(!l.stderr().contains("advert arrived"), "{}", l.dump());
    // The right phone still gets through.
    let qr = qr_of(&l);
    let mut ph = local_phone(&p, &qr, port, &relay.url(), &["--yes"]);
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    rp.verify_registration(&l.stdout(), &state)
        .expect("the RP accepts the registration");
}

/// A QR code of a laptop that is not part of the test.
fn other_qr() -> String {
    use hybridge_proto::qr::{QrKeys, RequestType};
    use hybridge_proto::session::LaptopQr;
    let keys = QrKeys::generate(&mut rand_core::OsRng);
    LaptopQr::new(keys, 1_700_000_000, false, RequestType::MakeCredential).qr_url()
}

#[test]
fn no_advert_times_out_with_a_proximity_error_and_never_contacts_the_relay() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("noadvert");
    let (options, _) = rp.creation_options("dave");
    let opts = p.file("register.json", &options);
    let start = Instant::now();
    let mut l = local_laptop(
        "register",
        &opts,
        free_udp_port(),
        &relay.url(),
        &["--scan-timeout", "2s"],
    );
    expect_code(&mut l, EXIT_TIMEOUT);
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(l.stdout().is_empty());
    assert!(l.stderr().contains("no phone advert"), "{}", l.dump());
    assert_eq!(
        relay.metric("hybridge_relay_connections_total"),
        0.0,
        "the relay was contacted"
    );
}

#[test]
fn user_declines_on_the_phone() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("decline");
    let (options, _) = rp.creation_options("erin");
    let opts = p.file("register.json", &options);
    let port = free_udp_port();
    // Also: a per-domain override (--relay-for) wins over --relay for its domain ID.
    let down = format!("ws://127.0.0.1:{}", closed_tcp_port());
    let for_domain_0 = format!("0={}", relay.url());
    let mut l = local_laptop(
        "register",
        &opts,
        port,
        &down,
        &["--relay-for", &for_domain_0],
    );
    let qr = qr_of(&l);
    let mut ph = local_phone(&p, &qr, port, &relay.url(), &["--decline"]);
    expect_code(&mut l, EXIT_NOT_ALLOWED);
    assert!(l.stdout().is_empty());
    assert!(l.stderr().contains("NotAllowedError"), "{}", l.dump());
    expect_code(&mut ph, EXIT_NOT_ALLOWED);
}

/// A self-hosted relay with built-in TLS and a certificate no public CA signed: phone and laptop
/// reach it over wss:// once told to trust it (`--ca-cert`), and refuse it otherwise.
#[test]
fn wss_relay_with_a_private_certificate() {
    let p = Phone::new("wss");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = p.file("relay.pem", &ck.cert.pem());
    let key = p.file("relay.key", &ck.signing_key.serialize_pem());
    let mut cmd = Command::new(relay_bin());
    cmd.args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let relay = RelayProc::start(cmd);
    let url = format!("wss://{}", relay.listen);
    let trust = ["--ca-cert", cert.to_str().unwrap()];

    let rp = Rp::new();
    let (options, state) = rp.creation_options("grace");
    let opts = p.file("register.json", &options);
    let port = free_udp_port();
    let mut l = local_laptop("register", &opts, port, &url, &trust);
    let qr = qr_of(&l);
    let mut ph = local_phone(&p, &qr, port, &url, &["--yes", trust[0], trust[1]]);
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    rp.verify_registration(&l.stdout(), &state)
        .expect("the RP accepts the registration made over wss");

    // Without --ca-cert the phone refuses the relay: a network error that says TLS failed.
    let mut ph = local_phone(&p, &other_qr(), free_udp_port(), &url, &["--yes"]);
    expect_code(&mut ph, EXIT_NETWORK);
    assert!(ph.stderr().contains("TLS"), "{}", ph.dump());
    // A --ca-cert file without a certificate is a usage-level error before any PIN or radio.
    let empty = p.file("empty.pem", "");
    let mut ph = local_phone(
        &p,
        &other_qr(),
        free_udp_port(),
        &url,
        &["--yes", "--ca-cert", empty.to_str().unwrap()],
    );
    let code = ph.code(T);
    assert!(code != 0 && code != EXIT_NETWORK, "{}", ph.dump());
    assert!(ph.stderr().contains("no PEM certificate"), "{}", ph.dump());
}

#[test]
fn relay_down_is_a_clear_error() {
    let down = format!("ws://127.0.0.1:{}", closed_tcp_port());
    // The phone cannot open its tunnel.
    let p = Phone::new("down");
    let mut ph = local_phone(&p, &other_qr(), free_udp_port(), &down, &["--yes"]);
    expect_code(&mut ph, EXIT_NETWORK);
    assert!(
        ph.stderr().contains("cannot open the tunnel at"),
        "{}",
        ph.dump()
    );

    // The laptop hears the phone but cannot reach the relay it was told to use.
    let relay = RelayProc::local();
    let rp = Rp::new();
    let (options, _) = rp.creation_options("frank");
    let opts = p.file("register.json", &options);
    let port = free_udp_port();
    let mut l = local_laptop("register", &opts, port, &down, &[]);
    let qr = qr_of(&l);
    let _ph = local_phone(&p, &qr, port, &relay.url(), &["--yes", "--wait", "10s"]);
    expect_code(&mut l, EXIT_NETWORK);
    assert!(l.stdout().is_empty());
    let last = l.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("hybridge: ") && last.contains("cannot open the tunnel at"),
        "{}",
        l.dump()
    );
}

#[test]
fn rp_id_not_matching_the_origin_is_refused_before_anything_reaches_the_phone() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("phishing");
    let (options, _) = rp.creation_options("grace");
    // A phishing page at https://example.com.evil.test asks for example.com's passkeys.
    let opts = p.file("register.json", &options);
    let port = free_udp_port();
    let mut l = Proc::spawn("laptop", {
        let mut c = hybridge_command();
        c.arg("register")
            .arg("--options")
            .arg(&opts)
            .args(["--origin", "https://example.com.evil.test", "--ble"])
            .arg(format!("udp:127.0.0.1:{port}"))
            .args(["--relay", &relay.url()]);
        c
    });
    expect_code(&mut l, EXIT_SECURITY);
    assert!(l.stdout().is_empty());
    assert!(
        !l.stderr().contains("FIDO:/"),
        "a QR code was shown\n{}",
        l.dump()
    );
    assert!(
        l.stderr().contains("is not valid for origin"),
        "{}",
        l.dump()
    );
    assert_eq!(relay.metric("hybridge_relay_connections_total"), 0.0);
}

#[test]
fn relay_flipping_one_bit_aborts_the_session_and_nothing_is_accepted() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("tamper");
    let (options, state) = rp.creation_options("heidi");
    let opts = p.file("register.json", &options);
    // Every message from the phone after the handshake reply is encrypted; flip a bit of the
    // first of them (the post-handshake message with getInfo).
    let proxy = BitFlipProxy::start(relay.listen, 1);
    let port = free_udp_port();
    let mut l = local_laptop("register", &opts, port, &proxy.url(), &[]);
    let qr = qr_of(&l);
    let _ph = local_phone(&p, &qr, port, &relay.url(), &["--yes", "--wait", "20s"]);
    expect_code(&mut l, EXIT_PROTOCOL);
    assert_eq!(proxy.flipped(), 1);
    assert!(
        l.stdout().is_empty(),
        "a response was printed\n{}",
        l.dump()
    );
    assert!(l.stderr().contains("aborted"), "{}", l.dump());
    assert!(rp.verify_registration(&l.stdout(), &state).is_err());
}

#[test]
fn demo_registers_and_signs_in() {
    let mut demo = Proc::spawn("demo", {
        let mut c = hybridge_command();
        c.arg("demo");
        c
    });
    expect_code(&mut demo, 0);
    let summary: serde_json::Value = serde_json::from_str(&demo.stdout()).expect("summary JSON");
    assert_eq!(summary["registration_verified"], true);
    assert_eq!(summary["sign_in_verified"], true);
    assert!(demo.stderr().contains("FIDO:/"));
}

/// `hybridge demo --data-channel`: both ceremonies over the CTAP 2.3 data channel (in memory
/// here): the laptop never goes to the relay and the phone leaves it when the laptop comes.
#[test]
fn demo_over_the_data_channel_leaves_the_relay_out() {
    let mut demo = Proc::spawn("demo", {
        let mut c = hybridge_command();
        c.args(["demo", "--data-channel"]);
        c
    });
    expect_code(&mut demo, 0);
    let summary: serde_json::Value = serde_json::from_str(&demo.stdout()).expect("summary JSON");
    assert_eq!(summary["registration_verified"], true);
    assert_eq!(summary["sign_in_verified"], true);
    let stderr = demo.stderr();
    assert_eq!(
        stderr.matches("over the data channel (L2CAP PSM").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("the relay is no longer used").count(),
        2,
        "{stderr}"
    );
    assert!(!stderr.contains("laptop: connecting to ws://"), "{stderr}");
}

#[test]
fn usage_errors_and_help() {
    let run = |args: &[&str]| {
        let out = hybridge_command()
            .args(args)
            .output()
            .expect("run hybridge");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.stdout,
        )
    };
    let (code, _, stdout) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(String::from_utf8_lossy(&stdout).contains("Exit codes"));
    for args in [
        &[
            "register",
            "--options",
            "x.json",
            "--origin",
            "https://example.com",
            "--ble",
            "bluetooth",
        ][..],
        &["phone", "--store", "s.hbk"][..],
        &["sign-in", "--options", "x.json"][..],
        &[
            "register",
            "--options",
            "x.json",
            "--origin",
            "https://example.com",
            "--scan-timeout",
            "soon",
        ][..],
        &["inspect", "domain", "0", "--log", "hybridge=verbose"][..],
        &["--log-format", "xml", "inspect", "domain", "0"][..],
    ] {
        let (code, stderr, stdout) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty());
    }
    // A missing options file is invalid input, reported before any QR code.
    let (code, stderr, _) = run(&[
        "register",
        "--options",
        "/nonexistent/x.json",
        "--origin",
        "https://example.com",
        "--ble",
        "udp:127.0.0.1:9",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("FIDO:/"));
}

/// `hybridge key` where the kernel's UHID interface is missing (as on this host) or is not one
/// (a file that ends at once): one line that names the path and what to do, exit code 11,
/// never a panic; and a bad `--qr-out` is a usage problem found before the device is made.
#[test]
fn key_without_a_uhid_interface_says_what_to_do() {
    let run = |args: &[&str]| {
        let out = hybridge_command()
            .args(["key", "--ble", "udp:127.0.0.1:9"])
            .args(args)
            .output()
            .expect("run hybridge key");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--uhid", "/nonexistent/uhid"]);
    assert_eq!(code, Some(11), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/uhid does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("modprobe uhid"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // /dev/null takes the create request and then reads as end of file.
    let (code, stderr) = run(&["--uhid", "/dev/null"]);
    assert_eq!(code, Some(11), "{stderr}");
    assert!(stderr.contains("the UHID device failed"), "{stderr}");

    let (code, stderr) = run(&["--uhid", "/nonexistent/uhid", "--qr-out", "qr.gif"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        !stderr.contains("uhid"),
        "checked before the device: {stderr}"
    );
}

/// `hybridge key --phone NAME`: the linked phone is looked up before the device is made. A
/// name that is not linked ends the key at once with exit code 1 and the linked names (the
/// UHID interface is never touched); a linked one passes, so the same run goes on to the
/// missing UHID interface (exit code 11), also with the user service's `--qr-out`, which a
/// linked phone leaves unused.
#[test]
fn key_with_a_phone_that_is_not_linked_stops_before_the_device_is_made() {
    let dir = TempDir::new("key-phone");
    let file = linked_phones_file(&dir);
    let run = |args: &[&str]| {
        let out = hybridge_command()
            .args([
                "key",
                "--ble",
                "udp:127.0.0.1:9",
                "--uhid",
                "/nonexistent/uhid",
            ])
            .arg("--phones")
            .arg(&file)
            .args(args)
            .env_remove("HYBRIDGE_PHONE")
            .output()
            .expect("run hybridge key");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--phone", "Pixle"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no linked phone named \"Pixle\"; linked phones: \"Pixel\""),
        "{stderr}"
    );
    assert!(!stderr.contains("uhid"), "before the device: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let (code, stderr) = run(&["--phone", "Pixel"]);
    assert_eq!(code, Some(11), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/uhid does not exist"),
        "{stderr}"
    );

    let (code, stderr) = run(&["--phone", "Pixel", "--qr-out", "qr.txt"]);
    assert_eq!(code, Some(11), "{stderr}");
}

/// `--log trace` on both sides of a registration: the diagnostics say what happened (our own
/// debug lines are there), and no log line holds the QR secret or the full tunnel ID derived
/// from it — not even the WebSocket library's, whose request-line trace would.
#[test]
fn trace_logs_hold_no_qr_secret_or_tunnel_id() {
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("logs");
    let (options, state) = rp.creation_options("logan");
    let opts = p.file("register.json", &options);
    let port = free_udp_port();
    // A module-level directive for the WebSocket library is more specific than any cap
    // written as a directive; it must not lift the cap.
    let log = [
        "--log",
        "trace,tungstenite::handshake::client=trace",
        "--log-format",
        "json",
    ];
    let mut l = local_laptop("register", &opts, port, &relay.url(), &log);
    let qr = qr_of(&l);
    let phone_args = [&["--yes"][..], &log].concat();
    let mut ph = local_phone(&p, &qr, port, &relay.url(), &phone_args);
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    rp.verify_registration(&l.stdout(), &state)
        .expect("the RP accepts the registration");

    let payload = hybridge_proto::qr::QrPayload::from_url(&qr).expect("our own QR code");
    let secret = payload.secret.expose();
    let tunnel_id = hybridge_proto::kdf::tunnel_id(&payload.secret).0;
    let digits = qr.trim_start_matches("FIDO:/").to_owned();
    let forbidden = [
        digits,
        hex::encode(secret),
        hex::encode_upper(secret),
        hex::encode(tunnel_id),
        hex::encode_upper(tunnel_id),
    ];
    for (who, proc) in [("laptop", &l), ("phone", &ph)] {
        // Log lines are the JSON objects; the rest of stderr is the UI (the laptop shows
        // the QR code itself there, as it must).
        let lines: Vec<String> = proc
            .stderr()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(str::to_owned)
            .collect();
        let ours = lines
            .iter()
            .filter(|l| l.contains("\"handshake done"))
            .count();
        assert!(ours > 0, "{who}: no debug lines of ours\n{}", proc.dump());
        for line in &lines {
            for f in &forbidden {
                assert!(!line.contains(f.as_str()), "{who} logged a secret: {line}");
            }
        }
    }
}

/// `png` with an ancillary chunk of `len` bytes before its end: the same image to a decoder,
/// as large as a photo.
fn png_with_padding(png: &[u8], len: usize) -> Vec<u8> {
    const IEND: usize = 12; // length, "IEND", CRC
    assert!(png.len() > IEND && &png[png.len() - 8..png.len() - 4] == b"IEND");
    let (body, end) = png.split_at(png.len() - IEND);
    let mut chunk = b"paDd".to_vec();
    chunk.resize(4 + len, 0);
    let mut out = body.to_vec();
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    out.extend_from_slice(end);
    out
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Ctrl-C or SIGTERM while the right PIN is being checked: the attempt is counted on disk
/// before the key derivation (so killing the process cannot be used to guess for free), and the
/// signal must let the check finish and record its success. With one attempt allowed, an
/// interruption that counted as a failure would lock the store.
#[test]
fn an_interrupted_unlock_with_the_right_pin_does_not_count_against_it() {
    use hybridge_authenticator::store::{CreateOptions, FileStore, KdfParams};
    use std::os::unix::fs::MetadataExt;
    let p = Phone::new("interrupted-unlock");
    let options = CreateOptions {
        // Slow enough (about a second) that the signal surely lands inside the derivation.
        kdf: KdfParams::new(128 * 1024, 6, 1).unwrap(),
        max_pin_attempts: 1,
    };
    drop(FileStore::create_with(p.store(), PIN, options).unwrap());
    for (signal, code, word) in [
        ("TERM", EXIT_TERMINATED, "terminated"),
        ("INT", EXIT_INTERRUPTED, "interrupted"),
    ] {
        let before = std::fs::metadata(p.store()).unwrap().ino();
        let mut cmd = hybridge_command();
        cmd.args(["passkeys", "list", "--store"])
            .arg(p.store())
            .arg("--pin-file")
            .arg(p.pin_file());
        let mut list = Proc::spawn("passkeys list", cmd);
        // The attempt is counted by rewriting the file (a new inode): the derivation follows.
        let deadline = Instant::now() + T;
        while std::fs::metadata(p.store()).unwrap().ino() == before {
            assert!(
                Instant::now() < deadline,
                "the attempt was never counted\n{}",
                list.dump()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        list.signal(signal);
        assert_eq!(list.code(T), code, "SIG{signal}\n{}", list.dump());
        let stderr = list.stderr();
        assert!(stderr.contains(word), "{stderr}");
        assert!(!stderr.to_lowercase().contains("wrong pin"), "{stderr}");
        // Still one attempt left: the right PIN opens the store.
        let store = FileStore::open(p.store(), PIN)
            .unwrap_or_else(|e| panic!("after SIG{signal} the store does not open: {e}"));
        assert_eq!(store.remaining_attempts(), 1);
    }
}

/// A store path that is not a regular file is refused at once with what it is: a FIFO would
/// otherwise block the open forever, a directory or a device fail with a puzzling I/O error.
#[test]
fn a_store_that_is_not_a_regular_file_is_refused() {
    let p = Phone::new("not-a-file");
    let fifo = p.dir.path("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let dir = p.dir.path("dir");
    std::fs::create_dir(&dir).unwrap();
    for (path, kind) in [
        (fifo, "FIFO"),
        (dir, "directory"),
        (PathBuf::from("/dev/null"), "device"),
    ] {
        let mut cmd = hybridge_command();
        cmd.args(["passkeys", "list", "--store"])
            .arg(&path)
            .arg("--pin-file")
            .arg(p.pin_file());
        let mut list = Proc::spawn("passkeys list", cmd);
        assert_eq!(
            list.code(Duration::from_secs(20)),
            EXIT_STORE,
            "{}",
            list.dump()
        );
        let stderr = list.stderr();
        assert!(stderr.contains(&format!("is a {kind}")), "{stderr}");
    }
}

/// The QR text holds the session's secret: from the command line other users can read it, so
/// a warning says so and names the alternatives; standard input, a file and the environment
/// variable are read without one. (An invalid code shows each source was really read.)
#[test]
fn qr_text_from_the_command_line_is_warned_about_and_other_sources_are_read() {
    let p = Phone::new("qr-sources");
    let bad = "FIDO:/123";
    let file = p.file("qr.txt", &format!("{bad}\n"));
    let run = |args: &[&str], env: Option<&str>, input: Option<&str>| {
        let mut cmd = hybridge_command();
        cmd.arg("phone")
            .args(args)
            .arg("--store")
            .arg(p.store())
            .args(["--pin-file"])
            .arg(p.pin_file())
            .env_remove("HYBRIDGE_QR");
        if let Some(v) = env {
            cmd.env("HYBRIDGE_QR", v);
        }
        let mut ph = Proc::spawn_with_input("phone", cmd, input.map(str::as_bytes));
        let code = ph.code(T);
        (code, ph.stderr())
    };
    /// Arguments, HYBRIDGE_QR, standard input, and whether a warning is due.
    type Case<'a> = (&'a [&'a str], Option<&'a str>, Option<&'a str>, bool);
    let cases: [Case; 4] = [
        (&["--qr", bad], None, None, true),
        (&["--qr", "-"], None, Some("FIDO:/123\n"), false),
        (&["--qr-file", file.to_str().unwrap()], None, None, false),
        (&[], Some(bad), None, false),
    ];
    for (args, env, input, warned) in cases {
        let (code, stderr) = run(args, env, input);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("QR"),
            "{args:?}: the invalid code is reported: {stderr}"
        );
        assert_eq!(
            stderr.contains("can be read by other users"),
            warned,
            "{args:?}: {stderr}"
        );
        if warned {
            assert!(
                stderr.contains("--qr -") && stderr.contains("--qr-file"),
                "{stderr}"
            );
        }
    }
    // A file far larger than any QR code is refused whole, not cut short.
    let big = p.file("big.txt", &"1".repeat(64 * 1024));
    let (code, stderr) = run(&["--qr-file", big.to_str().unwrap()], None, None);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("larger than"), "{stderr}");
}

/// A hostile relay that answers the upgrade and then only sends pings, never reading: the
/// pongs the phone owes it cannot be written. The phone's memory stays flat (its write buffer
/// is bounded) and the session ends with an error naming the flood, instead of growing about
/// 55 MB/s until killed.
#[test]
fn a_relay_flooding_pings_cannot_grow_the_phone_and_ends_its_session() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay = format!("ws://{}", listener.local_addr().unwrap());
    let flooder = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && tcp.read_exact(&mut byte).is_ok() {
            request.push(byte[0]);
        }
        let request = String::from_utf8_lossy(&request).into_owned();
        let key = request
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .expect("a WebSocket key");
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: fido.cable\r\n\
             X-caBLE-Routing-ID: 010203\r\n\r\n"
        );
        tcp.write_all(answer.as_bytes()).unwrap();
        // Unmasked server pings with 125-byte payloads, as fast as the socket takes them.
        let mut ping = vec![0x89, 125];
        ping.extend_from_slice(&[0x5a; 125]);
        let burst = ping.repeat(256);
        let until = Instant::now() + Duration::from_secs(40);
        while Instant::now() < until && tcp.write_all(&burst).is_ok() {}
    });
    let p = Phone::new("ping-flood");
    let port = free_udp_port();
    let mut ph = local_phone(&p, &other_qr(), port, &relay, &["--yes"]);
    let status = format!("/proc/{}/status", ph.pid());
    let rss_kib = || -> Option<u64> {
        let text = std::fs::read_to_string(&status).ok()?;
        let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    // From the tunnel's opening on (creating the store before it takes the KDF's memory).
    ph.wait_stderr(T, |l| l.contains("tunnel open"))
        .unwrap_or_else(|| panic!("the tunnel never opened\n{}", ph.dump()));
    let base = rss_kib().unwrap_or(0);
    let mut peak = base;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rss_kib() {
            Some(kib) => peak = peak.max(kib),
            None => break, // exited
        }
        if ph
            .wait_stderr(Duration::from_millis(10), |l| l.contains("ping flood"))
            .is_some()
        {
            break;
        }
    }
    assert_eq!(ph.code(T), EXIT_NETWORK, "{}", ph.dump());
    assert!(ph.stderr().contains("ping flood"), "{}", ph.dump());
    assert!(
        peak < base + 16 * 1024,
        "the phone grew from {base} KiB to {peak} KiB under a ping flood"
    );
    drop(ph);
    let _ = flooder.join();
}

/// A relay in production mode (`--origin HOST`, as webauthn-rs's tunnel server has too)
/// refuses an upgrade without the tunnel URL's Origin. Both sides send it: a whole ceremony
/// passes through a relay that requires it, and a relay that requires another host refuses
/// the phone and the laptop with 403, each a clear network error.
#[test]
fn both_sides_send_the_origin_a_production_relay_requires() {
    let strict = |host: &str| {
        let mut cmd = Command::new(relay_bin());
        cmd.args(["--listen", "127.0.0.1:0", "--origin", host]);
        RelayProc::start(cmd)
    };
    let relay = strict("127.0.0.1");
    let rp = Rp::new();
    let p = Phone::new("origin");
    let (options, state) = rp.creation_options("olga");
    let out = ceremony_local("register", &p, &options, &relay, false);
    rp.verify_registration(&out, &state)
        .expect("the RP accepts the registration");

    // Another host's relay: the phone is refused at /cable/new …
    let other = strict("relay.example.com");
    let port = free_udp_port();
    let mut ph = local_phone(&p, &other_qr(), port, &other.url(), &["--yes"]);
    expect_code(&mut ph, EXIT_NETWORK);
    assert!(ph.stderr().contains("403"), "{}", ph.dump());

    // … and the laptop at /cable/connect, after the phone (on the first relay) advertised.
    let (options, _) = rp.creation_options("oskar");
    let opts = p.file("register-other.json", &options);
    let port = free_udp_port();
    let mut l = local_laptop(
        "register",
        &opts,
        port,
        &other.url(),
        &["--scan-timeout", "30s"],
    );
    let qr = qr_of(&l);
    let mut ph = local_phone(&p, &qr, port, &relay.url(), &["--yes", "--wait", "5s"]);
    expect_code(&mut l, EXIT_NETWORK);
    assert!(l.stderr().contains("403"), "{}", l.dump());
    let _ = ph.code(T);
}

/// A phones file as `hybridge` writes it, made by hand: one phone, "Pixel", whose link
/// secret is sealed under the key file next to it.
fn linked_phones_file(dir: &TempDir) -> PathBuf {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{Aes256Gcm, Nonce};
    let path = dir.path("phones.json");
    let key = [7u8; 32];
    std::fs::write(dir.path("phones.key"), key).unwrap();
    let cipher = Aes256Gcm::new((&key).into());
    let seal = |nonce: [u8; 12], msg: &[u8], aad: &[u8]| {
        cipher
            .encrypt(&Nonce::from(nonce), Payload { msg, aad })
            .unwrap()
    };
    let identity = hybridge_proto::keys::from_seed(b"a linked phone").unwrap();
    let public_key = hybridge_proto::keys::uncompressed(&identity.public_key());
    let doc = serde_json::json!({
        "version": 1,
        "key_check": hex::encode(seal([0; 12], &[], b"hybridge phones key check v1")),
        "phones": [{
            "name": "Pixel",
            "public_key": hex::encode(public_key),
            "contact_id": hex::encode([0x42; 16]),
            "link_id": hex::encode([0x11; 8]),
            "domain_id": 0,
            "added": 1_700_000_000u64,
            "last_used": null,
            "secret_nonce": hex::encode([9u8; 12]),
            "secret_sealed": hex::encode(seal([9; 12], &[0x5a; 32], &public_key)),
        }],
    });
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    path
}

fn run_hybridge(args: &[&str]) -> (i32, String, String) {
    let out = hybridge_command()
        .args(args)
        .env_remove("HYBRIDGE_PHONES")
        .output()
        .expect("run hybridge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn linked_phones_are_listed_renamed_forgotten_and_an_unreachable_one_is_a_clear_error() {
    let dir = TempDir::new("phones");
    let rp = Rp::new();
    let (options, _) = rp.request_options(Vec::new());
    let opts = dir.path("get.json");
    std::fs::write(&opts, options).unwrap();
    let opts = opts.to_str().unwrap();

    // No file yet: nothing linked, nothing written.
    let missing = dir.path("none/phones.json");
    let missing = missing.to_str().unwrap();
    assert_eq!(
        run_hybridge(&["phones", "list", "--phones", missing]),
        (0, String::new(), String::new())
    );
    let (code, out, _) = run_hybridge(&["phones", "list", "--json", "--phones", missing]);
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, _, err) = run_hybridge(&["phones", "forget", "Pixel", "--phones", missing]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no linked phone named \"Pixel\""), "{err}");
    assert!(!dir.path("none").exists());

    // The QR code offers linking unless --no-link; the phones file stays untouched.
    let relay = RelayProc::local();
    let qr_says = |extra: &[&str]| {
        let mut args = vec!["--phones", missing, "--scan-timeout", "1s"];
        args.extend_from_slice(extra);
        let mut l = local_laptop(
            "sign-in",
            Path::new(opts),
            free_udp_port(),
            &relay.url(),
            &args,
        );
        let qr = qr_of(&l);
        expect_code(&mut l, EXIT_TIMEOUT);
        hybridge_json(&["inspect", "qr", &qr])["supports_linking"].clone()
    };
    assert_eq!(qr_says(&[]), true);
    assert_eq!(qr_says(&["--no-link"]), false);
    assert!(!dir.path("none").exists());

    let file = linked_phones_file(&dir);
    let file = file.to_str().unwrap();
    let before = std::fs::read(file).unwrap();
    assert!(!before.windows(32).any(|w| w == [0x5a; 32]));
    let (code, out, _) = run_hybridge(&["phones", "list", "--phones", file]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Pixel\tlast used never\t"), "{out}");

    // A name that is not linked: the known ones are listed; nothing is contacted.
    let sign_in = |name: &str| {
        let start = Instant::now();
        let result = run_hybridge(&[
            "sign-in",
            "--options",
            opts,
            "--origin",
            ORIGIN,
            "--phones",
            file,
            "--phone",
            name,
            "--relay",
            &relay.url(),
            "--ble",
            &format!("udp:127.0.0.1:{}", free_udp_port()),
            "--scan-timeout",
            "20s",
        ]);
        (result, start.elapsed())
    };
    let ((code, out, err), _) = sign_in("Pixle");
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("no linked phone named \"Pixle\"; linked phones: \"Pixel\""),
        "{err}"
    );

    // No phone subscribed at the relay: 410, said as the phone being unreachable, at once.
    let ((code, out, err), took) = sign_in("Pixel");
    assert_eq!(code, EXIT_NETWORK, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("unreachable") && err.contains("\"Pixel\""),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        std::fs::read(file).unwrap(),
        before,
        "a failure is not a use"
    );
    // Not a QR ceremony: --qr-out makes no sense.
    let (code, _, _) = run_hybridge(&[
        "sign-in",
        "--options",
        opts,
        "--origin",
        ORIGIN,
        "--phone",
        "Pixel",
        "--qr-out",
        "x.png",
    ]);
    assert_eq!(code, 2);

    // Rename, list for programs (never the secret), forget.
    let (code, _, err) = run_hybridge(&["phones", "rename", "Pixel", "work", "--phones", file]);
    assert_eq!(code, 0, "{err}");
    let list = hybridge_json(&["phones", "list", "--json", "--phones", file]);
    assert_eq!(list[0]["name"], "work");
    assert_eq!(list[0]["domain_id"], 0);
    assert_eq!(list[0]["added"], "2023-11-14T22:13:20Z");
    assert!(list[0]["last_used"].is_null());
    assert!(!list.to_string().contains(&hex::encode([0x5a; 32])));
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    let (code, _, err) = run_hybridge(&["phones", "forget", "work", "--phones", file]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(file), 0o600);
    let list = hybridge_json(&["phones", "list", "--json", "--phones", file]);
    assert_eq!(list, serde_json::json!([]));
}

/// `hybridge phone serve` for `p`'s store on this relay and UDP port, approving with its PIN.
fn phone_serve(p: &Phone, port: u16, relay: &str) -> Proc {
    phone_serve_on(p, &format!("udp:127.0.0.1:{port},interval=20ms"), relay)
}

/// [`phone_serve`] on the radio `ble`, once it holds its wake-up subscription at `relay`.
fn phone_serve_on(p: &Phone, ble: &str, relay: &str) -> Proc {
    let mut cmd = hybridge_command();
    cmd.args(["phone", "serve", "--relay", relay, "--yes"])
        .args(["--ble", ble])
        .arg("--store")
        .arg(p.store())
        .arg("--pin-file")
        .arg(p.pin_file());
    let serve = Proc::spawn("phone serve", cmd);
    serve
        .wait_stderr(T, |l| l.contains("reachable for linked laptops"))
        .unwrap_or_else(|| panic!("phone serve did not subscribe\n{}", serve.dump()));
    serve
}

/// A relay on a fixed loopback port, so that it can be restarted where phones find it.
fn relay_on(port: u16) -> RelayProc {
    let mut cmd = Command::new(hybridge_tests::relay_bin());
    cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    cmd.args(["--metrics-listen", "127.0.0.1:0"]);
    RelayProc::start(cmd)
}

/// Waits until `proc`'s stderr holds `text` `times` times.
fn wait_count(proc: &Proc, text: &str, times: usize) {
    let deadline = Instant::now() + T;
    while proc.stderr().matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {times}× {text:?}\n{}",
            proc.dump()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 14 as separate processes: a QR registration in which `hybridge phone` links to the
/// laptop and `hybridge register` keeps the link; then `hybridge phone serve` and
/// `hybridge sign-in --phone NAME` with no QR code, three times: before and after the relay
/// restarts (the phone resubscribes by itself) and after the phone's serve process restarts,
/// each verified by an independent RP. A second phone linked to the same laptop is reached by
/// its own name. Then the phone revokes the laptop (refused, nothing signed) and, with no
/// phone subscribed, the laptop is told the phone is unreachable.
#[test]
fn a_phone_linked_by_qr_code_is_reached_again_with_sign_in_phone() {
    let relay_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut relay = relay_on(relay_port);
    let relay_url = relay.url();
    let rp = Rp::new();
    let p = Phone::new("linked-loop");
    let phones = p.dir.path("phones.json");
    let phones = phones.to_str().unwrap();
    let port = free_udp_port();

    // 1. QR registration; the phone links.
    let (options, state) = rp.creation_options("lin");
    let opts = p.file("register.json", &options);
    let mut l = local_laptop("register", &opts, port, &relay_url, &["--phones", phones]);
    let qr = qr_of(&l);
    let mut ph = local_phone(
        &p,
        &qr,
        port,
        &relay_url,
        &["--yes", "--name", "Lin's phone"],
    );
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    assert!(
        l.stderr().contains("linked phone \"Lin's phone\""),
        "{}",
        l.dump()
    );
    let credential = rp
        .verify_registration(&l.stdout(), &state)
        .expect("the RP accepts the registration");
    let store = p.store();
    let pin = p.pin_file();
    let links_args = |action: &[&str]| {
        let mut args = vec!["phone", "links"];
        args.extend_from_slice(action);
        args.extend_from_slice(&["--store", store.to_str().unwrap()]);
        args.extend_from_slice(&["--pin-file", pin.to_str().unwrap()]);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let links = |action: &[&str]| {
        let args = links_args(action);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_hybridge(&args)
    };
    let (code, out, err) = links(&["list"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let link_id = listed[0]["link_id"]
        .as_str()
        .expect("one linked laptop")
        .to_owned();
    let (code, out, _) = run_hybridge(&["phones", "list", "--phones", phones]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Lin's phone\t"), "{out}");

    // 2. Sign in with no QR code, the phone's serve process restarted between two sign-ins.
    let sign_in = |extra: &[&str]| {
        let (options, state) = rp.request_options(vec![credential.clone()]);
        let opts = p.file("get.json", &options);
        let mut args = vec!["--phones", phones, "--phone", "Lin's phone"];
        args.extend_from_slice(extra);
        let mut l = local_laptop("sign-in", &opts, port, &relay_url, &args);
        let code = l.code(T);
        (code, l, state)
    };
    let signed_in = |serve: &Proc, extra: &[&str]| {
        let (code, l, state) = sign_in(extra);
        assert_eq!(code, 0, "{}{}", l.dump(), serve.dump());
        assert!(!l.stderr().contains("FIDO:/"), "no QR code\n{}", l.dump());
        rp.verify_assertion(&l.stdout(), &state)
            .expect("the RP accepts the linked assertion");
    };
    let mut serve = phone_serve(&p, port, &relay_url);
    signed_in(&serve, &[]);
    // The relay restarts (losing every subscription); the phone subscribes again by itself.
    relay.proc.signal("TERM");
    let _ = relay.proc.code(T);
    drop(relay);
    let _restarted = relay_on(relay_port);
    wait_count(&serve, "reachable for linked laptops", 2);
    signed_in(&serve, &[]);
    // The phone's serve process restarts.
    serve.signal("TERM");
    assert_eq!(serve.code(T), EXIT_TERMINATED, "{}", serve.dump());
    let mut serve = phone_serve(&p, port, &relay_url);
    signed_in(&serve, &[]);

    // A second phone, linked to the same laptop, reached by its own name.
    let p2 = Phone::new("linked-loop-2");
    let (options, state) = rp.creation_options("lin2");
    let opts = p2.file("register.json", &options);
    let mut l = local_laptop("register", &opts, port, &relay_url, &["--phones", phones]);
    let qr = qr_of(&l);
    let mut ph = local_phone(
        &p2,
        &qr,
        port,
        &relay_url,
        &["--yes", "--name", "Work phone"],
    );
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    let credential2 = rp.verify_registration(&l.stdout(), &state).unwrap();
    let mut serve2 = phone_serve(&p2, port, &relay_url);
    let (options, state) = rp.request_options(vec![credential2]);
    let opts = p2.file("get.json", &options);
    let args = ["--phones", phones, "--phone", "Work phone"];
    let mut l = local_laptop("sign-in", &opts, port, &relay_url, &args);
    assert_eq!(l.code(T), 0, "{}{}", l.dump(), serve2.dump());
    rp.verify_assertion(&l.stdout(), &state)
        .expect("the RP accepts the second phone's assertion");
    assert!(
        serve2.stderr().contains("served a linked"),
        "{}",
        serve2.dump()
    );
    serve2.signal("TERM");
    let _ = serve2.code(T);
    serve.signal("TERM");
    assert_eq!(serve.code(T), EXIT_TERMINATED, "{}", serve.dump());

    // 3. The phone revokes the laptop: its next contact is refused and nothing is signed.
    let (code, _, err) = links(&["revoke", &link_id]);
    assert_eq!(code, 0, "{err}");
    let mut serve = phone_serve(&p, port, &relay_url);
    let (code, l, _) = sign_in(&["--scan-timeout", "3s"]);
    assert_eq!(code, EXIT_TIMEOUT, "{}{}", l.dump(), serve.dump());
    serve
        .wait_stderr(T, |line| line.contains("does not have"))
        .unwrap_or_else(|| panic!("the phone did not refuse\n{}", serve.dump()));
    serve.signal("TERM");
    let _ = serve.code(T);

    // 4. No phone subscribed: the relay's 410, said as unreachable, within seconds.
    let start = Instant::now();
    let (code, l, _) = sign_in(&[]);
    assert_eq!(code, EXIT_NETWORK, "{}", l.dump());
    assert!(l.stderr().contains("unreachable"), "{}", l.dump());
    assert!(start.elapsed() < Duration::from_secs(10));
}

// ---- Google's contact flow, as the laptop process sends it ------------------------------

/// One HTTP request read from a bare TCP listener, answered with `status` and closed: the
/// request line and headers as sent (what `hybridge` asked a tunnel server for).
fn capture_one_request(status: u16) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") && raw.len() < 16 * 1024 {
            tcp.read_exact(&mut byte).unwrap();
            raw.push(byte[0]);
        }
        let _ = write!(
            tcp,
            "HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        String::from_utf8_lossy(&raw)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    });
    (url, task)
}

/// The value of header `name` (case-insensitive) in captured request lines.
fn header<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// The laptop process reaches a phone stored with domain 0 as Chrome reaches a phone linked
/// through Google's tunnel server: `/cable/contact/<contact ID, base64url, no padding>` on the
/// relay for domain 0 (`--relay-for 0=…` stands in for `wss://cable.ua5v.com`), subprotocol
/// `fido.cable`, and `X-caBLE-Client-Payload` in upper-case hex of `{1: the stored link ID,
/// 2: a 16-byte nonce, 3: "ga"}` for sign-in and `"mc"` for register (chromium
/// device/fido/cable/fido_tunnel_device.cc @ ccfdb09e). A 410 is the phone being unreachable.
/// The expected path was computed with Python's `base64.urlsafe_b64encode(b"B" * 16)`.
#[test]
fn a_phone_linked_on_domain_0_is_contacted_as_chrome_contacts_it() {
    let dir = TempDir::new("google-contact");
    let file = linked_phones_file(&dir);
    let rp = Rp::new();
    let (options, _) = rp.request_options(Vec::new());
    let get = dir.path("get.json");
    std::fs::write(&get, options).unwrap();
    let (options, _) = rp.creation_options("g");
    let create = dir.path("create.json");
    std::fs::write(&create, options).unwrap();
    let other_domain = format!("1=ws://127.0.0.1:{}", closed_tcp_port());
    for (ceremony, options, request_type) in
        [("sign-in", &get, "6761"), ("register", &create, "6D63")]
    {
        let (url, server) = capture_one_request(410);
        let started = Instant::now();
        let (code, out, err) = run_hybridge(&[
            ceremony,
            "--options",
            options.to_str().unwrap(),
            "--origin",
            ORIGIN,
            "--phones",
            file.to_str().unwrap(),
            "--phone",
            "Pixel",
            "--relay-for",
            &format!("0={url}"),
            "--relay-for",
            &other_domain,
            "--ble",
            &format!("udp:127.0.0.1:{}", free_udp_port()),
        ]);
        let lines = server.join().unwrap();
        assert_eq!(code, EXIT_NETWORK, "{ceremony}: {err}");
        assert!(out.is_empty());
        assert!(err.contains("unreachable"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(
            lines[0], "GET /cable/contact/QkJCQkJCQkJCQkJCQkJCQg HTTP/1.1",
            "{lines:#?}"
        );
        assert_eq!(header(&lines, "Sec-WebSocket-Protocol"), ["fido.cable"]);
        let payload = header(&lines, "X-caBLE-Client-Payload");
        let [payload] = payload[..] else {
            panic!("one client payload header: {lines:#?}")
        };
        // a3 (map of 3), 01 48 <8-byte link ID>, 02 50 <16-byte nonce>, 03 62 <"ga" | "mc">.
        assert_eq!(payload.len(), 2 * 33, "{payload}");
        assert!(
            payload.starts_with("A301481111111111111111025"),
            "{payload}"
        );
        assert_eq!(&payload[24..26], "50");
        assert!(
            payload[26..58]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
            "upper-case hex nonce: {payload}"
        );
        assert_eq!(&payload[58..], format!("0362{request_type}"));
        assert_eq!(
            header(&lines, "Origin"),
            [url.as_str()],
            "the tunnel URL's own origin"
        );
        assert!(header(&lines, "Cookie").is_empty());
    }
}

// ---- linked sign-in across a relay cluster ---------------------------------------------

/// A `nats-server` with JetStream on a free loopback port and a scratch store, killed on
/// drop.
struct Nats {
    proc: Proc,
    port: u16,
    _dir: TempDir,
}

impl Nats {
    fn start() -> Nats {
        let dir = TempDir::new("nats");
        let port = closed_tcp_port();
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path("js"));
        let proc = Proc::spawn("nats-server", cmd);
        let deadline = Instant::now() + T;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start\n{}",
                proc.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nats {
            proc,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A relay in cluster mode on `nats` with this routing ID, once its cluster link is up.
fn cluster_relay(nats: &Nats, routing: &str) -> RelayProc {
    let mut cmd = Command::new(relay_bin());
    cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--routing-id", routing, "--nats", &nats.url()]);
    let relay = RelayProc::start(cmd);
    let deadline = Instant::now() + T;
    loop {
        if http_status(relay.listen, "/readyz/cluster") == Some(200) {
            return relay;
        }
        assert!(
            Instant::now() < deadline,
            "relay {routing} never joined the cluster\n{}\n{}",
            relay.proc.dump(),
            nats.proc.dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status code of a plain GET, if the server answered one.
fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split(' ').nth(1)?.parse().ok()
}

/// Issue 14's cluster case as separate processes: a real `nats-server` and two
/// `hybridge-relay` instances in cluster mode. The QR registration already crosses them (the
/// phone's tunnel on B, the laptop joining through A), and the phone links; then
/// `hybridge phone serve` holds its wake-up subscription on B while
/// `hybridge sign-in --phone NAME` asks A, which wakes the phone through NATS. The
/// assertion is verified by the independent RP, and A counts the wake-up as forwarded.
#[test]
fn a_linked_phone_subscribed_on_one_relay_is_reached_through_another() {
    if !have_command("nats-server", &["--version"]) {
        missing(
            "a_linked_phone_subscribed_on_one_relay_is_reached_through_another",
            "nats-server",
            "apt-get install nats-server",
        );
        return;
    }
    let nats = Nats::start();
    let a = cluster_relay(&nats, "a00001");
    let b = cluster_relay(&nats, "b00002");
    let rp = Rp::new();
    let p = Phone::new("linked-cluster");
    let phones = p.dir.path("phones.json");
    let phones = phones.to_str().unwrap();
    let port = free_udp_port();

    // The QR registration: the phone on B, the laptop on A; the phone links.
    let (options, state) = rp.creation_options("clu");
    let opts = p.file("register.json", &options);
    let mut l = local_laptop("register", &opts, port, &a.url(), &["--phones", phones]);
    let qr = qr_of(&l);
    let mut ph = local_phone(
        &p,
        &qr,
        port,
        &b.url(),
        &["--yes", "--name", "Cluster phone"],
    );
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    assert!(
        l.stderr().contains("linked phone \"Cluster phone\""),
        "{}",
        l.dump()
    );
    let credential = rp
        .verify_registration(&l.stdout(), &state)
        .expect("the RP accepts the registration");

    // Subscribed on B; the laptop asks A.
    let mut serve = phone_serve(&p, port, &b.url());
    let forwarded = "hybridge_relay_cluster_wakes_forwarded_total";
    assert_eq!(a.metric(forwarded), 0.0);
    let (options, state) = rp.request_options(vec![credential]);
    let opts = p.file("get.json", &options);
    let args = ["--phones", phones, "--phone", "Cluster phone"];
    let mut l = local_laptop("sign-in", &opts, port, &a.url(), &args);
    assert_eq!(l.code(T), 0, "{}{}", l.dump(), serve.dump());
    assert!(!l.stderr().contains("FIDO:/"), "no QR code\n{}", l.dump());
    let result = rp
        .verify_assertion(&l.stdout(), &state)
        .expect("the RP accepts the assertion made through the cluster");
    assert!(result.user_verified());
    assert!(
        serve.stderr().contains("served a linked"),
        "{}",
        serve.dump()
    );
    assert_eq!(a.metric(forwarded), 1.0, "A woke the phone through NATS");
    assert_eq!(b.metric(forwarded), 0.0);
    serve.signal("TERM");
    assert_eq!(serve.code(T), EXIT_TERMINATED, "{}", serve.dump());
}

// ---- refusals of a stored link ----------------------------------------------------------

/// Rewrites the first entry of the laptop's phones file through `change`, which gets the
/// entry and the cipher of its key file (`phones.key` next to it): the file as an attacker
/// who can write it, or both files, leaves it.
fn rewrite_phone_entry(
    phones: &Path,
    change: impl FnOnce(&mut serde_json::Value, &aes_gcm::Aes256Gcm),
) {
    use aes_gcm::KeyInit;
    let key = std::fs::read(phones.with_extension("key")).expect("the phones key file");
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("a 32-byte key");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(phones).unwrap()).unwrap();
    change(&mut doc["phones"][0], &cipher);
    std::fs::write(phones, serde_json::to_vec(&doc).unwrap()).unwrap();
}

fn hex_field(entry: &serde_json::Value, name: &str) -> Vec<u8> {
    hex::decode(entry[name].as_str().unwrap()).unwrap()
}

/// Seals `secret` for `entry` as the CLI does (its nonce, the public key as associated data).
fn seal_secret(entry: &mut serde_json::Value, cipher: &aes_gcm::Aes256Gcm, secret: &[u8]) {
    use aes_gcm::aead::{Aead, Payload};
    let nonce: [u8; 12] = hex_field(entry, "secret_nonce").try_into().unwrap();
    let aad = hex_field(entry, "public_key");
    let sealed = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: secret,
                aad: &aad,
            },
        )
        .unwrap();
    entry["secret_sealed"] = hex::encode(sealed).into();
}

/// The link secret sealed in `entry`.
fn open_secret(entry: &serde_json::Value, cipher: &aes_gcm::Aes256Gcm) -> Vec<u8> {
    use aes_gcm::aead::{Aead, Payload};
    let nonce: [u8; 12] = hex_field(entry, "secret_nonce").try_into().unwrap();
    let aad = hex_field(entry, "public_key");
    let sealed = hex_field(entry, "secret_sealed");
    cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .expect("the stored link opens")
}

/// A stored link that was tampered with, and a forgotten phone, as separate processes with a
/// real linked phone serving: each is refused with a named error and the exit code
/// `sign-in --help` gives for it, nothing reaches the RP, and the phone signs nothing (its
/// passkey's sign counter moves only for the sign-ins that succeed).
/// - a byte of the sealed link secret flipped: the entry does not open; exit 1, before the
///   relay is contacted;
/// - another link secret, sealed properly under the file's key (as someone who can write
///   both files could): the phone is woken, but its advert is keyed with the real secret and
///   the laptop never recognises it; exit 3;
/// - another phone identity key, the real secret sealed properly for it: the advert matches,
///   the NKpsk0 handshake does not (the phone cannot read message 1 and hangs up); exit 7;
/// - the original entry back: the phone, still serving, signs again;
/// - `phones forget`, then `--phone` with that name: exit 1, no phone by that name.
#[test]
fn a_tampered_or_forgotten_link_is_refused_and_nothing_is_signed() {
    // The codes this test expects are the ones `sign-in --help` promises for --phone.
    let (code, help, _) = run_hybridge(&["sign-in", "--help"]);
    assert_eq!(code, 0);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for promise in [
        "1 no linked phone by that name (the known ones are listed), a damaged phones file",
        "3 the phone was contacted but no advert came in time",
        "or the stored link secret is not the phone's",
        "7 the phone refused the stored link's handshake",
    ] {
        assert!(help.contains(promise), "--help lacks {promise:?}:\n{help}");
    }
    let relay = RelayProc::local();
    let relay_url = relay.url();
    let rp = Rp::new();
    let p = Phone::new("link-refusals");
    let phones_path = p.dir.path("phones.json");
    let phones = phones_path.to_str().unwrap();
    let port = free_udp_port();

    let (options, state) = rp.creation_options("ref");
    let opts = p.file("register.json", &options);
    let mut l = local_laptop("register", &opts, port, &relay_url, &["--phones", phones]);
    let qr = qr_of(&l);
    let mut ph = local_phone(&p, &qr, port, &relay_url, &["--yes", "--name", "Mine"]);
    expect_code(&mut l, 0);
    expect_code(&mut ph, 0);
    let credential = rp.verify_registration(&l.stdout(), &state).unwrap();
    let original = std::fs::read(&phones_path).unwrap();

    let mut serve = phone_serve(&p, port, &relay_url);
    let sign_in = |scan: &str| {
        let (options, state) = rp.request_options(vec![credential.clone()]);
        let opts = p.file("get.json", &options);
        let args = [
            "--phones",
            phones,
            "--phone",
            "Mine",
            "--scan-timeout",
            scan,
        ];
        let mut l = local_laptop("sign-in", &opts, port, &relay_url, &args);
        let code = l.code(T);
        (code, l, state)
    };
    let wakes = || relay.metric("hybridge_relay_wakes_total{result=\"local\"}");
    let served = |serve: &Proc| serve.stderr().matches("phone: served a linked").count();

    // The loop works before anything is tampered with.
    let (code, l, state) = sign_in("30s");
    assert_eq!(code, 0, "{}{}", l.dump(), serve.dump());
    rp.verify_assertion(&l.stdout(), &state).unwrap();
    assert_eq!(served(&serve), 1);
    assert_eq!(wakes(), 1.0);

    // 1. A flipped byte in the sealed secret: refused before the relay hears of it.
    rewrite_phone_entry(&phones_path, |e, _| {
        let mut sealed = hex_field(e, "secret_sealed");
        sealed[5] ^= 0x01;
        e["secret_sealed"] = hex::encode(sealed).into();
    });
    let (code, l, _) = sign_in("30s");
    assert_eq!(code, EXIT_INVALID_INPUT, "{}", l.dump());
    assert!(l.stdout().is_empty());
    assert!(
        l.stderr().contains("the link of phone \"Mine\" in ")
            && l.stderr()
                .contains("does not open with its key (the entry was altered)"),
        "{}",
        l.dump()
    );
    assert_eq!(wakes(), 1.0, "nothing was contacted");

    // 2. Another link secret, well sealed: the phone is woken, nobody recognises anybody.
    std::fs::write(&phones_path, &original).unwrap();
    rewrite_phone_entry(&phones_path, |e, cipher| {
        let mut secret = open_secret(e, cipher);
        secret[0] ^= 0x80;
        seal_secret(e, cipher, &secret);
    });
    let (code, l, _) = sign_in("3s");
    assert_eq!(code, EXIT_TIMEOUT, "{}{}", l.dump(), serve.dump());
    assert!(l.stdout().is_empty());
    assert!(
        l.stderr()
            .contains("phone \"Mine\" was contacted but no advert made with its link came"),
        "{}",
        l.dump()
    );
    assert_eq!(wakes(), 2.0, "the phone was woken");
    wait_count(&serve, "phone: a linked request failed", 1);

    // 3. Another phone identity key, the real secret sealed for it: the handshake fails.
    std::fs::write(&phones_path, &original).unwrap();
    rewrite_phone_entry(&phones_path, |e, cipher| {
        let secret = open_secret(e, cipher);
        let impostor = hybridge_proto::keys::from_seed(b"not the phone").unwrap();
        e["public_key"] =
            hex::encode(hybridge_proto::keys::uncompressed(&impostor.public_key())).into();
        seal_secret(e, cipher, &secret);
    });
    let (code, l, _) = sign_in("30s");
    assert_eq!(code, EXIT_PROTOCOL, "{}{}", l.dump(), serve.dump());
    assert!(l.stdout().is_empty());
    assert!(
        l.stderr()
            .contains("phone \"Mine\" refused or dropped the handshake of its stored link"),
        "{}",
        l.dump()
    );
    assert_eq!(wakes(), 3.0);
    wait_count(&serve, "phone: a linked request failed", 2);
    assert_eq!(served(&serve), 1, "{}", serve.dump());

    // The real link still works, and the phone kept serving through all of it.
    std::fs::write(&phones_path, &original).unwrap();
    let (code, l, state) = sign_in("30s");
    assert_eq!(code, 0, "{}{}", l.dump(), serve.dump());
    rp.verify_assertion(&l.stdout(), &state).unwrap();
    assert_eq!(served(&serve), 2);
    serve.signal("TERM");
    assert_eq!(serve.code(T), EXIT_TERMINATED, "{}", serve.dump());

    // 4. Forgotten: that name is no longer a phone this laptop knows.
    let (code, _, err) = run_hybridge(&["phones", "forget", "Mine", "--phones", phones]);
    assert_eq!(code, 0, "{err}");
    let (code, l, _) = sign_in("30s");
    assert_eq!(code, EXIT_INVALID_INPUT, "{}", l.dump());
    assert!(l.stdout().is_empty());
    assert!(
        l.stderr().contains("no linked phone named \"Mine\""),
        "{}",
        l.dump()
    );
    assert_eq!(wakes(), 4.0, "a forgotten phone is not contacted");

    // The phone signed exactly the two sign-ins that succeeded.
    let store = p.store();
    let pin = p.pin_file();
    let list = hybridge_json(&[
        "passkeys",
        "list",
        "--store",
        store.to_str().unwrap(),
        "--pin-file",
        pin.to_str().unwrap(),
    ]);
    assert_eq!(list[0]["sign_count"], 2, "{list}");
}

//! The VM tier: the same processes over real BlueZ. `tests/vm/run.sh` boots a QEMU guest with
//! two emulated LE controllers (btvirt: `hci0` for the laptop, `hci1` for the phone) and
//! bluetoothd, and runs these tests there in one boot, one at a time (they share the two
//! controllers). On the host they are ignored: run them with `tests/vm/run.sh`.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

const IN_VM: &str = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh";

/// The laptop's and the phone's controllers.
const LAPTOP_BLE: &str = "bluez:hci0";
const PHONE_BLE: &str = "bluez:hci1";

/// Exit code of `hybridge` when the radio cannot be used.
const EXIT_RADIO: i32 = 8;

/// Refuses to run outside the guest: on a host these tests would only test its Bluetooth.
fn require_vm() {
    assert!(
        std::env::var_os("HYBRIDGE_VM").is_some(),
        "this test {IN_VM}, which sets HYBRIDGE_VM"
    );
}

/// `btmgmt --index N ARGS`, which must succeed; its stdout.
fn btmgmt(index: u8, args: &[&str]) -> String {
    let (ok, text) = try_btmgmt(index, args);
    assert!(ok, "btmgmt --index {index} {args:?} failed: {text}");
    text
}

/// `btmgmt --index N ARGS`: whether it succeeded, and its output.
fn try_btmgmt(index: u8, args: &[&str]) -> (bool, String) {
    // btmgmt quits when its stdin ends, before BlueZ answers: keep stdin open until it exits.
    let mut child = Command::new("timeout")
        .args(["10", "btmgmt", "--index", &index.to_string()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run btmgmt");
    let stdin = child.stdin.take();
    let mut text = String::new();
    let mut err = String::new();
    use std::io::Read as _;
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().expect("wait for btmgmt");
    drop(stdin);
    (status.success(), text + &err)
}

fn powered(index: u8) -> bool {
    btmgmt(index, &["info"])
        .lines()
        .any(|l| l.trim_start().starts_with("current settings:") && l.contains("powered"))
}

/// Powers a controller off, and on again when dropped, so the next test finds it as the
/// guest set it up.
struct PoweredOff(u8);

impl PoweredOff {
    fn new(index: u8) -> PoweredOff {
        btmgmt(index, &["power", "off"]);
        assert!(!powered(index), "hci{index} is still powered");
        PoweredOff(index)
    }
}

impl Drop for PoweredOff {
    fn drop(&mut self) {
        let _ = try_btmgmt(self.0, &["power", "on"]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !powered(self.0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One ceremony with the advert over BlueZ, hci1 to hci0; returns the laptop's stdout.
fn ceremony_bluez(ceremony: &str, p: &Phone, options: &str, relay: &RelayProc) -> String {
    ceremony_bluez_with(ceremony, p, options, &relay.url(), &relay.url(), &[]).0
}

/// [`ceremony_bluez`] with the laptop on `laptop_relay` and `extra` flags for both sides;
/// the laptop's stdout and both sides' stderr.
fn ceremony_bluez_with(
    ceremony: &str,
    p: &Phone,
    options: &str,
    laptop_relay: &str,
    phone_relay: &str,
    extra: &[&str],
) -> (String, String) {
    let opts = p.file(&format!("{ceremony}.json"), options);
    let mut l = laptop(
        hybridge_command(),
        ceremony,
        &opts,
        LAPTOP_BLE,
        laptop_relay,
        &[&["--scan-timeout", "60s"], extra].concat(),
    );
    let qr = qr_of(&l);
    let mut ph = phone(
        hybridge_command(),
        p,
        &qr,
        PHONE_BLE,
        phone_relay,
        &[&["--yes"], extra].concat(),
    );
    let code = l.code(T);
    assert_eq!(code, 0, "the laptop failed\n{}{}", l.dump(), ph.dump());
    let code = ph.code(T);
    assert_eq!(code, 0, "the phone failed\n{}{}", l.dump(), ph.dump());
    (l.stdout(), l.stderr() + &ph.stderr())
}

/// CTAP 2.3's data channel over real BlueZ: the phone listens on an LE L2CAP PSM and names it
/// in a connectable advert, the laptop opens the channel to it, and both ceremonies run over
/// it. The laptop is given a relay URL nobody listens on, so any laptop step through a relay
/// would fail; the relay counts only the phone's own tunnel, which it leaves when the laptop
/// comes. An independent RP verifies both responses.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn register_and_sign_in_over_the_l2cap_data_channel_without_the_relay() {
    require_vm();
    let relay = RelayProc::local();
    let nobody = format!("ws://127.0.0.1:{}", closed_tcp_port());
    let rp = Rp::new();
    let p = Phone::new("l2cap");
    let flags = ["--data-channel"];

    let (options, state) = rp.creation_options("carol");
    let (out, stderr) =
        ceremony_bluez_with("register", &p, &options, &nobody, &relay.url(), &flags);
    let credential = rp
        .verify_registration(&out, &state)
        .expect("the RP accepts the registration");
    assert!(
        stderr.contains("over the data channel (L2CAP PSM"),
        "{stderr}"
    );
    assert!(stderr.contains("the relay is no longer used"), "{stderr}");

    let (options, state) = rp.request_options(vec![credential]);
    let (out, _) = ceremony_bluez_with("sign-in", &p, &options, &nobody, &relay.url(), &flags);
    rp.verify_assertion(&out, &state)
        .expect("the RP accepts the assertion");
    assert_eq!(
        relay.metric("hybridge_relay_connections_total"),
        2.0,
        "only the phone's two tunnels reached the relay; the laptop never did"
    );
}

#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn register_and_sign_in_over_bluez_verified_by_an_independent_rp() {
    require_vm();
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("bluez");

    let (options, state) = rp.creation_options("alice");
    let out = ceremony_bluez("register", &p, &options, &relay);
    let credential = rp
        .verify_registration(&out, &state)
        .expect("the RP accepts the registration");

    // While the laptop signs in, a phone that scanned someone else's QR code advertises from
    // the same controller (through its own relay): the laptop hears it and must ignore it.
    let elsewhere = RelayProc::local();
    let stranger = Phone::new("bluez-stranger");
    let mut foreign = phone(
        hybridge_command(),
        &stranger,
        &other_qr(),
        PHONE_BLE,
        &elsewhere.url(),
        &["--yes", "--wait", "30s"],
    );
    foreign
        .wait_stderr(T, |l| l.contains("advertising"))
        .unwrap_or_else(|| panic!("the stranger never advertised\n{}", foreign.dump()));
    let (options, state) = rp.request_options(vec![credential]);
    let out = ceremony_bluez("sign-in", &p, &options, &relay);
    let result = rp
        .verify_assertion(&out, &state)
        .expect("the RP accepts the assertion");
    assert!(result.user_verified());
    expect_code(&mut foreign, EXIT_TIMEOUT);
    assert_eq!(
        elsewhere.metric("hybridge_relay_connections_total"),
        1.0,
        "only the stranger's own tunnel: no laptop followed its advert"
    );
    assert_eq!(
        relay.metric("hybridge_relay_connections_total"),
        4.0,
        "each ceremony is one phone and one laptop connection to the relay"
    );
}

/// `hybridge phone serve` for `p`'s store over BlueZ (hci1), approving with its PIN, once it
/// holds its wake-up subscription at `relay`.
fn phone_serve_bluez(p: &Phone, relay: &str) -> Proc {
    super::phone_serve_on(p, PHONE_BLE, relay)
}

/// A QR registration over BlueZ (phone on hci1, laptop on hci0) in which the phone links as
/// `name` and `hybridge register` stores the link in `phones`; the registered credential, as
/// the RP verified it.
fn link_over_bluez(
    p: &Phone,
    rp: &Rp,
    relay: &str,
    phones: &str,
    name: &str,
) -> webauthn_rs_core::proto::Credential {
    let (options, state) = rp.creation_options("lin");
    let opts = p.file("register.json", &options);
    let mut l = laptop(
        hybridge_command(),
        "register",
        &opts,
        LAPTOP_BLE,
        relay,
        &["--scan-timeout", "60s", "--phones", phones],
    );
    let qr = qr_of(&l);
    let mut ph = phone(
        hybridge_command(),
        p,
        &qr,
        PHONE_BLE,
        relay,
        &["--yes", "--name", name],
    );
    assert_eq!(l.code(T), 0, "the laptop failed\n{}{}", l.dump(), ph.dump());
    assert_eq!(ph.code(T), 0, "the phone failed\n{}{}", l.dump(), ph.dump());
    assert!(
        l.stderr().contains(&format!("linked phone {name:?}")),
        "{}",
        l.dump()
    );
    rp.verify_registration(&l.stdout(), &state)
        .expect("the RP accepts the registration")
}

/// Issue 14 over real BlueZ: a QR registration (the phone advertising on hci1, the laptop
/// scanning on hci0) in which the phone links and the laptop stores the link; then
/// `hybridge phone serve --ble bluez:hci1` and `hybridge sign-in --phone NAME --ble
/// bluez:hci0` with no QR code: the relay wakes the phone, which advertises over BlueZ with
/// the link's key, and the laptop runs NKpsk0 with the stored link. An independent RP
/// verifies both responses.
///
/// Meanwhile an unlinked phone (one that scanned someone else's QR code) advertises from the
/// same controller, through its own relay, for the whole sign-in. `hybridge inspect adverts`
/// on the laptop's controller hears it before the sign-in starts, so BlueZ has it cached and
/// the laptop's scan is handed it first: only an advert made with the link's key may be
/// taken. Had the laptop taken the stranger's, it would have followed it to the stranger's
/// relay or derived the wrong PSK from it, and the sign-in would have failed.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn a_phone_linked_over_bluez_signs_in_with_sign_in_phone_and_no_qr_code() {
    require_vm();
    let relay = RelayProc::local();
    let rp = Rp::new();
    let p = Phone::new("bluez-linked");
    let phones = p.dir.path("phones.json");
    let phones = phones.to_str().unwrap();

    // 1. A QR registration over BlueZ; the phone links.
    let credential = link_over_bluez(&p, &rp, &relay.url(), phones, "VM phone");

    // 2. The phone serves wake-ups over BlueZ; the unlinked phone advertises beside it, and
    // the laptop's controller has heard it before the sign-in starts.
    let mut serve = phone_serve_bluez(&p, &relay.url());
    let mut listen = {
        let mut cmd = hybridge_command();
        cmd.args(["inspect", "adverts", "--ble", LAPTOP_BLE, "--for", "600s"]);
        Proc::spawn("inspect adverts", cmd)
    };
    listen
        .wait_stderr(T, |l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("inspect adverts did not start\n{}", listen.dump()));
    let elsewhere = RelayProc::local();
    let stranger = Phone::new("bluez-linked-stranger");
    let mut stranger_qr = {
        use hybridge_proto::qr::{QrKeys, RequestType};
        use hybridge_proto::session::LaptopQr;
        let keys = QrKeys::generate(&mut rand_core::OsRng);
        LaptopQr::new(keys, 1_700_000_000, false, RequestType::MakeCredential)
    };
    let mut foreign = phone(
        hybridge_command(),
        &stranger,
        &stranger_qr.qr_url(),
        PHONE_BLE,
        &elsewhere.url(),
        &["--yes", "--wait", "300s"],
    );
    let mut heard_stranger = || {
        listen.stdout().lines().any(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let data = hex::decode(v["service_data"].as_str().unwrap_or_default());
            data.is_ok_and(|d| matches!(stranger_qr.on_advert(&d), Ok(Some(_))))
        })
    };
    let deadline = Instant::now() + T;
    while !heard_stranger() {
        assert!(
            Instant::now() < deadline,
            "hci0 never heard the unlinked phone\n{}{}",
            listen.dump(),
            foreign.dump()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 3. Sign in with --phone: no QR code.
    let (options, state) = rp.request_options(vec![credential]);
    let opts = p.file("get.json", &options);
    let start = Instant::now();
    let mut l = laptop(
        hybridge_command(),
        "sign-in",
        &opts,
        LAPTOP_BLE,
        &relay.url(),
        &[
            "--scan-timeout",
            "60s",
            "--phones",
            phones,
            "--phone",
            "VM phone",
        ],
    );
    let code = l.code(T * 2);
    let took = start.elapsed();
    assert_eq!(
        code,
        0,
        "the linked sign-in failed\n{}{}{}",
        l.dump(),
        serve.dump(),
        foreign.dump()
    );
    eprintln!("linked sign-in over BlueZ took {took:?}");
    assert!(!l.stderr().contains("FIDO:/"), "no QR code\n{}", l.dump());
    let result = rp
        .verify_assertion(&l.stdout(), &state)
        .expect("the RP accepts the linked assertion");
    assert!(result.user_verified());
    serve
        .wait_stderr(T, |l| l.contains("served a linked getAssertion"))
        .unwrap_or_else(|| panic!("phone serve did not serve it\n{}", serve.dump()));

    // The unlinked phone was still advertising when the laptop finished (it ends with
    // SIGTERM, not with its own timeout), and no laptop ever followed its advert.
    foreign.signal("TERM");
    expect_code(&mut foreign, EXIT_TERMINATED);
    assert_eq!(
        elsewhere.metric("hybridge_relay_connections_total"),
        1.0,
        "only the unlinked phone's own tunnel: no laptop followed its advert"
    );
    serve.signal("TERM");
    expect_code(&mut serve, EXIT_TERMINATED);
    listen.signal("TERM");
    let _ = listen.code(T);
}

/// The laptop alone, scanning on `ble` for `scan_timeout` (no phone, no relay: the relay URL
/// is a closed port, so a laptop that got past the scan would fail with exit code 5).
fn lonely_laptop(name: &str, ble: &str, scan_timeout: &str) -> (Phone, Proc) {
    let rp = Rp::new();
    let p = Phone::new(name);
    let (options, _) = rp.creation_options(name);
    let opts = p.file("register.json", &options);
    let relay = format!("ws://127.0.0.1:{}", closed_tcp_port());
    let l = laptop(
        hybridge_command(),
        "register",
        &opts,
        ble,
        &relay,
        &["--scan-timeout", scan_timeout],
    );
    (p, l)
}

/// Runs the laptop to its end and checks how: exit `code`, within `within` of `start`, and
/// `says` on stderr.
fn assert_ended(l: &mut Proc, start: Instant, code: i32, within: Duration, says: &str) {
    let (got, took) = run_to_end(l, start);
    assert_eq!(got, code, "{}", l.dump());
    assert!(took < within, "took {took:?}\n{}", l.dump());
    assert!(l.stderr().contains(says), "{}", l.dump());
}

/// Runs the laptop to its end; returns its exit code and how long it ran.
fn run_to_end(l: &mut Proc, start: Instant) -> (i32, Duration) {
    let code = l.code(T);
    assert!(l.stdout().is_empty(), "{}", l.dump());
    (code, start.elapsed())
}

#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn a_controller_that_does_not_exist_is_named_in_the_error() {
    require_vm();
    let start = Instant::now();
    let (_p, mut l) = lonely_laptop("bluez-none", "bluez:hci7", "30s");
    let says = "no Bluetooth adapter found named \"hci7\"";
    assert_ended(&mut l, start, EXIT_RADIO, Duration::from_secs(15), says);
}

#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn a_powered_off_controller_is_reported_not_switched_on() {
    // Bluetooth switched off is the user's choice: the laptop says so and how to undo it, and
    // leaves the radio off.
    require_vm();
    let off = PoweredOff::new(0);
    let start = Instant::now();
    let (_p, mut l) = lonely_laptop("bluez-off", LAPTOP_BLE, "30s");
    let says = "adapter hci0 is powered off; turn it on with `bluetoothctl power on`";
    assert_ended(&mut l, start, EXIT_RADIO, Duration::from_secs(15), says);
    assert!(!powered(off.0), "the scan switched hci0 on");
}

#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn a_controller_blocked_by_rfkill_fails_the_scan_at_once() {
    require_vm();
    let _blocked = RfkillBlocked::new(0);
    let start = Instant::now();
    let (_p, mut l) = lonely_laptop("bluez-rfkill", LAPTOP_BLE, "30s");
    // Well before the scan timeout; BlueZ itself says only "Failed", the message names the
    // block and the fix.
    let says = "adapter hci0 is blocked by rfkill; unblock it with `rfkill unblock bluetooth`";
    assert_ended(&mut l, start, EXIT_RADIO, Duration::from_secs(15), says);
}

#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn a_controller_powered_off_during_the_scan_ends_it_at_once() {
    require_vm();
    let start = Instant::now();
    let (_p, mut l) = lonely_laptop("bluez-off-during", LAPTOP_BLE, "30s");
    l.wait_stderr(T, |line| line.contains("waiting for the phone"))
        .unwrap_or_else(|| panic!("the laptop did not start scanning\n{}", l.dump()));
    std::thread::sleep(Duration::from_secs(2));
    let _off = PoweredOff::new(0);
    // The scanner hears the adapter go off and says so, instead of waiting out the 30 s.
    let says = "adapter hci0 is powered off";
    assert_ended(&mut l, start, EXIT_RADIO, Duration::from_secs(25), says);
}

#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn bluetoothd_not_running_is_a_clear_error() {
    require_vm();
    let relay = RelayProc::local();
    let _stopped = BluetoothdStopped::new();
    let rp = Rp::new();
    let p = Phone::new("bluez-nobluetoothd");
    let (options, _) = rp.creation_options("dan");
    let opts = p.file("register.json", &options);
    let laptop = laptop(
        hybridge_command(),
        "register",
        &opts,
        LAPTOP_BLE,
        &relay.url(),
        &["--scan-timeout", "30s"],
    );
    let phone = phone(
        hybridge_command(),
        &p,
        &other_qr(),
        PHONE_BLE,
        &relay.url(),
        &["--yes"],
    );
    let start = Instant::now();
    for (side, mut proc) in [("laptop", laptop), ("phone", phone)] {
        let code = proc.code(T);
        let took = start.elapsed();
        assert_eq!(code, EXIT_RADIO, "{side}\n{}", proc.dump());
        // The phone's D-Bus call first makes D-Bus try to start bluetoothd (its launch helper
        // fails), which takes seconds, and many more on a busy machine.
        assert!(
            took < Duration::from_secs(60),
            "{side} took {took:?}\n{}",
            proc.dump()
        );
        assert!(
            proc.stderr().contains("BlueZ (bluetoothd) is not running"),
            "{side}\n{}",
            proc.dump()
        );
    }
}

/// Soft-blocks a controller through rfkill (as a laptop's Bluetooth switch does); unblocked
/// and powered on again when dropped.
struct RfkillBlocked {
    switch: PathBuf,
    index: u8,
}

impl RfkillBlocked {
    fn new(index: u8) -> RfkillBlocked {
        let adapter = format!("hci{index}");
        let switch = std::fs::read_dir("/sys/class/rfkill")
            .expect("/sys/class/rfkill")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| std::fs::read_to_string(p.join("name")).is_ok_and(|n| n.trim() == adapter))
            .unwrap_or_else(|| panic!("no rfkill switch for {adapter}"));
        std::fs::write(switch.join("soft"), "1").expect("rfkill soft block");
        RfkillBlocked { switch, index }
    }
}

impl Drop for RfkillBlocked {
    fn drop(&mut self) {
        let _ = std::fs::write(self.switch.join("soft"), "0");
        // Powers it on and waits, for the tests after this one.
        drop(PoweredOff(self.index));
    }
}

/// The process IDs of running `bluetoothd`s.
fn bluetoothd_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "bluetoothd")
        })
        .collect()
}

/// Stops bluetoothd, and starts it again when dropped (tests/vm/bluetoothd.sh, as the guest
/// did at boot), waiting until both controllers are back on D-Bus.
struct BluetoothdStopped;

impl BluetoothdStopped {
    fn new() -> BluetoothdStopped {
        for pid in bluetoothd_pids() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bluetoothd_pids().is_empty() {
            assert!(Instant::now() < deadline, "bluetoothd did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        BluetoothdStopped
    }
}

impl Drop for BluetoothdStopped {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/bluetoothd.sh");
        let ok = Command::new("timeout")
            .arg("60")
            .arg(&script)
            .status()
            .is_ok_and(|s| s.success());
        if !ok && !std::thread::panicking() {
            panic!("{} could not start bluetoothd again", script.display());
        }
    }
}

/// A phone whose controller is blocked, then powered off: a clear error naming the cause and
/// the fix, before the relay is contacted (it never sees a connection).
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn a_phone_without_a_usable_controller_says_why_before_it_contacts_the_relay() {
    require_vm();
    let relay = RelayProc::local();
    let p = Phone::new("bluez-phone-off");
    for (case, want) in [
        (
            "blocked",
            "adapter hci1 is blocked by rfkill; unblock it with `rfkill unblock bluetooth`",
        ),
        (
            "off",
            "adapter hci1 is powered off; turn it on with `bluetoothctl power on`",
        ),
    ] {
        let _blocked = (case == "blocked").then(|| RfkillBlocked::new(1));
        let _off = (case == "off").then(|| PoweredOff::new(1));
        let mut ph = phone(
            hybridge_command(),
            &p,
            &other_qr(),
            PHONE_BLE,
            &relay.url(),
            &["--yes"],
        );
        let code = ph.code(T);
        assert_eq!(code, EXIT_RADIO, "{case}\n{}", ph.dump());
        assert!(ph.stderr().contains(want), "{case}\n{}", ph.dump());
        assert!(
            !ph.stderr().contains("tunnel open"),
            "{case}\n{}",
            ph.dump()
        );
    }
    assert_eq!(relay.metric("hybridge_relay_connections_total"), 0.0);
}

/// What the phone puts on the air, heard through BlueZ on hci0: exactly the 20 bytes Chrome on
/// Linux requires for a QR code without key 6, even with `--data-channel` on; 20 bytes plus
/// the CTAP 2.3 suffix `{1: PSM}` only when the QR code offers the data channel.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn the_phone_adds_the_advert_suffix_only_when_the_qr_code_asks() {
    use hybridge_ble::Scanner as _;
    use hybridge_proto::qr::{QrKeys, RequestType};
    use hybridge_proto::session::LaptopQr;
    require_vm();
    let relay = RelayProc::local();
    let p = Phone::new("bluez-suffix");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for offer in [false, true] {
        let mut qr = LaptopQr::new(
            QrKeys::generate(&mut rand_core::OsRng),
            1_700_000_000,
            false,
            RequestType::MakeCredential,
        );
        if offer {
            qr = qr.with_data_channel();
        }
        // BlueZ's own monitor on the phone's controller: what really went to the radio.
        let mut btmon = Proc::spawn("btmon", {
            let mut c = Command::new("btmon");
            c.args(["-i", "hci1"]);
            c
        });
        std::thread::sleep(Duration::from_millis(500));
        let (heard, mut ph) = rt.block_on(async {
            // The scan first: btvirt drops an advert already on the air when a scan starts
            // (see the scanner test below), and the phone's Argon2 store opening under
            // emulation takes a while anyway.
            let radio: hybridge_ble::RadioSpec = LAPTOP_BLE.parse().expect("spec");
            let scanner = radio.scanner().await.expect("the BlueZ scanner opens");
            let mut scan = scanner
                .scan(&[hybridge_ble::UUID_FIDO])
                .await
                .expect("scan");
            // The laptop never comes: the phone advertises until it is stopped below.
            let ph = phone(
                hybridge_command(),
                &p,
                &qr.qr_url(),
                PHONE_BLE,
                &relay.url(),
                &["--yes", "--data-channel", "--wait", "90s"],
            );
            // BlueZ also reports what it cached from earlier phones on the same controller:
            // the advert that decrypts with this QR code's key is the one to look at.
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut ours = None;
            while ours.is_none() && Instant::now() < deadline {
                match scan.next_timeout(Duration::from_secs(90)).await {
                    Ok(adv) if matches!(qr.on_advert(&adv.service_data), Ok(Some(_))) => {
                        ours = Some(adv);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = scan.stop().await;
            (ours, ph)
        });
        let adv = heard.unwrap_or_else(|| panic!("no advert of this QR code\n{}", ph.dump()));
        let _ = Command::new("kill")
            .args(["-TERM", &btmon.pid().to_string()])
            .status();
        let _ = btmon.code(T);
        let on_air = btmon_service_data(&btmon.stdout(), &format!("0x{:04x}", adv.uuid16));
        assert!(
            on_air.contains(&hex::encode(&adv.service_data)),
            "btmon did not see the advert's bytes go to hci1: {on_air:?}\n{}",
            btmon.dump()
        );
        for data in &on_air {
            let len = data.len() / 2;
            assert!(
                if offer { len > 20 } else { len == 20 },
                "{len} bytes of service data on air ({data}), offered: {offer}"
            );
        }
        if offer {
            // {1: PSM}: a one-entry map, key 1, a PSM in the LE dynamic range (from 0x80:
            // one byte after 0x18, two after 0x19).
            let suffix = &adv.service_data[20..];
            let psm = match suffix {
                [0xa1, 0x01, 0x18, p] => u16::from(*p),
                [0xa1, 0x01, 0x19, hi, lo] => u16::from_be_bytes([*hi, *lo]),
                other => panic!("not a {{1: PSM}} suffix: {other:02x?}"),
            };
            assert!(psm >= 0x80, "PSM {psm:#06x}");
        } else {
            assert_eq!(adv.service_data.len(), 20, "{adv:?}");
        }
        ph.signal("TERM");
        let _ = ph.code(T);
    }
}

/// Listens on the laptop's controller with `hybridge inspect adverts` for `secs` seconds,
/// doing `during` meanwhile; every advert heard, as (address, UUID, service data hex).
fn adverts_heard(secs: u32, during: impl FnOnce()) -> Vec<(String, String, String)> {
    let mut cmd = hybridge_command();
    cmd.args(["inspect", "adverts", "--ble", LAPTOP_BLE])
        .args(["--for", &format!("{secs}s")]);
    let mut listen = Proc::spawn("inspect adverts", cmd);
    // Adverts put on the air before the scan starts may fall in btvirt's window (below).
    listen
        .wait_stderr(T, |l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("inspect adverts did not start\n{}", listen.dump()));
    during();
    assert_eq!(listen.code(T), 0, "{}", listen.dump());
    listen
        .stdout()
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (field("address"), field("uuid"), field("service_data"))
        })
        .collect()
}

/// The adverts real phones send, put on the air by btmgmt on the phone's controller, reach
/// the laptop's scanner through bluetoothd: Chrome on Android's (a service-UUID list and
/// service data under 0xFFF9) and an iPhone's (service data under 0xFDE2, no UUID list, flags
/// without the discoverable bits, so BlueZ drops it unless the scan filters by itself). A
/// device whose advert changes is reported again with the new bytes, and the scan asked
/// bluetoothd for repeats (DuplicateData) and LE only.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn the_scanner_hears_android_and_iphone_adverts_and_their_changes() {
    require_vm();
    let android = format!("{:040x}", 0xa1a1_u32);
    let iphone = format!("{:040x}", 0x1f1f_u32);
    let _ = try_btmgmt(1, &["clr-adv"]);
    // Non-connectable adverts: the kernel gives each a fresh non-resolvable random address.
    btmgmt(
        1,
        &["add-adv", "-d", &format!("0303f9ff1716f9ff{android}"), "1"],
    );
    btmgmt(
        1,
        &["add-adv", "-d", &format!("0201041716e2fd{iphone}"), "2"],
    );
    let heard = adverts_heard(10, || {});
    let _ = try_btmgmt(1, &["clr-adv"]);
    for (uuid, data) in [("fff9", &android), ("fde2", &iphone)] {
        assert!(
            heard.iter().any(|(_, u, d)| u == uuid && d == data),
            "no {uuid} advert {data} among {heard:?}"
        );
    }
    // A connectable advert keeps the controller's own address: the same device, new bytes.
    // Both go on the air while the scan runs: btvirt reports what is already on the air the
    // instant a scan starts, before the kernel counts discovery as started, which drops it
    // (see btmon), and then filters that address's repeats until the next discovery window.
    let first = format!("{:040x}", 0xc1_u32);
    let second = format!("{:040x}", 0xc2_u32);
    let heard = adverts_heard(10, || {
        std::thread::sleep(Duration::from_secs(2));
        btmgmt(
            1,
            &["add-adv", "-c", "-d", &format!("1716e2fd{first}"), "3"],
        );
        std::thread::sleep(Duration::from_secs(3));
        btmgmt(
            1,
            &["add-adv", "-c", "-d", &format!("1716e2fd{second}"), "3"],
        );
    });
    let _ = try_btmgmt(1, &["clr-adv"]);
    let from = |data: &str| {
        heard
            .iter()
            .find(|(_, _, d)| d == data)
            .map(|(a, _, _)| a.clone())
            .unwrap_or_else(|| panic!("advert {data} not heard among {heard:?}"))
    };
    assert_eq!(from(&first), from(&second), "{heard:?}");
    // What the scan asked of bluetoothd, from bluetoothd's own debug log.
    let log = std::fs::read_to_string("/run/hybridge-vm/logs/bluetoothd.log")
        .expect("bluetoothd's log in the guest");
    let asked = log
        .lines()
        .rev()
        .find(|l| l.contains("filtered discovery params"))
        .unwrap_or_else(|| panic!("no discovery filter in bluetoothd's log"));
    assert!(asked.contains("duplicate data: true"), "{asked}");
    // BlueZ's address-type bits: 1 = BR/EDR, 2 and 4 = LE public and random. (On btvirt's
    // LE-only controllers "auto" would also come out as 6; on a dual-mode laptop it is 7.)
    assert!(asked.contains("transport: 6 "), "{asked}");
}

/// The service data under `uuid` (e.g. `0xfde2`) in btmon's decoded output, as hex, in the
/// order it appears (btmon prints `Service Data: <name> (0xfde2)` and then `Data: <hex>`).
fn btmon_service_data(text: &str, uuid: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.contains("Service Data:") && line.contains(&format!("({uuid})")) {
            if let Some(data) = lines.next().and_then(|l| l.trim().strip_prefix("Data: ")) {
                found.push(data.trim().to_owned());
            }
        }
    }
    found
}

/// `hybridge key`: the virtual security key on the guest's /dev/uhid.
#[path = "vm_key.rs"]
mod key;

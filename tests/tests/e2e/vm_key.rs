//! `hybridge key` in the VM tier: the virtual security key on the guest's `/dev/uhid`, found
//! and used by real FIDO clients (libfido2's tools, python-fido2, OpenSSH), with
//! `hybridge phone` answering over BlueZ (hci1 → hci0) and a relay. The results are checked
//! by verifiers that are not hybridge: libfido2 (`fido2-cred -V`, `fido2-assert -V`),
//! webauthn-rs-core (python-fido2's responses, as a relying party would get them from a
//! browser) and OpenSSH (`ssh-keygen -Y verify`).

use std::io::Write as _;

use super::*;

/// The key's USB IDs as `fido2-token -L` prints them.
const KEY_IDS: &str = "vendor=0x1209, product=0x0001";

/// Debian's python (with python3-fido2), not whatever python3 comes first on PATH.
const PYTHON: &str = "/usr/bin/python3";

/// Whether the FIDO client tools are here; under CI their absence fails the test.
fn have_fido_tools(test: &str) -> bool {
    if !have_command("fido2-token", &["-V"]) {
        missing(test, "fido2-token", "apt-get install fido2-tools");
        return false;
    }
    true
}

/// A running `hybridge key` with its relay, and the hidraw node it made.
struct Key {
    proc: Proc,
    relay: RelayProc,
    dir: TempDir,
    qr: PathBuf,
    hidraw: String,
    scan_timeout: String,
}

impl Key {
    fn start(name: &str) -> Key {
        Key::start_on(name, RelayProc::local(), "60s", &[])
    }

    /// [`start`](Self::start) with the key's `--scan-timeout` (and the phone's `--wait`): a
    /// browser in the guest slows BlueZ's scan down (one Chromium run in the suite missed 60 s).
    fn start_with(name: &str, scan_timeout: &str) -> Key {
        Key::start_on(name, RelayProc::local(), scan_timeout, &[])
    }

    /// [`start`](Self::start) on `relay`, with that `--scan-timeout` and `extra` flags.
    fn start_on(name: &str, relay: RelayProc, scan_timeout: &str, extra: &[&str]) -> Key {
        let dir = TempDir::new(name);
        let qr = dir.path("qr.txt");
        let mut cmd = hybridge_command();
        cmd.args(["key", "--ble", LAPTOP_BLE, "--relay", &relay.url()])
            .args(["--scan-timeout", scan_timeout, "--qr-out"])
            .arg(&qr)
            .args(extra);
        let proc = Proc::spawn("key", cmd);
        proc.wait_stderr(T, |l| l.contains("is ready"))
            .unwrap_or_else(|| panic!("the key did not start\n{}", proc.dump()));
        let deadline = Instant::now() + Duration::from_secs(20);
        let hidraw = loop {
            let list = fido2_token(&["-L"]);
            if let Some(line) = list.lines().find(|l| l.contains(KEY_IDS)) {
                break line.split(':').next().unwrap_or_default().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "fido2-token -L does not list the key: {list:?}\n{}",
                proc.dump()
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        Key {
            proc,
            relay,
            dir,
            qr,
            hidraw,
            scan_timeout: scan_timeout.to_owned(),
        }
    }

    /// Waits for the key's QR code (`--qr-out`), then has `hybridge phone --qr-file` answer
    /// it over BlueZ, approving; returns the phone's stderr.
    fn phone_answers(&self, p: &Phone, client: &Proc) -> String {
        self.phone_answers_within(p, client, T)
    }

    /// [`phone_answers`](Self::phone_answers), giving the client `limit` to reach the key.
    fn phone_answers_within(&self, p: &Phone, client: &Proc, limit: Duration) -> String {
        self.wait_for_qr(client, limit);
        let mut cmd = hybridge_command();
        cmd.args(["phone", "--qr-file"])
            .arg(&self.qr)
            .args(["--relay", &self.relay.url(), "--ble", PHONE_BLE, "--yes"])
            .args(["--wait", &self.scan_timeout])
            .arg("--store")
            .arg(p.store())
            .arg("--pin-file")
            .arg(p.pin_file());
        let mut ph = Proc::spawn("phone", cmd);
        // Two Argon2 PIN checks (opening the store, approving) under emulation, and a browser
        // in the guest competing for its two emulated CPUs: generous.
        let code = ph.code(limit.max(T * 3));
        assert_eq!(
            code,
            0,
            "the phone failed\n{}{}{}",
            ph.dump(),
            self.proc.dump(),
            client.dump()
        );
        ph.stderr()
    }

    fn wait_for_qr(&self, client: &Proc, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !std::fs::read_to_string(&self.qr).is_ok_and(|s| s.starts_with("FIDO:/")) {
            assert!(
                Instant::now() < deadline,
                "the key wrote no QR code to {}\n{}{}",
                self.qr.display(),
                self.proc.dump(),
                client.dump()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a client to its end, which must succeed; its stdout.
    fn finish(&self, client: &mut Proc) -> String {
        let code = client.code(T);
        assert_eq!(code, 0, "{}{}", client.dump(), self.proc.dump());
        client.stdout()
    }
}

fn fido2_token(args: &[&str]) -> String {
    let out = Command::new("fido2-token")
        .args(args)
        .output()
        .expect("run fido2-token");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Starts `program args` with `input` on stdin.
fn client(name: &str, program: &str, args: &[&str], input: &str) -> Proc {
    let mut cmd = Command::new(program);
    cmd.args(args);
    Proc::spawn_with_input(name, cmd, Some(input.as_bytes()))
}

fn b64(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    // Standard base64 with padding, as libfido2's tools read and write it.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                let _ = s.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Every line `fido2-token` tells about the key, through `-L` and `-I`, then a registration
/// with `fido2-cred -M` and an assertion with `fido2-assert -G` through the key, both
/// answered by the phone and verified by libfido2 (`-V`), which checks the attestation and
/// assertion signatures against the credential's public key.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn libfido2_tools_register_and_assert_through_the_key() {
    require_vm();
    if !have_fido_tools(&hybridge_testkit::this_test()) {
        return;
    }
    let key = Key::start("key-libfido2");
    let p = Phone::new("key-libfido2");

    let info = fido2_token(&["-I", &key.hidraw]);
    for want in [
        "caps: 0x0d (wink, cbor, nomsg)",
        "version strings: FIDO_2_0, FIDO_2_1",
        "transport strings: hybrid, usb",
        "algorithms: es256 (public-key)",
        "options: rk, up, uv, noplat",
        "maxmsgsiz: 7609",
    ] {
        assert!(info.contains(want), "fido2-token -I lacks {want:?}: {info}");
    }

    libfido2_registers_and_asserts(&key, |client| {
        key.phone_answers(&p, client);
    });
    assert!(
        !key.qr.exists(),
        "the QR code is removed once the phone answered"
    );
}

/// `fido2-cred -M` for alice at example.com through `key`, as the QR and linked tests make it.
fn make_credential(key: &Key) -> Proc {
    let input = format!(
        "{}\nexample.com\nalice\n{}\n",
        b64(&[7u8; 32]),
        b64(b"alice-id")
    );
    client(
        "fido2-cred -M",
        "fido2-cred",
        &["-M", "-r", &key.hidraw, "es256"],
        &input,
    )
}

/// libfido2 registers (`fido2-cred -M`) and asserts (`fido2-assert -G -p`) through `key`,
/// `answer` seeing to each ceremony's phone; `-V` checks the attestation and the assertion
/// against the credential's public key, and a tampered assertion must fail it.
fn libfido2_registers_and_asserts(key: &Key, mut answer: impl FnMut(&Proc)) {
    let mut mc = make_credential(key);
    answer(&mc);
    let cred = key.finish(&mut mc);

    // fido2-cred -V: checks the attestation; writes the credential's public key.
    let pubkey = key.dir.path("cred.pem");
    let mut v = client(
        "fido2-cred -V",
        "fido2-cred",
        &["-V", "-o", pubkey.to_str().unwrap(), "es256"],
        &cred,
    );
    let code = v.code(T);
    assert_eq!(code, 0, "libfido2 rejects the attestation\n{}", v.dump());
    let cred_id = cred
        .lines()
        .nth(4)
        .expect("fido2-cred -M prints the credential ID")
        .to_owned();

    // fido2-assert -G: client data hash, RP ID, credential ID in; -p asks for presence.
    let input = format!("{}\nexample.com\n{cred_id}\n", b64(&[9u8; 32]));
    let mut ga = client(
        "fido2-assert -G",
        "fido2-assert",
        &["-G", "-p", &key.hidraw],
        &input,
    );
    answer(&ga);
    let assertion = key.finish(&mut ga);
    let mut v = client(
        "fido2-assert -V",
        "fido2-assert",
        &["-V", "-p", pubkey.to_str().unwrap(), "es256"],
        &assertion,
    );
    let code = v.code(T);
    assert_eq!(code, 0, "libfido2 rejects the assertion\n{}", v.dump());
    // A tampered assertion must fail the same verifier (so the check above can fail).
    let mut bad: Vec<String> = assertion.lines().map(str::to_owned).collect();
    bad[0] = b64(&[8u8; 32]);
    let mut v = client(
        "fido2-assert -V (tampered)",
        "fido2-assert",
        &["-V", "-p", pubkey.to_str().unwrap(), "es256"],
        &(bad.join("\n") + "\n"),
    );
    assert_ne!(v.code(T), 0, "a wrong client data hash must not verify");
}

/// The python-fido2 client (Fido2Client, as a browser would drive the key), registering and
/// signing in against webauthn-rs-core's options; webauthn-rs-core verifies the
/// clientDataJSON, attestation object and assertion it produced.
const PY_CLIENT: &str = r#"
import base64, json, sys, threading, time, os
from fido2 import cbor
from fido2.hid import CtapHidDevice
from fido2.client import Fido2Client, ClientError
from fido2.webauthn import (PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions,
    PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity, PublicKeyCredentialParameters,
    PublicKeyCredentialDescriptor, AuthenticatorSelectionCriteria)

def d(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def e(b): return base64.urlsafe_b64encode(bytes(b)).rstrip(b"=").decode()

dev = next(d for d in CtapHidDevice.list_devices() if (d.descriptor.vid, d.descriptor.pid) == (0x1209, 0x0001))
client = Fido2Client(dev, "https://example.com")
mode, path = sys.argv[1], sys.argv[2]
pk = json.load(open(path))["publicKey"]
if mode in ("register", "cancel"):
    options = PublicKeyCredentialCreationOptions(
        PublicKeyCredentialRpEntity(pk["rp"]["id"], pk["rp"]["name"]),
        PublicKeyCredentialUserEntity(d(pk["user"]["id"]), pk["user"]["name"], display_name=pk["user"]["displayName"]),
        d(pk["challenge"]),
        [PublicKeyCredentialParameters(p["type"], p["alg"]) for p in pk["pubKeyCredParams"]],
        authenticator_selection=AuthenticatorSelectionCriteria(require_resident_key=True, user_verification="required"),
    )
    if mode == "cancel":
        event = threading.Event()
        qr = sys.argv[3]
        def cancel_when_the_qr_shows():
            while not os.path.exists(qr): time.sleep(0.05)
            event.set()
        threading.Thread(target=cancel_when_the_qr_shows, daemon=True).start()
        try:
            client.make_credential(options, event=event)
            print("not cancelled")
        except ClientError as err:
            print("cancelled:", err.code)
        sys.exit(0)
    r = client.make_credential(options)
    att = r.attestation_object
    cred_id = att.auth_data.credential_data.credential_id
    # python-fido2 0.9 keeps CTAP's integer keys; WebAuthn's attestation object has names.
    att_obj = cbor.encode({"fmt": att.fmt, "authData": bytes(att.auth_data), "attStmt": att.att_statement})
    print(json.dumps({"id": e(cred_id), "rawId": e(cred_id), "type": "public-key", "extensions": {},
        "response": {"attestationObject": e(att_obj), "clientDataJSON": e(r.client_data)}}))
else:
    options = PublicKeyCredentialRequestOptions(
        d(pk["challenge"]), rp_id=pk["rpId"],
        allow_credentials=[PublicKeyCredentialDescriptor(c["type"], d(c["id"])) for c in pk.get("allowCredentials", [])],
        user_verification="required",
    )
    r = client.get_assertion(options).get_response(0)
    cred_id = r.credential_id if r.credential_id else d(pk["allowCredentials"][0]["id"])
    print(json.dumps({"id": e(cred_id), "rawId": e(cred_id), "type": "public-key", "extensions": {},
        "response": {"authenticatorData": e(r.authenticator_data), "clientDataJSON": e(r.client_data),
                     "signature": e(r.signature), "userHandle": e(r.user_handle) if r.user_handle else None}}))
"#;

#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn python_fido2_registers_and_signs_in_through_the_key_verified_by_an_independent_rp() {
    require_vm();
    let test = hybridge_testkit::this_test();
    if !have_command(PYTHON, &["-c", "import fido2.client"]) {
        missing(&test, "python3-fido2", "apt-get install python3-fido2");
        return;
    }
    let key = Key::start("key-python");
    let p = Phone::new("key-python");
    let script = p.file("client.py", PY_CLIENT);
    let rp = Rp::new();

    let (options, state) = rp.creation_options("bob");
    let opts = p.file("create.json", &options);
    let args = [script.to_str().unwrap(), "register", opts.to_str().unwrap()];
    let mut py = client("python-fido2 register", PYTHON, &args, "");
    key.phone_answers(&p, &py);
    let out = key.finish(&mut py);
    let credential = rp
        .verify_registration(&out, &state)
        .expect("the RP accepts python-fido2's registration through the key");

    let (options, state) = rp.request_options(vec![credential]);
    let opts = p.file("get.json", &options);
    let args = [script.to_str().unwrap(), "sign-in", opts.to_str().unwrap()];
    let mut py = client("python-fido2 sign-in", PYTHON, &args, "");
    key.phone_answers(&p, &py);
    let out = key.finish(&mut py);
    let result = rp
        .verify_assertion(&out, &state)
        .expect("the RP accepts python-fido2's assertion through the key");
    assert!(result.user_verified());

    // CTAPHID CANCEL while the key waits for the phone: python-fido2 gets the cancellation
    // at once, the key lets the ceremony go and removes its QR code.
    let (options, _) = rp.creation_options("carol");
    let opts = p.file("create2.json", &options);
    let qr = key.qr.to_str().unwrap();
    let args = [
        script.to_str().unwrap(),
        "cancel",
        opts.to_str().unwrap(),
        qr,
    ];
    let mut py = client("python-fido2 cancel", PYTHON, &args, "");
    let out = key.finish(&mut py);
    assert!(out.starts_with("cancelled"), "{out}");
    key.proc
        .wait_stderr(T, |l| l.contains("the application cancelled"))
        .unwrap_or_else(|| panic!("the key did not see the CANCEL\n{}", key.proc.dump()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while key.qr.exists() {
        assert!(
            Instant::now() < deadline,
            "the QR code outlived the ceremony"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// OpenSSH: `ssh-keygen -t ecdsa-sk` makes a key through the hybridge key (a makeCredential
/// for RP `ssh:`), `ssh-keygen -Y sign` signs with it (a getAssertion, after OpenSSH's own
/// silent probe) and `ssh-keygen -Y verify` checks that signature.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn ssh_keygen_makes_an_ecdsa_sk_key_through_the_key_and_signs_with_it() {
    require_vm();
    let test = hybridge_testkit::this_test();
    if !have_command("sh", &["-c", "command -v ssh-keygen"]) {
        missing(&test, "ssh-keygen", "apt-get install openssh-client");
        return;
    }
    let key = Key::start("key-ssh");
    let p = Phone::new("key-ssh");
    let id = key.dir.path("id_ecdsa_sk");
    let id_s = id.to_str().unwrap();
    let mut kg = client(
        "ssh-keygen -t ecdsa-sk",
        "ssh-keygen",
        &["-t", "ecdsa-sk", "-f", id_s, "-N", "", "-C", "alice@vm"],
        "",
    );
    key.phone_answers(&p, &kg);
    key.finish(&mut kg);
    let public = std::fs::read_to_string(format!("{id_s}.pub")).expect("the public key");
    assert!(
        public.starts_with("sk-ecdsa-sha2-nistp256@openssh.com "),
        "{public}"
    );

    let msg = key.dir.path("message");
    std::fs::write(&msg, b"signed through a phone\n").unwrap();
    let mut sign = client(
        "ssh-keygen -Y sign",
        "ssh-keygen",
        &[
            "-Y",
            "sign",
            "-f",
            id_s,
            "-n",
            "file",
            msg.to_str().unwrap(),
        ],
        "",
    );
    key.phone_answers(&p, &sign);
    key.finish(&mut sign);

    let allowed = key.dir.path("allowed_signers");
    let mut f = std::fs::File::create(&allowed).unwrap();
    writeln!(f, "alice@vm {}", public.trim()).unwrap();
    let verify = |content: &[u8]| {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-Y", "verify", "-f", allowed.to_str().unwrap()])
            .args(["-I", "alice@vm", "-n", "file", "-s"])
            .arg(format!("{}.sig", msg.display()));
        let mut v = Proc::spawn_with_input("ssh-keygen -Y verify", cmd, Some(content));
        v.code(T)
    };
    assert_eq!(
        verify(b"signed through a phone\n"),
        0,
        "OpenSSH verifies it"
    );
    assert_ne!(verify(b"something else\n"), 0, "and refuses other content");
}

/// `hybridge key --phone NAME` (issue 13 with issue 14): a phone linked by a QR registration
/// over BlueZ answers the key's requests with no QR code. First the refusals, as libfido2
/// reports them: with no `phone serve` subscribed, the relay's 410 makes `fido2-cred -M` fail
/// with FIDO_ERR_ERR_OTHER (CTAP1_ERR_OTHER) at once, and the key says the phone is unreachable; with the phone
/// renamed in the phones file while the key runs, the same, and the key says no phone has
/// that name. Then `hybridge phone serve` on hci1: `fido2-cred -M` and `fido2-assert -G`
/// through the key, each answered by the woken phone over BlueZ, and verified by libfido2
/// (`-V`). No QR code is ever shown or written.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn libfido2_registers_and_asserts_through_the_key_with_a_linked_phone() {
    require_vm();
    if !have_fido_tools(&hybridge_testkit::this_test()) {
        return;
    }
    let relay = RelayProc::local();
    let relay_url = relay.url();
    let rp = Rp::new();
    let p = Phone::new("key-linked");
    let phones = p.dir.path("phones.json");
    let phones = phones.to_str().unwrap();
    link_over_bluez(&p, &rp, &relay_url, phones, "VM phone");
    let key = Key::start_on(
        "key-linked",
        relay,
        "60s",
        &["--phones", phones, "--phone", "VM phone"],
    );
    key.proc
        .wait_stderr(T, |l| {
            l.contains("requests go to the linked phone \"VM phone\"")
        })
        .unwrap_or_else(|| panic!("the key did not name its phone\n{}", key.proc.dump()));

    let refused = |says: &[&str]| {
        let start = Instant::now();
        let mut mc = make_credential(&key);
        assert_ne!(mc.code(T), 0, "{}{}", mc.dump(), key.proc.dump());
        assert!(
            // libfido2's name for CTAP1_ERR_OTHER (0x7f); its own FIDO_ERR_OTHER is -7.
            mc.stderr().contains("FIDO_ERR_ERR_OTHER"),
            "{}{}",
            mc.dump(),
            key.proc.dump()
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
        key.proc
            .wait_stderr(T, |l| {
                says.iter().all(|s| l.contains(s))
                    && l.contains("the application is told CTAP1_ERR_OTHER")
            })
            .unwrap_or_else(|| panic!("the key did not say {says:?}\n{}", key.proc.dump()));
    };
    // No phone subscribed: unreachable.
    refused(&[
        "phone \"VM phone\"",
        "the phone is unreachable",
        "(HTTP 410)",
    ]);
    // The phone renamed in the phones file while the key runs: no phone by that name.
    let rename = |from: &str, to: &str| {
        let out = hybridge_command()
            .args(["phones", "rename", from, to, "--phones", phones])
            .output()
            .expect("run hybridge phones rename");
        assert!(out.status.success(), "{out:?}");
    };
    rename("VM phone", "Other name");
    refused(&["no linked phone named \"VM phone\"; linked phones: \"Other name\""]);
    rename("Other name", "VM phone");

    // The phone serves wake-ups: a registration and an assertion through the key.
    let mut serve = phone_serve_bluez(&p, &relay_url);
    // Nothing to do for the phone: `phone serve` answers the wake-ups.
    libfido2_registers_and_asserts(&key, |_| {});

    for command in ["makeCredential", "getAssertion"] {
        assert!(
            serve
                .stderr()
                .contains(&format!("served a linked {command} (status 0x00)")),
            "{}",
            serve.dump()
        );
    }
    let said = key.proc.stderr();
    assert!(!said.contains("FIDO:/"), "no QR code\n{said}");
    assert!(!key.qr.exists(), "no QR code file");
    serve.signal("TERM");
    expect_code(&mut serve, EXIT_TERMINATED);
}

/// SIGTERM removes the device: its hidraw node goes, and the key ends with 143.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn sigterm_removes_the_device() {
    require_vm();
    if !have_fido_tools(&hybridge_testkit::this_test()) {
        return;
    }
    let mut key = Key::start("key-sigterm");
    assert!(Path::new(&key.hidraw).exists());
    key.proc.signal("TERM");
    assert_eq!(key.proc.code(T), EXIT_TERMINATED, "{}", key.proc.dump());
    let deadline = Instant::now() + Duration::from_secs(5);
    while fido2_token(&["-L"]).contains(KEY_IDS) {
        assert!(Instant::now() < deadline, "the device outlived the key");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The relying party's page for the browser test: it fetches the options, calls
/// `navigator.credentials.create` and `.get`, and posts the results (or the error) back.
const RP_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>hybridge key test</title>
<script>
async function post(path, body) { await fetch(path, { method: "POST", body }); }
async function run() {
  try {
    const c = await (await fetch("/create-options")).json();
    const cred = await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(c.publicKey) });
    await post("/registration", JSON.stringify(cred.toJSON()));
    const r = await (await fetch("/request-options")).json();
    const a = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(r.publicKey) });
    await post("/assertion", JSON.stringify(a.toJSON()));
  } catch (e) {
    await post("/error", String(e) + "\n" + (e.stack || ""));
  }
}
run();
</script>
"#;

/// Serves the page and the options files of a directory on the loopback, and stores what the
/// page posts there (`/request-options` waits until the test has written its file).
const RP_SERVER: &str = r#"
import http.server, os, sys, time
root, port = sys.argv[1], int(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, body, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/":
            return self.reply(open(os.path.join(root, "page.html"), "rb").read(), "text/html")
        if self.path in ("/create-options", "/request-options"):
            path = os.path.join(root, self.path[1:] + ".json")
            deadline = time.time() + 600
            while not os.path.exists(path) and time.time() < deadline:
                time.sleep(0.1)
            return self.reply(open(path, "rb").read(), "application/json")
        self.send_error(404)
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        name = {"/registration": "registration.json", "/assertion": "assertion.json", "/error": "error.txt"}.get(self.path)
        if name:
            tmp = os.path.join(root, name + ".partial")
            open(tmp, "wb").write(body)
            os.rename(tmp, os.path.join(root, name))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// How long a browser may take to start and call `create` (Firefox about 220 s, Chromium about
/// 70 s under TCG on 2 cores).
const BROWSER_START: Duration = Duration::from_secs(480);

/// Which browser, and how it starts on `url` with its profile in `profile`.
enum Browser {
    Firefox,
    Chromium,
}

impl Browser {
    fn command(&self, url: &str, profile: &Path) -> Command {
        match self {
            Browser::Firefox => {
                std::fs::write(
                    profile.join("user.js"),
                    "user_pref(\"browser.shell.checkDefaultBrowser\", false);\n\
                     user_pref(\"datareporting.policy.dataSubmissionEnabled\", false);\n\
                     user_pref(\"toolkit.telemetry.reportingpolicy.firstRun\", false);\n\
                     user_pref(\"browser.aboutwelcome.enabled\", false);\n\
                     user_pref(\"security.webauth.webauthn_enable_softtoken\", false);\n\
                     user_pref(\"security.webauth.webauthn_enable_usbtoken\", true);\n",
                )
                .unwrap();
                let mut c = Command::new("firefox-esr");
                c.args(["--headless", "--no-remote", "--profile"])
                    .arg(profile)
                    .arg(url)
                    .env("MOZ_HEADLESS", "1");
                c
            }
            Browser::Chromium => {
                let mut c = Command::new("chromium");
                // One process: under the guest's emulation Chromium's child processes miss
                // its 15 s connection deadline and the network service restarts forever.
                c.args([
                    "--headless=new",
                    "--no-sandbox",
                    "--single-process",
                    "--no-zygote",
                ])
                .args([
                    "--enable-features=NetworkServiceInProcess2",
                    "--disable-gpu",
                ])
                .arg("--no-first-run")
                // One argument: a separate path would be a second page to open.
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(url);
                c
            }
        }
    }
}

/// Adds the WebAuthn `hints: ["security-key"]` (and, for create, a cross-platform
/// attachment): Chromium then goes to USB keys at once instead of asking, in a dialog nobody
/// can click here, which kind of authenticator to use. Nothing the RP verifies changes.
fn security_key_hints(options: &str, create: bool) -> String {
    let mut v: serde_json::Value = serde_json::from_str(options).unwrap();
    let pk = &mut v["publicKey"];
    pk["hints"] = serde_json::json!(["security-key"]);
    if create {
        pk["authenticatorSelection"]["authenticatorAttachment"] = "cross-platform".into();
    }
    v.to_string()
}

/// A headless browser on a page on the guest's loopback: `navigator.credentials.create` and
/// `.get` go through the hybridge key (neither browser uses hybrid on Linux here; they see a
/// USB key), the phone answers, and webauthn-rs-core verifies what the page got. Returns the
/// key's stderr.
fn browser_registers_and_signs_in(browser: Browser, name: &str) -> String {
    let key = Key::start_with(name, "180s");
    let p = Phone::new(name);
    let web = TempDir::new(&format!("{name}-web"));
    std::fs::write(web.path("page.html"), RP_PAGE).unwrap();
    let server_py = p.file("server.py", RP_SERVER);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let origin = format!("http://localhost:{port}");
    let rp = Rp::for_origin("localhost", &origin);
    let mut server = Command::new(PYTHON);
    server.arg(&server_py).arg(&web.0).arg(port.to_string());
    let server = Proc::spawn("rp server", server);

    let (options, reg_state) = rp.creation_options("dave");
    std::fs::write(
        web.path("create-options.json"),
        security_key_hints(&options, true),
    )
    .unwrap();

    let profile = TempDir::new(&format!("{name}-profile"));
    let mut cmd = browser.command(&format!("{origin}/"), &profile.0);
    cmd.env("HOME", &profile.0);
    let browser = Proc::spawn("browser", cmd);

    let wait_file = |file: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok(e) = std::fs::read_to_string(web.path("error.txt")) {
                panic!(
                    "the page failed: {e}\n{}{}{}",
                    key.proc.dump(),
                    browser.dump(),
                    server.dump()
                );
            }
            if let Ok(s) = std::fs::read_to_string(web.path(file)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no {file} from the page\n{}{}",
                key.proc.dump(),
                browser.dump()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // The browser under the guest's emulation takes minutes to start and load the page.
    key.phone_answers_within(&p, &browser, BROWSER_START);
    let registration = wait_file("registration.json");
    let credential = rp
        .verify_registration(&registration, &reg_state)
        .expect("the RP accepts the browser's registration through the key");

    let (options, state) = rp.request_options(vec![credential]);
    std::fs::write(
        web.path("request-options.json"),
        security_key_hints(&options, false),
    )
    .unwrap();
    key.phone_answers_within(&p, &browser, BROWSER_START);
    let assertion = wait_file("assertion.json");
    let result = rp
        .verify_assertion(&assertion, &state)
        .expect("the RP accepts the browser's assertion through the key");
    assert!(result.user_verified());
    key.proc.stderr()
}

/// In the VM, with the browser `command` (a Debian package of that name) installed; else
/// says what is missing (a failure under CI) and `false`.
fn require_browser(command: &str) -> bool {
    require_vm();
    let there = have_command("sh", &["-c", &format!("command -v {command}")]);
    if !there {
        missing(
            &hybridge_testkit::this_test(),
            command,
            &format!("apt-get install {command}"),
        );
    }
    there
}

/// Firefox ESR (which has no hybrid on Linux at all). Its sign-in starts with a silent
/// pre-flight probe (a `up: false` getAssertion with the allowList), which the key answers
/// without the phone before the real request reaches the phone.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn firefox_registers_and_signs_in_through_the_key() {
    if !require_browser("firefox-esr") {
        return;
    }
    let stderr = browser_registers_and_signs_in(Browser::Firefox, "key-firefox");
    assert!(
        stderr.contains("a silent probe (up=false) was answered without the phone"),
        "Firefox's pre-flight probe reached the key and was answered there\n{stderr}"
    );
}

/// Chromium, headless in one process.
#[test]
#[ignore = "needs BlueZ controllers: runs in the VM tier, tests/vm/run.sh"]
fn chromium_registers_and_signs_in_through_the_key() {
    if !require_browser("chromium") {
        return;
    }
    browser_registers_and_signs_in(Browser::Chromium, "key-chromium");
}

//! `hybridge key`: a virtual FIDO2 security key (through `/dev/uhid`) whose authenticator is
//! a phone, reached over hybrid.
//!
//! Applications (browsers, libfido2, OpenSSH, python-fido2, pam_u2f) find a USB HID FIDO
//! device and speak CTAPHID to it; [`hybridge_key::Engine`] frames that, and this module
//! decides what each CTAP2 request becomes:
//!
//! * `authenticatorGetInfo`: answered at once ([`get_info`]), before any phone is involved.
//! * `authenticatorMakeCredential` / `authenticatorGetAssertion` that need the user: a hybrid
//!   ceremony. The QR code goes to the terminal (and `--qr-out`) — or, with `--phone NAME`,
//!   there is none: the linked phone is woken through its relay, as `sign-in --phone` does —
//!   the request bytes go to the phone unchanged (the application already computed the
//!   clientDataHash) and the phone's answer comes back unchanged. A ceremony that gets no
//!   answer from the phone gives the application a CTAP error ([`Failure`]) and the terminal
//!   one line saying why. `KEEPALIVE` says "user presence needed" while the person
//!   scans and decides, "processing" while the tunnel and handshake run. `CANCEL` from the
//!   application, or the last application closing the device, drops the ceremony: the scan
//!   stops and the tunnel's socket is closed.
//! * Requests that need no user: see [`silent_answer`].
//! * One ceremony at a time: a second application's request meanwhile gets
//!   `ERR_CHANNEL_BUSY`; its `INIT`, `PING` and getInfo are still answered.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use hybridge_cbor::Value;
use hybridge_client::render;
use hybridge_client::session::{Error as SessionError, Event, Events, Laptop, LaptopConfig};
use hybridge_ctap::{GetInfoResponse, PubKeyCredParam, StatusCode};
use hybridge_key::ctaphid::{self, Output, RequestId, Status};
use hybridge_key::uhid::{self, DeviceEvent};
use hybridge_key::{Engine, Limits};
use hybridge_proto::qr::RequestType;

use crate::common::{Progress, SCAN_HINT, check_qr_out, show_qr};
use crate::error::CliError;
use crate::laptop::SessionArgs;
use crate::notify::Notifier;
use crate::phones::{PhonesFile, PhonesFileArg};

/// Flags of `hybridge key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The kernel's UHID interface.
    #[arg(long, env = "HYBRIDGE_UHID", default_value = uhid::DEFAULT_PATH, value_name = "PATH")]
    uhid: PathBuf,
    /// The product name applications show for the key.
    #[arg(long, env = "HYBRIDGE_KEY_NAME", default_value = "hybridge key")]
    name: String,
    /// Do not show the QR code in a desktop notification (by default it is shown there too
    /// when a desktop session's notification service is reachable, so the code is seen while
    /// the terminal is not).
    #[arg(long, env = "HYBRIDGE_NO_NOTIFY")]
    no_notify: bool,
    #[command(flatten)]
    session: SessionArgs,
    /// Use the linked phone called NAME (`hybridge phones list`) for every request, with no
    /// QR code: the relay the phone named wakes it (`hybridge phone serve` on the phone),
    /// and it answers over Bluetooth as usual. Link it first with a QR code (`hybridge
    /// register` or `sign-in` store the link in the phones file). A NAME that is not linked
    /// stops the key at start (exit code 1, the linked names listed). While the key runs, a
    /// request that gets no answer from the phone fails with one line here and, for the
    /// application, CTAP2_ERR_USER_ACTION_TIMEOUT (0x2f) when the phone was contacted but
    /// no advert came (not nearby, Bluetooth off, or it revoked this laptop), or
    /// CTAP1_ERR_OTHER (0x7f) when it is unreachable (HTTP 410: no `phone serve` subscribed
    /// at the relay), the relay is down, the stored link failed the handshake, or NAME left
    /// the phones file. With a phone there is no QR code, so `--qr-out` is left unused (the
    /// user service passes it: HYBRIDGE_PHONE=NAME in its environment file is enough).
    #[arg(long, env = "HYBRIDGE_PHONE", value_name = "NAME")]
    phone: Option<String>,
    #[command(flatten)]
    phones: PhonesFileArg,
}

/// The handle that destroys the device when a signal ends the process (main's signal thread
/// calls [`destroy_on_exit`]).
static DEVICE: Mutex<Option<uhid::Writer>> = Mutex::new(None);

/// Destroys the virtual key, if one is running (for Ctrl-C and SIGTERM).
pub fn destroy_on_exit() {
    let mut guard = DEVICE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(mut w) = guard.take() {
        let _ = w.destroy();
    }
    // A QR code on screen is stale now (the process exits without running destructors).
    crate::notify::withdraw_all();
}

/// The most credentials a request may list (getInfo key 7). Large, so Chromium sends an
/// allowList or excludeList in one request instead of probing it in batches with silent
/// assertions, and Firefox probes it in one batch; the phone filters it.
const MAX_CREDENTIALS_IN_LIST: u64 = 64;

/// `authenticatorGetInfo`, answered without a phone: what a hybrid phone offers (CTAP 2.0 and
/// 2.1, ES256, discoverable credentials, built-in user verification, user presence), over
/// USB here and over hybrid directly. No `clientPin`: the phone verifies its user itself.
/// No extensions are claimed, `hmac-secret` included, because it cannot be mapped onto what a
/// phone does over hybrid: there the laptop asks for CTAP 2.2's `prf` (salts in clear, inside
/// the encrypted tunnel) and the phone returns its results as *unsigned* extension outputs,
/// while `hmac-secret` returns them encrypted inside the authenticator data the phone
/// *signed*. This key could do the PIN/UV key agreement and decrypt the salts, but it could
/// hand the results over only by rewriting signed authenticator data, which would break the
/// assertion's signature for every relying party that checks it. Applications that need
/// `hmac-secret` (`systemd-cryptenroll`, pam_u2f with it) therefore see at once that this key
/// lacks it, instead of failing later. The AAGUID is zero: the attestation, and the real
/// AAGUID, come from the phone.
pub fn get_info() -> Vec<u8> {
    let mut info = GetInfoResponse::default();
    info.versions = vec!["FIDO_2_0".into(), "FIDO_2_1".into()];
    info.aaguid = [0; 16];
    info.options = vec![
        ("rk".into(), true),
        ("up".into(), true),
        ("uv".into(), true),
        ("plat".into(), false),
    ];
    info.max_msg_size = Some(ctaphid::MAX_MESSAGE as u64);
    info.max_credential_count_in_list = Some(MAX_CREDENTIALS_IN_LIST);
    info.transports = vec!["hybrid".into(), "usb".into()];
    info.algorithms = vec![PubKeyCredParam::es256()];
    let mut out = vec![0x00];
    out.extend_from_slice(&info.to_cbor());
    out
}

/// CTAP2 command bytes this module looks at.
mod command {
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    pub const GET_ASSERTION: u8 = 0x02;
    pub const GET_INFO: u8 = 0x04;
    pub const GET_NEXT_ASSERTION: u8 = 0x08;
    pub const SELECTION: u8 = 0x0b;
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Answer with these bytes (status ‖ CBOR) now.
    Answer(Vec<u8>),
    /// Run a hybrid ceremony of this type and answer with the phone's response.
    Ceremony(RequestType),
}

/// What the last silent probe named, for the `authenticatorGetNextAssertion` calls after it.
#[derive(Debug, Default)]
pub struct Probe {
    rp_id_hash: [u8; 32],
    rest: Vec<Value>,
}

fn status(s: StatusCode) -> Vec<u8> {
    vec![s.0]
}

/// Decides what a CTAP request becomes (see [`silent_answer`] for the requests without a
/// user). `probe` carries a silent probe's remaining credentials to `getNextAssertion`.
pub fn plan(request: &[u8], probe: &mut Option<Probe>) -> Plan {
    let Some((&cmd, params)) = request.split_first() else {
        return Plan::Answer(status(StatusCode::CTAP1_ERR_INVALID_LENGTH));
    };
    if cmd != command::GET_NEXT_ASSERTION {
        *probe = None;
    }
    match cmd {
        command::GET_INFO => Plan::Answer(get_info()),
        // "Touch to select": the phone is chosen when its user scans the QR code.
        command::SELECTION => Plan::Answer(vec![0x00]),
        command::GET_NEXT_ASSERTION => match probe.as_mut() {
            Some(p) if !p.rest.is_empty() => {
                let cred = p.rest.remove(0);
                Plan::Answer(placeholder_assertion(p.rp_id_hash, cred, None))
            }
            _ => Plan::Answer(status(StatusCode::CTAP2_ERR_NOT_ALLOWED)),
        },
        command::MAKE_CREDENTIAL | command::GET_ASSERTION => {
            let Ok(params) = hybridge_cbor::decode(params) else {
                // The phone would refuse it too; no reason to wake anyone.
                return Plan::Answer(status(StatusCode::CTAP2_ERR_INVALID_CBOR));
            };
            if !params.is_map() {
                return Plan::Answer(status(StatusCode::CTAP2_ERR_INVALID_CBOR));
            }
            if let Some(answer) = silent_answer(cmd, &params, probe) {
                return Plan::Answer(answer);
            }
            Plan::Ceremony(if cmd == command::MAKE_CREDENTIAL {
                RequestType::MakeCredential
            } else {
                RequestType::GetAssertion
            })
        }
        // clientPin, reset, credentialManagement, bioEnrollment, largeBlobs, config and the
        // vendor range: a phone over hybrid offers none of them to this key.
        _ => Plan::Answer(status(StatusCode::CTAP1_ERR_INVALID_COMMAND)),
    }
}

/// Requests that need no user, answered without waking anyone.
///
/// What clients send (read in their sources):
/// * **Firefox** (authenticator-rs, `ctap2/preflight.rs`): before *every* makeCredential with
///   an excludeList and *every* getAssertion with an allowList, a "pre-flight"
///   getAssertion with `up: false`, clientDataHash = SHA-256(""), the list in chunks of
///   maxCredentialCountInList (1 if absent). The credentials in a successful answer (and in
///   its getNextAssertion follow-ups) become the list of the real request; if every chunk
///   fails, the real request goes out with an *empty* list (a getAssertion then fails without
///   reaching the key's credentials).
/// * **Chromium** (`device/fido/get_assertion_task.cc`, `make_credential_task.cc`): probes
///   silently only when a list does not fit in one batch of maxCredentialCountInList, or for
///   appid / per-credential PRF; then it retries the real request with the one credential
///   named. A dummy makeCredential for RP `.dummy` collects a touch when nothing can match.
/// * **libfido2** itself sends no probe; its users do: OpenSSH (`sk_try` in
///   `sk-usbhid.c`) and pam_u2f send a `up: false` getAssertion with one key handle to find
///   the device that holds it (success, or `UP_REQUIRED`, means "this one"); `fido2-assert`
///   sends `up: false` only when told (`-t up=false`).
///
/// The choice: a `up: false` getAssertion with an allowList, without hmac-secret, is a probe,
/// and the phone is assumed to hold the listed credentials (it is the one that can tell,
/// during the real request). It gets a successful placeholder assertion: the first
/// credential, authenticator data with no flags and this RP ID's hash, a placeholder
/// signature, and numberOfCredentials so Firefox's getNextAssertion calls collect the whole
/// list. So Firefox keeps the whole list for the real request, Chromium retries with a
/// credential of it, OpenSSH and pam_u2f pick this key, and the real request then goes to the
/// phone, which decides. The placeholder proves nothing to a relying party: it carries no
/// user-presence flag and its signature verifies under no key; clients use only the
/// credential ID. Answering "no credentials" instead would break Firefox and pam_u2f.
///
/// The rest without a user: a `up: false` getAssertion with no list (a silent discoverable
/// lookup) gets `NO_CREDENTIALS`; one asking for hmac-secret wants real output, so it gets
/// `UP_REQUIRED` (systemd's FIDO2 unlock then retries with user presence); a makeCredential
/// for RP `.dummy` (a touch request from Chromium or libfido2's device selection) gets
/// `OPERATION_DENIED` — the phone is chosen by scanning, not by a touch.
pub fn silent_answer(cmd: u8, params: &Value, probe: &mut Option<Probe>) -> Option<Vec<u8>> {
    if cmd == command::MAKE_CREDENTIAL {
        let rp_id = params
            .get(2)
            .and_then(|rp| rp.get("id"))
            .and_then(Value::as_text);
        return (rp_id == Some(".dummy")).then(|| status(StatusCode::CTAP2_ERR_OPERATION_DENIED));
    }
    let up = params
        .get(5)
        .and_then(|o| o.get("up"))
        .and_then(Value::as_bool);
    if up != Some(false) {
        return None;
    }
    let rp_id = params.get(1).and_then(Value::as_text).unwrap_or_default();
    let wants_hmac = params.get(4).and_then(|e| e.get("hmac-secret")).is_some();
    let list: Vec<Value> = params
        .get(3)
        .and_then(Value::as_array)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    if wants_hmac {
        return Some(status(StatusCode::CTAP2_ERR_UP_REQUIRED));
    }
    let mut list = list.into_iter();
    let Some(first) = list.next() else {
        return Some(status(StatusCode::CTAP2_ERR_NO_CREDENTIALS));
    };
    let rp_id_hash = hybridge_ctap::authdata::rp_id_hash(rp_id);
    let rest: Vec<Value> = list.collect();
    let count = (!rest.is_empty()).then(|| rest.len() as u64 + 1);
    *probe = Some(Probe { rp_id_hash, rest });
    Some(placeholder_assertion(rp_id_hash, first, count))
}

/// A getAssertion response (status 0) for a silent probe: see [`silent_answer`].
fn placeholder_assertion(rp_id_hash: [u8; 32], credential: Value, count: Option<u64>) -> Vec<u8> {
    let mut auth_data = rp_id_hash.to_vec();
    auth_data.push(0x00); // no UP, no UV
    auth_data.extend_from_slice(&0u32.to_be_bytes());
    // DER ECDSA-Sig-Value with r = s = 1: well formed, valid under no key.
    let signature = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
    let mut m = vec![
        (Value::from(1), credential),
        (Value::from(2), Value::from(auth_data)),
        (Value::from(3), Value::from(signature)),
    ];
    if let Some(n) = count {
        m.push((Value::from(5), Value::from(n)));
    }
    let mut out = vec![0x00];
    out.extend_from_slice(&hybridge_cbor::encode(&Value::Map(m)));
    out
}

/// The CTAP status for a ceremony that failed before the phone answered.
fn failure_status(e: &SessionError) -> StatusCode {
    match e {
        SessionError::ProximityTimeout(_) | SessionError::Timeout { .. } => {
            StatusCode::CTAP2_ERR_USER_ACTION_TIMEOUT
        }
        _ => StatusCode::CTAP1_ERR_OTHER,
    }
}

/// A ceremony that ended without the phone's answer: the status the application is given
/// (the whole CTAP answer: no CBOR follows) and the line for the person at the terminal.
///
/// Timeouts are `CTAP2_ERR_USER_ACTION_TIMEOUT`, everything else `CTAP1_ERR_OTHER`: no user
/// decided anything, so neither is a refusal (`OPERATION_DENIED` would tell Chromium that
/// the person declined, and end the request). Chromium drops an authenticator that answers
/// any other error from the request and lets the others continue
/// (`device/fido/*_request_handler.cc`); libfido2 reports `FIDO_ERR_ERR_OTHER` /
/// `FIDO_ERR_USER_ACTION_TIMEOUT`.
#[derive(Debug)]
pub struct Failure {
    /// What the application is answered.
    pub status: StatusCode,
    /// Why, for stderr.
    pub message: String,
}

impl Failure {
    /// A QR session's failure.
    fn session(e: SessionError) -> Failure {
        Failure {
            status: failure_status(&e),
            message: e.to_string(),
        }
    }

    /// A linked session's failure, said as `sign-in --phone` says it (naming the phone).
    fn linked(name: &str, e: SessionError) -> Failure {
        Failure {
            status: failure_status(&e),
            message: crate::laptop::linked_error(name, e).to_string(),
        }
    }

    /// The linked phone could not be taken from the phones file (no longer there, or its
    /// link does not open): nothing was contacted.
    fn phones(e: &CliError) -> Failure {
        Failure {
            status: StatusCode::CTAP1_ERR_OTHER,
            message: e.to_string(),
        }
    }
}

/// How each ceremony finds the phone.
#[derive(Clone, Copy, Debug)]
enum Reach<'a> {
    /// A fresh QR code on the terminal, its text also in `qr_out`, and in a desktop
    /// notification when there is a desktop.
    Qr {
        qr_out: Option<&'a Path>,
        desktop: Option<&'a Notifier>,
    },
    /// The phone linked as `name` in the phones file at `phones` (read again for each
    /// ceremony, so a phone linked again or forgotten meanwhile is seen).
    Linked { phones: &'a Path, name: &'a str },
}

/// Writes the QR text atomically (a reader never sees half a file), and removes it when the
/// ceremony ends, so a stale code is never scanned.
struct QrFile(Option<PathBuf>);

impl QrFile {
    fn write(path: Option<&Path>, url: &str) -> QrFile {
        let Some(path) = path else {
            return QrFile(None);
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{}.partial", name.unwrap_or_default()));
        // The extension decides the format: keep it on the temporary name.
        let tmp = match path.extension() {
            Some(ext) => tmp.with_extension(format!("partial.{}", ext.to_string_lossy())),
            None => tmp,
        };
        let written = render::write_file(url, &tmp)
            .map_err(|e| e.to_string())
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("hybridge: cannot write {}: {e}", path.display());
            let _ = std::fs::remove_file(&tmp);
        }
        QrFile(Some(path.to_owned()))
    }
}

impl Drop for QrFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

type CeremonyFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, Failure>> + 'a>>;

/// The relying party a makeCredential or getAssertion is for (read with the CTAP crate's
/// request parser), made safe to show.
fn rp_id_of(request: &[u8]) -> Option<String> {
    let rp = match hybridge_ctap::Request::decode(request).ok()? {
        hybridge_ctap::Request::MakeCredential(r) => r.rp.id,
        hybridge_ctap::Request::GetAssertion(r) => r.rp_id,
        _ => return None,
    };
    Some(crate::terminal::sanitize(&rp).replace(['<', '>', '&'], ""))
}

/// One ceremony: QR code (or the linked phone woken), phone, the request forwarded, the
/// answer back.
fn ceremony<'a>(
    request: Vec<u8>,
    kind: RequestType,
    config: LaptopConfig,
    scanner: &'a dyn hybridge_ble::Scanner,
    reach: Reach<'a>,
    progress: &'a Progress,
    events: Events,
) -> CeremonyFuture<'a> {
    Box::pin(async move {
        match reach {
            Reach::Qr { qr_out, desktop } => {
                let laptop = Laptop::new(kind, config);
                // Laptop::new is a QR session: it always has a QR code.
                let url = laptop.qr_url().unwrap_or_default();
                let _qr_file = QrFile::write(qr_out, &url);
                let _notice = desktop.map(|desktop| {
                    let rp = rp_id_of(&request).unwrap_or_else(|| "an application".into());
                    let summary = match kind {
                        RequestType::MakeCredential => {
                            format!("Create a passkey for {rp} on your phone")
                        }
                        _ => format!("Sign in to {rp} with your phone"),
                    };
                    desktop.show_qr(
                        &summary,
                        "Scan this QR code with your phone's camera, then confirm on the phone.",
                        &url,
                    )
                });
                progress.aside(|| show_qr(&url, None, SCAN_HINT));
                let answer = transact(laptop, &request, scanner, &events).await;
                answer.map_err(Failure::session)
            }
            Reach::Linked { phones, name } => {
                // The same linked session as `sign-in --phone`. Reading the link may wait on
                // the desktop keyring (even its unlock dialog): off this task, so keepalives,
                // CANCEL and other channels go on meanwhile.
                let (path, owned) = (phones.to_path_buf(), name.to_owned());
                let phone = tokio::task::spawn_blocking(move || {
                    PhonesFile::load(&path).and_then(|mut file| file.linked(&owned))
                })
                .await
                .map_err(|e| CliError::Invalid(format!("reading the phones file failed: {e}")))
                .and_then(|r| r)
                .map_err(|e| Failure::phones(&e))?;
                progress.step(format!("contacting phone {name:?}"));
                let laptop = Laptop::linked(kind, phone, config);
                let answer = transact(laptop, &request, scanner, &events).await;
                let answer = answer.map_err(|e| Failure::linked(name, e))?;
                record_use(phones, name, progress);
                Ok(answer)
            }
        }
    })
}

/// Finds the phone, forwards the request and closes the session: the phone's answer.
async fn transact(
    laptop: Laptop,
    request: &[u8],
    scanner: &dyn hybridge_ble::Scanner,
    events: &Events,
) -> Result<Vec<u8>, SessionError> {
    let mut phone = laptop.connect(scanner, events).await?;
    let answer = phone.transact(request, events).await;
    // The application waits for this answer: no wait for a late link (the key offers none).
    phone.close_now(events).await;
    answer
}

/// Records that the linked phone answered (`last_used` in `hybridge phones list`), reading
/// the file again: another command may have changed it meanwhile. A failure is only said.
fn record_use(phones: &Path, name: &str, progress: &Progress) {
    let touched = PhonesFile::load(phones).and_then(|mut file| {
        file.touch(name)?;
        file.save()
    });
    if let Err(e) = touched {
        progress.aside(|| eprintln!("hybridge: cannot record the phone's use: {e}"));
    }
}

/// Runs the key until the device fails; Ctrl-C or SIGTERM end the process (main's signal
/// thread destroys the device through [`destroy_on_exit`]).
pub async fn run(args: &KeyArgs) -> Result<serde_json::Value, CliError> {
    let session = &args.session;
    check_qr_out(session.qr_out.as_deref())?;
    let config = session.config()?;
    // A linked phone is looked up before anything is made: a name that is not linked (or a
    // phones file that cannot be read) ends the key here, with the linked names listed.
    let phones = match &args.phone {
        Some(name) => {
            let path = args.phones.path()?;
            PhonesFile::load(&path)?.linked(name)?;
            Some((path, name.as_str()))
        }
        None => None,
    };
    // QR codes also go to a desktop notification (a linked phone needs none).
    let desktop = if args.no_notify || phones.is_some() {
        None
    } else {
        Notifier::session().unwrap_or_else(|e| {
            eprintln!("hybridge: no desktop notifications ({e}); QR codes show here only");
            None
        })
    };
    let reach = match &phones {
        Some((path, name)) => Reach::Linked {
            phones: path.as_path(),
            name,
        },
        None => Reach::Qr {
            qr_out: session.qr_out.as_deref(),
            desktop: desktop.as_ref(),
        },
    };
    let scanner = session.transport.ble.scanner().await?;
    let device_config = uhid::Config {
        name: args.name.clone(),
        ..uhid::Config::default()
    };
    let mut device = uhid::Device::create(&args.uhid, &device_config)?;
    let mut writer = device.writer()?;
    *DEVICE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(device.writer()?);

    // The kernel's events, from a thread that blocks in read(2).
    let (tx, mut device_events) = tokio::sync::mpsc::channel(256);
    std::thread::Builder::new()
        .name("uhid".into())
        .spawn(move || {
            loop {
                let event = device.read_event();
                let failed = event.is_err();
                if tx.blocking_send(event).is_err() || failed {
                    break;
                }
            }
        })
        .map_err(|e| CliError::Invalid(format!("cannot start the device thread: {e}")))?;

    let progress = Progress::new("key: ");
    progress.step(format!(
        "\"{}\" is ready: sign in with it anywhere a security key works{}",
        args.name,
        if desktop.is_some() {
            " (QR codes also appear as desktop notifications)"
        } else {
            ""
        }
    ));
    if let Some((_, name)) = &phones {
        progress.step(format!(
            "requests go to the linked phone {name:?}, no QR code"
        ));
    }
    let mut engine = Engine::new(Limits::default());
    let mut probe = None;
    // The running ceremony: its request, its future, its progress events.
    let mut active: Option<(RequestId, CeremonyFuture<'_>)> = None;
    let (events, mut session_events) = Events::channel(64);
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        while let Some(out) = engine.poll_output() {
            match out {
                Output::Report(r) => writer.input(&r)?,
                Output::Request(req) => match plan(&req.payload, &mut probe) {
                    Plan::Answer(a) => {
                        if req.payload.first() == Some(&command::GET_ASSERTION) && a[0] == 0 {
                            progress
                                .step("a silent probe (up=false) was answered without the phone");
                        }
                        engine.respond(Instant::now(), req.id, &a);
                    }
                    Plan::Ceremony(_) if active.is_some() => {
                        engine.respond_error(Instant::now(), req.id, ctaphid::err::CHANNEL_BUSY);
                    }
                    Plan::Ceremony(kind) => {
                        let what = match kind {
                            RequestType::MakeCredential => "register a passkey",
                            _ => "sign in",
                        };
                        progress.step(format!("an application asks to {what}: use your phone"));
                        engine.set_status(req.id, Status::UpNeeded);
                        let c = ceremony(
                            req.payload,
                            kind,
                            config.clone(),
                            &*scanner,
                            reach,
                            &progress,
                            events.clone(),
                        );
                        active = Some((req.id, c));
                    }
                },
                Output::Cancel(id) => {
                    if active.as_ref().is_some_and(|(a, _)| *a == id) {
                        active = None;
                        progress.step("the application cancelled; the phone was let go");
                    }
                }
                Output::Wink(_) => progress.step("an application asked the key to show itself"),
            }
        }
        let deadline = engine
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(far);
        let running = active.as_mut().map(|(_, f)| f);
        let wake = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Wake::Timer,
            event = device_events.recv() => Wake::Device(event),
            event = session_events.recv() => Wake::Session(event),
            result = async { running.expect("guarded").await }, if running.is_some() => {
                Wake::Done(result)
            }
        };
        let now = Instant::now();
        match wake {
            Wake::Timer => engine.handle_timeout(now),
            Wake::Device(event) => match event {
                Some(Ok(DeviceEvent::Output(report))) => engine.handle_report(now, &report),
                Some(Ok(DeviceEvent::Close)) => {
                    // Nobody is left to read an answer: let the phone go.
                    if let Some((id, _)) = active.take() {
                        let cancelled = status(StatusCode::CTAP2_ERR_KEEPALIVE_CANCEL);
                        engine.respond(now, id, &cancelled);
                        progress.step("the application closed the key; the phone was let go");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(CliError::Invalid("the device thread ended".into())),
            },
            Wake::Session(event) => {
                if let (Some(event), Some((id, _))) = (event, active.as_ref()) {
                    match event {
                        Event::Connecting(_)
                        | Event::OpeningDataChannel { .. }
                        | Event::HandshakeDone => engine.set_status(*id, Status::Processing),
                        // Linked: after the relay took the contact, the phone is woken
                        // and its person may need to act before it advertises.
                        Event::Scanning | Event::WaitingForUser => {
                            engine.set_status(*id, Status::UpNeeded)
                        }
                        _ => {}
                    }
                    progress.step(event.to_string());
                }
            }
            Wake::Done(result) => {
                let Some((id, _)) = active.take() else {
                    continue;
                };
                let answer = match result {
                    Ok(answer) => {
                        progress.step("the phone answered; passed on to the application");
                        answer
                    }
                    Err(failure) => {
                        progress.step(format!(
                            "the ceremony failed: {}; the application is told {}",
                            failure.message, failure.status
                        ));
                        status(failure.status)
                    }
                };
                engine.respond(now, id, &answer);
            }
        }
    }
}

/// What woke the key's loop.
enum Wake {
    Timer,
    Device(Option<Result<DeviceEvent, hybridge_key::Error>>),
    Session(Option<Event>),
    Done(Result<Vec<u8>, Failure>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ga(params: Value) -> Vec<u8> {
        let mut r = vec![0x02];
        r.extend_from_slice(&hybridge_cbor::encode(&params));
        r
    }

    fn cred(id: &[u8]) -> Value {
        Value::map([
            (Value::from("id"), Value::from(id.to_vec())),
            (Value::from("type"), Value::from("public-key")),
        ])
    }

    fn request(list: Vec<Value>, up: Option<bool>, ext: Option<Value>) -> Vec<u8> {
        let mut m = vec![
            (Value::from(1), Value::from("example.com")),
            (Value::from(2), Value::from(vec![0u8; 32])),
        ];
        if !list.is_empty() {
            m.push((Value::from(3), Value::Array(list)));
        }
        if let Some(e) = ext {
            m.push((Value::from(4), e));
        }
        if let Some(up) = up {
            m.push((
                Value::from(5),
                Value::map([(Value::from("up"), Value::from(up))]),
            ));
        }
        ga(Value::Map(m))
    }

    #[test]
    fn get_info_is_answered_at_once_and_parses() {
        let mut p = None;
        let Plan::Answer(a) = plan(&[0x04], &mut p) else {
            panic!("answered")
        };
        assert_eq!(a[0], 0);
        let info = GetInfoResponse::from_cbor(&a[1..]).unwrap();
        assert!(info.versions.contains(&"FIDO_2_1".to_string()));
        assert_eq!(info.option("rk"), Some(true));
        assert_eq!(info.option("uv"), Some(true));
        assert_eq!(
            info.option("clientPin"),
            None,
            "the phone verifies its user"
        );
        assert_eq!(info.max_msg_size, Some(7609));
    }

    #[test]
    fn the_notification_names_the_relying_party_and_nothing_else() {
        assert_eq!(
            rp_id_of(&request(vec![], None, None)).as_deref(),
            Some("example.com")
        );
        let mc = |rp: &str| {
            let rp = Value::map([(Value::from("id"), Value::from(rp))]);
            let mut r = vec![command::MAKE_CREDENTIAL];
            let user = Value::map([(Value::from("id"), Value::from(vec![1u8]))]);
            let es256 = Value::map([
                (Value::from("alg"), Value::from(-7)),
                (Value::from("type"), Value::from("public-key")),
            ]);
            r.extend(hybridge_cbor::encode(&Value::Map(vec![
                (Value::from(1), Value::from(vec![0u8; 32])),
                (Value::from(2), rp),
                (Value::from(3), user),
                (Value::from(4), Value::Array(vec![es256])),
            ])));
            r
        };
        assert_eq!(
            rp_id_of(&mc("login.example")).as_deref(),
            Some("login.example")
        );
        // Markup and control characters never reach the notification.
        let shown = rp_id_of(&mc("<b>evil</b>\u{1b}[31m.example")).unwrap();
        assert!(!shown.contains(['<', '>', '\u{1b}']), "{shown}");
        assert_eq!(rp_id_of(&[command::GET_INFO]), None);
        assert_eq!(rp_id_of(&[command::GET_ASSERTION, 0xff]), None);
        assert_eq!(rp_id_of(&[]), None);
    }

    #[test]
    fn requests_that_need_the_user_start_a_ceremony() {
        let mut p = None;
        let r = request(vec![cred(b"c1")], None, None);
        assert_eq!(plan(&r, &mut p), Plan::Ceremony(RequestType::GetAssertion));
        let r = request(vec![], Some(true), None);
        assert_eq!(plan(&r, &mut p), Plan::Ceremony(RequestType::GetAssertion));
        let mc = {
            let m = Value::map([
                (Value::from(1), Value::from(vec![0u8; 32])),
                (
                    Value::from(2),
                    Value::map([(Value::from("id"), Value::from("example.com"))]),
                ),
            ]);
            let mut r = vec![0x01];
            r.extend_from_slice(&hybridge_cbor::encode(&m));
            r
        };
        assert_eq!(
            plan(&mc, &mut p),
            Plan::Ceremony(RequestType::MakeCredential)
        );
    }

    #[test]
    fn a_silent_probe_gets_a_placeholder_naming_every_listed_credential() {
        let mut p = None;
        let r = request(vec![cred(b"c1"), cred(b"c2")], Some(false), None);
        let Plan::Answer(a) = plan(&r, &mut p) else {
            panic!("answered without a phone")
        };
        assert_eq!(a[0], 0);
        let v = hybridge_cbor::decode(&a[1..]).unwrap();
        let resp = hybridge_ctap::GetAssertionResponse::from_value(&v).unwrap();
        assert_eq!(resp.credential.as_ref().unwrap().id, b"c1");
        assert_eq!(resp.number_of_credentials, Some(2));
        let ad = resp.authenticator_data().unwrap();
        assert_eq!(
            ad.rp_id_hash,
            hybridge_ctap::authdata::rp_id_hash("example.com")
        );
        assert!(!ad.flags.up(), "a placeholder claims no presence");
        let Plan::Answer(next) = plan(&[0x08], &mut p) else {
            panic!()
        };
        let v = hybridge_cbor::decode(&next[1..]).unwrap();
        let resp = hybridge_ctap::GetAssertionResponse::from_value(&v).unwrap();
        assert_eq!(resp.credential.unwrap().id, b"c2");
        assert_eq!(plan(&[0x08], &mut p), Plan::Answer(vec![0x30]));
        // The real request that follows goes to the phone.
        let r = request(vec![cred(b"c1"), cred(b"c2")], None, None);
        assert_eq!(plan(&r, &mut p), Plan::Ceremony(RequestType::GetAssertion));
    }

    #[test]
    fn other_requests_without_a_user_are_refused_without_a_phone() {
        let mut p = None;
        let r = request(vec![], Some(false), None);
        assert_eq!(plan(&r, &mut p), Plan::Answer(vec![0x2e]));
        let hmac = Value::map([(Value::from("hmac-secret"), Value::map::<Value, Value>([]))]);
        let r = request(vec![cred(b"c1")], Some(false), Some(hmac));
        assert_eq!(plan(&r, &mut p), Plan::Answer(vec![0x3b]));
        let dummy = Value::map([
            (Value::from(1), Value::from(vec![0u8; 32])),
            (
                Value::from(2),
                Value::map([(Value::from("id"), Value::from(".dummy"))]),
            ),
        ]);
        let mut mc = vec![0x01];
        mc.extend_from_slice(&hybridge_cbor::encode(&dummy));
        assert_eq!(plan(&mc, &mut p), Plan::Answer(vec![0x27]));
        assert_eq!(plan(&[0x06, 0xa0], &mut p), Plan::Answer(vec![0x01]));
        assert_eq!(plan(&[0x07], &mut p), Plan::Answer(vec![0x01]));
        assert_eq!(plan(&[0x02, 0xff], &mut p), Plan::Answer(vec![0x12]));
        assert_eq!(plan(&[0x02, 0x01], &mut p), Plan::Answer(vec![0x12]));
        assert_eq!(plan(&[], &mut p), Plan::Answer(vec![0x03]));
        assert_eq!(plan(&[0x0b], &mut p), Plan::Answer(vec![0x00]));
    }

    #[test]
    fn a_failed_ceremony_is_a_timeout_or_other_never_a_refusal() {
        let timeout = SessionError::ProximityTimeout(Duration::from_secs(60));
        let f = Failure::linked("Pixel", timeout);
        assert_eq!(f.status, StatusCode::CTAP2_ERR_USER_ACTION_TIMEOUT);
        assert!(
            f.message.contains("phone \"Pixel\" was contacted"),
            "{}",
            f.message
        );
        let closed = SessionError::TunnelClosed(hybridge_client::session::Step::Handshake);
        assert_eq!(Failure::session(closed).status, StatusCode::CTAP1_ERR_OTHER);
        let gone = CliError::Invalid("no linked phone named \"Pixel\"".into());
        let f = Failure::phones(&gone);
        assert_eq!(f.status, StatusCode::CTAP1_ERR_OTHER);
        assert_eq!(f.message, "no linked phone named \"Pixel\"");
    }

    /// `hybridge key --phone`, through the key's own ceremony code: a QR registration with
    /// `hybridge register` links the phone (as a person does before starting the key), then a
    /// getAssertion, as an application sends it to the key, goes to the linked phone with no
    /// QR code, and webauthn-rs-core verifies the answer the key passes back. Before that:
    /// the same request for a name not in the phones file, and for the phone while it is not
    /// subscribed at its relay (410), each ends with the CTAP status the application gets
    /// and a line naming the phone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_key_reaches_a_linked_phone_without_a_qr_code() {
        use hybridge_client::session::{Ceremony as _, RelayOverrides, Timeouts};
        use hybridge_client::webauthn::{ClientDataType, Origin, RequestOptions, client_data_json};
        use webauthn_rs_core::WebauthnCore;
        use webauthn_rs_core::proto::{
            PublicKeyCredential, RegisterPublicKeyCredential, UserVerificationPolicy,
        };

        use crate::laptop::linked_rig::LinkedRig;

        let mut rig = LinkedRig::new("key-linked", "Key phone").await;
        let rp = WebauthnCore::new_unsafe_experts_only(
            "Example",
            "example.com",
            vec![url::Url::parse("https://example.com").unwrap()],
            Duration::from_secs(300),
            None,
            None,
        );

        // 1. The phone links in a QR registration (`hybridge register`).
        let builder = rp
            .new_challenge_register_builder(b"kay", "kay", "Kay")
            .unwrap()
            .user_verification_policy(UserVerificationPolicy::Required)
            .require_resident_key(true);
        let (ccr, reg_state) = rp.generate_challenge_register(builder).unwrap();
        let json = rig
            .register_and_link(&serde_json::to_string(&ccr).unwrap())
            .await;
        let rpc: RegisterPublicKeyCredential = serde_json::from_value(json).unwrap();
        let credential = rp.register_credential(&rpc, &reg_state, None).unwrap();
        let (url, ble, phones) = (rig.url.clone(), rig.ble.clone(), rig.phones.clone());

        // 2. What an application sends the key: a getAssertion for the RP's options.
        let builder = rp
            .new_challenge_authenticate_builder(
                vec![credential],
                Some(UserVerificationPolicy::Required),
            )
            .unwrap();
        let (rcr, auth_state) = rp.generate_challenge_authenticate(builder).unwrap();
        let origin = Origin::parse("https://example.com").unwrap();
        let options =
            RequestOptions::from_json(&serde_json::to_string(&rcr).unwrap(), &origin).unwrap();
        let cdj = client_data_json(ClientDataType::Get, options.challenge(), &origin);
        let info = GetInfoResponse::from_cbor(&get_info()[1..]).unwrap();
        let request = options.ctap_request(&cdj, &info).unwrap();

        let config = LaptopConfig {
            relays: RelayOverrides::all(url.clone()),
            timeouts: Timeouts {
                scan: Duration::from_secs(20),
                ..Timeouts::default()
            },
            ..LaptopConfig::default()
        };
        let scanner: hybridge_ble::RadioSpec = ble.parse().unwrap();
        let scanner = scanner.scanner().await.unwrap();
        let progress = Progress::new("key: ");
        let key_ceremony = |name: &'static str| {
            ceremony(
                request.encode(),
                RequestType::GetAssertion,
                config.clone(),
                &*scanner,
                Reach::Linked {
                    phones: &phones,
                    name,
                },
                &progress,
                Events::none(),
            )
        };

        // A name that is not (or no longer) in the phones file: nothing is contacted.
        let f = key_ceremony("Nope").await.expect_err("no such phone");
        assert_eq!(f.status, StatusCode::CTAP1_ERR_OTHER);
        assert!(
            f.message
                .contains("no linked phone named \"Nope\"; linked phones: \"Key phone\""),
            "{}",
            f.message
        );
        // The phone is not subscribed at its relay: the relay's 410, at once.
        let start = Instant::now();
        let f = key_ceremony("Key phone").await.expect_err("unreachable");
        assert_eq!(f.status, StatusCode::CTAP1_ERR_OTHER);
        assert!(
            f.message.contains("unreachable") && f.message.contains("\"Key phone\""),
            "{}",
            f.message
        );
        assert!(start.elapsed() < Duration::from_secs(10));

        // 3. The phone subscribes (as `hybridge phone serve` does) and answers the wake-up.
        let (phone_task, relay, dir) = rig.serve_next_wake().await;
        let answer = key_ceremony("Key phone").await.expect("the phone answered");
        phone_task.await.unwrap().expect("the phone served");
        assert_eq!(answer[0], 0, "{answer:02x?}");
        let assertion = options.response(cdj, &request, &answer).unwrap();
        let pkc: PublicKeyCredential = serde_json::from_value(assertion.to_json()).unwrap();
        let result = rp
            .authenticate_credential(&pkc, &auth_state)
            .expect("the RP accepts what the key passed on");
        assert!(result.user_verified());
        let file = PhonesFile::load(&phones).unwrap();
        assert!(file.entries[0].last_used.is_some());
        relay.shutdown(Duration::from_secs(1)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

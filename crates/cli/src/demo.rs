//! `hybridge demo`: the whole hybrid flow on this machine, no Bluetooth, no network.
//!
//! An in-process tunnel server (hybridge-relay), a phone (the software authenticator with an
//! in-memory store, approving automatically), a laptop (the WebAuthn client) and an embedded
//! relying party (webauthn-rs-core, an independent implementation) that issues the options
//! and verifies the responses. The BLE advert travels over the in-memory radio.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
use hybridge_authenticator::phone::{self, PhoneEvents, PhoneProgress, PhoneTimeouts, QrInput};
use hybridge_authenticator::store::MemoryStore;
use hybridge_authenticator::user::{AccountChoice, Approval, ApprovalRequest, Ceremony, UserAgent};
use hybridge_ble::MemoryRadio;
use hybridge_client::session::{self, LaptopConfig, Prepared, RelayOverrides, Timeouts};
use hybridge_client::webauthn::b64url;
use hybridge_relay::{Config as RelayConfig, Relay};
use serde_json::{Value as Json, json};
use url::Url;
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    PublicKeyCredential, RegisterPublicKeyCredential, UserVerificationPolicy,
};

use crate::common::{DEMO_QR_HINT, Progress, check_qr_out, parse_duration, show_qr};
use crate::error::CliError;
use crate::laptop::spawn_event_printer;

/// `hybridge demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The relying party's ID (the origin is https://RP_ID).
    #[arg(long, env = "HYBRIDGE_DEMO_RP_ID", default_value = "example.com")]
    rp_id: String,
    /// The account name to register.
    #[arg(long, env = "HYBRIDGE_DEMO_USER", default_value = "alice")]
    user: String,
    /// Also write the QR codes to FILE (.png, .svg or .txt).
    #[arg(long, env = "HYBRIDGE_QR_OUT", value_name = "FILE")]
    qr_out: Option<PathBuf>,
    /// Limit on each ceremony.
    #[arg(long, env = "HYBRIDGE_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Run the ceremonies over the CTAP 2.3 data channel (in memory here; Bluetooth L2CAP on
    /// a real radio): the relay is left out once the laptop reaches the phone.
    #[arg(long)]
    data_channel: bool,
}

/// The demo's phone user: says what is asked and approves, as a verified user.
struct DemoUser {
    printed: Arc<RequestsPrinted>,
}

/// "Request from the laptop" lines the phone's event printer has written and no answer has
/// followed yet. The user is asked on a blocking thread while the events are printed by a
/// task, so without this the answer could be printed before the request it answers.
#[derive(Default)]
struct RequestsPrinted {
    unanswered: Mutex<u32>,
    changed: Condvar,
}

impl RequestsPrinted {
    /// A new ceremony: nothing left over from the last one counts.
    fn reset(&self) {
        if let Ok(mut n) = self.unanswered.lock() {
            *n = 0;
        }
    }

    fn printed(&self) {
        if let Ok(mut n) = self.unanswered.lock() {
            *n += 1;
            self.changed.notify_all();
        }
    }

    /// Waits (briefly: this only orders lines) for a request line to answer, and takes it.
    fn take(&self) {
        if let Ok(n) = self.unanswered.lock()
            && let Ok((mut n, _)) =
                self.changed
                    .wait_timeout_while(n, Duration::from_secs(1), |n| *n == 0)
        {
            *n = n.saturating_sub(1);
        }
    }
}

impl UserAgent for DemoUser {
    fn approve(&mut self, r: &ApprovalRequest) -> Approval {
        self.printed.take();
        let account = r
            .user_name
            .as_deref()
            .map(crate::terminal::sanitize)
            .unwrap_or_else(|| "an account".into());
        let what = match r.ceremony {
            Ceremony::Register => "create a passkey for",
            Ceremony::SignIn => "sign in to",
            Ceremony::Select => "choose this authenticator for",
        };
        eprintln!(
            "phone:  the user is asked to {what} {} as {account}: approved automatically \
             (the demo's phone has no PIN and counts the user as verified)",
            crate::terminal::sanitize(&r.rp_id)
        );
        Approval::Approved { verified: true }
    }

    fn choose_account(&mut self, _rp_id: &str, accounts: &[AccountChoice]) -> Option<usize> {
        (!accounts.is_empty()).then_some(0)
    }
}

type Phone = phone::Phone<Authenticator<MemoryStore, DemoUser>>;

struct Rig {
    relay_url: String,
    radio: MemoryRadio,
    phone: Phone,
    origin: String,
    qr_out: Option<PathBuf>,
    timeout: Duration,
    printed: Arc<RequestsPrinted>,
    data_channel: bool,
}

impl Rig {
    /// Runs one ceremony: the laptop shows the QR code, the phone "scans" it and serves.
    /// `prepare` parses the relying party's options for this rig's laptop configuration.
    async fn ceremony<C: session::Ceremony>(
        &self,
        prepare: impl FnOnce(&LaptopConfig) -> Result<Prepared<C>, session::Error>,
    ) -> Result<(C::Response, Duration), CliError> {
        let config = LaptopConfig {
            relays: RelayOverrides::all(self.relay_url.clone()),
            timeouts: Timeouts {
                scan: self.timeout,
                user: self.timeout,
                ..Timeouts::default()
            },
            data_channel: self.data_channel,
            ..LaptopConfig::default()
        };
        let prepared = prepare(&config)?;
        // Plain lines: the phone and the RP write to stderr too.
        let progress = Progress::plain("laptop: ");
        let url = prepared.qr_url().unwrap_or_default();
        progress.aside(|| show_qr(&url, self.qr_out.as_deref(), DEMO_QR_HINT));
        let shown = Instant::now();
        let (events, printer) = spawn_event_printer(progress.clone());
        let phone_task = {
            let radio = self.radio.clone();
            let phone = self.phone.clone();
            let printed = self.printed.clone();
            printed.reset();
            tokio::spawn(async move {
                eprintln!("phone:  took the QR code's text (the demo's phone has no camera)");
                let (events, mut rx) = PhoneEvents::channel(64);
                let printer = tokio::spawn(async move {
                    while let Some(p) = rx.recv().await {
                        eprintln!("phone:  {p}");
                        if matches!(p, PhoneProgress::Request { .. }) {
                            printed.printed();
                        }
                    }
                });
                let r = phone.serve(&QrInput::Text(url), &radio, &events).await;
                drop(events);
                let _ = printer.await;
                Ok::<_, CliError>(r?)
            })
        };
        let result = tokio::time::timeout(self.timeout, prepared.run(&self.radio, &events)).await;
        let done = Instant::now();
        drop(events);
        let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
        progress.finish(matches!(result, Ok(Ok(_))));
        let laptop_result = match result {
            Ok(r) => r.map_err(CliError::from),
            Err(_) => Err(CliError::Session(session::Error::Timeout {
                step: session::Step::WaitingForUser,
                after: self.timeout,
            })),
        };
        let phone_result = match tokio::time::timeout(self.timeout, phone_task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(CliError::Invalid(format!("the phone task failed: {e}"))),
            Err(_) => Err(CliError::Invalid("the phone did not finish".into())),
        };
        let value = laptop_result?;
        let outcome = phone_result?;
        if outcome.status != 0 {
            return Err(CliError::PhoneRefused(format!(
                "status {:#04x}",
                outcome.status
            )));
        }
        Ok((value, done.saturating_duration_since(shown)))
    }
}

/// Runs the demo; a JSON summary is returned for stdout.
pub async fn run(args: &DemoArgs) -> Result<Json, CliError> {
    check_qr_out(args.qr_out.as_deref())?;
    let origin = format!("https://{}", args.rp_id);
    let origin_url = Url::parse(&origin).map_err(|e| {
        CliError::Invalid(format!(
            "--rp-id {:?} gives no valid origin: {e}",
            args.rp_id
        ))
    })?;
    let rp = WebauthnCore::new_unsafe_experts_only(
        "hybridge demo",
        &args.rp_id,
        vec![origin_url],
        Duration::from_secs(120),
        None,
        None,
    );
    let relay = Relay::bind(RelayConfig::default())
        .await
        .map_err(|e| CliError::Network(format!("cannot start the in-process relay: {e}")))?;
    eprintln!("relay:  tunnel server listening on {}", relay.url());
    eprintln!(
        "rp:     relying party {} (webauthn-rs-core), origin {origin}",
        args.rp_id
    );
    eprintln!("radio:  in-memory, standing in for Bluetooth LE (no adapter needed)");
    let printed = Arc::new(RequestsPrinted::default());
    let rig = Rig {
        relay_url: relay.url(),
        radio: MemoryRadio::new().with_interval(Duration::from_millis(20)),
        phone: phone::Phone::new(Authenticator::new(
            MemoryStore::new(),
            DemoUser {
                printed: printed.clone(),
            },
            SystemClock,
            rand_core::OsRng,
        ))
        .relay(relay.url())
        .timeouts(PhoneTimeouts {
            laptop: args.timeout,
            ..PhoneTimeouts::default()
        })
        .data_channel(args.data_channel),
        origin,
        qr_out: args.qr_out.clone(),
        timeout: args.timeout,
        printed,
        data_channel: args.data_channel,
    };
    let outcome = demo(&rig, &rp, &args.user).await;
    relay.shutdown(Duration::from_secs(1)).await;
    outcome
}

async fn demo(rig: &Rig, rp: &WebauthnCore, user: &str) -> Result<Json, CliError> {
    // 1. Registration.
    eprintln!("\n== 1. Register a passkey for {user} ==");
    let builder = rp
        .new_challenge_register_builder(user.as_bytes(), user, user)
        .map(|b| {
            b.user_verification_policy(UserVerificationPolicy::Required)
                .require_resident_key(true)
        })
        .map_err(|e| CliError::Invalid(format!("the relying party refused the user: {e:?}")))?;
    let (ccr, reg_state) = rp
        .generate_challenge_register(builder)
        .map_err(|e| CliError::Invalid(format!("the relying party failed: {e:?}")))?;
    let options = serde_json::to_string(&ccr)
        .map_err(|e| CliError::Invalid(format!("cannot encode the options: {e}")))?;
    eprintln!(
        "rp:     issued PublicKeyCredentialCreationOptions ({} bytes)",
        options.len()
    );
    let origin = rig.origin.clone();
    let (registration, reg_time) = rig
        .ceremony(|config| session::register(&options, &origin, config))
        .await?;
    let reg_json = registration.to_json();
    let rpc: RegisterPublicKeyCredential =
        serde_json::from_value(reg_json).map_err(|e| CliError::RpRejected {
            what: "registration",
            reason: e.to_string(),
        })?;
    let credential = rp
        .register_credential(&rpc, &reg_state, None)
        .map_err(|e| CliError::RpRejected {
            what: "registration",
            reason: format!("{e:?}"),
        })?;
    let credential_id = b64url(&registration.credential_id);
    eprintln!("rp:     registration verified: credential {credential_id}");

    // 2. Sign-in with the new passkey.
    eprintln!("\n== 2. Sign in as {user} ==");
    let builder = rp
        .new_challenge_authenticate_builder(
            vec![credential.clone()],
            Some(UserVerificationPolicy::Required),
        )
        .map_err(|e| CliError::Invalid(format!("the relying party failed: {e:?}")))?;
    let (rcr, auth_state) = rp
        .generate_challenge_authenticate(builder)
        .map_err(|e| CliError::Invalid(format!("the relying party failed: {e:?}")))?;
    let options = serde_json::to_string(&rcr)
        .map_err(|e| CliError::Invalid(format!("cannot encode the options: {e}")))?;
    eprintln!(
        "rp:     issued PublicKeyCredentialRequestOptions ({} bytes)",
        options.len()
    );
    let (assertion, auth_time) = rig
        .ceremony(|config| session::sign_in(&options, &origin, config))
        .await?;
    let pkc: PublicKeyCredential =
        serde_json::from_value(assertion.to_json()).map_err(|e| CliError::RpRejected {
            what: "assertion",
            reason: e.to_string(),
        })?;
    let result =
        rp.authenticate_credential(&pkc, &auth_state)
            .map_err(|e| CliError::RpRejected {
                what: "assertion",
                reason: format!("{e:?}"),
            })?;
    eprintln!(
        "rp:     sign-in verified: user verified {}, counter {}",
        result.user_verified(),
        result.counter()
    );

    eprintln!("\n== Summary ==");
    eprintln!(
        "registered passkey {credential_id} for {user}@{} in {} ms",
        rp_id_of(&rig.origin),
        reg_time.as_millis()
    );
    eprintln!(
        "signed in with it in {} ms; the relying party verified both",
        auth_time.as_millis()
    );
    Ok(json!({
        "rp_id": rp_id_of(&rig.origin),
        "user": user,
        "credential_id": credential_id,
        "registration_verified": true,
        "sign_in_verified": true,
        "user_verified": result.user_verified(),
        "registration_ms": reg_time.as_millis() as u64,
        "sign_in_ms": auth_time.as_millis() as u64,
    }))
}

fn rp_id_of(origin: &str) -> &str {
    origin.strip_prefix("https://").unwrap_or(origin)
}

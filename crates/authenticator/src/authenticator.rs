//! The software passkey authenticator: answers CTAP2 requests exactly as they arrive over a
//! hybrid tunnel (`handle(request bytes) -> response bytes`, docs/protocol.md §9).
//!
//! # Behaviour, and the choices made where CTAP leaves room
//! * **Algorithms:** ES256 only (P-256, ECDSA with SHA-256, DER-encoded signatures). A
//!   makeCredential without ES256 among `pubKeyCredParams` gets
//!   `CTAP2_ERR_UNSUPPORTED_ALGORITHM`.
//! * **Credentials** are random 32-byte IDs kept in the [`CredentialStore`] with their private
//!   key, discoverable (`rk: true`) or not. Without an allowList, getAssertion considers only
//!   discoverable credentials; with one, any listed credential of this RP ID.
//! * **User interaction** goes through [`UserAgent`]: every makeCredential and getAssertion
//!   asks the user (hybrid has no silent pre-flight, docs/protocol.md §9), verifying them when `uv` was
//!   requested. The flags tell the truth: UP only when presence was collected and `up` was not
//!   `false`, UV only when the user agent reports verification. `up: false` on makeCredential is
//!   `CTAP2_ERR_INVALID_OPTION`; `rk` on getAssertion is `CTAP2_ERR_UNSUPPORTED_OPTION`.
//!   Declined → `CTAP2_ERR_OPERATION_DENIED`; required UV not achieved →
//!   `CTAP2_ERR_OPERATION_DENIED`; user agent locked → `CTAP2_ERR_UV_BLOCKED`.
//! * **excludeList:** a match is reported only after the user was asked (so a desktop cannot
//!   silently probe for accounts), as `CTAP2_ERR_CREDENTIAL_EXCLUDED`.
//! * **Account choice:** when several discoverable credentials match and there is no allowList,
//!   [`UserAgent::choose_account`] picks one and the response says `userSelected: true`.
//! * **User entity:** returned for discoverable credentials with the user handle; `name` and
//!   `displayName` only when the user was verified (CTAP 2.1 §6.2.2).
//! * **Signature counter:** per credential, `0` at creation and incremented by one on every
//!   successful assertion (saturating at 2³²−1), persisted with the last-use time through
//!   [`CredentialStore::record_use`]. Relying parties thus see a strictly increasing counter
//!   for this device-bound credential.
//! * **Device-bound:** BE = 0 and BS = 0 always; nothing is synced.
//! * **Attestation:** `"packed"` self attestation by default (signed with the credential key, no
//!   certificate), or `"none"` ([`Config::attestation`]); CTAP 2.2
//!   `attestationFormatsPreference` is honoured when it names one of the two.
//! * **Extensions:** `prf` follows Chromium's hybrid phone (see `hybridge_ctap::extensions`): outputs in the
//!   unsigned extension outputs, `HMAC-SHA256(CredRandom, salt)` with the salts as received
//!   (clients hash them), CredRandom chosen by whether the user was verified. Every credential
//!   has both CredRandoms, so PRF works for every credential. `hmac-secret` is neither
//!   advertised nor answered: its assertions need a PIN/UV auth protocol for the salt
//!   encryption, which phones do not have (Chrome's phone lists only `prf`), and getInfo must
//!   not promise what the authenticator cannot do. A request naming it is served without it.
//! * **PIN/UV auth protocols:** none (as phones do, docs/protocol.md §8.3): a request carrying
//!   `pinUvAuthParam` gets `CTAP2_ERR_MISSING_PARAMETER` without a protocol, else
//!   `CTAP1_ERR_INVALID_PARAMETER`.
//! * **Store writes** happen only after the user approved and the response was built; a failed
//!   or declined ceremony writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hybridge_ctap::extensions::evaluate_prf;
use hybridge_ctap::{
    AttestationStatement, AttestedCredentialData, AuthenticatorData, CoseKey, CredentialDescriptor,
    CtapError, Flags, GetAssertionRequest, GetAssertionResponse, GetInfoResponse,
    MakeCredentialRequest, MakeCredentialResponse, PrfOutputs, PubKeyCredParam, Request, Response,
    StatusCode, UserEntity, rp_id_hash,
};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::store::{CredentialStore, StoredCredential};
use crate::user::{AccountChoice, Approval, ApprovalRequest, Ceremony, UserAgent};

/// hybridge's AAGUID, `2a117231-fd40-4f29-8ac6-a6c3565706f1`: 16 random bytes generated once
/// for this project, with the UUID version-4 and variant bits set. It names the model
/// "hybridge software authenticator"; it is the same for every installation.
pub const AAGUID: [u8; 16] = [
    0x2a, 0x11, 0x72, 0x31, 0xfd, 0x40, 0x4f, 0x29, 0x8a, 0xc6, 0xa6, 0xc3, 0x56, 0x57, 0x06, 0xf1,
];

/// Length of the credential IDs this authenticator makes.
pub const CREDENTIAL_ID_LEN: usize = 32;

/// Which attestation statement makeCredential returns when the request states no preference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttestationFormat {
    /// `"packed"` self attestation.
    #[default]
    PackedSelf,
    /// `"none"`.
    None,
}

/// Tunables of the authenticator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// Default attestation format.
    pub attestation: AttestationFormat,
    /// Ask for user verification on every ceremony, as Chromium's phone does, even when the
    /// request does not set `uv`.
    pub always_verify: bool,
}

/// Where the authenticator gets the time (Unix seconds) for created / last-used stamps.
pub trait Clock: Send {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

impl<F: Fn() -> u64 + Send> Clock for F {
    fn now(&self) -> u64 {
        self()
    }
}

/// A CTAP2 authenticator over a credential store and a user agent.
///
/// ```
/// use hybridge_authenticator::authenticator::{Authenticator, SystemClock};
/// use hybridge_authenticator::store::MemoryStore;
/// use hybridge_authenticator::user::AutoApprove;
/// use hybridge_ctap::GetInfoResponse;
///
/// let mut a = Authenticator::new(MemoryStore::new(), AutoApprove, SystemClock, rand_core::OsRng);
/// let info = GetInfoResponse::decode_reply(&a.handle(&[0x04])).unwrap();
/// assert_eq!(info.transports, ["hybrid", "internal"]);
/// ```
pub struct Authenticator<S, U> {
    store: S,
    user: U,
    clock: Box<dyn Clock>,
    rng: Box<dyn CryptoRngCore + Send>,
    config: Config,
    last_error: Option<CtapError>,
    /// The token of the request being handled, for the checks deep inside it.
    cancel: Cancel,
}

/// Cancels one request: the requester keeps a clone and calls [`cancel`](Self::cancel) when
/// it gives up (the phone session does on a timeout or when the laptop hangs up), and the
/// request ends with `CTAP2_ERR_KEEPALIVE_CANCEL` without writing anything, even if the user
/// approves afterwards. Each request gets a new token, so a cancel can never reach another
/// request, and one raised before the request even started still counts.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A token for a new request, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up on the request (from any thread).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the requester gave up.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl<S: CredentialStore, U: UserAgent> Authenticator<S, U> {
    /// An authenticator with the default [`Config`].
    pub fn new(
        store: S,
        user: U,
        clock: impl Clock + 'static,
        rng: impl CryptoRngCore + Send + 'static,
    ) -> Self {
        Self {
            store,
            user,
            clock: Box::new(clock),
            rng: Box::new(rng),
            config: Config::default(),
            last_error: None,
            cancel: Cancel::new(),
        }
    }

    /// Fails if the current request was cancelled; called before the user is asked, and after
    /// the user answered before anything is written.
    fn check_cancelled(&self) -> Result<(), CtapError> {
        if self.cancel.is_cancelled() {
            Err(CtapError::new(
                StatusCode::CTAP2_ERR_KEEPALIVE_CANCEL,
                "the request was cancelled: its requester gave up on it",
            ))
        } else {
            Ok(())
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The credential store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The credential store, mutably (e.g. for a passkey manager between sessions).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The user agent.
    pub fn user_mut(&mut self) -> &mut U {
        &mut self.user
    }

    /// Takes the authenticator apart.
    pub fn into_parts(self) -> (S, U) {
        (self.store, self.user)
    }

    /// Why the last request failed, for logs (never contains secrets).
    pub fn last_error(&self) -> Option<&CtapError> {
        self.last_error.as_ref()
    }

    /// The getInfo response; its CBOR (`to_cbor`) is also key 1 of the post-handshake message.
    pub fn get_info(&self) -> GetInfoResponse {
        let mut info = GetInfoResponse::default();
        info.versions = vec!["FIDO_2_0".into(), "FIDO_2_1".into()];
        info.extensions = vec![hybridge_ctap::extensions::PRF.into()];
        info.aaguid = AAGUID;
        info.options = vec![("rk".into(), true), ("uv".into(), true)];
        info.max_credential_count_in_list =
            Some(hybridge_ctap::types::MAX_CREDENTIAL_LIST_LEN as u64);
        info.transports = vec!["hybrid".into(), "internal".into()];
        info.algorithms = vec![PubKeyCredParam::es256()];
        info
    }

    /// Answers one CTAP2 request, `command || CBOR`, with `status || CBOR`: the hybrid CTAP
    /// message payloads (docs/protocol.md §9). Never panics on any input. The request cannot
    /// be cancelled; [`handle_cancellable`](Self::handle_cancellable) can.
    pub fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        self.handle_cancellable(request, &Cancel::new())
    }

    /// [`handle`](Self::handle), ended early with `CTAP2_ERR_KEEPALIVE_CANCEL` once `cancel`
    /// is cancelled: it is checked before the user is asked and before every store write.
    pub fn handle_cancellable(&mut self, request: &[u8], cancel: &Cancel) -> Vec<u8> {
        self.cancel = cancel.clone();
        let result = Request::decode(request).and_then(|r| self.process(r));
        self.cancel = Cancel::new();
        match result {
            Ok(response) => {
                self.last_error = None;
                response.encode()
            }
            Err(e) => {
                let status = e.status;
                self.last_error = Some(e);
                Response::Error(status).encode()
            }
        }
    }

    /// Answers a decoded request.
    pub fn process(&mut self, request: Request) -> Result<Response, CtapError> {
        Ok(match request {
            Request::MakeCredential(r) => {
                Response::MakeCredential(Box::new(self.make_credential(&r)?))
            }
            Request::GetAssertion(r) => Response::GetAssertion(Box::new(self.get_assertion(&r)?)),
            Request::GetInfo => Response::GetInfo(Box::new(self.get_info())),
            // CTAP 2.1 §6.9: user presence, nothing else. (Over hybrid the phone session
            // never passes it here: it ends the session as Chrome's phone does, docs/protocol.md §9.)
            Request::Selection => {
                let select = ApprovalRequest {
                    ceremony: Ceremony::Select,
                    rp_id: String::new(),
                    rp_name: None,
                    user_name: None,
                    user_display_name: None,
                    user_verification: false,
                };
                self.ask(&select, false)?;
                Response::Selection
            }
        })
    }

    /// authenticatorMakeCredential.
    pub fn make_credential(
        &mut self,
        req: &MakeCredentialRequest,
    ) -> Result<MakeCredentialResponse, CtapError> {
        reject_pin_uv_auth(req.pin_uv_auth_param.as_deref(), req.pin_uv_auth_protocol)?;
        if req.rp.id.is_empty() {
            return Err(CtapError::invalid_parameter("empty RP ID"));
        }
        if req.user.id.is_empty() || req.user.id.len() > hybridge_ctap::types::MAX_USER_ID_LEN {
            return Err(CtapError::invalid_length("user.id must be 1 to 64 bytes"));
        }
        if !req.pub_key_cred_params.iter().any(|p| {
            p.type_ == hybridge_ctap::types::PUBLIC_KEY && p.alg == hybridge_ctap::types::ES256
        }) {
            return Err(CtapError::new(
                StatusCode::CTAP2_ERR_UNSUPPORTED_ALGORITHM,
                "only ES256 is supported",
            ));
        }
        if req.options.up == Some(false) {
            return Err(CtapError::new(
                StatusCode::CTAP2_ERR_INVALID_OPTION,
                "up=false is not valid for makeCredential",
            ));
        }
        if req.enterprise_attestation.is_some() {
            return Err(CtapError::invalid_parameter(
                "enterprise attestation is not supported",
            ));
        }
        let discoverable = req.options.rk == Some(true);
        let want_uv = req.options.uv == Some(true) || self.config.always_verify;

        let approval = ApprovalRequest {
            ceremony: Ceremony::Register,
            rp_id: req.rp.id.clone(),
            rp_name: req.rp.name.clone(),
            user_name: req.user.name.clone(),
            user_display_name: req.user.display_name.clone(),
            user_verification: want_uv,
        };

        // excludeList: answer only after collecting presence, so accounts cannot be probed.
        let mut excluded = false;
        for d in req.exclude_list.iter().filter(|d| d.is_public_key()) {
            if let Some(c) = self.store.credential(&d.id).map_err(store_error)? {
                if c.rp_id == req.rp.id {
                    excluded = true;
                    break;
                }
            }
        }
        if excluded {
            self.ask(&approval, false)?;
            return Err(CtapError::new(
                StatusCode::CTAP2_ERR_CREDENTIAL_EXCLUDED,
                "a credential in the excludeList exists",
            ));
        }

        let verified = self.ask(&approval, want_uv)?;

        // Create the credential.
        let signing_key = SigningKey::random(&mut CryptoRng(&mut *self.rng));
        let mut credential_id = vec![0u8; CREDENTIAL_ID_LEN];
        self.rng.fill_bytes(&mut credential_id);
        let mut cred_random_uv = Zeroizing::new([0u8; 32]);
        let mut cred_random_no_uv = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(&mut cred_random_uv[..]);
        self.rng.fill_bytes(&mut cred_random_no_uv[..]);
        let point = signing_key.verifying_key().to_encoded_point(false);
        let public_key = CoseKey::es256_from_sec1(point.as_bytes())
            .ok_or_else(|| CtapError::new(StatusCode::CTAP1_ERR_OTHER, "key encoding"))?;

        let mut flags = Flags::UP;
        if verified {
            flags |= Flags::UV;
        }
        // No signed extension outputs: hmac-secret is not supported (see the module docs) and
        // prf outputs are unsigned.
        let extensions = None;
        let auth_data = AuthenticatorData {
            rp_id_hash: rp_id_hash(&req.rp.id),
            flags: Flags(flags),
            sign_count: 0,
            attested_credential_data: Some(AttestedCredentialData {
                aaguid: AAGUID,
                credential_id: credential_id.clone(),
                public_key,
            }),
            extensions,
        }
        .to_bytes();

        let format = req
            .attestation_formats_preference
            .as_ref()
            .and_then(|prefs| {
                prefs.iter().find_map(|f| match f.as_str() {
                    "packed" => Some(AttestationFormat::PackedSelf),
                    "none" => Some(AttestationFormat::None),
                    _ => None,
                })
            })
            .unwrap_or(self.config.attestation);
        let attestation = match format {
            AttestationFormat::None => AttestationStatement::None,
            AttestationFormat::PackedSelf => AttestationStatement::Packed {
                alg: hybridge_ctap::types::ES256,
                sig: sign(&signing_key, &auth_data, &req.client_data_hash),
                x5c: Vec::new(),
            },
        };

        let prf = req.extensions.prf.as_ref().map(|p| PrfOutputs {
            enabled: Some(true),
            results: p.eval.as_ref().map(|salts| {
                evaluate_prf(
                    if verified {
                        &cred_random_uv
                    } else {
                        &cred_random_no_uv
                    },
                    salts,
                )
            }),
        });

        let mut response = MakeCredentialResponse::default();
        response.attestation = attestation;
        response.auth_data = auth_data;
        response.unsigned_extension_outputs.prf = prf;

        // The ceremony is complete: only now does anything reach the store.
        self.check_cancelled()?;
        let private_key = Zeroizing::new(<[u8; 32]>::from(signing_key.to_bytes()));
        self.store
            .insert(StoredCredential {
                credential_id,
                rp_id: req.rp.id.clone(),
                rp_name: req.rp.name.clone(),
                user_handle: req.user.id.clone(),
                user_name: req.user.name.clone(),
                user_display_name: req.user.display_name.clone(),
                private_key: *private_key,
                discoverable,
                sign_count: 0,
                cred_random_uv: *cred_random_uv,
                cred_random_no_uv: *cred_random_no_uv,
                created: self.clock.now(),
                last_used: None,
            })
            .map_err(store_error)?;
        Ok(response)
    }

    /// authenticatorGetAssertion.
    pub fn get_assertion(
        &mut self,
        req: &GetAssertionRequest,
    ) -> Result<GetAssertionResponse, CtapError> {
        reject_pin_uv_auth(req.pin_uv_auth_param.as_deref(), req.pin_uv_auth_protocol)?;
        if req.options.rk.is_some() {
            return Err(CtapError::new(
                StatusCode::CTAP2_ERR_UNSUPPORTED_OPTION,
                "rk is not a getAssertion option",
            ));
        }
        let want_up = req.options.up != Some(false);
        let want_uv = req.options.uv == Some(true) || self.config.always_verify;

        // Locate credentials.
        let with_allow_list = !req.allow_list.is_empty();
        let mut candidates: Vec<StoredCredential> = Vec::new();
        if with_allow_list {
            for d in req.allow_list.iter().filter(|d| d.is_public_key()) {
                if candidates.iter().any(|c| c.credential_id == d.id) {
                    continue;
                }
                if let Some(c) = self.store.credential(&d.id).map_err(store_error)? {
                    if c.rp_id == req.rp_id {
                        candidates.push(c);
                    }
                }
            }
        } else {
            candidates = self
                .store
                .credentials_for_rp(&req.rp_id)
                .map_err(store_error)?
                .into_iter()
                .filter(|c| c.discoverable)
                .collect();
        }
        if candidates.is_empty() {
            return Err(CtapError::new(
                StatusCode::CTAP2_ERR_NO_CREDENTIALS,
                "no credential for this RP",
            ));
        }

        // Choose the account.
        let mut user_selected = None;
        let chosen = if candidates.len() > 1 && !with_allow_list {
            let choices: Vec<AccountChoice> = candidates
                .iter()
                .map(|c| AccountChoice {
                    user_name: c.user_name.clone(),
                    user_display_name: c.user_display_name.clone(),
                    created: c.created,
                })
                .collect();
            let i = self
                .user
                .choose_account(&req.rp_id, &choices)
                .filter(|&i| i < candidates.len())
                .ok_or_else(|| {
                    CtapError::new(StatusCode::CTAP2_ERR_OPERATION_DENIED, "no account chosen")
                })?;
            user_selected = Some(true);
            candidates.swap_remove(i)
        } else {
            candidates.swap_remove(0)
        };

        let verified = self.ask(
            &ApprovalRequest {
                ceremony: Ceremony::SignIn,
                rp_id: req.rp_id.clone(),
                rp_name: chosen.rp_name.clone(),
                user_name: chosen.user_name.clone(),
                user_display_name: chosen.user_display_name.clone(),
                user_verification: want_uv,
            },
            want_uv,
        )?;

        let sign_count = chosen.sign_count.saturating_add(1);
        let mut flags = 0;
        if want_up {
            flags |= Flags::UP;
        }
        if verified {
            flags |= Flags::UV;
        }
        let auth_data = AuthenticatorData {
            rp_id_hash: rp_id_hash(&req.rp_id),
            flags: Flags(flags),
            sign_count,
            attested_credential_data: None,
            extensions: None,
        }
        .to_bytes();

        let signing_key = SigningKey::from_bytes(&chosen.private_key.into()).map_err(|_| {
            CtapError::new(
                StatusCode::CTAP2_ERR_INVALID_CREDENTIAL,
                "stored key is invalid",
            )
        })?;
        let signature = sign(&signing_key, &auth_data, &req.client_data_hash);

        let prf = req
            .extensions
            .prf
            .as_ref()
            .and_then(|p| p.for_credential(&chosen.credential_id))
            .map(|salts| PrfOutputs {
                enabled: None,
                results: Some(evaluate_prf(
                    if verified {
                        &chosen.cred_random_uv
                    } else {
                        &chosen.cred_random_no_uv
                    },
                    salts,
                )),
            });

        let user = chosen.discoverable.then(|| UserEntity {
            id: chosen.user_handle.clone(),
            // Personal information only after user verification (CTAP 2.1 §6.2.2).
            name: chosen.user_name.clone().filter(|_| verified),
            display_name: chosen.user_display_name.clone().filter(|_| verified),
        });

        let mut response = GetAssertionResponse::default();
        response.credential = Some(CredentialDescriptor::public_key(
            chosen.credential_id.clone(),
        ));
        response.auth_data = auth_data;
        response.signature = signature;
        response.user = user;
        response.user_selected = user_selected;
        response.unsigned_extension_outputs.prf = prf;

        self.check_cancelled()?;
        self.store
            .record_use(&chosen.credential_id, sign_count, self.clock.now())
            .map_err(store_error)?;
        Ok(response)
    }

    /// Asks the user; returns whether they were verified. Fails when they declined, when
    /// verification was required and not achieved, or when the user agent is locked.
    fn ask(&mut self, request: &ApprovalRequest, require_uv: bool) -> Result<bool, CtapError> {
        // Given up already (the laptop left before the prompt): do not ask at all.
        self.check_cancelled()?;
        match self.user.approve(request) {
            Approval::Approved { verified } => {
                if require_uv && !verified {
                    Err(CtapError::new(
                        StatusCode::CTAP2_ERR_OPERATION_DENIED,
                        "user verification was required and not performed",
                    ))
                } else {
                    Ok(verified)
                }
            }
            Approval::Declined => Err(CtapError::new(
                StatusCode::CTAP2_ERR_OPERATION_DENIED,
                "the user declined",
            )),
            Approval::Locked => Err(CtapError::new(
                StatusCode::CTAP2_ERR_UV_BLOCKED,
                "user verification is locked",
            )),
        }
    }
}

/// This authenticator has no PIN/UV auth protocols (CTAP 2.1 §6.1.2 step 1–2).
fn reject_pin_uv_auth(param: Option<&[u8]>, protocol: Option<u64>) -> Result<(), CtapError> {
    match (param, protocol) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(CtapError::missing(
            "pinUvAuthParam without pinUvAuthProtocol",
        )),
        (Some(_), Some(_)) => Err(CtapError::invalid_parameter(
            "no pinUvAuthProtocol is supported",
        )),
    }
}

fn sign(key: &SigningKey, auth_data: &[u8], client_data_hash: &[u8; 32]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(auth_data.len() + 32);
    msg.extend_from_slice(auth_data);
    msg.extend_from_slice(client_data_hash);
    let sig: Signature = key.sign(&msg);
    sig.to_der().as_bytes().to_vec()
}

/// Lends the boxed RNG where a sized `CryptoRng + RngCore` is needed.
struct CryptoRng<'a>(&'a mut (dyn CryptoRngCore + Send));

impl rand_core::RngCore for CryptoRng<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl rand_core::CryptoRng for CryptoRng<'_> {}

fn store_error(e: crate::store::StoreError) -> CtapError {
    use crate::store::StoreError;
    let status = match e {
        StoreError::Locked => StatusCode::CTAP2_ERR_UV_BLOCKED,
        _ => StatusCode::CTAP1_ERR_OTHER,
    };
    CtapError::new(status, format!("passkey store: {e}"))
}

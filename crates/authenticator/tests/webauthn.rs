//! The authenticator against an independent relying party (webauthn-rs-core).
//!
//! The RP library issues registration and authentication challenges; a small test-only client
//! turns them into clientDataJSON and CTAP request bytes exactly as a hybrid desktop would;
//! the authenticator answers through `handle(bytes)`; the client turns the CTAP response into
//! the WebAuthn response structures; and the RP library verifies them.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hybridge_authenticator::authenticator::{AAGUID, Authenticator, Cancel};
use hybridge_authenticator::store::{CredentialStore, MemoryStore, StoreError};
use hybridge_authenticator::user::{AccountChoice, Approval, ApprovalRequest, Ceremony, UserAgent};
use hybridge_cbor::Value;
use hybridge_ctap::{
    CredentialDescriptor, Flags, GetAssertionRequest, GetAssertionResponse, GetInfoResponse,
    MakeCredentialRequest, MakeCredentialResponse, Options, PrfInputs, PrfValues, PubKeyCredParam,
    Request, RpEntity, StatusCode, UserEntity,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use url::Url;
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    AuthenticationState, AuthenticatorAssertionResponseRaw, AuthenticatorAttestationResponseRaw,
    CreationChallengeResponse, Credential, PublicKeyCredential, RegisterPublicKeyCredential,
    RegistrationState, RequestChallengeResponse, RequestRegistrationExtensions,
    ResidentKeyRequirement, UserVerificationPolicy,
};

const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://example.com";
const NOW: u64 = 1_700_000_000;

// ------------------------------------------------------------------------------------------
// The person holding the phone, scripted.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Verified,
    PresentOnly,
    Decline,
    Lock,
}

struct TestUser {
    answer: Answer,
    /// Set while the user is deciding: the requester gave up (the phone session's timeout).
    cancel_while_deciding: Option<Cancel>,
    choose: Option<usize>,
    asked: Vec<ApprovalRequest>,
    offered: Vec<Vec<AccountChoice>>,
}

impl TestUser {
    fn new() -> Self {
        Self {
            answer: Answer::Verified,
            cancel_while_deciding: None,
            choose: Some(0),
            asked: Vec::new(),
            offered: Vec::new(),
        }
    }
}

impl UserAgent for TestUser {
    fn approve(&mut self, request: &ApprovalRequest) -> Approval {
        self.asked.push(request.clone());
        if let Some(token) = &self.cancel_while_deciding {
            token.cancel();
        }
        match self.answer {
            Answer::Verified => Approval::Approved { verified: true },
            Answer::PresentOnly => Approval::Approved { verified: false },
            Answer::Decline => Approval::Declined,
            Answer::Lock => Approval::Locked,
        }
    }

    fn choose_account(&mut self, _rp_id: &str, accounts: &[AccountChoice]) -> Option<usize> {
        self.offered.push(accounts.to_vec());
        self.choose
    }
}

type Phone = Authenticator<MemoryStore, TestUser>;

fn phone() -> Phone {
    Authenticator::new(
        MemoryStore::new(),
        TestUser::new(),
        || NOW,
        rand_core::OsRng,
    )
}

fn rp() -> WebauthnCore {
    WebauthnCore::new_unsafe_experts_only(
        "Example",
        RP_ID,
        vec![Url::parse(ORIGIN).unwrap()],
        Duration::from_secs(60),
        None,
        None,
    )
}

fn stored_count(p: &Phone) -> usize {
    p.store().list().unwrap().len()
}

// ------------------------------------------------------------------------------------------
// The test-only client: WebAuthn options -> clientDataJSON + CTAP bytes -> WebAuthn response.

fn client_data(type_: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": type_,
        "challenge": URL_SAFE_NO_PAD.encode(challenge),
        "origin": origin,
        "crossOrigin": false,
    }))
    .unwrap()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

struct Registration {
    client_data_json: Vec<u8>,
    request: MakeCredentialRequest,
}

/// Builds the makeCredential request a client would send for these options.
fn make_credential_request(ccr: &CreationChallengeResponse, origin: &str) -> Registration {
    let o = &ccr.public_key;
    let client_data_json = client_data("webauthn.create", &o.challenge, origin);
    let sel = o.authenticator_selection.as_ref();
    let rk = sel.is_some_and(|s| {
        s.require_resident_key || s.resident_key == Some(ResidentKeyRequirement::Required)
    });
    // The authenticator reports uv: true, so "required" and "preferred" both ask for UV.
    let uv =
        sel.is_none_or(|s| s.user_verification != UserVerificationPolicy::Discouraged_DO_NOT_USE);
    let request = {
        let mut v = MakeCredentialRequest::default();
        v.client_data_hash = sha256(&client_data_json);
        v.rp = RpEntity {
            id: o.rp.id.clone(),
            name: Some(o.rp.name.clone()),
        };
        v.user = UserEntity {
            id: o.user.id.clone(),
            name: Some(o.user.name.clone()),
            display_name: Some(o.user.display_name.clone()),
        };
        v.pub_key_cred_params = o
            .pub_key_cred_params
            .iter()
            .map(|p| PubKeyCredParam {
                type_: p.type_.clone(),
                alg: p.alg,
            })
            .collect();
        v.exclude_list = o
            .exclude_credentials
            .iter()
            .flatten()
            .map(|d| CredentialDescriptor::public_key(d.id.clone()))
            .collect();
        v.extensions.hmac_secret = o.extensions.as_ref().and_then(|e| e.hmac_create_secret);
        v.options = Options {
            rk: rk.then_some(true),
            up: None,
            uv: uv.then_some(true),
        };
        v
    };
    Registration {
        client_data_json,
        request,
    }
}

/// The WebAuthn registration response for a makeCredential response.
fn registration_response(
    client_data_json: Vec<u8>,
    r: &MakeCredentialResponse,
) -> RegisterPublicKeyCredential {
    let ad = r.authenticator_data().unwrap();
    let id = ad.attested_credential_data.unwrap().credential_id;
    RegisterPublicKeyCredential {
        id: URL_SAFE_NO_PAD.encode(&id),
        raw_id: id,
        response: AuthenticatorAttestationResponseRaw {
            attestation_object: r.attestation_object(),
            client_data_json,
            transports: None,
        },
        type_: "public-key".into(),
        extensions: Default::default(),
    }
}

fn get_assertion_request(
    rcr: &RequestChallengeResponse,
    origin: &str,
    prf: Option<PrfInputs>,
) -> (Vec<u8>, GetAssertionRequest) {
    let o = &rcr.public_key;
    let client_data_json = client_data("webauthn.get", &o.challenge, origin);
    let uv = o.user_verification != UserVerificationPolicy::Discouraged_DO_NOT_USE;
    let request = {
        let mut v = GetAssertionRequest::default();
        v.rp_id = o.rp_id.clone();
        v.client_data_hash = sha256(&client_data_json);
        v.allow_list = o
            .allow_credentials
            .iter()
            .map(|c| CredentialDescriptor::public_key(c.id.clone()))
            .collect();
        v.extensions.prf = prf;
        v.options = Options {
            rk: None,
            up: None,
            uv: uv.then_some(true),
        };
        v
    };
    (client_data_json, request)
}

fn assertion_response(client_data_json: Vec<u8>, r: &GetAssertionResponse) -> PublicKeyCredential {
    let id = r.credential.as_ref().unwrap().id.clone();
    PublicKeyCredential {
        id: URL_SAFE_NO_PAD.encode(&id),
        raw_id: id,
        response: AuthenticatorAssertionResponseRaw {
            authenticator_data: r.auth_data.clone(),
            client_data_json,
            signature: r.signature.clone(),
            user_handle: r.user_handle().map(<[u8]>::to_vec),
        },
        extensions: Default::default(),
        type_: "public-key".into(),
    }
}

/// Registers a user end to end; returns the RP's credential and the CTAP response.
fn register(
    phone: &mut Phone,
    rp: &WebauthnCore,
    user: &str,
    discoverable: bool,
    policy: UserVerificationPolicy,
    tweak: impl FnOnce(&mut MakeCredentialRequest),
) -> (Credential, MakeCredentialResponse) {
    let builder = rp
        .new_challenge_register_builder(user.as_bytes(), user, &format!("{user} display"))
        .unwrap()
        .user_verification_policy(policy)
        .require_resident_key(discoverable)
        .extensions(Some(RequestRegistrationExtensions {
            hmac_create_secret: Some(true),
            ..Default::default()
        }));
    let (ccr, state): (CreationChallengeResponse, RegistrationState) =
        rp.generate_challenge_register(builder).unwrap();
    let mut reg = make_credential_request(&ccr, ORIGIN);
    tweak(&mut reg.request);
    let bytes = phone.handle(&Request::from(reg.request).encode());
    let response = MakeCredentialResponse::decode_reply(&bytes)
        .unwrap_or_else(|e| panic!("makeCredential failed: {e}, {:?}", phone.last_error()));
    let cred = rp
        .register_credential(
            &registration_response(reg.client_data_json, &response),
            &state,
            None,
        )
        .expect("the RP accepts the registration");
    (cred, response)
}

/// Authenticates end to end; returns the CTAP response after the RP verified it.
fn authenticate(
    phone: &mut Phone,
    rp: &WebauthnCore,
    cred: &mut Credential,
    discoverable: bool,
    policy: UserVerificationPolicy,
    prf: Option<PrfInputs>,
) -> GetAssertionResponse {
    let creds = if discoverable {
        vec![]
    } else {
        vec![cred.clone()]
    };
    let builder = rp
        .new_challenge_authenticate_builder(creds, Some(policy))
        .unwrap();
    let (rcr, mut state): (RequestChallengeResponse, AuthenticationState) =
        rp.generate_challenge_authenticate(builder).unwrap();
    let (cdj, req) = get_assertion_request(&rcr, ORIGIN, prf);
    let bytes = phone.handle(&Request::from(req).encode());
    let response = GetAssertionResponse::decode_reply(&bytes)
        .unwrap_or_else(|e| panic!("getAssertion failed: {e}, {:?}", phone.last_error()));
    if discoverable {
        // The RP looks the user up by the returned user handle.
        assert!(
            response.user_handle().is_some(),
            "discoverable: user handle returned"
        );
        state.set_allowed_credentials(vec![cred.clone()]);
    }
    let result = rp
        .authenticate_credential(&assertion_response(cdj, &response), &state)
        .expect("the RP accepts the assertion");
    assert!(result.counter() > cred.counter, "counter must increase");
    cred.counter = result.counter();
    response
}

fn salts(first: &[u8], second: Option<&[u8]>) -> PrfValues {
    PrfValues::from_inputs(first, second)
}

fn prf_eval(first: &[u8], second: Option<&[u8]>) -> PrfInputs {
    PrfInputs {
        eval: Some(salts(first, second)),
        eval_by_credential: Vec::new(),
    }
}

fn prf_results(r: &GetAssertionResponse) -> PrfValues {
    r.unsigned_extension_outputs
        .prf
        .as_ref()
        .and_then(|p| p.results.clone())
        .expect("prf results")
}

fn status(bytes: &[u8]) -> StatusCode {
    StatusCode(bytes[0])
}

// ------------------------------------------------------------------------------------------
// Round trips verified by the RP.

#[test]
fn non_discoverable_register_and_authenticate() {
    let rp = rp();
    let mut phone = phone();
    let (mut cred, mc) = register(
        &mut phone,
        &rp,
        "alice",
        false,
        UserVerificationPolicy::Required,
        |_| {},
    );
    assert_eq!(mc.attestation.fmt(), "packed");
    let ad = mc.authenticator_data().unwrap();
    let acd = ad.attested_credential_data.as_ref().unwrap();
    assert_eq!(acd.aaguid, AAGUID);
    assert!(ad.flags.up() && ad.flags.uv());
    assert!(!ad.flags.be() && !ad.flags.bs(), "device-bound: BE=0, BS=0");
    assert_eq!(ad.sign_count, 0);
    // hmac-secret was asked for but is not supported: no extension output is claimed.
    assert_eq!(ad.extensions, None);
    let stored = phone
        .store()
        .credential(&acd.credential_id)
        .unwrap()
        .unwrap();
    assert!(!stored.discoverable);
    assert_eq!(stored.created, NOW);

    for expected in 1..=3u32 {
        let ga = authenticate(
            &mut phone,
            &rp,
            &mut cred,
            false,
            UserVerificationPolicy::Required,
            None,
        );
        let ad = ga.authenticator_data().unwrap();
        assert_eq!(
            ad.sign_count, expected,
            "per-credential counter, +1 per assertion"
        );
        assert!(ad.flags.up() && ad.flags.uv() && !ad.flags.be() && !ad.flags.bs());
        assert!(
            ga.user.is_none(),
            "no user entity for a non-discoverable credential"
        );
    }
    let stored = phone
        .store()
        .credential(&acd.credential_id)
        .unwrap()
        .unwrap();
    assert_eq!((stored.sign_count, stored.last_used), (3, Some(NOW)));
}

#[test]
fn discoverable_with_account_choice() {
    let rp = rp();
    let mut phone = phone();
    let (mut alice, _) = register(
        &mut phone,
        &rp,
        "alice",
        true,
        UserVerificationPolicy::Required,
        |_| {},
    );
    let (mut bob, _) = register(
        &mut phone,
        &rp,
        "bob",
        true,
        UserVerificationPolicy::Required,
        |_| {},
    );
    // Two discoverable credentials: the user is offered both and picks one.
    for (cred, name) in [(&mut bob, "bob"), (&mut alice, "alice")] {
        let ids: Vec<Vec<u8>> = phone
            .store()
            .credentials_for_rp(RP_ID)
            .unwrap()
            .iter()
            .map(|c| c.user_handle.clone())
            .collect();
        let idx = ids.iter().position(|u| u == name.as_bytes()).unwrap();
        phone.user_mut().choose = Some(idx);
        let ga = authenticate(
            &mut phone,
            &rp,
            cred,
            true,
            UserVerificationPolicy::Required,
            None,
        );
        let user = ga.user.as_ref().unwrap();
        assert_eq!(user.id, name.as_bytes());
        assert_eq!(user.name.as_deref(), Some(name));
        assert_eq!(user.display_name, Some(format!("{name} display")));
        assert_eq!(ga.user_selected, Some(true));
        let offered = phone.user_mut().offered.pop().unwrap();
        assert_eq!(offered.len(), 2);
    }

    // Cancelling the account choice is a denial, and nothing is recorded.
    phone.user_mut().choose = None;
    let (_, req) = get_assertion_request(
        &rp.generate_challenge_authenticate(
            rp.new_challenge_authenticate_builder(vec![], Some(UserVerificationPolicy::Required))
                .unwrap(),
        )
        .unwrap()
        .0,
        ORIGIN,
        None,
    );
    let before: Vec<_> = phone
        .store()
        .list()
        .unwrap()
        .iter()
        .map(|c| c.sign_count)
        .collect();
    assert_eq!(
        status(&phone.handle(&Request::from(req).encode())),
        StatusCode::CTAP2_ERR_OPERATION_DENIED
    );
    let after: Vec<_> = phone
        .store()
        .list()
        .unwrap()
        .iter()
        .map(|c| c.sign_count)
        .collect();
    assert_eq!(before, after);
}

#[test]
fn discoverable_without_uv_hides_user_name() {
    let rp = rp();
    let mut phone = phone();
    phone.user_mut().answer = Answer::PresentOnly;
    let (mut cred, mc) = register(
        &mut phone,
        &rp,
        "carol",
        true,
        UserVerificationPolicy::Preferred,
        |r| r.options.uv = None,
    );
    let ad = mc.authenticator_data().unwrap();
    assert!(
        ad.flags.up() && !ad.flags.uv(),
        "UV only if the user was verified"
    );
    let mut ga = {
        let builder = rp
            .new_challenge_authenticate_builder(vec![], Some(UserVerificationPolicy::Preferred))
            .unwrap();
        let (rcr, mut state) = rp.generate_challenge_authenticate(builder).unwrap();
        let (cdj, mut req) = get_assertion_request(&rcr, ORIGIN, None);
        req.options.uv = None;
        let ga = GetAssertionResponse::decode_reply(&phone.handle(&Request::from(req).encode()))
            .unwrap();
        state.set_allowed_credentials(vec![cred.clone()]);
        let res = rp
            .authenticate_credential(&assertion_response(cdj, &ga), &state)
            .unwrap();
        assert!(!res.user_verified());
        cred.counter = res.counter();
        ga
    };
    let user = ga.user.take().unwrap();
    assert_eq!(user.id, b"carol");
    assert_eq!((user.name, user.display_name), (None, None));
    assert_eq!(ga.user_selected, None, "only one account, nothing chosen");
}

#[test]
fn none_attestation_on_request() {
    let rp = rp();
    let mut phone = phone();
    let (_, mc) = register(
        &mut phone,
        &rp,
        "dave",
        false,
        UserVerificationPolicy::Required,
        |r| r.attestation_formats_preference = Some(vec!["tpm".into(), "none".into()]),
    );
    assert_eq!(mc.attestation.fmt(), "none");
}

#[test]
fn get_info_tells_the_truth() {
    let mut phone = phone();
    let info = GetInfoResponse::decode_reply(&phone.handle(&[0x04])).unwrap();
    assert_eq!(info.versions, ["FIDO_2_0", "FIDO_2_1"]);
    assert_eq!(info.extensions, ["prf"]);
    assert_eq!(info.aaguid, AAGUID);
    assert_eq!(info.option("rk"), Some(true));
    assert_eq!(info.option("uv"), Some(true));
    assert_eq!(info.option("clientPin"), None);
    assert!(info.pin_uv_auth_protocols.is_empty());
    assert_eq!(info.transports, ["hybrid", "internal"]);
    assert_eq!(info.algorithms, [PubKeyCredParam::es256()]);
    // Canonical: re-encoding the decoded response gives the same bytes.
    assert_eq!(info.to_cbor(), phone.handle(&[0x04])[1..]);
}

#[test]
fn selection_asks_for_presence() {
    // CTAP 2.1 §6.9: authenticatorSelection is a touch. Yes answers OK, no is
    // OPERATION_DENIED; no RP, no account, nothing stored.
    let mut phone = phone();
    assert_eq!(phone.handle(&[0x0B]), [0x00]);
    let asked = &phone.user_mut().asked;
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].ceremony, Ceremony::Select);
    assert!(asked[0].rp_id.is_empty() && asked[0].user_name.is_none());
    phone.user_mut().answer = Answer::Decline;
    assert_eq!(phone.handle(&[0x0B]), [0x27]);
    phone.user_mut().answer = Answer::PresentOnly;
    assert_eq!(phone.handle(&[0x0B]), [0x00]);
    assert_eq!(stored_count(&phone), 0);
}

// ------------------------------------------------------------------------------------------
// PRF.

#[test]
fn prf_outputs_stable_and_separated() {
    let rp = rp();
    let mut phone = phone();
    // Register without UV so that the RP accepts assertions both with and without UV.
    phone.user_mut().answer = Answer::PresentOnly;
    let (mut c1, mc) = register(
        &mut phone,
        &rp,
        "erin",
        true,
        UserVerificationPolicy::Preferred,
        |r| {
            r.options.uv = None;
            r.extensions.prf = Some(prf_eval(b"at creation", None));
        },
    );
    let created = mc.unsigned_extension_outputs.prf.clone().unwrap();
    assert_eq!(created.enabled, Some(true));
    let at_creation = created.results.unwrap().first;
    let (mut c2, _) = register(
        &mut phone,
        &rp,
        "frank",
        false,
        UserVerificationPolicy::Preferred,
        |r| {
            r.options.uv = None;
            r.extensions.prf = Some(PrfInputs::default());
        },
    );

    phone.user_mut().answer = Answer::Verified;
    phone.user_mut().choose = None; // fail loudly if a choice were needed
    let pv = UserVerificationPolicy::Preferred;
    let a = prf_results(&authenticate(
        &mut phone,
        &rp,
        &mut c2,
        false,
        pv,
        Some(prf_eval(b"salt A", Some(b"salt B"))),
    ));
    let a_again = prf_results(&authenticate(
        &mut phone,
        &rp,
        &mut c2,
        false,
        pv,
        Some(prf_eval(b"salt A", None)),
    ));
    assert_eq!(a.first, a_again.first, "stable across assertions");
    assert!(a_again.second.is_none());
    let b = a.second.unwrap();
    assert_ne!(a.first, b, "differs per salt");

    // Another credential, same salt: different output.
    let mut c1_allow = c1.clone();
    let other = prf_results(&authenticate(
        &mut phone,
        &rp,
        &mut c1_allow,
        false,
        pv,
        Some(prf_eval(b"salt A", None)),
    ));
    assert_ne!(other.first, a.first, "differs per credential");
    c1.counter = c1_allow.counter;

    // evalByCredential wins over eval for the credential it names.
    let by_cred = PrfInputs {
        eval: Some(salts(b"salt A", None)),
        eval_by_credential: vec![(c2.cred_id.to_vec(), salts(b"salt B", None))],
    };
    let r = prf_results(&authenticate(
        &mut phone,
        &rp,
        &mut c2,
        false,
        pv,
        Some(by_cred),
    ));
    assert_eq!(r.first, b);

    // Without UV the other CredRandom is used: a different output for the same salt.
    phone.user_mut().answer = Answer::PresentOnly;
    let no_uv = {
        let builder = rp
            .new_challenge_authenticate_builder(vec![c2.clone()], Some(pv))
            .unwrap();
        let (rcr, state) = rp.generate_challenge_authenticate(builder).unwrap();
        let (cdj, mut req) = get_assertion_request(&rcr, ORIGIN, Some(prf_eval(b"salt A", None)));
        req.options.uv = None;
        let ga = GetAssertionResponse::decode_reply(&phone.handle(&Request::from(req).encode()))
            .unwrap();
        let res = rp
            .authenticate_credential(&assertion_response(cdj, &ga), &state)
            .unwrap();
        assert!(!res.user_verified());
        assert!(!ga.authenticator_data().unwrap().flags.uv());
        prf_results(&ga)
    };
    assert_ne!(no_uv.first, a.first, "differs with and without UV");

    // The creation-time evaluation (without UV) matches a later one without UV.
    let later = {
        let builder = rp
            .new_challenge_authenticate_builder(vec![], Some(pv))
            .unwrap();
        let (rcr, mut state) = rp.generate_challenge_authenticate(builder).unwrap();
        let (cdj, mut req) =
            get_assertion_request(&rcr, ORIGIN, Some(prf_eval(b"at creation", None)));
        req.options.uv = None;
        let ga = GetAssertionResponse::decode_reply(&phone.handle(&Request::from(req).encode()))
            .unwrap();
        state.set_allowed_credentials(vec![c1.clone()]);
        rp.authenticate_credential(&assertion_response(cdj, &ga), &state)
            .unwrap();
        prf_results(&ga)
    };
    assert_eq!(later.first, at_creation);
}

// ------------------------------------------------------------------------------------------
// Negative cases: right status, nothing written.

fn fresh_request(rp: &WebauthnCore, user: &str) -> MakeCredentialRequest {
    let builder = rp
        .new_challenge_register_builder(user.as_bytes(), user, user)
        .unwrap();
    let (ccr, _) = rp.generate_challenge_register(builder).unwrap();
    make_credential_request(&ccr, ORIGIN).request
}

#[test]
fn excluded_credential() {
    let rp = rp();
    let mut phone = phone();
    let (cred, _) = register(
        &mut phone,
        &rp,
        "gina",
        true,
        UserVerificationPolicy::Required,
        |_| {},
    );
    let mut req = fresh_request(&rp, "gina");
    req.exclude_list = vec![
        CredentialDescriptor::public_key(vec![1; 16]),
        CredentialDescriptor::public_key(cred.cred_id.to_vec()),
    ];
    let asked = phone.user_mut().asked.len();
    assert_eq!(
        status(&phone.handle(&Request::from(req.clone()).encode())),
        StatusCode::CTAP2_ERR_CREDENTIAL_EXCLUDED
    );
    assert_eq!(
        phone.user_mut().asked.len(),
        asked + 1,
        "presence collected first"
    );
    assert_eq!(stored_count(&phone), 1);
    // The same credential ID under another RP ID does not exclude.
    req.rp.id = "other.example".into();
    assert_eq!(
        status(&phone.handle(&Request::from(req).encode())),
        StatusCode::CTAP2_OK
    );
}

/// A requester that gives up after handing the request to a worker thread but before the
/// thread calls `handle` (the laptop hung up at once): the request is still cancelled, the
/// user is not even asked, and the next request (its own token) is not affected.
#[test]
fn cancel_before_handle_starts_is_not_lost() {
    let rp = rp();
    let mut phone = phone();
    let token = Cancel::new();
    token.cancel();
    let req = fresh_request(&rp, "june");
    assert_eq!(
        status(&phone.handle_cancellable(&Request::from(req).encode(), &token)),
        StatusCode::CTAP2_ERR_KEEPALIVE_CANCEL
    );
    assert!(phone.user_mut().asked.is_empty(), "nobody was asked");
    assert_eq!(stored_count(&phone), 0, "nothing was written");
    let req = fresh_request(&rp, "june");
    assert_eq!(
        status(&phone.handle_cancellable(&Request::from(req).encode(), &Cancel::new())),
        StatusCode::CTAP2_OK
    );
    assert_eq!(stored_count(&phone), 1);
}

#[test]
fn approval_after_cancel_writes_nothing() {
    let rp = rp();
    let mut phone = phone();
    let (mut cred, _) = register(
        &mut phone,
        &rp,
        "hana",
        true,
        UserVerificationPolicy::Required,
        |_| {},
    );
    let counter = phone.store().list().unwrap()[0].sign_count;
    // The session gives up while the user decides; the user then approves anyway.
    let token = Cancel::new();
    phone.user_mut().cancel_while_deciding = Some(token.clone());
    let req = fresh_request(&rp, "ivan");
    assert_eq!(
        status(&phone.handle_cancellable(&Request::from(req).encode(), &token)),
        StatusCode::CTAP2_ERR_KEEPALIVE_CANCEL
    );
    assert_eq!(stored_count(&phone), 1, "no credential the RP never saw");
    let builder = rp
        .new_challenge_authenticate_builder(
            vec![cred.clone()],
            Some(UserVerificationPolicy::Required),
        )
        .unwrap();
    let (rcr, _) = rp.generate_challenge_authenticate(builder).unwrap();
    let (_, ga) = get_assertion_request(&rcr, ORIGIN, None);
    let token = Cancel::new();
    phone.user_mut().cancel_while_deciding = Some(token.clone());
    assert_eq!(
        status(&phone.handle_cancellable(&Request::from(ga).encode(), &token)),
        StatusCode::CTAP2_ERR_KEEPALIVE_CANCEL
    );
    assert_eq!(
        phone.store().list().unwrap()[0].sign_count,
        counter,
        "counter untouched"
    );
    // A cancelled token ends only its own request: the next one succeeds.
    phone.user_mut().cancel_while_deciding = None;
    authenticate(
        &mut phone,
        &rp,
        &mut cred,
        true,
        UserVerificationPolicy::Required,
        None,
    );
}

#[test]
fn wrong_rp_and_no_matching_credential() {
    let rp = rp();
    let mut phone = phone();
    let (cred, _) = register(
        &mut phone,
        &rp,
        "hank",
        true,
        UserVerificationPolicy::Required,
        |_| {},
    );
    let before = phone.store().list().unwrap()[0].sign_count;
    let base = {
        let mut v = GetAssertionRequest::default();
        v.rp_id = "evil.example".into();
        v.client_data_hash = [7; 32];
        v.allow_list = vec![CredentialDescriptor::public_key(cred.cred_id.to_vec())];
        v.options = Options::default();
        v
    };
    // Wrong RP ID, with and without an allowList.
    for allow in [true, false] {
        let mut r = base.clone();
        if !allow {
            r.allow_list.clear();
        }
        assert_eq!(
            status(&phone.handle(&Request::from(r).encode())),
            StatusCode::CTAP2_ERR_NO_CREDENTIALS
        );
    }
    // Right RP ID, unknown credential.
    let mut r = base.clone();
    r.rp_id = RP_ID.into();
    r.allow_list = vec![CredentialDescriptor::public_key(vec![9; 32])];
    assert_eq!(
        status(&phone.handle(&Request::from(r).encode())),
        StatusCode::CTAP2_ERR_NO_CREDENTIALS
    );
    assert!(
        phone.user_mut().asked.len() == 1,
        "the user is not bothered"
    );
    assert_eq!(phone.store().list().unwrap()[0].sign_count, before);
    assert_eq!(phone.store().list().unwrap()[0].last_used, None);
}

#[test]
fn user_declines_or_is_locked_or_unverified() {
    let rp = rp();
    let mut phone = phone();
    for (answer, expect) in [
        (Answer::Decline, StatusCode::CTAP2_ERR_OPERATION_DENIED),
        (Answer::Lock, StatusCode::CTAP2_ERR_UV_BLOCKED),
        // uv was requested; an approval without verification is not enough.
        (Answer::PresentOnly, StatusCode::CTAP2_ERR_OPERATION_DENIED),
    ] {
        phone.user_mut().answer = answer;
        let req = fresh_request(&rp, "ivan");
        assert_eq!(status(&phone.handle(&Request::from(req).encode())), expect);
        assert_eq!(stored_count(&phone), 0, "nothing stored on {answer:?}");
    }
    phone.user_mut().answer = Answer::Verified;
    let (cred, _) = register(
        &mut phone,
        &rp,
        "ivan",
        false,
        UserVerificationPolicy::Required,
        |_| {},
    );
    let req = {
        let mut v = GetAssertionRequest::default();
        v.rp_id = RP_ID.into();
        v.client_data_hash = [1; 32];
        v.allow_list = vec![CredentialDescriptor::public_key(cred.cred_id.to_vec())];
        v.options = Options {
            uv: Some(true),
            ..Default::default()
        };
        v
    };
    for (answer, expect) in [
        (Answer::Decline, StatusCode::CTAP2_ERR_OPERATION_DENIED),
        (Answer::Lock, StatusCode::CTAP2_ERR_UV_BLOCKED),
        (Answer::PresentOnly, StatusCode::CTAP2_ERR_OPERATION_DENIED),
    ] {
        phone.user_mut().answer = answer;
        assert_eq!(
            status(&phone.handle(&Request::from(req.clone()).encode())),
            expect
        );
        let c = &phone.store().list().unwrap()[0];
        assert_eq!(
            (c.sign_count, c.last_used),
            (0, None),
            "nothing recorded on {answer:?}"
        );
    }
    assert_eq!(
        phone.user_mut().asked.last().map(|a| a.ceremony),
        Some(Ceremony::SignIn)
    );
}

#[test]
fn malformed_requests_get_the_right_status() {
    let rp = rp();
    let mut phone = phone();
    let good = fresh_request(&rp, "judy");
    let good_bytes = Request::from(good.clone()).encode();
    let with = |f: &dyn Fn(&mut MakeCredentialRequest)| {
        let mut r = good.clone();
        f(&mut r);
        Request::from(r).encode()
    };
    // Replace one member of the parameters map with raw CBOR.
    let patch = |key: i64, value: Option<Value>| {
        let mut v = hybridge_cbor::decode(&good_bytes[1..])
            .unwrap()
            .into_map()
            .unwrap();
        v.retain(|(k, _)| k.as_int() != Some(i128::from(key)));
        if let Some(value) = value {
            v.push((Value::from(key), value));
        }
        let mut out = vec![0x01];
        out.extend(hybridge_cbor::encode(&Value::Map(v)));
        out
    };
    let mut trailing = good_bytes.clone();
    trailing.push(0x00);
    let mut deep = vec![0x01];
    deep.extend(std::iter::repeat_n(0x81, 40));
    deep.push(0x00);
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("empty", vec![], StatusCode::CTAP1_ERR_INVALID_LENGTH),
        (
            "unknown command",
            vec![0x42],
            StatusCode::CTAP1_ERR_INVALID_COMMAND,
        ),
        (
            "getNextAssertion",
            vec![0x08],
            StatusCode::CTAP1_ERR_INVALID_COMMAND,
        ),
        (
            "no parameters",
            vec![0x01],
            StatusCode::CTAP2_ERR_MISSING_PARAMETER,
        ),
        (
            "garbage",
            vec![0x01, 0xff, 0x00],
            StatusCode::CTAP2_ERR_INVALID_CBOR,
        ),
        (
            "truncated",
            good_bytes[..good_bytes.len() - 4].to_vec(),
            StatusCode::CTAP2_ERR_INVALID_CBOR,
        ),
        (
            "trailing bytes",
            trailing,
            StatusCode::CTAP2_ERR_INVALID_CBOR,
        ),
        ("too deep", deep, StatusCode::CTAP2_ERR_INVALID_CBOR),
        (
            "not a map",
            vec![0x01, 0x80],
            StatusCode::CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
        ),
        (
            "missing clientDataHash",
            patch(1, None),
            StatusCode::CTAP2_ERR_MISSING_PARAMETER,
        ),
        (
            "missing rp",
            patch(2, None),
            StatusCode::CTAP2_ERR_MISSING_PARAMETER,
        ),
        (
            "missing user",
            patch(3, None),
            StatusCode::CTAP2_ERR_MISSING_PARAMETER,
        ),
        (
            "missing params",
            patch(4, None),
            StatusCode::CTAP2_ERR_MISSING_PARAMETER,
        ),
        (
            "rp is text",
            patch(2, Some(Value::from("example.com"))),
            StatusCode::CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
        ),
        (
            "short hash",
            patch(1, Some(Value::from(vec![0u8; 31]))),
            StatusCode::CTAP1_ERR_INVALID_LENGTH,
        ),
        (
            "options not bool",
            patch(7, Some(Value::map([(Value::from("rk"), Value::from(1))]))),
            StatusCode::CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
        ),
        (
            "no ES256",
            with(&|r| {
                r.pub_key_cred_params = vec![PubKeyCredParam {
                    type_: "public-key".into(),
                    alg: -8,
                }]
            }),
            StatusCode::CTAP2_ERR_UNSUPPORTED_ALGORITHM,
        ),
        (
            "up=false",
            with(&|r| r.options.up = Some(false)),
            StatusCode::CTAP2_ERR_INVALID_OPTION,
        ),
        (
            "long user id",
            with(&|r| r.user.id = vec![1; 65]),
            StatusCode::CTAP1_ERR_INVALID_LENGTH,
        ),
        (
            "pinUvAuthParam alone",
            with(&|r| r.pin_uv_auth_param = Some(vec![0; 16])),
            StatusCode::CTAP2_ERR_MISSING_PARAMETER,
        ),
        (
            "pinUvAuthProtocol 2",
            with(&|r| {
                r.pin_uv_auth_param = Some(vec![0; 16]);
                r.pin_uv_auth_protocol = Some(2)
            }),
            StatusCode::CTAP1_ERR_INVALID_PARAMETER,
        ),
        (
            "prf salt of 31 bytes",
            patch(
                6,
                Some(Value::map([(
                    Value::from("prf"),
                    Value::map([(
                        Value::from("eval"),
                        Value::map([(Value::from("first"), Value::from(vec![0u8; 31]))]),
                    )]),
                )])),
            ),
            StatusCode::CTAP1_ERR_INVALID_LENGTH,
        ),
        (
            "getInfo with payload",
            vec![0x04, 0xa0],
            StatusCode::CTAP1_ERR_INVALID_LENGTH,
        ),
        (
            "rk in getAssertion",
            Request::from({
                let mut v = GetAssertionRequest::default();
                v.rp_id = RP_ID.into();
                v.client_data_hash = [0; 32];
                v.options = Options {
                    rk: Some(true),
                    ..Default::default()
                };
                v
            })
            .encode(),
            StatusCode::CTAP2_ERR_UNSUPPORTED_OPTION,
        ),
        (
            "oversized",
            vec![0x01; 70_000],
            StatusCode::CTAP2_ERR_REQUEST_TOO_LARGE,
        ),
    ];
    for (name, bytes, expect) in cases {
        let got = phone.handle(&bytes);
        assert_eq!(got, [expect.0], "{name}: {:?}", phone.last_error());
    }
    assert_eq!(stored_count(&phone), 0);
    assert!(
        phone.user_mut().asked.is_empty(),
        "malformed requests never reach the user"
    );

    // Unknown keys are ignored, everywhere.
    let mut v = hybridge_cbor::decode(&good_bytes[1..])
        .unwrap()
        .into_map()
        .unwrap();
    v.push((Value::from(99), Value::from("future")));
    v.push((
        Value::from(6),
        Value::map([(Value::from("futureExt"), Value::Float(1.5))]),
    ));
    let mut bytes = vec![0x01];
    bytes.extend(hybridge_cbor::encode(&Value::Map(v)));
    assert_eq!(status(&phone.handle(&bytes)), StatusCode::CTAP2_OK);
    assert_eq!(stored_count(&phone), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The authenticator answers any bytes with a status and never panics or stores.
    #[test]
    fn handle_never_panics(cmd in prop::sample::select(vec![0x01u8, 0x02, 0x04, 0x0B, 0x42]),
                           body in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut phone = phone();
        let mut bytes = vec![cmd];
        bytes.extend(body);
        let out = phone.handle(&bytes);
        prop_assert!(!out.is_empty());
        if out[0] == 0 {
            // Only a valid getInfo / selection can succeed from random bytes without a user.
            prop_assert!(cmd == 0x04 || cmd == 0x0B || phone.user_mut().asked.len() == 1);
        }
    }
}

#[test]
fn up_false_assertion_and_always_verify() {
    use hybridge_authenticator::authenticator::{AttestationFormat, Config};
    let rp = rp();
    let mut phone = phone().with_config(Config {
        attestation: AttestationFormat::None,
        always_verify: true,
    });
    let (cred, mc) = register(
        &mut phone,
        &rp,
        "kim",
        false,
        UserVerificationPolicy::Required,
        |r| {
            r.options.uv = None;
            r.extensions.hmac_secret = None;
        },
    );
    assert_eq!(mc.attestation.fmt(), "none");
    let ad = mc.authenticator_data().unwrap();
    assert!(
        ad.flags.uv(),
        "always_verify asks for UV even without the uv option"
    );
    assert!(ad.extensions.is_none() && !ad.flags.has(Flags::ED));
    assert!(phone.user_mut().asked.last().unwrap().user_verification);

    // up=false: hybrid still shows the prompt, but the UP flag says presence was not asked.
    let req = {
        let mut v = GetAssertionRequest::default();
        v.rp_id = RP_ID.into();
        v.client_data_hash = [3; 32];
        v.allow_list = vec![CredentialDescriptor::public_key(cred.cred_id.to_vec())];
        v.options = Options {
            up: Some(false),
            ..Default::default()
        };
        v
    };
    let ga =
        GetAssertionResponse::decode_reply(&phone.handle(&Request::from(req).encode())).unwrap();
    let flags = ga.authenticator_data().unwrap().flags;
    assert!(!flags.up() && flags.uv());
    assert_eq!(ga.credential.unwrap().id, cred.cred_id.to_vec());
}

/// A store whose writes fail: the authenticator must not report success for a ceremony whose
/// result was not persisted.
struct ReadOnlyStore(MemoryStore);

impl CredentialStore for ReadOnlyStore {
    fn credentials_for_rp(
        &self,
        rp_id: &str,
    ) -> Result<Vec<hybridge_authenticator::store::StoredCredential>, StoreError> {
        self.0.credentials_for_rp(rp_id)
    }
    fn credential(
        &self,
        id: &[u8],
    ) -> Result<Option<hybridge_authenticator::store::StoredCredential>, StoreError> {
        self.0.credential(id)
    }
    fn insert(
        &mut self,
        _c: hybridge_authenticator::store::StoredCredential,
    ) -> Result<(), StoreError> {
        Err(read_only())
    }
    fn record_use(&mut self, _id: &[u8], _count: u32, _now: u64) -> Result<(), StoreError> {
        Err(read_only())
    }
    fn list(&self) -> Result<Vec<hybridge_authenticator::store::StoredCredential>, StoreError> {
        self.0.list()
    }
    fn rename(&mut self, _id: &[u8], _name: &str) -> Result<(), StoreError> {
        Err(read_only())
    }
    fn delete(&mut self, _id: &[u8]) -> Result<(), StoreError> {
        Err(read_only())
    }
}

fn read_only() -> StoreError {
    StoreError::Io {
        path: "test".into(),
        source: std::io::Error::other("read-only"),
    }
}

#[test]
fn store_write_failure_is_not_success() {
    let rp = rp();
    let mut phone = phone();
    let (cred, _) = register(
        &mut phone,
        &rp,
        "lee",
        true,
        UserVerificationPolicy::Required,
        |_| {},
    );
    let (memory, user) = phone.into_parts();
    let mut ro = Authenticator::new(ReadOnlyStore(memory), user, || NOW, rand_core::OsRng);
    let req = fresh_request(&rp, "mia");
    assert_eq!(
        status(&ro.handle(&Request::from(req).encode())),
        StatusCode::CTAP1_ERR_OTHER
    );
    let ga = {
        let mut v = GetAssertionRequest::default();
        v.rp_id = RP_ID.into();
        v.client_data_hash = [5; 32];
        v.allow_list = vec![CredentialDescriptor::public_key(cred.cred_id.to_vec())];
        v.options = Options::default();
        v
    };
    assert_eq!(
        status(&ro.handle(&Request::from(ga).encode())),
        StatusCode::CTAP1_ERR_OTHER
    );
    assert_eq!(ro.store().list().unwrap().len(), 1);
}

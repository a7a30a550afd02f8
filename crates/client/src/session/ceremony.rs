//! The WebAuthn client on top of the session: RP options → CTAP request → phone → WebAuthn
//! response, as a browser does for a hybrid authenticator.

use hybridge_ble::Scanner;
use hybridge_ctap::extensions::cred_props_rk;
use hybridge_ctap::{
    AuthenticatorData, CredentialDescriptor, GetAssertionRequest, GetAssertionResponse,
    GetInfoResponse, MakeCredentialRequest, MakeCredentialResponse, Options, PrfInputs,
    PubKeyCredParam, Request, RpEntity, UserEntity, rp_id_hash,
};
use hybridge_proto::qr::RequestType;

use std::fmt;

use super::{
    BadResponse, Error, Events, Laptop, LaptopConfig, PhoneConnection, SessionEnd, from_status,
};
use crate::webauthn::{
    self, Assertion, Attestation, ClientDataType, CreationOptions, ExtensionResults, Origin,
    PrfInput, Registration, RequestOptions, ResidentKey, UserVerification,
};
use hybridge_proto::session::LinkedPhone;

/// Prepares a registration: `options_json` is the RP's `PublicKeyCredentialCreationOptionsJSON`
/// (bare or wrapped in `{"publicKey": …}`), `origin` the page's origin. The options are
/// parsed and their RP ID checked against the origin here, before any QR code exists, so
/// nothing reaches a phone on a mismatch.
pub fn register(
    options_json: &str,
    origin: &str,
    config: &LaptopConfig,
) -> Result<Prepared<CreationOptions>, Error> {
    let origin = Origin::parse(origin)?;
    Ok(Prepared::new(
        CreationOptions::from_json(options_json, &origin)?,
        config,
    ))
}

/// Prepares a sign-in: `options_json` is the RP's `PublicKeyCredentialRequestOptionsJSON`.
/// The RP ID is checked against the origin first, as for [`register`].
pub fn sign_in(
    options_json: &str,
    origin: &str,
    config: &LaptopConfig,
) -> Result<Prepared<RequestOptions>, Error> {
    let origin = Origin::parse(origin)?;
    Ok(Prepared::new(
        RequestOptions::from_json(options_json, &origin)?,
        config,
    ))
}

/// A WebAuthn ceremony ready to run: the relying party's options, parsed for their origin, and
/// a fresh QR code. Show [`qr_url`](Self::qr_url) to the user, then [`run`](Self::run): the
/// QR code is a value the caller takes, not an event that could be missed.
pub struct Prepared<C: Ceremony> {
    options: C,
    laptop: Laptop,
}

impl<C: Ceremony> fmt::Debug for Prepared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The QR code carries a secret: only the kind of ceremony is shown.
        f.debug_struct("Prepared")
            .field("request_type", &C::REQUEST_TYPE)
            .finish_non_exhaustive()
    }
}

impl<C: Ceremony> Prepared<C> {
    /// A ceremony for options parsed beforehand (their `from_json` checked them against their
    /// origin). The relying party's timeout may shorten `config`'s limit for the person
    /// holding the phone, never lengthen it (a caller's `--timeout` stands).
    pub fn new(options: C, config: &LaptopConfig) -> Self {
        let config = config_for(&options, config);
        Self {
            laptop: Laptop::new(C::REQUEST_TYPE, config),
            options,
        }
    }

    /// The same ceremony with a phone linked earlier instead of a QR code
    /// ([`Laptop::linked`]).
    pub fn linked(options: C, config: &LaptopConfig, phone: LinkedPhone) -> Self {
        let config = config_for(&options, config);
        Self {
            laptop: Laptop::linked(C::REQUEST_TYPE, phone, config),
            options,
        }
    }

    /// The `FIDO:/` URL to show as a QR code (it carries a secret: show it, do not log it);
    /// `None` for a [linked](Self::linked) ceremony.
    pub fn qr_url(&self) -> Option<String> {
        self.laptop.qr_url()
    }

    /// The options this ceremony runs.
    pub fn options(&self) -> &C {
        &self.options
    }

    /// Scans for the phone that read the QR code, builds the CTAP request from the options
    /// and the phone's getInfo, and returns the phone's answer, checked, as the RP's response.
    /// The tunnel is closed before it returns (no wait for late linking data: nobody would
    /// take it).
    pub async fn run(self, scanner: &dyn Scanner, events: &Events) -> Result<C::Response, Error> {
        let (response, closing) = self.run_linking(scanner, events).await?;
        closing.phone.close_now(events).await;
        Ok(response)
    }

    /// [`run`](Self::run), but the tunnel is left open: the response is the caller's at once,
    /// and [`Closing::finish`] then gives what the session left behind (the linking data the
    /// phone sent, verified with this QR code's key), waiting for it if the phone has not sent
    /// it yet. The response is never held up by that wait.
    pub async fn run_linking(
        self,
        scanner: &dyn Scanner,
        events: &Events,
    ) -> Result<(C::Response, Closing), Error> {
        let options = self.options;
        let client_data_json = webauthn::client_data_json(
            C::CLIENT_DATA_TYPE,
            options.challenge(),
            Ceremony::origin(&options),
        );
        let phone = self.laptop.connect(scanner, events).await?;
        let request = match options.ctap_request(&client_data_json, phone.get_info_response()) {
            Ok(r) => r,
            Err(e) => {
                phone.close_now(&Events::none()).await;
                return Err(e);
            }
        };
        let (reply, phone) = transact(phone, &request, events).await?;
        let checked = check_status(&reply)
            .and_then(|()| options.response(client_data_json, &request, &reply));
        match checked {
            Ok(response) => Ok((response, Closing { phone })),
            Err(e) => {
                // A failed ceremony ends at once: no link is taken from it.
                phone.close_now(events).await;
                Err(e)
            }
        }
    }
}

/// A ceremony whose response was returned, with its tunnel still open: [`finish`](Self::finish) it.
#[derive(Debug)]
pub struct Closing {
    phone: PhoneConnection,
}

impl Closing {
    /// Sends the shutdown and closes the tunnel, after waiting (at most
    /// [`Timeouts::late_linking`](super::Timeouts), with [`Event::AwaitingLinking`](super::Event)) for
    /// linking data a phone sends late, when the QR code offered linking and none came yet.
    /// What the session left behind.
    pub async fn finish(self, events: &Events) -> SessionEnd {
        self.phone.close(events).await
    }

    /// [`finish`](Self::finish) without waiting for late linking data.
    pub async fn finish_now(self, events: &Events) -> SessionEnd {
        self.phone.close_now(events).await
    }
}

/// `config` for these options: the relying party's timeout may shorten the limit for the
/// person holding the phone, never lengthen it (a caller's `--timeout` stands).
fn config_for<C: Ceremony>(options: &C, config: &LaptopConfig) -> LaptopConfig {
    let mut config = config.clone();
    if let Some(ms) = options.timeout_ms() {
        config.timeouts.user = config.timeouts.user.min(user_limit(ms));
    }
    config
}

/// The relying party's `timeout` as the limit for the person holding the phone, corrected
/// into a range a person can work with, as WebAuthn lets a client do (§5.1.3 step 3 of
/// `create`, §5.1.4 of `get`): at least 30 s, at most 10 minutes.
pub(crate) fn user_limit(timeout_ms: u64) -> std::time::Duration {
    const MIN_MS: u64 = 30_000;
    const MAX_MS: u64 = 600_000;
    std::time::Duration::from_millis(timeout_ms.clamp(MIN_MS, MAX_MS))
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::webauthn::CreationOptions {}
    impl Sealed for crate::webauthn::RequestOptions {}
}

/// A WebAuthn ceremony, as the relying party's checked options: [`CreationOptions`] registers
/// a passkey, [`RequestOptions`] signs in. [`Prepared::run`] is the one flow both take; this
/// trait holds only what differs between them. It is sealed: those two are the only
/// ceremonies.
pub trait Ceremony: sealed::Sealed {
    /// What the relying party gets back: [`Registration`] or [`Assertion`].
    type Response;
    /// QR key 5: `mc` to register, `ga` to sign in.
    const REQUEST_TYPE: RequestType;
    /// `webauthn.create` or `webauthn.get`, for clientDataJSON.
    const CLIENT_DATA_TYPE: ClientDataType;

    /// The relying party's challenge.
    fn challenge(&self) -> &[u8];

    /// The page's origin the options were checked against.
    fn origin(&self) -> &Origin;

    /// The relying party ID the credential is scoped to.
    fn rp_id(&self) -> &str;

    /// The relying party's `timeout`, in milliseconds, if it gave one.
    fn timeout_ms(&self) -> Option<u64>;

    /// The CTAP request for a phone with this getInfo, or why the phone cannot do what the
    /// options require (nothing has been sent yet).
    fn ctap_request(
        &self,
        client_data_json: &[u8],
        info: &GetInfoResponse,
    ) -> Result<Request, Error>;

    /// The phone's successful answer (`0x00 ‖ CBOR`) to `request`, checked, as the response.
    fn response(
        &self,
        client_data_json: Vec<u8>,
        request: &Request,
        reply: &[u8],
    ) -> Result<Self::Response, Error>;
}

impl Ceremony for CreationOptions {
    type Response = Registration;
    const REQUEST_TYPE: RequestType = RequestType::MakeCredential;
    const CLIENT_DATA_TYPE: ClientDataType = ClientDataType::Create;

    fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    fn origin(&self) -> &Origin {
        &self.origin
    }

    fn rp_id(&self) -> &str {
        &self.rp_id
    }

    fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
    }

    fn ctap_request(
        &self,
        client_data_json: &[u8],
        info: &GetInfoResponse,
    ) -> Result<Request, Error> {
        make_credential_request(self, client_data_json, info)
            .map(|r| Request::MakeCredential(Box::new(r)))
    }

    fn response(
        &self,
        client_data_json: Vec<u8>,
        request: &Request,
        reply: &[u8],
    ) -> Result<Registration, Error> {
        // What was asked of the phone, for credProps. (`request` is always the
        // makeCredential that `ctap_request` built.)
        let rk = match request {
            Request::MakeCredential(r) => r.options.rk,
            _ => None,
        };
        let response = MakeCredentialResponse::decode_reply(reply)
            .map_err(|e| Error::BadResponse(BadResponse::Decode(e)))?;
        registration(self, client_data_json, &response, rk)
    }
}

impl Ceremony for RequestOptions {
    type Response = Assertion;
    const REQUEST_TYPE: RequestType = RequestType::GetAssertion;
    const CLIENT_DATA_TYPE: ClientDataType = ClientDataType::Get;

    fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    fn origin(&self) -> &Origin {
        &self.origin
    }

    fn rp_id(&self) -> &str {
        &self.rp_id
    }

    fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
    }

    fn ctap_request(
        &self,
        client_data_json: &[u8],
        info: &GetInfoResponse,
    ) -> Result<Request, Error> {
        let r = get_assertion_request(self, client_data_json, info);
        Ok(Request::GetAssertion(Box::new(r)))
    }

    fn response(
        &self,
        client_data_json: Vec<u8>,
        _request: &Request,
        reply: &[u8],
    ) -> Result<Assertion, Error> {
        let response = GetAssertionResponse::decode_reply(reply)
            .map_err(|e| Error::BadResponse(BadResponse::Decode(e)))?;
        assertion(self, client_data_json, &response)
    }
}

/// A non-zero status byte becomes the matching WebAuthn error.
fn check_status(response: &[u8]) -> Result<(), Error> {
    match response.first() {
        None => Err(Error::BadResponse(BadResponse::Empty)),
        Some(0) => Ok(()),
        Some(&status) => Err(from_status(hybridge_ctap::StatusCode(status))),
    }
}

/// One request, then the shutdown message (a failed request already closed the tunnel).
async fn transact(
    mut phone: PhoneConnection,
    request: &Request,
    events: &Events,
) -> Result<(Vec<u8>, PhoneConnection), Error> {
    let reply = phone.transact(&request.encode(), events).await?;
    Ok((reply, phone))
}

fn uv_option(uv: UserVerification, info: &GetInfoResponse) -> Option<bool> {
    match uv {
        UserVerification::Required => Some(true),
        // Phones verify the user themselves (getInfo `uv: true`); ask when they can.
        UserVerification::Preferred => info.option("uv").filter(|&b| b),
        UserVerification::Discouraged => None,
    }
}

fn prf_inputs(p: &PrfInput) -> PrfInputs {
    let salts = |v: &webauthn::PrfValues| {
        hybridge_ctap::PrfValues::from_inputs(&v.first, v.second.as_deref())
    };
    PrfInputs {
        eval: p.eval.as_ref().map(salts),
        eval_by_credential: p
            .eval_by_credential
            .iter()
            .map(|(id, v)| (id.clone(), salts(v)))
            .collect(),
    }
}

fn supports(info: &GetInfoResponse, extension: &str) -> bool {
    info.extensions.iter().any(|e| e == extension)
}

/// CreationOptions → authenticatorMakeCredential.
pub(crate) fn make_credential_request(
    o: &CreationOptions,
    client_data_json: &[u8],
    info: &GetInfoResponse,
) -> Result<MakeCredentialRequest, Error> {
    let phone_rk = info.option("rk") == Some(true);
    let rk = match o.resident_key {
        ResidentKey::Required if !phone_rk => {
            return Err(Error::NotSupported(
                "the site requires a discoverable credential and the phone cannot store one".into(),
            ));
        }
        ResidentKey::Required => true,
        ResidentKey::Preferred => phone_rk,
        ResidentKey::Discouraged => false,
    };
    if o.user_verification == UserVerification::Required && info.option("uv") == Some(false) {
        return Err(Error::NotSupported(
            "the site requires user verification and the phone cannot verify its user".into(),
        ));
    }
    let prf = o
        .extensions
        .prf
        .as_ref()
        .filter(|_| supports(info, hybridge_ctap::extensions::PRF))
        .map(|p| PrfInputs {
            // evalByCredential has no meaning at creation (CreationOptions refuses it).
            eval_by_credential: Vec::new(),
            ..prf_inputs(p)
        });
    let mut request = MakeCredentialRequest::default();
    request.client_data_hash = webauthn::client_data_hash(client_data_json);
    request.rp = RpEntity {
        id: o.rp_id.clone(),
        name: Some(o.rp_name.clone()),
    };
    request.user = UserEntity {
        id: o.user_id.clone(),
        name: Some(o.user_name.clone()),
        display_name: Some(o.user_display_name.clone()),
    };
    request.pub_key_cred_params = vec![PubKeyCredParam::es256()];
    request.exclude_list = o
        .exclude
        .iter()
        .map(|d| CredentialDescriptor::public_key(d.id.clone()))
        .collect();
    request.extensions.prf = prf;
    request.options = Options {
        rk: rk.then_some(true),
        up: None,
        uv: uv_option(o.user_verification, info),
    };
    // With conveyance "none" the phone need not sign an attestation at all (CTAP 2.2
    // attestationFormatsPreference); `registration` strips one if it sends it anyway.
    request.attestation_formats_preference =
        (o.attestation == Attestation::None).then(|| vec!["none".to_owned()]);
    Ok(request)
}

/// RequestOptions → authenticatorGetAssertion.
pub(crate) fn get_assertion_request(
    o: &RequestOptions,
    client_data_json: &[u8],
    info: &GetInfoResponse,
) -> GetAssertionRequest {
    let prf = o
        .extensions
        .prf
        .as_ref()
        .filter(|_| supports(info, hybridge_ctap::extensions::PRF))
        .map(prf_inputs)
        .map(|mut p| {
            // evalByCredential only for credentials in the allow list (WebAuthn L3 §10.1.4).
            p.eval_by_credential
                .retain(|(id, _)| o.allow.iter().any(|d| &d.id == id));
            p
        });
    let mut request = GetAssertionRequest::default();
    request.rp_id = o.rp_id.clone();
    request.client_data_hash = webauthn::client_data_hash(client_data_json);
    request.allow_list = o
        .allow
        .iter()
        .map(|d| CredentialDescriptor::public_key(d.id.clone()))
        .collect();
    request.extensions.prf = prf;
    request.options = Options {
        rk: None,
        up: None,
        uv: uv_option(o.user_verification, info),
    };
    request
}

fn check_auth_data(
    bytes: &[u8],
    rp_id: &str,
    uv_required: bool,
) -> Result<AuthenticatorData, Error> {
    let ad = AuthenticatorData::parse(bytes)
        .map_err(|e| Error::BadResponse(BadResponse::AuthenticatorData(e)))?;
    if ad.rp_id_hash != rp_id_hash(rp_id) {
        return Err(Error::BadResponse(BadResponse::OtherRpId));
    }
    if !ad.flags.up() {
        return Err(Error::BadResponse(BadResponse::NoUserPresence));
    }
    if uv_required && !ad.flags.uv() {
        return Err(Error::NotAllowed(
            "the site requires user verification and the phone did not verify the user".into(),
        ));
    }
    Ok(ad)
}

fn prf_results(p: Option<&hybridge_ctap::PrfOutputs>) -> Option<webauthn::PrfValues> {
    p.and_then(|p| p.results.as_ref())
        .map(|r| webauthn::PrfValues {
            first: r.first.to_vec(),
            second: r.second.map(|s| s.to_vec()),
        })
}

/// makeCredential response → Registration.
pub(crate) fn registration(
    o: &CreationOptions,
    client_data_json: Vec<u8>,
    r: &MakeCredentialResponse,
    rk: Option<bool>,
) -> Result<Registration, Error> {
    let ad = check_auth_data(
        &r.auth_data,
        &o.rp_id,
        o.user_verification == UserVerification::Required,
    )?;
    let acd = ad
        .attested_credential_data
        .as_ref()
        .ok_or_else(|| Error::BadResponse(BadResponse::NoCredentialData))?;
    let prf = r.unsigned_extension_outputs.prf.as_ref();
    let extensions = ExtensionResults {
        cred_props_rk: o.extensions.cred_props.then(|| cred_props_rk(rk)),
        prf_enabled: o
            .extensions
            .prf
            .as_ref()
            .map(|_| prf.and_then(|p| p.enabled).unwrap_or(false)),
        prf_results: o.extensions.prf.as_ref().and_then(|_| prf_results(prf)),
    };
    Ok(Registration {
        credential_id: acd.credential_id.clone(),
        client_data_json,
        attestation_object: if o.attestation == Attestation::None {
            // WebAuthn §5.4.7: for "none" the client replaces the statement with "none".
            hybridge_ctap::attestation_object(
                &r.auth_data,
                &hybridge_ctap::AttestationStatement::None,
            )
        } else {
            r.attestation_object()
        },
        authenticator_data: r.auth_data.clone(),
        public_key: acd.public_key.to_sec1(),
        extensions,
    })
}

/// getAssertion response → Assertion.
pub(crate) fn assertion(
    o: &RequestOptions,
    client_data_json: Vec<u8>,
    r: &GetAssertionResponse,
) -> Result<Assertion, Error> {
    check_auth_data(
        &r.auth_data,
        &o.rp_id,
        o.user_verification == UserVerification::Required,
    )?;
    let credential_id = match (&r.credential, o.allow.as_slice()) {
        (Some(c), _) => c.id.clone(),
        // CTAP lets the authenticator omit the credential when the allow list had one entry.
        (None, [only]) => only.id.clone(),
        (None, _) => {
            return Err(Error::BadResponse(BadResponse::NoCredential));
        }
    };
    if !o.allow.is_empty() && !o.allow.iter().any(|d| d.id == credential_id) {
        return Err(Error::BadResponse(BadResponse::CredentialNotAllowed));
    }
    let prf = r.unsigned_extension_outputs.prf.as_ref();
    Ok(Assertion {
        credential_id,
        client_data_json,
        authenticator_data: r.auth_data.clone(),
        signature: r.signature.clone(),
        user_handle: r.user_handle().map(<[u8]>::to_vec),
        extensions: ExtensionResults {
            cred_props_rk: None,
            prf_enabled: None,
            prf_results: o.extensions.prf.as_ref().and_then(|_| prf_results(prf)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webauthn::Origin;

    #[test]
    fn the_relying_partys_timeout_bounds_the_users_time_within_reason() {
        use std::time::Duration;
        assert_eq!(user_limit(90_000), Duration::from_secs(90));
        assert_eq!(user_limit(5), Duration::from_secs(30));
        assert_eq!(user_limit(u64::MAX), Duration::from_secs(600));
    }

    /// A phone that promises nothing.
    fn no_info() -> GetInfoResponse {
        GetInfoResponse::default()
    }

    fn info(rk: bool, uv: bool, prf: bool) -> GetInfoResponse {
        let mut info = no_info();
        info.extensions = if prf { vec!["prf".into()] } else { Vec::new() };
        info.options = vec![("rk".into(), rk), ("uv".into(), uv)];
        info
    }

    fn creation(selection: &str, extensions: &str) -> CreationOptions {
        let json = format!(
            r#"{{"rp":{{"id":"example.com","name":"Example"}},
                "user":{{"id":"YWxpY2U","name":"alice","displayName":"Alice"}},
                "challenge":"AAAAAAAAAAAAAAAAAAAAAA",
                "pubKeyCredParams":[{{"type":"public-key","alg":-7}}],
                "excludeCredentials":[{{"type":"public-key","id":"AQID"}}],
                "authenticatorSelection":{selection},
                "extensions":{extensions}}}"#
        );
        CreationOptions::from_json(&json, &Origin::parse("https://example.com").unwrap()).unwrap()
    }

    #[test]
    fn creation_maps_to_make_credential() {
        let o = creation(
            r#"{"residentKey":"preferred","userVerification":"preferred"}"#,
            r#"{"prf":{"eval":{"first":"AQ"}}}"#,
        );
        let r = make_credential_request(&o, b"{}", &info(true, true, true)).unwrap();
        assert_eq!(r.rp.id, "example.com");
        assert_eq!(r.user.id, b"alice");
        assert_eq!(r.options.rk, Some(true));
        assert_eq!(r.options.uv, Some(true));
        assert_eq!(r.exclude_list[0].id, [1, 2, 3]);
        assert_eq!(r.pub_key_cred_params, [PubKeyCredParam::es256()]);
        let prf = r.extensions.prf.unwrap();
        // The client hashes PRF inputs before they reach the phone.
        assert_eq!(
            prf.eval.unwrap().first,
            hybridge_ctap::extensions::prf_salt(&[1])
        );

        // A phone without rk/uv/prf gets neither option nor extension.
        let r = make_credential_request(&o, b"{}", &info(false, false, false)).unwrap();
        assert_eq!((r.options.rk, r.options.uv), (None, None));
        assert!(r.extensions.prf.is_none());

        // Required but impossible: refused before anything is sent.
        let o = creation(r#"{"residentKey":"required"}"#, "{}");
        assert!(matches!(
            make_credential_request(&o, b"{}", &info(false, true, false)),
            Err(Error::NotSupported(_))
        ));
        let o = creation(
            r#"{"residentKey":"discouraged","userVerification":"discouraged"}"#,
            "{}",
        );
        let r = make_credential_request(&o, b"{}", &info(true, true, false)).unwrap();
        assert_eq!((r.options.rk, r.options.uv), (None, None));
    }

    #[test]
    fn request_maps_to_get_assertion() {
        let json = r#"{"rpId":"example.com","challenge":"AAAAAAAAAAAAAAAAAAAAAA",
            "allowCredentials":[{"type":"public-key","id":"AQID"}],
            "userVerification":"required",
            "extensions":{"prf":{"evalByCredential":{"AQID":{"first":"AQ"},"BAUG":{"first":"Ag"}}}}}"#;
        let o = RequestOptions::from_json(json, &Origin::parse("https://example.com").unwrap())
            .unwrap();
        let r = get_assertion_request(&o, b"{}", &info(true, true, true));
        assert_eq!(r.rp_id, "example.com");
        assert_eq!(r.allow_list[0].id, [1, 2, 3]);
        assert_eq!(r.options.uv, Some(true));
        let prf = r.extensions.prf.unwrap();
        // Only credentials in the allow list keep their evalByCredential entry.
        assert_eq!(prf.eval_by_credential.len(), 1);
        assert_eq!(prf.eval_by_credential[0].0, [1, 2, 3]);
    }
}

//! The WebAuthn client: what a browser does around the authenticator.
//!
//! It reads the relying party's options as standard JSON (`PublicKeyCredentialCreationOptionsJSON`
//! and `PublicKeyCredentialRequestOptionsJSON`, as py_webauthn, SimpleWebAuthn and webauthn-rs
//! produce them), checks the RP ID against the origin as browsers do — the phishing resistance
//! of passkeys lives in this check, because the authenticator signs whatever RP ID it is
//! given — builds `clientDataJSON`, and turns the authenticator's answer into the standard
//! `RegistrationResponseJSON` / `AuthenticationResponseJSON`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

/// COSE algorithm identifier of ES256, the only algorithm hybridge's authenticator offers and
/// the one every shipping phone supports.
pub const COSE_ES256: i64 = -7;

/// Why a WebAuthn request or response was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebAuthnError {
    /// The options are not valid JSON of the expected shape.
    #[error("relying party options are malformed: {0}")]
    BadOptions(String),
    /// The origin is not a secure context (https, or http on localhost).
    #[error(
        "origin {0:?} is not a secure origin: use https:// (or http://localhost for development)"
    )]
    InsecureOrigin(String),
    /// The RP ID is not the origin's host or a registrable suffix of it (WebAuthn §5.1.3).
    #[error(
        "RP ID {rp_id:?} is not valid for origin {origin:?}: it must equal the origin's host or be a registrable domain suffix of it"
    )]
    RpIdMismatch {
        /// The RP ID asked for.
        rp_id: String,
        /// The origin it was checked against.
        origin: String,
    },
    /// None of the requested algorithms is ES256.
    #[error("the relying party accepts none of the algorithms the phone offers (ES256, COSE -7)")]
    NoSupportedAlgorithm,
    /// The options ask for something WebAuthn does not allow in this ceremony (a browser
    /// rejects them with `NotSupportedError`), e.g. `prf.evalByCredential` at registration.
    #[error("NotSupportedError: {0}")]
    NotSupported(&'static str),
}

fn bad(msg: impl Into<String>) -> WebAuthnError {
    WebAuthnError::BadOptions(msg.into())
}

/// Base64url without padding, as WebAuthn JSON uses.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, tolerating padding and the standard alphabet, since RP libraries differ.
pub fn decode_b64(what: &str, s: &str) -> Result<Vec<u8>, WebAuthnError> {
    let trimmed = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| bad(format!("{what} is not base64url")))
}

// ---------------------------------------------------------------------------------------------
// Origin and RP ID

/// A validated caller origin, e.g. `https://login.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The serialised origin (`scheme://host[:port]`), as it goes into clientDataJSON.
    pub(crate) serialized: String,
    /// The host, lower case, punycode for internationalised names.
    pub(crate) host: String,
    /// Whether the host is an IP address.
    pub(crate) is_ip: bool,
}

impl Origin {
    /// Parses and validates an origin. It must be a secure context: `https`, or `http` on
    /// `localhost` / loopback addresses, as browsers allow for development.
    pub fn parse(origin: &str) -> Result<Self, WebAuthnError> {
        let url = url::Url::parse(origin)
            .map_err(|_| WebAuthnError::InsecureOrigin(origin.to_owned()))?;
        let host = url
            .host()
            .ok_or_else(|| WebAuthnError::InsecureOrigin(origin.to_owned()))?;
        let (host_str, is_ip, loopback) = match host {
            url::Host::Domain(d) => {
                let d = d.to_ascii_lowercase();
                let lb = d == "localhost" || d.ends_with(".localhost");
                (d, false, lb)
            }
            url::Host::Ipv4(ip) => (ip.to_string(), true, ip.is_loopback()),
            url::Host::Ipv6(ip) => (format!("[{ip}]"), true, ip.is_loopback()),
        };
        let secure = match url.scheme() {
            "https" => true,
            "http" => loopback,
            _ => false,
        };
        if !secure || !url.username().is_empty() || url.password().is_some() {
            return Err(WebAuthnError::InsecureOrigin(origin.to_owned()));
        }
        Ok(Self {
            serialized: url.origin().ascii_serialization(),
            host: host_str,
            is_ip,
        })
    }

    /// The serialised origin (`scheme://host[:port]`), as it goes into clientDataJSON.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// The host, lower case, punycode for internationalised names (an IPv6 address in
    /// brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Resolves the RP ID a request may use from this origin (WebAuthn §5.1.3 step 8 and
    /// §5.1.4): the RP's own `rp.id` / `rpId` if given, else the origin's host. A given RP ID
    /// must equal the host or be a registrable domain suffix of it, and must not be a public
    /// suffix, so `evil.example.net` can never ask for `example.com`'s or `net`'s passkeys.
    pub fn resolve_rp_id(&self, rp_id: Option<&str>) -> Result<String, WebAuthnError> {
        let Some(rp_id) = rp_id else {
            return Ok(self.host.trim_matches(|c| c == '[' || c == ']').to_owned());
        };
        let mismatch = || WebAuthnError::RpIdMismatch {
            rp_id: rp_id.to_owned(),
            origin: self.serialized.clone(),
        };
        let wanted = url::Host::parse(rp_id).map_err(|_| mismatch())?;
        let wanted = match wanted {
            url::Host::Domain(d) => d.to_ascii_lowercase(),
            // An IP-address RP ID must match an IP-address origin exactly.
            url::Host::Ipv4(ip) => {
                return if self.host == ip.to_string() {
                    Ok(ip.to_string())
                } else {
                    Err(mismatch())
                };
            }
            url::Host::Ipv6(ip) => {
                return if self.host == format!("[{ip}]") {
                    Ok(ip.to_string())
                } else {
                    Err(mismatch())
                };
            }
        };
        if self.is_ip || wanted.is_empty() || wanted.ends_with('.') {
            return Err(mismatch());
        }
        if wanted == self.host {
            return Ok(wanted);
        }
        let is_suffix = self.host.ends_with(&format!(".{wanted}"));
        // `psl::suffix_str` gives the public suffix of a name; a name that *is* its own public
        // suffix (com, co.uk, github.io) is not registrable.
        let is_public_suffix = psl::suffix_str(&wanted) == Some(wanted.as_str());
        if is_suffix && !is_public_suffix {
            Ok(wanted)
        } else {
            Err(mismatch())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options

/// A credential named in excludeCredentials or allowCredentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialDescriptor {
    /// The credential ID.
    pub id: Vec<u8>,
}

/// `residentKey` of authenticatorSelection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidentKey {
    /// A server-side credential is preferred.
    Discouraged,
    /// A discoverable credential if the authenticator can make one.
    Preferred,
    /// A discoverable credential, or an error.
    Required,
}

/// `userVerification`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserVerification {
    /// Not wanted (the phone may still verify).
    Discouraged,
    /// Wanted where the authenticator can.
    Preferred,
    /// Required: the ceremony fails without it.
    Required,
}

/// PRF inputs, already decoded from base64url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrfValues {
    /// The first salt input.
    pub first: Vec<u8>,
    /// The optional second salt input.
    pub second: Option<Vec<u8>>,
}

/// `attestation` of the creation options: whether the RP wants to see who made the
/// authenticator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attestation {
    /// The default: the client strips identifying attestation (WebAuthn §5.4.7).
    None,
    /// `indirect`, `direct` or `enterprise`: the phone's attestation is passed through.
    Requested,
}

/// The extensions hybridge's client understands; others are ignored, as browsers ignore
/// extensions they do not support.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `credProps: true`.
    pub cred_props: bool,
    /// `prf: {}` at registration (possibly with `eval`), `prf: {eval, evalByCredential}` at sign-in.
    pub prf: Option<PrfInput>,
}

/// The `prf` extension input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrfInput {
    /// `eval`.
    pub eval: Option<PrfValues>,
    /// `evalByCredential`: credential ID → inputs.
    pub eval_by_credential: Vec<(Vec<u8>, PrfValues)>,
}

/// A `PublicKeyCredentialCreationOptionsJSON`, parsed once for the page's origin: what it says
/// cannot change afterwards (the fields are private), so the RP ID checked against the origin
/// is the one the phone gets.
///
/// ```compile_fail
/// # fn f(options: &mut hybridge_client::webauthn::CreationOptions) {
/// options.rp_id = "bank.example".into(); // private: checked once, never changed
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreationOptions {
    /// The page's origin the options were checked against.
    pub(crate) origin: Origin,
    /// `rp.id`, or the origin's host when absent; checked against the origin.
    pub(crate) rp_id: String,
    /// `rp.name`.
    pub(crate) rp_name: String,
    /// `user.id`, decoded.
    pub(crate) user_id: Vec<u8>,
    /// `user.name`.
    pub(crate) user_name: String,
    /// `user.displayName`.
    pub(crate) user_display_name: String,
    /// `challenge`, decoded.
    pub(crate) challenge: Vec<u8>,
    /// `excludeCredentials`.
    pub(crate) exclude: Vec<CredentialDescriptor>,
    /// `attestation`.
    pub(crate) attestation: Attestation,
    /// `authenticatorSelection.residentKey` (or `requireResidentKey`).
    pub(crate) resident_key: ResidentKey,
    /// `authenticatorSelection.userVerification`.
    pub(crate) user_verification: UserVerification,
    /// `timeout`, in milliseconds, if given: corrected into 30 s – 10 min, it shortens the
    /// laptop's limit for the person holding the phone.
    pub(crate) timeout_ms: Option<u64>,
    /// The extensions this client understands.
    pub(crate) extensions: Extensions,
}

/// A `PublicKeyCredentialRequestOptionsJSON`, parsed once for the page's origin (private
/// fields, as [`CreationOptions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOptions {
    /// The page's origin the options were checked against.
    pub(crate) origin: Origin,
    /// `rpId`, or the origin's host when absent; checked against the origin.
    pub(crate) rp_id: String,
    /// `challenge`, decoded.
    pub(crate) challenge: Vec<u8>,
    /// `allowCredentials` (empty: a discoverable credential is asked for).
    pub(crate) allow: Vec<CredentialDescriptor>,
    /// `userVerification`.
    pub(crate) user_verification: UserVerification,
    /// `timeout`, in milliseconds, if given: corrected into 30 s – 10 min, it shortens the
    /// laptop's limit for the person holding the phone.
    pub(crate) timeout_ms: Option<u64>,
    /// The extensions this client understands.
    pub(crate) extensions: Extensions,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRp {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    id: String,
    name: Option<String>,
    display_name: Option<String>,
}

#[derive(Deserialize)]
struct RawParam {
    #[serde(rename = "type")]
    ty: String,
    alg: i64,
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "type")]
    ty: Option<String>,
    id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSelection {
    resident_key: Option<String>,
    require_resident_key: Option<bool>,
    user_verification: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCreation {
    rp: RawRp,
    user: RawUser,
    challenge: String,
    pub_key_cred_params: Vec<RawParam>,
    timeout: Option<u64>,
    #[serde(default)]
    exclude_credentials: Vec<RawDescriptor>,
    #[serde(default)]
    authenticator_selection: RawSelection,
    attestation: Option<String>,
    #[serde(default)]
    extensions: Option<Json>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    challenge: String,
    timeout: Option<u64>,
    rp_id: Option<String>,
    #[serde(default)]
    allow_credentials: Vec<RawDescriptor>,
    user_verification: Option<String>,
    #[serde(default)]
    extensions: Option<Json>,
}

/// webauthn-rs wraps options as `{"publicKey": {...}}` (and sometimes `mediation`); the
/// standard JSON form is the bare dictionary. Accept both.
fn unwrap_public_key(json: &str) -> Result<Json, WebAuthnError> {
    let v: Json = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    Ok(match v {
        Json::Object(mut m) if m.contains_key("publicKey") => {
            m.remove("publicKey").unwrap_or(Json::Null)
        }
        other => other,
    })
}

fn descriptors(
    raw: Vec<RawDescriptor>,
    what: &str,
) -> Result<Vec<CredentialDescriptor>, WebAuthnError> {
    raw.into_iter()
        // Unknown credential types are skipped, as browsers do.
        .filter(|d| d.ty.as_deref().is_none_or(|t| t == "public-key"))
        .map(|d| {
            Ok(CredentialDescriptor {
                id: decode_b64(what, &d.id)?,
            })
        })
        .collect()
}

fn user_verification(s: Option<&str>) -> UserVerification {
    match s {
        Some("required") => UserVerification::Required,
        Some("discouraged") => UserVerification::Discouraged,
        // The default is "preferred"; unknown values are ignored as browsers do.
        _ => UserVerification::Preferred,
    }
}

fn prf_values(v: &Json, what: &str) -> Result<PrfValues, WebAuthnError> {
    let first = v
        .get("first")
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("{what}.first is missing")))?;
    let second = v.get("second").and_then(Json::as_str);
    Ok(PrfValues {
        first: decode_b64(&format!("{what}.first"), first)?,
        second: second
            .map(|s| decode_b64(&format!("{what}.second"), s))
            .transpose()?,
    })
}

fn extensions(raw: Option<Json>) -> Result<Extensions, WebAuthnError> {
    let Some(raw) = raw else {
        return Ok(Extensions::default());
    };
    let cred_props = raw
        .get("credProps")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let prf = match raw.get("prf") {
        None => None,
        Some(p) => {
            let eval = p
                .get("eval")
                .map(|e| prf_values(e, "prf.eval"))
                .transpose()?;
            let mut eval_by_credential = Vec::new();
            if let Some(m) = p.get("evalByCredential").and_then(Json::as_object) {
                for (id, vals) in m {
                    let id = decode_b64("prf.evalByCredential key", id)?;
                    eval_by_credential.push((id, prf_values(vals, "prf.evalByCredential")?));
                }
            }
            Some(PrfInput {
                eval,
                eval_by_credential,
            })
        }
    };
    Ok(Extensions { cred_props, prf })
}

impl CreationOptions {
    /// Parses `PublicKeyCredentialCreationOptionsJSON` for a page at `origin`.
    pub fn from_json(json: &str, origin: &Origin) -> Result<Self, WebAuthnError> {
        let raw: RawCreation =
            serde_json::from_value(unwrap_public_key(json)?).map_err(|e| bad(e.to_string()))?;
        let rp_id = origin.resolve_rp_id(raw.rp.id.as_deref())?;
        if !raw.pub_key_cred_params.is_empty()
            && !raw
                .pub_key_cred_params
                .iter()
                .any(|p| p.ty == "public-key" && p.alg == COSE_ES256)
        {
            return Err(WebAuthnError::NoSupportedAlgorithm);
        }
        let user_id = decode_b64("user.id", &raw.user.id)?;
        if user_id.is_empty() || user_id.len() > 64 {
            return Err(bad("user.id must be 1 to 64 bytes"));
        }
        let challenge = decode_b64("challenge", &raw.challenge)?;
        if challenge.len() < 16 {
            return Err(bad("challenge must be at least 16 bytes"));
        }
        let sel = raw.authenticator_selection;
        let resident_key = match sel.resident_key.as_deref() {
            Some("required") => ResidentKey::Required,
            Some("preferred") => ResidentKey::Preferred,
            Some("discouraged") => ResidentKey::Discouraged,
            // Level 1 RPs only set requireResidentKey.
            _ if sel.require_resident_key == Some(true) => ResidentKey::Required,
            _ => ResidentKey::Discouraged,
        };
        let user_name = raw.user.name.unwrap_or_default();
        Ok(Self {
            origin: origin.clone(),
            rp_name: raw.rp.name.unwrap_or_else(|| rp_id.clone()),
            rp_id,
            user_id,
            user_display_name: raw.user.display_name.unwrap_or_else(|| user_name.clone()),
            user_name,
            challenge,
            exclude: descriptors(raw.exclude_credentials, "excludeCredentials[].id")?,
            attestation: match raw.attestation.as_deref() {
                Some("indirect" | "direct" | "enterprise") => Attestation::Requested,
                // "none", absent, and values this client does not know (as browsers do).
                _ => Attestation::None,
            },
            resident_key,
            user_verification: user_verification(sel.user_verification.as_deref()),
            timeout_ms: raw.timeout,
            extensions: creation_extensions(raw.extensions)?,
        })
    }
}

/// The getters both kinds of options have.
macro_rules! common_getters {
    () => {
        /// The page's origin these options were checked against.
        pub fn origin(&self) -> &Origin {
            &self.origin
        }

        /// The relying party ID the credential is scoped to (checked against the origin).
        pub fn rp_id(&self) -> &str {
            &self.rp_id
        }

        /// The relying party's challenge, decoded.
        pub fn challenge(&self) -> &[u8] {
            &self.challenge
        }

        /// `userVerification`.
        pub fn user_verification(&self) -> UserVerification {
            self.user_verification
        }

        /// `timeout` in milliseconds, if the relying party gave one.
        pub fn timeout_ms(&self) -> Option<u64> {
            self.timeout_ms
        }

        /// The extensions this client understands.
        pub fn extensions(&self) -> &Extensions {
            &self.extensions
        }
    };
}

impl CreationOptions {
    common_getters!();

    /// `user.id`, decoded.
    pub fn user_id(&self) -> &[u8] {
        &self.user_id
    }

    /// `user.name`.
    pub fn user_name(&self) -> &str {
        &self.user_name
    }

    /// `authenticatorSelection.residentKey` (or `requireResidentKey`).
    pub fn resident_key(&self) -> ResidentKey {
        self.resident_key
    }
}

/// The extensions of create(): as for get(), but a non-empty `prf.evalByCredential` is
/// refused with NotSupportedError, before any QR code is shown (WebAuthn L3 §10.1.4: there
/// is no credential yet to select inputs by).
fn creation_extensions(raw: Option<Json>) -> Result<Extensions, WebAuthnError> {
    let e = extensions(raw)?;
    if e.prf
        .as_ref()
        .is_some_and(|p| !p.eval_by_credential.is_empty())
    {
        return Err(WebAuthnError::NotSupported(
            "prf.evalByCredential is only valid when signing in, not at registration",
        ));
    }
    Ok(e)
}

impl RequestOptions {
    /// Parses `PublicKeyCredentialRequestOptionsJSON` for a page at `origin`.
    pub fn from_json(json: &str, origin: &Origin) -> Result<Self, WebAuthnError> {
        let raw: RawRequest =
            serde_json::from_value(unwrap_public_key(json)?).map_err(|e| bad(e.to_string()))?;
        let rp_id = origin.resolve_rp_id(raw.rp_id.as_deref())?;
        let challenge = decode_b64("challenge", &raw.challenge)?;
        if challenge.len() < 16 {
            return Err(bad("challenge must be at least 16 bytes"));
        }
        Ok(Self {
            origin: origin.clone(),
            rp_id,
            challenge,
            allow: descriptors(raw.allow_credentials, "allowCredentials[].id")?,
            user_verification: user_verification(raw.user_verification.as_deref()),
            timeout_ms: raw.timeout,
            extensions: extensions(raw.extensions)?,
        })
    }
}

impl RequestOptions {
    common_getters!();

    /// `allowCredentials` (empty: a discoverable credential is asked for).
    pub fn allow(&self) -> &[CredentialDescriptor] {
        &self.allow
    }
}

// ---------------------------------------------------------------------------------------------
// clientDataJSON

/// `webauthn.create` or `webauthn.get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientDataType {
    /// `webauthn.create`: a registration.
    Create,
    /// `webauthn.get`: a sign-in.
    Get,
}

/// Builds `clientDataJSON` in the member order browsers use (type, challenge, origin,
/// crossOrigin), so RPs that compare prefixes accept it.
pub fn client_data_json(ty: ClientDataType, challenge: &[u8], origin: &Origin) -> Vec<u8> {
    let ty = match ty {
        ClientDataType::Create => "webauthn.create",
        ClientDataType::Get => "webauthn.get",
    };
    // serde_json escapes the origin string properly; the other members need no escaping.
    let origin_json = Json::String(origin.serialized.clone()).to_string();
    format!(
        r#"{{"type":"{ty}","challenge":"{}","origin":{origin_json},"crossOrigin":false}}"#,
        b64url(challenge)
    )
    .into_bytes()
}

/// SHA-256 of clientDataJSON, the `clientDataHash` CTAP2 requests carry.
pub fn client_data_hash(client_data_json: &[u8]) -> [u8; 32] {
    Sha256::digest(client_data_json).into()
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Client extension outputs, as they go into `clientExtensionResults`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtensionResults {
    /// `credProps.rk`, when credProps was requested.
    pub cred_props_rk: Option<bool>,
    /// `prf.enabled` at registration.
    pub prf_enabled: Option<bool>,
    /// `prf.results` (first, second).
    pub prf_results: Option<PrfValues>,
}

impl ExtensionResults {
    fn to_json(&self) -> Json {
        let mut m = serde_json::Map::new();
        if let Some(rk) = self.cred_props_rk {
            m.insert("credProps".into(), json!({ "rk": rk }));
        }
        if self.prf_enabled.is_some() || self.prf_results.is_some() {
            let mut prf = serde_json::Map::new();
            if let Some(e) = self.prf_enabled {
                prf.insert("enabled".into(), json!(e));
            }
            if let Some(r) = &self.prf_results {
                let mut res = serde_json::Map::new();
                res.insert("first".into(), json!(b64url(&r.first)));
                if let Some(s) = &r.second {
                    res.insert("second".into(), json!(b64url(s)));
                }
                prf.insert("results".into(), Json::Object(res));
            }
            m.insert("prf".into(), Json::Object(prf));
        }
        Json::Object(m)
    }
}

/// DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point (id-ecPublicKey,
/// prime256v1, BIT STRING of 66 bytes); followed by `04 || x || y`.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The SubjectPublicKeyInfo DER of an uncompressed P-256 point (`04 || x || y`), as
/// `response.publicKey` carries it.
pub fn p256_spki(uncompressed_point: &[u8; 65]) -> Vec<u8> {
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(uncompressed_point);
    der
}

/// What the authenticator returned for a registration, plus what the client added.
/// (`Debug` is hand-written: PRF outputs are key material.)
#[derive(Clone)]
pub struct Registration {
    /// The new credential's ID.
    pub credential_id: Vec<u8>,
    /// The clientDataJSON this client built, whose hash the phone signed.
    pub client_data_json: Vec<u8>,
    /// The attestation object, as the RP receives it.
    pub attestation_object: Vec<u8>,
    /// The authenticator data inside it.
    pub authenticator_data: Vec<u8>,
    /// The credential's public key as an uncompressed P-256 point, when it is ES256.
    pub public_key: Option<[u8; 65]>,
    /// Client extension results (credProps, prf).
    pub extensions: ExtensionResults,
}

impl Registration {
    /// `RegistrationResponseJSON` (WebAuthn Level 3), with transports `["hybrid"]` and
    /// attachment `cross-platform`.
    pub fn to_json(&self) -> Json {
        let id = b64url(&self.credential_id);
        let mut response = json!({
            "clientDataJSON": b64url(&self.client_data_json),
            "attestationObject": b64url(&self.attestation_object),
            "authenticatorData": b64url(&self.authenticator_data),
            "transports": ["hybrid"],
            "publicKeyAlgorithm": COSE_ES256,
        });
        if let Some(pk) = &self.public_key {
            response["publicKey"] = json!(b64url(&p256_spki(pk)));
        }
        json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "response": response,
            "clientExtensionResults": self.extensions.to_json(),
        })
    }
}

/// What the authenticator returned for a sign-in, plus what the client added.
/// (`Debug` is hand-written: PRF outputs are key material.)
#[derive(Clone)]
pub struct Assertion {
    /// The credential that signed.
    pub credential_id: Vec<u8>,
    /// The clientDataJSON this client built, whose hash the phone signed.
    pub client_data_json: Vec<u8>,
    /// The authenticator data that was signed.
    pub authenticator_data: Vec<u8>,
    /// The signature over authenticator data ‖ hash(clientDataJSON).
    pub signature: Vec<u8>,
    /// The user handle, for a discoverable credential.
    pub user_handle: Option<Vec<u8>>,
    /// Client extension results (prf).
    pub extensions: ExtensionResults,
}

impl Assertion {
    /// `AuthenticationResponseJSON` (WebAuthn Level 3).
    pub fn to_json(&self) -> Json {
        let id = b64url(&self.credential_id);
        let mut response = json!({
            "clientDataJSON": b64url(&self.client_data_json),
            "authenticatorData": b64url(&self.authenticator_data),
            "signature": b64url(&self.signature),
        });
        if let Some(h) = &self.user_handle {
            response["userHandle"] = json!(b64url(h));
        }
        json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "authenticatorAttachment": "cross-platform",
            "response": response,
            "clientExtensionResults": self.extensions.to_json(),
        })
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("credential_id", &b64url(&self.credential_id))
            .field(
                "prf_results",
                &self.extensions.prf_results.as_ref().map(|_| "redacted"),
            )
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion")
            .field("credential_id", &b64url(&self.credential_id))
            .field("user_handle", &self.user_handle.as_deref().map(b64url))
            .field(
                "prf_results",
                &self.extensions.prf_results.as_ref().map(|_| "redacted"),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }

    #[test]
    fn secure_origins_only() {
        assert_eq!(
            origin("https://Login.Example.com:8443/path?q").serialized,
            "https://login.example.com:8443"
        );
        assert!(Origin::parse("http://localhost:3000").is_ok());
        assert!(Origin::parse("http://127.0.0.1:3000").is_ok());
        assert!(Origin::parse("http://[::1]:3000").is_ok());
        for bad in [
            "http://example.com",
            "ftp://example.com",
            "example.com",
            "",
            "https://user:pw@example.com",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(Origin::parse(bad), Err(WebAuthnError::InsecureOrigin(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rp_id_rules() {
        let o = origin("https://login.example.co.uk");
        assert_eq!(o.resolve_rp_id(None).unwrap(), "login.example.co.uk");
        assert_eq!(
            o.resolve_rp_id(Some("example.co.uk")).unwrap(),
            "example.co.uk"
        );
        assert_eq!(
            o.resolve_rp_id(Some("LOGIN.example.co.uk")).unwrap(),
            "login.example.co.uk"
        );
        for bad in [
            "co.uk",
            "uk",
            "example.com",
            "ample.co.uk",
            "evil.login.example.co.uk",
            "",
            "example.co.uk.",
            "1.2.3.4",
        ] {
            assert!(
                matches!(
                    o.resolve_rp_id(Some(bad)),
                    Err(WebAuthnError::RpIdMismatch { .. })
                ),
                "{bad}"
            );
        }
        // Public suffixes that look like domains (github.io) are not registrable.
        let gh = origin("https://alice.github.io");
        assert!(gh.resolve_rp_id(Some("github.io")).is_err());
        assert_eq!(
            gh.resolve_rp_id(Some("alice.github.io")).unwrap(),
            "alice.github.io"
        );
        let ip = origin("http://127.0.0.1:8080");
        assert_eq!(ip.resolve_rp_id(Some("127.0.0.1")).unwrap(), "127.0.0.1");
        assert!(ip.resolve_rp_id(Some("0.0.1")).is_err());
        let local = origin("http://localhost:8080");
        assert_eq!(local.resolve_rp_id(Some("localhost")).unwrap(), "localhost");
    }

    const CREATE: &str = r#"{
        "rp": {"name": "Example", "id": "example.com"},
        "user": {"id": "dXNlci0x", "name": "alice@example.com", "displayName": "Alice"},
        "challenge": "AAECAwQFBgcICQoLDA0ODxAREhM",
        "pubKeyCredParams": [{"type": "public-key", "alg": -8}, {"type": "public-key", "alg": -7}],
        "timeout": 60000,
        "excludeCredentials": [{"type": "public-key", "id": "AQID", "transports": ["hybrid"]}],
        "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
        "attestation": "none",
        "extensions": {"credProps": true, "prf": {}}
    }"#;

    #[test]
    fn parses_creation_options() {
        let o = CreationOptions::from_json(CREATE, &origin("https://www.example.com")).unwrap();
        assert_eq!(o.rp_id, "example.com");
        assert_eq!(o.user_id, b"user-1");
        assert_eq!(o.user_display_name, "Alice");
        assert_eq!(o.challenge.len(), 20);
        assert_eq!(o.exclude, vec![CredentialDescriptor { id: vec![1, 2, 3] }]);
        assert_eq!(o.resident_key, ResidentKey::Required);
        assert_eq!(o.attestation, Attestation::None);
        let direct = CREATE.replace(r#""attestation": "none""#, r#""attestation": "direct""#);
        let d = CreationOptions::from_json(&direct, &origin("https://www.example.com")).unwrap();
        assert_eq!(d.attestation, Attestation::Requested);
        assert_eq!(o.user_verification, UserVerification::Required);
        assert!(o.extensions.cred_props);
        assert_eq!(o.extensions.prf, Some(PrfInput::default()));
        // The webauthn-rs wrapper form.
        let wrapped = format!(r#"{{"publicKey": {CREATE}}}"#);
        assert_eq!(
            CreationOptions::from_json(&wrapped, &origin("https://www.example.com")).unwrap(),
            o
        );
    }

    #[test]
    fn creation_options_are_checked() {
        let phish = CreationOptions::from_json(CREATE, &origin("https://example.net"));
        assert!(matches!(phish, Err(WebAuthnError::RpIdMismatch { .. })));
        let rsa_only = CREATE.replace(
            r#"{"type": "public-key", "alg": -7}"#,
            r#"{"type": "public-key", "alg": -257}"#,
        );
        assert_eq!(
            CreationOptions::from_json(&rsa_only, &origin("https://example.com")).unwrap_err(),
            WebAuthnError::NoSupportedAlgorithm
        );
        let short = CREATE.replace("AAECAwQFBgcICQoLDA0ODxAREhM", "AAEC");
        assert!(CreationOptions::from_json(&short, &origin("https://example.com")).is_err());
        assert!(CreationOptions::from_json("{", &origin("https://example.com")).is_err());
        assert!(CreationOptions::from_json("[]", &origin("https://example.com")).is_err());
    }

    #[test]
    fn prf_eval_by_credential_is_refused_at_creation() {
        let o = origin("https://example.com");
        let with = |prf: &str| CREATE.replace(r#""prf": {}"#, &format!(r#""prf": {prf}"#));
        let err = CreationOptions::from_json(
            &with(r#"{"eval": {"first": "AQ"}, "evalByCredential": {"AQID": {"first": "AQ"}}}"#),
            &o,
        )
        .unwrap_err();
        assert!(matches!(err, WebAuthnError::NotSupported(_)), "{err}");
        assert!(err.to_string().starts_with("NotSupportedError: "), "{err}");
        assert!(err.to_string().contains("evalByCredential"), "{err}");
        // An empty evalByCredential, or eval alone, is fine (WebAuthn L3 §10.1.4).
        let ok = CreationOptions::from_json(&with(r#"{"evalByCredential": {}}"#), &o).unwrap();
        assert_eq!(ok.extensions.prf, Some(PrfInput::default()));
        assert!(CreationOptions::from_json(&with(r#"{"eval": {"first": "AQ"}}"#), &o).is_ok());
    }

    #[test]
    fn parses_request_options() {
        let json = r#"{"challenge": "AAECAwQFBgcICQoLDA0ODw==", "rpId": "example.com",
            "allowCredentials": [{"type": "public-key", "id": "AQID"}, {"type": "other", "id": "BBBB"}],
            "userVerification": "discouraged",
            "extensions": {"prf": {"eval": {"first": "AAAA"}, "evalByCredential": {"AQID": {"first": "AQ", "second": "Ag"}}}}}"#;
        let o = RequestOptions::from_json(json, &origin("https://example.com")).unwrap();
        assert_eq!(o.allow, vec![CredentialDescriptor { id: vec![1, 2, 3] }]);
        assert_eq!(o.user_verification, UserVerification::Discouraged);
        let prf = o.extensions.prf.unwrap();
        assert_eq!(
            prf.eval,
            Some(PrfValues {
                first: vec![0, 0, 0],
                second: None
            })
        );
        assert_eq!(
            prf.eval_by_credential,
            vec![(
                vec![1, 2, 3],
                PrfValues {
                    first: vec![1],
                    second: Some(vec![2])
                }
            )]
        );
        assert!(RequestOptions::from_json(json, &origin("https://example.org")).is_err());
    }

    #[test]
    fn client_data_in_browser_order() {
        let cd = client_data_json(
            ClientDataType::Get,
            &[0xfb; 3],
            &origin("https://example.com"),
        );
        assert_eq!(
            String::from_utf8(cd).unwrap(),
            r#"{"type":"webauthn.get","challenge":"-_v7","origin":"https://example.com","crossOrigin":false}"#
        );
    }

    #[test]
    fn response_json_shape() {
        let reg = Registration {
            credential_id: vec![1, 2, 3],
            client_data_json: b"{}".to_vec(),
            attestation_object: vec![0xa0],
            authenticator_data: vec![0; 37],
            public_key: Some([4; 65]),
            extensions: ExtensionResults {
                cred_props_rk: Some(true),
                prf_enabled: Some(true),
                prf_results: None,
            },
        };
        let j = reg.to_json();
        assert_eq!(j["id"], "AQID");
        assert_eq!(j["response"]["transports"], json!(["hybrid"]));
        assert_eq!(j["authenticatorAttachment"], "cross-platform");
        assert_eq!(
            j["clientExtensionResults"],
            json!({"credProps": {"rk": true}, "prf": {"enabled": true}})
        );
        assert_eq!(
            decode_b64("k", j["response"]["publicKey"].as_str().unwrap())
                .unwrap()
                .len(),
            91
        );
        let a = Assertion {
            credential_id: vec![1],
            client_data_json: vec![],
            authenticator_data: vec![],
            signature: vec![],
            user_handle: None,
            extensions: ExtensionResults::default(),
        };
        assert!(a.to_json()["response"].get("userHandle").is_none());
        assert_eq!(a.to_json()["clientExtensionResults"], json!({}));
    }
}

//! The relying party: webauthn-rs-core, an implementation independent of hybridge, issues the
//! options and verifies what `hybridge register` / `hybridge sign-in` print.

use std::time::Duration;

use url::Url;
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    AuthenticationResult, AuthenticationState, Credential, PublicKeyCredential,
    RegisterPublicKeyCredential, RegistrationState, UserVerificationPolicy,
};

/// The RP ID.
pub const RP_ID: &str = "example.com";
/// The origin the laptop is told.
pub const ORIGIN: &str = "https://example.com";

/// A relying party for `example.com`.
pub struct Rp(WebauthnCore);

impl Default for Rp {
    fn default() -> Self {
        Self::new()
    }
}

impl Rp {
    /// The RP.
    pub fn new() -> Self {
        Rp(WebauthnCore::new_unsafe_experts_only(
            "Example",
            RP_ID,
            vec![Url::parse(ORIGIN).expect("origin")],
            Duration::from_secs(300),
            None,
            None,
        ))
    }

    /// A relying party with its own RP ID and origin (a page on the loopback for a browser).
    pub fn for_origin(rp_id: &str, origin: &str) -> Self {
        Rp(WebauthnCore::new_unsafe_experts_only(
            "Example",
            rp_id,
            vec![Url::parse(origin).expect("origin")],
            Duration::from_secs(300),
            None,
            None,
        ))
    }

    /// PublicKeyCredentialCreationOptions JSON for `user` (discoverable, UV required).
    pub fn creation_options(&self, user: &str) -> (String, RegistrationState) {
        let builder = self
            .0
            .new_challenge_register_builder(user.as_bytes(), user, user)
            .expect("register builder")
            .user_verification_policy(UserVerificationPolicy::Required)
            .require_resident_key(true);
        let (ccr, state) = self
            .0
            .generate_challenge_register(builder)
            .expect("challenge");
        (serde_json::to_string(&ccr).expect("options JSON"), state)
    }

    /// Verifies `register`'s stdout.
    pub fn verify_registration(
        &self,
        stdout: &str,
        state: &RegistrationState,
    ) -> Result<Credential, String> {
        let rpc: RegisterPublicKeyCredential = serde_json::from_str(stdout.trim())
            .map_err(|e| format!("not a registration response: {e}: {stdout:?}"))?;
        self.0
            .register_credential(&rpc, state, None)
            .map_err(|e| format!("{e:?}"))
    }

    /// PublicKeyCredentialRequestOptions JSON allowing `credentials`.
    pub fn request_options(&self, credentials: Vec<Credential>) -> (String, AuthenticationState) {
        let builder = self
            .0
            .new_challenge_authenticate_builder(credentials, Some(UserVerificationPolicy::Required))
            .expect("authenticate builder");
        let (rcr, state) = self
            .0
            .generate_challenge_authenticate(builder)
            .expect("challenge");
        (serde_json::to_string(&rcr).expect("options JSON"), state)
    }

    /// Verifies `sign-in`'s stdout.
    pub fn verify_assertion(
        &self,
        stdout: &str,
        state: &AuthenticationState,
    ) -> Result<AuthenticationResult, String> {
        let pkc: PublicKeyCredential = serde_json::from_str(stdout.trim())
            .map_err(|e| format!("not an assertion response: {e}: {stdout:?}"))?;
        self.0
            .authenticate_credential(&pkc, state)
            .map_err(|e| format!("{e:?}"))
    }
}

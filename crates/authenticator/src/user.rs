//! The person holding the phone: user presence, user verification and account choice go
//! through [`UserAgent`], which the host application implements (a terminal prompt with a PIN
//! in the CLI, [`AutoApprove`] in tests).

/// Which ceremony the user is asked to approve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ceremony {
    /// makeCredential: create a passkey.
    Register,
    /// getAssertion: sign in with a passkey.
    SignIn,
    /// authenticatorSelection: the platform asks which authenticator the user means; a
    /// yes is a touch (CTAP 2.1 §6.9). No RP and no account are involved.
    Select,
}

/// What the user is asked to approve.
#[derive(Clone, Debug)]
pub struct ApprovalRequest {
    /// Register or sign in.
    pub ceremony: Ceremony,
    /// The relying party, as the request names it.
    pub rp_id: String,
    /// The RP's display name, if known.
    pub rp_name: Option<String>,
    /// The account: `user.name` for registration, the chosen credential's name for sign-in.
    pub user_name: Option<String>,
    /// The account's display name, if known.
    pub user_display_name: Option<String>,
    /// Whether the request needs user verification (not just presence).
    pub user_verification: bool,
}

/// The user's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// The user approved. `verified` is true only if the user was verified (PIN or biometric)
    /// during this approval; it sets the UV flag.
    Approved {
        /// The user was verified (PIN or biometric) during this approval.
        verified: bool,
    },
    /// The user declined, or did not answer in time.
    Declined,
    /// User verification was required and failed so often that the authenticator locked.
    Locked,
}

/// One account offered to the user when several credentials match a sign-in.
#[derive(Clone, Debug)]
pub struct AccountChoice {
    /// `user.name`, if stored.
    pub user_name: Option<String>,
    /// `user.displayName`, if stored.
    pub user_display_name: Option<String>,
    /// Creation time, Unix seconds.
    pub created: u64,
}

/// The host application's side of user interaction. Calls may block (a terminal prompt);
/// async callers run the authenticator on a blocking thread.
pub trait UserAgent: Send {
    /// Asks the user to approve a ceremony, verifying them when `request.user_verification`
    /// is set (and optionally when it is not).
    fn approve(&mut self, request: &ApprovalRequest) -> Approval;

    /// Asks the user to pick one of several accounts for `rp_id`; `None` means cancel.
    fn choose_account(&mut self, rp_id: &str, accounts: &[AccountChoice]) -> Option<usize>;
}

/// Approves everything, as a verified user, and picks the first account: for tests and demos.
#[derive(Clone, Copy, Debug, Default)]
pub struct AutoApprove;

impl UserAgent for AutoApprove {
    fn approve(&mut self, _request: &ApprovalRequest) -> Approval {
        Approval::Approved { verified: true }
    }

    fn choose_account(&mut self, _rp_id: &str, accounts: &[AccountChoice]) -> Option<usize> {
        (!accounts.is_empty()).then_some(0)
    }
}

//! A [`UserAgent`] for automation: approves (or declines) without asking, and verifies the
//! user with a PIN given up front, e.g. from a file (the CLI's `--yes` and `--pin-file`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use zeroize::Zeroizing;

use hybridge_authenticator::store::{MAX_PIN_BYTES, PinVerifier, StoreError};
use hybridge_authenticator::user::{AccountChoice, Approval, ApprovalRequest, UserAgent};

/// Answers every request the same way, without a person.
///
/// * Without `approve`, every ceremony is declined.
/// * With it, requests without user verification are approved as *unverified*
///   (`verified: false`), and requests with it are verified with the PIN, if one was given
///   (a wrong PIN declines and counts against the store's limit; at the limit the answer is
///   [`Approval::Locked`]), and declined if none was.
/// * Account choice picks a fixed index (the first by default), or cancels if there are not
///   that many accounts.
///
/// ```
/// use crate::scripted::ScriptedAgent;
/// use hybridge_authenticator::store::{FileStore, KdfParams};
/// use hybridge_authenticator::user::{Approval, ApprovalRequest, Ceremony, UserAgent};
/// # let dir = std::env::temp_dir().join(format!("hybridge-doc-scripted-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let store = FileStore::create(dir.join("store"), "2468", KdfParams::insecure_for_tests())?;
/// let pin = zeroize::Zeroizing::new(String::from("2468")); // or ScriptedAgent::read_pin_file
/// let mut agent = ScriptedAgent::new(true).with_pin(pin, store.pin_verifier());
/// let request = ApprovalRequest {
///     ceremony: Ceremony::SignIn,
///     rp_id: "example.com".into(),
///     rp_name: None,
///     user_name: None,
///     user_display_name: None,
///     user_verification: true,
/// };
/// assert_eq!(agent.approve(&request), Approval::Approved { verified: true });
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), hybridge_authenticator::store::StoreError>(())
/// ```
pub struct ScriptedAgent {
    approve: bool,
    pin: Option<(Zeroizing<String>, PinVerifier)>,
    account: usize,
}

impl ScriptedAgent {
    /// Approves everything (`true`, the CLI's `--yes`) or declines everything (`false`).
    pub fn new(approve: bool) -> Self {
        Self {
            approve,
            pin: None,
            account: 0,
        }
    }

    /// Verifies the user with `pin` against the store behind `verifier`.
    pub fn with_pin(mut self, pin: Zeroizing<String>, verifier: PinVerifier) -> Self {
        self.pin = Some((pin, verifier));
        self
    }

    /// Picks the account at `index` (0-based) when several match (the CLI takes the first).
    #[cfg(test)]
    pub fn with_account(mut self, index: usize) -> Self {
        self.account = index;
        self
    }

    /// Reads a PIN from a file: UTF-8, one trailing line ending removed, at most
    /// [`MAX_PIN_BYTES`] bytes.
    pub fn read_pin_file(path: impl AsRef<Path>) -> io::Result<Zeroizing<String>> {
        let path = path.as_ref();
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_PIN_BYTES + 3));
        File::open(path)?
            .take(MAX_PIN_BYTES as u64 + 3)
            .read_to_end(&mut bytes)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let invalid = |msg: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("PIN file {}: {msg}", path.display()),
            )
        };
        if bytes.len() > MAX_PIN_BYTES {
            return Err(invalid("the PIN is too long"));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid("the PIN is not UTF-8"))?;
        let mut pin = Zeroizing::new(String::with_capacity(text.len()));
        pin.push_str(text);
        Ok(pin)
    }
}

impl UserAgent for ScriptedAgent {
    fn approve(&mut self, request: &ApprovalRequest) -> Approval {
        if !self.approve {
            return Approval::Declined;
        }
        if !request.user_verification {
            return Approval::Approved { verified: false };
        }
        match &self.pin {
            None => Approval::Declined,
            Some((pin, verifier)) => match verifier.verify(pin) {
                Ok(()) => Approval::Approved { verified: true },
                Err(StoreError::Locked) => Approval::Locked,
                Err(_) => Approval::Declined,
            },
        }
    }

    fn choose_account(&mut self, _rp_id: &str, accounts: &[AccountChoice]) -> Option<usize> {
        (self.account < accounts.len()).then_some(self.account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridge_authenticator::store::{CreateOptions, FileStore, KdfParams};
    use hybridge_authenticator::user::Ceremony;

    fn request(uv: bool) -> ApprovalRequest {
        ApprovalRequest {
            ceremony: Ceremony::Register,
            rp_id: "example.com".into(),
            rp_name: None,
            user_name: Some("alice".into()),
            user_display_name: None,
            user_verification: uv,
        }
    }

    #[test]
    fn scripted_answers() {
        let dir = std::env::temp_dir().join(format!("hybridge-scripted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = CreateOptions {
            kdf: KdfParams::insecure_for_tests(),
            max_pin_attempts: 2,
        };
        let store = FileStore::create_with(dir.join("store"), "2468", options).unwrap();

        assert_eq!(
            ScriptedAgent::new(false).approve(&request(false)),
            Approval::Declined
        );
        assert_eq!(
            ScriptedAgent::new(true).approve(&request(false)),
            Approval::Approved { verified: false }
        );
        assert_eq!(
            ScriptedAgent::new(true).approve(&request(true)),
            Approval::Declined
        );

        std::fs::write(dir.join("pin"), "2468\r\n").unwrap();
        let pin = ScriptedAgent::read_pin_file(dir.join("pin")).unwrap();
        assert_eq!(pin.as_str(), "2468");
        let mut agent = ScriptedAgent::new(true).with_pin(pin, store.pin_verifier());
        assert_eq!(
            agent.approve(&request(true)),
            Approval::Approved { verified: true }
        );

        let wrong = Zeroizing::new("1357".to_owned());
        let mut agent = ScriptedAgent::new(true).with_pin(wrong, store.pin_verifier());
        assert_eq!(agent.approve(&request(true)), Approval::Declined);
        assert_eq!(agent.approve(&request(true)), Approval::Locked);

        std::fs::write(dir.join("long"), "1".repeat(MAX_PIN_BYTES + 1)).unwrap();
        assert!(ScriptedAgent::read_pin_file(dir.join("long")).is_err());
        assert!(ScriptedAgent::read_pin_file(dir.join("missing")).is_err());

        let accounts = vec![
            AccountChoice {
                user_name: None,
                user_display_name: None,
                created: 0,
            };
            2
        ];
        assert_eq!(
            ScriptedAgent::new(true).choose_account("x", &accounts),
            Some(0)
        );
        let mut second = ScriptedAgent::new(true).with_account(1);
        assert_eq!(second.choose_account("x", &accounts), Some(1));
        assert_eq!(second.choose_account("x", &accounts[..1]), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

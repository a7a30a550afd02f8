//! Where passkeys live: the [`CredentialStore`] trait the authenticator works against, and
//! [`MemoryStore`], a volatile implementation for tests and demos, and [`FileStore`], the
//! encrypted, PIN-protected file a real authenticator uses.
//!
//! The authenticator never writes to a store until a ceremony has completed (the user approved
//! and the response was built), so a declined or failed request leaves the store untouched.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod file;
mod format;
mod kdf;

pub use file::{CreateOptions, FileStore, PinVerifier, wait_for_pin_attempts};
pub(crate) use format::Body;
pub use kdf::{KdfParams, MAX_PIN_BYTES, MIN_PIN_CHARS};

/// What a phone keeps to be reached again by the laptops it linked to (docs/protocol.md §8.5):
/// one identity for every laptop, and the list of laptops it gave a link.
#[derive(Clone)]
pub struct LinkingState {
    /// The root secret every laptop's link secret derives from (with the contact ID and the
    /// laptop's link ID, `kdf::phone_link_secret`): no per-laptop secret is stored.
    pub root_secret: Zeroizing<[u8; 32]>,
    /// The identity key (a P-256 scalar): the static key of NKpsk0, linking map key 4.
    pub identity_key: Zeroizing<[u8; 32]>,
    /// The wake key (a P-256 scalar): proves to the relay that the contact ID is this
    /// phone's, so only it can subscribe to wake-ups.
    pub wake_key: Zeroizing<[u8; 32]>,
    /// The laptops given a link, oldest first. A link ID not in this list is refused.
    pub laptops: Vec<LinkedLaptop>,
}

impl fmt::Debug for LinkingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkingState")
            .field("laptops", &self.laptops)
            .finish_non_exhaustive()
    }
}

/// A laptop the phone gave a link to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedLaptop {
    /// The link (pairing) ID the laptop sends back in its client payload.
    pub link_id: [u8; 8],
    /// What the user called it (may be empty: laptops do not name themselves).
    pub label: String,
    /// When the link was given, Unix seconds.
    pub created: u64,
    /// When the laptop last reached the phone through it, Unix seconds.
    pub last_used: Option<u64>,
}

/// One passkey as the authenticator keeps it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StoredCredential {
    /// The credential ID the relying party sees (random, 16–64 bytes).
    pub credential_id: Vec<u8>,
    /// The RP ID the credential is scoped to.
    pub rp_id: String,
    /// The RP's display name, if it gave one.
    pub rp_name: Option<String>,
    /// The user handle (WebAuthn `user.id`).
    pub user_handle: Vec<u8>,
    /// `user.name`, if given.
    pub user_name: Option<String>,
    /// `user.displayName`, if given.
    pub user_display_name: Option<String>,
    /// The ES256 private key: a big-endian P-256 scalar.
    pub private_key: [u8; 32],
    /// Whether the credential is discoverable (a "resident key").
    pub discoverable: bool,
    /// The signature counter last used; see the authenticator's counter policy.
    pub sign_count: u32,
    /// The per-credential secret behind hmac-secret / PRF for assertions with user verification.
    pub cred_random_uv: [u8; 32],
    /// The same, for assertions without user verification.
    pub cred_random_no_uv: [u8; 32],
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Last successful assertion, Unix seconds.
    pub last_used: Option<u64>,
}

impl fmt::Debug for StoredCredential {
    // Keys and per-credential secrets never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredential")
            .field("credential_id_len", &self.credential_id.len())
            .field("rp_id", &self.rp_id)
            .field("discoverable", &self.discoverable)
            .field("sign_count", &self.sign_count)
            .field("created", &self.created)
            .field("last_used", &self.last_used)
            .finish_non_exhaustive()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the backing file failed.
    #[error("passkey store I/O error at {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The path is a directory, a FIFO, a device or a socket: a store is a regular file (a
    /// FIFO would block the open forever).
    #[error("{path} is a {kind}, not a passkey store file: give the path of a regular file")]
    NotAFile {
        /// The path given.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is not a passkey store, is truncated, or fails authentication.
    #[error("passkey store at {path} is corrupt or was not written by hybridge: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The PIN was wrong.
    #[error("wrong PIN; {remaining} attempt(s) left before the store locks")]
    WrongPin {
        /// Attempts left before the store locks.
        remaining: u32,
    },
    /// Too many failed PIN attempts in a row: the store refuses to open until it is reset.
    /// An attempt whose process was killed before the PIN was checked counts as failed (so
    /// that killing it cannot be used to guess for free), hence the wording.
    #[error(
        "passkey store is locked: too many PIN attempts in a row failed (wrong PINs, or unlocks \
         killed before the PIN was checked)"
    )]
    Locked,
    /// No credential with that ID.
    #[error("no passkey with that credential ID")]
    NotFound,
    /// A credential with that ID already exists.
    #[error("a passkey with that credential ID already exists")]
    Duplicate,
    /// The PIN does not meet the policy (at least 4 characters); it was not counted as an
    /// attempt.
    #[error("PIN rejected: {reason}")]
    PinPolicy {
        /// What the policy asks for.
        reason: String,
    },
}

/// The authenticator's view of persistent storage.
///
/// Implementations make each mutating call durable before returning: after `Ok`, a crash
/// loses nothing; after `Err`, the previous contents are intact.
pub trait CredentialStore: Send {
    /// Every credential scoped to `rp_id` (discoverable or not), newest first.
    fn credentials_for_rp(&self, rp_id: &str) -> Result<Vec<StoredCredential>, StoreError>;
    /// The credential with this ID, if it exists.
    fn credential(&self, credential_id: &[u8]) -> Result<Option<StoredCredential>, StoreError>;
    /// Adds a credential. A discoverable credential replaces any other discoverable one for the
    /// same RP ID and user handle, as CTAP2 requires.
    fn insert(&mut self, credential: StoredCredential) -> Result<(), StoreError>;
    /// Records a successful assertion: the new counter and the time.
    fn record_use(
        &mut self,
        credential_id: &[u8],
        sign_count: u32,
        now: u64,
    ) -> Result<(), StoreError>;
    /// Every credential, for a passkey manager.
    fn list(&self) -> Result<Vec<StoredCredential>, StoreError>;
    /// Changes the user display name shown for a credential.
    fn rename(&mut self, credential_id: &[u8], display_name: &str) -> Result<(), StoreError>;
    /// Deletes a credential.
    fn delete(&mut self, credential_id: &[u8]) -> Result<(), StoreError>;
}

/// A store that lives in memory only.
#[derive(Default)]
pub struct MemoryStore {
    credentials: Vec<StoredCredential>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn index(&self, credential_id: &[u8]) -> Result<usize, StoreError> {
        self.credentials
            .iter()
            .position(|c| c.credential_id == credential_id)
            .ok_or(StoreError::NotFound)
    }
}

/// Applies the CTAP2 insert rule to a list of credentials; shared by every store.
pub fn insert_credential(
    credentials: &mut Vec<StoredCredential>,
    credential: StoredCredential,
) -> Result<(), StoreError> {
    if credentials
        .iter()
        .any(|c| c.credential_id == credential.credential_id)
    {
        return Err(StoreError::Duplicate);
    }
    if credential.discoverable {
        credentials.retain(|c| {
            !(c.discoverable
                && c.rp_id == credential.rp_id
                && c.user_handle == credential.user_handle)
        });
    }
    credentials.push(credential);
    Ok(())
}

/// The credentials scoped to `rp_id`, newest first: the query every store answers the same way.
pub fn select_for_rp(credentials: &[StoredCredential], rp_id: &str) -> Vec<StoredCredential> {
    let mut found: Vec<_> = credentials
        .iter()
        .filter(|c| c.rp_id == rp_id)
        .cloned()
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.created));
    found
}

impl CredentialStore for MemoryStore {
    fn credentials_for_rp(&self, rp_id: &str) -> Result<Vec<StoredCredential>, StoreError> {
        Ok(select_for_rp(&self.credentials, rp_id))
    }

    fn credential(&self, credential_id: &[u8]) -> Result<Option<StoredCredential>, StoreError> {
        Ok(self
            .credentials
            .iter()
            .find(|c| c.credential_id == credential_id)
            .cloned())
    }

    fn insert(&mut self, credential: StoredCredential) -> Result<(), StoreError> {
        insert_credential(&mut self.credentials, credential)
    }

    fn record_use(
        &mut self,
        credential_id: &[u8],
        sign_count: u32,
        now: u64,
    ) -> Result<(), StoreError> {
        let i = self.index(credential_id)?;
        self.credentials[i].sign_count = sign_count;
        self.credentials[i].last_used = Some(now);
        Ok(())
    }

    fn list(&self) -> Result<Vec<StoredCredential>, StoreError> {
        Ok(self.credentials.clone())
    }

    fn rename(&mut self, credential_id: &[u8], display_name: &str) -> Result<(), StoreError> {
        let i = self.index(credential_id)?;
        self.credentials[i].user_display_name = Some(display_name.to_owned());
        Ok(())
    }

    fn delete(&mut self, credential_id: &[u8]) -> Result<(), StoreError> {
        let i = self.index(credential_id)?;
        self.credentials.remove(i);
        Ok(())
    }
}

/// A secret held in memory only as long as needed, e.g. a store key derived from the PIN.
pub type SecretBytes = Zeroizing<Vec<u8>>;

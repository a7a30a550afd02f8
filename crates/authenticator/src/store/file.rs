//! [`FileStore`]: passkeys in one encrypted file, unlocked with a PIN.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::format::{self, Header, OpenError};
use super::kdf::{KdfParams, check_pin_policy, derive_key};
use super::{
    Body, CredentialStore, LinkedLaptop, LinkingState, StoreError, StoredCredential,
    insert_credential, select_for_rp,
};

/// Settings for a new store.
#[derive(Clone, Copy, Debug)]
pub struct CreateOptions {
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// Wrong PINs in a row before the store locks: 1 to 255. Default 8.
    pub max_pin_attempts: u32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            kdf: KdfParams::default(),
            max_pin_attempts: 8,
        }
    }
}

/// A [`CredentialStore`] persisted in one encrypted file, unlocked with a PIN.
///
/// * **Encrypted at rest.** The body (every credential, with RP IDs, user names and private
///   keys) is AES-256-GCM encrypted under a key derived from the PIN with Argon2id; the salt
///   and cost parameters are in the header, which is the associated data. The file holds
///   nothing readable but the header; the layout is documented in `store/format.rs`.
/// * **Crash safe.** Every change writes a complete new file next to the old one
///   (`<name>.tmp`, created with mode 0600), fsyncs it, renames it over the old one and fsyncs
///   the directory. A crash at any point leaves either the old or the new file; a stale temp
///   file is ignored and replaced by the next write.
/// * **Limited PIN attempts.** The header counts wrong PINs. The count is written to disk
///   *before* a PIN is tried and reset only after it proved right, so killing the process
///   mid-attempt, or restarting it, never gives an attempt back. After
///   [`max attempts`](CreateOptions::max_pin_attempts) wrong PINs in a row the store is locked
///   for good ([`StoreError::Locked`]).
///
/// # Recovering from a lockout or a forgotten PIN
///
/// There is no backdoor: the PIN is the only way to the key. Delete the store file and create
/// a new one; the passkeys in it are lost, so sign in to each site another way and register
/// the phone again.
///
/// # Threat model
///
/// The attempt limit protects against someone guessing PINs through hybridge. Someone who can
/// copy the file can guess offline at the Argon2id cost per guess, and someone who can write
/// it can reset the counter; keep the file in a directory only you can read (the store
/// creates missing parent directories with mode 0700). One process should use a store at a
/// time.
///
/// # Example
///
/// ```
/// use hybridge_authenticator::store::{CredentialStore, FileStore, KdfParams};
/// # let dir = std::env::temp_dir().join(format!("hybridge-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let path = dir.join("passkeys.hbk");
/// // Tests and examples use tiny Argon2 parameters; real stores use `KdfParams::default()`.
/// let store = FileStore::create(&path, "2468", KdfParams::insecure_for_tests())?;
/// assert!(store.list()?.is_empty());
/// drop(store);
///
/// let mut store = FileStore::open(&path, "2468")?;
/// let verifier = store.pin_verifier(); // for the user agent; shares the attempt counter
/// assert!(verifier.verify("1357").is_err());
/// assert_eq!(store.remaining_attempts(), 7);
/// store.verify_pin("2468")?;
/// assert_eq!(store.remaining_attempts(), 8);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), hybridge_authenticator::store::StoreError>(())
/// ```
///
/// Clones of its [`PinVerifier`] share its state, so a user agent can verify the PIN while the
/// authenticator holds the store.
pub struct FileStore {
    shared: Arc<Mutex<Inner>>,
}

/// Verifies the PIN of an open [`FileStore`], sharing its attempt counter and lockout.
///
/// Cheap to clone; give one to the user agent.
#[derive(Clone)]
pub struct PinVerifier {
    shared: Arc<Mutex<Inner>>,
}

struct Unlocked {
    key: Zeroizing<[u8; 32]>,
    body: Body,
}

struct Inner {
    path: PathBuf,
    header: Header,
    /// The body as last written, so the counter can be rewritten without the key.
    ciphertext: Vec<u8>,
    /// `None` once the store has locked: the key and the credentials are gone from memory.
    unlocked: Option<Unlocked>,
    #[cfg(test)]
    fail_before_rename: bool,
}

/// PIN attempts under way in this process: counted on disk, not yet decided.
static ATTEMPTS: Mutex<usize> = Mutex::new(0);
static ATTEMPT_DONE: Condvar = Condvar::new();

/// Marks a PIN attempt as under way from before it is counted on disk until its outcome is
/// recorded, so that [`wait_for_pin_attempts`] can let it finish.
struct Attempt;

impl Attempt {
    fn begin() -> Self {
        *ATTEMPTS.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Attempt
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut n = ATTEMPTS.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        ATTEMPT_DONE.notify_all();
    }
}

/// Waits up to `limit` for the PIN attempts under way in this process to record their
/// outcome; true when none is left.
///
/// An attempt is counted on disk before the key derivation (about 0.2 s), so that killing the
/// process cannot be used to guess PINs for free. A program that ends on Ctrl-C or SIGTERM
/// calls this first: a right PIN then resets the count instead of being left as a failure
/// (eight interrupted unlocks would otherwise lock the store).
pub fn wait_for_pin_attempts(limit: Duration) -> bool {
    let until = Instant::now() + limit;
    let mut n = ATTEMPTS.lock().unwrap_or_else(PoisonError::into_inner);
    while *n > 0 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        n = ATTEMPT_DONE
            .wait_timeout(n, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn random<const N: usize>(path: &Path) -> Result<[u8; N], StoreError> {
    let mut b = [0u8; N];
    OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| io_error(path, io::Error::other(e.to_string())))?;
    Ok(b)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves the old or the new file.
fn write_atomic(path: &Path, bytes: &[u8], fail_before_rename: bool) -> Result<(), StoreError> {
    let tmp = temp_path(path);
    // A stale temp file from a crash may have any mode; start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&tmp, e)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    if fail_before_rename {
        // Test seam: the process "dies" here, leaving the temp file behind.
        return Err(io_error(
            path,
            io::Error::other("injected crash before rename"),
        ));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    // Make the rename itself durable. The new file is already in place, so a filesystem that
    // cannot sync directories is not a failure (reporting one would make the caller believe
    // the old contents were still there).
    let dir = parent_dir(path);
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::InvalidInput
                    | io::ErrorKind::Unsupported
                    | io::ErrorKind::PermissionDenied
            ) =>
        {
            Err(io_error(dir, e))
        }
        _ => Ok(()),
    }
}

/// What a path that is not a regular file is, for [`StoreError::NotAFile`].
fn file_kind(kind: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO (named pipe)"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Opens `path` for reading, refusing anything but a regular file. The open does not block
/// (`O_NONBLOCK`), so a FIFO is refused instead of waiting forever for a writer; the type is
/// checked on the open file, so nothing can be swapped in between.
fn open_regular(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    let kind = file.metadata().map_err(|e| io_error(path, e))?.file_type();
    if !kind.is_file() {
        return Err(StoreError::NotAFile {
            path: path.display().to_string(),
            kind: file_kind(kind),
        });
    }
    Ok(file)
}

fn read_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(format::MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    if bytes.len() as u64 > format::MAX_FILE_LEN {
        return Err(corrupt(path, "file is larger than any passkey store"));
    }
    Ok(bytes)
}

impl Inner {
    fn write(&self, header: &Header, ciphertext: &[u8]) -> Result<(), StoreError> {
        let bytes = format::serialize(header, ciphertext)
            .map_err(|r| io_error(&self.path, io::Error::other(r)))?;
        #[cfg(test)]
        let fail = self.fail_before_rename;
        #[cfg(not(test))]
        let fail = false;
        write_atomic(&self.path, &bytes, fail)
    }

    /// Persists a new wrong-attempt count; memory follows only if the write succeeded.
    fn set_failed_attempts(&mut self, n: u32) -> Result<(), StoreError> {
        let mut header = self.header.clone();
        header.failed_attempts = n;
        self.write(&header, &self.ciphertext)?;
        self.header = header;
        Ok(())
    }

    fn unlocked(&self) -> Result<&Unlocked, StoreError> {
        self.unlocked.as_ref().ok_or(StoreError::Locked)
    }

    fn remaining(&self) -> u32 {
        if self.unlocked.is_none() {
            return 0;
        }
        self.header
            .max_attempts
            .saturating_sub(self.header.failed_attempts)
    }

    fn verify_pin(&mut self, pin: &str) -> Result<(), StoreError> {
        check_pin_policy(pin)?;
        self.unlocked()?;
        let failed = self.header.failed_attempts.saturating_add(1);
        // Count the attempt on disk before trying the PIN.
        let _attempt = Attempt::begin();
        self.set_failed_attempts(failed)?;
        let derived = derive_key(pin, &self.header.salt, &self.header.kdf)
            .map_err(|r| corrupt(&self.path, r))?;
        let right = self
            .unlocked()
            .is_ok_and(|u| bool::from(derived.ct_eq(&*u.key)));
        if right {
            return self.set_failed_attempts(0);
        }
        let remaining = self.header.max_attempts.saturating_sub(failed);
        if remaining == 0 {
            self.unlocked = None;
            return Err(StoreError::Locked);
        }
        Err(StoreError::WrongPin { remaining })
    }

    /// Applies `change` to a copy of the credentials, writes it with a fresh nonce, and only
    /// then makes it the current state: after an error, disk and memory are unchanged.
    fn mutate(
        &mut self,
        change: impl FnOnce(&mut Body) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let unlocked = self.unlocked()?;
        let mut next = unlocked.body.clone();
        change(&mut next)?;
        let mut header = self.header.clone();
        header.nonce = random(&self.path)?;
        let ciphertext =
            format::seal(&unlocked.key, &header, &next).map_err(|r| corrupt(&self.path, r))?;
        self.write(&header, &ciphertext)?;
        self.header = header;
        self.ciphertext = ciphertext;
        if let Some(u) = self.unlocked.as_mut() {
            u.body = next;
        }
        Ok(())
    }

    fn index(&self, credential_id: &[u8]) -> Result<usize, StoreError> {
        self.unlocked()?
            .body
            .credentials
            .iter()
            .position(|c| c.credential_id == credential_id)
            .ok_or(StoreError::NotFound)
    }
}

impl FileStore {
    /// Creates a new, empty store at `path` protected by `pin`, allowing 8 wrong PINs.
    /// Fails if a file already exists there. Missing parent directories are created (mode
    /// 0700).
    pub fn create(path: impl AsRef<Path>, pin: &str, kdf: KdfParams) -> Result<Self, StoreError> {
        Self::create_with(
            path,
            pin,
            CreateOptions {
                kdf,
                ..CreateOptions::default()
            },
        )
    }

    /// [`create`](Self::create) with all settings.
    pub fn create_with(
        path: impl AsRef<Path>,
        pin: &str,
        options: CreateOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        check_pin_policy(pin)?;
        if !(1..=format::MAX_ATTEMPTS_LIMIT).contains(&options.max_pin_attempts) {
            return Err(io_error(
                &path,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the PIN attempt limit must be between 1 and 255",
                ),
            ));
        }
        let dir = parent_dir(&path);
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| io_error(dir, e))?;
        if fs::symlink_metadata(&path).is_ok() {
            return Err(io_error(
                &path,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file already exists there; open it, or delete it to start over",
                ),
            ));
        }
        let header = Header {
            kdf: options.kdf,
            salt: random(&path)?,
            max_attempts: options.max_pin_attempts,
            nonce: random(&path)?,
            failed_attempts: 0,
        };
        let key = derive_key(pin, &header.salt, &header.kdf).map_err(|r| corrupt(&path, r))?;
        let ciphertext =
            format::seal(&key, &header, &Body::default()).map_err(|r| corrupt(&path, r))?;
        let inner = Inner {
            path,
            header,
            ciphertext,
            unlocked: Some(Unlocked {
                key,
                body: Body::default(),
            }),
            #[cfg(test)]
            fail_before_rename: false,
        };
        inner.write(&inner.header, &inner.ciphertext)?;
        Ok(Self::from_inner(inner))
    }

    /// Opens the store at `path` with `pin`.
    ///
    /// A wrong PIN is counted on disk before it is tried and returns
    /// [`StoreError::WrongPin`] with the attempts left, or [`StoreError::Locked`] when none are.
    /// A damaged file returns [`StoreError::Corrupt`] and is left as it is. A PIN shorter than
    /// the policy allows is rejected with [`StoreError::PinPolicy`] without counting.
    pub fn open(path: impl AsRef<Path>, pin: &str) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        check_pin_policy(pin)?;
        let bytes = read_file(&path)?;
        let (header, ciphertext) = format::parse(&bytes).map_err(|r| corrupt(&path, r))?;
        if header.failed_attempts >= header.max_attempts {
            return Err(StoreError::Locked);
        }
        let mut inner = Inner {
            path,
            header,
            ciphertext: ciphertext.to_vec(),
            unlocked: None,
            #[cfg(test)]
            fail_before_rename: false,
        };
        let failed = inner.header.failed_attempts + 1;
        let _attempt = Attempt::begin();
        inner.set_failed_attempts(failed)?;
        let key = derive_key(pin, &inner.header.salt, &inner.header.kdf)
            .map_err(|r| corrupt(&inner.path, r))?;
        match format::open(&key, &inner.header, &inner.ciphertext) {
            Ok(body) => {
                inner.set_failed_attempts(0)?;
                inner.unlocked = Some(Unlocked { key, body });
                Ok(Self::from_inner(inner))
            }
            Err(OpenError::Authentication) => {
                match inner.header.max_attempts.saturating_sub(failed) {
                    0 => Err(StoreError::Locked),
                    remaining => Err(StoreError::WrongPin { remaining }),
                }
            }
            Err(OpenError::Malformed(reason)) => {
                // The PIN was right (the body authenticated), so it does not count.
                inner.set_failed_attempts(0)?;
                Err(corrupt(&inner.path, reason))
            }
        }
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            shared: Arc::new(Mutex::new(inner)),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// A handle that verifies this store's PIN with the same counter and lockout.
    pub fn pin_verifier(&self) -> PinVerifier {
        PinVerifier {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Verifies the PIN, for user verification during a ceremony: Argon2id is run again and
    /// the result compared with the store key in constant time. Wrong PINs count as for
    /// [`open`](Self::open); at the limit the store locks and every later call fails with
    /// [`StoreError::Locked`].
    pub fn verify_pin(&mut self, pin: &str) -> Result<(), StoreError> {
        self.inner().verify_pin(pin)
    }

    /// Changes the PIN after verifying the old one: new salt, new key, body re-encrypted.
    pub fn change_pin(&mut self, old_pin: &str, new_pin: &str) -> Result<(), StoreError> {
        check_pin_policy(new_pin)?;
        let mut inner = self.inner();
        inner.verify_pin(old_pin)?;
        let mut header = inner.header.clone();
        header.salt = random(&inner.path)?;
        header.nonce = random(&inner.path)?;
        let key =
            derive_key(new_pin, &header.salt, &header.kdf).map_err(|r| corrupt(&inner.path, r))?;
        let ciphertext = format::seal(&key, &header, &inner.unlocked()?.body)
            .map_err(|r| corrupt(&inner.path, r))?;
        inner.write(&header, &ciphertext)?;
        inner.header = header;
        inner.ciphertext = ciphertext;
        if let Some(u) = inner.unlocked.as_mut() {
            u.key = key;
        }
        Ok(())
    }

    /// Wrong PINs still allowed before the store locks; 0 once locked.
    pub fn remaining_attempts(&self) -> u32 {
        self.inner().remaining()
    }

    /// Wrong PINs in a row allowed by this store.
    pub fn max_pin_attempts(&self) -> u32 {
        self.inner().header.max_attempts
    }

    /// Whether the store has locked since it was opened.
    pub fn is_locked(&self) -> bool {
        self.inner().unlocked.is_none()
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.inner().path.clone()
    }

    #[cfg(test)]
    fn set_fail_before_rename(&mut self, fail: bool) {
        self.inner().fail_before_rename = fail;
    }
}

fn lock(shared: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Inner is only replaced field by field after a successful write, so it is consistent
    // even if a holder panicked.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PinVerifier {
    /// See [`FileStore::verify_pin`].
    pub fn verify(&self, pin: &str) -> Result<(), StoreError> {
        lock(&self.shared).verify_pin(pin)
    }

    /// See [`FileStore::remaining_attempts`].
    pub fn remaining_attempts(&self) -> u32 {
        lock(&self.shared).remaining()
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        f.debug_struct("FileStore")
            .field("path", &inner.path)
            .field("locked", &inner.unlocked.is_none())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinVerifier").finish_non_exhaustive()
    }
}

/// Linking: what the phone needs to be reached again by laptops it linked to.
impl FileStore {
    /// The phone's linking state, if it has linked before.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when the store has locked.
    pub fn linking(&self) -> Result<Option<LinkingState>, StoreError> {
        Ok(self.inner().unlocked()?.body.linking.clone())
    }

    /// The phone's linking state, made (fresh random keys, no laptops) and written the first
    /// time it is asked for.
    ///
    /// # Errors
    /// [`StoreError::Locked`], or the write failing.
    pub fn ensure_linking(&mut self) -> Result<LinkingState, StoreError> {
        let mut inner = self.inner();
        if let Some(l) = &inner.unlocked()?.body.linking {
            return Ok(l.clone());
        }
        let path = inner.path.clone();
        let state = LinkingState {
            root_secret: Zeroizing::new(random(&path)?),
            identity_key: Zeroizing::new(random_scalar(&path)?),
            wake_key: Zeroizing::new(random_scalar(&path)?),
            laptops: Vec::new(),
        };
        let made = state.clone();
        inner.mutate(|b| {
            b.linking = Some(made);
            Ok(())
        })?;
        Ok(state)
    }

    /// Records a laptop given a link (after the linking data went out).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] before [`ensure_linking`](Self::ensure_linking);
    /// [`StoreError::Duplicate`] for a link ID already given.
    pub fn add_linked_laptop(&mut self, laptop: LinkedLaptop) -> Result<(), StoreError> {
        self.inner().mutate(|b| {
            let l = b.linking.as_mut().ok_or(StoreError::NotFound)?;
            if l.laptops.iter().any(|x| x.link_id == laptop.link_id) {
                return Err(StoreError::Duplicate);
            }
            l.laptops.push(laptop);
            Ok(())
        })
    }

    /// Changes what a linked laptop is called.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a link ID not given (or revoked).
    pub fn rename_linked_laptop(&mut self, link_id: &[u8], label: &str) -> Result<(), StoreError> {
        self.inner().mutate(|b| {
            let laptop = linked_laptop(b, link_id)?;
            laptop.label = label.to_owned();
            Ok(())
        })
    }

    /// Notes that a linked laptop reached the phone at `now` (Unix seconds).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a link ID not given (or revoked).
    pub fn touch_linked_laptop(&mut self, link_id: &[u8], now: u64) -> Result<(), StoreError> {
        self.inner().mutate(|b| {
            linked_laptop(b, link_id)?.last_used = Some(now);
            Ok(())
        })
    }

    /// Revokes a laptop's link: its next contact is refused.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a link ID not given (or already revoked).
    pub fn revoke_linked_laptop(&mut self, link_id: &[u8]) -> Result<(), StoreError> {
        self.inner().mutate(|b| {
            let l = b.linking.as_mut().ok_or(StoreError::NotFound)?;
            let before = l.laptops.len();
            l.laptops.retain(|x| x.link_id != link_id);
            if l.laptops.len() == before {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }
}

fn linked_laptop<'a>(b: &'a mut Body, link_id: &[u8]) -> Result<&'a mut LinkedLaptop, StoreError> {
    b.linking
        .as_mut()
        .and_then(|l| l.laptops.iter_mut().find(|x| x.link_id == link_id))
        .ok_or(StoreError::NotFound)
}

/// A random P-256 private key, as its 32-byte scalar.
fn random_scalar(path: &Path) -> Result<[u8; 32], StoreError> {
    // Rejection sampling: a scalar must be in 1..n; almost every 32 random bytes are.
    for _ in 0..64 {
        let candidate: [u8; 32] = random(path)?;
        if p256::SecretKey::from_slice(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(corrupt(
        path,
        "the random number generator gave no valid P-256 key",
    ))
}

impl CredentialStore for FileStore {
    fn credentials_for_rp(&self, rp_id: &str) -> Result<Vec<StoredCredential>, StoreError> {
        let inner = self.inner();
        Ok(select_for_rp(&inner.unlocked()?.body.credentials, rp_id))
    }

    fn credential(&self, credential_id: &[u8]) -> Result<Option<StoredCredential>, StoreError> {
        let inner = self.inner();
        Ok(inner
            .unlocked()?
            .body
            .credentials
            .iter()
            .find(|c| c.credential_id == credential_id)
            .cloned())
    }

    fn insert(&mut self, credential: StoredCredential) -> Result<(), StoreError> {
        self.inner()
            .mutate(|b| insert_credential(&mut b.credentials, credential))
    }

    fn record_use(
        &mut self,
        credential_id: &[u8],
        sign_count: u32,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner();
        let i = inner.index(credential_id)?;
        inner.mutate(|b| {
            b.credentials[i].sign_count = sign_count;
            b.credentials[i].last_used = Some(now);
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<StoredCredential>, StoreError> {
        Ok(self.inner().unlocked()?.body.credentials.clone())
    }

    fn rename(&mut self, credential_id: &[u8], display_name: &str) -> Result<(), StoreError> {
        let mut inner = self.inner();
        let i = inner.index(credential_id)?;
        inner.mutate(|b| {
            b.credentials[i].user_display_name = Some(display_name.to_owned());
            Ok(())
        })
    }

    fn delete(&mut self, credential_id: &[u8]) -> Result<(), StoreError> {
        let mut inner = self.inner();
        let i = inner.index(credential_id)?;
        inner.mutate(|b| {
            b.credentials.remove(i);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("hybridge-store-unit-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn credential(id: u8, rp: &str) -> StoredCredential {
        StoredCredential {
            credential_id: vec![id; 16],
            rp_id: rp.into(),
            rp_name: None,
            user_handle: vec![id],
            user_name: Some(format!("user{id}")),
            user_display_name: None,
            private_key: [id; 32],
            discoverable: true,
            sign_count: 0,
            cred_random_uv: [0; 32],
            cred_random_no_uv: [0; 32],
            created: u64::from(id),
            last_used: None,
        }
    }

    fn ids(store: &FileStore) -> Vec<Vec<u8>> {
        store
            .list()
            .unwrap()
            .iter()
            .map(|c| c.credential_id.clone())
            .collect()
    }

    #[test]
    fn the_linking_state_is_made_once_kept_encrypted_and_laptops_can_be_revoked() {
        let dir = TempDir::new("linking");
        let path = dir.0.join("store");
        let mut store = FileStore::create(&path, "1234", KdfParams::insecure_for_tests()).unwrap();
        assert!(store.linking().unwrap().is_none());
        assert!(matches!(
            store.add_linked_laptop(laptop(1)),
            Err(StoreError::NotFound)
        ));
        let made = store.ensure_linking().unwrap();
        assert!(p256::SecretKey::from_slice(&*made.identity_key).is_ok());
        assert!(p256::SecretKey::from_slice(&*made.wake_key).is_ok());
        assert_ne!(*made.identity_key, *made.wake_key);
        store.add_linked_laptop(laptop(1)).unwrap();
        store.add_linked_laptop(laptop(2)).unwrap();
        assert!(matches!(
            store.add_linked_laptop(laptop(1)),
            Err(StoreError::Duplicate)
        ));
        store.rename_linked_laptop(&[2; 8], "home").unwrap();
        store.touch_linked_laptop(&[1; 8], 1_700_000_500).unwrap();
        store.revoke_linked_laptop(&[1; 8]).unwrap();
        assert!(matches!(
            store.revoke_linked_laptop(&[1; 8]),
            Err(StoreError::NotFound)
        ));
        drop(store);
        // Nothing of it is readable in the file.
        let file = fs::read(&path).unwrap();
        assert!(!file.windows(32).any(|w| w == *made.root_secret));
        assert!(!file.windows(4).any(|w| w == b"home"));
        // Reopened: the same identity (made once), laptop 2 only, renamed.
        let mut store = FileStore::open(&path, "1234").unwrap();
        let again = store.ensure_linking().unwrap();
        assert_eq!(*again.identity_key, *made.identity_key);
        assert_eq!(*again.root_secret, *made.root_secret);
        assert_eq!(again.laptops.len(), 1);
        assert_eq!(again.laptops[0].link_id, [2; 8]);
        assert_eq!(again.laptops[0].label, "home");
        assert!(!format!("{again:?}").contains(&format!("{:?}", *made.root_secret)));
    }

    fn laptop(n: u8) -> LinkedLaptop {
        LinkedLaptop {
            link_id: [n; 8],
            label: String::new(),
            created: 1_700_000_000,
            last_used: None,
        }
    }

    #[test]
    fn crash_before_rename_keeps_old_contents() {
        let dir = TempDir::new("crash");
        let path = dir.0.join("store");
        let mut store = FileStore::create(&path, "1234", KdfParams::insecure_for_tests()).unwrap();
        store.insert(credential(1, "a.example")).unwrap();
        let before = fs::read(&path).unwrap();

        store.set_fail_before_rename(true);
        assert!(matches!(
            store.insert(credential(2, "b.example")),
            Err(StoreError::Io { .. })
        ));
        assert!(matches!(store.delete(&[1; 16]), Err(StoreError::Io { .. })));
        // The failed writes changed neither the file nor the open store.
        assert_eq!(fs::read(&path).unwrap(), before);
        assert!(temp_path(&path).exists(), "the 'crash' left its temp file");
        assert_eq!(ids(&store), vec![vec![1; 16]]);
        // A wrong PIN whose counter cannot be written is not tried at all.
        assert!(matches!(
            store.verify_pin("9999"),
            Err(StoreError::Io { .. })
        ));
        assert_eq!(store.remaining_attempts(), 8);
        drop(store);

        // After the "crash", the store opens with the old contents and writes again.
        let mut store = FileStore::open(&path, "1234").unwrap();
        assert_eq!(ids(&store), vec![vec![1; 16]]);
        store.insert(credential(2, "b.example")).unwrap();
        assert!(!temp_path(&path).exists());
        drop(store);
        let store = FileStore::open(&path, "1234").unwrap();
        assert_eq!(ids(&store), vec![vec![1; 16], vec![2; 16]]);
    }

    #[test]
    fn verifier_shares_the_counter_and_lockout() {
        let dir = TempDir::new("verifier");
        let path = dir.0.join("store");
        let options = CreateOptions {
            kdf: KdfParams::insecure_for_tests(),
            max_pin_attempts: 3,
        };
        let mut store = FileStore::create_with(&path, "1234", options).unwrap();
        store.insert(credential(1, "a.example")).unwrap();
        let verifier = store.pin_verifier();
        assert!(matches!(
            verifier.verify("0000"),
            Err(StoreError::WrongPin { remaining: 2 })
        ));
        assert!(matches!(
            store.verify_pin("0001"),
            Err(StoreError::WrongPin { remaining: 1 })
        ));
        assert_eq!(verifier.remaining_attempts(), 1);
        verifier.verify("1234").unwrap();
        assert_eq!(store.remaining_attempts(), 3);
        assert!(matches!(
            verifier.verify("123"),
            Err(StoreError::PinPolicy { .. })
        ));
        assert_eq!(store.remaining_attempts(), 3);
        for _ in 0..2 {
            assert!(matches!(
                verifier.verify("0000"),
                Err(StoreError::WrongPin { .. })
            ));
        }
        assert!(matches!(verifier.verify("0000"), Err(StoreError::Locked)));
        // Locked: the key and credentials are gone, even the right PIN no longer helps.
        assert!(store.is_locked());
        assert!(matches!(store.list(), Err(StoreError::Locked)));
        assert!(matches!(
            store.insert(credential(2, "b.example")),
            Err(StoreError::Locked)
        ));
        assert!(matches!(store.verify_pin("1234"), Err(StoreError::Locked)));
        assert!(matches!(
            FileStore::open(&path, "1234"),
            Err(StoreError::Locked)
        ));
    }
}

//! The laptop's linked phones: the file they are kept in, and `hybridge phones
//! list|rename|forget`.
//!
//! A phone that read the laptop's QR code may send linking data; the laptop keeps it here so
//! that `register --phone NAME` / `sign-in --phone NAME` reach the phone again without a QR
//! code. The file is JSON (`$XDG_DATA_HOME/hybridge/phones.json` unless `--phones FILE`):
//!
//! ```json
//! { "version": 1, "key_check": "<hex>", "phones": [ {
//!     "name": "Pixel 7", "public_key": "04…", "contact_id": "…", "link_id": "…",
//!     "domain_id": 0, "added": 1764779000, "last_used": null,
//!     "secret_nonce": "<12 bytes hex>", "secret_sealed": "<48 bytes hex>" } ] }
//! ```
//!
//! The link secret is never in the file in clear: it is sealed with AES-256-GCM (a random
//! nonce per entry, the entry's public key as associated data, so an entry's secret cannot be
//! moved to another phone's entry) under a 32-byte key kept apart from it. `key_check` is a
//! tag made with that key over nothing, to tell a mismatched key at once.
//!
//! Where the key lives (`key_store`):
//! * `"keyring"`: in the desktop keyring (the freedesktop Secret Service: GNOME Keyring,
//!   KWallet, KeePassXC), as an item with the attributes `application=hybridge`,
//!   `kind=linked-phones-key`, `check=<key_check hex>`. Chosen for a new key whenever a
//!   graphical desktop session's keyring is reachable: the key is then protected by the login password,
//!   not only by file permissions, and the file can be moved or backed up on its own.
//! * absent (`file`): in a file next to the data (`phones.key` for `phones.json`: the data
//!   file's name with the extension `.key`), mode 0600. Used without a desktop session (a
//!   server, a terminal over SSH), or when `HYBRIDGE_PHONES_KEY=file` asks for it. This keeps
//!   the secret out of the data file (backups, sync folders, files shared by accident that
//!   take the data file alone) but not from someone who can read both files.
//!
//! The files are mode 0600, their directory 0700; the data file is replaced atomically
//! (temporary file, fsync, rename). Two commands that change the file at the same moment are
//! not serialised: the later write wins.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use clap::{Args, Subcommand};
use hybridge_proto::keys;
use hybridge_proto::linking::LinkingInfo;
use hybridge_proto::secret::LinkSecret;
use hybridge_proto::session::LinkedPhone;
use rand_core::{OsRng, RngCore};
use serde_json::{Value as Json, json};
use zeroize::Zeroizing;

use crate::error::CliError;
use crate::keyring::{Keyring, KeyringError};

/// The largest phones file read (a few hundred phones fit in far less).
const MAX_FILE: u64 = 1 << 20;
/// The format written.
const VERSION: u64 = 1;
/// Associated data of the key check tag.
const KEY_CHECK_AAD: &[u8] = b"hybridge phones key check v1";
/// The longest phone name kept (characters).
const MAX_NAME: usize = 64;

/// `--phones FILE`: shared by `phones`, `register`, `sign-in` and `key`.
#[derive(Debug, Clone, Args)]
pub struct PhonesFileArg {
    /// The laptop's linked phones file. Default: $XDG_DATA_HOME/hybridge/phones.json
    /// (~/.local/share/hybridge/phones.json). The key that seals its link secrets is kept in
    /// the desktop keyring (Secret Service) when one is reachable, else next to the file, in
    /// the same name with the extension .key (HYBRIDGE_PHONES_KEY=file always uses the file).
    #[arg(long, global = true, env = "HYBRIDGE_PHONES", value_name = "FILE")]
    pub phones: Option<PathBuf>,
}

impl PhonesFileArg {
    /// The file `--phones` names, or the default one.
    pub fn path(&self) -> Result<PathBuf, CliError> {
        if let Some(p) = &self.phones {
            return Ok(p.clone());
        }
        crate::common::data_dir()
            .map(|d| d.join("phones.json"))
            .ok_or_else(|| {
                CliError::Invalid(
                    "no --phones given and no home directory to keep the default one in \
                     (set HOME or XDG_DATA_HOME, or give --phones FILE)"
                        .into(),
                )
            })
    }
}

/// One linked phone as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name the user knows it by (unique in the file).
    pub name: String,
    /// The phone's identity key, uncompressed SEC1 (65 bytes): identifies the phone.
    pub public_key: Vec<u8>,
    /// Contact ID for `/cable/contact`.
    pub contact_id: Vec<u8>,
    /// Pairing ID for the client payload.
    pub link_id: Vec<u8>,
    /// Tunnel-server domain of the session the link came in.
    pub domain_id: u16,
    /// When it was linked (Unix seconds).
    pub added: u64,
    /// When it was last used (Unix seconds).
    pub last_used: Option<u64>,
    nonce: [u8; 12],
    sealed: Vec<u8>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("public_key", &hex::encode(&self.public_key))
            .field("domain_id", &self.domain_id)
            .finish_non_exhaustive()
    }
}

/// The phones file's contents, and where it lives.
#[derive(Debug)]
pub struct PhonesFile {
    path: PathBuf,
    key_check: Option<Vec<u8>>,
    /// Where the key is: the desktop keyring, or the key file.
    in_keyring: bool,
    /// How to reach the keyring for a new key or a key kept there.
    keyring: KeyringAccess,
    /// The phones, in the order they were linked.
    pub entries: Vec<Entry>,
}

/// The key file that goes with the data file at `path`.
pub fn key_path(path: &Path) -> PathBuf {
    if path.extension().is_some_and(|e| e == "key") {
        let mut s = path.as_os_str().to_owned();
        s.push(".key");
        PathBuf::from(s)
    } else {
        path.with_extension("key")
    }
}

fn io_err(what: &'static str, path: &Path, source: io::Error) -> CliError {
    CliError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Reads at most `limit` bytes of a regular file; `None` if it does not exist.
fn read_bounded(what: &'static str, path: &Path, limit: u64) -> Result<Option<Vec<u8>>, CliError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(what, path, e)),
    };
    let meta = file.metadata().map_err(|e| io_err(what, path, e))?;
    if !meta.is_file() {
        return Err(io_err(
            what,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(what, path, e))?;
    if bytes.len() as u64 > limit {
        return Err(CliError::Invalid(format!(
            "the linked phones file {} is larger than {} KiB: it is not one hybridge wrote \
             (move it away; phones are linked again with a QR code)",
            path.display(),
            limit >> 10
        )));
    }
    Ok(Some(bytes))
}

/// Creates `dir` (and its parents) readable by its owner only, if it does not exist.
fn create_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err("cannot create the linked phones directory", dir, e))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` (mode 0600) so that a crash leaves the old or the new file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    const WHAT: &str = "cannot write the linked phones file";
    let dir = parent(path);
    create_dir(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = dir.join(name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(WHAT, &tmp, e)),
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(WHAT, &tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(WHAT, path, e));
    }
    // The rename made durable; a directory that cannot be synced is not a failure (the new
    // file is in place either way).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How the phones file reaches the desktop keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringAccess {
    /// This session's (`DBUS_SESSION_BUS_ADDRESS`), unless `HYBRIDGE_PHONES_KEY=file`.
    #[cfg_attr(test, allow(dead_code))]
    Session,
    /// The bus at this address (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    At(String),
    /// None: new keys go to the key file.
    Off,
}

impl KeyringAccess {
    /// Tests never reach the desktop of whoever runs them: they name their keyring.
    #[cfg(test)]
    fn from_env() -> Self {
        KeyringAccess::Off
    }

    #[cfg(not(test))]
    fn from_env() -> Self {
        match std::env::var("HYBRIDGE_PHONES_KEY").as_deref() {
            Ok("file") => KeyringAccess::Off,
            _ => KeyringAccess::Session,
        }
    }

    /// The keyring to make a new key in: this session's only in a graphical session
    /// (`WAYLAND_DISPLAY` or `DISPLAY`), where its unlock dialog can be seen and answered; a
    /// terminal over SSH reaches the session bus too, but nobody would see the dialog.
    fn open_for_new_key(&self) -> Result<Keyring, KeyringError> {
        if *self == KeyringAccess::Session {
            let set = |v: &str| std::env::var_os(v).is_some_and(|x| !x.is_empty());
            if !set("WAYLAND_DISPLAY") && !set("DISPLAY") {
                return Err(KeyringError::Unavailable("no graphical session".into()));
            }
        }
        self.open()
    }

    fn open(&self) -> Result<Keyring, KeyringError> {
        match self {
            KeyringAccess::Session => Keyring::session(),
            KeyringAccess::At(address) => Keyring::at(address),
            KeyringAccess::Off => Err(KeyringError::Unavailable(
                "HYBRIDGE_PHONES_KEY=file asks for the key file".into(),
            )),
        }
    }
}

/// The keyring item attributes of the key whose check tag is `check`.
fn keyring_attributes(check: &str) -> [(&'static str, &str); 3] {
    [
        ("application", "hybridge"),
        ("kind", "linked-phones-key"),
        ("check", check),
    ]
}

/// The 32-byte key that seals the link secrets.
struct Key(Zeroizing<[u8; 32]>);

impl Key {
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.0).into())
    }

    /// A tag over nothing, to recognise this key.
    fn check(&self) -> Vec<u8> {
        self.cipher()
            .encrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: &[],
                    aad: KEY_CHECK_AAD,
                },
            )
            .unwrap_or_default()
    }

    /// A fresh random key.
    fn random() -> Result<Self, CliError> {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(&mut *key)
            .map_err(|e| CliError::Invalid(format!("cannot make the linked phones key: {e}")))?;
        Ok(Self(key))
    }

    /// The key with this check tag from the keyring; `None` if it has none.
    fn from_keyring(keyring: &Keyring, check: &[u8]) -> Result<Option<Self>, KeyringError> {
        let check = hex::encode(check);
        let Some(bytes) = keyring.find(&keyring_attributes(&check))? else {
            return Ok(None);
        };
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            KeyringError::Failed(format!(
                "its linked phones key (check {check}) is not 32 bytes"
            ))
        })?;
        Ok(Some(Self(Zeroizing::new(key))))
    }

    /// Keeps the key in the keyring, found again by its check tag.
    fn to_keyring(&self, keyring: &Keyring) -> Result<(), KeyringError> {
        let check = hex::encode(self.check());
        keyring.store(
            "hybridge: key of the linked phones file",
            &keyring_attributes(&check),
            &*self.0,
        )
    }

    /// Reads the key at `path`; `None` if there is none.
    fn load(path: &Path) -> Result<Option<Self>, CliError> {
        let Some(bytes) = read_bounded("cannot read the linked phones key", path, 64)? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            CliError::Invalid(format!(
                "the linked phones key {} is damaged (it must be 32 bytes): restore it from a \
                 backup, or delete it together with its phones file and link the phones again",
                path.display()
            ))
        })?;
        Ok(Some(Self(Zeroizing::new(key))))
    }

    /// A new random key written to `path` (mode 0600); the one there if another process
    /// made it first.
    fn create(path: &Path) -> Result<Self, CliError> {
        use std::os::unix::fs::OpenOptionsExt;
        const WHAT: &str = "cannot create the linked phones key";
        create_dir(parent(path))?;
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(&mut *key)
            .map_err(|e| io_err(WHAT, path, io::Error::other(e.to_string())))?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match file {
            Ok(mut f) => {
                if let Err(e) = f.write_all(&*key).and_then(|()| f.sync_all()) {
                    let _ = fs::remove_file(path);
                    return Err(io_err(WHAT, path, e));
                }
                Ok(Self(key))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Self::load(path)?.ok_or_else(|| io_err(WHAT, path, io::Error::other("it vanished")))
            }
            Err(e) => Err(io_err(WHAT, path, e)),
        }
    }
}

/// A clean display name: no control characters, trimmed, at most [`MAX_NAME`] characters.
fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "phone".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// Checks a name the user gives.
fn check_name(name: &str) -> Result<(), CliError> {
    if name.trim().is_empty()
        || name.trim() != name
        || name.chars().count() > MAX_NAME
        || name.chars().any(char::is_control)
    {
        return Err(CliError::Invalid(format!(
            "a phone name must be 1 to {MAX_NAME} characters, without control characters or \
             spaces at either end"
        )));
    }
    Ok(())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PhonesFile {
    /// Reads the file at `path`; an empty list if it does not exist.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        let mut file = Self {
            path: path.to_path_buf(),
            key_check: None,
            in_keyring: false,
            keyring: KeyringAccess::from_env(),
            entries: Vec::new(),
        };
        let Some(bytes) = read_bounded("cannot read the linked phones file", path, MAX_FILE)?
        else {
            return Ok(file);
        };
        let damaged = |why: &str| {
            CliError::Invalid(format!(
                "the linked phones file {} is damaged ({why}): restore it from a backup, or \
                 move it away and link the phones again with a QR code",
                path.display()
            ))
        };
        let doc: Json = serde_json::from_slice(&bytes).map_err(|e| damaged(&e.to_string()))?;
        if doc.get("version").and_then(Json::as_u64) != Some(VERSION) {
            return Err(damaged("unknown version; written by another hybridge?"));
        }
        file.key_check = match doc.get("key_check") {
            None | Some(Json::Null) => None,
            Some(v) => Some(hex_field(v).ok_or_else(|| damaged("key_check is not hex"))?),
        };
        file.in_keyring = match doc.get("key_store") {
            None | Some(Json::Null) => false,
            Some(Json::String(s)) if s == "keyring" => true,
            Some(Json::String(s)) if s == "file" => false,
            Some(_) => return Err(damaged("key_store is neither \"keyring\" nor \"file\"")),
        };
        if file.in_keyring && file.key_check.is_none() {
            return Err(damaged(
                "a key in the keyring, but no key_check to find it by",
            ));
        }
        let phones = doc
            .get("phones")
            .and_then(Json::as_array)
            .ok_or_else(|| damaged("no list of phones"))?;
        for (i, p) in phones.iter().enumerate() {
            let entry =
                Entry::from_json(p).map_err(|what| damaged(&format!("phone {i}: {what}")))?;
            file.entries.push(entry);
        }
        Ok(file)
    }

    /// Writes the file back, atomically.
    pub fn save(&self) -> Result<(), CliError> {
        let doc = json!({
            "version": VERSION,
            "key_check": self.key_check.as_deref().map(hex::encode),
            "key_store": if self.in_keyring { "keyring" } else { "file" },
            "phones": self.entries.iter().map(Entry::to_json).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_vec_pretty(&doc)
            .map_err(|e| CliError::Invalid(format!("cannot encode the phones file: {e}")))?;
        text.push(b'\n');
        write_atomic(&self.path, &text)
    }

    /// Reaches the keyring some other way than this session's (tests).
    #[cfg(test)]
    pub fn with_keyring(mut self, access: KeyringAccess) -> Self {
        self.keyring = access;
        self
    }

    /// The key, created on first use (in the keyring when one is reachable); checked against
    /// the file's `key_check`.
    fn key(&mut self, create: bool) -> Result<Key, CliError> {
        if self.in_keyring && !self.entries.is_empty() {
            return self.keyring_key();
        }
        let kpath = key_path(&self.path);
        if self.entries.is_empty() && !kpath.exists() {
            // Nothing is sealed yet: a new key, in the keyring if there is one.
            if !create {
                return Err(CliError::Invalid(format!(
                    "no linked phones key at {}",
                    kpath.display()
                )));
            }
            // The key a keyring already keeps for this file (its phones were all
            // forgotten), rather than one more item in it.
            if self.in_keyring && self.key_check.is_some() {
                if let Ok(key) = self.keyring_key() {
                    return Ok(key);
                }
            }
            if let Ok(keyring) = self.keyring.open_for_new_key() {
                let key = Key::random()?;
                match key.to_keyring(&keyring) {
                    Ok(()) => {
                        self.in_keyring = true;
                        self.key_check = Some(key.check());
                        return Ok(key);
                    }
                    Err(e) => eprintln!(
                        "hybridge: the desktop keyring cannot keep the linked phones key ({e}); \
                         it goes to {}",
                        kpath.display()
                    ),
                }
            }
        }
        self.in_keyring = false;
        let key = match Key::load(&kpath)? {
            Some(k) => k,
            // With no phones left, nothing needs the old key: a new one may be made.
            None if self.key_check.is_some() && !self.entries.is_empty() => {
                return Err(CliError::Invalid(format!(
                    "the linked phones key {} is missing, and the link secrets in {} cannot be \
                     read without it: restore it from where the phones file came from, or \
                     forget those phones (`hybridge phones forget NAME`) and link them again",
                    kpath.display(),
                    self.path.display()
                )));
            }
            None if create => Key::create(&kpath)?,
            None => {
                return Err(CliError::Invalid(format!(
                    "no linked phones key at {}",
                    kpath.display()
                )));
            }
        };
        match &self.key_check {
            Some(check) if *check != key.check() && !self.entries.is_empty() => {
                Err(CliError::Invalid(format!(
                    "the linked phones key {} does not belong to {} (copied from another machine?): \
                 restore the matching key, or forget the phones (`hybridge phones forget NAME`) \
                 and link them again",
                    kpath.display(),
                    self.path.display()
                )))
            }
            _ => {
                self.key_check = Some(key.check());
                Ok(key)
            }
        }
    }

    /// The key kept in the keyring for the phones in this file.
    fn keyring_key(&self) -> Result<Key, CliError> {
        let check = self.key_check.as_deref().unwrap_or_default();
        let unreachable = |e: KeyringError| {
            CliError::Invalid(format!(
                "the key of the linked phones in {} is in the desktop keyring, which cannot be \
                 used here ({e}): run this in your desktop session, with the keyring unlocked",
                self.path.display()
            ))
        };
        let keyring = self.keyring.open().map_err(unreachable)?;
        match Key::from_keyring(&keyring, check).map_err(unreachable)? {
            Some(key) if key.check() == check => Ok(key),
            _ => Err(CliError::Invalid(format!(
                "the desktop keyring has no key for the linked phones in {} (check {}; deleted, \
                 or another user's keyring?): forget those phones (`hybridge phones forget \
                 NAME`) and link them again",
                self.path.display(),
                hex::encode(check)
            ))),
        }
    }

    /// Whether a new link can be stored: the file read, and its key is there and matches (or
    /// there is none yet, and none is needed: it is made with the first link). Writes nothing.
    pub fn check_writable(&mut self) -> Result<(), CliError> {
        if self.entries.is_empty() && !key_path(&self.path).exists() {
            return Ok(());
        }
        self.key(false).map(|_| ())
    }

    /// The entry called `name`, or an error that lists the known names.
    pub fn find(&self, name: &str) -> Result<usize, CliError> {
        if let Some(i) = self.entries.iter().position(|e| e.name == name) {
            return Ok(i);
        }
        let known: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{:?}", e.name))
            .collect();
        Err(CliError::Invalid(if known.is_empty() {
            format!(
                "no linked phone named {name:?}: no phones are linked in {} (register or sign \
                 in with a QR code first)",
                self.path.display()
            )
        } else {
            format!(
                "no linked phone named {name:?}; linked phones: {}",
                known.join(", ")
            )
        }))
    }

    /// Stores verified linking data from a session on `domain_id`. A link from a phone
    /// already in the file (same public key) replaces its entry and keeps its name; a new
    /// phone whose name is taken gets " (2)", " (3)", …. Returns the name. (Not saved.)
    pub fn add(&mut self, linking: &LinkingInfo, domain_id: u16) -> Result<String, CliError> {
        let key = self.key(true)?;
        let public_key = keys::uncompressed(&linking.authenticator_public_key).to_vec();
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let sealed = key
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: linking.link_secret.expose(),
                    aad: &public_key,
                },
            )
            .map_err(|_| CliError::Invalid("cannot seal the link secret".into()))?;
        let now = now_unix();
        let existing = self.entries.iter().position(|e| e.public_key == public_key);
        let (name, added) = match existing {
            Some(i) => (self.entries[i].name.clone(), self.entries[i].added),
            None => (
                self.unique_name(&clean_name(&linking.authenticator_name)),
                now,
            ),
        };
        let entry = Entry {
            name: name.clone(),
            public_key,
            contact_id: linking.contact_id.clone(),
            link_id: linking.link_id.clone(),
            domain_id,
            added,
            last_used: Some(now),
            nonce,
            sealed,
        };
        match existing {
            Some(i) => self.entries[i] = entry,
            None => self.entries.push(entry),
        }
        Ok(name)
    }

    fn unique_name(&self, base: &str) -> String {
        let taken = |n: &str| self.entries.iter().any(|e| e.name == n);
        if !taken(base) {
            return base.to_owned();
        }
        (2..)
            .map(|i| format!("{base} ({i})"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| base.to_owned())
    }

    /// The stored link of the phone called `name`, its secret unsealed.
    pub fn linked(&mut self, name: &str) -> Result<LinkedPhone, CliError> {
        let i = self.find(name)?;
        let key = self.key(false)?;
        let e = &self.entries[i];
        let secret = key
            .cipher()
            .decrypt(
                &Nonce::from(e.nonce),
                Payload {
                    msg: &e.sealed,
                    aad: &e.public_key,
                },
            )
            .map(Zeroizing::new)
            .ok()
            .and_then(|s| LinkSecret::from_slice(&s))
            .ok_or_else(|| {
                CliError::Invalid(format!(
                    "the link of phone {name:?} in {} does not open with its key (the entry was \
                     altered): forget it (`hybridge phones forget {name:?}`) and link the phone \
                     again with a QR code",
                    self.path.display()
                ))
            })?;
        let public_key = keys::parse_public(&e.public_key)
            .map_err(|err| CliError::Invalid(format!("phone {name:?}: {err}")))?;
        Ok(LinkedPhone {
            contact_id: e.contact_id.clone(),
            link_id: e.link_id.clone(),
            link_secret: secret,
            public_key,
            name: e.name.clone(),
            domain_id: e.domain_id,
        })
    }

    /// Marks the phone called `name` used now (not saved).
    pub fn touch(&mut self, name: &str) -> Result<(), CliError> {
        let i = self.find(name)?;
        self.entries[i].last_used = Some(now_unix());
        Ok(())
    }

    /// Renames a phone (not saved).
    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), CliError> {
        check_name(new)?;
        let i = self.find(old)?;
        if old != new && self.entries.iter().any(|e| e.name == new) {
            return Err(CliError::Invalid(format!(
                "a linked phone is already named {new:?}: choose another name"
            )));
        }
        self.entries[i].name = new.to_owned();
        Ok(())
    }

    /// Removes a phone (not saved).
    pub fn forget(&mut self, name: &str) -> Result<Entry, CliError> {
        let i = self.find(name)?;
        Ok(self.entries.remove(i))
    }
}

fn hex_field(v: &Json) -> Option<Vec<u8>> {
    v.as_str().and_then(|s| hex::decode(s).ok())
}

impl Entry {
    fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "public_key": hex::encode(&self.public_key),
            "contact_id": hex::encode(&self.contact_id),
            "link_id": hex::encode(&self.link_id),
            "domain_id": self.domain_id,
            "added": self.added,
            "last_used": self.last_used,
            "secret_nonce": hex::encode(self.nonce),
            "secret_sealed": hex::encode(&self.sealed),
        })
    }

    fn from_json(v: &Json) -> Result<Self, String> {
        let bytes = |k: &str| hex_field(&v[k]).ok_or_else(|| format!("{k} is missing or not hex"));
        let name = v["name"]
            .as_str()
            .filter(|n| !n.is_empty() && n.chars().count() <= MAX_NAME)
            .ok_or("the name is missing or too long")?
            .to_owned();
        let public_key = bytes("public_key")?;
        keys::parse_public(&public_key).map_err(|_| "public_key is not a P-256 key")?;
        let contact_id = bytes("contact_id")?;
        let link_id = bytes("link_id")?;
        let domain_id = v["domain_id"]
            .as_u64()
            .and_then(|d| u16::try_from(d).ok())
            .ok_or("domain_id is missing or out of range")?;
        let added = v["added"].as_u64().ok_or("added is missing")?;
        let last_used = match &v["last_used"] {
            Json::Null => None,
            t => Some(t.as_u64().ok_or("last_used is not a time")?),
        };
        let nonce: [u8; 12] = bytes("secret_nonce")?
            .try_into()
            .map_err(|_| "secret_nonce must be 12 bytes")?;
        let sealed = bytes("secret_sealed")?;
        if sealed.len() != 32 + 16 {
            return Err("secret_sealed must be 48 bytes".into());
        }
        Ok(Self {
            name,
            public_key,
            contact_id,
            link_id,
            domain_id,
            added,
            last_used,
            nonce,
            sealed,
        })
    }

    /// What `list --json` shows: never the secret.
    fn describe(&self) -> Json {
        use crate::passkeys::rfc3339;
        json!({
            "name": self.name,
            "public_key": hex::encode(&self.public_key),
            "domain_id": self.domain_id,
            "added": rfc3339(self.added),
            "last_used": self.last_used.map(rfc3339),
        })
    }
}

/// `hybridge phones …`
#[derive(Debug, Args)]
pub struct PhonesArgs {
    #[command(subcommand)]
    what: Phones,
    #[command(flatten)]
    file: PhonesFileArg,
}

const FORGET_HELP: &str = "Example:\n  hybridge phones forget 'Pixel 7'\n\nThe phone \
    keeps its side of the link until it is revoked there.\nExit codes: 0 forgotten, 1 no \
    phone by that name (the known ones are listed) or an unreadable phones file.";

#[derive(Debug, Subcommand)]
enum Phones {
    /// List the linked phones, one a line: name, last used, added, domain, key (tab-separated).
    #[command(
        after_help = "Examples:\n  hybridge phones list\n  hybridge phones list --json\n\n\
        An empty or missing phones file lists nothing. The link secrets are never shown.\n\
        Exit codes: 0 ok, 1 unreadable or damaged phones file."
    )]
    List {
        /// A JSON array for programs: name, public_key, domain_id, added, last_used.
        #[arg(long)]
        json: bool,
    },
    /// Give a linked phone another name.
    #[command(
        after_help = "Example:\n  hybridge phones rename 'Pixel 7' work-phone\n\nExit codes: 0 renamed, 1 no phone by that name (the known ones are listed),\nthe new name taken or invalid, or an unreadable phones file."
    )]
    Rename {
        /// The phone's current name.
        #[arg(allow_hyphen_values = true)]
        old: String,
        /// Its new name.
        #[arg(allow_hyphen_values = true)]
        new: String,
    },
    /// Forget a linked phone: the next ceremony with it needs a QR code again.
    #[command(after_help = FORGET_HELP)]
    Forget {
        /// The phone's name.
        #[arg(allow_hyphen_values = true)]
        name: String,
    },
}

/// Runs `phones`; `list --json` returns its JSON for stdout, the rest print themselves.
pub fn run(args: &PhonesArgs) -> Result<Option<Json>, CliError> {
    let path = args.file.path()?;
    let mut file = PhonesFile::load(&path)?;
    match &args.what {
        Phones::List { json: true } => Ok(Some(Json::Array(
            file.entries.iter().map(Entry::describe).collect(),
        ))),
        Phones::List { json: false } => {
            let mut out = io::stdout().lock();
            for e in &file.entries {
                let d = e.describe();
                let line = format!(
                    "{}\tlast used {}\tadded {}\tdomain {}\tkey {}…",
                    e.name,
                    d["last_used"].as_str().unwrap_or("never"),
                    d["added"].as_str().unwrap_or_default(),
                    e.domain_id,
                    &hex::encode(&e.public_key)[..16],
                );
                writeln!(out, "{line}").map_err(|e| io_err("cannot write", Path::new("-"), e))?;
            }
            Ok(None)
        }
        Phones::Rename { old, new } => {
            file.rename(old, new)?;
            file.save()?;
            eprintln!("renamed phone {old:?} to {new:?}");
            Ok(None)
        }
        Phones::Forget { name } => {
            file.forget(name)?;
            file.save()?;
            eprintln!("forgot phone {name:?}");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hybridge-phones-{tag}-{}-{}",
            std::process::id(),
            OsRng.next_u32()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Linking data from phone number `who`.
    fn linking(name: &str, who: u8, secret: u8) -> LinkingInfo {
        let identity = keys::from_seed(&[who; 32]).unwrap();
        LinkingInfo {
            contact_id: vec![0xc0, secret],
            link_id: vec![0x11; 8],
            link_secret: LinkSecret::new([secret; 32]),
            authenticator_public_key: identity.public_key(),
            authenticator_name: name.to_owned(),
            handshake_signature: [0; 32],
            from_play_services: false,
        }
    }

    #[test]
    fn a_new_key_goes_to_the_desktop_keyring_and_the_file_then_moves_alone() {
        let Some(ring) = crate::keyring::test_keyring::start() else {
            return;
        };
        let access = KeyringAccess::At(ring.address.clone());
        let dir = temp_dir("keyring");
        let path = dir.join("phones.json");
        let mut file = PhonesFile::load(&path)
            .unwrap()
            .with_keyring(access.clone());
        file.check_writable().unwrap();
        let info = linking("Pixel 7", 1, 0x5a);
        file.add(&info, 0).unwrap();
        file.save().unwrap();
        assert!(!key_path(&path).exists(), "no key file next to the data");
        let doc: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["key_store"], "keyring");
        let check = doc["key_check"].as_str().unwrap().to_owned();
        // libsecret's own client finds the key by the documented attributes.
        if let Some(key) = ring.secret_tool_lookup(&keyring_attributes(&check)) {
            assert_eq!(key.len(), 32);
        }

        // The data file alone, moved elsewhere, opens with the keyring.
        let moved = temp_dir("keyring-moved").join("phones.json");
        std::fs::copy(&path, &moved).unwrap();
        let mut again = PhonesFile::load(&moved)
            .unwrap()
            .with_keyring(access.clone());
        again.check_writable().unwrap();
        assert_eq!(
            again.linked("Pixel 7").unwrap().link_secret,
            info.link_secret
        );
        // A second phone is sealed with the same key, still in the keyring.
        again.add(&linking("Galaxy", 2, 0x77), 0).unwrap();
        again.save().unwrap();
        let mut third = PhonesFile::load(&moved).unwrap().with_keyring(access);
        assert_eq!(
            third.linked("Galaxy").unwrap().link_secret,
            LinkSecret::new([0x77; 32])
        );
        assert!(!key_path(&moved).exists());

        // Without the keyring (outside the desktop session): a clear error, never a new key.
        let mut away = PhonesFile::load(&moved).unwrap();
        let e = away.linked("Pixel 7").unwrap_err().to_string();
        assert!(e.contains("desktop keyring"), "{e}");
        assert!(away.check_writable().is_err());
        assert!(away.add(&linking("Other", 3, 1), 0).is_err());
        assert!(!key_path(&moved).exists());
        // Every phone forgotten, then a new link: the keyring's key is used again, not
        // joined by another item.
        let mut emptied = PhonesFile::load(&moved)
            .unwrap()
            .with_keyring(KeyringAccess::At(ring.address.clone()));
        emptied.forget("Pixel 7").unwrap();
        emptied.forget("Galaxy").unwrap();
        emptied.save().unwrap();
        let mut relinked = PhonesFile::load(&moved)
            .unwrap()
            .with_keyring(KeyringAccess::At(ring.address.clone()));
        relinked.add(&linking("Pixel 8", 4, 0x33), 0).unwrap();
        relinked.save().unwrap();
        let doc: Json = serde_json::from_slice(&std::fs::read(&moved).unwrap()).unwrap();
        assert_eq!(doc["key_check"].as_str(), Some(check.as_str()));
        // Another keyring (another user's) has no key for it.
        let Some(other) = crate::keyring::test_keyring::start() else {
            return;
        };
        let mut elsewhere = PhonesFile::load(&moved)
            .unwrap()
            .with_keyring(KeyringAccess::At(other.address.clone()));
        let e = elsewhere.linked("Pixel 8").unwrap_err().to_string();
        assert!(e.contains("has no key"), "{e}");
    }

    #[test]
    fn without_a_keyring_the_key_goes_to_its_file() {
        let dir = temp_dir("no-keyring");
        let path = dir.join("phones.json");
        let mut file = PhonesFile::load(&path)
            .unwrap()
            .with_keyring(KeyringAccess::At("unix:path=/nonexistent/bus".into()));
        file.add(&linking("Pixel 7", 1, 0x5a), 0).unwrap();
        file.save().unwrap();
        assert!(key_path(&path).exists());
        let doc: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["key_store"], "file");
        // A file from before key_store existed still opens with its key file.
        let mut old = doc.clone();
        old.as_object_mut().unwrap().remove("key_store");
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        let mut again = PhonesFile::load(&path).unwrap();
        assert_eq!(
            again.linked("Pixel 7").unwrap().link_secret,
            LinkSecret::new([0x5a; 32])
        );
        // An unknown key_store is a damaged file.
        let mut bad = doc;
        bad["key_store"] = "tpm".into();
        std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
        assert!(PhonesFile::load(&path).is_err());
    }

    #[test]
    fn a_link_round_trips_and_its_secret_is_not_in_the_data_file() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("sub").join("phones.json");
        let mut file = PhonesFile::load(&path).unwrap();
        assert!(file.entries.is_empty(), "a missing file is an empty list");
        let info = linking("Pixel 7", 1, 0x5a);
        assert_eq!(file.add(&info, 3).unwrap(), "Pixel 7");
        file.save().unwrap();

        let mut again = PhonesFile::load(&path).unwrap();
        let phone = again.linked("Pixel 7").unwrap();
        assert_eq!(phone.link_secret, info.link_secret);
        assert_eq!(phone.public_key, info.authenticator_public_key);
        assert_eq!(phone.contact_id, info.contact_id);
        assert_eq!(phone.link_id, info.link_id);
        assert_eq!(phone.domain_id, 3);

        let bytes = fs::read(&path).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!bytes.windows(32).any(|w| w == [0x5a; 32]));
        assert!(!text.contains(&hex::encode([0x5a; 32])));
        assert!(!format!("{again:?}").contains(&hex::encode([0x5a; 32])));

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&key_path(&path)), 0o600);
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(key_path(&path), dir.join("sub").join("phones.key"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_newer_link_from_the_same_phone_replaces_the_older_and_names_stay_unique() {
        let dir = temp_dir("replace");
        let path = dir.join("phones.json");
        let (a, b, c) = (1, 2, 3);
        let mut file = PhonesFile::load(&path).unwrap();
        assert_eq!(file.add(&linking("Pixel", a, 1), 0).unwrap(), "Pixel");
        assert_eq!(file.add(&linking("Pixel", b, 2), 0).unwrap(), "Pixel (2)");
        assert_eq!(file.add(&linking("Pixel", c, 3), 0).unwrap(), "Pixel (3)");
        file.rename("Pixel", "work").unwrap();
        // A new link from phone a: same entry, its name kept, the new secret.
        assert_eq!(file.add(&linking("Pixel", a, 9), 1).unwrap(), "work");
        assert_eq!(file.entries.len(), 3);
        file.save().unwrap();
        let mut file = PhonesFile::load(&path).unwrap();
        let phone = file.linked("work").unwrap();
        assert_eq!(phone.link_secret, LinkSecret::new([9; 32]));
        assert_eq!(phone.domain_id, 1);
        // Control characters and blank names from the phone are cleaned.
        assert_eq!(file.add(&linking(" \u{7}\n ", 4, 4), 0).unwrap(), "phone");
        // Renames keep names unique and sane.
        assert!(file.rename("work", "Pixel (2)").is_err());
        assert!(file.rename("work", " padded").is_err());
        assert!(file.rename("work", "").is_err());
        let err = file.rename("nope", "x").unwrap_err().to_string();
        assert!(
            err.contains("\"work\"") && err.contains("\"Pixel (2)\""),
            "{err}"
        );
        file.forget("Pixel (3)").unwrap();
        assert!(file.linked("Pixel (3)").is_err());
        assert_eq!(file.entries.len(), 3);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wrong_or_missing_key_or_an_altered_entry_is_a_clear_error() {
        let dir = temp_dir("key");
        let path = dir.join("phones.json");
        let mut file = PhonesFile::load(&path).unwrap();
        file.add(&linking("Pixel", 1, 7), 0).unwrap();
        file.save().unwrap();
        let key = key_path(&path);

        // Another machine's key.
        fs::write(&key, [1u8; 32]).unwrap();
        let err = PhonesFile::load(&path)
            .unwrap()
            .linked("Pixel")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not belong to") && err.contains("phones.key"),
            "{err}"
        );
        // No key at all: not silently replaced by a new one.
        fs::remove_file(&key).unwrap();
        let err = PhonesFile::load(&path)
            .unwrap()
            .check_writable()
            .unwrap_err()
            .to_string();
        assert!(err.contains("is missing"), "{err}");
        assert!(!key.exists());
        // A damaged key file.
        fs::write(&key, b"short").unwrap();
        let err = PhonesFile::load(&path)
            .unwrap()
            .linked("Pixel")
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged"), "{err}");
        // Once its phones are forgotten, the file takes a new key.
        fs::remove_file(&key).unwrap();
        let mut file = PhonesFile::load(&path).unwrap();
        file.forget("Pixel").unwrap();
        file.check_writable().unwrap();
        file.add(&linking("Pixel", 1, 8), 0).unwrap();
        file.save().unwrap();
        let phone = PhonesFile::load(&path).unwrap().linked("Pixel").unwrap();
        assert_eq!(phone.link_secret, LinkSecret::new([8; 32]));
        let _ = fs::remove_dir_all(&dir);

        // The right key, but an entry's sealed secret moved to another phone's key.
        let dir = temp_dir("altered");
        let path = dir.join("phones.json");
        let mut file = PhonesFile::load(&path).unwrap();
        file.add(&linking("a", 1, 1), 0).unwrap();
        file.add(&linking("b", 2, 2), 0).unwrap();
        let (nonce, sealed) = (file.entries[1].nonce, file.entries[1].sealed.clone());
        file.entries[0].nonce = nonce;
        file.entries[0].sealed = sealed;
        file.save().unwrap();
        let err = PhonesFile::load(&path)
            .unwrap()
            .linked("a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not open"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_and_oversized_files_are_refused() {
        let dir = temp_dir("damaged");
        let path = dir.join("phones.json");
        fs::write(&path, b"{ not json").unwrap();
        let err = PhonesFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("phones.json"),
            "{err}"
        );
        fs::write(&path, br#"{"version":1,"phones":[{"name":"x"}]}"#).unwrap();
        let err = PhonesFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("phone 0"), "{err}");
        fs::write(&path, br#"{"version":2,"phones":[]}"#).unwrap();
        assert!(PhonesFile::load(&path).is_err());
        fs::write(&path, vec![b' '; (MAX_FILE + 1) as usize]).unwrap();
        let err = PhonesFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}

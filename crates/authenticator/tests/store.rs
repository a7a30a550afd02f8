//! The persisted passkey store through its public API, against real files.

use std::fs;
use std::path::{Path, PathBuf};

use hybridge_authenticator::store::{
    CreateOptions, CredentialStore, FileStore, KdfParams, StoreError, StoredCredential,
};

/// A fresh directory per test, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hybridge-store-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn store_path(&self) -> PathBuf {
        self.0.join("passkeys.hbk")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const PIN: &str = "8642";

fn options(max_pin_attempts: u32) -> CreateOptions {
    CreateOptions {
        kdf: KdfParams::insecure_for_tests(),
        max_pin_attempts,
    }
}

fn create(path: &Path) -> FileStore {
    FileStore::create_with(path, PIN, options(8)).unwrap()
}

fn credential(id: u8, rp_id: &str, user: &str) -> StoredCredential {
    StoredCredential {
        credential_id: [id; 32]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ i as u8)
            .collect(),
        rp_id: rp_id.into(),
        rp_name: Some(format!("{rp_id} Incorporated")),
        user_handle: format!("handle-of-{user}").into_bytes(),
        user_name: Some(format!("{user}@mail.example")),
        user_display_name: Some(format!("{user} Longdisplayname")),
        private_key: std::array::from_fn(|i| id.wrapping_mul(31).wrapping_add(i as u8 * 7)),
        discoverable: true,
        sign_count: 0,
        cred_random_uv: [0x5a; 32],
        cred_random_no_uv: [0xa5; 32],
        created: 1_700_000_000 + u64::from(id),
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

fn corrupt_reason(result: Result<FileStore, StoreError>) -> String {
    match result {
        Err(StoreError::Corrupt { reason, .. }) => reason,
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn round_trip_create_insert_reopen_list() {
    let dir = TempDir::new("round-trip");
    let path = dir.store_path();
    let mut store = create(&path);
    assert!(store.list().unwrap().is_empty());
    let mut alice = credential(1, "login.example.com", "alice");
    alice.last_used = Some(1_800_000_000);
    alice.sign_count = 41;
    let mut bob = credential(2, "shop.example.org", "bob");
    bob.discoverable = false;
    bob.rp_name = None;
    bob.user_display_name = None;
    store.insert(alice.clone()).unwrap();
    store.insert(bob.clone()).unwrap();
    drop(store);

    let store = FileStore::open(&path, PIN).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    for (got, want) in list.iter().zip([&alice, &bob]) {
        assert_eq!(got.credential_id, want.credential_id);
        assert_eq!(got.rp_id, want.rp_id);
        assert_eq!(got.rp_name, want.rp_name);
        assert_eq!(got.user_handle, want.user_handle);
        assert_eq!(got.user_name, want.user_name);
        assert_eq!(got.user_display_name, want.user_display_name);
        assert_eq!(got.private_key, want.private_key);
        assert_eq!(got.discoverable, want.discoverable);
        assert_eq!(got.sign_count, want.sign_count);
        assert_eq!(got.cred_random_uv, want.cred_random_uv);
        assert_eq!(got.cred_random_no_uv, want.cred_random_no_uv);
        assert_eq!(got.created, want.created);
        assert_eq!(got.last_used, want.last_used);
    }
    let for_rp = store.credentials_for_rp("shop.example.org").unwrap();
    assert_eq!(for_rp.len(), 1);
    assert_eq!(for_rp[0].credential_id, bob.credential_id);
    assert!(store.credentials_for_rp("example.net").unwrap().is_empty());
    assert!(store.credential(&alice.credential_id).unwrap().is_some());
    assert!(store.credential(b"nope").unwrap().is_none());
}

#[test]
fn insert_rules_record_use_rename_delete() {
    let dir = TempDir::new("manage");
    let path = dir.store_path();
    let mut store = create(&path);
    let a = credential(1, "example.com", "alice");
    store.insert(a.clone()).unwrap();
    assert!(matches!(
        store.insert(a.clone()),
        Err(StoreError::Duplicate)
    ));
    // A new discoverable credential for the same RP and user replaces the old one.
    let mut a2 = credential(2, "example.com", "alice");
    a2.user_handle = a.user_handle.clone();
    store.insert(a2.clone()).unwrap();
    assert_eq!(ids(&store), vec![a2.credential_id.clone()]);
    let b = credential(3, "example.com", "bob");
    store.insert(b.clone()).unwrap();
    // Newest first.
    let for_rp = store.credentials_for_rp("example.com").unwrap();
    assert_eq!(for_rp[0].credential_id, b.credential_id);

    store
        .record_use(&b.credential_id, 7, 1_900_000_000)
        .unwrap();
    store.rename(&a2.credential_id, "Work account").unwrap();
    assert!(matches!(
        store.rename(b"missing", "x"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.record_use(b"missing", 1, 1),
        Err(StoreError::NotFound)
    ));
    drop(store);

    let mut store = FileStore::open(&path, PIN).unwrap();
    let b_now = store.credential(&b.credential_id).unwrap().unwrap();
    assert_eq!(
        (b_now.sign_count, b_now.last_used),
        (7, Some(1_900_000_000))
    );
    let a_now = store.credential(&a2.credential_id).unwrap().unwrap();
    assert_eq!(a_now.user_display_name.as_deref(), Some("Work account"));
    store.delete(&a2.credential_id).unwrap();
    assert!(matches!(
        store.delete(&a2.credential_id),
        Err(StoreError::NotFound)
    ));
    drop(store);
    let store = FileStore::open(&path, PIN).unwrap();
    assert_eq!(ids(&store), vec![b.credential_id.clone()]);
}

#[test]
fn wrong_pins_count_persistently_and_lock() {
    let dir = TempDir::new("lockout");
    let path = dir.store_path();
    let mut store = FileStore::create_with(&path, PIN, options(4)).unwrap();
    store.insert(credential(1, "example.com", "alice")).unwrap();
    drop(store);

    assert!(matches!(
        FileStore::open(&path, "0000"),
        Err(StoreError::WrongPin { remaining: 3 })
    ));
    // Restarting does not give attempts back.
    assert!(matches!(
        FileStore::open(&path, "0001"),
        Err(StoreError::WrongPin { remaining: 2 })
    ));
    // Too short to be a PIN: rejected without counting.
    assert!(matches!(
        FileStore::open(&path, "12"),
        Err(StoreError::PinPolicy { .. })
    ));
    // The right PIN resets the counter.
    let mut store = FileStore::open(&path, PIN).unwrap();
    assert_eq!(store.remaining_attempts(), 4);
    assert!(matches!(
        store.verify_pin("0002"),
        Err(StoreError::WrongPin { remaining: 3 })
    ));
    drop(store);
    // Per-ceremony wrong PINs count on disk as well.
    assert!(matches!(
        FileStore::open(&path, "0003"),
        Err(StoreError::WrongPin { remaining: 2 })
    ));
    assert!(matches!(
        FileStore::open(&path, "0004"),
        Err(StoreError::WrongPin { remaining: 1 })
    ));
    assert!(matches!(
        FileStore::open(&path, "0005"),
        Err(StoreError::Locked)
    ));
    // Locked for good: the right PIN no longer opens it, before or after a "restart".
    let locked_bytes = fs::read(&path).unwrap();
    assert!(matches!(
        FileStore::open(&path, PIN),
        Err(StoreError::Locked)
    ));
    assert!(matches!(
        FileStore::open(&path, PIN),
        Err(StoreError::Locked)
    ));
    assert_eq!(fs::read(&path).unwrap(), locked_bytes);

    // Recovery: delete the file and start over.
    assert!(FileStore::create(&path, PIN, KdfParams::insecure_for_tests()).is_err());
    fs::remove_file(&path).unwrap();
    let store = FileStore::create(&path, PIN, KdfParams::insecure_for_tests()).unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn change_pin_reencrypts() {
    let dir = TempDir::new("change-pin");
    let path = dir.store_path();
    let mut store = create(&path);
    store.insert(credential(1, "example.com", "alice")).unwrap();
    let before = fs::read(&path).unwrap();
    assert!(matches!(
        store.change_pin("0000", "13579"),
        Err(StoreError::WrongPin { remaining: 7 })
    ));
    assert!(matches!(
        store.change_pin(PIN, "135"),
        Err(StoreError::PinPolicy { .. })
    ));
    store.change_pin(PIN, "13579").unwrap();
    assert_eq!(store.remaining_attempts(), 8);
    store.verify_pin("13579").unwrap();
    assert!(store.verify_pin(PIN).is_err());
    // New salt, new key: the body is different.
    let after = fs::read(&path).unwrap();
    assert_ne!(before[23..39], after[23..39]);
    drop(store);
    assert!(matches!(
        FileStore::open(&path, PIN),
        Err(StoreError::WrongPin { .. })
    ));
    let store = FileStore::open(&path, "13579").unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn pin_policy_on_create() {
    let dir = TempDir::new("policy");
    let path = dir.store_path();
    assert!(matches!(
        FileStore::create(&path, "123", KdfParams::insecure_for_tests()),
        Err(StoreError::PinPolicy { .. })
    ));
    assert!(!path.exists());
    let bad_limit = CreateOptions {
        max_pin_attempts: 0,
        ..options(1)
    };
    assert!(FileStore::create_with(&path, PIN, bad_limit).is_err());
    assert!(!path.exists());
}

#[test]
fn damaged_files_are_rejected_and_left_alone() {
    let dir = TempDir::new("damage");
    let path = dir.store_path();
    let mut store = create(&path);
    store.insert(credential(1, "example.com", "alice")).unwrap();
    drop(store);
    let original = fs::read(&path).unwrap();

    // A flipped bit anywhere: magic, version, parameters, salt, counter, body, checksum.
    // (Every header byte, then a sample of the rest; the format's unit tests flip them all.)
    let positions = (0..63).chain((63..original.len()).step_by(5));
    for i in positions {
        let mut damaged = original.clone();
        damaged[i] ^= 0x10;
        fs::write(&path, &damaged).unwrap();
        let reason = corrupt_reason(FileStore::open(&path, PIN));
        assert!(!reason.is_empty());
        assert_eq!(
            fs::read(&path).unwrap(),
            damaged,
            "byte {i}: file left as it was"
        );
    }
    // Truncated at several lengths, including empty, and with bytes appended.
    for len in [
        0,
        1,
        7,
        8,
        9,
        10,
        40,
        59,
        62,
        63,
        100,
        original.len() - 33,
        original.len() - 1,
    ] {
        fs::write(&path, &original[..len]).unwrap();
        corrupt_reason(FileStore::open(&path, PIN));
    }
    let mut longer = original.clone();
    longer.extend_from_slice(b"extra");
    fs::write(&path, &longer).unwrap();
    corrupt_reason(FileStore::open(&path, PIN));
    // Not a store at all.
    let mut wrong_magic = original.clone();
    wrong_magic[..8].copy_from_slice(b"SQLite f");
    fs::write(&path, &wrong_magic).unwrap();
    assert!(corrupt_reason(FileStore::open(&path, PIN)).contains("magic"));
    // A future format version is named as such.
    let mut future = original.clone();
    future[9] = 2;
    fs::write(&path, &future).unwrap();
    assert!(corrupt_reason(FileStore::open(&path, PIN)).contains("version 2"));

    // None of that cost an attempt: the intact file opens with all attempts left.
    fs::write(&path, &original).unwrap();
    let store = FileStore::open(&path, PIN).unwrap();
    assert_eq!(store.remaining_attempts(), 8);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn failed_write_leaves_old_contents() {
    let dir = TempDir::new("failed-write");
    let path = dir.store_path();
    let mut store = create(&path);
    let a = credential(1, "example.com", "alice");
    store.insert(a.clone()).unwrap();
    let before = fs::read(&path).unwrap();

    // Make the temp file impossible to create: a directory stands where it would go.
    let tmp = dir.0.join("passkeys.hbk.tmp");
    fs::create_dir(&tmp).unwrap();
    fs::write(tmp.join("x"), b"x").unwrap();
    assert!(matches!(
        store.insert(credential(2, "example.org", "bob")),
        Err(StoreError::Io { .. })
    ));
    assert!(matches!(
        store.delete(&a.credential_id),
        Err(StoreError::Io { .. })
    ));
    assert!(matches!(
        store.rename(&a.credential_id, "x"),
        Err(StoreError::Io { .. })
    ));
    // Neither the file nor the open store changed.
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(ids(&store), vec![a.credential_id.clone()]);
    let got = store.credential(&a.credential_id).unwrap().unwrap();
    assert_eq!(got.user_display_name, a.user_display_name);

    fs::remove_dir_all(&tmp).unwrap();
    store.insert(credential(2, "example.org", "bob")).unwrap();
    drop(store);
    assert_eq!(ids(&FileStore::open(&path, PIN).unwrap()).len(), 2);
}

#[test]
fn crash_between_write_and_rename() {
    // A crash after the temp file was written but before the rename leaves a stale, possibly
    // partial temp file next to the intact old store.
    let dir = TempDir::new("crash");
    let path = dir.store_path();
    let mut store = create(&path);
    store.insert(credential(1, "example.com", "alice")).unwrap();
    let complete_new_version = {
        store.insert(credential(2, "example.org", "bob")).unwrap();
        fs::read(&path).unwrap()
    };
    store.delete(&credential(2, "", "").credential_id).unwrap();
    drop(store);
    let tmp = dir.0.join("passkeys.hbk.tmp");
    for stale in [
        complete_new_version.clone(),
        complete_new_version[..100].to_vec(),
        Vec::new(),
    ] {
        fs::write(&tmp, &stale).unwrap();
        let mut store = FileStore::open(&path, PIN).unwrap();
        assert_eq!(store.list().unwrap().len(), 1, "old contents");
        // The next write replaces the stale temp file.
        store
            .record_use(&credential(1, "", "").credential_id, 1, 2)
            .unwrap();
        assert!(!tmp.exists());
    }
}

#[cfg(unix)]
#[test]
fn file_mode_is_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    // Missing parent directories are created private.
    let path = dir.0.join("new").join("passkeys.hbk");
    let mut store = create(&path);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.0.join("new")), 0o700);
    // Still 0600 after a rewrite, even when a stale temp file with a lax mode was in the way.
    let tmp = dir.0.join("new").join("passkeys.hbk.tmp");
    fs::write(&tmp, b"stale").unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    store.insert(credential(1, "example.com", "alice")).unwrap();
    assert_eq!(mode(&path), 0o600);
    drop(store);
    FileStore::open(&path, PIN).unwrap();
    assert_eq!(mode(&path), 0o600);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn nothing_readable_in_the_file() {
    let dir = TempDir::new("scan");
    let path = dir.store_path();
    let mut store = create(&path);
    let creds = [
        credential(1, "login.example.com", "alice"),
        credential(2, "shop.example.org", "bob"),
    ];
    for c in &creds {
        store.insert(c.clone()).unwrap();
    }
    store
        .record_use(&creds[0].credential_id, 5, 1_900_000_000)
        .unwrap();
    drop(store);
    FileStore::open(&path, PIN).unwrap();
    let bytes = fs::read(&path).unwrap();
    for c in &creds {
        let mut secrets: Vec<&[u8]> = vec![
            c.rp_id.as_bytes(),
            c.user_handle.as_slice(),
            &c.credential_id,
            &c.private_key,
            &c.private_key[..8],
            &c.cred_random_uv[..8],
            &c.cred_random_no_uv[..8],
            b"example",
            b"alice",
            b"bob",
            PIN.as_bytes(),
        ];
        for s in [&c.rp_name, &c.user_name, &c.user_display_name] {
            secrets.push(s.as_deref().unwrap().as_bytes());
        }
        for s in secrets {
            assert!(
                !contains(&bytes, s),
                "{:?} found in the file",
                String::from_utf8_lossy(s)
            );
        }
    }
}

//! The passkey store file format, version 1. All integers are big-endian.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "HBPASSK\0"
//!      8     2  format version (1)
//!     10     1  KDF algorithm (1 = Argon2id, version 0x13)
//!     11     4  Argon2 memory, KiB
//!     15     4  Argon2 passes
//!     19     4  Argon2 lanes
//!     23    16  salt (random, new on every PIN change)
//!     39     4  maximum wrong PIN attempts before the store locks
//!     43    12  AES-GCM nonce (random, new on every write of the body)
//!     55     4  ciphertext length N (body plus 16-byte tag)
//!   ---------- bytes 0..59 are the AES-GCM associated data
//!     59     4  wrong PIN attempts since the last correct one
//!     63     N  AES-256-GCM ciphertext of the body, under the Argon2id key
//!   63+N    32  SHA-256 of bytes 0..63+N
//! ```
//!
//! The attempt counter sits outside the associated data because it must be updated before a
//! PIN is tried, i.e. without the key. The SHA-256 is not a security measure (anyone can
//! recompute it); it tells accidental damage (`StoreError::Corrupt`) apart
//! from a wrong PIN, both of which would otherwise just fail AEAD authentication.
//!
//! The body is canonical CBOR, `{1: [credential, ...], 2: linking}`, each credential a map
//! with small integer keys (see [`encode_body`]), the linking state (key 2, absent until the
//! phone first links) `{1: root secret, 2: identity key, 3: wake key, 4: [laptop, ...]}` with
//! each laptop `{1: link ID, 2: label, 3: created, 4: last used}`, zero-padded to a multiple of [`PAD`] bytes so that the
//! file size says little about the names inside.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hybridge_cbor::Value;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::kdf::KdfParams;
use super::{LinkedLaptop, LinkingState, StoredCredential};

/// Identifies a hybridge passkey store.
pub(crate) const MAGIC: [u8; 8] = *b"HBPASSK\0";
/// The format version this code writes and reads.
pub(crate) const VERSION: u16 = 1;
const KDF_ARGON2ID: u8 = 1;
const AAD_LEN: usize = 59;
const PREFIX_LEN: usize = AAD_LEN + 4;
const CHECKSUM_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// The plaintext body is padded to a multiple of this many bytes.
pub(crate) const PAD: usize = 256;
/// Larger files are not read (a store of thousands of passkeys is far smaller).
pub(crate) const MAX_FILE_LEN: u64 = 16 << 20;
/// The most wrong attempts a store may be configured to allow.
pub(crate) const MAX_ATTEMPTS_LIMIT: u32 = 255;

/// The header fields. Which of them are authenticated is described in the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Header {
    pub kdf: KdfParams,
    pub salt: [u8; 16],
    pub max_attempts: u32,
    pub nonce: [u8; 12],
    pub failed_attempts: u32,
}

impl Header {
    fn aad(&self, ciphertext_len: usize) -> Result<[u8; AAD_LEN], String> {
        let len = u32::try_from(ciphertext_len).map_err(|_| "body too large".to_owned())?;
        let mut a = [0u8; AAD_LEN];
        a[0..8].copy_from_slice(&MAGIC);
        a[8..10].copy_from_slice(&VERSION.to_be_bytes());
        a[10] = KDF_ARGON2ID;
        a[11..15].copy_from_slice(&self.kdf.memory_kib().to_be_bytes());
        a[15..19].copy_from_slice(&self.kdf.iterations().to_be_bytes());
        a[19..23].copy_from_slice(&self.kdf.parallelism().to_be_bytes());
        a[23..39].copy_from_slice(&self.salt);
        a[39..43].copy_from_slice(&self.max_attempts.to_be_bytes());
        a[43..55].copy_from_slice(&self.nonce);
        a[55..59].copy_from_slice(&len.to_be_bytes());
        Ok(a)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

/// The whole file for this header and ciphertext.
pub(crate) fn serialize(header: &Header, ciphertext: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(PREFIX_LEN + ciphertext.len() + CHECKSUM_LEN);
    out.extend_from_slice(&header.aad(ciphertext.len())?);
    out.extend_from_slice(&header.failed_attempts.to_be_bytes());
    out.extend_from_slice(ciphertext);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    if out.len() as u64 > MAX_FILE_LEN {
        // It could not be read back.
        return Err(format!(
            "the passkey store is full ({} bytes; the limit is {MAX_FILE_LEN})",
            out.len()
        ));
    }
    Ok(out)
}

/// Splits a file into its header and ciphertext; the reason says what is wrong otherwise.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), String> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err("not a hybridge passkey store (wrong magic bytes)".into());
    }
    if bytes.len() < 10 {
        return Err(format!("file is truncated ({} bytes)", bytes.len()));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(format!(
            "format version {version} is not supported (this hybridge reads version {VERSION})"
        ));
    }
    if bytes.len() < PREFIX_LEN + TAG_LEN + CHECKSUM_LEN {
        return Err(format!("file is truncated ({} bytes)", bytes.len()));
    }
    let ciphertext_len = be32(bytes, 55) as usize;
    let expected = PREFIX_LEN
        .checked_add(ciphertext_len)
        .and_then(|n| n.checked_add(CHECKSUM_LEN));
    if expected != Some(bytes.len()) {
        return Err(format!(
            "file length {} does not match its header (truncated or damaged)",
            bytes.len()
        ));
    }
    let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(content)[..] != *sum {
        return Err("checksum mismatch: the file was damaged".into());
    }
    if bytes[10] != KDF_ARGON2ID {
        return Err(format!("unknown key derivation algorithm {}", bytes[10]));
    }
    let kdf = KdfParams::new(be32(bytes, 11), be32(bytes, 15), be32(bytes, 19))
        .ok_or("key derivation parameters out of bounds")?;
    let max_attempts = be32(bytes, 39);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        return Err(format!("attempt limit {max_attempts} out of bounds"));
    }
    if ciphertext_len < TAG_LEN {
        return Err("ciphertext shorter than its tag".into());
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&bytes[23..39]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&bytes[43..55]);
    let header = Header {
        kdf,
        salt,
        max_attempts,
        nonce,
        failed_attempts: be32(bytes, 59),
    };
    Ok((header, &content[PREFIX_LEN..]))
}

/// Why a body could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// AEAD authentication failed: with an intact file, the PIN was wrong.
    Authentication,
    /// Authentic, but not a body this code understands.
    Malformed(String),
}

/// What the body holds: the passkeys and, once the phone has linked, its linking state.
#[derive(Clone, Default)]
pub(crate) struct Body {
    pub credentials: Vec<StoredCredential>,
    pub linking: Option<LinkingState>,
}

/// Encrypts `body` under `key`; `header.nonce` must be fresh.
pub(crate) fn seal(key: &[u8; 32], header: &Header, body: &Body) -> Result<Vec<u8>, String> {
    let mut buf = encode_body(body);
    let aad = header.aad(buf.len() + TAG_LEN)?;
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .encrypt_in_place(&Nonce::from(header.nonce), &aad, &mut *buf)
        .map_err(|_| "encryption failed".to_owned())?;
    // The buffer now holds only ciphertext; take it out without a plaintext copy behind.
    Ok(std::mem::take(&mut *buf))
}

/// Decrypts and decodes a body.
pub(crate) fn open(key: &[u8; 32], header: &Header, ciphertext: &[u8]) -> Result<Body, OpenError> {
    let aad = header.aad(ciphertext.len()).map_err(OpenError::Malformed)?;
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt_in_place(&Nonce::from(header.nonce), &aad, &mut *buf)
        .map_err(|_| OpenError::Authentication)?;
    decode_body(&buf).map_err(OpenError::Malformed)
}

// Credential map keys.
const K_ID: i128 = 1;
const K_RP_ID: i128 = 2;
const K_RP_NAME: i128 = 3;
const K_USER_HANDLE: i128 = 4;
const K_USER_NAME: i128 = 5;
const K_USER_DISPLAY: i128 = 6;
const K_PRIVATE_KEY: i128 = 7;
const K_DISCOVERABLE: i128 = 8;
const K_SIGN_COUNT: i128 = 9;
const K_CRED_RANDOM_UV: i128 = 10;
const K_CRED_RANDOM_NO_UV: i128 = 11;
const K_CREATED: i128 = 12;
const K_LAST_USED: i128 = 13;
const K_BODY_CREDENTIALS: i128 = 1;
const K_BODY_LINKING: i128 = 2;
// Linking state map keys.
const K_ROOT: i128 = 1;
const K_IDENTITY: i128 = 2;
const K_WAKE: i128 = 3;
const K_LAPTOPS: i128 = 4;
// Linked laptop map keys.
const K_LINK_ID: i128 = 1;
const K_LABEL: i128 = 2;
const K_LINKED: i128 = 3;
const K_LINK_USED: i128 = 4;

/// Overwrites every byte and text string in a value tree before it is dropped.
fn wipe(value: &mut Value) {
    match value {
        Value::Bytes(b) => b.zeroize(),
        Value::Text(t) => t.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            wipe(k);
            wipe(v);
        }),
        Value::Int(_) | Value::Bool(_) | Value::Null | Value::Float(_) => {}
    }
}

/// Canonical CBOR of the body, zero-padded to a multiple of [`PAD`], with room for the tag.
pub(crate) fn encode_body(body: &Body) -> Zeroizing<Vec<u8>> {
    let credentials = &body.credentials;
    let mut items = Vec::with_capacity(credentials.len());
    let mut size_hint = 64;
    for c in credentials {
        let mut m = vec![
            (Value::Int(K_ID), Value::Bytes(c.credential_id.clone())),
            (Value::Int(K_RP_ID), Value::Text(c.rp_id.clone())),
            (
                Value::Int(K_USER_HANDLE),
                Value::Bytes(c.user_handle.clone()),
            ),
            (
                Value::Int(K_PRIVATE_KEY),
                Value::Bytes(c.private_key.to_vec()),
            ),
            (Value::Int(K_DISCOVERABLE), Value::Bool(c.discoverable)),
            (Value::Int(K_SIGN_COUNT), Value::Int(c.sign_count.into())),
            (
                Value::Int(K_CRED_RANDOM_UV),
                Value::Bytes(c.cred_random_uv.to_vec()),
            ),
            (
                Value::Int(K_CRED_RANDOM_NO_UV),
                Value::Bytes(c.cred_random_no_uv.to_vec()),
            ),
            (Value::Int(K_CREATED), Value::Int(c.created.into())),
        ];
        let optional = [
            (K_RP_NAME, &c.rp_name),
            (K_USER_NAME, &c.user_name),
            (K_USER_DISPLAY, &c.user_display_name),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                m.push((Value::Int(k), Value::Text(v.clone())));
            }
        }
        if let Some(t) = c.last_used {
            m.push((Value::Int(K_LAST_USED), Value::Int(t.into())));
        }
        size_hint += 256
            + c.credential_id.len()
            + c.rp_id.len()
            + c.user_handle.len()
            + [&c.rp_name, &c.user_name, &c.user_display_name]
                .iter()
                .map(|s| s.as_ref().map_or(0, |s| s.len() + 9))
                .sum::<usize>();
        items.push(Value::Map(m));
    }
    let mut entries = vec![(Value::Int(K_BODY_CREDENTIALS), Value::Array(items))];
    if let Some(l) = &body.linking {
        let laptops = l
            .laptops
            .iter()
            .map(|laptop| {
                size_hint += 64 + laptop.label.len();
                let mut m = vec![
                    (Value::Int(K_LINK_ID), Value::Bytes(laptop.link_id.to_vec())),
                    (Value::Int(K_LABEL), Value::Text(laptop.label.clone())),
                    (Value::Int(K_LINKED), Value::Int(laptop.created.into())),
                ];
                if let Some(t) = laptop.last_used {
                    m.push((Value::Int(K_LINK_USED), Value::Int(t.into())));
                }
                Value::Map(m)
            })
            .collect();
        size_hint += 160;
        entries.push((
            Value::Int(K_BODY_LINKING),
            Value::Map(vec![
                (Value::Int(K_ROOT), Value::Bytes(l.root_secret.to_vec())),
                (
                    Value::Int(K_IDENTITY),
                    Value::Bytes(l.identity_key.to_vec()),
                ),
                (Value::Int(K_WAKE), Value::Bytes(l.wake_key.to_vec())),
                (Value::Int(K_LAPTOPS), Value::Array(laptops)),
            ]),
        ));
    }
    let mut body = Value::Map(entries);
    // Reserve enough up front that the buffer never reallocates (which would leave a copy of
    // the plaintext behind in freed memory).
    let mut out = Zeroizing::new(Vec::with_capacity(size_hint + PAD + TAG_LEN));
    hybridge_cbor::encode_into(&body, &mut out);
    wipe(&mut body);
    let padded = out.len().div_ceil(PAD) * PAD;
    out.resize(padded, 0);
    out
}

fn field(m: &[(Value, Value)], key: i128) -> Option<&Value> {
    m.iter()
        .find(|(k, _)| *k == Value::Int(key))
        .map(|(_, v)| v)
}

fn required(m: &[(Value, Value)], key: i128) -> Result<&Value, String> {
    field(m, key).ok_or_else(|| format!("credential field {key} missing"))
}

fn bytes_field(m: &[(Value, Value)], key: i128) -> Result<Vec<u8>, String> {
    required(m, key)?
        .as_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("credential field {key} is not bytes"))
}

fn array32(m: &[(Value, Value)], key: i128) -> Result<[u8; 32], String> {
    let b = required(m, key)?
        .as_bytes()
        .ok_or_else(|| format!("credential field {key} is not bytes"))?;
    b.try_into()
        .map_err(|_| format!("credential field {key} is not 32 bytes"))
}

fn text_field(m: &[(Value, Value)], key: i128) -> Result<String, String> {
    required(m, key)?
        .as_text()
        .map(str::to_owned)
        .ok_or_else(|| format!("credential field {key} is not text"))
}

fn optional_text(m: &[(Value, Value)], key: i128) -> Result<Option<String>, String> {
    field(m, key)
        .map(|v| {
            v.as_text()
                .map(str::to_owned)
                .ok_or_else(|| format!("credential field {key} is not text"))
        })
        .transpose()
}

fn u64_field(v: &Value, key: i128) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("credential field {key} is not an unsigned integer"))
}

fn decode_credential(m: &[(Value, Value)]) -> Result<StoredCredential, String> {
    let sign_count = u64_field(required(m, K_SIGN_COUNT)?, K_SIGN_COUNT)?;
    Ok(StoredCredential {
        credential_id: bytes_field(m, K_ID)?,
        rp_id: text_field(m, K_RP_ID)?,
        rp_name: optional_text(m, K_RP_NAME)?,
        user_handle: bytes_field(m, K_USER_HANDLE)?,
        user_name: optional_text(m, K_USER_NAME)?,
        user_display_name: optional_text(m, K_USER_DISPLAY)?,
        private_key: array32(m, K_PRIVATE_KEY)?,
        discoverable: required(m, K_DISCOVERABLE)?
            .as_bool()
            .ok_or("credential field 8 is not a boolean")?,
        sign_count: u32::try_from(sign_count).map_err(|_| "signature counter out of range")?,
        cred_random_uv: array32(m, K_CRED_RANDOM_UV)?,
        cred_random_no_uv: array32(m, K_CRED_RANDOM_NO_UV)?,
        created: u64_field(required(m, K_CREATED)?, K_CREATED)?,
        last_used: field(m, K_LAST_USED)
            .map(|v| u64_field(v, K_LAST_USED))
            .transpose()?,
    })
}

fn decode_laptop(m: &[(Value, Value)]) -> Result<LinkedLaptop, String> {
    let id = bytes_field(m, K_LINK_ID)?;
    Ok(LinkedLaptop {
        link_id: id
            .try_into()
            .map_err(|_| "a linked laptop's ID is not 8 bytes")?,
        label: text_field(m, K_LABEL)?,
        created: u64_field(required(m, K_LINKED)?, K_LINKED)?,
        last_used: field(m, K_LINK_USED)
            .map(|v| u64_field(v, K_LINK_USED))
            .transpose()?,
    })
}

fn decode_linking(m: &[(Value, Value)]) -> Result<LinkingState, String> {
    let laptops = field(m, K_LAPTOPS)
        .and_then(Value::as_array)
        .ok_or("linking state has no laptop list")?
        .iter()
        .map(|v| {
            v.as_map()
                .ok_or_else(|| "a linked laptop is not a map".to_owned())
                .and_then(decode_laptop)
        })
        .collect::<Result<_, _>>()?;
    Ok(LinkingState {
        root_secret: Zeroizing::new(array32(m, K_ROOT)?),
        identity_key: Zeroizing::new(array32(m, K_IDENTITY)?),
        wake_key: Zeroizing::new(array32(m, K_WAKE)?),
        laptops,
    })
}

/// Decodes a padded body.
pub(crate) fn decode_body(plaintext: &[u8]) -> Result<Body, String> {
    let (mut value, used) = hybridge_cbor::decode_prefix(plaintext)
        .map_err(|e| format!("body is not valid CBOR: {e}"))?;
    let result = (|| {
        if plaintext[used..].iter().any(|&b| b != 0) {
            return Err("body padding is not zero".to_owned());
        }
        let map = value.as_map().ok_or("body is not a map")?;
        let items = field(map, K_BODY_CREDENTIALS)
            .and_then(Value::as_array)
            .ok_or("body has no credential list")?;
        let credentials = items
            .iter()
            .map(|item| {
                item.as_map()
                    .ok_or_else(|| "credential is not a map".to_owned())
                    .and_then(decode_credential)
            })
            .collect::<Result<_, _>>()?;
        let linking = field(map, K_BODY_LINKING)
            .map(|v| {
                v.as_map()
                    .ok_or_else(|| "linking state is not a map".to_owned())
                    .and_then(decode_linking)
            })
            .transpose()?;
        Ok(Body {
            credentials,
            linking,
        })
    })();
    wipe(&mut value);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: u8) -> StoredCredential {
        StoredCredential {
            credential_id: vec![id; 16],
            rp_id: "example.com".into(),
            rp_name: Some("Example".into()),
            user_handle: vec![9, 9, id],
            user_name: Some("alice@example.com".into()),
            user_display_name: None,
            private_key: [id; 32],
            discoverable: id % 2 == 0,
            sign_count: u32::MAX,
            cred_random_uv: [1; 32],
            cred_random_no_uv: [2; 32],
            created: 1_700_000_000,
            last_used: Some(1_800_000_000),
        }
    }

    fn one(c: StoredCredential) -> Body {
        Body {
            credentials: vec![c],
            linking: None,
        }
    }

    #[test]
    fn linking_state_round_trips_and_old_bodies_have_none() {
        let linking = LinkingState {
            root_secret: Zeroizing::new([1; 32]),
            identity_key: Zeroizing::new([2; 32]),
            wake_key: Zeroizing::new([3; 32]),
            laptops: vec![
                LinkedLaptop {
                    link_id: [4; 8],
                    label: "work laptop".into(),
                    created: 1_700_000_000,
                    last_used: Some(1_700_000_100),
                },
                LinkedLaptop {
                    link_id: [5; 8],
                    label: String::new(),
                    created: 1_700_000_200,
                    last_used: None,
                },
            ],
        };
        let body = Body {
            credentials: vec![sample(1)],
            linking: Some(linking.clone()),
        };
        let back = decode_body(&encode_body(&body)).unwrap();
        let l = back.linking.expect("linking state");
        assert_eq!(*l.root_secret, [1; 32]);
        assert_eq!(*l.identity_key, [2; 32]);
        assert_eq!(*l.wake_key, [3; 32]);
        assert_eq!(l.laptops, linking.laptops);
        assert!(
            decode_body(&encode_body(&one(sample(1))))
                .unwrap()
                .linking
                .is_none()
        );
    }

    fn same(a: &StoredCredential, b: &StoredCredential) -> bool {
        a.credential_id == b.credential_id
            && a.rp_id == b.rp_id
            && a.rp_name == b.rp_name
            && a.user_handle == b.user_handle
            && a.user_name == b.user_name
            && a.user_display_name == b.user_display_name
            && a.private_key == b.private_key
            && a.discoverable == b.discoverable
            && a.sign_count == b.sign_count
            && a.cred_random_uv == b.cred_random_uv
            && a.cred_random_no_uv == b.cred_random_no_uv
            && a.created == b.created
            && a.last_used == b.last_used
    }

    #[test]
    fn body_round_trip_and_padding() {
        let creds = vec![sample(1), sample(2)];
        let body = encode_body(&Body {
            credentials: creds.clone(),
            linking: None,
        });
        assert_eq!(body.len() % PAD, 0);
        let back = decode_body(&body).unwrap().credentials;
        assert_eq!(back.len(), 2);
        assert!(same(&back[0], &creds[0]) && same(&back[1], &creds[1]));
        assert!(
            decode_body(&encode_body(&Body::default()))
                .unwrap()
                .credentials
                .is_empty()
        );
        let mut bad = encode_body(&Body {
            credentials: creds.clone(),
            linking: None,
        });
        let last = bad.len() - 1;
        bad[last] = 1;
        assert!(decode_body(&bad).is_err());
    }

    fn header() -> Header {
        Header {
            kdf: KdfParams::insecure_for_tests(),
            salt: [3; 16],
            max_attempts: 8,
            nonce: [4; 12],
            failed_attempts: 2,
        }
    }

    #[test]
    fn file_round_trip() {
        let key = [7u8; 32];
        let h = header();
        let ct = seal(&key, &h, &one(sample(1))).unwrap();
        let file = serialize(&h, &ct).unwrap();
        let (h2, ct2) = parse(&file).unwrap();
        assert_eq!(ct2, &ct[..]);
        assert_eq!(h2.failed_attempts, 2);
        assert_eq!(h2.salt, h.salt);
        let creds = open(&key, &h2, ct2).unwrap().credentials;
        assert!(same(&creds[0], &sample(1)));
        assert!(matches!(
            open(&[8u8; 32], &h2, ct2),
            Err(OpenError::Authentication)
        ));
        // The counter is outside the associated data: changing it keeps the body valid.
        let mut h3 = h2.clone();
        h3.failed_attempts = 0;
        assert!(open(&key, &h3, ct2).is_ok());
        // The salt is inside it.
        let mut h4 = h2.clone();
        h4.salt[0] ^= 1;
        assert!(matches!(
            open(&key, &h4, ct2),
            Err(OpenError::Authentication)
        ));
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_rejected() {
        let h = header();
        let file = serialize(&h, &seal(&[7; 32], &h, &one(sample(1))).unwrap()).unwrap();
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x01;
            assert!(parse(&f).is_err(), "flip at {i}");
        }
        for n in 0..file.len() {
            assert!(parse(&file[..n]).is_err(), "truncated to {n}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(parse(&longer).is_err());
    }
}

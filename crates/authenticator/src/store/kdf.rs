//! The PIN: its policy, and the Argon2id derivation of the store key from it.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::{Zeroize, Zeroizing};

use super::StoreError;

/// The shortest PIN accepted, in Unicode characters (CTAP2's minimum PIN length).
pub const MIN_PIN_CHARS: usize = 4;
/// The longest PIN accepted, in UTF-8 bytes (CTAP2's limit is 63; a little room to spare).
pub const MAX_PIN_BYTES: usize = 128;

/// Checks a PIN against the policy. A PIN that fails it cannot be the store's PIN, so it is
/// rejected before it counts as an attempt.
pub(crate) fn check_pin_policy(pin: &str) -> Result<(), StoreError> {
    if pin.chars().count() < MIN_PIN_CHARS {
        return Err(StoreError::PinPolicy {
            reason: format!("a PIN must be at least {MIN_PIN_CHARS} characters"),
        });
    }
    if pin.len() > MAX_PIN_BYTES {
        return Err(StoreError::PinPolicy {
            reason: format!("a PIN must be at most {MAX_PIN_BYTES} bytes"),
        });
    }
    Ok(())
}

/// Argon2id cost parameters, stored in the file header so they can change between stores.
///
/// Every value of this type is within the bounds the store accepts when it reads a header, so
/// a hostile header cannot ask for gigabytes of memory.
///
/// ```
/// use hybridge_authenticator::store::KdfParams;
/// let p = KdfParams::default();
/// assert_eq!(KdfParams::new(p.memory_kib(), p.iterations(), p.parallelism()), Some(p));
/// assert!(KdfParams::new(1 << 30, 1, 1).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl KdfParams {
    /// The most memory a header may ask for: 1 GiB.
    pub const MAX_MEMORY_KIB: u32 = 1 << 20;
    /// The most passes a header may ask for.
    pub const MAX_ITERATIONS: u32 = 64;
    /// The most lanes a header may ask for.
    pub const MAX_PARALLELISM: u32 = 16;

    /// Parameters within bounds: memory 8×`parallelism` KiB to 1 GiB, 1–64 passes, 1–16 lanes.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Option<Self> {
        let ok = (1..=Self::MAX_PARALLELISM).contains(&parallelism)
            && (1..=Self::MAX_ITERATIONS).contains(&iterations)
            && memory_kib >= 8 * parallelism
            && memory_kib <= Self::MAX_MEMORY_KIB;
        ok.then_some(Self {
            memory_kib,
            iterations,
            parallelism,
        })
    }

    /// Tiny parameters that derive a key in microseconds. **For tests only**: a store created
    /// with them gives a PIN almost no protection against offline guessing.
    pub fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// Memory in KiB.
    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    /// Number of passes.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Number of lanes.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended option, with one lane since the
    /// derivation runs on one thread. It unlocks in a few hundred milliseconds on a laptop in
    /// a release build, while an offline guesser pays the same per PIN.
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Derives the 256-bit store key from the PIN and the header's salt.
pub(crate) fn derive_key(
    pin: &str,
    salt: &[u8],
    params: &KdfParams,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let argon_params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| format!("key derivation parameters rejected: {e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut blocks = vec![Block::default(); argon.params().block_count()];
    let mut key = Zeroizing::new([0u8; 32]);
    let result = argon.hash_password_into_with_memory(pin.as_bytes(), salt, &mut *key, &mut blocks);
    // The Argon2 working memory holds values derived from the PIN.
    blocks.iter_mut().for_each(Zeroize::zeroize);
    result.map_err(|e| format!("key derivation failed: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_policy() {
        assert!(check_pin_policy("123").is_err());
        assert!(check_pin_policy("").is_err());
        assert!(check_pin_policy("1234").is_ok());
        // Characters, not bytes: four two-byte characters pass, three do not.
        assert!(check_pin_policy("äöüß").is_ok());
        assert!(check_pin_policy("äöü").is_err());
        assert!(check_pin_policy(&"1".repeat(MAX_PIN_BYTES + 1)).is_err());
    }

    #[test]
    fn derivation_depends_on_pin_salt_and_params() {
        let p = KdfParams::insecure_for_tests();
        let a = derive_key("1234", &[1; 16], &p).unwrap();
        assert_eq!(*a, *derive_key("1234", &[1; 16], &p).unwrap());
        assert_ne!(*a, *derive_key("1235", &[1; 16], &p).unwrap());
        assert_ne!(*a, *derive_key("1234", &[2; 16], &p).unwrap());
        let q = KdfParams::new(16, 1, 1).unwrap();
        assert_ne!(*a, *derive_key("1234", &[1; 16], &q).unwrap());
    }

    #[test]
    fn params_bounds() {
        assert!(KdfParams::new(8, 1, 1).is_some());
        assert!(KdfParams::new(7, 1, 1).is_none());
        assert!(KdfParams::new(16, 1, 3).is_none());
        assert!(KdfParams::new(8, 0, 1).is_none());
        assert!(KdfParams::new(8, 1, 0).is_none());
        assert!(KdfParams::new(KdfParams::MAX_MEMORY_KIB + 1, 1, 1).is_none());
        let d = KdfParams::default();
        assert_eq!(
            KdfParams::new(d.memory_kib(), d.iterations(), d.parallelism()),
            Some(d)
        );
    }
}

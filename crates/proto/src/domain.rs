//! Tunnel-server domains (docs/protocol.md §5): assigned IDs 0 and 1, and hashed IDs 256–65535 whose
//! hostname is derived from SHA-256 — so operating your own tunnel server means registering
//! the hostname of some ID, which [`find_ids_with_tld`] helps choose.

use sha2::{Digest, Sha256};

/// The assigned tunnel-server domains, indexed by ID (`kAssignedDomains`).
pub const ASSIGNED_DOMAINS: [&str; 2] = ["cable.ua5v.com", "cable.auth.com"];
/// How many assigned domains we know, as written in QR key 2.
pub const KNOWN_ASSIGNED_DOMAINS: u16 = ASSIGNED_DOMAINS.len() as u16;
/// The first hashed domain ID.
pub const FIRST_HASHED_ID: u16 = 256;
/// Top-level domains a hashed hostname can have, selected by the low two bits.
pub const HASHED_TLDS: [&str; 4] = ["com", "org", "net", "info"];

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The hostname of tunnel-server domain `id`: an assigned name for 0 and 1, a hashed name for
/// 256 and above, and `None` for the reserved IDs 2–255.
///
/// ```
/// use hybridge_proto::domain::hostname;
/// assert_eq!(hostname(0).as_deref(), Some("cable.ua5v.com"));
/// assert_eq!(hostname(266).as_deref(), Some("cable.wufkweyy3uaxb.com"));
/// assert_eq!(hostname(255), None);
/// ```
pub fn hostname(id: u16) -> Option<String> {
    if let Some(d) = ASSIGNED_DOMAINS.get(usize::from(id)) {
        return Some((*d).to_owned());
    }
    if id < FIRST_HASHED_ID {
        return None;
    }
    let mut input = Vec::with_capacity(31);
    input.extend_from_slice(b"caBLEv2 tunnel server domain");
    input.extend_from_slice(&id.to_le_bytes());
    input.push(0);
    let digest = Sha256::digest(&input);
    let mut v = u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    let tld = HASHED_TLDS[(v & 3) as usize];
    v >>= 2;
    let mut s = String::from("cable.");
    while v != 0 {
        s.push(char::from(BASE32[(v & 31) as usize]));
        v >>= 5;
    }
    s.push('.');
    s.push_str(tld);
    Some(s)
}

/// Whether a desktop that knows `known_assigned` assigned domains accepts domain `id` in a QR
/// advert: hashed IDs always, assigned IDs only below the count (docs/protocol.md §4.3 step 4).
pub fn is_acceptable(id: u16, known_assigned: u16) -> bool {
    id >= FIRST_HASHED_ID || id < known_assigned.min(KNOWN_ASSIGNED_DOMAINS)
}

/// Up to `count` hashed domain IDs (from 256 upward) whose hostname ends in `.tld`, with their
/// hostnames. `tld` is one of `com`, `org`, `net`, `info` (a leading dot is ignored); any other
/// TLD gives an empty list.
pub fn find_ids_with_tld(tld: &str, count: usize) -> Vec<(u16, String)> {
    let tld = tld.trim_start_matches('.').to_ascii_lowercase();
    if !HASHED_TLDS.contains(&tld.as_str()) {
        return Vec::new();
    }
    let suffix = format!(".{tld}");
    (FIRST_HASHED_ID..=u16::MAX)
        .filter_map(|id| hostname(id).map(|h| (id, h)))
        .filter(|(_, h)| h.ends_with(&suffix))
        .take(count)
        .collect()
}

/// The ID whose hostname is `host`, if any (assigned or hashed); a full scan of 65,280 hashes.
pub fn id_for_hostname(host: &str) -> Option<u16> {
    let host = host.to_ascii_lowercase();
    (0..=u16::MAX).find(|&id| hostname(id).as_deref() == Some(host.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        // docs/protocol.md §10.5 and §5.
        assert_eq!(hostname(0).unwrap(), "cable.ua5v.com");
        assert_eq!(hostname(1).unwrap(), "cable.auth.com");
        assert_eq!(hostname(266).unwrap(), "cable.wufkweyy3uaxb.com");
        assert_eq!(hostname(2), None);
        assert_eq!(hostname(255), None);
        assert!(hostname(256).is_some() && hostname(65535).is_some());
    }

    #[test]
    fn acceptance() {
        assert!(is_acceptable(0, 2) && is_acceptable(1, 2) && !is_acceptable(1, 1));
        assert!(!is_acceptable(2, 2) && !is_acceptable(255, 300) && is_acceptable(256, 0));
    }

    #[test]
    fn reverse_search() {
        let found = find_ids_with_tld("org", 5);
        assert_eq!(found.len(), 5);
        for (id, h) in &found {
            assert!(*id >= 256 && h.ends_with(".org"));
            assert_eq!(hostname(*id).as_deref(), Some(h.as_str()));
        }
        assert!(found.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(find_ids_with_tld("xyz", 5).is_empty());
        assert_eq!(id_for_hostname("cable.wufkweyy3uaxb.com"), Some(266));
    }

    #[test]
    fn every_hashed_hostname_is_well_formed() {
        for id in FIRST_HASHED_ID..=u16::MAX {
            let h = hostname(id).unwrap();
            let parts: Vec<&str> = h.split('.').collect();
            assert_eq!(parts.len(), 3, "{h}");
            assert_eq!(parts[0], "cable");
            assert!(
                !parts[1].is_empty() && parts[1].bytes().all(|b| BASE32.contains(&b)),
                "{h}"
            );
            assert!(HASHED_TLDS.contains(&parts[2]), "{h}");
        }
    }

    proptest::proptest! {
        #[test]
        fn search_never_panics(tld in "\\PC{0,8}", count in 0usize..4) {
            let found = find_ids_with_tld(&tld, count);
            proptest::prop_assert!(found.len() <= count);
        }
    }
}

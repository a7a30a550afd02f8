//! The base-10 ("digits") encoding of the QR payload (docs/protocol.md §2.3).
//!
//! Bytes are taken in 7-byte chunks, each read as a little-endian integer and printed as 17
//! zero-padded decimal digits; a trailing chunk of n bytes (1–6) gets 3, 5, 8, 10, 13 or 15
//! digits. Digits fit QR numeric mode, which packs far denser than byte mode.

use crate::{Error, InvalidMessage};

const CHUNK_SIZE: usize = 7;
const CHUNK_DIGITS: usize = 17;
/// Digits used for a partial chunk of `n` bytes, indexed by `n` (0 is unused).
const PARTIAL_DIGITS: [usize; 7] = [0, 3, 5, 8, 10, 13, 15];

/// Encodes bytes as decimal digits.
///
/// ```
/// assert_eq!(hybridge_proto::digits::encode(&[0x61, 0x62, 0xff]), "16736865");
/// ```
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(CHUNK_SIZE) * CHUNK_DIGITS);
    for chunk in bytes.chunks(CHUNK_SIZE) {
        let mut le = [0u8; 8];
        le[..chunk.len()].copy_from_slice(chunk);
        let v = u64::from_le_bytes(le);
        let width = if chunk.len() == CHUNK_SIZE {
            CHUNK_DIGITS
        } else {
            PARTIAL_DIGITS[chunk.len()]
        };
        out.push_str(&format!("{v:0width$}"));
    }
    out
}

/// Decodes decimal digits strictly: only ASCII digits, whole 17-digit groups below 2⁵⁶, and a
/// remainder of 3, 5, 8, 10, 13 or 15 digits whose value fits its byte count.
pub fn decode(digits: &str) -> Result<Vec<u8>, Error> {
    let d = digits.as_bytes();
    if let Some(pos) = d.iter().position(|b| !b.is_ascii_digit()) {
        return Err(InvalidMessage::NotADigit { position: pos + 1 }.into());
    }
    let mut out = Vec::with_capacity(d.len() / CHUNK_DIGITS * CHUNK_SIZE + CHUNK_SIZE);
    let mut rest = d;
    while !rest.is_empty() {
        let (take, nbytes) = if rest.len() >= CHUNK_DIGITS {
            (CHUNK_DIGITS, CHUNK_SIZE)
        } else {
            match PARTIAL_DIGITS.iter().position(|&w| w == rest.len()) {
                Some(n) if n > 0 => (rest.len(), n),
                _ => {
                    return Err(InvalidMessage::DigitGroupLength(rest.len()).into());
                }
            }
        };
        let (group, tail) = rest.split_at(take);
        // At most 17 ASCII digits: fits in u64 (10^17 < 2^64) without overflow.
        let v = group
            .iter()
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
        if v >> (8 * nbytes) != 0 {
            return Err(InvalidMessage::DigitGroupRange(nbytes).into());
        }
        out.extend_from_slice(&v.to_le_bytes()[..nbytes]);
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectors() {
        // docs/protocol.md §10.3.
        assert_eq!(encode(&[0x61, 0x62, 0xff]), "16736865");
        assert_eq!(decode("16736865").unwrap(), vec![0x61, 0x62, 0xff]);
        assert_eq!(encode(b"hello world"), "335311851610699281684828783");
        assert_eq!(
            decode("335311851610699281684828783").unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn partial_widths() {
        for (n, &width) in PARTIAL_DIGITS.iter().enumerate().skip(1) {
            assert_eq!(encode(&vec![0xff; n]).len(), width);
        }
        assert_eq!(encode(&[0; 7]), "00000000000000000");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decode("0").is_err());
        assert!(decode("999").is_err());
        assert!(decode("12a").is_err());
        assert!(decode("１２３").is_err()); // full-width digits
        assert!(decode("99999999999999999").is_err()); // >= 2^56
        assert!(decode("0000").is_err());
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }

    proptest! {
        #[test]
        fn round_trip(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(decode(&encode(&b)).unwrap(), b);
        }

        #[test]
        fn decode_never_panics(s in "\\PC*") {
            let _ = decode(&s);
        }

        #[test]
        fn decode_digit_strings_never_panic(s in "[0-9]{0,80}") {
            if let Ok(b) = decode(&s) {
                prop_assert_eq!(encode(&b), s);
            }
        }
    }
}

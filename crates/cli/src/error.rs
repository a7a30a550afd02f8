//! The CLI's one error type and its exit codes.

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for input that was read but is invalid (bad QR code, foreign advert, …).
pub const EXIT_INVALID_INPUT: i32 = 1;
/// Exit code for command-line usage errors (unknown flag, missing argument).
pub const EXIT_USAGE: i32 = 2;

/// Why a command failed. Each message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The protocol layer rejected the input.
    #[error("{0}")]
    Proto(#[from] hybridge_proto::Error),
    /// A hex argument did not decode.
    #[error("{what} is not valid hex: {reason}")]
    Hex {
        /// Which argument.
        what: &'static str,
        /// What hex decoding said.
        reason: String,
    },
    /// Any other invalid input, with a message that says what to do.
    #[error("{0}")]
    Invalid(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        EXIT_INVALID_INPUT
    }
}

/// Decodes a hex argument, tolerating surrounding whitespace, `:` or space separators and an
/// optional `0x` prefix (as copied from btmon or Wireshark).
pub fn parse_hex(what: &'static str, s: &str) -> Result<Vec<u8>, CliError> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let cleaned: String = t
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    hex::decode(&cleaned).map_err(|e| CliError::Hex {
        what,
        reason: e.to_string(),
    })
}

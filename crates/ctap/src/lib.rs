//! CTAP2 messages for hybridge.
#![forbid(unsafe_code)]

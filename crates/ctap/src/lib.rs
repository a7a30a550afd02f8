//! CTAP2 messages for hybridge: the requests a laptop sends to a phone over a hybrid tunnel and
//! the responses the phone sends back, as typed structs with encode **and** decode each way
//! (the laptop encodes requests and decodes responses, the phone the reverse).
//!
//! * [`Request`] / [`Response`]: the hybrid byte layer, `command || CBOR` and
//!   `status || CBOR` (docs/protocol.md §9).
//! * [`MakeCredentialRequest`], [`GetAssertionRequest`], [`MakeCredentialResponse`],
//!   [`GetAssertionResponse`], [`GetInfoResponse`]: authenticatorMakeCredential (0x01),
//!   GetAssertion (0x02), GetInfo (0x04); authenticatorSelection (0x0B) has no parameters.
//! * [`StatusCode`] and [`CtapError`]: every decoder failure carries the status code an
//!   authenticator must answer with.
//! * [`AuthenticatorData`], [`CoseKey`], [`AttestationStatement`]: what the relying party
//!   verifies, with parse and build.
//! * [`extensions`]: `prf` (as Chromium's hybrid phone speaks it), `hmac-secret`, `credProps`.
//!
//! Output is CTAP2 canonical CBOR (through `hybridge-cbor`); input is decoded strictly (size
//! and depth limits, trailing bytes rejected) while unknown map keys are ignored.
//!
//! The request and response structs, their extension structs and getInfo will grow with
//! CTAP: they are `#[non_exhaustive]` and implement `Default`, so they are built from
//! `default()` and their public fields set:
//!
//! ```
//! use hybridge_ctap::*;
//! let mut req = GetAssertionRequest::default();
//! req.rp_id = "example.com".into();
//! req.allow_list = vec![CredentialDescriptor::public_key(vec![1, 2, 3])];
//! req.options = Options { uv: Some(true), ..Default::default() };
//! let bytes = Request::from(req.clone()).encode();
//! assert_eq!(bytes[0], 0x02);
//! assert_eq!(Request::decode(&bytes).unwrap(), Request::from(req));
//! // An unknown command gets CTAP1_ERR_INVALID_COMMAND.
//! assert_eq!(Request::decode(&[0x42]).unwrap_err().status, StatusCode::CTAP1_ERR_INVALID_COMMAND);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod attestation;
pub mod authdata;
pub mod extensions;
pub mod fields;
pub mod request;
pub mod response;
pub mod status;
pub mod types;

pub use attestation::{AttestationStatement, attestation_object, parse_attestation_object};
pub use authdata::{AttestedCredentialData, AuthenticatorData, CoseKey, Flags, rp_id_hash};
pub use extensions::{PrfInputs, PrfOutputs, PrfValues, UnsignedExtensionOutputs};
pub use request::{
    Command, GetAssertionExtensions, GetAssertionRequest, MakeCredentialExtensions,
    MakeCredentialRequest, Request,
};
pub use response::{GetAssertionResponse, GetInfoResponse, MakeCredentialResponse, Response};
pub use status::{CtapError, StatusCode};
pub use types::{CredentialDescriptor, Options, PubKeyCredParam, RpEntity, UserEntity};

#[cfg(test)]
mod proptests;

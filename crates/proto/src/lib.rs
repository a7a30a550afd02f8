//! The FIDO hybrid transport (caBLE v2) wire protocol, with no I/O.
//!
//! Every protocol decision lives here; the async crates only move bytes and wait. Nothing in
//! this crate opens a socket, reads a clock or draws randomness of its own: callers pass in
//! the time, a CSPRNG, or explicit keys and nonces, so every exchange can be replayed
//! byte-for-byte in a test.
//!
//! | module | docs/protocol.md § | what |
//! |---|---|---|
//! | [`qr`], [`digits`] | 2 | the `FIDO:/` QR code: CBOR payload and base-10 digits |
//! | [`kdf`], [`keys`] | 3 | HKDF purposes; P-256 keys, ECDH, Chromium's seed → key |
//! | [`advert`] | 4 | the encrypted 20-byte BLE advert and its CTAP 2.3 suffix |
//! | [`domain`] | 5 | tunnel-server domain IDs and hostnames |
//! | [`tunnel`] | 6 | `/cable/new`, `/cable/connect`, `/cable/contact` paths |
//! | [`handshake`] | 7 | Noise KNpsk0 / NKpsk0 over P-256 (via `snow`) |
//! | [`crypter`] | 8.1 | AES-256-GCM record layer with padding, up to 1 MiB |
//! | [`frame`] | 8.2–8.4 | message types, revisions, post-handshake and update messages |
//! | [`linking`] | 8.5 | linking data, its signature, the `/cable/contact` client payload |
//! | [`contact`] | 6.3, 8.5 | reaching a linked phone through a hybridge relay: contact ID, wake-up subscription, strict client payload |
//! | [`session`] | all | the typestate handshake and channel of each side (QR and linked flows) |
//! | [`engine`] | all | the session engines: every rule and timeout of a ceremony, fed inputs with a time, asked for outputs |
//!
//! Secrets ([`secret::Secret`]) are zeroized on drop, redacted in `Debug` and compared in
//! constant time.
//!
//! # Example: a whole QR-flow session in memory
//!
//! ```
//! use hybridge_proto::advert::AdvertPlaintext;
//! use hybridge_proto::frame::PostHandshake;
//! use hybridge_proto::keys;
//! use hybridge_proto::qr::{QrKeys, RequestType};
//! use hybridge_proto::session::{LaptopEvent, LaptopQr, PhoneEvent, PhoneQr};
//! use hybridge_proto::tunnel::RoutingId;
//!
//! let mut rng = rand_core::OsRng;
//! // Laptop: show a QR code.
//! let mut laptop = LaptopQr::new(QrKeys::generate(&mut rng), 1_700_000_000, false, RequestType::GetAssertion);
//! let url = laptop.qr_url();
//! assert!(url.starts_with("FIDO:/"));
//!
//! // Phone: scan it, open /cable/new/<tunnel ID>, advertise with the routing ID it got.
//! let mut phone = PhoneQr::from_qr_url(&url)?;
//! let advert = phone.service_data(AdvertPlaintext::new(&mut rng, RoutingId([1, 2, 3]), 0), None);
//!
//! // Laptop: the advert says where to connect; then the Noise handshake.
//! let connect = laptop.on_advert(&advert)?.expect("our advert");
//! assert!(connect.url().unwrap().starts_with("wss://cable.ua5v.com/cable/connect/010203/"));
//! let msg1 = laptop.handshake_message(&keys::generate(&mut rng))?;
//! let (mut phone, msg2) = phone.respond(&msg1, &keys::generate(&mut rng))?;
//! let mut laptop = laptop.finish(&msg2)?;
//!
//! // Phone: post-handshake message with its getInfo; laptop: one CTAP request.
//! let ph = phone.post_handshake(&PostHandshake::ctap(vec![0xa0]))?;
//! assert!(matches!(laptop.on_message(&ph)?[0], LaptopEvent::PostHandshake { .. }));
//! let request = laptop.send_ctap(&[0x02, 0xa0])?;
//! assert_eq!(phone.on_message(&request)?, PhoneEvent::CtapRequest(vec![0x02, 0xa0]));
//! let response = phone.send_ctap(&[0x00, 0xa0])?;
//! assert_eq!(laptop.on_message(&response)?, vec![LaptopEvent::CtapResponse(vec![0x00, 0xa0])]);
//! let shutdown = laptop.shutdown()?.expect("revision 1 has a shutdown message");
//! assert_eq!(phone.on_message(&shutdown)?, PhoneEvent::Shutdown);
//! # Ok::<(), hybridge_proto::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod advert;
pub mod contact;
pub mod crypter;
pub mod digits;
pub mod domain;
pub mod engine;
mod error;
pub mod frame;
pub mod fuzz;
pub mod handshake;
pub mod kdf;
pub mod keys;
pub mod linking;
pub mod qr;
pub mod secret;
pub mod session;
pub mod tunnel;

pub use error::{ApiMisuse, Error, InvalidMessage, PeerMisbehaved};

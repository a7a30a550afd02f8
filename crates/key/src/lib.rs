//! A virtual FIDO2 security key for Linux.
//!
//! * [`ctaphid`]: the CTAPHID protocol (CTAP 2.2 §11.2) as a sans-I/O engine: 64-byte HID
//!   reports in, complete messages out, and answers back into reports, with channels,
//!   keepalives and the transaction timeout. No clock, no device: the caller passes `now`.
//! * [`uhid`]: the kernel's `/dev/uhid` interface, which makes a HID device appear that
//!   browsers, libfido2 and OpenSSH find like a USB security key. The structs of
//!   `linux/uhid.h` are written and read by hand, so this crate has no `unsafe`.
//!
//! What the key does with a CTAP2 request (forward it to a phone over hybrid) is the
//! `hybridge key` command's business; this crate only frames and delivers.
#![forbid(unsafe_code)]

pub mod ctaphid;
pub mod fuzz;
pub mod uhid;

pub use ctaphid::{Command, Engine, Limits, Output, Request, RequestId, Status};
pub use uhid::{Config, Device, DeviceEvent, Error, Writer};

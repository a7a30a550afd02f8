//! A HID device made through the kernel's `/dev/uhid` (Documentation/hid/uhid.rst).
//!
//! Userspace talks to `/dev/uhid` with `struct uhid_event` (`linux/uhid.h`): a `__u32` type
//! and a packed union, written and read as whole structs. The kernel copies at most
//! `sizeof(struct uhid_event)` and zeroes the rest of a shorter write, so requests are written
//! only as long as they need to be. The layouts are spelled out below, byte by byte, in the
//! host's byte order, so no `unsafe` cast is needed.
//!
//! Only what a FIDO key needs: `UHID_CREATE2` with the FIDO report descriptor,
//! `UHID_INPUT2` for the key's reports, `UHID_OUTPUT` for the application's, and
//! `UHID_DESTROY`. `UHID_GET_REPORT` / `UHID_SET_REPORT` (feature reports, which FIDO does not
//! use) are refused with `EIO`, so the kernel never waits on them.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::ctaphid::{REPORT_SIZE, Report};

/// Where the kernel's UHID interface lives.
pub const DEFAULT_PATH: &str = "/dev/uhid";

// enum uhid_event_type
const UHID_DESTROY: u32 = 1;
const UHID_START: u32 = 2;
const UHID_STOP: u32 = 3;
const UHID_OPEN: u32 = 4;
const UHID_CLOSE: u32 = 5;
const UHID_OUTPUT: u32 = 6;
const UHID_GET_REPORT: u32 = 9;
const UHID_GET_REPORT_REPLY: u32 = 10;
const UHID_CREATE2: u32 = 11;
const UHID_INPUT2: u32 = 12;
const UHID_SET_REPORT: u32 = 13;
const UHID_SET_REPORT_REPLY: u32 = 14;

/// `UHID_DATA_MAX` and `HID_MAX_DESCRIPTOR_SIZE`.
const DATA_MAX: usize = 4096;
/// `struct uhid_create2_req` before `rd_data`: name[128], phys[64], uniq[64], rd_size u16,
/// bus u16, vendor u32, product u32, version u32, country u32.
const CREATE2_HEADER: usize = 128 + 64 + 64 + 2 + 2 + 4 * 4;
/// `sizeof(struct uhid_event)`: the type and the largest member, `uhid_create2_req`.
pub const EVENT_SIZE: usize = 4 + CREATE2_HEADER + DATA_MAX;
/// `rtype` of an output report (`UHID_OUTPUT_REPORT`).
const UHID_OUTPUT_REPORT: u8 = 1;
/// `BUS_USB` from `linux/input.h`: browsers and libfido2 look for USB HID devices.
pub const BUS_USB: u16 = 0x03;
/// `EIO`, the answer to feature-report requests.
const EIO: u16 = 5;

/// The FIDO HID report descriptor (CTAP 2.2 §11.2.8.1): usage page 0xF1D0 (FIDO Alliance),
/// usage 0x01 (CTAPHID), one application collection with a 64-byte input report (usage 0x20)
/// and a 64-byte output report (usage 0x21), no report IDs.
pub const FIDO_REPORT_DESCRIPTOR: [u8; 34] = [
    0x06, 0xd0, 0xf1, // Usage Page (FIDO Alliance)
    0x09, 0x01, // Usage (CTAPHID)
    0xa1, 0x01, // Collection (Application)
    0x09, 0x20, //   Usage (Input Report Data)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xff, 0x00, //   Logical Maximum (255)
    0x75, 0x08, //   Report Size (8)
    0x95, 0x40, //   Report Count (64)
    0x81, 0x02, //   Input (Data, Var, Abs)
    0x09, 0x21, //   Usage (Output Report Data)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xff, 0x00, //   Logical Maximum (255)
    0x75, 0x08, //   Report Size (8)
    0x95, 0x40, //   Report Count (64)
    0x91, 0x02, //   Output (Data, Var, Abs)
    0xc0, // End Collection
];

/// Errors of the UHID device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no UHID interface.
    #[error(
        "{} does not exist: load the kernel's uhid module (`sudo modprobe uhid`; to load it at \
         every boot: `echo uhid | sudo tee /etc/modules-load.d/uhid.conf`)",
        .0.display()
    )]
    Missing(PathBuf),
    /// The UHID interface is there but this user may not open it.
    #[error(
        "cannot open {}: permission denied. Install the udev rule that lets the logged-in user \
         create the key (deploy/udev/70-hybridge-key.rules into /etc/udev/rules.d/, then \
         `sudo udevadm control --reload && sudo udevadm trigger /dev/uhid`), or run as root",
        .0.display()
    )]
    PermissionDenied(PathBuf),
    /// Opening failed otherwise.
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading or writing the device failed.
    #[error("the UHID device failed while {what}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The kernel sent an event this code cannot read (too short).
    #[error("the kernel sent a UHID event of {0} bytes, too short for its type")]
    ShortEvent(usize),
    /// The device's name or report descriptor does not fit the kernel's struct.
    #[error("invalid device configuration: {0}")]
    Config(&'static str),
}

/// What the device is called and says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The product name applications show (at most 127 bytes).
    pub name: String,
    /// The physical location string (at most 63 bytes).
    pub phys: String,
    /// A unique ID, as a serial number (at most 63 bytes).
    pub uniq: String,
    /// Bus type: [`BUS_USB`].
    pub bus: u16,
    /// USB vendor ID.
    pub vendor: u32,
    /// USB product ID.
    pub product: u32,
    /// Device version.
    pub version: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "hybridge key".into(),
            phys: "hybridge".into(),
            uniq: String::new(),
            bus: BUS_USB,
            // pid.codes' open-source vendor ID with one of its test product IDs: not a
            // registered product, and not any real key's ID that an application might quirk.
            vendor: 0x1209,
            product: 0x0001,
            version: 0x0100,
        }
    }
}

/// What the kernel tells the device.
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The HID driver bound to the device.
    Start,
    /// The HID driver unbound.
    Stop,
    /// An application opened the device (the first one).
    Open,
    /// The last application closed the device.
    Close,
    /// An application wrote this 64-byte output report (the report number 0 that hidraw
    /// puts first, for a device without report IDs, is removed).
    Output(Report),
    /// An output report of another size, ignored by CTAPHID.
    BadOutput(usize),
    /// Anything else (feature-report requests are answered before they get here).
    Other(u32),
}

impl fmt::Debug for DeviceEvent {
    // Output reports carry the application's requests (PINs among them): never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceEvent::Start => f.write_str("Start"),
            DeviceEvent::Stop => f.write_str("Stop"),
            DeviceEvent::Open => f.write_str("Open"),
            DeviceEvent::Close => f.write_str("Close"),
            DeviceEvent::Output(_) => f.write_str("Output(64 bytes)"),
            DeviceEvent::BadOutput(n) => write!(f, "BadOutput({n} bytes)"),
            DeviceEvent::Other(t) => write!(f, "Other({t})"),
        }
    }
}

/// `UHID_CREATE2` for `config` and `descriptor`.
pub fn create2_event(config: &Config, descriptor: &[u8]) -> Result<Vec<u8>, Error> {
    fn put_str(buf: &mut [u8], s: &str, what: &'static str) -> Result<(), Error> {
        // NUL-terminated within its field.
        if s.len() >= buf.len() || s.as_bytes().contains(&0) {
            return Err(Error::Config(what));
        }
        buf[..s.len()].copy_from_slice(s.as_bytes());
        Ok(())
    }
    if descriptor.is_empty() || descriptor.len() > DATA_MAX {
        return Err(Error::Config(
            "the report descriptor must be 1 to 4096 bytes",
        ));
    }
    let mut e = vec![0u8; 4 + CREATE2_HEADER + descriptor.len()];
    e[..4].copy_from_slice(&UHID_CREATE2.to_ne_bytes());
    let r = &mut e[4..];
    put_str(
        &mut r[..128],
        &config.name,
        "the name is longer than 127 bytes",
    )?;
    put_str(
        &mut r[128..192],
        &config.phys,
        "the phys string is longer than 63 bytes",
    )?;
    put_str(
        &mut r[192..256],
        &config.uniq,
        "the uniq string is longer than 63 bytes",
    )?;
    // ≤ 4096, checked above.
    r[256..258].copy_from_slice(&(descriptor.len() as u16).to_ne_bytes());
    r[258..260].copy_from_slice(&config.bus.to_ne_bytes());
    r[260..264].copy_from_slice(&config.vendor.to_ne_bytes());
    r[264..268].copy_from_slice(&config.product.to_ne_bytes());
    r[268..272].copy_from_slice(&config.version.to_ne_bytes());
    r[272..276].copy_from_slice(&0u32.to_ne_bytes()); // country
    r[CREATE2_HEADER..].copy_from_slice(descriptor);
    Ok(e)
}

/// `UHID_INPUT2` carrying one input report.
pub fn input2_event(report: &Report) -> Vec<u8> {
    let mut e = Vec::with_capacity(4 + 2 + REPORT_SIZE);
    e.extend_from_slice(&UHID_INPUT2.to_ne_bytes());
    e.extend_from_slice(&(REPORT_SIZE as u16).to_ne_bytes());
    e.extend_from_slice(report);
    e
}

/// `UHID_DESTROY`.
pub fn destroy_event() -> Vec<u8> {
    UHID_DESTROY.to_ne_bytes().to_vec()
}

/// What to do with an event read from the kernel.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Hand this to the caller.
    Event(DeviceEvent),
    /// Write this reply to the kernel (a refused feature-report request) and read on.
    Reply(Vec<u8>),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads one `struct uhid_event` as the kernel wrote it (normally [`EVENT_SIZE`] bytes).
pub fn parse_event(b: &[u8]) -> Result<Parsed, Error> {
    let short = || Error::ShortEvent(b.len());
    let kind = u32_at(b, 0).ok_or_else(short)?;
    let ev = match kind {
        UHID_START => DeviceEvent::Start,
        UHID_STOP => DeviceEvent::Stop,
        UHID_OPEN => DeviceEvent::Open,
        UHID_CLOSE => DeviceEvent::Close,
        UHID_OUTPUT => {
            // struct uhid_output_req { __u8 data[4096]; __u16 size; __u8 rtype; }
            let size = usize::from(u16_at(b, 4 + DATA_MAX).ok_or_else(short)?);
            let rtype = *b.get(4 + DATA_MAX + 2).ok_or_else(short)?;
            let data = &b[4..4 + size.min(DATA_MAX)];
            // hidraw passes the report number first; it is 0 for a device without IDs.
            let data = match data {
                [0, rest @ ..] if rest.len() == REPORT_SIZE => rest,
                d => d,
            };
            match <Report>::try_from(data) {
                Ok(r) if rtype == UHID_OUTPUT_REPORT => DeviceEvent::Output(r),
                _ => DeviceEvent::BadOutput(size),
            }
        }
        UHID_GET_REPORT => {
            // struct uhid_get_report_req { __u32 id; __u8 rnum; __u8 rtype; }
            // reply: struct uhid_get_report_reply_req { __u32 id; __u16 err; __u16 size; … }
            let id = u32_at(b, 4).ok_or_else(short)?;
            return Ok(Parsed::Reply(refusal(
                UHID_GET_REPORT_REPLY,
                id,
                &0u16.to_ne_bytes(),
            )));
        }
        UHID_SET_REPORT => {
            // reply: struct uhid_set_report_reply_req { __u32 id; __u16 err; }
            let id = u32_at(b, 4).ok_or_else(short)?;
            return Ok(Parsed::Reply(refusal(UHID_SET_REPORT_REPLY, id, &[])));
        }
        other => DeviceEvent::Other(other),
    };
    Ok(Parsed::Event(ev))
}

/// The reply (`event`: a `uhid_*_report_reply_req`) refusing the kernel's request `id` with
/// EIO, as a FIDO device with no feature reports does; `tail` follows the error field.
fn refusal(event: u32, id: u32, tail: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(10 + tail.len());
    r.extend_from_slice(&event.to_ne_bytes());
    r.extend_from_slice(&id.to_ne_bytes());
    r.extend_from_slice(&EIO.to_ne_bytes());
    r.extend_from_slice(tail);
    r
}

/// A FIDO HID device, alive while this (or a [`Writer`] cloned from it) is open. Dropping the
/// last handle destroys it; [`Writer::destroy`] does so at once.
pub struct Device {
    file: File,
    buf: Vec<u8>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device").finish_non_exhaustive()
    }
}

/// Writes to the device (input reports, destroy); a second handle to the same file, for the
/// side that does not block in [`Device::read_event`].
#[derive(Debug)]
pub struct Writer {
    file: File,
}

fn open(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::Missing(path.to_owned()),
            io::ErrorKind::PermissionDenied => Error::PermissionDenied(path.to_owned()),
            _ => Error::Open {
                path: path.to_owned(),
                source: e,
            },
        })
}

fn write_event(file: &mut File, event: &[u8], what: &'static str) -> Result<(), Error> {
    let n = file
        .write(event)
        .map_err(|source| Error::Io { what, source })?;
    if n != event.len() {
        return Err(Error::Io {
            what,
            source: io::Error::new(io::ErrorKind::WriteZero, "short write"),
        });
    }
    Ok(())
}

impl Device {
    /// Opens `path` (normally [`DEFAULT_PATH`]) and creates a FIDO device there.
    pub fn create(path: &Path, config: &Config) -> Result<Device, Error> {
        let event = create2_event(config, &FIDO_REPORT_DESCRIPTOR)?;
        let mut file = open(path)?;
        write_event(&mut file, &event, "creating the device")?;
        Ok(Device {
            file,
            buf: vec![0; EVENT_SIZE],
        })
    }

    /// A second handle for writing.
    pub fn writer(&self) -> Result<Writer, Error> {
        let file = self.file.try_clone().map_err(|source| Error::Io {
            what: "duplicating its handle",
            source,
        })?;
        Ok(Writer { file })
    }

    /// Waits (blocking) for the kernel's next event; feature-report requests are refused
    /// on the way.
    pub fn read_event(&mut self) -> Result<DeviceEvent, Error> {
        loop {
            let n = self.file.read(&mut self.buf).map_err(|source| Error::Io {
                what: "reading an event",
                source,
            })?;
            if n == 0 {
                return Err(Error::Io {
                    what: "reading an event",
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "end of file"),
                });
            }
            match parse_event(&self.buf[..n])? {
                Parsed::Event(e) => return Ok(e),
                Parsed::Reply(r) => write_event(&mut self.file, &r, "answering a report request")?,
            }
        }
    }
}

impl Writer {
    /// Sends one input report to the applications that have the device open.
    pub fn input(&mut self, report: &Report) -> Result<(), Error> {
        write_event(&mut self.file, &input2_event(report), "sending a report")
    }

    /// Removes the device now (closing every handle does too).
    pub fn destroy(&mut self) -> Result<(), Error> {
        write_event(&mut self.file, &destroy_event(), "destroying the device")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create2_follows_the_kernel_layout() {
        let e = create2_event(&Config::default(), &FIDO_REPORT_DESCRIPTOR).unwrap();
        // sizeof(struct uhid_event) in linux/uhid.h's packed layout: the type, then
        // uhid_create2_req (276 header bytes and rd_data[4096]), its largest member.
        assert_eq!(EVENT_SIZE, 4376);
        assert_eq!(e.len(), 4 + 276 + 34);
        assert_eq!(u32_at(&e, 0), Some(11));
        assert_eq!(&e[4..16], b"hybridge key");
        assert_eq!(e[16], 0);
        assert_eq!(u16_at(&e, 4 + 256), Some(34), "rd_size");
        assert_eq!(u16_at(&e, 4 + 258), Some(3), "bus USB");
        assert_eq!(u32_at(&e, 4 + 260), Some(0x1209));
        assert_eq!(&e[4 + 276..4 + 279], &[0x06, 0xd0, 0xf1], "FIDO usage page");
    }

    #[test]
    fn create2_refuses_what_does_not_fit() {
        let long = Config {
            name: "x".repeat(128),
            ..Config::default()
        };
        assert!(matches!(
            create2_event(&long, &FIDO_REPORT_DESCRIPTOR),
            Err(Error::Config(_))
        ));
        assert!(create2_event(&Config::default(), &[]).is_err());
        assert!(create2_event(&Config::default(), &[0; 4097]).is_err());
    }

    #[test]
    fn descriptor_declares_64_byte_reports() {
        let d = FIDO_REPORT_DESCRIPTOR;
        assert_eq!(d.iter().filter(|&&b| b == 0x95).count(), 2);
        assert!(d.windows(2).filter(|w| w == &[0x95, 0x40]).count() == 2);
    }

    fn output_event(data: &[u8], rtype: u8) -> Vec<u8> {
        let mut e = vec![0u8; EVENT_SIZE];
        e[..4].copy_from_slice(&6u32.to_ne_bytes());
        e[4..4 + data.len()].copy_from_slice(data);
        e[4 + 4096..4 + 4098].copy_from_slice(&(data.len() as u16).to_ne_bytes());
        e[4 + 4098] = rtype;
        e
    }

    #[test]
    fn output_reports_are_read_with_or_without_the_report_number() {
        let mut report = [0u8; 64];
        report[0] = 0xff;
        report[63] = 9;
        let mut with_number = vec![0u8];
        with_number.extend_from_slice(&report);
        for data in [&report[..], &with_number[..]] {
            assert_eq!(
                parse_event(&output_event(data, 1)).unwrap(),
                Parsed::Event(DeviceEvent::Output(report))
            );
        }
        assert_eq!(
            parse_event(&output_event(&[1; 10], 1)).unwrap(),
            Parsed::Event(DeviceEvent::BadOutput(10))
        );
        assert_eq!(
            parse_event(&output_event(&report, 0)).unwrap(),
            Parsed::Event(DeviceEvent::BadOutput(64)),
            "a feature report is not CTAPHID"
        );
    }

    #[test]
    fn report_requests_are_refused_and_short_events_are_errors() {
        let mut get = vec![0u8; 10];
        get[..4].copy_from_slice(&9u32.to_ne_bytes());
        get[4..8].copy_from_slice(&77u32.to_ne_bytes());
        let Parsed::Reply(r) = parse_event(&get).unwrap() else {
            panic!("a reply")
        };
        assert_eq!(u32_at(&r, 0), Some(10));
        assert_eq!(u32_at(&r, 4), Some(77));
        assert_eq!(u16_at(&r, 8), Some(5));
        assert!(matches!(parse_event(&[1, 0]), Err(Error::ShortEvent(2))));
        assert!(matches!(
            parse_event(&6u32.to_ne_bytes()),
            Err(Error::ShortEvent(4))
        ));
        assert_eq!(
            parse_event(&4u32.to_ne_bytes()).unwrap(),
            Parsed::Event(DeviceEvent::Open)
        );
    }

    #[test]
    fn a_missing_interface_says_what_to_do() {
        let e = Device::create(Path::new("/nonexistent/uhid"), &Config::default()).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, Error::Missing(_)));
        assert!(s.contains("modprobe uhid"), "{s}");
    }

    #[test]
    fn input2_carries_the_report() {
        let r = [7u8; 64];
        let e = input2_event(&r);
        assert_eq!(u32_at(&e, 0), Some(12));
        assert_eq!(u16_at(&e, 4), Some(64));
        assert_eq!(&e[6..], &r);
    }
}

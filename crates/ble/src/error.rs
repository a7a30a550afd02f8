//! The crate's one error type.

use std::time::Duration;

/// Everything that can go wrong in the radio layer.
///
/// The messages are meant for the person at the terminal: each says what failed and, where
/// there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// BlueZ answered but has no adapter (or not the one that was asked for).
    #[error(
        "no Bluetooth adapter found{}: plug in or enable a Bluetooth adapter, \
         or test without Bluetooth using --ble udp:ADDR:PORT",
        match .wanted { Some(name) => format!(" named {name:?}"), None => String::new() }
    )]
    NoAdapter {
        /// The adapter name that was asked for, if any (e.g. `hci1`).
        wanted: Option<String>,
    },

    /// The system D-Bus or the BlueZ daemon could not be reached (or did not answer in time).
    #[error(
        "BlueZ (bluetoothd) is not running or D-Bus is unavailable: {detail}; \
         start it with `systemctl start bluetooth`, or test without Bluetooth using \
         --ble udp:ADDR:PORT"
    )]
    BluezUnavailable {
        /// What exactly failed, as reported by D-Bus / BlueZ or our own timeout.
        detail: String,
    },

    /// BlueZ was reached but refused or failed an operation.
    #[error("Bluetooth {operation} failed: {detail}")]
    Bluetooth {
        /// What we were doing (e.g. "start scan", "register advertisement").
        operation: &'static str,
        /// The error BlueZ reported.
        detail: String,
    },

    /// The CTAP 2.3 data channel (BLE L2CAP) could not be opened, or failed.
    #[error("the Bluetooth data channel failed: {0}")]
    DataChannel(String),

    /// The radio kind is not available on this platform or in this build (BlueZ off Linux,
    /// or without the `bluez` feature).
    #[error("{0} is not supported here; use --ble udp:ADDR:PORT or --ble memory")]
    Unsupported(&'static str),

    /// A `--ble` radio specification could not be parsed.
    #[error(
        "invalid radio {spec:?}: {reason}; expected bluez[:ADAPTER][,timeout=DUR], \
         udp:ADDR:PORT[,bind=ADDR:PORT][,interval=DUR] or memory[,interval=DUR]"
    )]
    InvalidSpec {
        /// The text that was given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A socket operation of the UDP radio failed.
    #[error("UDP radio: cannot {action} {addr}: {source}")]
    Udp {
        /// What we tried to do ("bind", "send to", ...).
        action: &'static str,
        /// The address involved.
        addr: std::net::SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The service data to advertise is longer than one AD structure can carry.
    #[error("service data is {len} bytes; at most {max} bytes can be advertised")]
    ServiceDataTooLong {
        /// Length given.
        len: usize,
        /// The limit, [`crate::MAX_SERVICE_DATA_LEN`].
        max: usize,
    },

    /// No advertisement arrived within the time allowed.
    #[error("no advertisement received within {0:?}; is the other device advertising nearby?")]
    ScanTimeout(Duration),

    /// The scan ended (it was stopped, or the radio failed) before an advertisement arrived.
    #[error("the scan ended: {0}")]
    ScanEnded(String),
}

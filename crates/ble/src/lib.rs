//! The radio layer of hybridge: BLE advertisements in and out, nothing more.
//!
//! The FIDO hybrid transport proves proximity with a BLE advertisement: the phone advertises
//! 20 bytes of encrypted service data under the 16-bit UUID `0xFFF9` (iOS and older Chromium
//! use `0xFDE2`), and the laptop scans for it (docs/protocol.md §4). This crate only moves those
//! service-data bytes. Encrypting and trial-decrypting them is `hybridge-proto`'s job.
//!
//! Two object-safe traits, so a program can pick a radio at run time ([`RadioSpec`]):
//!
//! - [`Scanner`]: [`Scanner::scan`] starts a [`Scan`], a bounded queue of received
//!   [`Advertisement`]s (repeats included), also usable as a `Stream`. Dropping it or calling
//!   [`Scan::stop`] stops scanning.
//! - [`Advertiser`]: [`Advertiser::advertise`] starts advertising and returns an
//!   [`AdvertisingHandle`]; advertising stops when it is dropped or [`AdvertisingHandle::stop`]
//!   is called.
//!
//! Radios:
//!
//! | `--ble` | Scanner | Advertiser |
//! |---|---|---|
//! | `bluez[:hciN]` | [`bluez::BluezScanner`] (bluer) | [`bluez::BluezAdvertiser`] (bluer) |
//! | `udp:ADDR:PORT` | [`udp::UdpScanner`] | [`udp::UdpAdvertiser`] |
//! | `memory` | [`MemoryRadio`] | [`MemoryRadio`] |
//!
//! The UDP radio carries one advertisement per datagram as the text
//! `ADV <uuid16 as 4 lowercase hex digits> <service data as lowercase hex>`, e.g.
//! `ADV fff9 00112233445566778899aabbccddeeff00112233`; see [`udp`] for the details.
//!
//! Without Bluetooth, opening a BlueZ radio fails within its timeout with
//! [`Error::BluezUnavailable`] ("BlueZ (bluetoothd) is not running or D-Bus is unavailable")
//! or [`Error::NoAdapter`] ("no Bluetooth adapter found").
//!
//! # Example
//!
//! A phone advertising and a laptop scanning, over UDP on loopback:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), hybridge_ble::Error> {
//! use std::time::Duration;
//! use hybridge_ble::{CABLE_UUIDS, RadioSpec, UUID_FIDO};
//!
//! // The laptop: `--ble udp:127.0.0.1:0` binds a free port.
//! let laptop: RadioSpec = "udp:127.0.0.1:0".parse()?;
//! let mut scan = laptop.scanner().await?.scan(&CABLE_UUIDS).await?;
//! let port = scan.local_addr().unwrap().port();
//!
//! // The phone sends its advert there every 20 ms.
//! let phone: RadioSpec = format!("udp:127.0.0.1:{port},interval=20ms").parse()?;
//! let advertising = phone.advertiser().await?.advertise(UUID_FIDO, &[7; 20]).await?;
//!
//! let advert = scan.next_timeout(Duration::from_secs(2)).await?;
//! assert_eq!((advert.uuid16, advert.service_data), (UUID_FIDO, vec![7; 20]));
//!
//! advertising.stop().await?;
//! scan.stop().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

mod advertise;
pub mod bluez;
mod channel;
mod error;
mod memory;
mod scan;
mod spec;
pub mod udp;

pub use advertise::AdvertisingHandle;
pub use channel::{DataChannel, DataChannelListener, MAX_DATA_CHANNEL_MESSAGE};
pub use error::Error;
pub use memory::MemoryRadio;
pub use scan::{DEFAULT_SCAN_CAPACITY, STOP_TIMEOUT, Scan, ScanStats};
pub use spec::{DEFAULT_BLUEZ_TIMEOUT, RadioSpec};

/// The FIDO caBLE v2 service UUID, `0000fff9-0000-1000-8000-00805f9b34fb`. Phones advertise
/// under it (docs/protocol.md §4.1).
pub const UUID_FIDO: u16 = 0xFFF9;

/// Google's service UUID, `0000fde2-0000-1000-8000-00805f9b34fb`: iOS and older Chromium
/// advertise under it.
pub const UUID_GOOGLE: u16 = 0xFDE2;

/// The UUIDs a hybrid scanner accepts, in the order Chromium looks them up.
pub const CABLE_UUIDS: [u16; 2] = [UUID_GOOGLE, UUID_FIDO];

/// The longest service data an advertiser accepts: one AD structure holds at most 255 bytes
/// after its length byte, less the AD type and the 16-bit UUID. (A legacy BLE advert fits
/// 20 bytes next to the flags and UUID list, which is why caBLE adverts are 20 bytes.)
pub const MAX_SERVICE_DATA_LEN: usize = 252;

/// A boxed future, as the object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One received (or to be sent) advertisement: service data under a 16-bit service UUID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Advertisement {
    /// The 16-bit service UUID the data was advertised under, e.g. [`UUID_FIDO`].
    pub uuid16: u16,
    /// The service data bytes (20 for a caBLE v2 advert; longer under CTAP 2.3).
    pub service_data: Vec<u8>,
    /// Received signal strength in dBm, when the radio reports it (BlueZ).
    pub rssi: Option<i16>,
    /// Who sent it, when known: a Bluetooth address (`AA:BB:CC:DD:EE:FF`) or, on the UDP
    /// radio, the sender's `IP:PORT`.
    pub address: Option<String>,
}

impl Advertisement {
    /// An advertisement without metadata.
    pub fn new(uuid16: u16, service_data: Vec<u8>) -> Self {
        Advertisement {
            uuid16,
            service_data,
            rssi: None,
            address: None,
        }
    }
}

/// Something that can listen for advertisements.
///
/// Object safe: `Box<dyn Scanner>` is what [`RadioSpec::scanner`] returns.
pub trait Scanner: Send + Sync + std::fmt::Debug {
    /// Starts scanning for service data under any of `uuids` (all UUIDs if empty; pass
    /// [`CABLE_UUIDS`] for hybrid adverts).
    ///
    /// Every matching advertisement heard is delivered, repeats included, until the returned
    /// [`Scan`] is dropped or stopped.
    ///
    /// # Errors
    /// When the radio cannot start scanning, e.g. [`Error::Udp`] if the address cannot be
    /// bound, or [`Error::Bluetooth`] if BlueZ refuses.
    fn scan<'a>(&'a self, uuids: &'a [u16]) -> BoxFuture<'a, Result<Scan, Error>>;

    /// Opens the CTAP 2.3 data channel to the device that sent an advert from `address` (its
    /// [`Advertisement::address`]), on the L2CAP `psm` its advert named.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a radio without data channels (the default);
    /// [`Error::DataChannel`] when the peer refuses or cannot be reached.
    fn open_data_channel<'a>(
        &'a self,
        address: &'a str,
        psm: u16,
    ) -> BoxFuture<'a, Result<DataChannel, Error>> {
        let _ = (address, psm);
        Box::pin(async { Err(Error::Unsupported("a Bluetooth data channel on this radio")) })
    }
}

/// Something that can advertise.
///
/// Object safe: `Box<dyn Advertiser>` is what [`RadioSpec::advertiser`] returns.
pub trait Advertiser: Send + Sync + std::fmt::Debug {
    /// Starts advertising `service_data` under `uuid16` (a phone uses [`UUID_FIDO`]), repeating
    /// until the returned handle is dropped or stopped.
    ///
    /// # Errors
    /// [`Error::ServiceDataTooLong`] over [`MAX_SERVICE_DATA_LEN`] bytes; radio errors such as
    /// [`Error::Udp`] or [`Error::Bluetooth`].
    fn advertise<'a>(
        &'a self,
        uuid16: u16,
        service_data: &'a [u8],
    ) -> BoxFuture<'a, Result<AdvertisingHandle, Error>>;

    /// Listens for a laptop's CTAP 2.3 data channel on a free L2CAP PSM, reachable at the
    /// address this advertiser's adverts come from.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on a radio without data channels (the default).
    fn listen_data_channel(&self) -> BoxFuture<'_, Result<DataChannelListener, Error>> {
        Box::pin(async { Err(Error::Unsupported("a Bluetooth data channel on this radio")) })
    }

    /// Fails when advertising cannot work right now (an adapter powered off or blocked by
    /// rfkill), so a phone can say so before it contacts anyone. The default: ready.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// `Box<dyn Scanner>`, `Arc<dyn Advertiser>` and the like are radios too.
macro_rules! forward_radio {
    ($($ptr:ident),*) => {$(
        impl<T: Scanner + ?Sized> Scanner for $ptr<T> {
            fn scan<'a>(&'a self, uuids: &'a [u16]) -> BoxFuture<'a, Result<Scan, Error>> {
                (**self).scan(uuids)
            }

            fn open_data_channel<'a>(
                &'a self,
                address: &'a str,
                psm: u16,
            ) -> BoxFuture<'a, Result<DataChannel, Error>> {
                (**self).open_data_channel(address, psm)
            }
        }

        impl<T: Advertiser + ?Sized> Advertiser for $ptr<T> {
            fn advertise<'a>(
                &'a self,
                uuid16: u16,
                service_data: &'a [u8],
            ) -> BoxFuture<'a, Result<AdvertisingHandle, Error>> {
                (**self).advertise(uuid16, service_data)
            }

            fn listen_data_channel(&self) -> BoxFuture<'_, Result<DataChannelListener, Error>> {
                (**self).listen_data_channel()
            }

            fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
                (**self).check_ready()
            }
        }
    )*};
}

forward_radio!(Box, Arc);

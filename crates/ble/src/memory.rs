//! The in-memory radio: one shared bus inside a process.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::scan::Delivery;
use crate::udp::{DEFAULT_INTERVAL, check_len};
use crate::{
    Advertisement, Advertiser, AdvertisingHandle, BoxFuture, DEFAULT_SCAN_CAPACITY, Error, Scan,
    Scanner,
};

/// How many advertisements the bus holds for a slow scanner before it loses the oldest.
const BUS_CAPACITY: usize = 256;

/// An in-process radio: every advertiser on the bus reaches every scanner on it.
///
/// Clones share the bus. Advertisers repeat their advertisement every interval until stopped,
/// like the other radios, so a scanner that starts late still hears it. Like a real radio the
/// bus is lossy: a scanner that falls behind loses the oldest advertisements (counted as
/// dropped).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hybridge_ble::Error> {
/// use std::time::Duration;
/// use hybridge_ble::{Advertiser, CABLE_UUIDS, MemoryRadio, Scanner, UUID_FIDO};
///
/// let radio = MemoryRadio::new();
/// let mut scan = radio.scan(&CABLE_UUIDS).await?;
/// let _advertising = radio.advertise(UUID_FIDO, b"twenty bytes advert!").await?;
/// let adv = scan.next_timeout(Duration::from_secs(1)).await?;
/// assert_eq!(adv.service_data, b"twenty bytes advert!");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryRadio {
    bus: broadcast::Sender<Advertisement>,
    interval: Duration,
    capacity: usize,
}

impl Default for MemoryRadio {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRadio {
    /// A new, empty bus with the default advertising interval (100 ms).
    pub fn new() -> Self {
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        MemoryRadio {
            bus,
            interval: DEFAULT_INTERVAL,
            capacity: DEFAULT_SCAN_CAPACITY,
        }
    }

    /// The process-wide bus that `--ble memory` selects.
    pub fn global() -> MemoryRadio {
        static GLOBAL: OnceLock<MemoryRadio> = OnceLock::new();
        GLOBAL.get_or_init(MemoryRadio::new).clone()
    }

    /// The same bus, with advertisements started from this handle repeating every `interval`
    /// (clamped to at least 1 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The same bus, with scans started from this handle buffering `capacity` advertisements.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How many scans are listening right now.
    pub fn scanner_count(&self) -> usize {
        self.bus.receiver_count()
    }

    fn start_advertising(
        &self,
        uuid16: u16,
        service_data: &[u8],
    ) -> Result<AdvertisingHandle, Error> {
        check_len(service_data)?;
        let adv = Advertisement::new(uuid16, service_data.to_vec());
        let (bus, interval) = (self.bus.clone(), self.interval);
        Ok(AdvertisingHandle::spawn(
            "memory",
            move |mut stop, sent| async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        _ = ticker.tick() => {}
                    }
                    // Err only means nobody is scanning right now: keep repeating.
                    let _ = bus.send(adv.clone());
                    sent.add();
                }
                Ok(())
            },
        ))
    }

    fn start_scan(&self, uuids: &[u16]) -> Scan {
        let mut rx = self.bus.subscribe();
        Scan::spawn(
            "memory",
            uuids,
            self.capacity,
            move |sink, mut stop| async move {
                loop {
                    let adv = tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        r = rx.recv() => match r {
                            Ok(adv) => adv,
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                sink.lost(n);
                                continue;
                            }
                            // Unreachable while `self` lives, but end cleanly if it happens.
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                    };
                    if sink.deliver(adv) == Delivery::Closed {
                        break;
                    }
                }
                Ok(())
            },
        )
    }
}

impl Advertiser for MemoryRadio {
    fn advertise<'a>(
        &'a self,
        uuid16: u16,
        service_data: &'a [u8],
    ) -> BoxFuture<'a, Result<AdvertisingHandle, Error>> {
        Box::pin(async move { self.start_advertising(uuid16, service_data) })
    }
}

impl Scanner for MemoryRadio {
    fn scan<'a>(&'a self, uuids: &'a [u16]) -> BoxFuture<'a, Result<Scan, Error>> {
        // The bus is subscribed before the future resolves: nothing sent after that is missed.
        Box::pin(async move { Ok(self.start_scan(uuids)) })
    }
}

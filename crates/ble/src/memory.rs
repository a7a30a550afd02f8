//! The in-memory radio: one shared bus inside a process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::scan::Delivery;
use crate::udp::{DEFAULT_INTERVAL, check_len};
use crate::{
    Advertisement, Advertiser, AdvertisingHandle, BoxFuture, DEFAULT_SCAN_CAPACITY, DataChannel,
    DataChannelListener, Error, Scan, Scanner,
};

/// The first PSM handed out: dynamic LE PSMs start at 0x0080.
const FIRST_PSM: u16 = 0x0080;

/// Listeners for data channels on one bus, by PSM.
type Listeners = Arc<Mutex<HashMap<u16, mpsc::Sender<DataChannel>>>>;

/// Keeps a listener's PSM taken; dropping it frees the PSM.
#[derive(Debug)]
pub(crate) struct Registration {
    listeners: Listeners,
    psm: u16,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listeners.lock() {
            l.remove(&self.psm);
        }
    }
}

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
    /// This bus's address (`memory:N`), which its adverts carry and data channels reach.
    address: Arc<str>,
    listeners: Listeners,
}

impl Default for MemoryRadio {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRadio {
    /// A new, empty bus with the default advertising interval (100 ms).
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        MemoryRadio {
            bus,
            interval: DEFAULT_INTERVAL,
            capacity: DEFAULT_SCAN_CAPACITY,
            address: format!("memory:{}", NEXT.fetch_add(1, Ordering::Relaxed)).into(),
            listeners: Arc::default(),
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
        let mut adv = Advertisement::new(uuid16, service_data.to_vec());
        adv.address = Some(self.address.to_string());
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

impl MemoryRadio {
    fn listen(&self) -> Result<DataChannelListener, Error> {
        let mut listeners = self
            .listeners
            .lock()
            .map_err(|_| Error::DataChannel("the radio's lock is poisoned".into()))?;
        let psm = (FIRST_PSM..=u16::MAX)
            .find(|p| !listeners.contains_key(p))
            .ok_or_else(|| Error::DataChannel("every PSM is taken".into()))?;
        let (tx, rx) = mpsc::channel(4);
        listeners.insert(psm, tx);
        let registration = Registration {
            listeners: self.listeners.clone(),
            psm,
        };
        Ok(DataChannelListener::memory(psm, rx, registration))
    }

    async fn connect(&self, address: &str, psm: u16) -> Result<DataChannel, Error> {
        if address != &*self.address {
            return Err(Error::DataChannel(format!(
                "no device {address:?} on this bus"
            )));
        }
        let listener = self
            .listeners
            .lock()
            .map_err(|_| Error::DataChannel("the radio's lock is poisoned".into()))?
            .get(&psm)
            .cloned();
        let refused = || Error::DataChannel(format!("nothing listens on PSM {psm:#06x}"));
        let listener = listener.ok_or_else(refused)?;
        let (ours, theirs) = DataChannel::memory_pair();
        listener.send(theirs).await.map_err(|_| refused())?;
        Ok(ours)
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

    fn listen_data_channel(&self) -> BoxFuture<'_, Result<DataChannelListener, Error>> {
        Box::pin(async move { self.listen() })
    }
}

impl Scanner for MemoryRadio {
    fn scan<'a>(&'a self, uuids: &'a [u16]) -> BoxFuture<'a, Result<Scan, Error>> {
        // The bus is subscribed before the future resolves: nothing sent after that is missed.
        Box::pin(async move { Ok(self.start_scan(uuids)) })
    }

    fn open_data_channel<'a>(
        &'a self,
        address: &'a str,
        psm: u16,
    ) -> BoxFuture<'a, Result<DataChannel, Error>> {
        Box::pin(self.connect(address, psm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CABLE_UUIDS, UUID_FIDO};

    #[tokio::test]
    async fn a_data_channel_reaches_the_listener_named_by_the_advert() {
        let radio = MemoryRadio::new();
        let mut listener = radio.listen_data_channel().await.unwrap();
        assert_eq!(listener.psm(), FIRST_PSM);
        let mut scan = radio.scan(&CABLE_UUIDS).await.unwrap();
        let _adv = radio.advertise(UUID_FIDO, &[1; 20]).await.unwrap();
        let heard = scan.next_timeout(Duration::from_secs(2)).await.unwrap();
        let address = heard.address.expect("the advert names its sender");
        let mut laptop = radio
            .open_data_channel(&address, listener.psm())
            .await
            .unwrap();
        let mut phone = listener.accept().await.unwrap();
        laptop.send(b"message 1").await.unwrap();
        // A message that looks like a line ending is just a message.
        laptop.send(b"\r\n").await.unwrap();
        assert_eq!(phone.recv().await.unwrap().unwrap(), b"message 1");
        assert_eq!(phone.recv().await.unwrap().unwrap(), b"\r\n");
        phone.send(&[0; 300]).await.unwrap();
        assert_eq!(laptop.recv().await.unwrap().unwrap(), [0; 300]);
        laptop.close().await;
        assert_eq!(
            phone.recv().await.unwrap(),
            None,
            "the close reaches the peer"
        );
    }

    #[tokio::test]
    async fn nobody_listening_or_another_device_is_refused() {
        let radio = MemoryRadio::new();
        let err = radio
            .open_data_channel(&radio.address, FIRST_PSM)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("nothing listens on PSM 0x0080"),
            "{err}"
        );
        let err = radio
            .open_data_channel("memory:0", FIRST_PSM)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DataChannel(_)), "{err}");
        // A listener that is dropped frees its PSM and refuses from then on.
        let listener = radio.listen_data_channel().await.unwrap();
        let psm = listener.psm();
        drop(listener);
        assert!(radio.open_data_channel(&radio.address, psm).await.is_err());
        let too_long = vec![0; crate::MAX_DATA_CHANNEL_MESSAGE + 1];
        let mut l = radio.listen_data_channel().await.unwrap();
        let mut c = radio
            .open_data_channel(&radio.address, l.psm())
            .await
            .unwrap();
        let _p = l.accept().await.unwrap();
        assert!(c.send(&too_long).await.is_err());
    }
}

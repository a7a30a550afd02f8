//! Real Bluetooth through BlueZ with bluer: a scanner, an advertiser and the CTAP 2.3 L2CAP
//! data channel (Linux only).
//!
//! All of it talks to `bluetoothd` over the system D-Bus, through the `dbus` crate with libdbus
//! vendored, so building needs a C compiler but no `libdbus-1-dev`.
//!
//! Connecting to D-Bus is a blocking call inside bluer. It runs on a helper thread
//! and is bounded by the caller's timeout, so a missing or wedged D-Bus gives
//! [`Error::BluezUnavailable`](crate::Error::BluezUnavailable) instead of a hang. (When D-Bus never answers, the helper thread
//! itself ends only when libdbus gives up, about 25 s later.)

use std::time::Duration;

#[cfg(all(target_os = "linux", feature = "bluez"))]
pub use linux::{BluezAdvertiser, BluezScanner};
#[cfg(not(all(target_os = "linux", feature = "bluez")))]
pub use other::{BluezAdvertiser, BluezScanner};

/// Limit on each D-Bus call once connected (start/stop discovery, register an advert, read a
/// device's properties).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The lower 96 bits of the Bluetooth base UUID `0000xxxx-0000-1000-8000-00805f9b34fb`.
const BASE_UUID_LOW: u128 = 0x0000_1000_8000_0080_5f9b_34fb;

/// The full 128-bit UUID of a 16-bit Bluetooth UUID.
pub fn uuid128(uuid16: u16) -> u128 {
    (u128::from(uuid16) << 96) | BASE_UUID_LOW
}

/// The 16-bit form of a 128-bit UUID, if it is built on the Bluetooth base UUID.
pub fn uuid16(uuid: u128) -> Option<u16> {
    if uuid & ((1u128 << 96) - 1) != BASE_UUID_LOW || uuid >> 112 != 0 {
        return None;
    }
    u16::try_from(uuid >> 96).ok()
}

#[cfg(all(target_os = "linux", feature = "bluez"))]
mod linux {
    use std::future::Future;
    use std::time::Duration;

    use futures_util::StreamExt as _;
    use tokio::sync::oneshot;

    use super::{OPERATION_TIMEOUT, uuid16, uuid128};
    use crate::scan::{Delivery, ScanSink};
    use crate::udp::check_len;
    use crate::{
        Advertisement, Advertiser, AdvertisingHandle, BoxFuture, DEFAULT_SCAN_CAPACITY, Error,
        Scan, Scanner,
    };

    /// Why the kernel keeps adapter `name` (e.g. `hci0`) off, if rfkill does: its
    /// `/sys/class/bluetooth/<name>/rfkill*/{hard,soft}` switches.
    fn rfkill_block(name: &str) -> Option<&'static str> {
        let dir = std::fs::read_dir(format!("/sys/class/bluetooth/{name}")).ok()?;
        let on =
            |path: std::path::PathBuf| std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1");
        for entry in dir.flatten() {
            if !entry.file_name().to_string_lossy().starts_with("rfkill") {
                continue;
            }
            if on(entry.path().join("hard")) {
                return Some("blocked by a hardware switch (turn the Bluetooth switch on)");
            }
            if on(entry.path().join("soft")) {
                return Some("blocked by rfkill; unblock it with `rfkill unblock bluetooth`");
            }
        }
        None
    }

    /// The adapter cannot be used for `operation`: blocked by rfkill, or powered off.
    fn radio_off(operation: &'static str, name: &str) -> Error {
        let detail = match rfkill_block(name) {
            Some(why) => format!("adapter {name} is {why}"),
            None => {
                format!("adapter {name} is powered off; turn it on with `bluetoothctl power on`")
            }
        };
        Error::Bluetooth { operation, detail }
    }

    fn unavailable(e: impl std::fmt::Display) -> Error {
        Error::BluezUnavailable {
            detail: e.to_string(),
        }
    }

    /// Runs `connect` (which makes blocking D-Bus calls) on a helper thread, bounded by
    /// `timeout`. The futures it starts with `tokio::spawn` run on the caller's runtime.
    async fn connect_off_thread<T, F, Fut>(timeout: Duration, connect: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>>,
    {
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("hybridge-dbus-connect".into())
            .spawn(move || {
                let _ = tx.send(runtime.block_on(connect()));
            })
            .map_err(|e| unavailable(format!("cannot start the D-Bus connect thread: {e}")))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unavailable("the D-Bus connect thread failed")),
            Err(_) => Err(unavailable(format!(
                "no answer from the system D-Bus / BlueZ within {timeout:?}"
            ))),
        }
    }

    async fn bounded<T, E: std::fmt::Display>(
        operation: &'static str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Bluetooth {
                operation,
                detail: e.to_string(),
            }),
            Err(_) => Err(Error::Bluetooth {
                operation,
                detail: format!("BlueZ did not answer within {OPERATION_TIMEOUT:?}"),
            }),
        }
    }

    /// Scans through BlueZ's discovery (with bluer) on one adapter.
    ///
    /// The discovery filter asks for LE only, every advertiser (no service-UUID filter: iPhones
    /// put no UUID list in their adverts) and repeats (`DuplicateData`); the service data under
    /// the wanted UUIDs is picked out here. Devices BlueZ already knows when the scan starts
    /// are reported from its cache, so an advert that appeared before the scan is not missed.
    ///
    /// A powered-off or rfkill-blocked adapter is an error, not switched on behind the
    /// user's back; an adapter that goes off during the scan ends it with that error.
    #[derive(Clone, Debug)]
    pub struct BluezScanner {
        session: bluer::Session,
        adapter: bluer::Adapter,
        capacity: usize,
    }

    /// The one discovery filter hybrid needs (see [`BluezScanner`]).
    fn discovery_filter() -> bluer::DiscoveryFilter {
        bluer::DiscoveryFilter {
            transport: bluer::DiscoveryTransport::Le,
            duplicate_data: true,
            ..Default::default()
        }
    }

    /// Connects to BlueZ and picks the adapter named `wanted` (e.g. `hci0`) or the first.
    async fn open_adapter(
        wanted: Option<&str>,
        timeout: Duration,
    ) -> Result<(bluer::Session, bluer::Adapter), Error> {
        let wanted = wanted.map(str::to_owned);
        connect_off_thread(timeout, move || async move {
            let session = bluer::Session::new().await.map_err(unavailable)?;
            let names = session.adapter_names().await.map_err(unavailable)?;
            let name = match &wanted {
                None => names.into_iter().next(),
                Some(w) => names.into_iter().find(|n| n == w),
            };
            let Some(name) = name else {
                return Err(Error::NoAdapter { wanted });
            };
            let adapter = session.adapter(&name).map_err(unavailable)?;
            Ok((session, adapter))
        })
        .await
    }

    /// Fails unless adapter is on and not blocked by rfkill.
    async fn ready(operation: &'static str, adapter: &bluer::Adapter) -> Result<(), Error> {
        let name = adapter.name();
        if rfkill_block(name).is_some()
            || !bounded("read adapter state", adapter.is_powered()).await?
        {
            return Err(radio_off(operation, name));
        }
        Ok(())
    }

    impl BluezScanner {
        /// Connects to BlueZ and picks the adapter named `adapter` (e.g. `hci0`) or the first.
        ///
        /// # Errors
        /// [`Error::BluezUnavailable`] if D-Bus or bluetoothd cannot be reached within
        /// `timeout`; [`Error::NoAdapter`] if BlueZ has no (such) adapter.
        pub async fn open(adapter: Option<&str>, timeout: Duration) -> Result<Self, Error> {
            let (session, adapter) = open_adapter(adapter, timeout).await?;
            tracing::debug!(adapter = %adapter.name(), "BlueZ scanner ready");
            Ok(BluezScanner {
                session,
                adapter,
                capacity: DEFAULT_SCAN_CAPACITY,
            })
        }

        /// The adapter's name, e.g. `hci0`.
        pub fn adapter_name(&self) -> &str {
            self.adapter.name()
        }

        /// Sets how many advertisements a scan buffers (at least 1).
        pub fn with_capacity(mut self, capacity: usize) -> Self {
            self.capacity = capacity.max(1);
            self
        }

        async fn start(&self, uuids: Vec<u16>) -> Result<Scan, Error> {
            use bluer::{AdapterEvent, AdapterProperty};
            let adapter = self.adapter.clone();
            let name = adapter.name().to_owned();
            ready("start scanning", &adapter).await?;
            match adapter.set_discovery_filter(discovery_filter()).await {
                // Another scan of this process holds the discovery session, with this filter.
                Err(e) if e.kind == bluer::ErrorKind::DiscoveryActive => {}
                r => r.map_err(|e| Error::Bluetooth {
                    operation: "set the discovery filter",
                    detail: e.to_string(),
                })?,
            }
            // Watched for the adapter going off; subscribed before discovery starts.
            let mut adapter_events = bounded("watch the adapter", adapter.events()).await?;
            let mut devices =
                match bounded("start scanning", adapter.discover_devices_with_changes()).await {
                    Ok(d) => d,
                    // BlueZ says only "Failed" or "Not Ready" when the radio is off.
                    Err(e) => {
                        return Err(match ready("start scanning", &adapter).await {
                            Err(off) => off,
                            Ok(()) => e,
                        });
                    }
                };
            tracing::debug!(adapter = %name, "BlueZ scan started");
            let session = self.session.clone();
            Ok(Scan::spawn(
                "bluez",
                &uuids,
                self.capacity,
                move |sink, mut stop| async move {
                    let _session = session;
                    let result = loop {
                        tokio::select! {
                            biased;
                            _ = &mut stop => break Ok(()),
                            event = adapter_events.next() => match event {
                                Some(AdapterEvent::PropertyChanged(AdapterProperty::Powered(
                                    false,
                                ))) => {
                                    // No advert can arrive any more: say why now, not at the
                                    // scan's timeout.
                                    break Err(radio_off("scan", &name));
                                }
                                Some(_) => {}
                                None => break Err(daemon_gone()),
                            },
                            event = devices.next() => match event {
                                Some(AdapterEvent::DeviceAdded(address)) => {
                                    if deliver_device(&adapter, &sink, address).await
                                        == Delivery::Closed
                                        || sink.is_closed()
                                    {
                                        break Ok(());
                                    }
                                }
                                Some(_) => {}
                                // Discovery stopped under us: the radio went off, or
                                // bluetoothd went away.
                                None => {
                                    break Err(match ready("scan", &adapter).await {
                                        Err(off) => off,
                                        Ok(()) => daemon_gone(),
                                    });
                                }
                            },
                        }
                    };
                    // Dropping the discovery stream ends bluer's discovery session, which
                    // stops discovery unless another scan of this process still uses it.
                    drop(devices);
                    tracing::debug!(adapter = %name, "BlueZ scan stopped");
                    result
                },
            ))
        }
    }

    fn daemon_gone() -> Error {
        Error::Bluetooth {
            operation: "scan",
            detail: "BlueZ stopped reporting (did bluetoothd exit?)".into(),
        }
    }

    /// Delivers the service data BlueZ holds for the device at `address`. Called when the
    /// device appears and whenever its properties change (BlueZ re-reports the service data
    /// of each advert it hears when asked for duplicates).
    async fn deliver_device(
        adapter: &bluer::Adapter,
        sink: &ScanSink,
        address: bluer::Address,
    ) -> Delivery {
        let Ok(device) = adapter.device(address) else {
            return Delivery::Filtered;
        };
        let read = async {
            let data = device.service_data().await.ok().flatten()?;
            let rssi = device.rssi().await.ok().flatten();
            Some((data, rssi))
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, read).await {
            Ok(Some((data, rssi))) => deliver_all(sink, data, rssi, &address.to_string()),
            _ => Delivery::Filtered,
        }
    }

    fn deliver_all(
        sink: &ScanSink,
        service_data: impl IntoIterator<Item = (uuid::Uuid, Vec<u8>)>,
        rssi: Option<i16>,
        address: &str,
    ) -> Delivery {
        let mut outcome = Delivery::Filtered;
        for (uuid, data) in service_data {
            let Some(uuid16) = uuid16(uuid.as_u128()) else {
                continue;
            };
            if !sink.wants(uuid16) {
                continue;
            }
            let mut adv = Advertisement::new(uuid16, data);
            adv.rssi = rssi;
            adv.address = Some(address.to_owned());
            outcome = sink.deliver(adv);
            if outcome == Delivery::Closed {
                break;
            }
        }
        outcome
    }

    impl Scanner for BluezScanner {
        fn scan<'a>(&'a self, uuids: &'a [u16]) -> BoxFuture<'a, Result<Scan, Error>> {
            Box::pin(self.start(uuids.to_vec()))
        }

        fn open_data_channel<'a>(
            &'a self,
            address: &'a str,
            psm: u16,
        ) -> BoxFuture<'a, Result<crate::DataChannel, Error>> {
            Box::pin(self.connect_data_channel(address, psm))
        }
    }

    /// Advertises through BlueZ's LE advertising manager with bluer.
    ///
    /// The advert is what Chrome on Android sends (docs/protocol.md §4.1): non-connectable, the
    /// UUID in the service-UUID list and as service data, no device name, no TX power. While a
    /// CTAP 2.3 data-channel listener lives it is connectable instead, without the UUID list.
    #[derive(Clone, Debug)]
    pub struct BluezAdvertiser {
        session: bluer::Session,
        adapter: bluer::Adapter,
        /// Live data-channel listeners: while there is one, adverts are connectable.
        listening: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl BluezAdvertiser {
        /// Connects to BlueZ and picks the adapter named `adapter` (e.g. `hci0`) or the first.
        ///
        /// # Errors
        /// [`Error::BluezUnavailable`] if D-Bus or bluetoothd cannot be reached within
        /// `timeout`; [`Error::NoAdapter`] if BlueZ has no (such) adapter.
        pub async fn open(adapter: Option<&str>, timeout: Duration) -> Result<Self, Error> {
            let (session, adapter) = open_adapter(adapter, timeout).await?;
            tracing::debug!(adapter = %adapter.name(), "BlueZ advertiser ready");
            Ok(BluezAdvertiser {
                session,
                adapter,
                listening: Default::default(),
            })
        }

        /// The adapter's name, e.g. `hci0`.
        pub fn adapter_name(&self) -> &str {
            self.adapter.name()
        }

        /// Fails unless the adapter is on and not blocked by rfkill.
        async fn ready(&self) -> Result<(), Error> {
            ready("advertise", &self.adapter).await
        }

        async fn start(
            &self,
            uuid16: u16,
            service_data: &[u8],
        ) -> Result<AdvertisingHandle, Error> {
            check_len(service_data)?;
            let name = self.adapter.name().to_owned();
            self.ready().await?;
            let uuid = uuid::Uuid::from_u128(uuid128(uuid16));
            let connectable = self.listening.load(std::sync::atomic::Ordering::SeqCst) > 0;
            let advert = if connectable {
                // A data channel is offered: the laptop must be able to connect. The flags a
                // connectable advert carries take the room of the service-UUID list, so that
                // the 24 bytes of service data still fit a legacy advert (3 + 4 + 24 = 31).
                bluer::adv::Advertisement {
                    advertisement_type: bluer::adv::Type::Peripheral,
                    service_data: [(uuid, service_data.to_vec())].into(),
                    ..Default::default()
                }
            } else {
                // Broadcast = non-connectable. No local name, no TX power (empty includes).
                bluer::adv::Advertisement {
                    advertisement_type: bluer::adv::Type::Broadcast,
                    service_uuids: [uuid].into(),
                    service_data: [(uuid, service_data.to_vec())].into(),
                    ..Default::default()
                }
            };
            let registered =
                bounded("register advertisement", self.adapter.advertise(advert)).await?;
            tracing::debug!(adapter = %name, uuid16, "BlueZ advertising started");
            let session = self.session.clone();
            Ok(AdvertisingHandle::spawn(
                "bluez",
                move |stop, sent| async move {
                    sent.add();
                    // Advertising lasts as long as `registered` lives; dropping it unregisters.
                    let _ = stop.await;
                    drop(registered);
                    drop(session);
                    tracing::debug!(adapter = %name, "BlueZ advertising stopped");
                    Ok(())
                },
            ))
        }
    }

    impl Advertiser for BluezAdvertiser {
        fn advertise<'a>(
            &'a self,
            uuid16: u16,
            service_data: &'a [u8],
        ) -> BoxFuture<'a, Result<AdvertisingHandle, Error>> {
            Box::pin(self.start(uuid16, service_data))
        }

        fn listen_data_channel(&self) -> BoxFuture<'_, Result<crate::DataChannelListener, Error>> {
            Box::pin(self.listen_l2cap())
        }

        fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
            Box::pin(self.ready())
        }
    }

    // -----------------------------------------------------------------------------------------
    // The CTAP 2.3 data channel over LE L2CAP (connection-oriented, credit-based)

    /// The largest SDU either side accepts: a whole message in one SDU.
    const L2CAP_MTU: u16 = u16::MAX;

    /// No pairing, no encryption: the Noise handshake protects the session, as over the relay
    /// (libwebauthn and Android open the channel the same way).
    fn insecure() -> bluer::l2cap::Security {
        bluer::l2cap::Security {
            level: bluer::l2cap::SecurityLevel::Low,
            key_size: 0,
        }
    }

    /// A sequential-packet L2CAP socket bound to `local`: insecure LE, SDUs up to
    /// [`L2CAP_MTU`].
    fn l2cap_socket(
        local: bluer::l2cap::SocketAddr,
    ) -> Result<bluer::l2cap::Socket<bluer::l2cap::SeqPacket>, Error> {
        let socket = bluer::l2cap::Socket::new_seq_packet()
            .map_err(|e| channel_error("cannot create an L2CAP socket", e))?;
        socket
            .set_security(insecure())
            .and_then(|()| socket.set_recv_mtu(L2CAP_MTU))
            .and_then(|()| socket.bind(local))
            .map_err(|e| channel_error("cannot set up the L2CAP socket", e))?;
        Ok(socket)
    }

    fn channel_error(what: &str, e: impl std::fmt::Display) -> Error {
        Error::DataChannel(format!("{what}: {e}"))
    }

    impl BluezScanner {
        async fn connect_data_channel(
            &self,
            address: &str,
            psm: u16,
        ) -> Result<crate::DataChannel, Error> {
            let addr: bluer::Address = address.parse().map_err(|e| {
                channel_error(&format!("{address:?} is not a Bluetooth address"), e)
            })?;
            // The advert's sender is a device BlueZ knows from the scan: its address type
            // (public or random) is on its D-Bus object.
            let device = self
                .adapter
                .device(addr)
                .map_err(|e| channel_error("the phone is not known to BlueZ", e))?;
            let addr_type = bounded("read the phone's address type", device.address_type()).await?;
            let socket = l2cap_socket(bluer::l2cap::SocketAddr::any_le())?;
            let peer = bluer::l2cap::SocketAddr::new(addr, addr_type, psm);
            let channel = socket.connect(peer).await.map_err(|e| {
                channel_error(&format!("cannot connect to {address} on PSM {psm:#06x}"), e)
            })?;
            tracing::debug!(%address, psm, "L2CAP data channel open");
            crate::DataChannel::l2cap(channel).await
        }
    }

    impl BluezAdvertiser {
        async fn listen_l2cap(&self) -> Result<crate::DataChannelListener, Error> {
            let addr = bounded("read the adapter's address", self.adapter.address()).await?;
            let addr_type = bounded(
                "read the adapter's address type",
                self.adapter.address_type(),
            )
            .await?;
            // PSM 0: the kernel picks a free dynamic one.
            let socket = l2cap_socket(bluer::l2cap::SocketAddr::new(addr, addr_type, 0))?;
            let psm = socket
                .local_addr()
                .map_err(|e| channel_error("cannot read the L2CAP PSM", e))?
                .psm;
            let listener = socket
                .listen(1)
                .map_err(|e| channel_error("cannot listen on L2CAP", e))?;
            // While it lives, adverts are connectable.
            let guard = ListeningGuard::new(&self.listening);
            tracing::debug!(adapter = %self.adapter.name(), psm, "listening on L2CAP");
            Ok(crate::DataChannelListener::l2cap(
                psm,
                listener,
                Box::new(guard),
            ))
        }
    }

    /// Counts a live listener on its advertiser.
    struct ListeningGuard(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl ListeningGuard {
        fn new(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Self(count.clone())
        }
    }

    impl Drop for ListeningGuard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[cfg(not(all(target_os = "linux", feature = "bluez")))]
mod other {
    use std::time::Duration;

    use crate::{Advertiser, AdvertisingHandle, BoxFuture, Error, Scan, Scanner};

    /// What is missing, for [`Error::Unsupported`].
    #[cfg(target_os = "linux")]
    const MISSING: &str = "BlueZ (this build left out hybridge-ble's `bluez` feature)";
    #[cfg(not(target_os = "linux"))]
    const MISSING: &str = "BlueZ";

    /// BlueZ scanner: Linux with the `bluez` feature only. Elsewhere [`open`](Self::open)
    /// fails with [`Error::Unsupported`].
    #[derive(Clone, Debug)]
    pub struct BluezScanner {
        _private: (),
    }

    impl BluezScanner {
        /// Always [`Error::Unsupported`] here.
        pub async fn open(_adapter: Option<&str>, _timeout: Duration) -> Result<Self, Error> {
            Err(Error::Unsupported(MISSING))
        }
    }

    impl Scanner for BluezScanner {
        fn scan<'a>(&'a self, _uuids: &'a [u16]) -> BoxFuture<'a, Result<Scan, Error>> {
            Box::pin(async { Err(Error::Unsupported(MISSING)) })
        }
    }

    /// BlueZ advertiser: Linux with the `bluez` feature only. Elsewhere [`open`](Self::open)
    /// fails with [`Error::Unsupported`].
    #[derive(Clone, Debug)]
    pub struct BluezAdvertiser {
        _private: (),
    }

    impl BluezAdvertiser {
        /// Always [`Error::Unsupported`] here.
        pub async fn open(_adapter: Option<&str>, _timeout: Duration) -> Result<Self, Error> {
            Err(Error::Unsupported(MISSING))
        }
    }

    impl Advertiser for BluezAdvertiser {
        fn advertise<'a>(
            &'a self,
            _uuid16: u16,
            _service_data: &'a [u8],
        ) -> BoxFuture<'a, Result<AdvertisingHandle, Error>> {
            Box::pin(async { Err(Error::Unsupported(MISSING)) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_conversions() {
        assert_eq!(uuid128(0xfff9), 0x0000fff9_0000_1000_8000_00805f9b34fb);
        assert_eq!(uuid16(0x0000fde2_0000_1000_8000_00805f9b34fb), Some(0xfde2));
        assert_eq!(uuid16(uuid128(0x1234)), Some(0x1234));
        // 32-bit and non-base UUIDs are not 16-bit UUIDs.
        assert_eq!(uuid16(0x0001fff9_0000_1000_8000_00805f9b34fb), None);
        assert_eq!(uuid16(0x0000fff9_0000_1000_8000_00805f9b34fc), None);
    }
}

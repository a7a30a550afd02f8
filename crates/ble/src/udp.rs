//! The UDP radio: advertisements as text datagrams, for tests across processes and hosts.
//!
//! # Datagram format
//!
//! One advertisement is one UDP datagram whose payload is the ASCII text
//!
//! ```text
//! ADV <uuid16> <service-data>
//! ```
//!
//! - `ADV`, one space, the 16-bit service UUID as exactly 4 lowercase hex digits (`fff9`),
//!   one space, the service data as lowercase hex (2 digits per byte, possibly none);
//! - nothing else: no newline, no padding. Example (a 20-byte caBLE v2 advert under 0xFFF9):
//!   `ADV fff9 00112233445566778899aabbccddeeff00112233`.
//!
//! Receivers are lenient in two ways only, so that hand-made datagrams
//! (`printf 'ADV fff9 …\n' | socat - UDP-DATAGRAM:127.0.0.1:4500`) work: upper-case hex digits
//! and one trailing `\n` (or `\r\n`) are accepted. Anything else (wrong prefix, odd number of
//! hex digits, service data over [`MAX_SERVICE_DATA_LEN`] bytes) is a malformed datagram: it is
//! ignored, logged at debug level and counted in [`ScanStats::malformed`](crate::ScanStats).
//!
//! The advertiser sends the datagram at once and then every advertising interval
//! ([`DEFAULT_INTERVAL`], 100 ms) to its target address until stopped, as a BLE advertiser
//! repeats its advert. The target may be unicast or broadcast: IPv4 advertiser sockets have
//! `SO_BROADCAST` set. The scanner binds an address and treats each datagram received there as
//! one advertisement.
//!
//! With [`RadioSpec`](crate::RadioSpec) one `udp:ADDR:PORT` serves both sides: the phone
//! sends to `ADDR:PORT` and the laptop binds it. That works for a unicast address of the
//! laptop (`udp:10.0.0.1:4500`), for loopback, and for a subnet broadcast address
//! (`udp:10.0.0.255:4500`; Linux lets a socket bind a broadcast address and receive what is
//! sent to it). For `255.255.255.255` the scanner binds `0.0.0.0:PORT`; `bind=` overrides.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::scan::Delivery;
use crate::{
    Advertisement, Advertiser, AdvertisingHandle, BoxFuture, DEFAULT_SCAN_CAPACITY, Error,
    MAX_SERVICE_DATA_LEN, Scan, Scanner,
};

/// Default advertising interval of the UDP and memory radios (Android's low-latency mode
/// advertises about every 100 ms).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

/// The largest datagram the scanner reads; longer ones are truncated and so malformed.
const MAX_DATAGRAM: usize = "ADV ffff ".len() + 2 * MAX_SERVICE_DATA_LEN + 2;

/// Formats one advertisement as a datagram payload: `ADV <uuid16> <hex>`.
///
/// ```
/// assert_eq!(hybridge_ble::udp::format_datagram(0xfff9, &[0xab, 0x01]), "ADV fff9 ab01");
/// ```
pub fn format_datagram(uuid16: u16, service_data: &[u8]) -> String {
    format!("ADV {uuid16:04x} {}", hex::encode(service_data))
}

/// Parses one datagram payload; `None` if it is malformed (see the [module docs](self)).
///
/// ```
/// let adv = hybridge_ble::udp::parse_datagram(b"ADV fde2 0102\n").unwrap();
/// assert_eq!((adv.uuid16, adv.service_data), (0xfde2, vec![1, 2]));
/// assert!(hybridge_ble::udp::parse_datagram(b"ADV fde2 012").is_none());
/// ```
pub fn parse_datagram(payload: &[u8]) -> Option<Advertisement> {
    let payload = payload
        .strip_suffix(b"\r\n")
        .or_else(|| payload.strip_suffix(b"\n"))
        .unwrap_or(payload);
    let rest = payload.strip_prefix(b"ADV ")?;
    let (uuid_hex, rest) = rest.split_at_checked(4)?;
    let data_hex = rest.strip_prefix(b" ")?;
    if data_hex.len() > 2 * MAX_SERVICE_DATA_LEN {
        return None;
    }
    let mut uuid = [0u8; 2];
    hex::decode_to_slice(uuid_hex, &mut uuid).ok()?;
    let service_data = hex::decode(data_hex).ok()?;
    Some(Advertisement::new(u16::from_be_bytes(uuid), service_data))
}

/// Sends advertisements as UDP datagrams to one address (unicast or broadcast).
///
/// ```no_run
/// # async fn demo() -> Result<(), hybridge_ble::Error> {
/// use hybridge_ble::{Advertiser, UUID_FIDO, udp::UdpAdvertiser};
/// let advertiser = UdpAdvertiser::new("127.0.0.1:4500".parse().unwrap());
/// let handle = advertiser.advertise(UUID_FIDO, &[0u8; 20]).await?;
/// // ... until the laptop has connected:
/// handle.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct UdpAdvertiser {
    target: SocketAddr,
    interval: Duration,
}

impl UdpAdvertiser {
    /// An advertiser that sends to `target` every [`DEFAULT_INTERVAL`].
    pub fn new(target: SocketAddr) -> Self {
        UdpAdvertiser {
            target,
            interval: DEFAULT_INTERVAL,
        }
    }

    /// Sets the advertising interval (clamped to at least 1 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Where datagrams go.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    async fn start(&self, uuid16: u16, service_data: &[u8]) -> Result<AdvertisingHandle, Error> {
        check_len(service_data)?;
        let local: SocketAddr = match self.target {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).await.map_err(|source| Error::Udp {
            action: "bind",
            addr: local,
            source,
        })?;
        if self.target.is_ipv4() {
            // Needed to send to a broadcast address; harmless for unicast.
            socket.set_broadcast(true).map_err(|source| Error::Udp {
                action: "enable broadcast on",
                addr: local,
                source,
            })?;
        }
        let payload = format_datagram(uuid16, service_data).into_bytes();
        let (target, interval) = (self.target, self.interval);
        tracing::debug!(%target, ?interval, uuid16, "UDP advertising started");
        Ok(AdvertisingHandle::spawn(
            "udp",
            move |mut stop, sent| async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failures = 0u64;
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        _ = ticker.tick() => {}
                    }
                    match socket.send_to(&payload, target).await {
                        Ok(_) => sent.add(),
                        Err(e) => {
                            // A radio does not care whether anyone listens: keep repeating.
                            failures += 1;
                            if failures == 1 {
                                tracing::warn!(%target, error = %e, "UDP advert not sent");
                            } else {
                                tracing::debug!(%target, error = %e, failures, "UDP advert not sent");
                            }
                        }
                    }
                }
                tracing::debug!(%target, "UDP advertising stopped");
                Ok(())
            },
        ))
    }
}

impl Advertiser for UdpAdvertiser {
    fn advertise<'a>(
        &'a self,
        uuid16: u16,
        service_data: &'a [u8],
    ) -> BoxFuture<'a, Result<AdvertisingHandle, Error>> {
        Box::pin(self.start(uuid16, service_data))
    }
}

/// Receives advertisements as UDP datagrams on a bound address.
///
/// Each scan binds the address anew (and frees it when the scan ends). Bind port 0 to let the
/// system choose, then read the port from [`Scan::local_addr`].
#[derive(Clone, Debug)]
pub struct UdpScanner {
    bind: SocketAddr,
    capacity: usize,
}

impl UdpScanner {
    /// A scanner listening on `bind`.
    pub fn new(bind: SocketAddr) -> Self {
        UdpScanner {
            bind,
            capacity: DEFAULT_SCAN_CAPACITY,
        }
    }

    /// Sets how many advertisements a scan buffers (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The address scans bind.
    pub fn bind_addr(&self) -> SocketAddr {
        self.bind
    }

    async fn start(&self, uuids: Vec<u16>) -> Result<Scan, Error> {
        let socket = UdpSocket::bind(self.bind)
            .await
            .map_err(|source| Error::Udp {
                action: "bind",
                addr: self.bind,
                source,
            })?;
        let local = socket.local_addr().map_err(|source| Error::Udp {
            action: "read the address of",
            addr: self.bind,
            source,
        })?;
        tracing::debug!(%local, "UDP scan started");
        let scan = Scan::spawn(
            "udp",
            &uuids,
            self.capacity,
            move |sink, mut stop| async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    let (len, from) = tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        r = socket.recv_from(&mut buf) => match r {
                            Ok(r) => r,
                            Err(e) => {
                                // E.g. ICMP errors surfacing on the socket: not fatal for a listener.
                                tracing::debug!(%local, error = %e, "UDP receive error");
                                continue;
                            }
                        },
                    };
                    let Some(mut adv) = buf.get(..len).and_then(parse_datagram) else {
                        sink.malformed();
                        tracing::debug!(%from, len, "ignored malformed UDP advert datagram");
                        continue;
                    };
                    adv.address = Some(from.to_string());
                    if sink.deliver(adv) == Delivery::Closed {
                        break;
                    }
                }
                tracing::debug!(%local, "UDP scan stopped");
                Ok(())
            },
        );
        Ok(scan.with_local_addr(local))
    }
}

impl Scanner for UdpScanner {
    fn scan<'a>(&'a self, uuids: &'a [u16]) -> BoxFuture<'a, Result<Scan, Error>> {
        Box::pin(self.start(uuids.to_vec()))
    }
}

/// The address a UDP scanner binds when the spec names only the target: the target itself,
/// or the wildcard address for a broadcast or unspecified target.
pub(crate) fn default_bind(target: SocketAddr) -> SocketAddr {
    let ip = match target.ip() {
        IpAddr::V4(ip) if ip.is_broadcast() || ip.is_unspecified() => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(ip) if ip.is_unspecified() || ip.is_multicast() => Ipv6Addr::UNSPECIFIED.into(),
        ip => ip,
    };
    SocketAddr::new(ip, target.port())
}

pub(crate) fn check_len(service_data: &[u8]) -> Result<(), Error> {
    if service_data.len() > MAX_SERVICE_DATA_LEN {
        return Err(Error::ServiceDataTooLong {
            len: service_data.len(),
            max: MAX_SERVICE_DATA_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_lowercase_and_padded() {
        assert_eq!(format_datagram(0x00ab, &[]), "ADV 00ab ");
        assert_eq!(
            format_datagram(0xFDE2, &[0xDE, 0xAD, 0xBE, 0xEF]),
            "ADV fde2 deadbeef"
        );
    }

    #[test]
    fn parse_round_trip_and_leniency() {
        let data: Vec<u8> = (0..20).collect();
        let adv = parse_datagram(format_datagram(0xfff9, &data).as_bytes()).unwrap();
        assert_eq!(adv.uuid16, 0xfff9);
        assert_eq!(adv.service_data, data);
        assert_eq!(
            parse_datagram(b"ADV FFF9 ABCD\r\n").unwrap().service_data,
            [0xab, 0xcd]
        );
        assert!(
            parse_datagram(b"ADV fff9 ")
                .unwrap()
                .service_data
                .is_empty()
        );
    }

    #[test]
    fn parse_rejects_malformed() {
        for bad in [
            &b""[..],
            b"ADV",
            b"ADV fff9",
            b"adv fff9 00",
            b"ADV fff9  00",
            b"ADV fff 00",
            b"ADV fff9x00",
            b"ADV fff9 0",
            b"ADV fff9 zz",
            b"ADV fff9 00\n\n",
            b" ADV fff9 00",
            b"ADV +ff9 00",
            b"ADV \xff\xfe 00",
        ] {
            assert!(parse_datagram(bad).is_none(), "{bad:?} accepted");
        }
        let too_long = format_datagram(0xfff9, &vec![0; MAX_SERVICE_DATA_LEN + 1]);
        assert!(parse_datagram(too_long.as_bytes()).is_none());
        let longest = format_datagram(0xfff9, &vec![0; MAX_SERVICE_DATA_LEN]);
        assert!(parse_datagram(longest.as_bytes()).is_some());
        assert!(longest.len() + 2 <= MAX_DATAGRAM);
    }

    #[test]
    fn default_bind_uses_wildcard_for_broadcast() {
        let b = |s: &str| default_bind(s.parse().unwrap()).to_string();
        assert_eq!(b("127.0.0.1:4500"), "127.0.0.1:4500");
        assert_eq!(b("255.255.255.255:4500"), "0.0.0.0:4500");
        assert_eq!(b("0.0.0.0:4500"), "0.0.0.0:4500");
        assert_eq!(b("[::1]:4500"), "[::1]:4500");
    }
}

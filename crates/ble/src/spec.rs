//! `--ble` radio selection at run time.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::udp::{DEFAULT_INTERVAL, UdpAdvertiser, UdpScanner, default_bind};
use crate::{Advertiser, Error, MemoryRadio, Scanner, bluez};

/// Which radio to use, as given on the command line (`--ble SPEC`).
///
/// | Spec | Radio |
/// |---|---|
/// | `bluez` | BlueZ (bluer), first adapter |
/// | `bluez:hci1` | BlueZ, the adapter named `hci1` |
/// | `udp:127.0.0.1:4500` | UDP radio: advertisers send to, scanners bind, that address |
/// | `udp:10.0.0.255:4500,bind=0.0.0.0:4500` | advertisers send to the broadcast address; scanners bind `bind` |
/// | `memory` | the process-wide [`MemoryRadio::global`] bus |
///
/// Options follow after commas: `timeout=DUR` (bluez: how long to wait for D-Bus/BlueZ,
/// default 5 s), `interval=DUR` (udp, memory: advertising interval, default 100 ms) and
/// `bind=ADDR:PORT` (udp: what a scanner binds; default the target address, or the wildcard
/// address if the target is `255.255.255.255` or unspecified). `DUR` is `250ms`, `2s` or a bare
/// number of milliseconds. Addresses are IP literals (`[::1]:4500` for IPv6).
///
/// ```
/// use hybridge_ble::RadioSpec;
/// let spec: RadioSpec = "udp:127.0.0.1:4500,interval=50ms".parse().unwrap();
/// assert_eq!(spec.to_string(), "udp:127.0.0.1:4500,interval=50ms");
/// assert!("bluetooth".parse::<RadioSpec>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RadioSpec {
    /// Real Bluetooth through BlueZ (Linux).
    Bluez {
        /// Adapter name such as `hci0`; `None` picks the first adapter.
        adapter: Option<String>,
        /// Limit on connecting to D-Bus and finding the adapter.
        timeout: Duration,
    },
    /// The UDP radio.
    Udp {
        /// Where advertisers send datagrams.
        target: SocketAddr,
        /// What scanners bind.
        bind: SocketAddr,
        /// Advertising interval.
        interval: Duration,
    },
    /// The process-wide in-memory bus.
    Memory {
        /// Advertising interval.
        interval: Duration,
    },
}

/// Default limit on connecting to D-Bus and BlueZ.
pub const DEFAULT_BLUEZ_TIMEOUT: Duration = Duration::from_secs(5);

impl RadioSpec {
    /// `bluez`, `udp` or `memory`.
    pub fn kind(&self) -> &'static str {
        match self {
            RadioSpec::Bluez { .. } => "bluez",
            RadioSpec::Udp { .. } => "udp",
            RadioSpec::Memory { .. } => "memory",
        }
    }

    /// Opens a scanner on this radio (connecting to BlueZ for `bluez`, within its timeout).
    ///
    /// # Errors
    /// For `bluez`: [`Error::BluezUnavailable`], [`Error::NoAdapter`] or
    /// [`Error::Unsupported`]. The UDP radio binds only when a scan starts.
    pub async fn scanner(&self) -> Result<Box<dyn Scanner>, Error> {
        Ok(match self {
            RadioSpec::Bluez { adapter, timeout } => {
                Box::new(bluez::BluezScanner::open(adapter.as_deref(), *timeout).await?)
            }
            RadioSpec::Udp { bind, .. } => Box::new(UdpScanner::new(*bind)),
            RadioSpec::Memory { .. } => Box::new(MemoryRadio::global()),
        })
    }

    /// Opens an advertiser on this radio (connecting to BlueZ for `bluez`, within its timeout).
    ///
    /// # Errors
    /// For `bluez`: [`Error::BluezUnavailable`], [`Error::NoAdapter`] or
    /// [`Error::Unsupported`].
    pub async fn advertiser(&self) -> Result<Box<dyn Advertiser>, Error> {
        Ok(match self {
            RadioSpec::Bluez { adapter, timeout } => {
                Box::new(bluez::BluezAdvertiser::open(adapter.as_deref(), *timeout).await?)
            }
            RadioSpec::Udp {
                target, interval, ..
            } => Box::new(UdpAdvertiser::new(*target).with_interval(*interval)),
            RadioSpec::Memory { interval } => {
                Box::new(MemoryRadio::global().with_interval(*interval))
            }
        })
    }
}

impl FromStr for RadioSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidSpec {
            spec: s.to_owned(),
            reason,
        };
        let mut parts = s.trim().split(',');
        let head = parts.next().unwrap_or_default();
        let (kind, arg) = match head.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg)),
            None => (head, None),
        };
        let mut timeout = None;
        let mut interval = None;
        let mut bind = None;
        for option in parts {
            let Some((key, value)) = option.split_once('=') else {
                return Err(invalid(format!("option {option:?} is not KEY=VALUE")));
            };
            let slot_taken = match key {
                "timeout" if kind == "bluez" => timeout.replace(parse_duration(value)).is_some(),
                "interval" if kind == "udp" || kind == "memory" => {
                    interval.replace(parse_duration(value)).is_some()
                }
                "bind" if kind == "udp" => bind.replace(parse_addr(value)).is_some(),
                _ => return Err(invalid(format!("unknown option {key:?} for {kind}"))),
            };
            if slot_taken {
                return Err(invalid(format!("option {key:?} given twice")));
            }
        }
        let duration = |d: Option<Result<Duration, String>>, default| match d {
            None => Ok(default),
            Some(Ok(d)) if d.is_zero() => Err(invalid("durations must be positive".into())),
            Some(Ok(d)) => Ok(d),
            Some(Err(e)) => Err(invalid(e)),
        };
        match (kind, arg) {
            ("bluez", adapter) => {
                let valid_name = |name: &str| {
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                };
                if let Some(name) = adapter.filter(|n| !valid_name(n)) {
                    return Err(invalid(format!(
                        "{name:?} is not an adapter name like hci0"
                    )));
                }
                Ok(RadioSpec::Bluez {
                    adapter: adapter.map(str::to_owned),
                    timeout: duration(timeout, DEFAULT_BLUEZ_TIMEOUT)?,
                })
            }
            ("udp", Some(addr)) => {
                let target = parse_addr(addr).map_err(invalid)?;
                let bind = match bind {
                    None => default_bind(target),
                    Some(b) => b.map_err(invalid)?,
                };
                Ok(RadioSpec::Udp {
                    target,
                    bind,
                    interval: duration(interval, DEFAULT_INTERVAL)?,
                })
            }
            ("udp", None) => Err(invalid("udp needs an address: udp:ADDR:PORT".into())),
            ("memory", None) => Ok(RadioSpec::Memory {
                interval: duration(interval, DEFAULT_INTERVAL)?,
            }),
            ("memory", Some(_)) => Err(invalid("memory takes no address".into())),
            (other, _) => Err(invalid(format!("unknown radio {other:?}"))),
        }
    }
}

impl fmt::Display for RadioSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RadioSpec::Bluez { adapter, timeout } => {
                f.write_str("bluez")?;
                if let Some(name) = adapter {
                    write!(f, ":{name}")?;
                }
                if *timeout != DEFAULT_BLUEZ_TIMEOUT {
                    write!(f, ",timeout={}ms", timeout.as_millis())?;
                }
            }
            RadioSpec::Udp {
                target,
                bind,
                interval,
            } => {
                write!(f, "udp:{target}")?;
                if *bind != default_bind(*target) {
                    write!(f, ",bind={bind}")?;
                }
                if *interval != DEFAULT_INTERVAL {
                    write!(f, ",interval={}ms", interval.as_millis())?;
                }
            }
            RadioSpec::Memory { interval } => {
                f.write_str("memory")?;
                if *interval != DEFAULT_INTERVAL {
                    write!(f, ",interval={}ms", interval.as_millis())?;
                }
            }
        }
        Ok(())
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not IP:PORT (IPv6 as [ADDR]:PORT; no host names)"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 250ms or 2s");
    let (digits, unit_ms) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = s.strip_suffix('s') {
        (d, 1000)
    } else {
        (s, 1)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if ms > 3_600_000 {
        return Err(format!("{s:?} is longer than an hour"));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> RadioSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_bluez() {
        assert_eq!(
            parse("bluez"),
            RadioSpec::Bluez {
                adapter: None,
                timeout: DEFAULT_BLUEZ_TIMEOUT
            }
        );
        assert_eq!(
            parse("bluez:hci1,timeout=2s"),
            RadioSpec::Bluez {
                adapter: Some("hci1".into()),
                timeout: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn parses_udp() {
        assert_eq!(
            parse("udp:127.0.0.1:4500"),
            RadioSpec::Udp {
                target: "127.0.0.1:4500".parse().unwrap(),
                bind: "127.0.0.1:4500".parse().unwrap(),
                interval: DEFAULT_INTERVAL,
            }
        );
        assert_eq!(
            parse("udp:255.255.255.255:9"),
            RadioSpec::Udp {
                target: "255.255.255.255:9".parse().unwrap(),
                bind: "0.0.0.0:9".parse().unwrap(),
                interval: DEFAULT_INTERVAL,
            }
        );
        assert_eq!(
            parse("udp:[::1]:4500,bind=[::]:4500,interval=250"),
            RadioSpec::Udp {
                target: "[::1]:4500".parse().unwrap(),
                bind: "[::]:4500".parse().unwrap(),
                interval: Duration::from_millis(250),
            }
        );
    }

    #[test]
    fn parses_memory() {
        assert_eq!(
            parse("memory"),
            RadioSpec::Memory {
                interval: DEFAULT_INTERVAL
            }
        );
        assert_eq!(
            parse("memory,interval=5ms"),
            RadioSpec::Memory {
                interval: Duration::from_millis(5)
            }
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "bluez",
            "bluez:hci0",
            "bluez:hci0,timeout=1500ms",
            "udp:127.0.0.1:4500",
            "udp:10.0.0.255:4500,bind=0.0.0.0:4500,interval=20ms",
            "udp:[::1]:1",
            "memory",
            "memory,interval=1000ms",
        ] {
            assert_eq!(parse(s).to_string(), s);
            assert_eq!(parse(&parse(s).to_string()), parse(s));
        }
    }

    #[test]
    fn rejects_bad_specs() {
        for s in [
            "",
            "ble",
            "udp",
            "udp:",
            "udp:localhost:4500",
            "udp:127.0.0.1",
            "udp:127.0.0.1:99999",
            "udp:127.0.0.1:4500,interval=0",
            "udp:127.0.0.1:4500,interval=fast",
            "udp:127.0.0.1:4500,interval=1h",
            "udp:127.0.0.1:4500,interval=1s,interval=2s",
            "udp:127.0.0.1:4500,timeout=1s",
            "udp:127.0.0.1:4500,bind",
            "udp:127.0.0.1:4500,bind=nowhere",
            "bluez:",
            "bluez:hci0/dev",
            "bluez,interval=1s",
            "memory:x",
            "memory,bind=127.0.0.1:1",
            "BLUEZ",
        ] {
            let err = s.parse::<RadioSpec>().expect_err(s);
            assert!(matches!(err, Error::InvalidSpec { .. }), "{s}: {err}");
            assert!(err.to_string().contains("expected bluez"), "{err}");
        }
    }
}

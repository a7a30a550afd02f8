//! Tunnel-server paths (docs/protocol.md §6.1): `/cable/new`, `/cable/connect`, `/cable/contact`.
//!
//! Clients build these paths; the relay parses them. The parser is strict because the path is
//! the only thing the relay learns about a tunnel before it commits resources to it: exact
//! lengths, hex digits only (either case, since Chromium writes upper case and libwebauthn
//! lower case — docs/protocol.md §11.8), no trailing slash, no query, no `..` or empty segments.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Length of a tunnel ID in bytes (`Derive(qr_secret, "", TunnelID, 16)`, docs/protocol.md §3.1).
pub const TUNNEL_ID_LEN: usize = 16;
/// Length of a routing ID in bytes (`kRoutingIdSize`, docs/protocol.md §4.2).
pub const ROUTING_ID_LEN: usize = 3;
/// Longest contact ID we accept in `/cable/contact/`, in bytes. Google's contact IDs are FCM
/// registration tokens (a few hundred bytes); anything much longer is not a contact ID.
pub const MAX_CONTACT_ID_LEN: usize = 1024;
/// The WebSocket subprotocol every tunnel request carries and the server echoes (docs/protocol.md §6.2).
pub const SUBPROTOCOL: &str = "fido.cable";
/// Response header of `/cable/new` carrying the routing ID as 6 hex characters (docs/protocol.md §6.2).
pub const ROUTING_ID_HEADER: &str = "X-caBLE-Routing-ID";
/// Request header of `/cable/contact` carrying the hex CBOR client payload (docs/protocol.md §6.2).
pub const CLIENT_PAYLOAD_HEADER: &str = "X-caBLE-Client-Payload";

/// Why a tunnel path or ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The path is not one of the three tunnel endpoints.
    #[error(
        "not a tunnel path: expected /cable/new/<32 hex>, /cable/connect/<6 hex>/<32 hex> or /cable/contact/<base64url>"
    )]
    UnknownPath,
    /// An ID has the wrong number of characters.
    #[error("{what} must be {expected} hex characters, got {got}")]
    BadLength {
        /// Which ID.
        what: &'static str,
        /// The required number of characters.
        expected: usize,
        /// The number received.
        got: usize,
    },
    /// An ID contains something other than hex digits.
    #[error("{what} must contain only hex digits")]
    NotHex {
        /// Which ID.
        what: &'static str,
    },
    /// The contact ID is not unpadded base64url, is empty, or is too long.
    #[error("contact ID must be 1 to {MAX_CONTACT_ID_LEN} bytes of unpadded base64url")]
    BadContactId,
}

fn decode_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], TunnelError> {
    if s.len() != 2 * N {
        return Err(TunnelError::BadLength {
            what,
            expected: 2 * N,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| TunnelError::NotHex { what })?;
    Ok(out)
}

/// The 16-byte ID naming one tunnel; derived from the QR secret in the QR flow.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelId(pub [u8; TUNNEL_ID_LEN]);

impl TunnelId {
    /// Parses 32 hex characters, either case.
    pub fn from_hex(s: &str) -> Result<Self, TunnelError> {
        decode_hex("tunnel ID", s).map(Self)
    }

    /// Upper-case hex, as Chromium writes it.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// A short, non-reversible tag for logs: the first 4 hex characters. A full tunnel ID is
    /// a bearer capability for connecting to the tunnel and never goes into a log. Formatting
    /// happens only when a log line is written; making the tag allocates nothing.
    pub fn log_tag(&self) -> LogTag {
        LogTag([self.0[0], self.0[1]])
    }
}

/// The first two bytes of a tunnel ID, shown as 4 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LogTag([u8; 2]);

impl fmt::Display for LogTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}{:02x}", self.0[0], self.0[1])
    }
}

impl fmt::Debug for TunnelId {
    // Redacted: whoever knows the tunnel ID (and routing ID) can connect to the tunnel.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelId({}…)", self.log_tag())
    }
}

/// The 3-byte ID a tunnel server hands the phone in `X-caBLE-Routing-ID`; opaque to clients.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RoutingId(pub [u8; ROUTING_ID_LEN]);

impl RoutingId {
    /// Parses 6 hex characters, either case.
    pub fn from_hex(s: &str) -> Result<Self, TunnelError> {
        decode_hex("routing ID", s).map(Self)
    }

    /// Upper-case hex, as Chromium writes it.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }
}

impl fmt::Display for RoutingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A parsed tunnel-server request path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TunnelPath {
    /// `/cable/new/<tunnel id>`: the phone opens a tunnel and waits.
    New {
        /// The tunnel to open.
        tunnel_id: TunnelId,
    },
    /// `/cable/connect/<routing id>/<tunnel id>`: the laptop (or, linked, the phone) joins.
    Connect {
        /// Which backend holds the tunnel.
        routing_id: RoutingId,
        /// The tunnel to join.
        tunnel_id: TunnelId,
    },
    /// `/cable/contact/<contact id>`: the laptop asks the server to wake a linked phone.
    Contact {
        /// The phone's contact ID from linking data.
        contact_id: Vec<u8>,
    },
}

impl TunnelPath {
    /// Parses a request path (without scheme, host or query) strictly.
    ///
    /// ```
    /// use hybridge_proto::tunnel::{TunnelPath, TunnelId};
    /// let p = TunnelPath::parse("/cable/new/68656C6C6F2C20776562617574686E21").unwrap();
    /// assert_eq!(p, TunnelPath::New { tunnel_id: TunnelId(*b"hello, webauthn!") });
    /// assert!(TunnelPath::parse("/cable/new/68656C6C6F2C20776562617574686E21/").is_err());
    /// ```
    pub fn parse(path: &str) -> Result<Self, TunnelError> {
        let rest = path
            .strip_prefix("/cable/")
            .ok_or(TunnelError::UnknownPath)?;
        let mut parts = rest.split('/');
        let kind = parts.next().ok_or(TunnelError::UnknownPath)?;
        let args: Vec<&str> = parts.collect();
        match (kind, args.as_slice()) {
            ("new", [tunnel]) => Ok(Self::New {
                tunnel_id: TunnelId::from_hex(tunnel)?,
            }),
            ("connect", [routing, tunnel]) => Ok(Self::Connect {
                routing_id: RoutingId::from_hex(routing)?,
                tunnel_id: TunnelId::from_hex(tunnel)?,
            }),
            ("contact", [contact]) => {
                // Reject padding and anything outside the URL-safe alphabet before decoding,
                // and bound the length before allocating.
                if contact.is_empty()
                    || contact.len() > MAX_CONTACT_ID_LEN.div_ceil(3) * 4
                    || !contact
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(TunnelError::BadContactId);
                }
                let contact_id = URL_SAFE_NO_PAD
                    .decode(contact)
                    .map_err(|_| TunnelError::BadContactId)?;
                if contact_id.is_empty() || contact_id.len() > MAX_CONTACT_ID_LEN {
                    return Err(TunnelError::BadContactId);
                }
                Ok(Self::Contact { contact_id })
            }
            _ => Err(TunnelError::UnknownPath),
        }
    }

    /// The request path, with IDs in upper-case hex as Chromium writes them.
    pub fn to_path(&self) -> String {
        match self {
            Self::New { tunnel_id } => format!("/cable/new/{}", tunnel_id.to_hex()),
            Self::Connect {
                routing_id,
                tunnel_id,
            } => {
                format!(
                    "/cable/connect/{}/{}",
                    routing_id.to_hex(),
                    tunnel_id.to_hex()
                )
            }
            Self::Contact { contact_id } => {
                format!("/cable/contact/{}", URL_SAFE_NO_PAD.encode(contact_id))
            }
        }
    }

    /// The full WebSocket URL on `base`, normalised by [`base_url`]: a bare hostname
    /// (`cable.ua5v.com`) gets `wss://`, a URL with scheme and optional port
    /// (`ws://127.0.0.1:8080`) is kept, a trailing slash is ignored.
    pub fn to_url(&self, base: &str) -> String {
        format!("{}{}", base_url(base), self.to_path())
    }
}

/// A tunnel server's base URL, the one form every side uses: `base` is either a bare hostname
/// (`cable.ua5v.com`, as domain IDs resolve to, giving `wss://`) or a URL with scheme and
/// optional port (`ws://127.0.0.1:8080`, `wss://relay.example.net`), as used for self-hosted
/// and local relays. Trailing slashes are dropped, so a path can be appended.
///
/// ```
/// use hybridge_proto::tunnel::base_url;
/// assert_eq!(base_url("cable.ua5v.com"), "wss://cable.ua5v.com");
/// assert_eq!(base_url("ws://127.0.0.1:8080/"), "ws://127.0.0.1:8080");
/// ```
pub fn base_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.contains("://") {
        base.to_owned()
    } else {
        format!("wss://{base}")
    }
}

/// Parses the value of an `X-caBLE-Routing-ID` response header (6 hex characters, docs/protocol.md §6.2).
pub fn parse_routing_id_header(value: &[u8]) -> Result<RoutingId, TunnelError> {
    let s = std::str::from_utf8(value).map_err(|_| TunnelError::NotHex { what: "routing ID" })?;
    RoutingId::from_hex(s.trim())
}

/// The routing ID from every `X-caBLE-Routing-ID` value of a 101 response: there must be
/// exactly one, and it must parse (a duplicate is an error, docs/protocol.md §6.2). `None` otherwise.
pub fn routing_id_from_headers<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Option<RoutingId> {
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (Some(v), None) => parse_routing_id_header(v).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HELLO: &str = "68656C6C6F2C20776562617574686E21";

    #[test]
    fn exactly_one_routing_id_header() {
        let one: [&[u8]; 1] = [b"A1b2C3"];
        assert_eq!(
            routing_id_from_headers(one),
            Some(RoutingId([0xa1, 0xb2, 0xc3]))
        );
        let two: [&[u8]; 2] = [b"a1b2c3", b"a1b2c3"];
        assert_eq!(routing_id_from_headers(two), None);
        assert_eq!(routing_id_from_headers(std::iter::empty::<&[u8]>()), None);
        let bad: [&[u8]; 1] = [b"a1b2"];
        assert_eq!(routing_id_from_headers(bad), None);
    }

    #[test]
    fn log_tag_is_the_first_four_hex_digits() {
        let id = TunnelId(*b"hello, webauthn!");
        assert_eq!(id.log_tag().to_string(), "6865");
        assert_eq!(format!("{id:?}"), "TunnelId(6865…)");
    }

    #[test]
    fn parses_webauthn_rs_vectors() {
        // docs/protocol.md §10.7.
        assert_eq!(
            TunnelPath::parse(&format!("/cable/new/{HELLO}")).unwrap(),
            TunnelPath::New {
                tunnel_id: TunnelId(*b"hello, webauthn!")
            }
        );
        assert_eq!(
            TunnelPath::parse(&format!("/cable/connect/616263/{HELLO}")).unwrap(),
            TunnelPath::Connect {
                routing_id: RoutingId(*b"abc"),
                tunnel_id: TunnelId(*b"hello, webauthn!")
            }
        );
        let lower = HELLO.to_ascii_lowercase();
        assert!(TunnelPath::parse(&format!("/cable/new/{lower}")).is_ok());
        assert!(TunnelPath::parse(&format!("/cable/connect/6a6B6c/{lower}")).is_ok());
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "",
            "/",
            "/cable",
            "/cable/",
            "/cable/new",
            "/cable/new/",
            &format!("/cable/new/{HELLO}/"),
            &format!("/cable/new/{HELLO}00"),
            &format!("/cable/new/{}", &HELLO[2..]),
            &format!("/cable/new/../{HELLO}"),
            &format!("/cable/new/{}zz", &HELLO[2..]),
            &format!("/cable/new/+{}", &HELLO[1..]),
            &format!("/cable/connect/61626/{HELLO}"),
            &format!("/cable/connect/616263//{HELLO}"),
            &format!("/cable/connect/616263/{HELLO}/"),
            &format!("/cable/connect/../616263/{HELLO}"),
            &format!("/cable/connect/{HELLO}"),
            &format!("/cable/unknown/{HELLO}"),
            &format!("//cable/new/{HELLO}"),
            &format!("/CABLE/new/{HELLO}"),
            "/cable/contact/",
            "/cable/contact/abc=",
            "/cable/contact/a",
            "/cable/contact/ab/",
            "/cable/contact/a+b/",
            "/cable/contact/..",
        ] {
            assert!(TunnelPath::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn contact_ids_round_trip() {
        let p = TunnelPath::Contact {
            contact_id: vec![0xfb, 0xff, 0x01],
        };
        assert_eq!(p.to_path(), "/cable/contact/-_8B");
        assert_eq!(TunnelPath::parse(&p.to_path()).unwrap(), p);
        let too_long = URL_SAFE_NO_PAD.encode(vec![7u8; MAX_CONTACT_ID_LEN + 1]);
        assert!(TunnelPath::parse(&format!("/cable/contact/{too_long}")).is_err());
    }

    #[test]
    fn urls_for_hosts_and_local_relays() {
        let p = TunnelPath::Connect {
            routing_id: RoutingId([9, 10, 11]),
            tunnel_id: TunnelId([0; 16]),
        };
        assert_eq!(
            p.to_url("cable.ua5v.com"),
            "wss://cable.ua5v.com/cable/connect/090A0B/00000000000000000000000000000000"
        );
        assert_eq!(
            p.to_url("ws://127.0.0.1:8080/"),
            "ws://127.0.0.1:8080/cable/connect/090A0B/00000000000000000000000000000000"
        );
    }

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(base_url("cable.ua5v.com"), "wss://cable.ua5v.com");
        assert_eq!(base_url("cable.ua5v.com/"), "wss://cable.ua5v.com");
        assert_eq!(
            base_url("relay.example.net:8443"),
            "wss://relay.example.net:8443"
        );
        assert_eq!(
            base_url("wss://relay.example.net"),
            "wss://relay.example.net"
        );
        assert_eq!(base_url("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080");
        assert_eq!(base_url("ws://127.0.0.1:8080//"), "ws://127.0.0.1:8080");
        // Already normal: normalising again changes nothing.
        for b in ["cable.ua5v.com/", "ws://127.0.0.1:8080/"] {
            assert_eq!(base_url(&base_url(b)), base_url(b));
        }
    }

    #[test]
    fn routing_id_header() {
        assert_eq!(
            parse_routing_id_header(b"090a0B").unwrap(),
            RoutingId([9, 10, 11])
        );
        assert!(parse_routing_id_header(b"090a0").is_err());
        assert!(parse_routing_id_header(b"\xff\xfe").is_err());
    }

    #[test]
    fn debug_redacts_tunnel_id() {
        let s = format!("{:?}", TunnelId(*b"hello, webauthn!"));
        assert!(!s.contains(&HELLO[4..]) && !s.contains(&HELLO[4..].to_ascii_lowercase()));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let _ = TunnelPath::parse(&s);
        }

        #[test]
        fn paths_round_trip(t in any::<[u8; 16]>(), r in any::<[u8; 3]>(), c in proptest::collection::vec(any::<u8>(), 1..64)) {
            for p in [
                TunnelPath::New { tunnel_id: TunnelId(t) },
                TunnelPath::Connect { routing_id: RoutingId(r), tunnel_id: TunnelId(t) },
                TunnelPath::Contact { contact_id: c.clone() },
            ] {
                prop_assert_eq!(TunnelPath::parse(&p.to_path()).unwrap(), p);
            }
        }
    }
}

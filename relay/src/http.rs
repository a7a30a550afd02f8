//! The HTTP/1.1 part: reading one request head and writing the upgrade or error response.
//!
//! Only `GET` with a handful of headers is meaningful here, so this is a thin layer over
//! `httparse` with a hard size limit rather than a general HTTP server.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// What the relay needs from a request head.
#[derive(Debug, Default)]
pub(crate) struct Request {
    pub method_is_get: bool,
    pub path: String,
    /// `Upgrade: websocket` and `Connection: upgrade` present.
    pub upgrade: bool,
    /// `Sec-WebSocket-Version: 13`.
    pub version_13: bool,
    /// `Sec-WebSocket-Key`, if present and well-formed (16 bytes base64).
    pub key: Option<String>,
    /// `fido.cable` among the offered subprotocols.
    pub fido_cable: bool,
    /// The client address a trusted proxy put in the configured header (the rightmost
    /// entry, which is the one the nearest proxy added).
    pub client_ip: Option<IpAddr>,
    /// The request has one `Origin` header and it names the host the caller expects
    /// ([`origin_matches`]); false when no host is expected.
    pub origin_ok: bool,
    /// `hybridge.wake` among the offered subprotocols (`/cable/subscribe`).
    pub wake_proto: bool,
    /// The `Host` header, when there is exactly one (the subscription proof signs it).
    pub host: Option<String>,
    /// The `X-caBLE-Client-Payload` value as sent (`/cable/contact`), when there is exactly
    /// one; checked by the router. Bounded by the head's size limit.
    pub client_payload: Option<Vec<u8>>,
    /// `X-caBLE-Signal-Connection: true` (`/cable/contact`).
    pub signal: bool,
}

/// Outcome of trying to parse the bytes read so far.
pub(crate) enum Parsed {
    /// A complete head of `len` bytes.
    Complete(Request, usize),
    /// Need more bytes.
    Partial,
    /// Not HTTP/1.x.
    Invalid,
}

/// Parses a request head from `buf`; `client_ip_header` names the header a trusted proxy
/// uses for the client's address (`X-Forwarded-For`, `X-Real-IP`), if any, and
/// `origin_host` the host `Origin` must name (`--origin`), if any.
pub(crate) fn parse(
    buf: &[u8],
    client_ip_header: Option<&str>,
    origin_host: Option<&str>,
) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let mut out = Request {
        method_is_get: req.method == Some("GET"),
        path: req.path.unwrap_or("").to_owned(),
        ..Default::default()
    };
    let (mut upgrade_ws, mut conn_upgrade) = (false, false);
    // A header that must appear once: a second one makes it ambiguous, so it counts as absent.
    let (mut hosts, mut payloads) = (0, 0);
    // Two Origin headers are ambiguous: they match nothing.
    let (mut origins, mut origin_ok) = (0, false);
    for h in req.headers.iter() {
        let name = h.name;
        // Only the headers below are read; the others are not even checked for UTF-8.
        let value = || std::str::from_utf8(h.value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws |= value().eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            conn_upgrade |= value()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.version_13 = value() == "13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            let v = value();
            // 16 bytes in base64 is 24 characters; decoded on the stack to check it.
            let mut k = [0u8; 18];
            let ok = v.len() == 24
                && base64::engine::general_purpose::STANDARD
                    .decode_slice(v, &mut k)
                    .is_ok_and(|n| n == 16);
            out.key = ok.then(|| v.to_owned());
        } else if client_ip_header.is_some_and(|c| name.eq_ignore_ascii_case(c)) {
            let last = value().rsplit(',').next().unwrap_or("").trim();
            out.client_ip = last
                .parse::<IpAddr>()
                .ok()
                .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()));
        } else if name.eq_ignore_ascii_case("origin") {
            origins += 1;
            origin_ok = origin_host.is_some_and(|h| origin_matches(value(), h));
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for t in value().split(',').map(str::trim) {
                out.fido_cable |= t == hybridge_proto::tunnel::SUBPROTOCOL;
                out.wake_proto |= t == hybridge_proto::contact::WAKE_SUBPROTOCOL;
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            out.host = Some(value().to_owned());
        } else if name.eq_ignore_ascii_case(hybridge_proto::tunnel::CLIENT_PAYLOAD_HEADER) {
            payloads += 1;
            out.client_payload = Some(h.value.to_vec());
        } else if name.eq_ignore_ascii_case(hybridge_proto::contact::SIGNAL_CONNECTION_HEADER) {
            out.signal = value().eq_ignore_ascii_case("true");
        }
    }
    if hosts != 1 {
        out.host = None;
    }
    if payloads != 1 {
        out.client_payload = None;
    }
    out.upgrade = upgrade_ws && conn_upgrade;
    out.origin_ok = origin_ok && origins == 1;
    Parsed::Complete(out, len)
}

/// Whether an `Origin` header value names `host` (as given to `--origin`).
///
/// An origin is `scheme://authority` (RFC 6454 §6.2): no path, no credentials. The scheme
/// is not compared (phones send `wss://`, browsers `https://`); `host` is compared, ignoring
/// case, with the whole authority and with the authority less its port. So `cable.example.org`
/// accepts `wss://cable.example.org` and `wss://cable.example.org:443`, while
/// `127.0.0.1:8080` accepts only `…://127.0.0.1:8080`. `null` and anything else that is not
/// an origin match nothing.
pub(crate) fn origin_matches(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let Some((name, _port)) = split_authority(authority).filter(|_| scheme_ok) else {
        return false;
    };
    authority.eq_ignore_ascii_case(host) || name.eq_ignore_ascii_case(host)
}

/// Splits `host[:port]` (the host may be a bracketed IPv6 literal) into host and port;
/// `None` unless the host is a plain name or address and the port, if any, is 1-5 digits.
fn split_authority(a: &str) -> Option<(&str, Option<&str>)> {
    let (name, port) = match a.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']')? + 2; // past the brackets
            let port = a[end..].strip_prefix(':');
            if port.is_none() && end != a.len() {
                return None;
            }
            let inner = &a[1..end - 1];
            let literal = !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            (literal.then_some(&a[..end])?, port)
        }
        None => match a.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (a, None),
        },
    };
    let name_ok = name.starts_with('[')
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    (name_ok && port_ok).then_some((name, port))
}

/// Checks and normalises a host for `--origin`: `name`, `name:port`, `[v6]` or `[v6]:port`,
/// lowercased; `None` for anything else.
pub(crate) fn origin_host(s: &str) -> Option<String> {
    split_authority(s.trim()).map(|_| s.trim().to_ascii_lowercase())
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2): the 28 base64 characters,
/// written into `out` (no allocation).
fn accept_key_into<'a>(key: &str, out: &'a mut [u8; 28]) -> &'a [u8] {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(h.finalize(), out)
        .unwrap_or(0);
    &out[..n]
}

/// Appends a `101 Switching Protocols` response for another endpoint than `/cable/new` and
/// `/cable/connect`: echoing `protocol`, and `X-caBLE-Signal-Connection: true` when `signal`
/// (`/cable/contact`, docs/protocol.md §6.2).
pub(crate) fn push_upgrade(out: &mut Vec<u8>, key: &str, protocol: &str, signal: bool) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: ",
    );
    out.extend_from_slice(protocol.as_bytes());
    out.extend_from_slice(b"\r\nSec-WebSocket-Accept: ");
    let mut accept = [0u8; 28];
    out.extend_from_slice(accept_key_into(key, &mut accept));
    if signal {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(hybridge_proto::contact::SIGNAL_CONNECTION_HEADER.as_bytes());
        out.extend_from_slice(b": true");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends a `101 Switching Protocols` response echoing `fido.cable`, with the routing ID
/// header when given (only `/cable/new` carries it, docs/protocol.md §6.2).
pub(crate) fn push_switching(out: &mut Vec<u8>, key: &str, routing_id: Option<&str>) {
    out.reserve(200); // the whole response (at most 193 bytes): one allocation
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: fido.cable\r\nSec-WebSocket-Accept: ",
    );
    let mut accept = [0u8; 28];
    out.extend_from_slice(accept_key_into(key, &mut accept));
    if let Some(r) = routing_id {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(hybridge_proto::tunnel::ROUTING_ID_HEADER.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(r.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// The WebSocket version the relay speaks, named in the 400 for a request with another
/// or none (RFC 6455 §4.2.2), so the client can retry with it.
pub(crate) const VERSION_HEADER: &str = "Sec-WebSocket-Version: 13\r\n";

/// A complete, connection-closing HTTP response; `extra` holds further header lines, each
/// ending in CRLF.
pub(crate) fn response(status: u16, extra: &str, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_example() {
        let mut out = [0u8; 28];
        assert_eq!(
            accept_key_into("dGhlIHNhbXBsZSBub25jZQ==", &mut out),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_upgrade() {
        let req = b"GET /cable/new/00 HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: foo, fido.cable\r\n\r\nrest";
        let Parsed::Complete(r, n) = parse(req, None, None) else {
            panic!("not complete")
        };
        assert_eq!(&req[n..], b"rest");
        assert!(r.method_is_get && r.upgrade && r.version_13 && r.fido_cable && r.key.is_some());
        assert_eq!(r.path, "/cable/new/00");
        assert!(matches!(parse(&req[..20], None, None), Parsed::Partial));
        assert!(matches!(
            parse(b"\x16\x03\x01 junk\r\n\r\n", None, None),
            Parsed::Invalid
        ));
    }

    #[test]
    fn contact_and_subscribe_headers() {
        let parsed = |head: &str| match parse(head.as_bytes(), None, None) {
            Parsed::Complete(r, _) => r,
            _ => panic!("not complete"),
        };
        let r = parsed(
            "GET /cable/contact/x HTTP/1.1\r\nHost: Relay.Example:8443\r\nx-cable-client-payload: A0\r\nX-caBLE-Signal-Connection: TRUE\r\nSec-WebSocket-Protocol: hybridge.wake\r\n\r\n",
        );
        assert_eq!(r.host.as_deref(), Some("Relay.Example:8443"));
        assert_eq!(r.client_payload.as_deref(), Some(&b"A0"[..]));
        assert!(r.signal && r.wake_proto && !r.fido_cable);
        // Twice is ambiguous: as if absent.
        let r = parsed(
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-caBLE-Client-Payload: A0\r\nX-caBLE-Client-Payload: A0\r\nX-caBLE-Signal-Connection: false\r\n\r\n",
        );
        assert_eq!((r.host, r.client_payload, r.signal), (None, None, false));
        let mut out = Vec::new();
        push_upgrade(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", "fido.cable", true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Sec-WebSocket-Protocol: fido.cable\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("X-caBLE-Signal-Connection: true\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn websocket_key_must_be_16_bytes_of_base64() {
        let key_of = |k: &str| {
            let req = format!("GET / HTTP/1.1\r\nSec-WebSocket-Key: {k}\r\n\r\n");
            match parse(req.as_bytes(), None, None) {
                Parsed::Complete(r, _) => r.key,
                _ => panic!("not complete"),
            }
        };
        assert_eq!(
            key_of("dGhlIHNhbXBsZSBub25jZQ==").as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        for bad in [
            "AAAAAAAAAAAAAAAAAAAAAAAA", // 18 bytes
            "dGhlIHNhbXBsZSBub25jZQ=",  // 23 characters
            "dGhlIHNhbXBsZSBub25jZQ",   // unpadded
            "dGhlIHNhbXBsZSBub25j!Q==", // not base64
            "",
        ] {
            assert_eq!(key_of(bad), None, "{bad:?}");
        }
        // The 101 carries the RFC 6455 accept value.
        let mut out = Vec::new();
        push_switching(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", Some("ABCDEF"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(
            text.ends_with("X-caBLE-Routing-ID: ABCDEF\r\n\r\n"),
            "{text}"
        );
        assert!(text.len() <= 200, "fits the reserved capacity");
    }

    proptest::proptest! {
        /// Any bytes: a verdict, never a panic.
        #[test]
        fn any_bytes_get_a_verdict(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse(&data, Some("x-forwarded-for"), Some("cable.example.org"));
        }

        /// A real head cut anywhere is Partial until its last byte arrives, then Complete with
        /// the same request whatever follows it.
        #[test]
        fn a_head_cut_anywhere_is_partial_until_complete(cut in 0usize..1000, extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let head = b"GET /cable/new/0123456789ABCDEF0123456789ABCDEF HTTP/1.1\r\nHost: r.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: fido.cable\r\n\r\n";
            let cut = cut % head.len();
            proptest::prop_assert!(matches!(parse(&head[..cut], None, None), Parsed::Partial));
            let mut full = head.to_vec();
            full.extend_from_slice(&extra);
            match parse(&full, None, None) {
                Parsed::Complete(r, n) => {
                    proptest::prop_assert_eq!(n, head.len());
                    proptest::prop_assert!(r.upgrade && r.version_13 && r.fido_cable && r.key.is_some());
                }
                _ => proptest::prop_assert!(false, "not complete"),
            }
        }
    }

    #[test]
    fn origin_names_the_host() {
        let host = origin_host("Cable.Example.org").unwrap();
        for ok in [
            "wss://cable.example.org",
            "https://CABLE.EXAMPLE.ORG",
            "wss://cable.example.org:443",
            "android-app://cable.example.org",
        ] {
            assert!(origin_matches(ok, &host), "{ok}");
        }
        for bad in [
            "",
            "null",
            "cable.example.org",
            "://cable.example.org",
            "1ws://cable.example.org",
            "wss://cable.example.org/",
            "wss://cable.example.org:443/x",
            "wss://cable.example.org:",
            "wss://cable.example.org:123456",
            "wss://cable.example.org:44a",
            "wss://user@cable.example.org",
            "wss://cable.example.org.evil.net",
            "wss://evil.net#cable.example.org",
            "wss://cable.example.org\r\n",
        ] {
            assert!(!origin_matches(bad, &host), "{bad:?}");
        }
        let with_port = origin_host("127.0.0.1:8080").unwrap();
        assert!(origin_matches("ws://127.0.0.1:8080", &with_port));
        assert!(!origin_matches("ws://127.0.0.1", &with_port));
        assert!(!origin_matches("ws://127.0.0.1:8081", &with_port));
        let v6 = origin_host("[::1]").unwrap();
        assert!(origin_matches("wss://[::1]:8443", &v6));
        assert!(origin_matches("wss://[::1]", &v6));
        assert!(!origin_matches("wss://[::2]", &v6));
        assert!(!origin_matches("wss://[::1]x", &v6));
        for bad in [
            "",
            "wss://cable.example.org",
            "a/b",
            "a:b:c",
            "[zz]",
            "[::1",
            "host:",
        ] {
            assert!(origin_host(bad).is_none(), "{bad:?}");
        }
        // In a request: one Origin header that names the host, and only when one is expected.
        let ok = |head: &[u8], host| match parse(head, None, host) {
            Parsed::Complete(r, _) => r.origin_ok,
            _ => panic!("not complete"),
        };
        let one = b"GET / HTTP/1.1\r\norigin: wss://a.example\r\n\r\n";
        let two = b"GET / HTTP/1.1\r\nOrigin: wss://a.example\r\nOrigin: wss://a.example\r\n\r\n";
        assert!(ok(one, Some("a.example")));
        assert!(!ok(one, Some("b.example")));
        assert!(!ok(one, None));
        assert!(
            !ok(two, Some("a.example")),
            "two Origin headers match nothing"
        );
        assert!(!ok(b"GET / HTTP/1.1\r\n\r\n", Some("a.example")));
    }

    #[test]
    fn client_ip_from_trusted_header() {
        let req = b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9, 198.51.100.7\r\nX-Real-IP: [2001:db8::1]:443\r\n\r\n";
        let ip = |h| match parse(req, h, None) {
            Parsed::Complete(r, _) => r.client_ip,
            _ => panic!("not complete"),
        };
        assert_eq!(
            ip(Some("x-forwarded-for")),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(ip(Some("X-Real-IP")), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(ip(None), None);
    }
}

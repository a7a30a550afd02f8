//! Which endpoint a request head asks for, decided without I/O: the relay's routing rules in
//! one place, covered by a table test. `server::handle` reads the head, asks here, and does
//! what the answer says (admission and the per-IP budget are its business, as they need the
//! connection).

use hybridge_proto::contact::{self, ContactId};
use hybridge_proto::tunnel::{TunnelError, TunnelPath};

use crate::http::Request;
use crate::metrics::Reject;

/// The answer of an operational endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Operational {
    /// A plain-text body with this status.
    Text(u16, &'static str),
    /// The Prometheus text.
    Metrics,
    /// 404 without a body (the metrics listener serves nothing else).
    NotFound,
}

/// What the relay is doing, as far as routing cares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct State {
    /// Not draining.
    pub running: bool,
    /// `None` without a cluster, else whether its link is up.
    pub cluster_ready: Option<bool>,
    /// The connection came in on the metrics listener.
    pub metrics_listener: bool,
    /// `/metrics` is served on the tunnel listener too.
    pub metrics_on_main: bool,
    /// `--origin` is set.
    pub origin_required: bool,
}

/// `/healthz`, `/readyz`, `/readyz/cluster` and `/metrics`; `None`: not one of them (and
/// not the metrics listener, which answers nothing else).
pub(crate) fn operational(req: &Request, s: State) -> Option<Operational> {
    if req.method_is_get {
        let answer = match (req.path.as_str(), s.cluster_ready) {
            ("/healthz", _) => Some(Operational::Text(200, "ok\n")),
            // A lost cluster link leaves local work ready: /readyz/cluster reports it.
            ("/readyz", _) if !s.running => Some(Operational::Text(503, "draining\n")),
            ("/readyz", None) => Some(Operational::Text(200, "ready\n")),
            ("/readyz", Some(true)) => Some(Operational::Text(200, "ready\ncluster: up\n")),
            ("/readyz", Some(false)) => Some(Operational::Text(
                200,
                "ready\ncluster: down (cross-instance tunnels unavailable)\n",
            )),
            ("/readyz/cluster", None) => {
                Some(Operational::Text(404, "no cluster (--nats not set)\n"))
            }
            ("/readyz/cluster", Some(false)) => Some(Operational::Text(503, "cluster: down\n")),
            ("/readyz/cluster", Some(true)) if s.running => {
                Some(Operational::Text(200, "cluster: up\n"))
            }
            ("/readyz/cluster", Some(true)) => Some(Operational::Text(503, "draining\n")),
            ("/metrics", _) if s.metrics_listener || s.metrics_on_main => {
                Some(Operational::Metrics)
            }
            _ => None,
        };
        if answer.is_some() {
            return answer;
        }
    }
    s.metrics_listener.then_some(Operational::NotFound)
}

/// What a tunnel endpoint's request asks for, once checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/cable/new` or `/cable/connect` (never [`TunnelPath::Contact`]).
    Tunnel(TunnelPath),
    /// `/cable/contact/<contact ID>` with a valid client payload: wake the phone.
    Contact {
        /// `None`: not a hybridge contact ID (not 32 bytes), so no phone can be subscribed
        /// to it (410).
        contact_id: Option<ContactId>,
        /// The client payload's CBOR, checked strictly, as the phone will get it.
        client_payload: Vec<u8>,
        /// `X-caBLE-Signal-Connection: true`.
        signal: bool,
    },
    /// `/cable/subscribe`: a phone proves a wake key and waits for wake-ups.
    Subscribe {
        /// The host the phone connected to (`Host`, in the form the proof signs).
        host: String,
    },
}

/// A tunnel endpoint's request, once admitted: what it asks for and the client's WebSocket
/// key, or the refusal. Never log the path: it holds the tunnel ID or the contact ID.
pub(crate) fn tunnel(req: &Request, s: State) -> Result<(Endpoint, String), Reject> {
    if !req.method_is_get {
        return Err(Reject::MethodNotAllowed);
    }
    // With --origin, the tunnel endpoints serve only clients that name this relay's host.
    let subscribe = req.path == contact::SUBSCRIBE_PATH;
    let tunnel_endpoint = ["/cable/new/", "/cable/connect/", "/cable/contact/"]
        .iter()
        .any(|p| req.path.starts_with(p));
    if s.origin_required && (tunnel_endpoint || subscribe) && !req.origin_ok {
        return Err(Reject::Origin);
    }
    let path = if subscribe {
        None
    } else {
        match TunnelPath::parse(&req.path) {
            Ok(p) => Some(p),
            Err(TunnelError::UnknownPath) => return Err(Reject::NotFound),
            Err(_) => return Err(Reject::BadRequest),
        }
    };
    // /cable/subscribe speaks hybridge.wake; the caBLE endpoints fido.cable.
    let protocol = if subscribe {
        req.wake_proto
    } else {
        req.fido_cable
    };
    let key = match (&req.key, req.upgrade && req.version_13 && protocol) {
        (Some(k), true) => k.clone(),
        // Any 400 to a request without version 13 names the version to use.
        _ if !req.version_13 => return Err(Reject::BadVersion),
        _ => return Err(Reject::BadRequest),
    };
    let endpoint = match path {
        None => {
            let host = req
                .host
                .as_deref()
                .and_then(|h| contact::signing_host(h).ok())
                .ok_or(Reject::BadRequest)?;
            Endpoint::Subscribe { host }
        }
        Some(TunnelPath::Contact { contact_id }) => {
            let client_payload = req
                .client_payload
                .as_deref()
                .and_then(|v| contact::client_payload_from_header(v).ok())
                .ok_or(Reject::BadRequest)?;
            Endpoint::Contact {
                contact_id: ContactId::from_slice(&contact_id).ok(),
                client_payload,
                signal: req.signal,
            }
        }
        Some(p) => Endpoint::Tunnel(p),
    };
    if !s.running {
        return Err(Reject::Capacity);
    }
    Ok((endpoint, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "/cable/new/000102030405060708090a0b0c0d0e0f";
    const CONNECT: &str = "/cable/connect/010203/000102030405060708090a0b0c0d0e0f";

    fn upgrade(path: &str) -> Request {
        Request {
            method_is_get: true,
            path: path.into(),
            upgrade: true,
            version_13: true,
            key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            fido_cable: true,
            client_ip: None,
            origin_ok: true,
            ..Request::default()
        }
    }

    /// Chrome's client payload shape: link ID 01×8, nonce 02×16, "ga".
    const PAYLOAD: &str = "A301480101010101010101025002020202020202020202020202020202036267 61";

    fn payload() -> Vec<u8> {
        hex::decode(PAYLOAD.replace(' ', "")).unwrap()
    }

    fn contact(id_len: usize) -> Request {
        let id = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            vec![7u8; id_len],
        );
        Request {
            client_payload: Some(PAYLOAD.replace(' ', "").into_bytes()),
            ..upgrade(&format!("/cable/contact/{id}"))
        }
    }

    fn subscribe() -> Request {
        Request {
            fido_cable: false,
            wake_proto: true,
            host: Some("Relay.Example:8443".into()),
            ..upgrade("/cable/subscribe")
        }
    }

    const RUNNING: State = State {
        running: true,
        cluster_ready: None,
        metrics_listener: false,
        metrics_on_main: false,
        origin_required: false,
    };

    #[test]
    fn tunnel_requests_route_by_path_headers_and_state() {
        let ok = |r: Result<(Endpoint, String), Reject>| r.map(|(p, _)| p);
        let path = |p: &str| Ok(Endpoint::Tunnel(TunnelPath::parse(p).unwrap()));
        let woken = |id: Option<ContactId>, signal| {
            Ok(Endpoint::Contact {
                contact_id: id,
                client_payload: payload(),
                signal,
            })
        };
        let draining = State {
            running: false,
            ..RUNNING
        };
        let strict = State {
            origin_required: true,
            ..RUNNING
        };
        let table: Vec<(&str, Request, State, Result<Endpoint, Reject>)> = vec![
            ("new", upgrade(NEW), RUNNING, path(NEW)),
            ("connect", upgrade(CONNECT), RUNNING, path(CONNECT)),
            (
                "POST",
                Request {
                    method_is_get: false,
                    ..upgrade(NEW)
                },
                RUNNING,
                Err(Reject::MethodNotAllowed),
            ),
            (
                "unknown path",
                upgrade("/cable/old/00"),
                RUNNING,
                Err(Reject::NotFound),
            ),
            (
                "contact",
                contact(32),
                RUNNING,
                woken(Some(ContactId([7; 32])), false),
            ),
            (
                "contact with the connect signal",
                Request {
                    signal: true,
                    ..contact(32)
                },
                RUNNING,
                woken(Some(ContactId([7; 32])), true),
            ),
            (
                "contact ID no phone can have",
                contact(100),
                RUNNING,
                woken(None, false),
            ),
            (
                "contact without a client payload",
                Request {
                    client_payload: None,
                    ..contact(32)
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "contact with a malformed client payload",
                Request {
                    client_payload: Some(b"A0".to_vec()),
                    ..contact(32)
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "contact without fido.cable",
                Request {
                    fido_cable: false,
                    ..contact(32)
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "contact ID with padding",
                Request {
                    path: "/cable/contact/AAAA=".into(),
                    ..contact(32)
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "subscribe",
                subscribe(),
                RUNNING,
                Ok(Endpoint::Subscribe {
                    host: "relay.example".into(),
                }),
            ),
            (
                "subscribe with fido.cable only",
                Request {
                    fido_cable: true,
                    wake_proto: false,
                    ..subscribe()
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "subscribe without a host",
                Request {
                    host: None,
                    ..subscribe()
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "subscribe while draining",
                subscribe(),
                draining,
                Err(Reject::Capacity),
            ),
            (
                "subscribe without the origin",
                Request {
                    origin_ok: false,
                    ..subscribe()
                },
                strict,
                Err(Reject::Origin),
            ),
            (
                "subscribe path with a suffix",
                Request {
                    path: "/cable/subscribe/x".into(),
                    ..subscribe()
                },
                RUNNING,
                Err(Reject::NotFound),
            ),
            (
                "short tunnel ID",
                upgrade("/cable/new/0001"),
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "no subprotocol",
                Request {
                    fido_cable: false,
                    ..upgrade(NEW)
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "no key",
                Request {
                    key: None,
                    ..upgrade(NEW)
                },
                RUNNING,
                Err(Reject::BadRequest),
            ),
            (
                "version 8",
                Request {
                    version_13: false,
                    ..upgrade(NEW)
                },
                RUNNING,
                Err(Reject::BadVersion),
            ),
            ("draining", upgrade(NEW), draining, Err(Reject::Capacity)),
            ("origin matches", upgrade(NEW), strict, path(NEW)),
            (
                "origin missing",
                Request {
                    origin_ok: false,
                    ..upgrade(CONNECT)
                },
                strict,
                Err(Reject::Origin),
            ),
            (
                "origin checked before the path",
                Request {
                    origin_ok: false,
                    ..upgrade("/cable/contact/AAAA")
                },
                strict,
                Err(Reject::Origin),
            ),
            (
                "origin not required elsewhere",
                Request {
                    origin_ok: false,
                    ..upgrade("/favicon.ico")
                },
                strict,
                Err(Reject::NotFound),
            ),
        ];
        for (what, req, state, expected) in table {
            assert_eq!(ok(tunnel(&req, state)), expected, "{what}");
        }
    }

    #[test]
    fn operational_endpoints_answer_by_state() {
        let get = |path: &str| Request {
            method_is_get: true,
            path: path.into(),
            ..Request::default()
        };
        let with = |cluster_ready, running| State {
            cluster_ready,
            running,
            ..RUNNING
        };
        let text = |code, body| Some(Operational::Text(code, body));
        let table = [
            ("/healthz", with(None, false), text(200, "ok\n")),
            ("/readyz", with(None, true), text(200, "ready\n")),
            ("/readyz", with(None, false), text(503, "draining\n")),
            (
                "/readyz",
                with(Some(true), true),
                text(200, "ready\ncluster: up\n"),
            ),
            (
                "/readyz",
                with(Some(false), true),
                text(
                    200,
                    "ready\ncluster: down (cross-instance tunnels unavailable)\n",
                ),
            ),
            (
                "/readyz/cluster",
                with(None, true),
                text(404, "no cluster (--nats not set)\n"),
            ),
            (
                "/readyz/cluster",
                with(Some(true), true),
                text(200, "cluster: up\n"),
            ),
            (
                "/readyz/cluster",
                with(Some(true), false),
                text(503, "draining\n"),
            ),
            (
                "/readyz/cluster",
                with(Some(false), true),
                text(503, "cluster: down\n"),
            ),
            ("/metrics", with(None, true), None),
            (NEW, with(None, true), None),
        ];
        for (path, state, expected) in table {
            assert_eq!(operational(&get(path), state), expected, "{path}");
        }
        let metrics = State {
            metrics_listener: true,
            ..RUNNING
        };
        assert_eq!(
            operational(&get("/metrics"), metrics),
            Some(Operational::Metrics)
        );
        assert_eq!(operational(&get(NEW), metrics), Some(Operational::NotFound));
        let on_main = State {
            metrics_on_main: true,
            ..RUNNING
        };
        assert_eq!(
            operational(&get("/metrics"), on_main),
            Some(Operational::Metrics)
        );
        // Only GET is answered.
        let head = Request {
            method_is_get: false,
            ..get("/healthz")
        };
        assert_eq!(operational(&head, RUNNING), None);
    }
}

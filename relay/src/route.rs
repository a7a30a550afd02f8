//! Which endpoint a request head asks for, decided without I/O: the relay's routing rules in
//! one place, covered by a table test. `server::handle` reads the head, asks here, and does
//! what the answer says (admission and the per-IP budget are its business, as they need the
//! connection).

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

/// A tunnel endpoint's request, once admitted: the path and the client's WebSocket key, or
/// the refusal. Never log the path: it holds the tunnel ID.
pub(crate) fn tunnel(req: &Request, s: State) -> Result<(TunnelPath, String), Reject> {
    if !req.method_is_get {
        return Err(Reject::MethodNotAllowed);
    }
    // With --origin, the tunnel endpoints serve only clients that name this relay's host.
    let tunnel_endpoint = ["/cable/new/", "/cable/connect/", "/cable/contact/"]
        .iter()
        .any(|p| req.path.starts_with(p));
    if s.origin_required && tunnel_endpoint && !req.origin_ok {
        return Err(Reject::Origin);
    }
    // Linked phones (/cable/contact) are not served yet.
    if req.path.starts_with("/cable/contact/") {
        return Err(Reject::NotFound);
    }
    let path = match TunnelPath::parse(&req.path) {
        Ok(p) => p,
        Err(TunnelError::UnknownPath) => return Err(Reject::NotFound),
        Err(_) => return Err(Reject::BadRequest),
    };
    let key = match (&req.key, req.upgrade && req.version_13 && req.fido_cable) {
        (Some(k), true) => k.clone(),
        // Any 400 to a request without version 13 names the version to use.
        _ if !req.version_13 => return Err(Reject::BadVersion),
        _ => return Err(Reject::BadRequest),
    };
    if !s.running {
        return Err(Reject::Capacity);
    }
    Ok((path, key))
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
        let ok = |r: Result<(TunnelPath, String), Reject>| r.map(|(p, _)| p);
        let path = |p: &str| Ok(TunnelPath::parse(p).unwrap());
        let draining = State {
            running: false,
            ..RUNNING
        };
        let strict = State {
            origin_required: true,
            ..RUNNING
        };
        let table: Vec<(&str, Request, State, Result<TunnelPath, Reject>)> = vec![
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
                upgrade("/cable/contact/AAAA"),
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

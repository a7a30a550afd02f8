//! Prometheus metrics, kept as plain atomics and rendered in the text exposition format.
//! Counters on the hot path are updated once per read batch, not per byte.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a connection was refused or dropped before it became (part of) a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    BadRequest,
    /// `Sec-WebSocket-Version` missing or not 13 (400 naming 13, RFC 6455 §4.2.2).
    BadVersion,
    NotFound,
    MethodNotAllowed,
    Conflict,
    /// `--origin` is set and the request's `Origin` does not name it (403).
    Origin,
    /// The address's failure budget is spent (429).
    RateLimited,
    /// The address holds `--max-unpaired-per-ip` connections that are not paired (429).
    Unpaired,
    Capacity,
    HeaderTimeout,
    TlsHandshake,
    /// A `/connect` for another instance while the cluster link is down (503).
    ClusterUnavailable,
    /// `/cable/contact` for a contact ID no phone is subscribed to (410).
    Gone,
    /// `/cable/contact` for a phone whose queue of wake-ups is full (503).
    WakeBusy,
    /// `/cable/subscribe` from an address that holds `--max-subscriptions-per-ip` (429).
    SubscriptionsPerIp,
}

impl From<crate::ratelimit::Refusal> for Reject {
    fn from(r: crate::ratelimit::Refusal) -> Self {
        match r {
            crate::ratelimit::Refusal::Budget => Reject::RateLimited,
            crate::ratelimit::Refusal::Unpaired => Reject::Unpaired,
        }
    }
}

impl Reject {
    const ALL: [Reject; 15] = [
        Reject::BadRequest,
        Reject::BadVersion,
        Reject::NotFound,
        Reject::MethodNotAllowed,
        Reject::Conflict,
        Reject::Origin,
        Reject::RateLimited,
        Reject::Unpaired,
        Reject::Capacity,
        Reject::HeaderTimeout,
        Reject::TlsHandshake,
        Reject::ClusterUnavailable,
        Reject::Gone,
        Reject::WakeBusy,
        Reject::SubscriptionsPerIp,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reject::BadRequest => "bad_request",
            Reject::BadVersion => "bad_websocket_version",
            Reject::NotFound => "not_found",
            Reject::MethodNotAllowed => "method_not_allowed",
            Reject::Conflict => "conflict",
            Reject::Origin => "origin",
            Reject::RateLimited => "rate_limited",
            Reject::Unpaired => "unpaired_per_ip",
            Reject::Capacity => "capacity",
            Reject::HeaderTimeout => "header_timeout",
            Reject::TlsHandshake => "tls_handshake",
            Reject::ClusterUnavailable => "cluster_unavailable",
            Reject::Gone => "gone",
            Reject::WakeBusy => "wake_busy",
            Reject::SubscriptionsPerIp => "subscriptions_per_ip",
        }
    }
    pub(crate) fn status(self) -> u16 {
        match self {
            Reject::BadRequest | Reject::BadVersion => 400,
            Reject::NotFound => 404,
            Reject::MethodNotAllowed => 405,
            Reject::Conflict => 409,
            Reject::Origin => 403,
            Reject::Gone => 410,
            Reject::RateLimited | Reject::Unpaired | Reject::SubscriptionsPerIp => 429,
            Reject::Capacity | Reject::ClusterUnavailable | Reject::WakeBusy => 503,
            Reject::HeaderTimeout | Reject::TlsHandshake => 408,
        }
    }
    /// Whether the refusal is charged to the client's address: what a client gets for its
    /// own mistakes or probing, not a refusal for the relay's state or for the limit itself.
    pub(crate) fn charged(self) -> bool {
        !matches!(
            self,
            Reject::RateLimited
                | Reject::Unpaired
                | Reject::Capacity
                | Reject::ClusterUnavailable
                | Reject::WakeBusy
                | Reject::SubscriptionsPerIp
        )
    }
    /// Header lines the response carries besides the usual ones.
    pub(crate) fn headers(self) -> &'static str {
        match self {
            Reject::BadVersion => crate::http::VERSION_HEADER,
            _ => "",
        }
    }
}

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    PeerClosed,
    PeerGone,
    Violation,
    PairingTimeout,
    FirstMessageTimeout,
    Ttl,
    Shutdown,
}

impl CloseReason {
    const ALL: [CloseReason; 7] = [
        CloseReason::PeerClosed,
        CloseReason::PeerGone,
        CloseReason::Violation,
        CloseReason::PairingTimeout,
        CloseReason::FirstMessageTimeout,
        CloseReason::Ttl,
        CloseReason::Shutdown,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerGone => "peer_gone",
            CloseReason::Violation => "violation",
            CloseReason::PairingTimeout => "pairing_timeout",
            CloseReason::FirstMessageTimeout => "first_message_timeout",
            CloseReason::Ttl => "ttl",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// How a wake-up subscription ended, or why it never started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SubscriptionEnd {
    /// The proof did not parse or verify.
    BadProof,
    /// No proof within the header timeout.
    ProofTimeout,
    /// The relay is full (`--max-subscriptions`), found after the proof.
    Capacity,
    /// A newer proven subscription for the same contact ID took over.
    Replaced,
    /// No sign of life (pong or anything) within two ping intervals.
    Dead,
    /// The phone closed or hung up.
    PhoneLeft,
    /// The phone broke the protocol after subscribing.
    Violation,
    /// The relay shut down.
    Shutdown,
}

impl SubscriptionEnd {
    const ALL: [SubscriptionEnd; 8] = [
        SubscriptionEnd::BadProof,
        SubscriptionEnd::ProofTimeout,
        SubscriptionEnd::Capacity,
        SubscriptionEnd::Replaced,
        SubscriptionEnd::Dead,
        SubscriptionEnd::PhoneLeft,
        SubscriptionEnd::Violation,
        SubscriptionEnd::Shutdown,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            SubscriptionEnd::BadProof => "bad_proof",
            SubscriptionEnd::ProofTimeout => "proof_timeout",
            SubscriptionEnd::Capacity => "capacity",
            SubscriptionEnd::Replaced => "replaced",
            SubscriptionEnd::Dead => "dead",
            SubscriptionEnd::PhoneLeft => "phone_left",
            SubscriptionEnd::Violation => "violation",
            SubscriptionEnd::Shutdown => "shutdown",
        }
    }
}

/// What became of a `/cable/contact` request's wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeResult {
    /// Queued for a phone subscribed here.
    Local,
    /// Delivered to another instance, which queued it for its phone.
    Remote,
    /// No phone subscribed (410).
    Gone,
    /// The phone's queue was full (503).
    Busy,
    /// The cluster could not be asked (503).
    Unavailable,
}

impl WakeResult {
    const ALL: [WakeResult; 5] = [
        WakeResult::Local,
        WakeResult::Remote,
        WakeResult::Gone,
        WakeResult::Busy,
        WakeResult::Unavailable,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            WakeResult::Local => "local",
            WakeResult::Remote => "remote",
            WakeResult::Gone => "gone",
            WakeResult::Busy => "busy",
            WakeResult::Unavailable => "unavailable",
        }
    }
}

/// Upper bounds (seconds) of the `/new`→`/connect` wait histogram.
const WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
pub(crate) struct Metrics {
    pub connections: AtomicU64,
    pub waiting: AtomicI64,
    pub active: AtomicI64,
    pub pairings: AtomicU64,
    pub bytes: AtomicU64,
    pub messages: AtomicU64,
    rejections: [AtomicU64; Reject::ALL.len()],
    closes: [AtomicU64; CloseReason::ALL.len()],
    wait_buckets: [AtomicU64; 13],
    wait_sum_us: AtomicU64,
    pub tls_reloads: AtomicU64,
    pub tls_reload_errors: AtomicU64,
    /// Proven wake-up subscriptions open now.
    pub subscriptions: AtomicI64,
    /// Wake-up subscriptions proven.
    pub subscriptions_proven: AtomicU64,
    subscription_ends: [AtomicU64; SubscriptionEnd::ALL.len()],
    wakes: [AtomicU64; WakeResult::ALL.len()],
}

impl Metrics {
    pub(crate) fn reject(&self, r: Reject) {
        self.rejections[r as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self, r: CloseReason) {
        self.closes[r as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn subscription_ended(&self, e: SubscriptionEnd) {
        self.subscription_ends[e as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn wake(&self, w: WakeResult) {
        self.wakes[w as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn rejections(&self, r: Reject) -> u64 {
        self.rejections[r as usize].load(Relaxed)
    }

    pub(crate) fn paired_after(&self, wait: Duration) {
        self.pairings.fetch_add(1, Relaxed);
        let s = wait.as_secs_f64();
        let i = WAIT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_buckets[i].fetch_add(1, Relaxed);
        self.wait_sum_us.fetch_add(wait.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self, open_connections: usize) -> String {
        let mut s = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        one(
            "hybridge_relay_tunnels_active",
            "gauge",
            "Paired tunnels.",
            self.active.load(Relaxed).to_string(),
        );
        one(
            "hybridge_relay_phones_waiting",
            "gauge",
            "Phones on /cable/new waiting for the laptop.",
            self.waiting.load(Relaxed).to_string(),
        );
        one(
            "hybridge_relay_connections_open",
            "gauge",
            "Open client connections: tunnel sockets and requests in progress.",
            open_connections.to_string(),
        );
        one(
            "hybridge_relay_connections_total",
            "counter",
            "Accepted TCP connections.",
            self.connections.load(Relaxed).to_string(),
        );
        one(
            "hybridge_relay_pairings_total",
            "counter",
            "Tunnels paired.",
            self.pairings.load(Relaxed).to_string(),
        );
        one(
            "hybridge_relay_relayed_bytes_total",
            "counter",
            "Message payload bytes relayed.",
            self.bytes.load(Relaxed).to_string(),
        );
        one(
            "hybridge_relay_relayed_messages_total",
            "counter",
            "Messages relayed.",
            self.messages.load(Relaxed).to_string(),
        );
        one(
            "hybridge_relay_tls_reloads_total",
            "counter",
            "Successful TLS certificate reloads.",
            self.tls_reloads.load(Relaxed).to_string(),
        );
        one(
            "hybridge_relay_tls_reload_errors_total",
            "counter",
            "Failed TLS certificate reloads.",
            self.tls_reload_errors.load(Relaxed).to_string(),
        );
        let _ = writeln!(
            s,
            "# HELP hybridge_relay_rejections_total Requests refused before the upgrade, by reason.\n# TYPE hybridge_relay_rejections_total counter"
        );
        for r in Reject::ALL {
            let _ = writeln!(
                s,
                "hybridge_relay_rejections_total{{reason=\"{}\"}} {}",
                r.label(),
                self.rejections(r)
            );
        }
        let _ = writeln!(
            s,
            "# HELP hybridge_relay_tunnel_closes_total Tunnels ended, by reason.\n# TYPE hybridge_relay_tunnel_closes_total counter"
        );
        for r in CloseReason::ALL {
            let _ = writeln!(
                s,
                "hybridge_relay_tunnel_closes_total{{reason=\"{}\"}} {}",
                r.label(),
                self.closes[r as usize].load(Relaxed)
            );
        }
        for (name, kind, help, v) in [
            (
                "hybridge_relay_subscriptions",
                "gauge",
                "Phones subscribed for wake-ups (/cable/subscribe, proven).",
                self.subscriptions.load(Relaxed) as u64,
            ),
            (
                "hybridge_relay_subscriptions_total",
                "counter",
                "Wake-up subscriptions proven.",
                self.subscriptions_proven.load(Relaxed),
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP hybridge_relay_subscription_ends_total Wake-up subscriptions ended or refused after the upgrade, by reason.\n# TYPE hybridge_relay_subscription_ends_total counter"
        );
        for e in SubscriptionEnd::ALL {
            let _ = writeln!(
                s,
                "hybridge_relay_subscription_ends_total{{reason=\"{}\"}} {}",
                e.label(),
                self.subscription_ends[e as usize].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP hybridge_relay_wakes_total /cable/contact wake-ups, by result (gone: 410).\n# TYPE hybridge_relay_wakes_total counter"
        );
        for w in WakeResult::ALL {
            let _ = writeln!(
                s,
                "hybridge_relay_wakes_total{{result=\"{}\"}} {}",
                w.label(),
                self.wakes[w as usize].load(Relaxed)
            );
        }
        let name = "hybridge_relay_pairing_wait_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Time from /cable/new to /cable/connect.\n# TYPE {name} histogram"
        );
        let mut cum = 0;
        for (i, b) in WAIT_BUCKETS.iter().enumerate() {
            cum += self.wait_buckets[i].load(Relaxed);
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.wait_buckets[WAIT_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            s,
            "{name}_sum {}",
            self.wait_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count {cum}");
        s
    }
}

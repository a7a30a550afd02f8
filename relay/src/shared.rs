//! What every task of one relay shares: its settings, registry, metrics and counters, where
//! it is in its life ([`Phase`]), and the guards that count a task or a pairing against the counters.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use hybridge_proto::tunnel::RoutingId;
use tokio::sync::watch;

use crate::busy::BusyPoll;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::tls::TlsState;
use crate::wake::Subscriptions;

/// Where the relay is in its life. Tunnels watch this to close on shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting connections.
    Running,
    /// Not accepting; waiting phones are closed (no laptop can reach them any more) and
    /// paired tunnels run on until the drain deadline.
    Draining,
    /// Closing every tunnel with 1001.
    Closing,
    /// Everything is closed; auxiliary tasks exit.
    Stopped,
}

/// Moves the relay's life forward to `to`; never back (a shutdown may be asked twice).
pub(crate) fn advance(phase: &watch::Sender<Phase>, to: Phase) {
    phase.send_if_modified(|p| {
        let later = *p < to;
        if later {
            *p = to;
        }
        later
    });
}

/// State shared by every task of one relay.
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    pub(crate) routing_id: RoutingId,
    pub(crate) routing_hex: String,
    pub(crate) registry: Registry,
    /// Phones subscribed for wake-ups (`/cable/subscribe`).
    pub(crate) subs: Subscriptions,
    pub(crate) metrics: Metrics,
    pub(crate) rate: Arc<RateLimiter>,
    pub(crate) tls: Option<TlsState>,
    pub(crate) phase: watch::Sender<Phase>,
    /// Tunnels counted against `max_tunnels` (waiting and paired).
    pub(crate) tunnels: AtomicUsize,
    /// Live connection tasks.
    pub(crate) conns: AtomicUsize,
    pub(crate) client_ip_header: Option<String>,
    pub(crate) origin: Option<String>,
    pub(crate) metrics_on_main: bool,
    pub(crate) busy: Option<BusyPoll>,
}

impl Shared {
    /// This instance's cluster membership, in cluster mode.
    pub(crate) fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.registry.cluster.get()
    }

    /// Notes I/O activity for the busy-poll loop (a no-op when it is off).
    #[inline]
    pub(crate) fn touch(&self) {
        if let Some(b) = &self.busy {
            b.touch();
        }
    }

    /// The Prometheus text exposition, as served on `/metrics`.
    pub(crate) fn render_metrics(&self) -> String {
        let mut body = self.metrics.render(self.conns.load(Relaxed));
        if let Some(c) = self.cluster() {
            c.render_metrics(&mut body);
        }
        body
    }
}

/// Counts a live connection task (waited for on shutdown); released on drop.
pub(crate) struct ConnGuard(Arc<Shared>);

impl ConnGuard {
    /// Counts one more connection task.
    pub(crate) fn new(shared: Arc<Shared>) -> ConnGuard {
        shared.conns.fetch_add(1, Relaxed);
        ConnGuard(shared)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.conns.fetch_sub(1, Relaxed);
    }
}

/// A pairing's place (its phone waiting, or paired) among `Limits::max_tunnels`; released
/// on drop.
pub(crate) struct PairingSlot(pub(crate) Arc<Shared>);

impl PairingSlot {
    /// A place among `max_tunnels`, if one is free.
    pub(crate) fn take(shared: &Arc<Shared>) -> Option<PairingSlot> {
        if shared.tunnels.fetch_add(1, Relaxed) >= shared.limits.max_tunnels {
            shared.tunnels.fetch_sub(1, Relaxed);
            return None;
        }
        Some(PairingSlot(shared.clone()))
    }
}

impl Drop for PairingSlot {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Relaxed);
    }
}

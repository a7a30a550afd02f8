//! Cluster mode (`--nats URL`): several relays behind one hostname.
//!
//! - **Claims.** A phone's tunnel ID is claimed cluster-wide in a JetStream key-value bucket
//!   with create-if-absent, so a duplicate `/cable/new` gets 409 on every instance. The
//!   claim is deleted when the phone stops waiting; the bucket's `max_age` reaps claims of
//!   an instance that died.
//! - **Bridges.** The routing ID names the instance holding the phone. A `/cable/connect`
//!   that lands on another instance is bridged: the receiving instance asks the owner on
//!   `<prefix>.<routing id>.connect`, and if the phone is waiting there the laptop's raw
//!   connection bytes flow over NATS ([`stream`]), so the owner's pairing task serves the
//!   laptop as if it were local. When both sides are on one instance, nothing touches NATS.
//! - **Wake-ups.** A phone subscribed here for wake-ups (`/cable/subscribe`) is also
//!   listened for on `<prefix>.wake.<hash of its contact ID>` (never the ID itself). A
//!   `/cable/contact` for a contact ID no phone here holds asks that subject (request/reply,
//!   short timeout): the holder queues the wake-up, no responder means 410. The woken
//!   phone's `/cable/connect` names the laptop's instance and is bridged as above. A new
//!   subscription announces itself on the same subject, and an older one elsewhere closes.
//! - **Failure.** Losing NATS (or a peer instance, seen by missing heartbeats) fails only
//!   bridged tunnels: the laptop's side is closed with 1011 "relay cluster link lost", the
//!   phone's side sees its peer go. Meanwhile claims fall back to this instance alone,
//!   [`Cluster::ready`] is false (`/readyz/cluster`, `hybridge_relay_cluster_ready`), and
//!   the client reconnects by itself.
//!
//! Without `--nats` none of this exists and the relay has no external dependency.

#[cfg(feature = "cluster")]
mod nats;
#[cfg(feature = "cluster")]
pub(crate) mod stream;
mod url;

#[cfg(not(feature = "cluster"))]
mod disabled;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hybridge_proto::contact::{ContactId, Wake};
use hybridge_proto::tunnel::TunnelId;

#[cfg(not(feature = "cluster"))]
pub(crate) use disabled::{Cluster, RemoteStream, is_link_lost};
#[cfg(feature = "cluster")]
pub(crate) use nats::Cluster;
#[cfg(feature = "cluster")]
pub(crate) use stream::{RemoteStream, is_link_lost};
pub(crate) use url::redact_url;

/// The reason a bridged stream failed, as seen by its reader (and the close reason its
/// laptop gets).
pub(crate) const LINK_LOST: &str = "relay cluster link lost";

/// WebSocket close code for a tunnel that lost its cross-instance link (1011: the server
/// hit a condition that prevented it from fulfilling the request).
pub(crate) const CLOSE_LINK_LOST: u16 = crate::ws::close::INTERNAL;
/// A peer instance that sent no heartbeat for this long is considered gone.
pub(crate) const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for [`Cluster::start`].
#[derive(Clone)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`. A user
    /// and password (`nats://user:pass@host`) or a token (`nats://token@host`) in the URL are
    /// used to log in; they never appear in logs or errors.
    pub nats_url: String,
    /// Subject prefix and key-value bucket name, so several relay clusters can share a NATS.
    pub prefix: String,
    /// Claims older than this are reaped (the longest a phone can wait, plus a margin).
    pub claim_ttl: Duration,
    /// PEM file of the CA(s) that signed the NATS server's certificate; setting it requires
    /// TLS to NATS.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate and key this relay presents to NATS (mutual TLS), if NATS asks.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// A peer instance silent this long is taken for dead and its bridged tunnels close
    /// with 1011. Heartbeats go out five times per timeout.
    pub peer_timeout: Duration,
}

impl ClusterConfig {
    /// Settings for joining the NATS at `nats_url`, with the defaults: prefix `hybridge`,
    /// no TLS files, a 5 s peer timeout. `claim_ttl` should be a little
    /// longer than a phone can wait (the pairing timeout, capped by the tunnel lifetime).
    pub fn new(nats_url: impl Into<String>, claim_ttl: Duration) -> Self {
        Self {
            nats_url: nats_url.into(),
            prefix: "hybridge".into(),
            claim_ttl,
            tls_ca: None,
            tls_client: None,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("nats_url", &redact_url(&self.nats_url))
            .field("prefix", &self.prefix)
            .field("claim_ttl", &self.claim_ttl)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .field("peer_timeout", &self.peer_timeout)
            .finish()
    }
}

/// A laptop connection bridged to this instance: hand it to the phone waiting on the
/// tunnel ID, as the laptop's connection.
pub(crate) struct Incoming {
    pub stream: RemoteStream,
    /// The laptop's `Sec-WebSocket-Key`.
    pub key: String,
    /// Bytes the laptop sent after its request head.
    pub early: Vec<u8>,
}

/// Called for each bridged `/connect`: `true` when a phone was waiting on the tunnel ID and
/// took the connection, `false` when none was. A refused [`Incoming`] is simply dropped:
/// nothing has moved on its bridge yet, so it ends without a word to the other instance,
/// which answers the laptop itself when it reads the refusal.
pub(crate) type Acceptor = Arc<dyn Fn(TunnelId, Incoming) -> bool + Send + Sync>;

/// `/cable/new` for a tunnel ID another phone holds somewhere in the cluster.
#[derive(Debug)]
pub(crate) struct Conflict;

/// How a waiting phone's tunnel ID is claimed. The registry keeps it with the phone, so the
/// claim is released when the phone stops waiting, and only if this instance holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Without the `cluster` feature only `Local` is ever made.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Claim {
    /// In the cluster's key-value bucket: every instance refuses the ID until it is released.
    /// `revision` is the key's revision when this instance created it: the release purges
    /// only that revision, so a claim the bucket already expired and another instance then
    /// made is never dropped by this one.
    Cluster { revision: u64 },
    /// On this instance only (no cluster, or its link was down): nothing to release.
    Local,
}

/// Why a bridged `/connect` was not served (the laptop hears the status given here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Without the `cluster` feature nothing is bridged, so nothing is refused.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Refused {
    /// No instance has a phone waiting on that tunnel ID (404).
    NotFound,
    /// The cluster link is down (503).
    Unavailable,
}

/// What became of a wake-up handed to a subscription registry (here or on another instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Queued for the phone.
    Queued,
    /// No phone subscribed under that contact ID.
    Gone,
    /// The phone's queue of wake-ups is full.
    Busy,
}

/// Why a wake-up could not be handed to another instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Without the `cluster` feature nothing is sent to another instance.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum WakeRefused {
    /// No instance holds a phone for the contact ID (410).
    Gone,
    /// The phone's queue is full (503).
    Busy,
    /// The cluster link is down or the holder did not answer in time (503).
    Unavailable,
}

/// A message for the phone subscribed here under a contact ID, from another instance.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum RemoteWake {
    /// A laptop on another instance asks for it.
    Wake(Wake),
    /// The phone subscribed again on another instance: close the one here.
    Taken,
}

/// Hands [`RemoteWake`]s to this instance's subscriptions.
pub(crate) type WakeHandler = Arc<dyn Fn(ContactId, RemoteWake) -> Delivery + Send + Sync>;

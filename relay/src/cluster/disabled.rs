//! A relay built without the `cluster` feature: the cluster types exist, so the rest of the
//! relay reads the same, but none can be made. `--nats` is refused at start with a message
//! saying how to get a relay that has it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hybridge_proto::tunnel::{RoutingId, TunnelId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hybridge_proto::contact::{ContactId, Wake};

use super::{Acceptor, Claim, ClusterConfig, Conflict, Refused, WakeHandler, WakeRefused};

/// A wake-up subject listened to: none can exist in this build.
pub(crate) enum ContactWatch {}

/// A relay's membership in a cluster: none can exist in this build.
pub(crate) enum Cluster {}

impl Cluster {
    /// Refuses: this relay was built without NATS.
    pub(crate) async fn start(
        _config: ClusterConfig,
        _routing_id: RoutingId,
        _acceptor: Acceptor,
        _waker: WakeHandler,
    ) -> Result<Arc<Cluster>, crate::Error> {
        Err(crate::Error::ClusterNotBuilt)
    }

    /// Never called: there is no cluster.
    pub(crate) fn ready(&self) -> bool {
        match *self {}
    }

    /// Never called: there is no cluster.
    pub(crate) fn stop(&self) {
        match *self {}
    }

    /// Never called: there is no cluster.
    pub(crate) async fn claim(&self, _id: &TunnelId) -> Result<Claim, Conflict> {
        match *self {}
    }

    /// Never called: there is no cluster.
    pub(crate) fn release(&self, _id: &TunnelId, _revision: u64) {
        match *self {}
    }

    /// Never called: there is no cluster.
    pub(crate) async fn bridge_laptop<S>(
        &self,
        _routing_id: RoutingId,
        _tunnel_id: TunnelId,
        _conn: S,
        _early: Vec<u8>,
        _key: String,
    ) -> Result<(), (Refused, S)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match *self {}
    }

    /// Never called: there is no cluster.
    pub(crate) async fn wake(&self, _id: &ContactId, _wake: &Wake) -> Result<(), WakeRefused> {
        match *self {}
    }

    /// Never called: there is no cluster.
    #[allow(clippy::unused_async)]
    pub(crate) async fn watch_contact(self: &Arc<Self>, _id: ContactId) -> ContactWatch {
        match **self {}
    }

    /// Never called: there is no cluster.
    pub(crate) async fn announce_taken(&self, _id: &ContactId) {
        match *self {}
    }

    /// Never called: there is no cluster.
    pub(crate) fn render_metrics(&self, _out: &mut String) {
        match *self {}
    }
}

/// A laptop's connection bridged from another instance: none can exist in this build.
pub(crate) enum RemoteStream {}

impl AsyncRead for RemoteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match *self {}
    }
}

impl AsyncWrite for RemoteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match *self {}
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }
}

/// No link, so none is ever lost.
pub(crate) fn is_link_lost(_e: &io::Error) -> bool {
    false
}

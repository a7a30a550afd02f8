//! The tunnel registry: which tunnel IDs have a phone waiting on `/cable/new`.
//!
//! This is the seam for cluster mode. Today a `/cable/connect` must land on the
//! instance whose routing ID it names, and [`Registry::claim`] finds the waiting phone in
//! memory. A cluster keeps this interface and adds a remote path: when the routing ID is
//! another node's, forward the laptop's stream there (e.g. over NATS) instead of 404.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hybridge_proto::tunnel::TunnelId;
use tokio::sync::oneshot;

use crate::cluster::Claim;
use crate::conn::Conn;

const SHARDS: usize = 16;

/// What `/cable/connect` hands to the waiting phone's task: the laptop's upgraded-to-be
/// connection (the phone's task writes the 101, so the laptop's first bytes queue behind
/// the phone's buffered messages in order).
pub(crate) struct Handoff {
    pub conn: Conn,
    /// Bytes the laptop sent after its request head (early frames).
    pub early: Vec<u8>,
    /// The laptop's `Sec-WebSocket-Key`.
    pub key: String,
}

struct Slot {
    generation: u64,
    tx: oneshot::Sender<Handoff>,
    /// Released in the cluster when the phone stops waiting, if it is [`Claim::Cluster`].
    claim: Claim,
}

/// A phone's place in the registry; withdraw it when the phone leaves.
pub(crate) struct Waiter {
    pub id: TunnelId,
    pub generation: u64,
    pub rx: oneshot::Receiver<Handoff>,
    pub since: Instant,
}

/// `/cable/new` for an ID that already has a phone waiting (HTTP 409).
#[derive(Debug)]
pub(crate) struct AlreadyWaiting;

#[derive(Default)]
pub(crate) struct Registry {
    shards: [Mutex<HashMap<TunnelId, Slot>>; SHARDS],
    next: AtomicU64,
    /// In cluster mode, told when a phone stops waiting so the claim is dropped.
    pub cluster: std::sync::OnceLock<std::sync::Arc<crate::cluster::Cluster>>,
}

impl Registry {
    fn shard(&self, id: &TunnelId) -> &Mutex<HashMap<TunnelId, Slot>> {
        &self.shards[id.0[15] as usize % SHARDS]
    }

    /// A phone starts waiting on `id`, which it claimed as `claim`. The registry owns the
    /// claim from here: it is released when the phone stops waiting, or at once if another
    /// phone already waits on `id` here.
    pub(crate) fn register(&self, id: TunnelId, claim: Claim) -> Result<Waiter, AlreadyWaiting> {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let map = self.shard(&id).lock().ok();
        let Some(mut map) = map.filter(|m| !m.contains_key(&id)) else {
            self.release(&id, claim);
            return Err(AlreadyWaiting);
        };
        map.insert(
            id,
            Slot {
                generation,
                tx,
                claim,
            },
        );
        Ok(Waiter {
            id,
            generation,
            rx,
            since: Instant::now(),
        })
    }

    /// A laptop claims the phone waiting on `id`; the entry is removed, so exactly one
    /// laptop pairs with a phone.
    pub(crate) fn claim(&self, id: &TunnelId) -> Option<oneshot::Sender<Handoff>> {
        let mut map = self.shard(id).lock().ok()?;
        let slot = map.remove(id)?;
        self.release(id, slot.claim);
        Some(slot.tx)
    }

    /// The phone stops waiting (timeout, disconnect, shutdown). A later phone that reused
    /// the ID is left alone.
    pub(crate) fn withdraw(&self, id: &TunnelId, generation: u64) {
        if let Ok(mut map) = self.shard(id).lock()
            && map.get(id).is_some_and(|s| s.generation == generation)
            && let Some(slot) = map.remove(id)
        {
            self.release(id, slot.claim);
        }
    }

    fn release(&self, id: &TunnelId, claim: Claim) {
        if let Claim::Cluster { revision } = claim
            && let Some(c) = self.cluster.get()
        {
            c.release(id, revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_phone_per_id_and_withdraw_spares_a_successor() {
        let r = Registry::default();
        let id = TunnelId([5; 16]);
        let first = r.register(id, Claim::Local).expect("free ID");
        assert!(r.register(id, Claim::Local).is_err(), "duplicate refused");
        assert!(r.claim(&id).is_some(), "a laptop takes the phone");
        assert!(r.claim(&id).is_none(), "only once");
        let second = r.register(id, Claim::Local).expect("free again");
        r.withdraw(&id, first.generation);
        assert!(r.claim(&id).is_some(), "the later phone is still waiting");
        r.withdraw(&id, second.generation);
        assert!(r.claim(&id).is_none());
    }
}

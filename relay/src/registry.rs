//! The tunnel registry: which tunnel IDs have a phone waiting on `/cable/new`.
//!
//! This is the seam for cluster mode (issue 6). Today a `/cable/connect` must land on the
//! instance whose routing ID it names, and [`Registry::claim`] finds the waiting phone in
//! memory. A cluster keeps this interface and adds a remote path: when the routing ID is
//! another node's, forward the laptop's stream there (e.g. over NATS) instead of 404.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hybridge_proto::tunnel::TunnelId;
use tokio::sync::oneshot;

use crate::conn::Conn;

const SHARDS: usize = 16;

/// What `/cable/connect` hands to the waiting phone's task: the laptop's upgraded-to-be
/// connection (the phone's task writes the 101, so the laptop's first bytes queue behind
/// the phone's buffered messages in order).
pub struct Handoff {
    pub conn: Conn,
    /// Bytes the laptop sent after its request head (early frames).
    pub early: Vec<u8>,
    /// The laptop's `Sec-WebSocket-Key`.
    pub key: String,
}

struct Slot {
    generation: u64,
    tx: oneshot::Sender<Handoff>,
}

/// A phone's place in the registry; withdraw it when the phone leaves.
pub struct Waiter {
    pub id: TunnelId,
    pub generation: u64,
    pub rx: oneshot::Receiver<Handoff>,
    pub since: Instant,
}

/// `/cable/new` for an ID that already has a phone waiting (HTTP 409).
#[derive(Debug)]
pub struct AlreadyWaiting;

#[derive(Default)]
pub struct Registry {
    shards: [Mutex<HashMap<TunnelId, Slot>>; SHARDS],
    next: AtomicU64,
    /// In cluster mode, told when a phone stops waiting so the claim is dropped.
    pub cluster: std::sync::OnceLock<std::sync::Arc<crate::cluster::Cluster>>,
}

impl Registry {
    fn shard(&self, id: &TunnelId) -> &Mutex<HashMap<TunnelId, Slot>> {
        &self.shards[id.0[15] as usize % SHARDS]
    }

    /// A phone starts waiting on `id`.
    pub fn register(&self, id: TunnelId) -> Result<Waiter, AlreadyWaiting> {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut map = self.shard(&id).lock().map_err(|_| AlreadyWaiting)?;
        if map.contains_key(&id) {
            return Err(AlreadyWaiting);
        }
        map.insert(id, Slot { generation, tx });
        Ok(Waiter {
            id,
            generation,
            rx,
            since: Instant::now(),
        })
    }

    /// A laptop claims the phone waiting on `id`; the entry is removed, so exactly one
    /// laptop pairs with a phone.
    pub fn claim(&self, id: &TunnelId) -> Option<oneshot::Sender<Handoff>> {
        let mut map = self.shard(id).lock().ok()?;
        let tx = map.remove(id).map(|s| s.tx);
        if tx.is_some()
            && let Some(c) = self.cluster.get()
        {
            c.release(id);
        }
        tx
    }

    /// The phone stops waiting (timeout, disconnect, shutdown). A later phone that reused
    /// the ID is left alone.
    pub fn withdraw(&self, id: &TunnelId, generation: u64) {
        if let Ok(mut map) = self.shard(id).lock()
            && map.get(id).is_some_and(|s| s.generation == generation)
        {
            map.remove(id);
            if let Some(c) = self.cluster.get() {
                c.release(id);
            }
        }
    }
}

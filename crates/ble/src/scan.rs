//! A running scan: the receiving end every scanner backend hands out.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{Advertisement, Error};

/// How many received advertisements a [`Scan`] buffers before it starts dropping new ones.
///
/// Adverts repeat every ~100 ms, so dropping some while the consumer is busy loses nothing.
pub const DEFAULT_SCAN_CAPACITY: usize = 64;

/// How long [`Scan::stop`] and [`crate::AdvertisingHandle::stop`] wait for a backend to clean
/// up (e.g. BlueZ `StopDiscovery`) before giving up on it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Counters of a running scan, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Advertisements the radio received (any UUID).
    pub received: u64,
    /// Advertisements put in the queue for the consumer.
    pub delivered: u64,
    /// Advertisements under a UUID the scan does not want.
    pub filtered: u64,
    /// Advertisements dropped because the consumer's queue was full.
    pub dropped: u64,
    /// Datagrams or events that could not be understood (UDP radio: not `ADV xxxx hex`).
    pub malformed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    delivered: AtomicU64,
    filtered: AtomicU64,
    dropped: AtomicU64,
    malformed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ScanStats {
        ScanStats {
            received: self.received.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }
}

/// The backend's side of a scan: filters by UUID, counts, and queues without ever blocking.
#[derive(Debug)]
pub(crate) struct ScanSink {
    tx: mpsc::Sender<Advertisement>,
    uuids: Vec<u16>,
    counters: Arc<Counters>,
}

/// What happened to one advertisement handed to [`ScanSink::deliver`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    Queued,
    Filtered,
    Dropped,
    /// The [`Scan`] was dropped: the backend should stop.
    Closed,
}

impl ScanSink {
    /// Whether the scan wants advertisements under `uuid16` (an empty filter wants all).
    pub(crate) fn wants(&self, uuid16: u16) -> bool {
        self.uuids.is_empty() || self.uuids.contains(&uuid16)
    }

    pub(crate) fn deliver(&self, adv: Advertisement) -> Delivery {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        if !self.wants(adv.uuid16) {
            self.counters.filtered.fetch_add(1, Ordering::Relaxed);
            return Delivery::Filtered;
        }
        match self.tx.try_send(adv) {
            Ok(()) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                Delivery::Queued
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Delivery::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
        }
    }

    /// Counts advertisements the radio lost before they reached this sink.
    pub(crate) fn lost(&self, n: u64) {
        self.counters.received.fetch_add(n, Ordering::Relaxed);
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn malformed(&self) {
        self.counters.malformed.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(all(target_os = "linux", feature = "bluez"))]
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Resolves when the scan or advertisement should stop: on an explicit stop or when its
/// handle was dropped.
pub(crate) type StopSignal = oneshot::Receiver<()>;

/// A running scan: a bounded queue of received advertisements.
///
/// Every advertisement the radio hears under one of the wanted UUIDs is delivered, repeats
/// included (the phone repeats its advert; de-duplication is the protocol layer's job). When
/// the queue is full new advertisements are dropped and counted in [`ScanStats::dropped`].
///
/// Read it with [`Scan::next`], [`Scan::next_timeout`] or as a [`Stream`]. Dropping the `Scan`
/// stops scanning in the background; [`Scan::stop`] stops and waits for the radio to confirm.
#[derive(Debug)]
pub struct Scan {
    rx: mpsc::Receiver<Advertisement>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    failure: Arc<Mutex<Option<String>>>,
    radio: &'static str,
    local_addr: Option<std::net::SocketAddr>,
}

impl Scan {
    /// Starts `run` as the backend task of a new scan for `uuids`.
    pub(crate) fn spawn<F, Fut>(radio: &'static str, uuids: &[u16], capacity: usize, run: F) -> Scan
    where
        F: FnOnce(ScanSink, StopSignal) -> Fut,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let failure = Arc::new(Mutex::new(None));
        let sink = ScanSink {
            tx,
            uuids: uuids.to_vec(),
            counters: counters.clone(),
        };
        let fut = run(sink, stop_rx);
        let failure_slot = failure.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::warn!(radio, error = %e, "scan failed");
                if let Ok(mut slot) = failure_slot.lock() {
                    *slot = Some(e.to_string());
                }
            }
        });
        Scan {
            rx,
            stop: Some(stop_tx),
            task: Some(task),
            counters,
            failure,
            radio,
            local_addr: None,
        }
    }

    pub(crate) fn with_local_addr(mut self, addr: std::net::SocketAddr) -> Scan {
        self.local_addr = Some(addr);
        self
    }

    /// The address the scan listens on (UDP radio only): useful after binding port 0.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.local_addr
    }

    /// The next advertisement, or `None` once the scan has ended (see [`Scan::failure`]).
    ///
    /// This waits without limit; use [`Scan::next_timeout`] or wrap it in
    /// [`tokio::time::timeout`].
    pub async fn next(&mut self) -> Option<Advertisement> {
        self.rx.recv().await
    }

    /// The next advertisement, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::ScanTimeout`] when nothing arrived in time; [`Error::ScanEnded`] when the scan
    /// was stopped or its radio failed.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Result<Advertisement, Error> {
        match tokio::time::timeout(timeout, self.rx.recv()).await {
            Ok(Some(adv)) => Ok(adv),
            Ok(None) => {
                Err(Error::ScanEnded(self.failure().unwrap_or_else(|| {
                    format!("the {} scan was stopped", self.radio)
                })))
            }
            Err(_) => Err(Error::ScanTimeout(timeout)),
        }
    }

    /// An advertisement if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<Advertisement> {
        self.rx.try_recv().ok()
    }

    /// Counters so far.
    pub fn stats(&self) -> ScanStats {
        self.counters.snapshot()
    }

    /// Why the scan ended, if its radio failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|slot| slot.clone())
    }

    /// Which radio this scan runs on (`"udp"`, `"memory"`, `"bluez"`).
    pub fn radio(&self) -> &'static str {
        self.radio
    }

    /// Stops scanning and waits (at most [`STOP_TIMEOUT`]) for the radio to stop.
    ///
    /// # Errors
    /// [`Error::ScanEnded`] with the radio's failure, if it had failed while scanning.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                tracing::debug!(radio = self.radio, "scan backend did not stop in time");
                abort.abort();
            }
        }
        match self.failure() {
            Some(reason) => Err(Error::ScanEnded(reason)),
            None => Ok(()),
        }
    }
}

impl Stream for Scan {
    type Item = Advertisement;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Advertisement>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        // The backend task sees the signal and stops the radio by itself.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

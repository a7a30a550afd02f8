//! A running advertisement: the handle every advertiser backend hands out.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;
use crate::scan::{STOP_TIMEOUT, StopSignal};

/// Counts the advertisements a backend has sent (UDP datagrams, memory-bus messages).
#[derive(Debug, Default)]
pub(crate) struct SentCounter(AtomicU64);

impl SentCounter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running advertisement. Advertising stops when this is dropped or [`stop`](Self::stop)ped.
///
/// Dropping stops in the background (the backend notices at once and withdraws the advert);
/// [`stop`](Self::stop) also waits until it has, so nothing is sent after it returns.
#[derive(Debug)]
#[must_use = "advertising stops when the handle is dropped"]
pub struct AdvertisingHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
    sent: Arc<SentCounter>,
    radio: &'static str,
}

impl AdvertisingHandle {
    pub(crate) fn spawn<F, Fut>(radio: &'static str, run: F) -> AdvertisingHandle
    where
        F: FnOnce(StopSignal, Arc<SentCounter>) -> Fut,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let (stop_tx, stop_rx) = oneshot::channel();
        let sent = Arc::new(SentCounter::default());
        let fut = run(stop_rx, sent.clone());
        let task = tokio::spawn(async move {
            let result = fut.await;
            if let Err(e) = &result {
                tracing::warn!(radio, error = %e, "advertising failed");
            }
            result
        });
        AdvertisingHandle {
            stop: Some(stop_tx),
            task: Some(task),
            sent,
            radio,
        }
    }

    /// How many times the advertisement has been sent so far (UDP and memory radios; BlueZ
    /// repeats in the controller and reports 1).
    pub fn sent(&self) -> u64 {
        self.sent.0.load(Ordering::Relaxed)
    }

    /// Whether the advertisement is still running (it stops early only if the radio failed).
    pub fn is_active(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Which radio this advertisement runs on (`"udp"`, `"memory"`, `"bluez"`).
    pub fn radio(&self) -> &'static str {
        self.radio
    }

    /// Stops advertising and waits (at most [`STOP_TIMEOUT`]) until the radio has stopped.
    ///
    /// # Errors
    /// The radio's failure, if advertising had failed before it was stopped.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let abort = task.abort_handle();
        match tokio::time::timeout(STOP_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            // The task panicked or was cancelled: nothing is being sent any more.
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::debug!(radio = self.radio, "advertiser did not stop in time");
                abort.abort();
                Ok(())
            }
        }
    }
}

impl Drop for AdvertisingHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

//! Busy polling (`Config::busy_poll`): the runtime keeps polling for a while after the last
//! I/O instead of sleeping, so the next message does not wait for the thread to be woken.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::shared::Phase;

/// State of the busy-poll loop.
pub(crate) struct BusyPoll {
    window: Duration,
    /// Set on every I/O wake-up; the poller clears it and extends its window.
    active: AtomicBool,
    /// The poller is asleep and waits for `wake`.
    parked: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    /// Polls for `window` after the last activity.
    pub(crate) fn new(window: Duration) -> BusyPoll {
        BusyPoll {
            window,
            active: false.into(),
            parked: false.into(),
            wake: Notify::new(),
        }
    }

    /// Notes I/O activity, waking the poller if it sleeps.
    #[inline]
    pub(crate) fn touch(&self) {
        self.active.store(true, Relaxed);
        if self.parked.swap(false, Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Keeps the runtime polling (`epoll_wait` with a zero timeout, through `yield_now`) for
    /// the window after the last I/O activity, then sleeps until the next activity. Returns
    /// when the relay has stopped.
    pub(crate) async fn run(&self, mut phase: watch::Receiver<Phase>) {
        loop {
            let notified = self.wake.notified();
            self.parked.store(true, Relaxed);
            tokio::select! {
                _ = notified => {}
                _ = phase.wait_for(|p| *p >= Phase::Stopped) => return,
            }
            let mut until = Instant::now() + self.window;
            loop {
                tokio::task::yield_now().await;
                let now = Instant::now();
                if self.active.swap(false, Relaxed) {
                    until = now + self.window;
                } else if now >= until {
                    break;
                }
            }
        }
    }
}

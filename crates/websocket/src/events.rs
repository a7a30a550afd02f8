//! Where a session's progress events go: a bounded channel, or nowhere.
//!
//! Both sessions report progress the same way (the laptop's `Event`s, the phone's
//! `PhoneProgress`), so the emitter lives here, in the async layer they share, and each
//! session names it for its own event type. A UI that does not keep up loses events; it never
//! slows the protocol down.

use std::fmt;

use tokio::sync::mpsc;

/// Where events of type `E` go: a bounded channel, or nowhere.
///
/// ```
/// use hybridge_websocket::Events;
///
/// let (events, mut rx) = Events::channel(1);
/// events.emit("first");
/// events.emit("dropped: the channel is full");
/// assert_eq!(rx.try_recv(), Ok("first"));
/// assert!(rx.try_recv().is_err());
/// Events::<&str>::none().emit("goes nowhere");
/// ```
pub struct Events<E>(Option<mpsc::Sender<E>>);

impl<E> Events<E> {
    /// Events are dropped.
    pub fn none() -> Self {
        Self(None)
    }

    /// A bounded channel of `capacity` events (at least 1) and its receiver.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<E>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self(Some(tx)), rx)
    }

    /// Sends one event without waiting; it is lost if the channel is full or closed.
    pub fn emit(&self, event: E) {
        if let Some(tx) = &self.0 {
            let _ = tx.try_send(event);
        }
    }
}

impl<E> From<mpsc::Sender<E>> for Events<E> {
    fn from(tx: mpsc::Sender<E>) -> Self {
        Self(Some(tx))
    }
}

// By hand rather than derived: none of these needs anything of `E`.
impl<E> Clone for Events<E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<E> Default for Events<E> {
    fn default() -> Self {
        Self::none()
    }
}

impl<E> fmt::Debug for Events<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Events").field(&self.0).finish()
    }
}

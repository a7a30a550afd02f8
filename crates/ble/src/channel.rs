//! The CTAP 2.3 data channel: a connection-oriented channel from the laptop to the phone
//! (BLE L2CAP on a real radio) that carries the same messages the relay's tunnel would, so a
//! ceremony can leave the relay out.
//!
//! Message boundaries never depend on the bytes: on L2CAP every message is one SDU (an LE
//! credit-based channel keeps SDU boundaries however the stack segments them), and the
//! in-memory radio hands over whole messages.

use tokio::sync::mpsc;

use crate::Error;

/// Most messages in flight on one in-memory channel.
const MEMORY_DEPTH: usize = 16;

/// The largest message a data channel carries (the largest L2CAP SDU).
pub const MAX_DATA_CHANNEL_MESSAGE: usize = u16::MAX as usize;

/// One open data channel to the peer.
#[derive(Debug)]
pub struct DataChannel {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Memory {
        tx: mpsc::Sender<Vec<u8>>,
        rx: mpsc::Receiver<Vec<u8>>,
    },
    #[cfg(all(target_os = "linux", feature = "bluez"))]
    L2cap {
        channel: bluer::l2cap::SeqPacket,
        /// One SDU's room, reused for every receive.
        buf: Box<[u8]>,
    },
}

/// What libwebauthn ends every message with; sent as an SDU of its own after each message
/// (a reader that splits a stream at CRLF finds it), skipped when received (it is never a
/// message: the shortest one is a 65-byte Noise message).
#[cfg(all(target_os = "linux", feature = "bluez"))]
const CRLF: &[u8] = b"\r\n";

impl DataChannel {
    /// Two ends of an in-memory channel.
    pub(crate) fn memory_pair() -> (DataChannel, DataChannel) {
        let (a_tx, b_rx) = mpsc::channel(MEMORY_DEPTH);
        let (b_tx, a_rx) = mpsc::channel(MEMORY_DEPTH);
        (
            DataChannel {
                inner: Inner::Memory { tx: a_tx, rx: a_rx },
            },
            DataChannel {
                inner: Inner::Memory { tx: b_tx, rx: b_rx },
            },
        )
    }

    /// An LE L2CAP channel, once it can carry data. `connect` and `accept` can return before
    /// the kernel has the peer's MTU, and a send then fails with "not connected" (seen under
    /// btvirt; libwebauthn waits the same way): wait until the send MTU is known, up to 2 s.
    #[cfg(all(target_os = "linux", feature = "bluez"))]
    pub(crate) async fn l2cap(channel: bluer::l2cap::SeqPacket) -> Result<Self, Error> {
        const LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
        const EVERY: std::time::Duration = std::time::Duration::from_millis(20);
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            match channel.send_mtu() {
                Ok(mtu) if mtu > 0 => {
                    tracing::debug!(mtu, "L2CAP channel ready");
                    return Ok(Self {
                        inner: Inner::L2cap {
                            channel,
                            buf: vec![0; MAX_DATA_CHANNEL_MESSAGE].into_boxed_slice(),
                        },
                    });
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::DataChannel(format!(
                        "the channel did not become ready within {LIMIT:?}"
                    )));
                }
                _ => tokio::time::sleep(EVERY).await,
            }
        }
    }

    /// Sends one message.
    ///
    /// # Errors
    /// [`Error::DataChannel`] when the message is too long or the channel is gone.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), Error> {
        if message.len() > MAX_DATA_CHANNEL_MESSAGE {
            return Err(Error::DataChannel(format!(
                "a {}-byte message does not fit in one {MAX_DATA_CHANNEL_MESSAGE}-byte SDU",
                message.len()
            )));
        }
        match &mut self.inner {
            Inner::Memory { tx, .. } => tx
                .send(message.to_vec())
                .await
                .map_err(|_| Error::DataChannel("the peer closed the channel".into())),
            #[cfg(all(target_os = "linux", feature = "bluez"))]
            Inner::L2cap { channel, .. } => {
                for sdu in [message, CRLF] {
                    let sent = channel
                        .send(sdu)
                        .await
                        .map_err(|e| Error::DataChannel(format!("sending failed: {e}")))?;
                    if sent != sdu.len() {
                        return Err(Error::DataChannel(format!(
                            "the channel took {sent} of {} bytes in one SDU",
                            sdu.len()
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// The next message; `Ok(None)` when the peer closed the channel.
    ///
    /// # Errors
    /// [`Error::DataChannel`] when the channel failed.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match &mut self.inner {
            Inner::Memory { rx, .. } => Ok(rx.recv().await),
            #[cfg(all(target_os = "linux", feature = "bluez"))]
            Inner::L2cap { channel, buf } => {
                loop {
                    let n = match channel.recv(buf).await {
                        Ok(0) => return Ok(None),
                        Ok(n) => n,
                        // The peer hanging up is a close, not a failure.
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionReset
                                    | std::io::ErrorKind::NotConnected
                                    | std::io::ErrorKind::BrokenPipe
                            ) =>
                        {
                            return Ok(None);
                        }
                        Err(e) => {
                            return Err(Error::DataChannel(format!("receiving failed: {e}")));
                        }
                    };
                    if &buf[..n] != CRLF {
                        return Ok(Some(buf[..n].to_vec()));
                    }
                }
            }
        }
    }

    /// Closes the channel; the peer's next `recv` gives `Ok(None)`.
    pub async fn close(self) {
        drop(self);
    }
}

/// A phone's listener for the laptop's data channel, on its [`psm`](Self::psm).
#[derive(Debug)]
pub struct DataChannelListener {
    psm: u16,
    inner: ListenerInner,
}

enum ListenerInner {
    Memory {
        incoming: mpsc::Receiver<DataChannel>,
        _registration: crate::memory::Registration,
    },
    #[cfg(all(target_os = "linux", feature = "bluez"))]
    L2cap {
        listener: bluer::l2cap::SeqPacketListener,
        /// Keeps the advertiser's adverts connectable while it lives.
        _connectable: Box<dyn Send + Sync>,
    },
}

impl std::fmt::Debug for ListenerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ListenerInner::Memory { .. } => "Memory",
            #[cfg(all(target_os = "linux", feature = "bluez"))]
            ListenerInner::L2cap { .. } => "L2cap",
        })
    }
}

impl DataChannelListener {
    pub(crate) fn memory(
        psm: u16,
        incoming: mpsc::Receiver<DataChannel>,
        registration: crate::memory::Registration,
    ) -> Self {
        Self {
            psm,
            inner: ListenerInner::Memory {
                incoming,
                _registration: registration,
            },
        }
    }

    #[cfg(all(target_os = "linux", feature = "bluez"))]
    pub(crate) fn l2cap(
        psm: u16,
        listener: bluer::l2cap::SeqPacketListener,
        connectable: Box<dyn Send + Sync>,
    ) -> Self {
        Self {
            psm,
            inner: ListenerInner::L2cap {
                listener,
                _connectable: connectable,
            },
        }
    }

    /// The L2CAP PSM this listener is on (for the advert's CTAP 2.3 suffix).
    pub fn psm(&self) -> u16 {
        self.psm
    }

    /// The next laptop that connected.
    ///
    /// # Errors
    /// [`Error::DataChannel`] when the listener failed.
    pub async fn accept(&mut self) -> Result<DataChannel, Error> {
        match &mut self.inner {
            ListenerInner::Memory { incoming, .. } => incoming
                .recv()
                .await
                .ok_or_else(|| Error::DataChannel("the radio went away".into())),
            #[cfg(all(target_os = "linux", feature = "bluez"))]
            ListenerInner::L2cap { listener, .. } => {
                let (channel, peer) = listener
                    .accept()
                    .await
                    .map_err(|e| Error::DataChannel(format!("accepting failed: {e}")))?;
                tracing::debug!(peer = %peer.addr, "L2CAP data channel accepted");
                DataChannel::l2cap(channel).await
            }
        }
    }
}

//! One accepted connection: plain TCP or rustls over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A laptop connected to another cluster instance, bridged over NATS.
    Remote(Box<crate::cluster::RemoteStream>),
}

impl Conn {
    /// Whether writes may sit in a userspace buffer until flushed (TLS records).
    pub(crate) fn buffered(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// Writes the last bytes this side will get (typically a close frame) and then ends
    /// the write half of the stream.
    ///
    /// On plain TCP the bytes go out with `MSG_MORE`, so they wait in the socket until the
    /// shutdown, and the kernel puts the FIN in the same segment: one packet instead of two.
    /// On loopback each packet costs the sender the receiver's protocol processing and a
    /// wake-up as well, which made the two separate packets a tenth of a pairing's CPU.
    pub(crate) async fn write_last(&mut self, mut data: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        if let Conn::Plain(tcp) = self {
            while !data.is_empty() {
                let n = tcp
                    .async_io(tokio::io::Interest::WRITABLE, || {
                        rustix::net::send(&*tcp, data, rustix::net::SendFlags::MORE)
                            .map_err(io::Error::from)
                    })
                    .await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                data = &data[n..];
            }
        } else {
            self.write_all(data).await?;
            self.flush().await?;
        }
        self.shutdown().await
    }

    /// Sends `bytes` (a whole HTTP response) as the last this side gets and closes, giving
    /// up after `within`.
    pub(crate) async fn respond(mut self, bytes: Vec<u8>, within: std::time::Duration) {
        let _ = tokio::time::timeout(within, self.write_last(&bytes)).await;
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Remote(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Remote(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Remote(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Remote(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

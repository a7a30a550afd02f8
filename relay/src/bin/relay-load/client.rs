//! A minimal tunnel client over plain TCP, for the load tool and the relay's integration
//! tests (which include this file): one upgrade request, masked binary frames out, frames
//! in, with no per-message allocation.
//!
//! Its WebSocket framing (RFC 6455 §5.2) is its own, not the relay's: a test client that
//! shared the relay's codec could not catch a bug in it.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The opcodes this client sends or tells apart (RFC 6455 §5.2).
mod op {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
}

/// A frame received from the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A binary or continuation frame's payload.
    Binary(&'a [u8]),
    /// A close frame and its status code, if it has one.
    Close(Option<u16>),
    /// Any other frame, by opcode.
    Other(u8),
}

/// One WebSocket connection to the relay, after the upgrade.
pub struct Client {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    mask: u32,
}

/// The upgrade was refused with this HTTP status.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {0}")]
pub struct Refused(pub u16);

fn other(msg: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::other(msg)
}

/// Opens `path` on the relay at `addr` (optionally from a chosen local address) and
/// completes the WebSocket upgrade with `fido.cable`. Returns the client and the
/// `X-caBLE-Routing-ID` value, if the relay sent one. A refusal is an `io::Error`
/// wrapping [`Refused`].
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    source: Option<IpAddr>,
) -> io::Result<(Client, Option<String>)> {
    let stream = match source {
        Some(ip) => {
            let sock = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    let mut c = Client {
        stream,
        rbuf: Vec::with_capacity(1024),
        rpos: 0,
        wbuf: Vec::with_capacity(256),
        mask: 0x9e37_79b9,
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: fido.cable\r\n\r\n"
    );
    c.stream.write_all(req.as_bytes()).await?;
    loop {
        if c.rbuf.len() > 16 * 1024 {
            return Err(other("response head too long"));
        }
        c.rbuf.reserve(1024);
        if c.stream.read_buf(&mut c.rbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&c.rbuf) {
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                if code != 101 {
                    return Err(other(Refused(code)));
                }
                let mut routing = None;
                let mut proto_ok = false;
                for h in resp.headers.iter() {
                    if h.name
                        .eq_ignore_ascii_case(hybridge_proto::tunnel::ROUTING_ID_HEADER)
                    {
                        routing = std::str::from_utf8(h.value).ok().map(str::to_owned);
                    }
                    if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
                        proto_ok = h.value == hybridge_proto::tunnel::SUBPROTOCOL.as_bytes();
                    }
                }
                if !proto_ok {
                    return Err(other("subprotocol not echoed"));
                }
                c.rpos = n;
                return Ok((c, routing));
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(other(e)),
        }
    }
}

impl Client {
    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift: masks need not be secret here, only varied.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_ne_bytes()
    }

    /// Sends one binary message.
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_frame(0x80 | op::BINARY, payload).await
    }

    /// Sends one frame with first byte `b0` (FIN, opcode).
    pub async fn send_frame(&mut self, b0: u8, payload: &[u8]) -> io::Result<()> {
        self.wbuf.clear();
        let mask = self.next_mask();
        push_masked_frame(&mut self.wbuf, b0, payload, mask);
        self.stream.write_all(&self.wbuf).await
    }

    /// Sends a close frame with `code`.
    pub async fn close(&mut self, code: u16) -> io::Result<()> {
        self.send_frame(0x80 | op::CLOSE, &code.to_be_bytes()).await
    }

    /// Receives the next frame.
    pub async fn recv(&mut self) -> io::Result<Frame<'_>> {
        loop {
            let avail = &self.rbuf[self.rpos..];
            if avail.len() >= 2 {
                let (len, hl) = match avail[1] & 0x7F {
                    126 if avail.len() >= 4 => {
                        (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4)
                    }
                    127 if avail.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&avail[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && avail.len() >= hl + len {
                    let opcode = avail[0] & 0x0F;
                    let start = self.rpos + hl;
                    self.rpos = start + len;
                    let p = &self.rbuf[start..start + len];
                    return Ok(match opcode {
                        op::BINARY | op::CONTINUATION => Frame::Binary(p),
                        op::CLOSE => {
                            Frame::Close((p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])))
                        }
                        op => Frame::Other(op),
                    });
                }
            }
            // Need more bytes: compact, then read.
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(4096);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Receives a binary message and returns its length.
    pub async fn recv_binary(&mut self) -> io::Result<usize> {
        match self.recv().await? {
            Frame::Binary(p) => Ok(p.len()),
            f => Err(other(format!("expected a binary message, got {f:?}"))),
        }
    }
}

/// Appends a client frame: first byte `b0` (FIN, opcode), the payload length in its shortest
/// form with the mask bit set, the mask, and the payload masked (RFC 6455 §5.2, §5.3).
fn push_masked_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(b0);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

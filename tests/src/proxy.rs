//! A tampering relay: a TCP proxy in front of the real relay that forwards the laptop's bytes
//! unchanged and flips one bit in the payload of one WebSocket message from the relay (that
//! is, from the phone) to the laptop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A running proxy; stops accepting when dropped.
pub struct BitFlipProxy {
    addr: SocketAddr,
    flipped: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl BitFlipProxy {
    /// Proxies to `upstream`, flipping one bit of the `index`-th (0-based) binary message
    /// sent towards the client on each connection.
    pub fn start(upstream: SocketAddr, index: usize) -> BitFlipProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let flipped = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let flipped = flipped.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let flipped = flipped.clone();
                            std::thread::spawn(move || {
                                let _ = serve(client, upstream, index, &flipped);
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => break,
                    }
                }
            });
        }
        BitFlipProxy {
            addr,
            flipped,
            stop,
        }
    }

    /// `ws://ADDR` of the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// How many bits were flipped so far.
    pub fn flipped(&self) -> usize {
        self.flipped.load(Ordering::Relaxed)
    }
}

impl Drop for BitFlipProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    index: usize,
    flipped: &AtomicUsize,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let mut server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
    }
    // Laptop → relay: unchanged.
    let (mut c_read, mut s_write) = (client.try_clone()?, server.try_clone()?);
    std::thread::spawn(move || {
        let _ = io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    // Relay → laptop: the upgrade response unchanged, then frame by frame.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if server.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            return Ok(());
        }
    }
    client.write_all(&head)?;
    let mut seen = 0usize;
    loop {
        let mut h = [0u8; 2];
        if read_exact_or_eof(&mut server, &mut h)? {
            break;
        }
        let mut frame = h.to_vec();
        let opcode = h[0] & 0x0F;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                server.read_exact(&mut b)?;
                frame.extend_from_slice(&b);
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                server.read_exact(&mut b)?;
                frame.extend_from_slice(&b);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if masked {
            let mut m = [0u8; 4];
            server.read_exact(&mut m)?;
            frame.extend_from_slice(&m);
        }
        if len > 1 << 24 {
            return Ok(());
        }
        let mut payload = vec![0u8; len as usize];
        server.read_exact(&mut payload)?;
        if opcode == 0x2 {
            if seen == index && !payload.is_empty() {
                let i = payload.len() / 2;
                payload[i] ^= 0x01;
                flipped.fetch_add(1, Ordering::Relaxed);
            }
            seen += 1;
        }
        frame.extend_from_slice(&payload);
        client.write_all(&frame)?;
    }
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// `true` at a clean end of stream before the first byte.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 if got == 0 => return Ok(true),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(false)
}

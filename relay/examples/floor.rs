//! Experiment (not shipped): the least a relay can do per pairing on this kernel. One
//! thread, raw epoll (edge-triggered), no timers, no metrics, no limits. Same wire
//! behaviour as hybridge-relay for the load tool's pairing loop.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::IntoRawFd;

// The relay's own request parser and frame codec, compiled in from its source: they are
// not the library's API, and the yardstick must pay for exactly the same parsing.
#[allow(dead_code)]
#[path = "../src/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../src/ws.rs"]
mod ws;

use http::Parsed;
use ws::{Decoder, HEADROOM, Stop, Tally};

enum St {
    Head(Vec<u8>),
    Paired(i32),
    Closing,
}

struct C {
    st: St,
    dec: Decoder,
}

fn send(fd: i32, b: &[u8], more: bool) {
    let fl = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), fl) };
}

fn parse_id(hex: &str) -> Option<[u8; 16]> {
    let b = hex.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in b.chunks(2).enumerate() {
        id[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(id)
}

fn drop_conn(conns: &mut [Option<C>], fd: i32) {
    conns[fd as usize] = None;
    unsafe { libc::close(fd) };
}

fn main() {
    let port = std::env::args().nth(1).unwrap_or("18480".into());
    let l = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let lfd = l.into_raw_fd();
    // Accepted sockets inherit TCP_NODELAY from the listener.
    let one: i32 = 1;
    unsafe {
        libc::setsockopt(
            lfd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const i32).cast(),
            4,
        )
    };
    println!(
        "{{\"listen\":\"127.0.0.1:{port}\",\"pid\":{}}}",
        std::process::id()
    );
    let ep = unsafe { libc::epoll_create1(0) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: lfd as u64,
    };
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, &mut ev) };
    let mut conns: Vec<Option<C>> = (0..70000).map(|_| None).collect();
    let mut waiting: HashMap<[u8; 16], i32> = HashMap::new();
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut buf = vec![0u8; HEADROOM + 32768];
    let mut tally = Tally {
        max_message: 1 << 20,
        ..Default::default()
    };
    loop {
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 512, -1) };
        for e in &evs[..n.max(0) as usize] {
            let fd = e.u64 as i32;
            if fd == lfd {
                loop {
                    let c = unsafe {
                        libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if c < 0 {
                        break;
                    }
                    conns[c as usize] = Some(C {
                        st: St::Head(Vec::with_capacity(1024)),
                        dec: Decoder::new(),
                    });
                    let mut ev = libc::epoll_event {
                        events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                        u64: c as u64,
                    };
                    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c, &mut ev) };
                }
                continue;
            }
            loop {
                let r = unsafe { libc::recv(fd, buf[HEADROOM..].as_mut_ptr().cast(), 32768, 0) };
                if r < 0 {
                    break; // EAGAIN (or error: ignore in the experiment)
                }
                let r = r as usize;
                let Some(c) = conns[fd as usize].as_mut() else {
                    break;
                };
                if r == 0 {
                    if let St::Paired(p) = c.st {
                        conns[p as usize] = None;
                        unsafe { libc::close(p) };
                    }
                    conns[fd as usize] = None;
                    unsafe { libc::close(fd) };
                    break;
                }
                match &mut c.st {
                    St::Closing => {}
                    St::Head(h) => {
                        h.extend_from_slice(&buf[HEADROOM..HEADROOM + r]);
                        let req = match http::parse(h, None, None) {
                            Parsed::Complete(req, _) => req,
                            Parsed::Partial if h.len() < 8192 => continue,
                            _ => {
                                drop_conn(&mut conns, fd);
                                break;
                            }
                        };
                        let id = req.path.rsplit('/').next().and_then(parse_id);
                        let (Some(key), Some(id)) = (req.key, id) else {
                            drop_conn(&mut conns, fd);
                            break;
                        };
                        let mut out = Vec::with_capacity(256);
                        if req.path.starts_with("/cable/new/") {
                            http::push_switching(&mut out, &key, Some("ABCDEF"));
                            waiting.insert(id, fd);
                            c.st = St::Paired(-1);
                        } else if let Some(p) = waiting.remove(&id) {
                            http::push_switching(&mut out, &key, None);
                            c.st = St::Paired(p);
                            if let Some(pc) = conns[p as usize].as_mut() {
                                pc.st = St::Paired(fd);
                            }
                        } else {
                            drop_conn(&mut conns, fd);
                            break;
                        }
                        send(fd, &out, false);
                    }
                    St::Paired(p) => {
                        let p = *p;
                        if p < 0 {
                            continue; // a phone's bytes before its laptop: not in the pairing loop
                        }
                        let (w, stop) = c.dec.process(&mut buf, HEADROOM, HEADROOM + r, &mut tally);
                        if w > 0 {
                            send(p, &buf[..w], false);
                        }
                        if let Some(Stop::PeerClose(code)) = stop {
                            let mut out = Vec::new();
                            ws::push_close(&mut out, code, "");
                            send(fd, &out, true);
                            unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                            out.clear();
                            ws::push_close(&mut out, 1000, "remote peer cleanly disconnected");
                            send(p, &out, true);
                            unsafe { libc::shutdown(p, libc::SHUT_WR) };
                            c.st = St::Closing;
                            if let Some(pc) = conns[p as usize].as_mut() {
                                pc.st = St::Closing;
                            }
                        }
                    }
                }
            }
        }
    }
}

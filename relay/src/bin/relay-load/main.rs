//! `relay-load`: drives any tunnel relay (ws://) and reports pairing rate, memory per held
//! tunnel and round-trip latency, with the server's CPU time and RSS read from /proc when
//! given its PID. `relay-load suite` runs everything and prints one table.
#![forbid(unsafe_code)]

use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hybridge_proto::tunnel::{TunnelId, TunnelPath, parse_routing_id_header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

mod client;
use client::{Client, Frame};

/// Load generator for hybrid tunnel relays.
///
/// Examples:
///   relay-load suite --url ws://127.0.0.1:8080 --pid $(pidof hybridge-relay)
///   relay-load pairing --url ws://127.0.0.1:8080 --workers 64 --count 20000
///   relay-load hold --url ws://127.0.0.1:8080 --tunnels 9000 --pid 1234
///   relay-load latency --url ws://127.0.0.1:8080 --in-flight 1 --seconds 5
///
/// The relay must allow the load: no per-IP rate limit (--rate-per-ip 0), no message
/// limit (--max-messages 0), and --max-tunnels above the tunnels held.
#[derive(Parser)]
#[command(verbatim_doc_comment)]
struct Cli {
    /// Client threads (1: a single-threaded runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Args, Clone)]
struct Target {
    /// Relay base URL (plain ws only).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Send the laptops' /cable/connect to this relay instead (another instance of a
    /// cluster: phone and laptop on different instances).
    #[arg(long)]
    connect_url: Option<String>,
    /// The relay's PID, to read its CPU time and RSS from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Spread client sockets over this many loopback source addresses (127.0.0.1..),
    /// so that ephemeral ports never run out.
    #[arg(long, default_value_t = 4)]
    sources: u8,
}

#[derive(Subcommand)]
enum Mode {
    /// Pairings per second: C workers each loop new → routing ID → connect → one message
    /// each way → close.
    Pairing {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 64)]
        workers: usize,
        #[arg(long, default_value_t = 20_000)]
        count: usize,
    },
    /// Holds N paired tunnels open, reports server RSS per tunnel and after closing.
    Hold {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 9000)]
        tunnels: usize,
    },
    /// Round-trip latency (laptop → phone → laptop) with K tunnels in flight.
    Latency {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 1)]
        in_flight: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Busy-poll while waiting for replies instead of sleeping, so that the load
        /// tool's own wake-up (slow on VMs) is not counted as relay latency.
        #[arg(long)]
        spin: bool,
    },
    /// Everything above, one table.
    Suite {
        #[command(flatten)]
        t: Target,
        #[arg(long, default_value_t = 30_000)]
        pairings: usize,
        /// Repeat the pairing run this many times and report each run and the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 64)]
        workers: usize,
        #[arg(long, default_value_t = 9000)]
        hold: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 100)]
        in_flight: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// (internal) a child process of `hold`.
    #[command(hide = true)]
    HoldChild {
        #[command(flatten)]
        t: Target,
        #[arg(long)]
        tunnels: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
}

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

fn addr_of(url: &str) -> Result<SocketAddr, BoxErr> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("only ws:// URLs are supported")?;
    let host = rest.trim_end_matches('/');
    Ok(std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or("no address")?)
}

/// Where phones (`/cable/new`) and laptops (`/cable/connect`) connect.
fn ends(t: &Target) -> Result<(SocketAddr, SocketAddr), BoxErr> {
    let addr = addr_of(&t.url)?;
    let connect = match &t.connect_url {
        Some(u) => addr_of(u)?,
        None => addr,
    };
    Ok((addr, connect))
}

fn source(t: &Target, addr: SocketAddr, i: usize) -> Option<IpAddr> {
    match addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() && t.sources > 1 => Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % t.sources as usize) as u8,
        ))),
        _ => None,
    }
}

// ---- /proc ---------------------------------------------------------------------------

fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / 100.0))
}

fn rss(pid: Option<u32>) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Reads one gauge from the relay's /metrics (served on the tunnel port by default).
async fn gauge(addr: SocketAddr, name: &str) -> Option<i64> {
    let mut s = timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    timeout(Duration::from_secs(2), s.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// ---- one tunnel ----------------------------------------------------------------------

async fn open_pair(
    addr: SocketAddr,
    connect: SocketAddr,
    src: Option<IpAddr>,
) -> Result<(Client, Client), BoxErr> {
    let tunnel_id = TunnelId(rand::random());
    let (phone, routing) =
        client::connect(addr, &TunnelPath::New { tunnel_id }.to_path(), src).await?;
    let routing = routing.ok_or("no X-caBLE-Routing-ID")?;
    let routing_id = parse_routing_id_header(routing.as_bytes())?;
    let path = TunnelPath::Connect {
        routing_id,
        tunnel_id,
    };
    let (laptop, _) = client::connect(connect, &path.to_path(), src).await?;
    Ok((phone, laptop))
}

async fn one_pairing(
    addr: SocketAddr,
    connect: SocketAddr,
    src: Option<IpAddr>,
) -> Result<(), BoxErr> {
    let (mut phone, mut laptop) = open_pair(addr, connect, src).await?;
    laptop
        .send(b"noise handshake message from the laptop")
        .await?;
    phone.recv_binary().await?;
    phone.send(b"noise handshake reply from the phone").await?;
    laptop.recv_binary().await?;
    // The closing handshake as RFC 6455 clients do it: the phone closes and reads the
    // relay's echo; the laptop answers the relay's close with its own.
    phone.close(1000).await?;
    match laptop.recv().await? {
        Frame::Close(Some(1000)) => {}
        f => return Err(format!("expected close 1000, got {f:?}").into()),
    }
    laptop.close(1000).await?;
    match phone.recv().await? {
        Frame::Close(_) => Ok(()),
        f => Err(format!("expected the close echo, got {f:?}").into()),
    }
}

// ---- modes ---------------------------------------------------------------------------

struct PairingResult {
    ok: u64,
    errors: u64,
    rate: f64,
    cpu_per_1000: Option<Duration>,
    client_cpu_per_1000: Option<Duration>,
}

async fn pairing(t: &Target, workers: usize, count: usize) -> Result<PairingResult, BoxErr> {
    let (addr, connect) = ends(t)?;
    let next = Arc::new(AtomicUsize::new(0));
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu0 = cpu_time(t.pid);
    let own0 = cpu_time(Some(std::process::id()));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (next, ok, errors, t) = (next.clone(), ok.clone(), errors.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= count {
                    break;
                }
                match timeout(
                    Duration::from_secs(10),
                    one_pairing(addr, connect, source(&t, addr, i)),
                )
                .await
                {
                    Ok(Ok(())) => ok.fetch_add(1, Relaxed),
                    Ok(Err(e)) => {
                        if errors.fetch_add(1, Relaxed) < 3 {
                            eprintln!("pairing error: {e}");
                        }
                        0
                    }
                    Err(_) => errors.fetch_add(1, Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = t0.elapsed();
    let cpu = cpu_time(t.pid).zip(cpu0).map(|(a, b)| a.saturating_sub(b));
    let own = cpu_time(Some(std::process::id()))
        .zip(own0)
        .map(|(a, b)| a.saturating_sub(b));
    let ok = ok.load(Relaxed);
    Ok(PairingResult {
        client_cpu_per_1000: own.map(|c| c.mul_f64(1000.0 / ok.max(1) as f64)),
        ok,
        errors: errors.load(Relaxed),
        rate: ok as f64 / elapsed.as_secs_f64(),
        cpu_per_1000: cpu.map(|c| c.mul_f64(1000.0 / ok.max(1) as f64)),
    })
}

/// Opens `n` paired tunnels with one message each way, `conc` at a time.
async fn open_many(t: &Target, n: usize, offset: usize) -> Result<Vec<(Client, Client)>, BoxErr> {
    let (addr, connect) = ends(t)?;
    let mut out = Vec::with_capacity(n);
    let conc = 128;
    let mut i = 0;
    while i < n {
        let batch = conc.min(n - i);
        let mut set = tokio::task::JoinSet::new();
        for j in 0..batch {
            let src = source(t, addr, offset + i + j);
            set.spawn(async move {
                let (mut phone, mut laptop) = open_pair(addr, connect, src).await?;
                laptop.send(b"hello").await?;
                phone.recv_binary().await?;
                phone.send(b"hello").await?;
                laptop.recv_binary().await?;
                Ok::<_, BoxErr>((phone, laptop))
            });
        }
        while let Some(r) = set.join_next().await {
            out.push(r??);
        }
        i += batch;
    }
    Ok(out)
}

struct HoldResult {
    tunnels: usize,
    procs: usize,
    rss_before: Option<u64>,
    rss_open: Option<u64>,
    rss_after: Option<u64>,
}

async fn hold(t: &Target, n: usize) -> Result<HoldResult, BoxErr> {
    let addr = addr_of(&t.url)?;
    let (soft, _) = hybridge_relay::raise_nofile();
    let per_proc = (soft.saturating_sub(300) / 2).max(1) as usize;
    let rss_before = rss(t.pid);
    let mut children = Vec::new();
    let mut local = Vec::new();
    let procs = if n <= per_proc {
        local = open_many(t, n, 0).await?;
        1
    } else {
        let k = n.div_ceil(per_proc);
        let exe = std::env::current_exe()?;
        for c in 0..k {
            let share = n / k + usize::from(c < n % k);
            let mut child = std::process::Command::new(&exe)
                .args([
                    "hold-child",
                    "--url",
                    &t.url,
                    "--sources",
                    &t.sources.to_string(),
                ])
                .args([
                    "--tunnels",
                    &share.to_string(),
                    "--offset",
                    &(c * per_proc).to_string(),
                ])
                .args(
                    t.connect_url
                        .iter()
                        .flat_map(|u| ["--connect-url", u.as_str()]),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let stdout = child.stdout.take().ok_or("child stdout")?;
            children.push((child, stdout));
        }
        for (_, stdout) in &mut children {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line)?;
            if !line.starts_with("ready") {
                return Err(format!("hold child failed: {line}").into());
            }
        }
        k
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = gauge(addr, "hybridge_relay_tunnels_active").await;
    if let Some(h) = held
        && (h as usize) < n
    {
        eprintln!("warning: relay reports {h} active tunnels, expected {n}");
    }
    let rss_open = rss(t.pid);
    drop(local);
    for (mut child, _) in children {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        if gauge(addr, "hybridge_relay_tunnels_active")
            .await
            .unwrap_or(0)
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(HoldResult {
        tunnels: n,
        procs,
        rss_before,
        rss_open,
        rss_after: rss(t.pid),
    })
}

struct LatencyResult {
    spin: bool,
    client_cpu_per_msg: Option<Duration>,
    msgs_per_s: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    cpu_per_msg: Option<Duration>,
}

async fn latency(
    t: &Target,
    k: usize,
    seconds: f64,
    size: usize,
    spin: bool,
) -> Result<LatencyResult, BoxErr> {
    let pairs = open_many(t, k, 0).await?;
    // A task that always yields keeps the runtime from sleeping: it polls epoll with a zero
    // timeout between tasks instead.
    let spinner = spin.then(|| {
        tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        })
    });
    let dur = Duration::from_secs_f64(seconds);
    let cpu0 = cpu_time(t.pid);
    let own0 = cpu_time(Some(std::process::id()));
    let t0 = Instant::now();
    let end = t0 + dur;
    let mut set = tokio::task::JoinSet::new();
    for (mut phone, mut laptop) in pairs {
        set.spawn(async move {
            let payload = vec![0x5au8; size];
            let mut samples: Vec<u32> = Vec::with_capacity(1 << 16);
            while Instant::now() < end {
                let s = Instant::now();
                laptop.send(&payload).await?;
                phone.recv_binary().await?;
                phone.send(&payload).await?;
                laptop.recv_binary().await?;
                samples.push(s.elapsed().as_nanos().min(u32::MAX as u128) as u32);
            }
            let _ = phone.close(1000).await;
            Ok::<_, BoxErr>(samples)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    let elapsed = t0.elapsed();
    if let Some(s) = spinner {
        s.abort();
    }
    let cpu = cpu_time(t.pid).zip(cpu0).map(|(a, b)| a.saturating_sub(b));
    let own = cpu_time(Some(std::process::id()))
        .zip(own0)
        .map(|(a, b)| a.saturating_sub(b));
    all.sort_unstable();
    let pct = |p: f64| {
        let i = ((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1));
        Duration::from_nanos(all.get(i).copied().unwrap_or(0) as u64)
    };
    let msgs = 2 * all.len() as u64;
    // Let the closes settle before the next measurement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(LatencyResult {
        spin,
        client_cpu_per_msg: own.map(|c| c / msgs.max(1) as u32),
        msgs_per_s: msgs as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        cpu_per_msg: cpu.map(|c| c / msgs.max(1) as u32),
    })
}

// ---- output --------------------------------------------------------------------------

fn kib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
        .unwrap_or_else(|| "n/a".into())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, value: String, target: &str) {
    println!("| {name:<44} | {value:>26} | {target:<12} |");
}

fn header() {
    println!("| {:<44} | {:>26} | {:<12} |", "metric", "value", "target");
    println!("|{}|{}|{}|", "-".repeat(46), "-".repeat(28), "-".repeat(14));
}

fn print_pairing(r: &PairingResult, workers: usize) {
    row(
        &format!(
            "pairings/s ({workers} workers, {} ok, {} errors)",
            r.ok, r.errors
        ),
        format!("{:.0}", r.rate),
        ">= 10000",
    );
    row(
        "server CPU per 1,000 pairings",
        r.cpu_per_1000
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "n/a (no --pid)".into()),
        "<= 70 ms",
    );
    if let Some(c) = r.client_cpu_per_1000 {
        row(
            "load tool CPU per 1,000 pairings",
            format!("{:.1} ms", c.as_secs_f64() * 1e3),
            "",
        );
    }
    // What the measured CPU cost allows when the relay has one core to itself: a guide when
    // the machine is busy with other work and wall-clock rates say little.
    if let Some(c) = r.cpu_per_1000.filter(|c| !c.is_zero()) {
        row(
            "  = pairings/s per server core (CPU-bound)",
            format!("{:.0}", 1000.0 / c.as_secs_f64()),
            "",
        );
    }
}

fn print_hold(r: &HoldResult) {
    row(
        &format!("tunnels held ({} client process(es))", r.procs),
        r.tunnels.to_string(),
        "9000",
    );
    row(
        "server RSS before / open / after close",
        format!(
            "{} / {} / {}",
            kib(r.rss_before),
            kib(r.rss_open),
            kib(r.rss_after)
        ),
        "",
    );
    let per = r
        .rss_open
        .zip(r.rss_before)
        .map(|(o, b)| o.saturating_sub(b) as f64 / r.tunnels.max(1) as f64 / 1024.0);
    row(
        "RSS per tunnel",
        per.map(|k| format!("{k:.2} KiB"))
            .unwrap_or_else(|| "n/a".into()),
        "<= 16 KiB",
    );
    let returned = match (r.rss_before, r.rss_open, r.rss_after) {
        (Some(b), Some(o), Some(a)) if o > b => {
            Some(100.0 * (o.saturating_sub(a)) as f64 / (o - b) as f64)
        }
        _ => None,
    };
    row(
        "memory returned after close",
        returned
            .map(|p| format!("{p:.0} %"))
            .unwrap_or_else(|| "n/a".into()),
        "returned",
    );
}

fn print_latency(r: &LatencyResult, k: usize, size: usize) {
    row(
        &format!("relayed messages/s ({k} in flight, {size} B)"),
        format!("{:.0}", r.msgs_per_s),
        if k >= 100 { ">= 100000" } else { "" },
    );
    let how = if r.spin { ", client polls" } else { "" };
    row(
        &format!("round trip p50 / p99 / p999 ({k} in flight{how})"),
        format!("{} / {} / {}", us(r.p50), us(r.p99), us(r.p999)),
        if k == 1 { "p99 <= 200 µs" } else { "" },
    );
    if let Some(c) = r.cpu_per_msg {
        row(
            &format!("server CPU per relayed message ({k} in flight)"),
            format!("{:.2} µs", c.as_secs_f64() * 1e6),
            "",
        );
    }
    if let Some(c) = r.cpu_per_msg.filter(|c| !c.is_zero()) {
        row(
            "  = messages/s per server core (CPU-bound)",
            format!("{:.0}", 1.0 / c.as_secs_f64()),
            "",
        );
    }
    if let Some(c) = r.client_cpu_per_msg {
        row(
            &format!("load tool CPU per message ({k} in flight)"),
            format!("{:.2} µs", c.as_secs_f64() * 1e6),
            "",
        );
    }
}

async fn run(cli: Cli) -> Result<(), BoxErr> {
    hybridge_relay::raise_nofile();
    match cli.mode {
        Mode::Pairing { t, workers, count } => {
            let r = pairing(&t, workers, count).await?;
            header();
            print_pairing(&r, workers);
        }
        Mode::Hold { t, tunnels } => {
            let r = hold(&t, tunnels).await?;
            header();
            print_hold(&r);
        }
        Mode::Latency {
            t,
            in_flight,
            seconds,
            size,
            spin,
        } => {
            let r = latency(&t, in_flight, seconds, size, spin).await?;
            header();
            print_latency(&r, in_flight, size);
        }
        Mode::Suite {
            t,
            pairings,
            runs,
            workers,
            hold: n,
            seconds,
            in_flight,
            size,
        } => {
            // Pairings first, while the kernel holds no TIME_WAIT sockets from other tests.
            let mut ps = Vec::new();
            for _ in 0..runs.max(1) {
                ps.push(pairing(&t, workers, pairings).await?);
            }
            let h = hold(&t, n).await?;
            let many = latency(&t, in_flight, seconds, size, false).await?;
            let one = latency(&t, 1, seconds, size, false).await?;
            let one_spin = latency(&t, 1, seconds, size, true).await?;
            header();
            let errors: u64 = ps.iter().map(|p| p.errors).sum();
            if ps.len() > 1 {
                for (i, p) in ps.iter().enumerate() {
                    row(
                        &format!("pairing run {}/{}", i + 1, ps.len()),
                        format!(
                            "{:.0}/s, {:.1} ms",
                            p.rate,
                            p.cpu_per_1000.unwrap_or_default().as_secs_f64() * 1e3
                        ),
                        "",
                    );
                }
                ps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
                println!("| {:<44} | {:>26} | {:<12} |", "median run:", "", "");
            }
            print_pairing(&ps[ps.len() / 2], workers);
            print_hold(&h);
            print_latency(&many, in_flight, size);
            print_latency(&one, 1, size);
            print_latency(&one_spin, 1, size);
            if errors > 0 {
                return Err(format!("{errors} pairings failed").into());
            }
        }
        Mode::HoldChild { t, tunnels, offset } => {
            let held = open_many(&t, tunnels, offset).await?;
            println!("ready {}", held.len());
            // Hold until the parent closes our stdin.
            let mut stdin = tokio::io::stdin();
            let mut b = [0u8; 64];
            while stdin.read(&mut b).await.unwrap_or(0) != 0 {}
            drop(held);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay-load: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-load: {e}");
            ExitCode::from(1)
        }
    }
}

//! `hybridge-relay`: the tunnel server binary. See `--help`.
// Not `forbid`: `trim_heap` makes one FFI call. The library forbids unsafe code.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hybridge_proto::tunnel::RoutingId;
use hybridge_relay::{
    ClusterConfig, Config, Limits, OriginHost, Relay, TlsFiles, init_log, raise_nofile,
    tunnel_capacity,
};

/// The FIDO hybrid (caBLE v2) tunnel server: pairs a phone's `/cable/new` WebSocket with a
/// laptop's `/cable/connect` and relays their encrypted messages.
///
/// Every flag can also be set from the environment variable shown. Durations take a unit:
/// 500ms, 30s, 5m (a bare number is seconds).
///
/// Examples:
///   hybridge-relay --listen 0.0.0.0:8080 --metrics-listen 127.0.0.1:9090
///   hybridge-relay --listen [::]:443 --tls-cert fullchain.pem --tls-key key.pem
///   HYBRIDGE_RELAY_LISTEN=127.0.0.1:8080 HYBRIDGE_RELAY_LOG_FORMAT=json hybridge-relay
///
/// On start it prints one JSON line to stdout with the bound addresses and routing ID.
/// SIGHUP reloads the TLS certificate and key; SIGTERM (or Ctrl-C) drains and exits: it
/// stops accepting, closes waiting phones and lets paired tunnels finish for up to
/// --shutdown-grace. A second SIGTERM or Ctrl-C closes every tunnel at once (1001) and
/// exits; a third exits without waiting for the peers to take their close frames.
/// Exit codes: 0 after a shutdown, 1 when it cannot start, 2 for bad usage.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// Address for tunnels (and /healthz, /readyz).
    #[arg(long, env = "HYBRIDGE_RELAY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address for /metrics, /healthz and /readyz. Without it, /metrics is on --listen.
    #[arg(long, env = "HYBRIDGE_RELAY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// This instance's routing ID (6 hex characters) for X-caBLE-Routing-ID; random if unset.
    #[arg(long, env = "HYBRIDGE_RELAY_ROUTING_ID", value_parser = parse_routing_id)]
    routing_id: Option<RoutingId>,
    /// Cluster mode: join the relays on this NATS server (JetStream enabled), e.g.
    /// nats://nats:4222. Tunnel IDs are claimed cluster-wide and a /cable/connect for
    /// another instance's routing ID is bridged to it. Unset: run alone (no dependency).
    #[arg(
        long,
        env = "HYBRIDGE_RELAY_NATS",
        value_name = "URL",
        hide_env_values = true
    )]
    nats: Option<String>,
    /// Subject prefix and key-value bucket name in NATS, so several relay clusters can
    /// share one NATS server.
    #[arg(long, env = "HYBRIDGE_RELAY_NATS_PREFIX", default_value = "hybridge", value_parser = parse_prefix)]
    nats_prefix: String,
    /// PEM file of the CA that signed the NATS server's certificate: TLS to NATS is then
    /// required (a tls:// URL requires it too). Credentials go in the URL:
    /// nats://user:password@host:4222 or nats://token@host:4222.
    #[arg(long, env = "HYBRIDGE_RELAY_NATS_CA", requires = "nats")]
    nats_ca: Option<PathBuf>,
    /// PEM certificate this relay presents to NATS (mutual TLS). Needs --nats-key.
    #[arg(long, env = "HYBRIDGE_RELAY_NATS_CERT", requires_all = ["nats", "nats_key"])]
    nats_cert: Option<PathBuf>,
    /// PEM private key for --nats-cert.
    #[arg(long, env = "HYBRIDGE_RELAY_NATS_KEY", requires = "nats_cert")]
    nats_key: Option<PathBuf>,
    /// A peer relay silent this long is taken for dead: tunnels bridged to it close with
    /// 1011. Heartbeats go out five times per timeout. At least 500ms.
    #[arg(long, env = "HYBRIDGE_RELAY_NATS_PEER_TIMEOUT", default_value = "5s", value_parser = parse_peer_timeout)]
    nats_peer_timeout: Duration,
    /// PEM certificate chain for built-in TLS (wss). Needs --tls-key.
    #[arg(long, env = "HYBRIDGE_RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for built-in TLS.
    #[arg(long, env = "HYBRIDGE_RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long a phone waits for its laptop.
    #[arg(long, env = "HYBRIDGE_RELAY_PAIRING_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pairing_timeout: Duration,
    /// Tunnel lifetime from the phone's connect; closed with 1008 after it.
    #[arg(long, env = "HYBRIDGE_RELAY_TUNNEL_TTL", default_value = "300s", value_parser = parse_duration)]
    tunnel_ttl: Duration,
    /// After pairing, the first message must flow within this time.
    #[arg(long, env = "HYBRIDGE_RELAY_FIRST_MESSAGE_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    first_message_timeout: Duration,
    /// Time from TCP accept to a complete request head (TLS handshake included).
    #[arg(long, env = "HYBRIDGE_RELAY_HEADER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Longest request head in bytes.
    #[arg(long, env = "HYBRIDGE_RELAY_MAX_HEADER_BYTES", default_value_t = 8192)]
    max_header_bytes: usize,
    /// Time to deliver a close frame and see the peer go.
    #[arg(long, env = "HYBRIDGE_RELAY_CLOSE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// Largest message in bytes (1009 beyond).
    #[arg(long, env = "HYBRIDGE_RELAY_MAX_MESSAGE_SIZE", default_value_t = Limits::default().max_message_size)]
    max_message_size: u64,
    /// Most messages per tunnel, both directions (1008 beyond); 0 for no limit.
    #[arg(long, env = "HYBRIDGE_RELAY_MAX_MESSAGES", default_value_t = 256)]
    max_messages: u64,
    /// Most concurrent tunnels (503 beyond). Default: what the open-files limit allows
    /// (two sockets per tunnel).
    #[arg(long, env = "HYBRIDGE_RELAY_MAX_TUNNELS")]
    max_tunnels: Option<usize>,
    /// Per-IP failure budget (IPv6: per /64): failures per second a client address earns
    /// back; 0 turns the budget off. Tunnels that pair cost nothing, however many one
    /// address opens (phones behind carrier-grade NAT share one). A connection that ends
    /// badly costs one token: no complete request within --header-timeout, a request that
    /// is not HTTP, a refusal (400, 403, 404, 405, 409), a phone that no laptop came for.
    /// An address with no token left gets 429 until it earns one back; failures of
    /// connections that were open together are all paid back first.
    #[arg(long, env = "HYBRIDGE_RELAY_RATE_PER_IP", default_value_t = 20.0)]
    rate_per_ip: f64,
    /// Behind a proxy: take the client's address for the per-IP limits from this request
    /// header (X-Forwarded-For: rightmost entry; or X-Real-IP). Only with a proxy that
    /// always sets it.
    #[arg(long, env = "HYBRIDGE_RELAY_CLIENT_IP_HEADER")]
    client_ip_header: Option<String>,
    /// The relay's host as phones and laptops reach it (cable.example.org, or host:port).
    /// When set, /cable/new, /cable/connect and /cable/contact answer 403 unless the
    /// request's Origin header is scheme://HOST (any scheme; the Origin's port may be left
    /// out of HOST, but a port in HOST must match). Unset: Origin is not checked.
    #[arg(long, env = "HYBRIDGE_RELAY_ORIGIN", value_name = "HOST")]
    origin: Option<OriginHost>,
    /// Size of the per-IP failure budget: failures a client address may have in a burst.
    #[arg(long, env = "HYBRIDGE_RELAY_RATE_BURST", default_value_t = 100)]
    rate_burst: u32,
    /// Most connections one client IP may hold that are not part of a paired tunnel:
    /// requests being read and phones waiting for their laptop (429 beyond; 0 for no
    /// limit). It bounds what one address can hold before its failures are counted.
    /// A pairing in progress needs two; the default leaves room for carrier-grade NAT.
    #[arg(
        long,
        env = "HYBRIDGE_RELAY_MAX_UNPAIRED_PER_IP",
        default_value_t = 1000
    )]
    max_unpaired_per_ip: usize,
    /// Bytes queued per direction before the relay stops reading the sender.
    #[arg(long, env = "HYBRIDGE_RELAY_QUEUE_BYTES", default_value_t = 64 * 1024)]
    queue_bytes: usize,
    /// How long a laptop on /cable/contact waits for the woken phone to join (1008 after).
    #[arg(long, env = "HYBRIDGE_RELAY_CONTACT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    contact_timeout: Duration,
    /// How often subscribed phones are pinged; a phone silent for two intervals is dropped.
    #[arg(long, env = "HYBRIDGE_RELAY_SUBSCRIPTION_PING", default_value = "30s", value_parser = parse_duration)]
    subscription_ping: Duration,
    /// Most wake-up subscriptions (/cable/subscribe) at once (503 beyond).
    #[arg(
        long,
        env = "HYBRIDGE_RELAY_MAX_SUBSCRIPTIONS",
        default_value_t = 10_000
    )]
    max_subscriptions: usize,
    /// Most wake-up subscriptions one client IP (IPv6: /64) may hold (429 beyond; 0 for no
    /// limit).
    #[arg(
        long,
        env = "HYBRIDGE_RELAY_MAX_SUBSCRIPTIONS_PER_IP",
        default_value_t = 1000
    )]
    max_subscriptions_per_ip: usize,
    /// On SIGTERM, how long paired tunnels may finish before they are closed with 1001.
    #[arg(long, env = "HYBRIDGE_RELAY_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// Log filter (tracing env-filter syntax): info, debug, hybridge_relay=debug, ...
    #[arg(long, env = "HYBRIDGE_RELAY_LOG", default_value = "info")]
    log: String,
    /// Log format.
    #[arg(long, env = "HYBRIDGE_RELAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Runtime threads. 1 (the default) runs everything on one thread: the relay's work is
    /// almost all in the kernel, one thread serves thousands of pairings per second, and
    /// memory freed when tunnels close goes back to the OS promptly (with several threads,
    /// blocks freed on another thread than the one that allocated them linger). Raise it
    /// on a large host under heavy load.
    #[arg(long, env = "HYBRIDGE_RELAY_WORKER_THREADS", default_value_t = 1)]
    worker_threads: usize,
    /// Keep polling for I/O this long after the last activity before sleeping (e.g. 50us;
    /// 0 = off, the default). Cuts relay latency on hosts where waking a sleeping thread
    /// is slow (VMs), at the price of up to this much CPU after each burst of traffic.
    #[arg(long, env = "HYBRIDGE_RELAY_BUSY_POLL", default_value = "0", value_parser = parse_duration)]
    busy_poll: Duration,
}

/// Returns free heap memory to the OS. glibc's `free` only gives back the top of the heap,
/// so after thousands of tunnels close most of their memory would otherwise stay
/// resident (ready for reuse, but counted against the process).
#[allow(unsafe_code)]
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only releases memory that is already free;
    // glibc allows calling it at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(s.to_owned())
    } else {
        Err("use 1-32 letters, digits, '_' or '-'".into())
    }
}

fn parse_routing_id(s: &str) -> Result<RoutingId, String> {
    RoutingId::from_hex(s).map_err(|e| e.to_string())
}

fn parse_peer_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(500) {
        return Err("at least 500ms: shorter would take a busy peer for a dead one".into());
    }
    Ok(d)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 0.000_001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 50us, 500ms, 30s, 5m)"))?;
    if !(0.0..=1e9).contains(&v) {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The NATS client's trace shows its CONNECT message, password and token included.
    if let Err(e) = init_log(&cli.log, cli.log_format == "json", &["async_nats"]) {
        eprintln!("hybridge-relay: {e}");
        return ExitCode::from(2);
    }
    let mut rt = if cli.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.worker_threads);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let (soft, hard) = raise_nofile();
    let capacity = tunnel_capacity(soft);
    tracing::info!(
        nofile_soft = soft,
        nofile_hard = hard,
        tunnel_capacity = capacity,
        "open-files limit"
    );
    let max_tunnels = cli.max_tunnels.unwrap_or(capacity.min(1 << 20) as usize);
    if (max_tunnels as u64) > capacity {
        tracing::warn!(
            max_tunnels,
            tunnel_capacity = capacity,
            "--max-tunnels exceeds what the open-files limit allows; raise `ulimit -n`"
        );
    }
    let config = Config {
        busy_poll: cli.busy_poll,
        client_ip_header: cli.client_ip_header,
        origin: cli.origin,
        listen: cli.listen,
        metrics_listen: cli.metrics_listen,
        routing_id: cli.routing_id.unwrap_or_else(|| RoutingId(rand::random())),
        tls: cli
            .tls_cert
            .zip(cli.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        limits: Limits {
            pairing_timeout: cli.pairing_timeout,
            tunnel_ttl: cli.tunnel_ttl,
            first_message_timeout: cli.first_message_timeout,
            header_timeout: cli.header_timeout,
            max_header_bytes: cli.max_header_bytes.max(256),
            close_timeout: cli.close_timeout,
            max_message_size: cli.max_message_size,
            max_messages: cli.max_messages,
            max_tunnels,
            rate_per_ip: cli.rate_per_ip,
            rate_burst: cli.rate_burst,
            max_unpaired_per_ip: cli.max_unpaired_per_ip,
            queue_bytes: cli.queue_bytes.max(1024),
            contact_timeout: cli.contact_timeout,
            subscription_ping_interval: cli.subscription_ping.max(Duration::from_millis(100)),
            max_subscriptions: cli.max_subscriptions,
            max_subscriptions_per_ip: cli.max_subscriptions_per_ip,
        },
        cluster: cli.nats.map(|url| {
            // A claim matters while its phone waits; the bucket reaps claims of an instance
            // that died, a little after the longest wait.
            let wait = cli.pairing_timeout.min(cli.tunnel_ttl);
            ClusterConfig {
                prefix: cli.nats_prefix.clone(),
                tls_ca: cli.nats_ca.clone(),
                tls_client: cli.nats_cert.clone().zip(cli.nats_key.clone()),
                peer_timeout: cli.nats_peer_timeout,
                ..ClusterConfig::new(url, wait + Duration::from_secs(5))
            }
        }),
    };
    let tls = config.tls.is_some();
    let cluster = config.cluster.is_some();
    let relay = match Relay::bind(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(1);
        }
    };
    let metrics = relay
        .metrics_addr()
        .map(|a| format!("\"{a}\""))
        .unwrap_or_else(|| "null".into());
    println!(
        "{{\"listen\":\"{}\",\"metrics\":{metrics},\"routing_id\":\"{}\",\"tls\":{tls},\"cluster\":{cluster},\"pid\":{}}}",
        relay.local_addr(),
        relay.routing_id(),
        std::process::id()
    );
    tracing::info!(listen = %relay.local_addr(), routing_id = %relay.routing_id(), tls, cluster, "relay started");

    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::error!("cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    // After a burst of tunnels closes, hand the freed heap back to the OS.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut high_water = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = relay.tunnels();
                high_water = high_water.max(now);
                if high_water >= now + 256 || (now == 0 && high_water > 0) {
                    trim_heap();
                    high_water = now;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match relay.reload_tls() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the old certificate"),
            },
        }
    }
    tracing::info!(
        grace_ms = cli.shutdown_grace.as_millis() as u64,
        tunnels = relay.tunnels(),
        "shutting down"
    );
    // A second signal during the drain means "now": close every tunnel (1001) and exit.
    let handle = relay.handle();
    let forced = tokio::select! {
        _ = handle.shutdown(cli.shutdown_grace) => false,
        _ = term.recv() => true,
        _ = int.recv() => true,
    };
    if forced {
        tracing::info!(
            tunnels = relay.tunnels(),
            "second signal: closing every tunnel now"
        );
        // A third one does not wait for the peers to see their close frames.
        tokio::select! {
            _ = handle.close_now() => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    drop(relay);
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

//! Cluster mode with a real `nats-server` and three `hybridge-relay` processes on
//! loopback. Each test starts its own NATS (free port, temporary JetStream store, killed on
//! drop) and its own relays. Without `nats-server` on the PATH the tests are skipped with a
//! message (CI installs it: `apt-get install nats-server`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

mod common;
use common::client::{self, Client, Frame, Refused};

const T: Duration = Duration::from_secs(10);

// ---- nats-server ---------------------------------------------------------------------

/// Returns from the test when `nats-server` is missing: a failure under CI, and listed at the
/// end of the run elsewhere.
macro_rules! require_nats {
    () => {
        if !hybridge_testkit::have_command("nats-server", &["--version"]) {
            hybridge_testkit::missing(
                &hybridge_testkit::this_test(),
                "nats-server",
                "apt-get install nats-server",
            );
            return;
        }
    };
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// A nats-server configuration file to run with instead of flags.
    config: Option<PathBuf>,
    /// The URL relays use (credentials and scheme included).
    url: String,
}

impl Nats {
    async fn start() -> Nats {
        let dir = std::env::temp_dir().join(format!(
            "hybridge-nats-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp store dir");
        let port = free_port();
        let mut n = Nats {
            child: None,
            port,
            dir,
            config: None,
            url: format!("nats://127.0.0.1:{port}"),
        };
        n.run().await;
        n
    }

    /// NATS behind TLS (a self-signed certificate for 127.0.0.1) and a user/password login.
    /// Returns the server and the CA file relays must trust.
    async fn start_tls(user: &str, password: &str) -> (Nats, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "hybridge-nats-tls-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(dir.join("js")).expect("temp dir");
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
        let (cert, key) = (dir.join("nats.pem"), dir.join("nats.key"));
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        let port = free_port();
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{js}\" }}\n\
                 tls {{ cert_file: \"{cert}\", key_file: \"{key}\" }}\n\
                 authorization {{ user: \"{user}\", password: \"{password}\" }}\n",
                js = dir.join("js").display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("write config");
        let mut n = Nats {
            child: None,
            port,
            dir,
            config: Some(config),
            url: format!("tls://{user}:{password}@127.0.0.1:{port}"),
        };
        n.run().await;
        (n, cert)
    }

    async fn run(&mut self) {
        let mut cmd = Command::new("nats-server");
        match &self.config {
            Some(c) => cmd.arg("-c").arg(c),
            None => cmd
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&self.dir),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + T;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- relays ----------------------------------------------------------------------------

type Relay = common::relay::RelayChild;

async fn relay(nats: &Nats, routing: &str, extra: &[&str]) -> Relay {
    let r = spawn_relay(nats, routing, extra).await;
    r.wait_cluster(true).await;
    r
}

/// Starts a relay without waiting for its cluster link.
async fn spawn_relay(nats: &Nats, routing: &str, extra: &[&str]) -> Relay {
    let url = nats.url();
    let mut args = vec![
        "--rate-per-ip",
        "0",
        "--routing-id",
        routing,
        "--nats",
        &url,
    ];
    args.extend_from_slice(extra);
    common::relay::start_relay(&args).await
}

impl Relay {
    /// Status code and body of a GET on the tunnel port.
    async fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        let _ = timeout(T, s.read_to_string(&mut out)).await;
        let code = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, out)
    }

    async fn wait_cluster(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.get("/readyz/cluster").await.0 == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "relay {} cluster readiness never became {want}",
                self.routing
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

async fn cluster3(nats: &Nats) -> (Relay, Relay, Relay) {
    cluster3_with(nats, &[]).await
}

async fn cluster3_with(nats: &Nats, extra: &[&str]) -> (Relay, Relay, Relay) {
    tokio::join!(
        relay(nats, "a00001", extra),
        relay(nats, "B00002", extra),
        relay(nats, "c00003", extra)
    )
}

fn new_id() -> String {
    let id: [u8; 16] = rand::random();
    id.iter().map(|b| format!("{b:02X}")).collect()
}

async fn phone(on: &Relay, id: &str) -> std::io::Result<(Client, String)> {
    let (c, routing) = client::connect(on.addr, &format!("/cable/new/{id}"), None).await?;
    Ok((c, routing.expect("X-caBLE-Routing-ID")))
}

async fn laptop(on: &Relay, routing: &str, id: &str) -> std::io::Result<Client> {
    let path = format!("/cable/connect/{routing}/{id}");
    Ok(client::connect(on.addr, &path, None).await?.0)
}

fn refused(e: &std::io::Error) -> Option<u16> {
    e.get_ref()?.downcast_ref::<Refused>().map(|r| r.0)
}

async fn recv_bytes(c: &mut Client) -> Vec<u8> {
    match timeout(T, c.recv())
        .await
        .expect("frame in time")
        .expect("recv")
    {
        Frame::Binary(p) => p.to_vec(),
        f => panic!("expected a binary message, got {f:?}"),
    }
}

async fn recv_close(c: &mut Client, within: Duration) -> Option<u16> {
    match timeout(within, c.recv()).await {
        Ok(Ok(Frame::Close(code))) => code,
        Ok(Ok(f)) => panic!("expected a close, got {f:?}"),
        Ok(Err(e)) => panic!("expected a close frame, the stream ended: {e}"),
        Err(_) => panic!("no close within {within:?}"),
    }
}

/// One message each way through a paired tunnel.
async fn exchange(p: &mut Client, l: &mut Client, tag: &[u8]) {
    l.send(tag).await.expect("laptop send");
    assert_eq!(recv_bytes(p).await, tag);
    p.send(tag).await.expect("phone send");
    assert_eq!(recv_bytes(l).await, tag);
}

/// A phone on `a` and its laptop on `b`, with one message each way.
async fn pair(a: &Relay, b: &Relay) -> (Client, Client) {
    let id = new_id();
    let (mut p, routing) = phone(a, &id).await.expect("phone");
    let mut l = laptop(b, &routing, &id).await.expect("laptop");
    exchange(&mut p, &mut l, b"hello").await;
    (p, l)
}

// ---- tests -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_on_a_laptop_on_c_pair_and_relay_both_ways() {
    require_nats!();
    let nats = Nats::start().await;
    let (a, _b, c) = cluster3(&nats).await;

    let id = new_id();
    let (mut p, routing) = phone(&a, &id).await.expect("phone on A");
    assert_eq!(routing.to_ascii_lowercase(), "a00001");
    // Sent before the laptop joins: buffered on A, delivered first.
    p.send(b"early from the phone").await.expect("send");
    // Upper-case routing ID, on instance C.
    let mut l = laptop(&c, &routing.to_ascii_uppercase(), &id)
        .await
        .expect("laptop on C");
    assert_eq!(recv_bytes(&mut l).await, b"early from the phone");
    for i in 0..20u8 {
        exchange(&mut p, &mut l, &[i; 33]).await;
    }
    // Large messages both ways: more than the bridge's credit window in total.
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    for _ in 0..3 {
        l.send(&big).await.expect("send big");
        assert_eq!(recv_bytes(&mut p).await, big);
        p.send(&big).await.expect("send big");
        assert_eq!(recv_bytes(&mut l).await, big);
    }
    // A clean close on one side reaches the other across instances.
    l.close(1000).await.expect("close");
    assert_eq!(recv_close(&mut p, T).await, Some(1000));
    assert_eq!(a.metric("hybridge_relay_pairings_total").await, Some(1.0));
    assert_eq!(
        c.metric("hybridge_relay_cluster_connects_forwarded_total")
            .await,
        Some(1.0)
    );
    // Both ends of the bridge are gone once the tunnel is (no leaked tasks).
    for r in [&a, &c] {
        let deadline = Instant::now() + T;
        while r.metric("hybridge_relay_cluster_bridges_active").await != Some(0.0) {
            assert!(
                Instant::now() < deadline,
                "bridge still active on {}",
                r.routing
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    // An unknown tunnel named on C with A's routing ID: 404 from the cluster.
    let e = laptop(&c, &routing, &new_id())
        .await
        .err()
        .expect("refused");
    assert_eq!(refused(&e), Some(404));
    // A routing ID that no instance owns: 404 too.
    let e = laptop(&c, "ddd444", &new_id())
        .await
        .err()
        .expect("refused");
    assert_eq!(refused(&e), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_id_waiting_on_a_is_409_on_b() {
    require_nats!();
    let nats = Nats::start().await;
    let (a, b, c) = cluster3(&nats).await;

    let id = new_id();
    let (mut p, _) = phone(&a, &id).await.expect("phone on A");
    for other in [&b, &c, &a] {
        let e = phone(other, &id).await.err().expect("duplicate refused");
        assert_eq!(
            refused(&e),
            Some(409),
            "duplicate /new on {}",
            other.routing
        );
    }
    // Lower-case hex names the same tunnel ID.
    let e = phone(&b, &id.to_ascii_lowercase())
        .await
        .err()
        .expect("refused");
    assert_eq!(refused(&e), Some(409));

    // Once the phone leaves, the ID is free everywhere again.
    p.close(1000).await.expect("close");
    let deadline = Instant::now() + T;
    loop {
        match phone(&b, &id).await {
            Ok(_) => break,
            Err(e) if refused(&e) == Some(409) && Instant::now() < deadline => {
                sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the ID stayed claimed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_b_leaves_tunnels_on_a_and_c_intact() {
    require_nats!();
    let nats = Nats::start().await;
    // A 2 s peer timeout (default 5 s): B's death is noticed well before the default
    // would notice it; heartbeats (every 400 ms) keep A and C alive even on a busy machine.
    let (a, mut b, c) = cluster3_with(&nats, &["--nats-peer-timeout", "2s"]).await;

    let (mut p_aa, mut l_aa) = pair(&a, &a).await;
    let (mut p_cc, mut l_cc) = pair(&c, &c).await;
    let (mut p_ac, mut l_ac) = pair(&a, &c).await;
    let (mut p_ca, mut l_ca) = pair(&c, &a).await;
    // One that crosses B: phone on B, laptop on A.
    let (_p_ba, mut l_ba) = pair(&b, &a).await;

    b.child.start_kill().expect("SIGKILL B");
    let _ = b.child.wait().await;
    // The tunnel through B fails with the cluster close code once B's heartbeats are
    // missed (2 s here; the bridge checks every 500 ms).
    assert_eq!(
        recv_close(&mut l_ba, Duration::from_millis(4500)).await,
        Some(1011)
    );

    // Past the peer timeout, everything that did not touch B still works.
    sleep(Duration::from_millis(500)).await;
    exchange(&mut p_aa, &mut l_aa, b"local on A").await;
    exchange(&mut p_cc, &mut l_cc, b"local on C").await;
    exchange(&mut p_ac, &mut l_ac, b"A to C").await;
    exchange(&mut p_ca, &mut l_ca, b"C to A").await;
    // And new cross-instance pairings work.
    let (mut p, mut l) = pair(&c, &a).await;
    exchange(&mut p, &mut l, b"new after B died").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nats_fails_only_cross_instance_tunnels_and_pairing_recovers() {
    require_nats!();
    let mut nats = Nats::start().await;
    let (a, _b, c) = cluster3(&nats).await;

    let (mut p_local, mut l_local) = pair(&a, &a).await;
    let (mut p_cross, mut l_cross) = pair(&a, &c).await;

    nats.stop().await;
    // The bridged tunnel ends on both sides with the cluster close code.
    assert_eq!(recv_close(&mut l_cross, T).await, Some(1011));
    assert_eq!(recv_close(&mut p_cross, T).await, Some(1011));
    a.wait_cluster(false).await;
    c.wait_cluster(false).await;
    assert_eq!(a.get("/readyz").await.0, 200, "local work stays ready");
    assert_eq!(a.metric("hybridge_relay_cluster_ready").await, Some(0.0));

    // Local tunnels, old and new, carry on.
    exchange(&mut p_local, &mut l_local, b"still here").await;
    let (mut p, mut l) = pair(&c, &c).await;
    exchange(&mut p, &mut l, b"new local during the outage").await;
    // A cross-instance /connect is refused while the link is down.
    let id = new_id();
    let (_p, routing) = phone(&a, &id).await.expect("phone on A");
    let e = laptop(&c, &routing, &id).await.err().expect("refused");
    assert_eq!(refused(&e), Some(503));

    // NATS returns (same port, fresh store): the relays reconnect by themselves.
    nats.run().await;
    a.wait_cluster(true).await;
    c.wait_cluster(true).await;
    let (mut p, mut l) = pair(&a, &c).await;
    exchange(&mut p, &mut l, b"cross-instance again").await;
    // Cluster-wide claims are back too.
    let id = new_id();
    let (_p, _) = phone(&c, &id).await.expect("phone on C");
    let e = phone(&a, &id).await.err().expect("duplicate");
    assert_eq!(refused(&e), Some(409));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_starts_before_nats_and_joins_when_it_appears() {
    require_nats!();
    let mut nats = Nats::start().await;
    nats.stop().await;
    // NATS is down: the relays start anyway and serve local tunnels.
    let a = spawn_relay(&nats, "a00001", &[]).await;
    let c = spawn_relay(&nats, "c00003", &[]).await;
    assert_eq!(a.get("/readyz").await.0, 200);
    assert_eq!(a.get("/readyz/cluster").await.0, 503);
    let (mut p, mut l) = pair(&a, &a).await;
    exchange(&mut p, &mut l, b"local before NATS").await;
    nats.run().await;
    a.wait_cluster(true).await;
    c.wait_cluster(true).await;
    let (mut p, mut l) = pair(&a, &c).await;
    exchange(&mut p, &mut l, b"bridged once NATS is up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_flag_there_is_no_cluster() {
    let r = common::relay::start_relay(&[]).await;
    assert_eq!(r.startup["cluster"], serde_json::Value::Bool(false));
    assert_eq!(r.get("/readyz/cluster").await.0, 404);
    let (_, body) = r.get("/metrics").await;
    assert!(
        !body.contains("hybridge_relay_cluster_"),
        "no cluster metrics alone"
    );
    // Another instance's routing ID is simply unknown here.
    let id = new_id();
    let (_p, _) = phone(&r, &id).await.expect("phone");
    let e = laptop(&r, "ddd444", &id).await.err().expect("refused");
    assert_eq!(refused(&e), Some(404));
}

/// `relay-load` with the phone on one instance and the laptop on another, and on one
/// instance for comparison. Prints the figures; asserts only that every pairing worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_across_instances() {
    require_nats!();
    let nats = Nats::start().await;
    let extra = ["--max-messages", "0"];
    let (a, c) = tokio::join!(
        relay(&nats, "a00001", &extra),
        relay(&nats, "c00003", &extra)
    );
    let load = |args: Vec<String>| async move {
        let out = Command::new(env!("CARGO_BIN_EXE_relay-load"))
            .args(&args)
            .output()
            .await
            .expect("run relay-load");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "relay-load {args:?} failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let url = |r: &Relay| format!("ws://{}", r.addr);
    let cross = load(vec![
        "pairing".into(),
        "--url".into(),
        url(&a),
        "--connect-url".into(),
        url(&c),
        "--workers".into(),
        "8".into(),
        "--count".into(),
        "200".into(),
    ])
    .await;
    println!("cross-instance pairing:\n{cross}");
    assert!(cross.contains("200 ok, 0 errors"), "{cross}");
    let lat = load(vec![
        "latency".into(),
        "--url".into(),
        url(&a),
        "--connect-url".into(),
        url(&c),
        "--in-flight".into(),
        "1".into(),
        "--seconds".into(),
        "1".into(),
    ])
    .await;
    println!("cross-instance latency:\n{lat}");
    let _ = (a.pid, c.pid);
}

/// NATS over TLS with a password (`--nats tls://user:pass@host --nats-ca ca.pem`): the
/// cluster works, a wrong password or an untrusted certificate keeps it down, and the
/// password never appears in the relay's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_a_password() {
    require_nats!();
    let (nats, ca) = Nats::start_tls("relay", "s3cret-pw").await;
    let ca = ca.to_str().expect("utf-8 path");
    let trust = ["--nats-ca", ca];
    let (a, c) = tokio::join!(
        relay(&nats, "a00001", &trust),
        relay(&nats, "c00003", &trust)
    );
    let (mut p, mut l) = pair(&a, &c).await;
    exchange(&mut p, &mut l, b"over TLS").await;

    // A wrong password, and a relay that does not trust the server's certificate: neither
    // joins. Their output is captured to check that no password leaks into it.
    let wrong = format!("tls://relay:wrong-pw@127.0.0.1:{}", nats.port);
    let mut outsiders = Vec::new();
    for (url, extra) in [
        (wrong.as_str(), vec!["--nats-ca", ca]),
        (nats.url.as_str(), vec![]),
    ] {
        // The NATS client's own trace would show its CONNECT message, password included:
        // asked for here, it must stay capped.
        let mut args = vec!["--nats", url, "--log", "debug,async_nats::connection=trace"];
        args.extend_from_slice(&extra);
        outsiders.push(common::relay::start_relay_piped(&args).await);
    }
    sleep(Duration::from_secs(3)).await;
    for mut r in outsiders {
        let mut s = TcpStream::connect(r.addr).await.expect("connect");
        s.write_all(b"GET /readyz/cluster HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        let _ = timeout(T, s.read_to_string(&mut out)).await;
        assert!(
            out.starts_with("HTTP/1.1 503"),
            "joined without the right credentials: {out}"
        );
        let _ = r.child.start_kill();
        let mut err = String::new();
        let mut stderr = r.child.stderr.take().expect("stderr");
        let _ = timeout(T, stderr.read_to_string(&mut err)).await;
        assert!(
            !err.contains("wrong-pw") && !err.contains("s3cret-pw"),
            "a password leaked into the log:\n{err}"
        );
    }
}

#[tokio::test]
async fn a_laptop_on_one_instance_wakes_a_phone_subscribed_on_another() {
    require_nats!();
    use common::wake::*;
    use hybridge_proto::contact::ContactId;
    use hybridge_proto::qr::RequestType;
    let nats = Nats::start().await;
    let (a, b) = tokio::join!(relay(&nats, "a00001", &[]), relay(&nats, "B00002", &[]));
    let key = wake_key();
    let (mut sub, id) = subscribe(b.addr, &key).await;

    // The laptop contacts A; B holds the phone's subscription.
    let p = payload(RequestType::GetAssertion);
    let (mut laptop, _) = contact(a.addr, &id, &p, true)
        .await
        .expect("contact through the cluster");
    let wake = next_wake(&mut sub).await;
    assert_eq!(wake.routing_id.to_hex(), a.routing.to_ascii_uppercase());
    assert_eq!(wake.client_payload, p.to_bytes());
    // The phone joins through its own relay with A's routing ID: bridged to A.
    let mut phone = join(b.addr, &wake).await;
    assert_eq!(next_binary(&mut laptop).await, [0x00], "the connect signal");
    exchange(&mut laptop, &mut phone, b"noise message 1").await;
    exchange(&mut laptop, &mut phone, &[7; 20_000]).await;
    assert_eq!(
        b.metric("hybridge_relay_cluster_wakes_forwarded_total")
            .await,
        Some(0.0),
        "counted where the wake-up was asked for"
    );
    assert_eq!(
        a.metric("hybridge_relay_cluster_wakes_forwarded_total")
            .await,
        Some(1.0)
    );
    assert_eq!(
        a.metric("hybridge_relay_wakes_total{result=\"remote\"}")
            .await,
        Some(1.0)
    );

    // No instance holds a phone for this ID: 410 from either, at once (no responders).
    let unknown = ContactId::of(&wake_key().public_key());
    let started = Instant::now();
    assert_eq!(contact(a.addr, &unknown, &p, false).await.err(), Some(410));
    assert!(started.elapsed() < Duration::from_secs(2));

    // The phone subscribes again on A: its subscription on B is closed, and B now sends
    // its wake-ups to A.
    let (mut sub_a, _) = subscribe(a.addr, &key).await;
    let (code, _) = close_of(&mut sub, T).await;
    assert_eq!(code, 4001, "the older subscription on B is replaced");
    sleep(Duration::from_millis(200)).await;
    let (_laptop_b, _) = contact(b.addr, &id, &p, false).await.expect("contact on B");
    let wake = next_wake(&mut sub_a).await;
    assert_eq!(wake.routing_id.to_hex(), b.routing.to_ascii_uppercase());
}

#[tokio::test]
async fn a_phone_subscribed_while_nats_was_down_is_reachable_once_it_is_up() {
    require_nats!();
    use common::wake::*;
    use hybridge_proto::qr::RequestType;
    let mut nats = Nats::start().await;
    nats.stop().await;
    let a = spawn_relay(&nats, "a00001", &[]).await;
    let b = spawn_relay(&nats, "B00002", &[]).await;
    // Subscribed on B while B has no cluster link: a contact on A cannot be answered (503,
    // not 410, which would make a Chromium laptop forget the phone).
    let (mut sub, id) = subscribe(b.addr, &wake_key()).await;
    let p = payload(RequestType::MakeCredential);
    assert_eq!(contact(a.addr, &id, &p, false).await.err(), Some(503));
    // The phone is reachable on B itself meanwhile.
    let (_local, _) = contact(b.addr, &id, &p, false)
        .await
        .expect("local contact");
    let _ = next_wake(&mut sub).await;
    nats.run().await;
    a.wait_cluster(true).await;
    b.wait_cluster(true).await;
    // B's subscription now listens on NATS too, without the phone doing anything.
    let deadline = Instant::now() + T;
    let mut laptop = loop {
        match contact(a.addr, &id, &p, true).await {
            Ok((l, _)) => break l,
            Err(410) if Instant::now() < deadline => sleep(Duration::from_millis(200)).await,
            Err(s) => panic!("contact through the cluster: {s}"),
        }
    };
    let wake = next_wake(&mut sub).await;
    let mut phone = join(b.addr, &wake).await;
    assert_eq!(next_binary(&mut laptop).await, [0x00]);
    exchange(&mut laptop, &mut phone, b"after NATS came up").await;
}

//! The `hybridge-relay` binary as a child process of a test: started on an ephemeral
//! loopback port, known by the JSON line it prints once it listens, killed on drop.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::{ChildLog, relay_log_filter};

/// How long a relay may take to print its startup line (a loaded two-core machine).
const STARTUP: Duration = Duration::from_secs(10);

/// A running relay.
pub struct RelayChild {
    /// The process (its stderr is `Some` only when started with [`start_relay_piped`]).
    pub child: Child,
    /// Where it listens for tunnels.
    pub addr: SocketAddr,
    /// Where it serves /metrics, when started with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    /// Its routing ID, as it printed it.
    pub routing: String,
    /// Its process ID.
    pub pid: u32,
    /// The whole startup line.
    pub startup: serde_json::Value,
    /// Its stderr, shown only if the test fails (`None`: the test reads it itself).
    pub log: Option<ChildLog>,
}

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts the relay binary on `127.0.0.1:0` with `args` (at [`relay_log_filter`]'s level
/// unless `args` has `--log`); its log is shown only if the test fails. Only `args`
/// configure it: the `HYBRIDGE_RELAY_*` variables of the environment the tests run in are
/// removed, so a developer's `HYBRIDGE_RELAY_NATS` cannot turn a test's relay into a
/// cluster member.
pub async fn start_relay(args: &[&str]) -> RelayChild {
    let (log, stderr) = ChildLog::new(&format!("hybridge-relay {args:?}"));
    start(args, stderr, Some(log)).await
}

/// [`start_relay`], with the relay's stderr a pipe the test reads itself.
pub async fn start_relay_piped(args: &[&str]) -> RelayChild {
    start(args, Stdio::piped(), None).await
}

async fn start(args: &[&str], stderr: Stdio, log: Option<ChildLog>) -> RelayChild {
    let filter = relay_log_filter();
    let log_args: &[&str] = if args.contains(&"--log") {
        &[]
    } else {
        &["--log", &filter]
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hybridge-relay"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HYBRIDGE_RELAY_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0"])
        .args(log_args)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start hybridge-relay");
    let stdout = child.stdout.take().expect("stdout");
    let line = timeout(STARTUP, BufReader::new(stdout).lines().next_line())
        .await
        .expect("startup line in time")
        .expect("read")
        .expect("a line");
    let startup: serde_json::Value = serde_json::from_str(&line).expect("startup JSON");
    RelayChild {
        addr: startup["listen"]
            .as_str()
            .expect("listen")
            .parse()
            .expect("addr"),
        metrics: startup["metrics"]
            .as_str()
            .map(|s| s.parse().expect("metrics addr")),
        routing: startup["routing_id"].as_str().expect("routing").to_owned(),
        pid: child.id().expect("pid"),
        child,
        startup,
        log,
    }
}

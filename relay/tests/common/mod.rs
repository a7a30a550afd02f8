//! What the integration tests share: the load tool's client ([`client`]), the relay binary as
//! a child process ([`relay`]), and that process's log, kept out of the test output unless the
//! test fails.
//!
//! A relay started by a test writes its log (stderr) to a file of its own. When the test
//! fails (the handle is dropped while the thread panics), the file is printed, so the
//! failure report shows what the relay said; a passing test prints nothing.
//! `HYBRIDGE_RELAY_TEST_LOG=debug` (any `--log` filter) raises the level of those logs and
//! prints them for passing tests too (seen with `cargo test -- --nocapture`).

/// The load tool's WebSocket client, which these tests drive the relay with too: the relay
/// library does not export it. Each test binary uses a part of it.
#[allow(dead_code)]
#[path = "../../src/bin/relay-load/client.rs"]
pub mod client;

/// Wake-up subscriptions and `/cable/contact`, spoken with tokio-tungstenite.
#[allow(dead_code)]
pub mod wake;

/// The relay binary as a child process of a test.
#[allow(dead_code)]
pub mod relay;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `--log` filter for relays whose test does not choose one.
pub fn relay_log_filter() -> String {
    std::env::var("HYBRIDGE_RELAY_TEST_LOG").unwrap_or_else(|_| "info".into())
}

/// A child process's stderr, captured in a temporary file.
pub struct ChildLog {
    name: String,
    path: PathBuf,
}

impl ChildLog {
    /// A fresh log file for the child called `name`, and the `Stdio` to give its stderr.
    pub fn new(name: &str) -> (ChildLog, Stdio) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "hybridge-relay-test-{}-{}.log",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).expect("create a child's log file");
        let log = ChildLog {
            name: name.to_owned(),
            path,
        };
        (log, Stdio::from(file))
    }

    /// What the child wrote so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.path).unwrap_or_default()).into_owned()
    }
}

impl Drop for ChildLog {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("HYBRIDGE_RELAY_TEST_LOG").is_some() {
            eprintln!("---- log of {} ----\n{}", self.name, self.text());
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

//! What the test suites share.
//!
//! [`missing`] is how a test says that a real component it needs (a server binary, root, a
//! kernel feature) is not on this machine. A test must never pass without running:
//! - under `CI=true` it fails, naming what to install;
//! - elsewhere it returns without running, a line says so at once, and the test binary ends
//!   its run with a list of every test it skipped and what to install, after libtest's own
//!   summary, where a person reading the run sees it.
//!
//! ```ignore
//! if !hybridge_testkit::have_command("nats-server", &["--version"]) {
//!     hybridge_testkit::missing("cluster_claims", "nats-server", "apt-get install nats-server");
//!     return;
//! }
//! ```
#![warn(missing_docs, unreachable_pub)]

use std::io::Write;
use std::sync::{Mutex, Once};

/// One skipped test: its name, what it needed, how to install that.
struct Skip {
    test: String,
    needs: String,
    install: String,
}

static SKIPPED: Mutex<Vec<Skip>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

/// Whether this run is CI (`CI=true`, as CI services set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Records that `test` cannot run because `needs` is missing (`install` says how to get it).
/// Under CI this panics, failing the test; elsewhere the caller returns without running.
#[track_caller]
pub fn missing(test: &str, needs: &str, install: &str) {
    if in_ci() {
        panic!("{test} cannot run: it needs {needs}; install it: {install}");
    }
    // Straight to the process's stderr: libtest captures only the print macros, and this line
    // must show even when the test "passes".
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {test}: needs {needs} ({install})"
    );
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    skipped.push(Skip {
        test: test.to_owned(),
        needs: needs.to_owned(),
        install: install.to_owned(),
    });
    AT_EXIT.call_once(|| {
        // SAFETY: `report` is an `extern "C" fn()` that never unwinds (it only locks a mutex
        // and writes to stderr, ignoring errors); atexit has no other precondition.
        unsafe {
            libc::atexit(report);
        }
    });
}

/// The running test's name (libtest names each test's thread after it).
pub fn this_test() -> String {
    std::thread::current().name().unwrap_or("a test").to_owned()
}

/// Whether `program` runs and exits successfully with `args` (for example `--version`).
pub fn have_command(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs when the test binary exits: the list of skipped tests, after libtest's summary.
extern "C" fn report() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        return;
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\n{} test(s) in {exe} did NOT run (they count as passed above); under CI=true they fail:",
        skipped.len()
    );
    for s in skipped.iter() {
        let _ = writeln!(err, "  {}: needs {} — {}", s.test, s.needs, s.install);
    }
    let _ = writeln!(err);
}

/// Replays every file of the committed fuzz corpus `fuzz/corpus/<target>/` through `run`, the
/// entry point its cargo-fuzz target calls, so a regression shows without cargo-fuzz. An
/// empty or missing corpus fails.
pub fn replay_corpus(target: &str, run: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("readable corpus directory").path();
        if path.is_file() {
            run(&std::fs::read(&path).expect("readable corpus file"));
            n += 1;
        }
    }
    assert!(n > 0, "corpus {} is empty", dir.display());
}

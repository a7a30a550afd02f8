//! The harness behind `tests/e2e.rs`: the real `hybridge` and `hybridge-relay` binaries as
//! child processes, a relying party (webauthn-rs-core) that checks what they print, a
//! bit-flipping proxy, and network namespaces for the two-machine test.
//!
//! The binaries are taken from the target directory this test runs from
//! (`target/<profile>/`), after a `cargo build` of the two binaries so they are never stale.
//! After `cargo test --workspace` that build has nothing to do, as long as it sees the same
//! environment (the variables cargo sets for a running test are removed) and a test build and
//! a plain build of the two binaries resolve the same features: a dependency feature asked
//! for only by a dev-dependency makes each build recompile what the other built (it did, for
//! 37 s a run: `cargo tree -e features` of both tells them apart). `HYBRIDGE_BIN_DIR` points
//! elsewhere (no build then).

pub mod netns;
pub mod proc;
pub mod proxy;
pub mod rp;

use std::path::PathBuf;
use std::sync::OnceLock;

/// The directory with `hybridge` and `hybridge-relay`, built if needed.
pub fn bin_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("HYBRIDGE_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // <target>/<profile>/deps/e2e-HASH
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("deps dir");
        let profile_dir = deps.parent().expect("profile dir").to_path_buf();
        let target = profile_dir.parent().expect("target dir").to_path_buf();
        // The profile this test was built with: its directory's name (`dev` builds to debug).
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(name) => name.to_owned(),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "hybridge-cli",
            "-p",
            "hybridge-relay",
            "--bin",
            "hybridge",
            "--bin",
            "hybridge-relay",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo set for running this test is not part of the build: ring's build script
        // reruns when CARGO_MANIFEST_DIR changes, and would rebuild everything above it.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&key.as_ref())
            {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd.args(["--profile", &profile]);
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(
            status.success(),
            "cargo build of hybridge and hybridge-relay failed"
        );
        profile_dir
    })
}

/// The `hybridge` binary.
pub fn hybridge() -> PathBuf {
    bin_dir().join("hybridge")
}

/// A `hybridge` command that sees none of the developer's own settings: no `HYBRIDGE_*`
/// variable it inherits (the test sets what it needs), and no desktop session bus (so no
/// keyring item or notification of theirs is touched).
pub fn hybridge_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(hybridge());
    hermetic(&mut cmd);
    cmd
}

/// Removes from `cmd` the inherited environment a test must not depend on (see
/// [`hybridge_command`]); what the test set on `cmd` itself stays.
pub fn hermetic(cmd: &mut std::process::Command) {
    let set: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    let inherited = std::env::vars_os().map(|(k, _)| k).filter(|k| {
        k.to_str()
            .is_some_and(|k| k.starts_with("HYBRIDGE_") || k == "DBUS_SESSION_BUS_ADDRESS")
    });
    for k in inherited.collect::<Vec<_>>() {
        if !set.contains(&k) {
            cmd.env_remove(k);
        }
    }
}

/// The `hybridge-relay` binary.
pub fn relay_bin() -> PathBuf {
    bin_dir().join("hybridge-relay")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after `name` and the process.
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hybridge-e2e-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// A path inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free UDP port on 127.0.0.1 (bound and released: good enough for tests).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// A TCP port with nothing listening (bound and released).
pub fn closed_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free TCP port")
}

/// Whether this process runs as root (needed for network namespaces).
pub fn is_root() -> bool {
    hybridge_testkit::is_root()
}

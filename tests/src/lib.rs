//! The harness behind `tests/e2e.rs`: the real `hybridge` and `hybridge-relay` binaries as
//! child processes, a relying party (webauthn-rs-core) that checks what they print, a
//! bit-flipping proxy, and network namespaces for the two-machine test.
//!
//! The binaries are taken from the target directory this test runs from
//! (`target/<profile>/`). They are rebuilt with `cargo build` when a file they were built
//! from (cargo's dep-info, `<bin>.d`) is newer than the binary, or the manifests or lock file
//! are, so they are never stale; otherwise the ones `cargo test --workspace` just built are
//! used as they are. (Building them again anyway is not free: a build of two
//! packages unifies features differently from a workspace build, so each would recompile
//! what the other built.) `HYBRIDGE_BIN_DIR` points elsewhere (no build then).

pub mod netns;
pub mod proc;
pub mod proxy;
pub mod rp;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

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
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        if ["hybridge", "hybridge-relay"]
            .iter()
            .all(|b| up_to_date(&profile_dir, b, workspace))
        {
            return profile_dir;
        }
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
        cmd.args(["--profile", &profile]);
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(
            status.success(),
            "cargo build of hybridge and hybridge-relay failed"
        );
        profile_dir
    })
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Whether `dir/bin` is newer than every file cargo's dep-info says it was built from, and
/// than the workspace's manifests and lock file.
fn up_to_date(dir: &Path, bin: &str, workspace: &Path) -> bool {
    let Some(built) = modified(&dir.join(bin)) else {
        return false;
    };
    let Ok(dep_info) = std::fs::read_to_string(dir.join(format!("{bin}.d"))) else {
        return false;
    };
    let Some((_, sources)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
        return false;
    };
    // Every member's manifest: features and dependency versions live there.
    let members = std::fs::read_dir(workspace.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("Cargo.toml"))
        .filter(|p| p.is_file());
    let manifests = ["Cargo.toml", "Cargo.lock", "relay/Cargo.toml"]
        .map(|f| workspace.join(f))
        .into_iter()
        .chain(members);
    dep_info_paths(sources)
        .chain(manifests)
        .all(|p| modified(&p).is_some_and(|t| t < built))
}

/// The paths of a dep-info line: separated by spaces, with spaces in a path escaped (`\ `).
fn dep_info_paths(line: &str) -> impl Iterator<Item = PathBuf> + '_ {
    let mut paths = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            ' ' => {
                if !cur.is_empty() {
                    paths.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        paths.push(PathBuf::from(cur));
    }
    paths.into_iter()
}

/// The `hybridge` binary.
pub fn hybridge() -> PathBuf {
    bin_dir().join("hybridge")
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
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dep_info_paths_keep_escaped_spaces() {
        let got: Vec<_> = super::dep_info_paths("/a/b.rs /c\\ d/e.rs  /f.rs").collect();
        assert_eq!(
            got,
            ["/a/b.rs", "/c d/e.rs", "/f.rs"].map(std::path::PathBuf::from)
        );
    }
}

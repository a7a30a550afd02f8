//! The open-files limit: every tunnel costs two sockets.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns `(soft, hard)` after the
/// attempt (unchanged when it fails).
pub fn raise_nofile() -> (u64, u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(hard) = lim.maximum
        && lim.current != Some(hard)
    {
        let want = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    (
        lim.current.unwrap_or(u64::MAX),
        lim.maximum.unwrap_or(u64::MAX),
    )
}

/// Tunnels that `nofile` descriptors allow: two sockets each, less a few for listeners,
/// logs and connections still in their HTTP phase.
pub fn tunnel_capacity(nofile: u64) -> u64 {
    nofile.saturating_sub(64) / 2
}

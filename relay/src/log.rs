//! The stderr log of the `hybridge-relay` and `hybridge` binaries: a tracing filter from the
//! command line, text or JSON lines, and a cap on libraries whose verbose output would carry
//! secrets.

use std::io::IsTerminal;

use tracing_subscriber::Layer;
use tracing_subscriber::prelude::*;

/// Installs the log. `filter` is tracing's env-filter syntax (`info`, `debug,async_nats=warn`);
/// `capped` names libraries (targets and their modules) of which nothing below `info` gets
/// through, whatever `filter` says: the cap is a second filter, so no directive of the user's,
/// however specific, can lift it. Fails on a filter that does not parse.
pub fn init(filter: &str, json: bool, capped: &'static [&'static str]) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid --log filter {filter:?}: {e}"))?;
    let cap = tracing_subscriber::filter::filter_fn(move |m| {
        *m.level() <= tracing::Level::INFO || !capped.iter().any(|t| within(m.target(), t))
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let layer = if json {
        layer.json().boxed()
    } else {
        layer.boxed()
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(cap))
        .try_init()
        .map_err(|e| format!("cannot start the log: {e}"))
}

/// Whether `target` is the library `name` or one of its modules.
fn within(target: &str, name: &str) -> bool {
    target
        .strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn targets_within_a_library() {
        assert!(super::within("async_nats", "async_nats"));
        assert!(super::within("async_nats::connection", "async_nats"));
        assert!(!super::within("async_natsx", "async_nats"));
        assert!(!super::within("hybridge_relay", "async_nats"));
    }
}

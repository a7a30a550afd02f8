//! The stderr log of the `hybridge-relay` and `hybridge` binaries: a tracing filter from the
//! command line, text or JSON lines, and a cap on libraries whose verbose output would carry
//! secrets.

use std::io::IsTerminal;

use tracing_subscriber::Layer;
use tracing_subscriber::prelude::*;

use crate::Error;

/// Installs the process's log: tracing events to stderr, as text (colored on a terminal) or
/// as JSON lines. This is the log of the `hybridge-relay` and `hybridge` binaries; a program
/// that embeds the relay and has its own subscriber does not need it.
///
/// `filter` is tracing's env-filter syntax (`info`, `debug,async_nats=warn`); `capped` names
/// libraries (targets and their modules) of which nothing below `info` gets through,
/// whatever `filter` says: the cap is a second filter, so no directive of the user's,
/// however specific, can lift it. Give it the libraries whose debug or trace output carries
/// secrets (the relay caps `async_nats`, whose trace shows the NATS password).
///
/// Fails on a filter that does not parse ([`Error::LogFilter`]) and when a log is already
/// installed ([`Error::LogInit`]).
///
/// ```no_run
/// hybridge_relay::init_log("info", false, &["async_nats"])?;
/// # Ok::<(), hybridge_relay::Error>(())
/// ```
pub fn init_log(filter: &str, json: bool, capped: &'static [&'static str]) -> Result<(), Error> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| Error::LogFilter {
            filter: filter.to_owned(),
            source,
        })?;
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
        .map_err(Error::LogInit)
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

//! Entry points for the cargo-fuzz targets in `fuzz/` (`relay_ws`, `relay_http`) and their
//! corpus replay (the test below): the relay's parsers of untrusted bytes (the frame
//! decoder, the subscription's message reader on top of it, the request head and its
//! routing). Each takes
//! arbitrary bytes, must never panic, and checks an invariant (it panics, so that the fuzzer
//! reports it, only when the relay itself is wrong).
//!
//! Not API: compiled for the crate's own tests and with the `fuzzing` feature, which the
//! fuzz crate turns on.

use crate::http::{self, Parsed};
use crate::wake::{Event, Reader};
use crate::ws::{Decoder, HEADROOM, Tally};

fn decode(input: &[u8], chunk: usize, tally: &mut Tally, dec: &mut Decoder) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        let mut buf = vec![0u8; HEADROOM + piece.len()];
        buf[HEADROOM..].copy_from_slice(piece);
        let end = buf.len();
        let (n, stop) = dec.process(&mut buf, HEADROOM, end, tally);
        out.extend_from_slice(&buf[..n]);
        if stop.is_some() {
            return (out, true);
        }
    }
    (out, false)
}

/// A client byte stream: the first two bytes pick the read size and the limits; the rest is
/// decoded whole and in pieces, which must agree (frames out, stop, tally, pending ping).
pub fn ws_stream(data: &[u8]) {
    let [a, b, rest @ ..] = data else { return };
    let chunk = 1 + *a as usize % 64;
    let limits = || Tally {
        max_message: 16 + 64 * (*b as u64 & 0x1F),
        max_messages: (*b >> 5) as u64,
        ..Default::default()
    };
    let (mut t1, mut d1) = (limits(), Decoder::new());
    let (mut t2, mut d2) = (limits(), Decoder::new());
    let whole = decode(rest, rest.len(), &mut t1, &mut d1);
    let pieces = decode(rest, chunk, &mut t2, &mut d2);
    assert_eq!(whole, pieces, "read size {chunk} changed the output");
    assert_eq!((t1.messages, t1.bytes), (t2.messages, t2.bytes));
    let ping = |d: &Decoder| d.ping.map(|(p, n)| p[..n as usize].to_vec());
    assert_eq!(ping(&d1), ping(&d2));
    // The subscription's reader: the same messages, closes and violations whole and in
    // pieces (pings may be coalesced, as only the latest is kept).
    let max = 16 + 64 * (*b as usize & 0x1F);
    let read = |chunk: usize| {
        let mut r = Reader::new(max);
        let mut events = Vec::new();
        for piece in rest.chunks(chunk.max(1)) {
            r.feed(piece);
            events.extend(r.events.drain(..).filter(|e| !matches!(e, Event::Ping(_))));
        }
        events
    };
    assert_eq!(
        read(rest.len()),
        read(chunk),
        "the reader depends on read sizes"
    );
}

/// A request head: a verdict for any bytes; a complete head of `n` bytes is still complete
/// (with the same length) when cut right after it, and partial one byte earlier.
pub fn http_head(data: &[u8]) {
    if let Parsed::Complete(req, n) =
        http::parse(data, Some("x-forwarded-for"), Some("cable.example.org"))
    {
        // Routing (paths, contact IDs, client payloads, hosts) gives a verdict, never a panic.
        let state = crate::route::State {
            running: true,
            cluster_ready: Some(true),
            metrics_listener: false,
            metrics_on_main: true,
            origin_required: data.len() % 2 == 0,
        };
        let _ = crate::route::operational(&req, state);
        let _ = crate::route::tunnel(&req, state);
        assert!(matches!(
            http::parse(&data[..n], Some("x-forwarded-for"), Some("cable.example.org")),
            Parsed::Complete(_, m) if m == n
        ));
        assert!(matches!(
            http::parse(
                &data[..n - 1],
                Some("x-forwarded-for"),
                Some("cable.example.org")
            ),
            Parsed::Partial
        ));
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Random bytes through both entry points (the corpora hold the deep cases).
        #[test]
        fn entry_points_hold_their_invariants(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            super::ws_stream(&data);
            super::http_head(&data);
        }
    }

    /// Replays the committed fuzz corpora of the relay's parsers (`fuzz/corpus/relay_*`)
    /// through the entry points the cargo-fuzz targets call.
    #[test]
    fn fuzz_corpora_replay() {
        for (target, run) in [
            ("relay_ws", super::ws_stream as fn(&[u8])),
            ("relay_http", super::http_head),
        ] {
            hybridge_testkit::replay_corpus(target, run);
        }
    }
}

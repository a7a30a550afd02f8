//! Replays the committed corpora `fuzz/corpus/{ctaphid,uhid_event}/*` through the entry points
//! the cargo-fuzz targets call, so CI catches regressions without cargo-fuzz.

use hybridge_testkit::replay_corpus as replay;

#[test]
fn ctaphid_corpus() {
    replay("ctaphid", hybridge_key::fuzz::ctaphid);
}

#[test]
fn uhid_event_corpus() {
    replay("uhid_event", hybridge_key::fuzz::uhid_event);
}

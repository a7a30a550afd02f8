//! Replays the committed corpora `fuzz/corpus/{ctaphid,uhid_event}/*` through the entry points
//! the cargo-fuzz targets call, so CI catches regressions without cargo-fuzz.

use std::fs;
use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("readable corpus directory").path();
        if path.is_file() {
            run(&fs::read(&path).expect("readable corpus file"));
            n += 1;
        }
    }
    assert!(n > 0, "corpus {} is empty", dir.display());
}

#[test]
fn ctaphid_corpus() {
    replay("ctaphid", hybridge_key::fuzz::ctaphid);
}

#[test]
fn uhid_event_corpus() {
    replay("uhid_event", hybridge_key::fuzz::uhid_event);
}

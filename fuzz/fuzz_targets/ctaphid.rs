#![no_main]
// Entry point shared with the corpus replay test in crates/key/tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hybridge_key::fuzz::ctaphid(data));

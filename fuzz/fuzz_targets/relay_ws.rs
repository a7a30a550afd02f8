#![no_main]
// Entry point shared with the corpus replay test in relay/tests/relay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hybridge_relay::fuzz::ws_stream(data));

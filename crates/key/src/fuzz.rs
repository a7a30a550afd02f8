//! Entry points for the cargo-fuzz targets in `fuzz/` and the corpus replay test: arbitrary
//! bytes in, never a panic.

use std::time::{Duration, Instant};

use crate::ctaphid::{self, BROADCAST_CID, Engine, Limits, Output, REPORT_SIZE};
use crate::uhid;

/// The CTAPHID engine: the input is cut into 65-byte steps, each one byte of clock advance
/// (in milliseconds) and a 64-byte report; bit 7 of the clock byte puts the report on the
/// channel the first `INIT` allocated, so the fuzzer reaches assembled messages. Requests
/// are answered with a response as long as the request (so answers span reports too). Every
/// report the engine sends must be a well-formed CTAPHID packet.
pub fn ctaphid(data: &[u8]) {
    let mut engine = Engine::new(Limits {
        max_channels: 8,
        ..Limits::default()
    });
    let mut now = Instant::now();
    let mut init = [0u8; REPORT_SIZE];
    init[..4].copy_from_slice(&BROADCAST_CID.to_be_bytes());
    init[4] = 0x80 | ctaphid::cmd::INIT;
    init[6] = 8;
    engine.handle_report(now, &init);
    let mut cid = None;
    drain(&mut engine, now, &mut cid);
    for step in data.chunks(REPORT_SIZE + 1) {
        let (&clock, report) = step.split_first().unwrap_or((&0, &[]));
        let mut report = report.to_vec();
        if clock & 0x80 != 0 && report.len() >= 4 {
            if let Some(c) = cid {
                report[..4].copy_from_slice(&u32::to_be_bytes(c));
            }
        }
        engine.handle_report(now, &report);
        now += Duration::from_millis(u64::from(clock & 0x7f) * 20);
        engine.handle_timeout(now);
        drain(&mut engine, now, &mut cid);
    }
}

fn drain(engine: &mut Engine, now: Instant, cid: &mut Option<u32>) {
    while let Some(out) = engine.poll_output() {
        match out {
            Output::Report(r) => {
                if r[4] & 0x80 != 0 {
                    let len = usize::from(u16::from_be_bytes([r[5], r[6]]));
                    assert!(
                        len <= ctaphid::MAX_MESSAGE,
                        "engine sent an oversized message"
                    );
                    if cid.is_none() && r[4] == 0x80 | ctaphid::cmd::INIT && len == 17 {
                        *cid = Some(u32::from_be_bytes([r[15], r[16], r[17], r[18]]));
                    }
                }
            }
            Output::Request(req) => {
                let answer = vec![0u8; req.payload.len()];
                assert!(engine.respond(now, req.id, &answer));
            }
            Output::Cancel(id) => assert!(!engine.is_pending(id)),
            Output::Wink(_) => {}
        }
    }
}

/// The UHID event reader: any bytes as an event from the kernel.
pub fn uhid_event(data: &[u8]) {
    let _ = uhid::parse_event(data);
}

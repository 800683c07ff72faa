//! Fuzz target: any bytes a client may send as a text frame, through frame parsing, request
//! validation and option parsing.
#![no_main]

use jobcast_protocol::{Frame, JobOptions, OptionLimits, parse_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = OptionLimits::default();
    let requests = match parse_frame(text) {
        Ok(Frame::Single(r)) => vec![r],
        Ok(Frame::Batch(items)) => items,
        Err(_) => return,
    };
    for r in requests.into_iter().flatten() {
        let _ = JobOptions::parse(r.options.as_deref().map(|o| o.get()), &limits);
    }
});

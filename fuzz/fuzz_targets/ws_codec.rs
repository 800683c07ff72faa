//! Fuzz target: any bytes a client may send after the WebSocket upgrade, through the server's
//! frame decoder. It must not panic, must never use more bytes than it was given, and must
//! decode the same messages (or refuse with the same close code) whether the bytes arrive at
//! once or split in two at any point, carrying the unfinished frame over as the server does.
#![no_main]

use jobcast_gateway::ws::codec::{Incoming, decode_chunks};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * bytes.len() / 256;
    let whole = decode_chunks(MAX, &[bytes]);
    let split = decode_chunks(MAX, &[&bytes[..at], &bytes[at..]]);
    assert_eq!(whole, split);
    for m in &whole.0 {
        if let Incoming::Text(t) = m {
            assert!(t.len() <= MAX);
        }
    }
});

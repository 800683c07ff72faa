//! Fuzz target: any bytes a client may send after the WebSocket upgrade, through the server's
//! frame decoder. It must not panic, must never use more bytes than it was given, and must
//! decode the same messages (or refuse with the same close code) whether the bytes arrive at
//! once or split in two at any point, carrying the unfinished frame over as the server does.
#![no_main]

use jobcast_gateway::ws::codec::{Decoder, Incoming};
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;

const MAX: usize = 4096;

/// Decodes `chunks` one after another the way `WsStream` does; returns the messages, the
/// replies and the close code it stopped with, if any.
fn run(chunks: &[&[u8]]) -> (Vec<Incoming>, Vec<u8>, Option<u16>) {
    let mut d = Decoder::new(MAX);
    let (mut into, mut replies, mut carry) = (VecDeque::new(), Vec::new(), Vec::new());
    for chunk in chunks {
        carry.extend_from_slice(chunk);
        match d.decode(&carry, &mut into, &mut replies) {
            Ok(used) => {
                assert!(used <= carry.len());
                carry.drain(..used);
            }
            Err(v) => return (into.into(), replies, Some(v.code.code())),
        }
    }
    (into.into(), replies, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * bytes.len() / 256;
    let whole = run(&[bytes]);
    let split = run(&[&bytes[..at], &bytes[at..]]);
    assert_eq!(whole, split);
    for m in &whole.0 {
        if let Incoming::Text(t) = m {
            assert!(t.len() <= MAX);
        }
    }
});

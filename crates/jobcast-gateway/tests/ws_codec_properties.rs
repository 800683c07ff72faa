//! Property tests of the server's WebSocket frame decoder (the same properties as the
//! `ws_codec` fuzz target): whatever a client sends never panics, and bytes split anywhere
//! decode exactly as they do at once; well-formed masked frames, fragmented anywhere, come back
//! as the messages that were sent.

use jobcast_gateway::ws::codec::{Incoming, client_frame, decode_chunks};
use proptest::prelude::*;

const MAX: usize = 4096;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_bytes_split_anywhere_decode_the_same(bytes in proptest::collection::vec(any::<u8>(), 0..600), at in any::<prop::sample::Index>()) {
        let at = at.index(bytes.len() + 1);
        prop_assert_eq!(decode_chunks(MAX, &[&bytes]), decode_chunks(MAX, &[&bytes[..at], &bytes[at..]]));
    }

    #[test]
    fn fragmented_messages_come_back_whole(
        texts in proptest::collection::vec("\\PC{0,300}", 1..5),
        pieces in 1usize..4,
        mask in any::<[u8; 4]>(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        for t in &texts {
            let b = t.as_bytes();
            let size = b.len().div_ceil(pieces).max(1);
            let parts: Vec<&[u8]> = if b.is_empty() { vec![b] } else { b.chunks(size).collect() };
            for (i, p) in parts.iter().enumerate() {
                let fin = if i + 1 == parts.len() { 0x80 } else { 0 };
                let op = if i == 0 { 0x1 } else { 0x0 };
                bytes.extend(client_frame(fin | op, p, mask));
            }
        }
        let at = at.index(bytes.len() + 1);
        let (got, replies, closed) = decode_chunks(MAX, &[&bytes[..at], &bytes[at..]]);
        prop_assert_eq!(closed, None);
        prop_assert!(replies.is_empty());
        let want: Vec<Incoming> = texts.into_iter().map(Incoming::Text).collect();
        prop_assert_eq!(got, want);
    }
}

//! RFC 6455 framing for the server side, without I/O: decoding what a client sends (masked
//! frames, fragmentation, control frames, size and UTF-8 checks) into whole messages, and
//! encoding the server's unmasked frames.
//!
//! The decoder keeps only what must outlive one read: the message being assembled from
//! fragments. Bytes of an unfinished frame are left to the caller (see `super::WsStream`).

use jobcast_protocol::CloseCode;
use std::collections::VecDeque;

/// Frame opcodes.
pub mod op {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text message.
    pub const TEXT: u8 = 0x1;
    /// Binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// A whole message, or the close frame, from the client (pings and pongs are handled by the
/// decoder itself).
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message, valid UTF-8.
    Text(String),
    /// A binary message (its content is not kept: the protocol speaks text only).
    Binary,
    /// The client's close frame, with its code if it sent one (already answered).
    Close(Option<u16>),
}

/// A broken rule: the connection must be closed with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// The close code to send.
    pub code: CloseCode,
    /// Why, for the close frame's reason.
    pub reason: &'static str,
}

fn protocol(reason: &'static str) -> Violation {
    Violation {
        code: CloseCode::ProtocolError,
        reason,
    }
}

/// What a parsed frame header says.
struct Header {
    fin: bool,
    opcode: u8,
    /// Header length including the masking key.
    len: usize,
    payload: usize,
    mask: [u8; 4],
}

/// Parses the header at the start of `b`: `Ok(None)` when more bytes are needed.
fn header(b: &[u8]) -> Result<Option<Header>, Violation> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (b[0], b[1]);
    if b0 & 0x70 != 0 {
        return Err(protocol("reserved bits set (no extension was agreed)"));
    }
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(protocol("client frames must be masked"));
    }
    let (payload, at) = match b1 & 0x7F {
        126 => {
            let Some(l) = b.get(2..4) else {
                return Ok(None);
            };
            (usize::from(u16::from_be_bytes([l[0], l[1]])), 4)
        }
        127 => {
            let Some(l) = b.get(2..10) else {
                return Ok(None);
            };
            let n = u64::from_be_bytes(l.try_into().unwrap_or_default());
            if n >> 63 != 0 {
                return Err(protocol("frame length has its top bit set"));
            }
            (usize::try_from(n).unwrap_or(usize::MAX), 10)
        }
        n => (usize::from(n), 2),
    };
    match opcode {
        op::CONTINUATION | op::TEXT | op::BINARY => {}
        op::CLOSE | op::PING | op::PONG => {
            if !fin {
                return Err(protocol("fragmented control frame"));
            }
            if payload > 125 {
                return Err(protocol("control frame longer than 125 bytes"));
            }
        }
        _ => return Err(protocol("unknown opcode")),
    }
    let Some(m) = b.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        len: at + 4,
        payload,
        mask: [m[0], m[1], m[2], m[3]],
    }))
}

/// XORs `data` with the masking key, starting at key offset 0.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap_or_default()) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Whether a client may send this close code (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Appends a frame header: its first byte (FIN, RSV, opcode), then the payload length in its
/// shortest form, with the mask bit set or not.
fn header_into(first: u8, len: usize, mask_bit: u8, out: &mut Vec<u8>) {
    out.push(first);
    match len {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
}

/// The most bytes a server frame's header takes (no mask; a 64-bit length).
pub const MAX_HEADER: usize = 10;

/// Appends one unmasked server frame.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + MAX_HEADER);
    header_into(0x80 | opcode, payload.len(), 0, out);
    out.extend_from_slice(payload);
}

/// A frame as a client sends it: first byte `first` as given (so tests can set any bit),
/// masked with `mask`. For tests and fuzzing; the server never sends one.
pub fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    header_into(first, payload.len(), 0x80, &mut out);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
    out
}

/// Appends a close frame with `code` and `reason` (cut to fit a control frame).
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(op::CLOSE, &payload, out);
}

/// Turns client bytes into messages.
#[derive(Debug)]
pub struct Decoder {
    /// Largest message accepted (summed over its fragments), in bytes; 4 GiB at most, which
    /// keeps every connection's decoder 8 bytes smaller (see `session`'s size test).
    max: u32,
    /// The fragmented message being assembled: its opcode and payload so far.
    partial: Option<(u8, Vec<u8>)>,
    /// A close frame was read: nothing after it counts.
    closed: bool,
}

impl Decoder {
    /// A decoder accepting messages of up to `max` bytes (4 GiB at most).
    pub fn new(max: usize) -> Self {
        Self {
            max: u32::try_from(max).unwrap_or(u32::MAX),
            partial: None,
            closed: false,
        }
    }

    /// Decodes every whole frame at the start of `buf`, pushing messages to `into` and
    /// appending the frames that answer them (pong, close) to `replies`. Returns how many
    /// bytes were used; the rest is the start of a frame still arriving. Fails fast on a
    /// frame that can never be accepted, before its payload arrives.
    pub fn decode(
        &mut self,
        buf: &[u8],
        into: &mut VecDeque<Incoming>,
        replies: &mut Vec<u8>,
    ) -> Result<usize, Violation> {
        let mut used = 0;
        while !self.closed {
            let rest = &buf[used..];
            let Some(h) = header(rest)? else { break };
            if h.opcode < op::CLOSE {
                let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len());
                if h.payload > (self.max as usize).saturating_sub(so_far) {
                    return Err(Violation {
                        code: CloseCode::TooBig,
                        reason: "message too big",
                    });
                }
            }
            let end = h.len.saturating_add(h.payload);
            if rest.len() < end {
                break;
            }
            let mut payload = rest[h.len..end].to_vec();
            unmask(&mut payload, h.mask);
            used += end;
            self.frame(h.opcode, h.fin, payload, into, replies)?;
        }
        Ok(used)
    }

    fn frame(
        &mut self,
        opcode: u8,
        fin: bool,
        payload: Vec<u8>,
        into: &mut VecDeque<Incoming>,
        replies: &mut Vec<u8>,
    ) -> Result<(), Violation> {
        match opcode {
            op::TEXT | op::BINARY => {
                if self.partial.is_some() {
                    return Err(protocol("new message before the fragmented one ended"));
                }
                if fin {
                    into.push_back(message(opcode, payload)?);
                } else {
                    self.partial = Some((opcode, payload));
                }
            }
            op::CONTINUATION => {
                let Some((_, so_far)) = self.partial.as_mut() else {
                    return Err(protocol("continuation frame without a message"));
                };
                so_far.extend_from_slice(&payload);
                if fin && let Some((first, whole)) = self.partial.take() {
                    into.push_back(message(first, whole)?);
                }
            }
            op::PING => {
                // Answered here; the session has nothing to do with it (any frame counts
                // as the peer being alive).
                encode(op::PONG, &payload, replies);
            }
            op::PONG => {}
            _ => {
                // Close: check it, echo its code (RFC 6455 §5.5.1), and read no further.
                let code = match payload.len() {
                    0 => None,
                    1 => return Err(protocol("close frame with a one-byte payload")),
                    _ => Some(u16::from_be_bytes([payload[0], payload[1]])),
                };
                if let Some(c) = code
                    && !valid_close_code(c)
                {
                    return Err(protocol("invalid close code"));
                }
                if std::str::from_utf8(payload.get(2..).unwrap_or_default()).is_err() {
                    return Err(Violation {
                        code: CloseCode::InvalidPayload,
                        reason: "close reason is not valid UTF-8",
                    });
                }
                match code {
                    Some(c) => encode_close(c, "", replies),
                    None => encode(op::CLOSE, &[], replies),
                }
                self.closed = true;
                into.push_back(Incoming::Close(code));
            }
        }
        Ok(())
    }
}

/// What [`decode_chunks`] saw: the messages, the reply frames, and the close code it stopped
/// with, if any.
pub type Decoded = (Vec<Incoming>, Vec<u8>, Option<u16>);

/// Decodes `chunks` as if each arrived in its own read, carrying an unfinished frame over to
/// the next as the server does: for property tests and fuzzing, which check that any split
/// decodes the same as the whole.
pub fn decode_chunks(max: usize, chunks: &[&[u8]]) -> Decoded {
    let mut d = Decoder::new(max);
    let (mut into, mut replies, mut carry) = (VecDeque::new(), Vec::new(), Vec::new());
    for chunk in chunks {
        carry.extend_from_slice(chunk);
        match d.decode(&carry, &mut into, &mut replies) {
            Ok(used) => {
                assert!(used <= carry.len(), "used more bytes than given");
                carry.drain(..used);
            }
            Err(v) => return (into.into(), replies, Some(v.code.code())),
        }
    }
    (into.into(), replies, None)
}

fn message(opcode: u8, payload: Vec<u8>) -> Result<Incoming, Violation> {
    if opcode == op::BINARY {
        return Ok(Incoming::Binary);
    }
    String::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| Violation {
            code: CloseCode::InvalidPayload,
            reason: "text message is not valid UTF-8",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(first, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> (Result<usize, Violation>, Vec<Incoming>) {
        let mut into = VecDeque::new();
        let r = d.decode(bytes, &mut into, &mut Vec::new());
        (r, into.into_iter().collect())
    }

    #[test]
    fn whole_and_split_text() {
        let f = client(0x81, "héllo".as_bytes());
        let mut d = Decoder::new(1024);
        assert_eq!(
            decode_all(&mut d, &f),
            (Ok(f.len()), vec![Incoming::Text("héllo".into())])
        );
        // Every split point: nothing is used until the frame is whole.
        for cut in 0..f.len() {
            assert_eq!(decode_all(&mut d, &f[..cut]), (Ok(0), vec![]));
        }
    }

    #[test]
    fn lengths_of_every_encoding() {
        for n in [0, 125, 126, 65535, 65536, 200_000] {
            let text = "x".repeat(n);
            let f = client(0x81, text.as_bytes());
            let mut d = Decoder::new(1 << 20);
            assert_eq!(
                decode_all(&mut d, &f),
                (Ok(f.len()), vec![Incoming::Text(text)]),
                "{n}"
            );
            let mut enc = Vec::new();
            encode(op::TEXT, &vec![b'x'; n], &mut enc);
            assert_eq!(
                enc.len(),
                n + if n < 126 {
                    2
                } else if n < 65536 {
                    4
                } else {
                    10
                }
            );
        }
    }

    #[test]
    fn fragments_with_a_ping_between() {
        let mut bytes = client(0x01, b"ab");
        bytes.extend(client(0x89, b"p"));
        bytes.extend(client(0x00, b"cd"));
        bytes.extend(client(0x80, b"e"));
        let mut d = Decoder::new(1024);
        let mut replies = Vec::new();
        let mut into = VecDeque::new();
        assert_eq!(d.decode(&bytes, &mut into, &mut replies), Ok(bytes.len()));
        assert_eq!(
            into.into_iter().collect::<Vec<_>>(),
            vec![Incoming::Text("abcde".into())]
        );
        assert_eq!(replies, vec![0x8A, 1, b'p']);
    }

    #[test]
    fn close_is_echoed_and_ends_reading() {
        let mut bytes = client(0x88, &[0x03, 0xE8, b'o', b'k']);
        bytes.extend(client(0x81, b"after"));
        let mut d = Decoder::new(1024);
        let mut replies = Vec::new();
        let mut into = VecDeque::new();
        let used = d.decode(&bytes, &mut into, &mut replies).unwrap();
        assert_eq!(used, 10);
        assert_eq!(into.pop_front(), Some(Incoming::Close(Some(1000))));
        assert!(into.is_empty());
        assert_eq!(replies, vec![0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn violations() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], 1002),      // unmasked
            (client(0xC1, b"x"), 1002),                // RSV1
            (client(0x83, b"x"), 1002),                // reserved opcode
            (client(0x09, b"x"), 1002),                // fragmented ping
            (client(0x89, &[0; 126]), 1002),           // long ping
            (client(0x80, b"x"), 1002),                // continuation without a start
            (client(0x81, &[0xff, 0xfe]), 1007),       // bad UTF-8
            (client(0x88, &[0x03]), 1002),             // one-byte close
            (client(0x88, &[0x03, 0xED]), 1002),       // close code 1005
            (client(0x88, &[0x03, 0xE8, 0xff]), 1007), // bad close reason
            (client(0x81, &[b'x'; 2000]), 1009),       // too big
            ([client(0x01, b"a"), client(0x81, b"b")].concat(), 1002), // interleaved message
            (
                [client(0x01, &[b'a'; 600]), client(0x80, &[b'b'; 600])].concat(),
                1009,
            ),
        ];
        for (i, (bytes, code)) in cases.into_iter().enumerate() {
            let mut d = Decoder::new(1024);
            let (r, _) = decode_all(&mut d, &bytes);
            assert_eq!(r.map_err(|v| v.code.code()), Err(code), "case {i}");
        }
        // Too big is refused from the header alone, before the payload arrives.
        let f = client(0x82, &[0; 5000]);
        let (r, _) = decode_all(&mut Decoder::new(1024), &f[..8]);
        assert_eq!(r.map_err(|v| v.code.code()), Err(1009));
    }

    #[test]
    fn unmask_matches_bytewise() {
        let mask = [1, 2, 3, 4];
        for n in 0..40 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        encode_close(1008, &"é".repeat(100), &mut out);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}

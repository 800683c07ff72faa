//! Property tests: parsing whatever a client sends never panics, and every refusal names a
//! code PROTOCOL.md lists. (The fuzz targets in `fuzz/` search the same space far longer.)

use jobcast_protocol::{ErrorCode, Frame, JobOptions, OptionLimits, parse_frame};
use proptest::prelude::*;

fn listed(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::ParseError | ErrorCode::InvalidRequest)
}

/// Text that looks like JSON-RPC often enough to reach deep into the parser.
fn jsonish() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        "[a-z.\\\\\"\\u{0}-\\u{7f}]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    let key = prop_oneof![
        Just("jsonrpc"),
        Just("id"),
        Just("method"),
        Just("params"),
        Just("jobId"),
        Just("options"),
        Just("priority"),
        Just("delayMs"),
        Just("timeoutMs"),
        Just("attempts"),
        Just("backoff"),
        Just("x"),
    ];
    atom.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        if let Err(e) = parse_frame(&s) {
            prop_assert!(listed(e.code));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_frame(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn jsonish_frames_never_panic(s in jsonish()) {
        match parse_frame(&s) {
            Err(e) => prop_assert!(listed(e.code)),
            Ok(Frame::Single(Err(e))) => prop_assert!(listed(e.code)),
            Ok(Frame::Batch(items)) => {
                for i in items {
                    if let Err(e) = i {
                        prop_assert!(listed(e.code));
                    }
                }
            }
            Ok(Frame::Single(Ok(_))) => {}
        }
    }

    #[test]
    fn options_never_panic(s in jsonish()) {
        let _ = JobOptions::parse(Some(&s), &OptionLimits::default());
    }
}

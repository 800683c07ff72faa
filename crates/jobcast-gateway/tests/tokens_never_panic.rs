//! Property test: verifying whatever arrives as a token never panics and never accepts a
//! token that was not signed with the secret.

use jobcast_gateway::auth::{AuthConfig, mint, verify};
use proptest::prelude::*;

const SECRET: &[u8] = b"property-secret";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_tokens_are_refused(s in any::<String>()) {
        prop_assert!(verify(&AuthConfig::hmac(SECRET.to_vec()), &s).is_err());
    }

    #[test]
    fn three_part_garbage_is_refused(a in "[A-Za-z0-9_-]{0,64}", b in "[A-Za-z0-9_-]{0,128}", c in "[A-Za-z0-9_-]{0,64}") {
        let t = format!("{a}.{b}.{c}");
        prop_assert!(verify(&AuthConfig::hmac(SECRET.to_vec()), &t).is_err());
    }

    #[test]
    fn a_changed_character_breaks_a_good_token(sub in "[a-z]{1,16}", at in any::<prop::sample::Index>()) {
        let config = AuthConfig::hmac(SECRET.to_vec());
        let good = mint(SECRET, &sub, 600, None).unwrap();
        prop_assert!(verify(&config, &good).is_ok());
        let mut bytes = good.into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bytes).unwrap();
        // A changed character of the header, payload or signature invalidates the token,
        // except in the last character's unused base64url bits, where two encodings decode
        // to the same bytes: then it is the same token.
        if let Ok(c) = verify(&config, &bad) {
            prop_assert_eq!(c.sub.as_str(), sub.as_str());
        }
    }
}

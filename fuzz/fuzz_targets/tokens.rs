//! Fuzz target: any string presented as a token, through JWT verification with a secret.
#![no_main]

use jobcast_gateway::auth::{AuthConfig, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let config = AuthConfig::hmac(b"fuzz-secret".to_vec());
    if let Ok(claims) = verify(&config, token) {
        // Only a token signed with the secret may pass; random input never is.
        panic!("accepted a token not made by us: sub={}", claims.sub);
    }
});

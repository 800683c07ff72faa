//! Fuzz target: any string presented as a token, through JWT verification with a secret and
//! with a public key (whose private half nobody has). Neither may panic or accept it.
#![no_main]

use jobcast_gateway::auth::{AuthConfig, keys::PublicKeys, verify};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// An Ed25519 public key; its private key was thrown away.
const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAs3tKDHQZP81YGdRwXvQVjQrjwHEXirkJOQxJBleHr+M=
-----END PUBLIC KEY-----
";

fn configs() -> &'static [AuthConfig; 2] {
    static C: OnceLock<[AuthConfig; 2]> = OnceLock::new();
    C.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("jobcast-fuzz-{}.pem", std::process::id()));
        std::fs::write(&path, PUBLIC_PEM).expect("writing the key");
        let mut public = AuthConfig::hmac(b"fuzz-secret".to_vec());
        public.public_keys = Some(PublicKeys::load(vec![path], None).expect("the key loads"));
        [AuthConfig::hmac(b"fuzz-secret".to_vec()), public]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    for config in configs() {
        if let Ok(claims) = verify(config, token) {
            // Only a token signed with our key may pass; random input never is.
            panic!("accepted a token not made by us: sub={}", claims.sub);
        }
    }
});

//! Token checks at the upgrade, over real sockets: what is accepted, and every refusal (401
//! before the upgrade, as plain HTTP), with a shared secret and with public keys (PEM files
//! and a JWKS file, rotated while the server runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(v: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// The status of an upgrade with `token` in the Authorization header.
async fn status(s: &Server, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    raw_upgrade(s.addr, "/ws", &[("Authorization", auth.as_str())])
        .await
        .0
}

#[tokio::test]
async fn accepted_and_refused_tokens() {
    let s = Server::start(&[
        "--jwt-audience",
        "jobcast",
        "--jwt-issuer",
        "https://id.example",
    ]);
    let good = |extra: Value| {
        let mut c = json!({"sub": "alice", "exp": now() + 600, "aud": "jobcast", "iss": "https://id.example"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_eq!(
            status(&s, &sign(alg, good(json!({})), SECRET)).await,
            101,
            "{alg:?}"
        );
    }
    // Within the 30 s leeway.
    let t = sign(Algorithm::HS256, good(json!({"exp": now() - 10})), SECRET);
    assert_eq!(status(&s, &t).await, 101);

    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&good(json!({})).to_string())
    );
    let refused = [
        ("alg none", none),
        (
            "wrong secret",
            sign(Algorithm::HS256, good(json!({})), "not-the-secret"),
        ),
        (
            "expired",
            sign(Algorithm::HS256, good(json!({"exp": now() - 120})), SECRET),
        ),
        (
            "not yet valid",
            sign(Algorithm::HS256, good(json!({"nbf": now() + 600})), SECRET),
        ),
        (
            "no exp",
            sign(Algorithm::HS256, good(json!({"exp": null})), SECRET),
        ),
        (
            "no sub",
            sign(Algorithm::HS256, good(json!({"sub": null})), SECRET),
        ),
        (
            "empty sub",
            sign(Algorithm::HS256, good(json!({"sub": ""})), SECRET),
        ),
        (
            "wrong audience",
            sign(Algorithm::HS256, good(json!({"aud": "other"})), SECRET),
        ),
        (
            "no audience",
            sign(Algorithm::HS256, good(json!({"aud": null})), SECRET),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                good(json!({"iss": "https://evil.example"})),
                SECRET,
            ),
        ),
        (
            "no issuer",
            sign(Algorithm::HS256, good(json!({"iss": null})), SECRET),
        ),
        ("malformed base64", "a$b.c%d.e^f".to_owned()),
        ("two parts", "abc.def".to_owned()),
        (
            "header not JSON",
            format!(
                "{}.{}.sig",
                b64("{not json"),
                b64(&good(json!({})).to_string())
            ),
        ),
        (
            "too large",
            sign(
                Algorithm::HS256,
                good(json!({"pad": "x".repeat(9000)})),
                SECRET,
            ),
        ),
        ("empty", String::new()),
    ];
    for (what, token) in refused {
        assert_eq!(status(&s, &token).await, 401, "{what} was not refused");
    }
    // The server is unharmed.
    assert_eq!(
        status(&s, &sign(Algorithm::HS256, good(json!({})), SECRET)).await,
        101
    );
}

#[tokio::test]
async fn allow_no_exp_still_checks_an_exp_that_is_there() {
    let s = Server::start(&["--allow-no-exp"]);
    let no_exp = sign(Algorithm::HS256, json!({"sub": "a"}), SECRET);
    assert_eq!(status(&s, &no_exp).await, 101);
    let expired = sign(
        Algorithm::HS256,
        json!({"sub": "a", "exp": now() - 3600}),
        SECRET,
    );
    assert_eq!(status(&s, &expired).await, 401);
}

/// A key pair made by rcgen: the private key for signing, the public key PEM for the server.
struct Signer {
    private: EncodingKey,
    public_pem: String,
    alg: Algorithm,
}

impl Signer {
    fn new(alg: Algorithm) -> Self {
        let kind = match alg {
            Algorithm::RS256 | Algorithm::PS256 => &rcgen::PKCS_RSA_SHA256,
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            other => panic!("no key type for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(kind).unwrap();
        let pem = pair.serialize_pem();
        let private = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()),
        }
        .unwrap();
        Self {
            private,
            public_pem: pair.public_key_pem(),
            alg,
        }
    }

    fn token(&self, sub: &str, kid: Option<&str>) -> String {
        self.token_as(self.alg, sub, kid)
    }

    fn token_as(&self, alg: Algorithm, sub: &str, kid: Option<&str>) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, &json!({"sub": sub, "exp": now() + 600}), &self.private).unwrap()
    }

    /// This key as a JWK with `kid` (and `alg`, when given).
    fn jwk(&self, kid: &str, alg: Option<&str>) -> Value {
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.private, self.alg).unwrap();
        let mut v = serde_json::to_value(jwk).unwrap();
        v["kid"] = json!(kid);
        match alg {
            Some(a) => v["alg"] = json!(a),
            None => {
                v.as_object_mut().unwrap().remove("alg");
            }
        }
        v
    }
}

#[tokio::test]
async fn public_keys_from_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = Signer::new(Algorithm::RS256);
    let ec = Signer::new(Algorithm::ES256);
    let ed = Signer::new(Algorithm::EdDSA);
    let mut files = Vec::new();
    for (name, k) in [("rsa", &rsa), ("ec", &ec), ("ed", &ed)] {
        let p = dir.path().join(format!("{name}.pem"));
        std::fs::write(&p, &k.public_pem).unwrap();
        files.push(p.to_str().unwrap().to_owned());
    }
    let s = Server::start(&["--jwt-public-key", &files.join(",")]);
    // Each key's own algorithms are accepted, RSA-PSS included.
    assert_eq!(status(&s, &rsa.token("alice", None)).await, 101);
    assert_eq!(
        status(&s, &rsa.token_as(Algorithm::PS256, "alice", None)).await,
        101
    );
    assert_eq!(
        status(&s, &rsa.token_as(Algorithm::RS512, "alice", None)).await,
        101
    );
    assert_eq!(status(&s, &ec.token("alice", None)).await, 101);
    assert_eq!(status(&s, &ed.token("alice", None)).await, 101);
    // A real session works with such a token.
    let mut ws = s.connect_with(&ed.token("alice", None)).await;
    let v = ws.call("rpc.ping", json!({})).await;
    assert!(v["result"]["pong"].is_number(), "{v}");

    // Algorithm confusion: HS256 signed with the public key's bytes as the HMAC secret.
    for k in [&rsa, &ec, &ed] {
        let forged = sign(
            Algorithm::HS256,
            json!({"sub": "mallory", "exp": now() + 600}),
            &k.public_pem,
        );
        assert_eq!(
            status(&s, &forged).await,
            401,
            "HS256 with a public key as secret"
        );
    }
    // HMAC tokens are refused outright, even with the server's own secret.
    assert_eq!(status(&s, &token("alice", None)).await, 401);
    // A key nobody configured, and a key of one family posing as another's algorithm.
    let stranger = Signer::new(Algorithm::RS256);
    assert_eq!(status(&s, &stranger.token("alice", None)).await, 401);
    let p384 = Signer::new(Algorithm::ES384);
    assert_eq!(status(&s, &p384.token("alice", None)).await, 401);
    // alg: none with a body that would otherwise pass.
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&json!({"sub": "alice", "exp": now() + 600}).to_string())
    );
    assert_eq!(status(&s, &none).await, 401);
}

#[tokio::test]
async fn jwks_file_with_kid_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let old = Signer::new(Algorithm::RS256);
    let new = Signer::new(Algorithm::ES256);
    std::fs::write(
        &jwks,
        json!({"keys": [old.jwk("old", Some("RS256"))]}).to_string(),
    )
    .unwrap();
    let s = Server::start(&["--jwks-file", jwks.to_str().unwrap()]);
    assert_eq!(status(&s, &old.token("alice", Some("old"))).await, 101);
    // No kid: every key that allows the algorithm is tried.
    assert_eq!(status(&s, &old.token("alice", None)).await, 101);
    // The JWK names RS256 only: a PS256 token from the same key is refused.
    assert_eq!(
        status(&s, &old.token_as(Algorithm::PS256, "alice", Some("old"))).await,
        401
    );
    // Not yet published.
    assert_eq!(status(&s, &new.token("alice", Some("new"))).await, 401);

    // Rotation, step 1: publish the new key next to the old one (SIGHUP reloads at once).
    std::fs::write(
        &jwks,
        json!({"keys": [old.jwk("old", Some("RS256")), new.jwk("new", None)]}).to_string(),
    )
    .unwrap();
    s.signal("HUP");
    eventually_status(&s, &new.token("alice", Some("new")), 101).await;
    assert_eq!(status(&s, &old.token("alice", Some("old"))).await, 101);
    // A kid that names the wrong key does not fall back to the others.
    assert_eq!(status(&s, &old.token("alice", Some("new"))).await, 401);

    // Step 2: retire the old key; the file change alone is noticed.
    std::fs::write(&jwks, json!({"keys": [new.jwk("new", None)]}).to_string()).unwrap();
    eventually_status(&s, &old.token("alice", Some("old")), 401).await;
    assert_eq!(status(&s, &new.token("alice", Some("new"))).await, 101);

    // A broken file keeps the keys in use.
    std::fs::write(&jwks, "{not json").unwrap();
    s.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(status(&s, &new.token("alice", Some("new"))).await, 101);
}

/// Waits (up to 15 s; files are checked every 2 s) for `token` to get `want`.
async fn eventually_status(s: &Server, token: &str, want: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let got = status(s, token).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {got}, expected {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

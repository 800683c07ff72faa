//! Token checks at the upgrade, over real sockets: what is accepted, and every refusal (401
//! before the upgrade, as plain HTTP).
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

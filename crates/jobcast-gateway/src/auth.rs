//! Authentication of WebSocket upgrades: how a token is verified (JWT: HS256/384/512 with a
//! shared secret, or RS/PS/ES/EdDSA with public keys from PEM files and a JWKS file, see
//! [`keys`]), and what its claims allow (methods, topics to subscribe to, topics to publish
//! to). Where the token is found is the upgrade's business (`http::upgrade`).
//!
//! Each verifier accepts only its own algorithms: with public keys configured, HMAC-signed
//! tokens are refused (an attacker cannot sign with the public key as an HMAC secret), and
//! with a secret only, asymmetric ones are.

pub mod keys;

use jobcast_protocol::topics::{USER_TOPIC_PREFIX, any_matches, is_user_topic};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest token accepted; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8192;

/// How tokens are verified.
#[derive(Clone)]
pub struct AuthConfig {
    /// The shared HMAC secret (not used when `public_keys` is set).
    pub secret: Vec<u8>,
    /// Public keys: when set, only tokens signed by one of them are accepted.
    pub public_keys: Option<Arc<keys::PublicKeys>>,
    /// Accept tokens without `exp`.
    pub allow_no_exp: bool,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock leeway in seconds for `exp`/`nbf`.
    pub leeway_secs: u64,
}

impl AuthConfig {
    /// HS256/384/512 with `secret`, `exp` required, 30 s leeway.
    pub fn hmac(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
            public_keys: None,
            allow_no_exp: false,
            audience: None,
            issuer: None,
            leeway_secs: 30,
        }
    }
}

/// The claims jobcast reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Topic patterns the user may subscribe to (absent: any but other users' `user:` topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
    /// Topic patterns the user may publish to (absent: any but other users' `user:` topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Method patterns the user may call (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Kind of user, shown in `/stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
}

/// Why a token was refused (logged; the client only sees 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials anywhere.
    #[error("missing token")]
    Missing,
    /// Over [`MAX_TOKEN_LEN`].
    #[error("token too large")]
    TooLarge,
    /// Verification failed.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl Claims {
    /// What a connection keeps of its claims for its life: the pattern lists. The rest is
    /// read at the upgrade (the user, shared with the connection, and the kind of user).
    pub fn into_grants(self) -> Grants {
        let Self {
            topics,
            publish,
            methods,
            ..
        } = self;
        if topics.is_none() && publish.is_none() && methods.is_none() {
            return Grants(None);
        }
        Grants(Some(Box::new(Lists {
            topics,
            publish,
            methods,
        })))
    }
}

/// What a connection may do: its token's pattern lists, boxed together so that a token
/// without any (the common case) costs one null pointer per connection. Each connection keeps
/// this rather than its whole [`Claims`] (136 bytes of fields and the user's name again).
#[derive(Debug, Default)]
pub struct Grants(Option<Box<Lists>>);

/// The pattern lists of a token that has any (absent: the default rule of each).
#[derive(Debug)]
struct Lists {
    topics: Option<Vec<String>>,
    publish: Option<Vec<String>>,
    methods: Option<Vec<String>>,
}

impl Grants {
    /// Whether the user may call `method`.
    pub fn may_call(&self, method: &str) -> bool {
        self.list(|l| &l.methods)
            .is_none_or(|p| any_matches(p, method))
    }

    /// Whether `user` may subscribe to `topic`. Their own `user:` topic is always allowed.
    pub fn may_subscribe(&self, user: &str, topic: &str) -> bool {
        allowed(self.list(|l| &l.topics), user, topic)
    }

    /// Whether `user` may publish to `topic`.
    pub fn may_publish(&self, user: &str, topic: &str) -> bool {
        allowed(self.list(|l| &l.publish), user, topic)
    }

    fn list(&self, which: impl Fn(&Lists) -> &Option<Vec<String>>) -> Option<&Vec<String>> {
        self.0.as_deref().and_then(|l| which(l).as_ref())
    }
}

/// Whether `user` may subscribe or publish to `topic` under `patterns`: their own `user:`
/// topic always; with no patterns, any topic but other users' `user:` topics.
fn allowed(patterns: Option<&Vec<String>>, user: &str, topic: &str) -> bool {
    if is_user_topic(topic, user) {
        return true;
    }
    match patterns {
        Some(p) => any_matches(p, topic),
        None => !topic.starts_with(USER_TOPIC_PREFIX),
    }
}

/// Verifies a token and returns its claims.
pub fn verify(config: &AuthConfig, token: &str) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLarge);
    }
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
    // Exactly the token's algorithm, once it is known to be one this verifier accepts.
    let mut v = Validation::new(header.alg);
    v.leeway = config.leeway_secs;
    v.validate_nbf = true;
    // An `exp` that is there is always checked; `allow_no_exp` only makes it optional.
    v.validate_exp = true;
    let mut required = vec!["sub"];
    if !config.allow_no_exp {
        required.push("exp");
    }
    // A configured audience or issuer must be present, not only match when present.
    if config.audience.is_some() {
        required.push("aud");
    }
    if config.issuer.is_some() {
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    match &config.audience {
        Some(aud) => v.set_audience(&[aud]),
        None => v.validate_aud = false,
    }
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
    }
    let hmac = header.alg.family() == AlgorithmFamily::Hmac;
    let claims = match (&config.public_keys, hmac) {
        (None, true) => {
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&config.secret), &v)
                .map_err(|e| AuthError::Invalid(e.to_string()))?
                .claims
        }
        (None, false) => {
            return Err(AuthError::Invalid(format!(
                "{:?} needs a public key; none is configured",
                header.alg
            )));
        }
        (Some(_), true) => {
            return Err(AuthError::Invalid(
                "HMAC-signed tokens are refused when public keys are configured".into(),
            ));
        }
        (Some(keys), false) => keys
            .verify(token, header.kid.as_deref(), &v)
            .map_err(AuthError::Invalid)?,
    };
    if claims.sub.is_empty() || claims.sub.len() > 256 {
        return Err(AuthError::Invalid("sub must be 1-256 bytes".into()));
    }
    Ok(claims)
}

/// Mints an HS256 token for `sub` valid for `ttl_secs`, with extra claims merged in
/// (used by `jobcast token` and tests).
pub fn mint(
    secret: &[u8],
    sub: &str,
    ttl_secs: u64,
    extra: Option<&serde_json::Value>,
) -> Result<String, String> {
    let now = jobcast_core::now_ms() / 1000;
    let mut claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + ttl_secs});
    if let (Some(serde_json::Value::Object(extra)), Some(map)) = (extra, claims.as_object_mut()) {
        for (k, v) in extra {
            map.insert(k.clone(), v.clone());
        }
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_and_refuse() {
        let cfg = AuthConfig::hmac(b"s3cret".to_vec());
        let t = mint(
            b"s3cret",
            "u1",
            60,
            Some(&serde_json::json!({"topics":["room:*"]})),
        )
        .unwrap();
        let c = verify(&cfg, &t).unwrap();
        assert_eq!(c.sub, "u1");
        let g = c.into_grants();
        assert!(g.may_subscribe("u1", "room:1"));
        assert!(g.may_subscribe("u1", "user:u1"));
        assert!(!g.may_subscribe("u1", "news"));
        assert!(verify(&cfg, &mint(b"other", "u1", 60, None).unwrap()).is_err());
        let expired = mint(b"s3cret", "u1", 0, Some(&serde_json::json!({"exp": 1}))).unwrap();
        assert!(verify(&cfg, &expired).is_err());
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub":"u"}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(verify(&cfg, &no_exp).is_err());
        // alg: none
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(verify(&cfg, none).is_err());
        assert!(matches!(
            verify(&cfg, &"a".repeat(9000)),
            Err(AuthError::TooLarge)
        ));
    }

    #[test]
    fn default_rules() {
        let c = Claims {
            sub: "u1".into(),
            ..Default::default()
        }
        .into_grants();
        assert!(c.0.is_none(), "no lists, nothing boxed");
        assert!(c.may_subscribe("u1", "room:1"));
        assert!(!c.may_subscribe("u1", "user:u2"));
        assert!(c.may_publish("u1", "user:u1"));
        assert!(!c.may_publish("u1", "user:u2"));
        assert!(c.may_call("anything"));
        let m = Claims {
            sub: "u".into(),
            methods: Some(vec!["demo.*".into()]),
            ..Default::default()
        }
        .into_grants();
        assert!(m.may_call("demo.echo"));
        assert!(!m.may_call("admin.drop"));
        // Only the lists given are narrowed: topics keep their default rule.
        assert!(m.may_subscribe("u", "room:1"));
        assert!(!m.may_subscribe("u", "user:v"));
    }
}

//! Public keys that sign tokens: PEM files (RSA, EC P-256/P-384, Ed25519 public keys) and a
//! JWKS file, loaded together and reloaded as one set (see [`crate::reload`]), so a key
//! rotation is "add the new key, wait, remove the old one" without a restart.
//!
//! A token is checked against the keys that allow its algorithm: a PEM key allows its family's
//! algorithms (RSA: RS256/384/512 and PS256/384/512; EC: ES256/384; Ed25519: EdDSA), a JWK the
//! `alg` it names or else its family's. When the token's `kid` names loaded keys, only those are
//! tried; otherwise every key that allows the algorithm is (PEM keys have no id). HMAC (`oct`)
//! and encryption (`use: enc`) keys in a JWKS are ignored.

use crate::reload::Reload;
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Validation,
    jwk::{JwkSet, PublicKeyUse},
};
use parking_lot::RwLock;
use std::{path::PathBuf, str::FromStr, sync::Arc};

use super::Claims;

/// One verification key.
struct PublicKey {
    /// Its `kid` (JWKS keys that have one).
    kid: Option<String>,
    /// Algorithms it may verify.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// The configured public keys, reloadable.
pub struct PublicKeys {
    pem_files: Vec<PathBuf>,
    jwks_file: Option<PathBuf>,
    set: RwLock<Arc<Vec<PublicKey>>>,
}

impl PublicKeys {
    /// Loads the PEM files and the JWKS file; at least one usable key is required.
    pub fn load(pem_files: Vec<PathBuf>, jwks_file: Option<PathBuf>) -> Result<Arc<Self>, String> {
        let set = read(&pem_files, jwks_file.as_ref())?;
        Ok(Arc::new(Self {
            pem_files,
            jwks_file,
            set: RwLock::new(Arc::new(set)),
        }))
    }

    /// Verifies `token` (whose header names `kid`) with the keys that allow `v`'s single
    /// algorithm, and returns its claims.
    pub(super) fn verify(
        &self,
        token: &str,
        kid: Option<&str>,
        v: &Validation,
    ) -> Result<Claims, String> {
        let set = self.set.read().clone();
        let alg = v.algorithms.first().copied().ok_or("no algorithm")?;
        let mut last = format!("no key for {alg:?}");
        let by_kid = kid.is_some() && set.iter().any(|k| k.kid.as_deref() == kid);
        for k in set
            .iter()
            .filter(|k| k.algorithms.contains(&alg) && (!by_kid || k.kid.as_deref() == kid))
        {
            match jsonwebtoken::decode::<Claims>(token, &k.key, v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

impl Reload for PublicKeys {
    fn what(&self) -> &'static str {
        "JWT public keys"
    }

    fn files(&self) -> Vec<PathBuf> {
        self.pem_files
            .iter()
            .chain(self.jwks_file.as_ref())
            .cloned()
            .collect()
    }

    fn reload(&self) -> Result<(), String> {
        let set = read(&self.pem_files, self.jwks_file.as_ref())?;
        *self.set.write() = Arc::new(set);
        Ok(())
    }
}

fn family_algorithms(key: &DecodingKey) -> Vec<Algorithm> {
    key.family().algorithms().to_vec()
}

fn read(pem_files: &[PathBuf], jwks_file: Option<&PathBuf>) -> Result<Vec<PublicKey>, String> {
    let mut set = Vec::new();
    for path in pem_files {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = DecodingKey::from_rsa_pem(&pem)
            .or_else(|_| DecodingKey::from_ec_pem(&pem))
            .or_else(|_| DecodingKey::from_ed_pem(&pem))
            .map_err(|_| {
                format!(
                    "{}: not an RSA, EC or Ed25519 public key in PEM",
                    path.display()
                )
            })?;
        set.push(PublicKey {
            kid: None,
            algorithms: family_algorithms(&key),
            key,
        });
    }
    if let Some(path) = jwks_file {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let jwks: JwkSet =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for jwk in &jwks.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                tracing::warn!(kid = ?jwk.common.key_id, "skipping a JWK of an unsupported type");
                continue;
            };
            if key.family() == AlgorithmFamily::Hmac {
                tracing::warn!(kid = ?jwk.common.key_id, "skipping an HMAC (oct) JWK");
                continue;
            }
            let named = jwk
                .common
                .key_algorithm
                .and_then(|a| serde_json::to_value(a).ok())
                .and_then(|v| v.as_str().and_then(|s| Algorithm::from_str(s).ok()));
            let algorithms = match named {
                Some(a) if a.family() == key.family() => vec![a],
                Some(_) => continue,
                None => family_algorithms(&key),
            };
            set.push(PublicKey {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
            });
        }
    }
    if set.is_empty() {
        return Err("no usable public key".into());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("k.pem");
        std::fs::write(
            &pem,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let e = PublicKeys::load(vec![pem], None).err().unwrap();
        assert!(e.contains("not an RSA, EC or Ed25519"), "{e}");
        let jwks = dir.path().join("jwks.json");
        // Only an HMAC key and an encryption key: nothing usable.
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},
                        {"kty":"EC","crv":"P-256","use":"enc","kid":"e",
                         "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                         "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
        )
        .unwrap();
        let e = PublicKeys::load(vec![], Some(jwks.clone())).err().unwrap();
        assert_eq!(e, "no usable public key");
        std::fs::write(&jwks, "[]").unwrap();
        assert!(PublicKeys::load(vec![], Some(jwks)).is_err());
        assert!(PublicKeys::load(vec![dir.path().join("absent.pem")], None).is_err());
    }
}

//! Settings shared by the subcommands: the JWT secret (flag, env, or the one kept in the data
//! dir), durations like `24h`, and `jobcast token`.

use anyhow::{Context, bail};
use clap::Args;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// Where the token secret comes from.
#[derive(Args, Clone, Debug)]
pub struct SecretArgs {
    /// HMAC secret for HS256/384/512 tokens. In `serve`, when absent, one is generated and
    /// kept in the data dir (`jwt-secret`).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Directory of the durable job store (and of the generated secret).
    #[arg(long, env = "JOBCAST_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

const SECRET_FILE: &str = "jwt-secret";

impl SecretArgs {
    /// The secret from the flag/env, else the one in the data dir.
    pub fn existing(&self) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(s) = &self.jwt_secret {
            if s.is_empty() {
                bail!("JWT secret is empty");
            }
            return Ok(Some(s.as_bytes().to_vec()));
        }
        let path = self.data_dir.join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().as_bytes().to_vec())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The secret, generating and keeping one in the data dir when none is configured.
    /// Returns whether it was generated now.
    pub fn get_or_create(&self) -> anyhow::Result<(Vec<u8>, bool)> {
        if let Some(s) = self.existing()? {
            return Ok((s, false));
        }
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let secret: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
        write_private(&self.data_dir.join(SECRET_FILE), &secret)?;
        Ok((secret.into_bytes(), true))
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

pub use jobcast_protocol::duration::parse_duration;

/// `jobcast token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Lifetime.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Extra claims as a JSON object, e.g. '{"topics":["room:*"]}'.
    #[arg(long)]
    pub claims: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
}

/// Prints a token.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = args.secret.existing()?.with_context(|| {
        format!(
            "no JWT secret: pass --jwt-secret, set JWT_SECRET, or run `jobcast serve` once with --data-dir {} to generate one",
            args.secret.data_dir.display()
        )
    })?;
    let extra = match &args.claims {
        Some(c) => {
            let v: serde_json::Value =
                serde_json::from_str(c).context("--claims must be a JSON object")?;
            if !v.is_object() {
                bail!("--claims must be a JSON object");
            }
            Some(v)
        }
        None => None,
    };
    let t = jobcast_gateway::auth::mint(&secret, &args.sub, args.ttl.as_secs(), extra.as_ref())
        .map_err(anyhow::Error::msg)?;
    println!("{t}");
    Ok(())
}

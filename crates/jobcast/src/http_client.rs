//! A small HTTP/1.1 client for the server API (`jobcast jobs`, the bench's publishers): one
//! keep-alive connection, one request at a time, `Content-Length` or chunked responses,
//! reconnecting when the server has closed it. `http://` only.

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// One connection to `host:port`.
pub struct HttpConn {
    host: String,
    port: u16,
    stream: Option<BufReader<TcpStream>>,
}

impl HttpConn {
    /// A connection to the server of `base` (`http://host:port`); connects on first use.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = base.parse().with_context(|| format!("bad URL {base}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// is supported here: {base}"
        );
        Ok(Self {
            host: uri
                .host()
                .context("URL without a host")?
                .trim_matches(['[', ']'])
                .to_owned(),
            port: uri.port_u16().unwrap_or(80),
            stream: None,
        })
    }

    /// `method path` with a bearer key and a JSON body (may be empty); returns the status and
    /// the response body.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.port,
            body.len()
        );
        // A kept-alive connection the server has since closed fails on first use: retry once
        // on a fresh one.
        for attempt in 0..2 {
            if self.stream.is_none() {
                let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
                tcp.set_nodelay(true)?;
                self.stream = Some(BufReader::new(tcp));
            }
            let Some(s) = self.stream.as_mut() else {
                continue;
            };
            match exchange(s, req.as_bytes()).await {
                Ok((status, keep, body)) => {
                    if !keep {
                        self.stream = None;
                    }
                    return Ok((status, body));
                }
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, "reconnecting");
                    self.stream = None;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("no connection")
    }
}

/// Writes a request and reads its response; returns the status, whether the connection stays
/// open, and the body.
async fn exchange(s: &mut BufReader<TcpStream>, req: &[u8]) -> anyhow::Result<(u16, bool, String)> {
    s.get_mut().write_all(req).await?;
    let mut line = String::new();
    if s.read_line(&mut line).await? == 0 {
        bail!("connection closed");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("malformed status line")?;
    let (mut length, mut chunked, mut keep) = (0usize, false, true);
    loop {
        line.clear();
        if s.read_line(&mut line).await? == 0 {
            bail!("connection closed in the headers");
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse().context("bad Content-Length")?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::with_capacity(length);
    if chunked {
        loop {
            line.clear();
            s.read_line(&mut line).await?;
            let n = usize::from_str_radix(line.trim(), 16).context("bad chunk size")?;
            let start = body.len();
            body.resize(start + n + 2, 0);
            s.read_exact(&mut body[start..]).await?;
            body.truncate(start + n); // the chunk's CRLF
            if n == 0 {
                break;
            }
        }
    } else {
        body.resize(length, 0);
        s.read_exact(&mut body).await?;
    }
    Ok((status, keep, String::from_utf8_lossy(&body).into_owned()))
}

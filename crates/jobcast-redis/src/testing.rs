//! Starting a real `redis-server` for tests: a private instance on a free loopback port, in a
//! temporary directory, with or without AOF (`appendfsync always`), stopped on drop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running redis-server owned by a test.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// Its working directory (AOF files live here).
    pub dir: PathBuf,
    aof: bool,
}

impl RedisServer {
    /// Starts an instance without persistence.
    pub fn start() -> std::io::Result<Self> {
        Self::start_in(
            std::env::temp_dir().join(format!(
                "jobcast-redis-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            )),
            false,
            None,
        )
    }

    /// Starts an instance with AOF (`appendfsync always`) in `dir`, on `port` if given.
    /// A free port is picked by binding port 0 and letting it go; another process may take it
    /// before redis-server does, so a start that fails that way is retried on another port.
    pub fn start_in(dir: PathBuf, aof: bool, port: Option<u16>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut last = None;
        for _ in 0..10 {
            let port = match port {
                Some(p) => p,
                None => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
            };
            let mut s = Self {
                child: None,
                port,
                dir: dir.clone(),
                aof,
            };
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e) => {
                    // Do not let drop remove the directory: the next try uses it.
                    s.kill();
                    std::mem::forget(s);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("redis-server did not start")))
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir);
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let pid = child.id();
        self.child = Some(child);
        wait_for_server(self.port, pid, Duration::from_secs(10))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (its AOF is replayed).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the redis-server with process id `pid` answers on `port` (and not another
/// process that happens to hold the port).
fn wait_for_server(port: u16, pid: u32, limit: Duration) -> std::io::Result<()> {
    let start = Instant::now();
    loop {
        match server_pid(port) {
            Some(p) if p == pid => return Ok(()),
            Some(other) => {
                return Err(std::io::Error::other(format!(
                    "port {port} is held by another redis-server (pid {other})"
                )));
            }
            None => {}
        }
        if start.elapsed() > limit {
            return Err(std::io::Error::other(format!(
                "redis-server did not listen on {port}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `process_id` that the server on `port` reports in `INFO server`.
fn server_pid(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("process_id:") || !buf.ends_with(b"\r\n") {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
}

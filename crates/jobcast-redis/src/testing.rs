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
    pub fn start_in(dir: PathBuf, aof: bool, port: Option<u16>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let port = match port {
            Some(p) => p,
            None => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let mut s = Self {
            child: None,
            port,
            dir,
            aof,
        };
        s.spawn()?;
        Ok(s)
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
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10))
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

fn wait_for_port(port: u16, limit: Duration) -> std::io::Result<()> {
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(std::io::Error::other(format!(
                "redis-server did not listen on {port}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

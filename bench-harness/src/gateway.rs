//! `--spawn-gateway CONFIG`: runs the gateway binary as a child for the length of a run,
//! waits for its `/readyz`, and stops it with SIGTERM (by pid) at the end.
//!
//! Why it exists: a benchmark that starts its own gateway is one command to reproduce,
//! and knowing the child's pid lets the harness sample its CPU and RSS (procstat) while
//! the load runs. The addresses come from the config through `ringgate::Config` (the
//! gateway's own loader, same RINGGATE_* overrides), so they cannot disagree.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A gateway process started by the harness.
pub struct SpawnedGateway {
    child: Child,
    pub pid: u32,
    pub admin: SocketAddr,
    /// The command that runs it (program and any subcommand), for messages.
    pub command: String,
    /// How long SIGTERM may take: the config's drain window, request timeout and
    /// `shutdown_grace_ms`.
    grace: Duration,
}

/// `target/release/ringgate` beside this binary (`target/release/ringgate-bench`), else
/// relative to the working directory.
pub fn default_bin() -> PathBuf {
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        for cand in [dir.join("ringgate"), dir.join("../release/ringgate")] {
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("target/release/ringgate")
}

/// The gateway to start: `bin` if given; else the `ringgate` binary beside this one if
/// it was built; else this binary's `gateway` subcommand, which runs the same library
/// the same way (so a fresh checkout that built only `ringgate-bench` still works).
/// Returns the program and the arguments that come before `--config`.
pub fn command(bin: Option<&Path>) -> anyhow::Result<(PathBuf, Vec<&'static str>)> {
    match bin {
        Some(b) if !b.is_file() => bail!(
            "gateway binary {} not found: build it with `cargo build --release -p ringgate` \
             or leave out --gateway-bin to use this binary's `gateway` subcommand",
            b.display()
        ),
        Some(b) => Ok((b.to_path_buf(), vec![])),
        None if default_bin().is_file() => Ok((default_bin(), vec![])),
        None => Ok((
            std::env::current_exe().context("locating ringgate-bench")?,
            vec!["gateway"],
        )),
    }
}

impl SpawnedGateway {
    /// Starts `bin --config CONFIG` and waits (up to `ready_timeout`) for `/readyz` = 200.
    /// The gateway's stderr goes to `log` if given, else is inherited.
    pub fn start(
        config: &Path,
        bin: Option<&Path>,
        log: Option<&Path>,
        ready_timeout: Duration,
    ) -> anyhow::Result<SpawnedGateway> {
        let env = ringgate::Config::process_env();
        let cfg = ringgate::Config::from_file(config, &env)
            .with_context(|| format!("gateway config {}", config.display()))?;
        let admin = resolve(&cfg.server.admin_listen)
            .with_context(|| format!("server.admin_listen of {}", config.display()))?;
        let listen = resolve(&cfg.server.listen)
            .with_context(|| format!("server.listen of {}", config.display()))?;
        if admin.port() == 0 || listen.port() == 0 {
            bail!(
                "{}: --spawn-gateway needs fixed ports in server.listen and server.admin_listen \
                 (port 0 cannot be found from outside)",
                config.display()
            );
        }
        let (bin, bin_args) = command(bin)?;
        if http_status(admin, "/readyz").is_some() {
            bail!("something already answers on the admin address {admin}: stop it first");
        }
        let mut cmd = Command::new(&bin);
        cmd.args(&bin_args)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::File::create(p)
                    .with_context(|| format!("gateway log {}", p.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut g = SpawnedGateway {
            pid: child.id(),
            child,
            admin,
            command: [bin.display().to_string()]
                .into_iter()
                .chain(bin_args.iter().map(|a| a.to_string()))
                .collect::<Vec<_>>()
                .join(" "),
            grace: Duration::from_millis(
                cfg.server.drain_window_ms
                    + cfg.backend.request_timeout_ms
                    + cfg.server.shutdown_grace_ms,
            ),
        };
        let deadline = Instant::now() + ready_timeout;
        loop {
            if let Some(st) = g.child.try_wait()? {
                bail!("gateway {} exited during startup with {st}", g.command);
            }
            if http_status(admin, "/readyz") == Some(200) {
                return Ok(g);
            }
            if Instant::now() > deadline {
                g.stop();
                bail!("gateway not ready on http://{admin}/readyz after {ready_timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM by pid, then wait for the grace period (+2 s); SIGKILL if still running.
    /// Returns the exit status as text.
    pub fn stop(&mut self) -> String {
        if let Ok(Some(st)) = self.child.try_wait() {
            return format!("had already exited with {st}");
        }
        // SAFETY: plain syscall on our own child's pid (not yet reaped: try_wait said so).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + self.grace + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    return match self.child.wait() {
                        Ok(st) => format!("killed after SIGTERM timed out ({st})"),
                        Err(e) => format!("killed after SIGTERM timed out ({e})"),
                    };
                }
            }
        }
    }
}

impl Drop for SpawnedGateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn resolve(s: &str) -> anyhow::Result<SocketAddr> {
    let mut a = s
        .to_socket_addrs()
        .with_context(|| format!("address `{s}`"))?
        .collect::<Vec<_>>();
    a.sort_by_key(|a| !a.is_ipv4());
    let mut addr = *a.first().context("no address")?;
    // A wildcard listener is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr)
}

/// The status code of `GET path` on `addr` (HTTP/1.0, short timeouts); None if no answer.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_tiny_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 256];
            let _ = c.read(&mut b).unwrap();
            c.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        assert_eq!(http_status(addr, "/readyz"), Some(503));
        t.join().unwrap();
        // Nobody listening: None.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(http_status(free, "/readyz"), None);
    }

    #[test]
    fn wildcard_resolves_to_loopback() {
        assert_eq!(
            resolve("0.0.0.0:9090").unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
    }
}

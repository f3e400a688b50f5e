//! The `ringgate` binary run as a child process: started with a config file, its log
//! read line by line on a thread (so a silent child cannot hang a test), signalled by
//! its pid, and stopped by its pid when the test ends, also when the test fails.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

pub struct GatewayProcess {
    child: Child,
    lines: Receiver<String>,
    /// Every line logged so far (for failure messages).
    pub log: String,
}

impl GatewayProcess {
    /// `ringgate --config path`, logging at `info` to a pipe.
    pub fn start(config: &std::path::Path) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringgate"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        GatewayProcess {
            child,
            lines,
            log: String::new(),
        }
    }

    /// Waits up to 10 s for a log line containing `needle`; returns it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line with {needle:?}:\n{}", self.log),
            }
        }
    }

    /// The client listener's address, from the "ringgate listening" line.
    pub fn wait_listening(&mut self) -> std::net::SocketAddr {
        let line = self.wait_log("ringgate listening");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .expect("the listen address is logged")
            .parse()
            .unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to the child this test started, by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.log.push_str(&line);
                    self.log.push('\n');
                }
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {limit:?}:\n{}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

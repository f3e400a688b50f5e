//! Outside programs the interop tests run (Node for Bannou's SDK, Python for a link
//! backend): running one with a timeout, asking a tool its version, and the folder
//! under the cargo target dir where `.ci/run` pre-installs what they need.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `$CARGO_TARGET_DIR/<name>`, else `target/<name>` in the package: the folders
/// `.ci/run` installs into (`sdk-interop`: Node's `ws`; `link-py`: a Python venv).
pub fn target_subdir(name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => manifest.join(t),
        _ => manifest.join("target"),
    };
    target.join(name)
}

/// `tool --version`, or None when it does not run.
pub fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with its output captured; past `timeout` the child is killed (by its pid)
/// and that is an error carrying what it printed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", shown(cmd)))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => Ok(Output {
            success: status.success(),
            status: status.to_string(),
            stdout,
            stderr,
        }),
        None => Err(format!(
            "`{}` did not finish within {timeout:?} and was killed\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
            shown(cmd)
        )),
    }
}

/// The command line without its environment (which may hold a token).
pub fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

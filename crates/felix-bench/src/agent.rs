//! The real `calico-felix` binary inside a node namespace: start, `/status` and `/readiness`
//! over HTTP (entered into the namespace), kill -9, restart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use calico_linux::testlab::LabNs;
use serde_json::Value;

use crate::{HarnessError, io_err, lab};

/// The health port every test Felix listens on (inside its own namespace).
pub const HEALTH_PORT: u16 = 9099;

/// Where the `calico-felix` binary is: `$FELIX_BIN`, else the workspace's
/// `target/{debug,release}/calico-felix`, the harness's own profile first.
pub fn felix_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FELIX_BIN") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    // The build of this harness's own profile first (a release benchmark must not pick up a
    // debug agent that a test run rebuilt more recently), then the other one.
    let profiles = if cfg!(debug_assertions) {
        ["debug", "release"]
    } else {
        ["release", "debug"]
    };
    profiles
        .iter()
        .map(|p| root.join(p).join("calico-felix"))
        .find(|p| p.is_file())
}

/// One HTTP response: status code and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub code: u16,
    pub body: String,
}

/// `GET path` on 127.0.0.1:port inside `ns` (HTTP/1.0, so the body is not chunked).
pub fn http_get(ns: &LabNs, port: u16, path: &str) -> Result<HttpResponse, HarnessError> {
    let a = SocketAddr::from(([127, 0, 0, 1], port));
    let raw = ns.netns().run(|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&a, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    let raw = raw.map_err(io_err(format!("GET {path} in {}", ns.name())))?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HarnessError::Failed(format!("GET {path}: bad response {raw:?}")))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok(HttpResponse { code, body })
}

/// Felix's `/status` document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub ready: bool,
    pub in_sync: bool,
    pub applied_revision: i64,
}

impl Status {
    pub fn parse(body: &str) -> Result<Status, HarnessError> {
        let v: Value = serde_json::from_str(body)
            .map_err(|e| HarnessError::Failed(format!("/status body {body:?}: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| HarnessError::Failed(format!("/status lacks {k}: {body}")))
        };
        Ok(Status {
            ready: field("ready")?.as_bool().unwrap_or(false),
            in_sync: field("in_sync")?.as_bool().unwrap_or(false),
            applied_revision: field("applied_revision")?.as_i64().unwrap_or(-1),
        })
    }
}

/// A running (or killed) `calico-felix` inside a node namespace.
pub struct Felix {
    binary: PathBuf,
    env: Vec<(String, String)>,
    pub log: PathBuf,
    child: Option<Child>,
    pub started: Instant,
}

impl Felix {
    /// Start Felix in `node` with the datastore environment `datastore_env` (e.g.
    /// `DATASTORE_TYPE`/`DATASTORE_PATH` or `ETCD_ENDPOINTS`) and extra `FELIX_*` settings.
    pub fn start(
        node: &LabNs,
        binary: &Path,
        node_name: &str,
        datastore_env: &[(&str, &str)],
        extra: &[(&str, &str)],
        dir: &Path,
    ) -> Result<Felix, HarnessError> {
        let mut env: Vec<(String, String)> = vec![
            ("FELIX_FELIXHOSTNAME".into(), node_name.into()),
            ("FELIX_HEALTHENABLED".into(), "true".into()),
            ("FELIX_HEALTHHOST".into(), "127.0.0.1".into()),
            ("FELIX_HEALTHPORT".into(), HEALTH_PORT.to_string()),
            ("FELIX_PROMETHEUSMETRICSENABLED".into(), "false".into()),
            (
                "FELIX_ENDPOINTSTATUSPATHPREFIX".into(),
                dir.join("run").display().to_string(),
            ),
            (
                "FELIX_LOGSEVERITYSCREEN".into(),
                std::env::var("FELIX_BENCH_LOG").unwrap_or_else(|_| "info".into()),
            ),
            ("RUST_BACKTRACE".into(), "1".into()),
        ];
        env.extend(
            datastore_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut f = Felix {
            binary: binary.to_path_buf(),
            env,
            log: dir.join("felix.log"),
            child: None,
            started: Instant::now(),
        };
        f.spawn(node)?;
        Ok(f)
    }

    fn spawn(&mut self, node: &LabNs) -> Result<(), HarnessError> {
        let bin = self.binary.display().to_string();
        self.started = Instant::now();
        self.child = Some(lab::spawn_in(node, &[&bin], &self.env, &self.log)?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (false after it exited or was killed).
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to `timeout` for a clean exit; returns the exit status code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start again with the same environment.
    pub fn restart(&mut self, node: &LabNs) -> Result<(), HarnessError> {
        self.kill9();
        self.spawn(node)
    }

    pub fn status(&self, node: &LabNs) -> Result<Status, HarnessError> {
        let r = http_get(node, HEALTH_PORT, "/status")?;
        Status::parse(&r.body)
    }

    /// `/readiness` status code.
    pub fn readiness(&self, node: &LabNs) -> Result<u16, HarnessError> {
        Ok(http_get(node, HEALTH_PORT, "/readiness")?.code)
    }

    /// Wait until `/status` says ready with `applied_revision >= revision`; returns the time
    /// since [`Felix::started`]. Errors with the log tail on timeout or when Felix exited.
    pub fn wait_applied(
        &mut self,
        node: &LabNs,
        revision: i64,
        timeout: Duration,
    ) -> Result<Duration, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.status(node) {
                Ok(s) if s.ready && s.applied_revision >= revision => {
                    return Ok(self.started.elapsed());
                }
                Ok(s) => last = format!("{s:?}"),
                Err(e) => last = e.to_string(),
            }
            if !self.running() {
                return Err(HarnessError::Failed(format!(
                    "calico-felix exited while waiting for revision {revision}; log tail:\n{}",
                    self.log_tail(30)
                )));
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Failed(format!(
                    "calico-felix did not apply revision {revision} within {timeout:?} (last: {last}); log tail:\n{}",
                    self.log_tail(30)
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Resident set size of the process (kB from /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib_of(self.pid()?)
    }
}

impl Drop for Felix {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_parses_contract_document() {
        let s =
            Status::parse(r#"{"ready": true, "in_sync": false, "applied_revision": 42}"#).unwrap();
        assert_eq!(
            s,
            Status {
                ready: true,
                in_sync: false,
                applied_revision: 42
            }
        );
        assert!(Status::parse(r#"{"ready": true}"#).is_err());
        assert!(Status::parse("not json").is_err());
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib_of(std::process::id()).unwrap() > 100);
    }
}

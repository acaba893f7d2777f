//! Helpers for tests that run the real `calico-felix` binary inside a lab namespace
//! (`calico_linux::testlab`): start it with the right environment, query its `/status`, and
//! wait until a datastore revision is programmed.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use calico_linux::testlab::LabNs;
//! use felix::testsupport::{FelixLab, FelixOptions};
//! let node = LabNs::new("node")?;
//! let opts = FelixOptions::embedded("node1", "/tmp/lab/calico.db", "/tmp/lab/run");
//! // `bin` is env!("CARGO_BIN_EXE_calico-felix") in an integration test of this crate.
//! let felix = FelixLab::start(&node, "/path/to/calico-felix", &opts)?;
//! felix.wait_applied(42, std::time::Duration::from_secs(10))?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use calico_linux::testlab::{LabError, LabNs};

use crate::status::StatusDoc;

/// Errors of the helpers.
#[derive(Debug, thiserror::Error)]
pub enum TestSupportError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("felix in {ns}: {message}")]
    Felix { ns: String, message: String },
}

/// How to start Felix.
#[derive(Debug, Clone)]
pub struct FelixOptions {
    /// Extra environment, e.g. `("FELIX_DEFAULTENDPOINTTOHOSTACTION", "Accept")`.
    pub env: Vec<(String, String)>,
    /// Health port inside the namespace (each namespace has its own port space).
    pub health_port: u16,
    /// Where the log goes (`FELIX_LOGFILEPATH`), if anywhere.
    pub log_file: Option<PathBuf>,
}

impl FelixOptions {
    /// Embedded datastore at `db`, node `node`, endpoint status files under `run_dir`,
    /// health on 127.0.0.1:9099, metrics on 9091, debug log in `run_dir/felix.log`.
    pub fn embedded(node: &str, db: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        let db: PathBuf = db.into();
        let run: PathBuf = run_dir.into();
        let env = vec![
            ("DATASTORE_TYPE".to_string(), "embedded".to_string()),
            ("DATASTORE_PATH".to_string(), db.display().to_string()),
            (
                "CALICO_DATASTORE_PATH".to_string(),
                db.display().to_string(),
            ),
            ("FELIX_FELIXHOSTNAME".to_string(), node.to_string()),
            ("FELIX_HEALTHENABLED".to_string(), "true".to_string()),
            ("FELIX_HEALTHHOST".to_string(), "127.0.0.1".to_string()),
            ("FELIX_HEALTHPORT".to_string(), "9099".to_string()),
            (
                "FELIX_PROMETHEUSMETRICSENABLED".to_string(),
                "true".to_string(),
            ),
            (
                "FELIX_PROMETHEUSMETRICSHOST".to_string(),
                "127.0.0.1".to_string(),
            ),
            (
                "FELIX_ENDPOINTSTATUSPATHPREFIX".to_string(),
                run.display().to_string(),
            ),
            ("FELIX_LOGSEVERITYSCREEN".to_string(), "Debug".to_string()),
        ];
        FelixOptions {
            env,
            health_port: 9099,
            log_file: Some(run.join("felix.log")),
        }
    }

    /// Adds or replaces one variable.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// A running Felix in a lab namespace (stopped with the namespace, or by [`FelixLab::stop`]).
pub struct FelixLab<'a> {
    ns: &'a LabNs,
    pub pid: u32,
    pub health_port: u16,
    pub log_file: Option<PathBuf>,
}

impl<'a> FelixLab<'a> {
    /// Starts `bin` inside `ns` through `env(1)`, so the environment is exactly `opts.env`
    /// on top of the caller's.
    pub fn start(ns: &'a LabNs, bin: &str, opts: &FelixOptions) -> Result<Self, TestSupportError> {
        let mut argv: Vec<String> = vec!["env".into()];
        for (k, v) in &opts.env {
            argv.push(format!("{k}={v}"));
        }
        if let Some(log) = &opts.log_file {
            argv.push(format!("FELIX_LOGFILEPATH={}", log.display()));
        }
        argv.push(bin.to_string());
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let pid = ns.spawn(&refs)?;
        Ok(FelixLab {
            ns,
            pid,
            health_port: opts.health_port,
            log_file: opts.log_file.clone(),
        })
    }

    /// `GET path` on the health port; (status code, body).
    pub fn get(&self, path: &str) -> Result<(u16, String), TestSupportError> {
        http_get(self.ns, self.health_port, path)
    }

    /// The `/status` document, if Felix answers.
    pub fn status(&self) -> Option<StatusDoc> {
        let (code, body) = self.get("/status").ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// Waits until Felix is ready and `applied_revision >= rev`.
    pub fn wait_applied(&self, rev: i64, timeout: Duration) -> Result<StatusDoc, TestSupportError> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(s) = self.status() {
                if s.ready && s.applied_revision >= rev {
                    return Ok(s);
                }
                last = Some(s);
            }
            if !self.alive() {
                return Err(self.err(format!("process {} exited", self.pid)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.err(format!(
            "not ready with applied_revision >= {rev} after {timeout:?} (last status {last:?})"
        )))
    }

    /// Whether the process is still running.
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| {
                // state is the field after the parenthesised comm
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|st| st != "Z" && st != "X")
            })
            .unwrap_or(false)
    }

    /// The log so far (empty without a log file).
    pub fn log(&self) -> String {
        self.log_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn stop(&self, timeout: Duration) -> bool {
        // SAFETY-free: kill(1) keeps this crate without unsafe.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn err(&self, message: String) -> TestSupportError {
        TestSupportError::Felix {
            ns: self.ns.name().to_string(),
            message,
        }
    }
}

/// A minimal HTTP/1.0 GET to 127.0.0.1:`port` made from inside `ns`.
pub fn http_get(ns: &LabNs, port: u16, path: &str) -> Result<(u16, String), TestSupportError> {
    let path = path.to_string();
    let res = ns
        .netns()
        .run(move || -> std::io::Result<(u16, String)> {
            let mut s = TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(1),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            let code = buf
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = buf
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            Ok((code, body))
        })
        .map_err(|e| TestSupportError::Felix {
            ns: ns.name().to_string(),
            message: e.to_string(),
        })?;
    res.map_err(|e| TestSupportError::Felix {
        ns: ns.name().to_string(),
        message: format!("GET {port}: {e}"),
    })
}

//! A throw-away etcd (Debian `etcd-server`) inside a lab namespace (on that namespace's
//! loopback, so Felix running in the same namespace reaches it and the root namespace is never
//! involved), data on a temp dir; can be stopped (SIGKILL) and restarted on the same port and
//! data; killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;

use calico_linux::NetNs;
use calico_linux::testlab::LabNs;
use std::time::{Duration, Instant};

use crate::HarnessError;

pub const ETCD_BIN: &str = "/usr/bin/etcd";

pub struct Etcd {
    netns: NetNs,
    ns_name: String,
    child: Option<Child>,
    dir: PathBuf,
    pub client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Whether the etcd binary is installed.
    pub fn available() -> bool {
        Path::new(ETCD_BIN).is_file()
    }

    /// Start etcd inside `ns` (a handle to the namespace is kept) on 127.0.0.1:2379.
    pub fn start(ns: &LabNs, dir: &Path) -> Result<Etcd, HarnessError> {
        let mut e = Etcd {
            netns: ns.netns().clone(),
            ns_name: ns.name().to_string(),
            child: None,
            dir: dir.to_path_buf(),
            client_port: 2379,
            peer_port: 2380,
        };
        e.resume()?;
        Ok(e)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kill etcd (clients see connection refused).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start (again) on the same ports and data dir and wait until healthy.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        self.stop();
        let log_path = self.dir.join("etcd.log");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let argv: Vec<String> = vec![
            ETCD_BIN.to_string(),
            "--name=felix-ft".into(),
            format!("--data-dir={}", self.dir.join("data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=felix-ft={peer}"),
            "--heartbeat-interval=10".into(),
            "--election-timeout=100".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let child = crate::lab::spawn_in_netns(&self.netns, &self.ns_name, &argv, &[], &log_path)?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.healthy() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(HarnessError::Failed(format!(
                    "etcd exited with {st}; see {}",
                    log_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::Failed("etcd not healthy after 20 s".into()))
    }

    /// `GET /health` says true.
    pub fn healthy(&self) -> bool {
        let port = self.client_port;
        self.netns
            .run(|| {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut out = String::new();
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
                    && s.read_to_string(&mut out).is_ok()
                    && out.contains("\"health\":\"true\"")
            })
            .unwrap_or(false)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

//! A generic child supervisor: runs one program in its own process group, restarts it when it
//! dies (with a short backoff), and on stop sends SIGTERM to the group, then SIGKILL after a
//! grace period. Used for `calico-felix` and `bird`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Short name for logs (`felix`, `bird`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where stdout/stderr go; `None` = inherit.
    pub log_file: Option<PathBuf>,
    /// Delay before a restart.
    pub restart_delay: Duration,
    /// SIGTERM → SIGKILL grace.
    pub stop_grace: Duration,
}

impl ChildSpec {
    pub fn new(name: &str, program: impl Into<PathBuf>, args: Vec<String>) -> Self {
        ChildSpec {
            name: name.into(),
            program: program.into(),
            args,
            env: Vec::new(),
            log_file: None,
            restart_delay: Duration::from_millis(500),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// Live facts about a supervised child.
#[derive(Debug, Default)]
pub struct ChildStatus {
    /// Pid of the running child (0 while none runs).
    pub pid: AtomicU32,
    /// How many times it has been started.
    pub starts: AtomicU64,
}

fn spawn(spec: &ChildSpec) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(path) = &spec.log_file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        cmd.stdout(f.try_clone()?).stderr(f);
    }
    cmd.spawn()
}

async fn stop_child(spec: &ChildSpec, child: &mut Child) {
    if let Some(pid) = child.id() {
        let pg = Pid::from_raw(pid as i32);
        let _ = killpg(pg, Signal::SIGTERM);
        if tokio::time::timeout(spec.stop_grace, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(child = %spec.name, pid, "did not stop after SIGTERM; killing");
            let _ = killpg(pg, Signal::SIGKILL);
            let _ = child.wait().await;
        } else {
            // Whatever it left in its group goes too.
            let _ = killpg(pg, Signal::SIGKILL);
        }
    }
}

/// Runs `spec` until `stop` becomes true, restarting it whenever it exits.
pub async fn supervise(spec: ChildSpec, status: Arc<ChildStatus>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let mut child = match spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(child = %spec.name, program = %spec.program.display(), error = %e, "cannot start");
                tokio::select! {
                    _ = tokio::time::sleep(spec.restart_delay.max(Duration::from_secs(1))) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let pid = child.id().unwrap_or(0);
        status.pid.store(pid, Ordering::SeqCst);
        status.starts.fetch_add(1, Ordering::SeqCst);
        tracing::info!(child = %spec.name, pid, "started");
        tokio::select! {
            res = child.wait() => {
                status.pid.store(0, Ordering::SeqCst);
                tracing::warn!(child = %spec.name, pid, status = ?res, "exited; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(spec.restart_delay) => {}
                    _ = stop.changed() => return,
                }
            }
            _ = stop.changed() => {
                tracing::info!(child = %spec.name, pid, "stopping");
                stop_child(&spec, &mut child).await;
                status.pid.store(0, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// `name` next to the running executable, else the bare name (found on PATH).
pub fn sibling_or_path(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn restarts_a_dying_child_and_stops_a_running_one() {
        let mut spec = ChildSpec::new("sh", "/bin/sh", vec!["-c".into(), "sleep 0.1".into()]);
        spec.restart_delay = Duration::from_millis(50);
        let status = Arc::new(ChildStatus::default());
        let (tx, rx) = watch::channel(false);
        let h = tokio::spawn(supervise(spec, status.clone(), rx));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            status.starts.load(Ordering::SeqCst) >= 3,
            "restarts: {:?}",
            status
        );

        // A long-running child is stopped with SIGTERM, its whole group included.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        tx.send(true).unwrap();
        h.await.unwrap();
        let spec = ChildSpec::new("sh", "/bin/sh", vec!["-c".into(), script]);
        let status = Arc::new(ChildStatus::default());
        let (tx, rx) = watch::channel(false);
        let h = tokio::spawn(supervise(spec, status.clone(), rx));
        for _ in 0..100 {
            if marker.exists() && !std::fs::read_to_string(&marker).unwrap().trim().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pid = status.pid.load(Ordering::SeqCst);
        assert!(pid > 0);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.pid.load(Ordering::SeqCst), 0);
        // The grandchild is gone too (or a zombie reaped by init soon after).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let alive = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        assert!(!alive, "grandchild {grandchild} survived");
    }
}

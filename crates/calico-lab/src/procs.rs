//! Processes of a lab: started inside a lab namespace in their own process group, tagged with
//! [`LAB_TAG_ENV`], found again (by tag or by namespace) and stopped.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::LabError;
use crate::names::LAB_TAG_ENV;

/// A command to run inside a lab namespace (`ip netns exec`, which also gives it the
/// namespace's view of `/sys`).
pub struct InNs<'a> {
    pub lab: &'a str,
    pub netns: &'a str,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl InNs<'_> {
    fn command(&self) -> Result<Command, LabError> {
        if self.argv.is_empty() {
            return Err(LabError::command(
                format!("netns {}", self.netns),
                "empty command",
            ));
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns])
            .args(&self.argv)
            .env(LAB_TAG_ENV, self.lab);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    fn what(&self) -> String {
        format!("netns {}: {}", self.netns, self.argv.join(" "))
    }

    /// Start a daemon: own process group (never killed with the caller's group), output
    /// appended to `log`. `ip netns exec` execs the program, so the pid is the daemon's.
    pub fn spawn(&self, log: &Path) -> Result<Child, LabError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| LabError::io(log, e))?;
        let err = out.try_clone().map_err(|e| LabError::io(log, e))?;
        self.command()?
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| LabError::command(self.what(), e.to_string()))
    }

    /// Run to completion with `stdin`; the output whatever the exit status.
    pub fn output(&self, stdin: Option<&[u8]>, timeout: Duration) -> Result<Output, LabError> {
        let mut child = self
            .command()?
            .process_group(0)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::command(self.what(), e.to_string()))?;
        if let (Some(data), Some(mut sin)) = (stdin, child.stdin.take()) {
            sin.write_all(data)
                .map_err(|e| LabError::command(self.what(), format!("write stdin: {e}")))?;
        }
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(timeout) {
            Ok(r) => r.map_err(|e| LabError::command(self.what(), e.to_string())),
            Err(_) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                Err(LabError::Timeout {
                    what: self.what(),
                    secs: timeout.as_secs_f64(),
                    detail: "killed".into(),
                })
            }
        }
    }

    /// Run to completion; error (with stderr) unless it exits 0. Returns stdout.
    pub fn run_ok(&self, stdin: Option<&[u8]>, timeout: Duration) -> Result<String, LabError> {
        let out = self.output(stdin, timeout)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(LabError::command(
                self.what(),
                format!(
                    "{}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            ))
        }
    }
}

/// `ip <args>` (always with `-n <ns>` or `netns …` in `args`; never the root namespace).
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::command(format!("ip {}", args.join(" ")), e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::command(
            format!("ip {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Every pid on the machine.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The value of the lab tag in a process's environment.
pub fn lab_tag_of(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        kv.strip_prefix(LAB_TAG_ENV)?
            .strip_prefix('=')
            .map(str::to_string)
    })
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Live processes tagged for `lab` (any lab when `None`), as (pid, lab).
pub fn tagged(lab: Option<&str>) -> Vec<(u32, String)> {
    let own = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&p| p != own)
        .filter_map(|p| lab_tag_of(p).map(|t| (p, t)))
        .filter(|(p, t)| lab.is_none_or(|l| l == t) && alive(*p))
        .collect()
}

/// Live processes whose network namespace is the named namespace.
pub fn in_netns(name: &str) -> Vec<u32> {
    let Ok(meta) = std::fs::metadata(Path::new("/run/netns").join(name)) else {
        return Vec::new();
    };
    let ino = meta.ino();
    let own = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&p| p != own)
        .filter(|&p| std::fs::metadata(format!("/proc/{p}/ns/net")).is_ok_and(|m| m.ino() == ino))
        .filter(|&p| alive(p))
        .collect()
}

/// SIGTERM, then SIGKILL whatever is still alive after `grace`.
pub fn stop(pids: &[u32], grace: Duration) {
    let own = std::process::id();
    let pids: Vec<u32> = pids.iter().copied().filter(|&p| p != own).collect();
    for &p in &pids {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in &pids {
        if alive(p) {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Convenience: an argv from anything string-like.
pub fn argv<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    items
        .into_iter()
        .map(|s| s.as_ref().to_string_lossy().into_owned())
        .collect()
}

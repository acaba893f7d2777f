//! The namespace lab every kernel-touching test of the project uses.
//!
//! * [`LabNs::new`] creates a named namespace `crs<pid-hex>-<tag><n>` (the prefix encodes the
//!   creating process so [`sweep`] can tell leftovers of dead runs from namespaces of tests
//!   running right now), brings `lo` up, and deletes everything on drop — also when the test
//!   panics: processes started inside are killed first, then the namespace is deleted.
//! * Commands run inside the namespace are spawned from a thread that entered it (see
//!   [`crate::netns`]); processes started with [`LabNs::spawn`] also carry the environment
//!   variable [`LAB_ENV`] naming their namespace, so a later [`sweep`] finds them even after
//!   their namespace name is gone.
//! * Nothing here touches the root namespace: every link, route, sysctl and nft command is
//!   issued inside a lab namespace (`ip -n <ns>` or a spawned-in-namespace process).
//!
//! Interface names are limited to 15 bytes; [`ifname`] builds short unique ones.
//!
//! Liveness: each run holds an exclusive `flock` on `/run/calico-rs-lab/crs<pid>.lock` from its
//! first `LabNs` until it exits (the kernel drops the lock when the process dies, however it
//! dies). `sweep` deletes only namespaces whose owner's lock is free (or, without a lock
//! file, whose owner pid is gone), and removes the dead runs' lock files. The first
//! `LabNs::new` of every process runs [`sweep_stale`].

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::{self, NetNs, NetnsError};

/// Every lab namespace of this project starts with this.
pub const PROJECT_PREFIX: &str = "crs";

/// Environment variable set on processes spawned in a lab namespace (value: namespace name).
pub const LAB_ENV: &str = "CALICO_RS_LAB_NS";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Lab errors.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("lab netns {ns}: {cmd}: {detail}")]
    Command {
        ns: String,
        cmd: String,
        detail: String,
    },
}

/// Directory of per-run lock files: a run holds an exclusive `flock` on
/// `<LOCK_DIR>/<run prefix>.lock` for its whole life, so [`sweep`] can tell a live run from a
/// dead one even across PID namespaces or after PID reuse.
pub const LOCK_DIR: &str = "/run/calico-rs-lab";

/// The prefix of namespaces created by this process: `crs<pid in hex>`.
pub fn run_prefix() -> String {
    format!("{PROJECT_PREFIX}{:x}", std::process::id())
}

static RUN_LOCK: std::sync::OnceLock<Option<Flock<std::fs::File>>> = std::sync::OnceLock::new();

fn lock_path(owner_prefix: &str) -> std::path::PathBuf {
    std::path::Path::new(LOCK_DIR).join(format!("{owner_prefix}.lock"))
}

/// Take this run's lock (once). Failure only weakens [`sweep`]'s liveness check to the pid
/// test, so it is logged, not fatal.
fn hold_run_lock() {
    RUN_LOCK.get_or_init(|| {
        let path = lock_path(&run_prefix());
        let file = std::fs::create_dir_all(LOCK_DIR).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        });
        match file.map(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock)) {
            Ok(Ok(lock)) => Some(lock),
            Ok(Err((_, errno))) => {
                tracing::warn!(path = %path.display(), %errno, "lab: cannot lock run file");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "lab: cannot create run lock");
                None
            }
        }
    });
}

/// Whether the run that owns `owner_prefix` (`crs<pid hex>`) is still alive.
fn owner_alive(owner_prefix: &str, pid: u32) -> bool {
    if owner_prefix == run_prefix() {
        return true;
    }
    match std::fs::File::open(lock_path(owner_prefix)) {
        // Somebody holds the lock: alive. We got it: the owner is gone (the lock is released
        // again when the Flock drops here).
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
        Err(_) => pid_alive(pid),
    }
}

/// A short unique interface name `<tag><n>` of at most 15 bytes (tag is truncated).
pub fn ifname(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("{n:x}");
    let keep = crate::MAX_IFNAME_LEN.saturating_sub(suffix.len());
    let tag: String = tag.chars().take(keep).collect();
    format!("{tag}{suffix}")
}

/// Whether lab tests can run here: root and the `ip` tool present. When they cannot, prints a
/// loud SKIP line naming the test and the reason, and returns false.
pub fn lab_available(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("not running as root".to_string())
    } else {
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "`ip -V` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Some(format!("cannot run `ip`: {e}")),
        }
    };
    match reason {
        None => true,
        Some(r) => {
            eprintln!("SKIP {test}: network lab unavailable: {r}");
            false
        }
    }
}

/// A lab namespace; deleted (with everything running in it) on drop.
#[derive(Debug)]
pub struct LabNs {
    name: String,
    ns: NetNs,
    children: Mutex<Vec<Child>>,
}

impl LabNs {
    /// Create `crs<pid>-<tag><n>` with `lo` up.
    pub fn new(tag: &str) -> Result<LabNs, LabError> {
        hold_run_lock();
        // Once per process: clear what killed runs left behind (never touches live runs).
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| match sweep_stale() {
            Ok(r) if r != SweepReport::default() => {
                tracing::info!(namespaces = ?r.namespaces, killed = ?r.killed, "lab: swept leftovers");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lab: sweep failed"),
        });
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{tag}{n}", run_prefix());
        let ns = netns::create_named(&name)?;
        let lab = LabNs {
            name,
            ns,
            children: Mutex::new(Vec::new()),
        };
        lab.ip(&["link", "set", "lo", "up"])?;
        Ok(lab)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    /// `ip -n <ns> <args>`; returns stdout, errors carry stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        let out = cmd
            .output()
            .map_err(|e| self.cmd_err(args, e.to_string()))?;
        self.check(&["ip"].iter().chain(args).copied().collect::<Vec<_>>(), out)
    }

    /// Run `argv` inside the namespace and wait; returns the output whatever the status.
    pub fn exec(&self, argv: &[&str]) -> Result<Output, LabError> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| self.cmd_err(argv, "empty command".into()))?;
        let result = self.ns.run(|| {
            Command::new(prog)
                .args(args)
                .env(LAB_ENV, &self.name)
                .stdin(Stdio::null())
                .output()
        })?;
        result.map_err(|e| self.cmd_err(argv, e.to_string()))
    }

    /// Run `argv` inside the namespace; error unless it exits 0. Returns stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String, LabError> {
        let out = self.exec(argv)?;
        self.check(argv, out)
    }

    /// Start a long-running process inside the namespace in its own process group. It is
    /// killed when the `LabNs` is dropped. Returns its pid.
    pub fn spawn(&self, argv: &[&str]) -> Result<u32, LabError> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| self.cmd_err(argv, "empty command".into()))?;
        let child = self.ns.run(|| {
            Command::new(prog)
                .args(args)
                .env(LAB_ENV, &self.name)
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })?;
        let child = child.map_err(|e| self.cmd_err(argv, e.to_string()))?;
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        Ok(pid)
    }

    /// Write a sysctl inside the namespace, e.g. `("net.ipv4.ip_forward", "1")`.
    pub fn sysctl(&self, name: &str, value: &str) -> Result<(), LabError> {
        use crate::sysctl::{ProcSysctl, Sysctl};
        ProcSysctl::in_netns(self.ns.clone())
            .set(name, value)
            .map_err(|e| self.cmd_err(&["sysctl", name], e.to_string()))
    }

    /// Create a veth pair: `local` here, `remote` in `other`.
    pub fn veth_to(&self, local: &str, other: &LabNs, remote: &str) -> Result<(), LabError> {
        self.ip(&[
            "link",
            "add",
            local,
            "type",
            "veth",
            "peer",
            "name",
            remote,
            "netns",
            &other.name,
        ])?;
        Ok(())
    }

    /// Ping `dst` from inside (`count` echoes, 3 s deadline); true when it got answers.
    /// Uses `ping` from PATH, or `busybox ping` where iputils is not installed.
    pub fn ping(&self, dst: &str, count: u32) -> Result<bool, LabError> {
        let count = count.to_string();
        let args = ["ping", "-q", "-c", &count, "-w", "3", dst];
        let out = if binary_in_path("ping") {
            self.exec(&args)?
        } else {
            let mut argv = vec!["busybox"];
            argv.extend(args);
            self.exec(&argv)?
        };
        Ok(out.status.success())
    }

    /// Pids of every process whose network namespace is this one (by nsfs inode).
    pub fn processes_inside(&self) -> Vec<u32> {
        match self.ns.inode() {
            Ok(ino) => pids_in_netns(ino),
            Err(_) => Vec::new(),
        }
    }

    fn cmd_err(&self, argv: &[&str], detail: String) -> LabError {
        LabError::Command {
            ns: self.name.clone(),
            cmd: argv.join(" "),
            detail,
        }
    }

    fn check(&self, argv: &[&str], out: Output) -> Result<String, LabError> {
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(self.cmd_err(
                argv,
                format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ))
        }
    }
}

impl Drop for LabNs {
    fn drop(&mut self) {
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Anything else living in the namespace (started by the test some other way).
        let own = std::process::id();
        for pid in self.processes_inside() {
            if pid != own {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if let Err(e) = netns::delete_named(&self.name) {
            tracing::warn!(netns = %self.name, error = %e, "lab: cannot delete namespace");
            eprintln!("lab: cannot delete namespace {}: {e}", self.name);
        }
    }
}

/// Whether an executable named `name` is on PATH.
pub fn binary_in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// What [`sweep`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub namespaces: Vec<String>,
    pub killed: Vec<u32>,
}

/// Pid encoded in a lab namespace name `crs<pid hex>-...`, if the name has that shape.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PROJECT_PREFIX)?;
    let (hex, _) = rest.split_once('-')?;
    u32::from_str_radix(hex, 16).ok()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn netns_inode_of(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

fn pids_in_netns(ino: u64) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| netns_inode_of(p) == Some(ino))
        .collect()
}

fn lab_env_of(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        kv.strip_prefix(LAB_ENV)?
            .strip_prefix('=')
            .map(str::to_string)
    })
}

/// Remove leftovers of killed runs: every named namespace starting with `prefix` (which must
/// start with [`PROJECT_PREFIX`]) whose creating process is gone, with the processes inside
/// it, and every process tagged with [`LAB_ENV`] for such a namespace (or for one that no
/// longer exists). Namespaces of live runs — including this process — are left alone.
pub fn sweep(prefix: &str) -> Result<SweepReport, LabError> {
    if !prefix.starts_with(PROJECT_PREFIX) {
        return Err(LabError::Command {
            ns: prefix.to_string(),
            cmd: "sweep".into(),
            detail: format!("refusing to sweep a prefix outside {PROJECT_PREFIX:?}"),
        });
    }
    let own = std::process::id();
    let stale = |name: &str| -> bool {
        let Some(pid) = owner_pid(name) else {
            return false;
        };
        let owner = name.split('-').next().unwrap_or(name);
        name.starts_with(prefix) && pid != own && !owner_alive(owner, pid)
    };
    let mut report = SweepReport::default();
    let existing: BTreeSet<String> = netns::list_named()?.into_iter().collect();

    let kill_pid = |pid: u32, report: &mut SweepReport| {
        if pid != own && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok() {
            report.killed.push(pid);
        }
    };

    for name in existing.iter().filter(|n| stale(n)) {
        if let Ok(ns) = NetNs::named(name)
            && let Ok(ino) = ns.inode()
        {
            for pid in pids_in_netns(ino) {
                kill_pid(pid, &mut report);
            }
        }
        match netns::delete_named(name) {
            Ok(()) => report.namespaces.push(name.clone()),
            Err(e) => tracing::warn!(netns = %name, error = %e, "sweep: cannot delete"),
        }
    }
    // Tagged processes whose namespace is stale or already gone.
    for pid in all_pids() {
        if let Some(ns) = lab_env_of(pid)
            && ns.starts_with(prefix)
            && (stale(&ns) || (!existing.contains(&ns) && owner_pid(&ns) != Some(own)))
        {
            kill_pid(pid, &mut report);
        }
    }
    // Lock files of dead runs.
    if let Ok(dir) = std::fs::read_dir(LOCK_DIR) {
        for entry in dir.filter_map(|e| e.ok()) {
            let file_name = entry.file_name();
            let Some(owner) = file_name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            if let Some(pid) = owner_pid(&format!("{owner}-"))
                && owner.starts_with(prefix.split('-').next().unwrap_or(prefix))
                && !owner_alive(owner, pid)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    report.killed.sort_unstable();
    report.killed.dedup();
    Ok(report)
}

/// [`sweep`] over the whole project prefix.
pub fn sweep_stale() -> Result<SweepReport, LabError> {
    sweep(PROJECT_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames_fit_the_kernel_limit_and_are_unique() {
        let a = ifname("calitestlongname");
        let b = ifname("calitestlongname");
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
        assert!(ifname("v").starts_with('v'));
    }

    #[test]
    fn owner_pid_parses_our_names_only() {
        assert_eq!(owner_pid("crs1f-n10"), Some(0x1f));
        assert_eq!(
            owner_pid(&format!("{}-x0", run_prefix())),
            Some(std::process::id())
        );
        assert_eq!(owner_pid("fz-n1"), None);
        assert_eq!(owner_pid("crsxyz-n1"), None);
        assert_eq!(owner_pid("crs12"), None);
    }

    #[test]
    fn sweep_refuses_foreign_prefixes() {
        let err = sweep("fz-").unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}

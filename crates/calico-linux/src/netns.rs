//! Network namespaces: open by path, run code inside one, create and delete named ones.
//!
//! Running inside a namespace always happens on a thread spawned for that purpose
//! ([`NetNs::run`]): `setns(2)` changes the namespace of the calling *thread*, so doing it on a
//! dedicated thread means the caller (and every tokio worker) never changes namespace, and the
//! changed thread simply ends afterwards. nix's `setns` wrapper is safe, so this crate needs no
//! `unsafe`.
//!
//! Sockets (netlink included) are bound to the namespace of the thread that *created* them and
//! stay there wherever they are used afterwards; [`crate::RtNetlink::connect_in`] relies on it.
//!
//! Named namespaces are created and deleted with `ip netns add|del` (iproute2). That keeps the
//! exact on-disk convention (`/run/netns/<name>`, a bind mount of the namespace file on a
//! shared mount point) every other tool (`ip -n`, `ip netns exec`, podman, `nsenter`) expects,
//! without reimplementing iproute2's mount-propagation dance. Only the test lab creates named
//! namespaces; the CNI plugin and Felix only open existing ones.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};

/// Where iproute2 keeps named namespaces (`/var/run` is a symlink to `/run`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors from namespace operations, each naming the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("netns {path}: open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("netns {path}: setns: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("netns {path}: spawn thread: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("netns {name}: invalid name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("netns {name}: {action}: {detail}")]
    Command {
        name: String,
        action: &'static str,
        detail: String,
    },
    #[error("netns {path}: runtime: {source}")]
    Runtime {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An open handle on a network namespace (an fd on its nsfs file). Cloning is cheap and shares
/// the fd; the namespace stays alive as long as a handle is open, even if its name is deleted.
#[derive(Clone, Debug)]
pub struct NetNs {
    path: PathBuf,
    file: Arc<File>,
}

impl NetnsError {
    /// The namespace file does not exist (CNI DEL treats a vanished netns as success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetnsError::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

impl NetNs {
    /// Open a namespace file (`/run/netns/<name>`, `/proc/<pid>/ns/net`, a CNI_NETNS path).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(NetNs {
            path,
            file: Arc::new(file),
        })
    }

    /// Open the named namespace `/run/netns/<name>`.
    pub fn named(name: &str) -> Result<NetNs, NetnsError> {
        validate_name(name)?;
        NetNs::open(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Open the namespace process `pid` lives in.
    pub fn of_pid(pid: u32) -> Result<NetNs, NetnsError> {
        NetNs::open(format!("/proc/{pid}/ns/net"))
    }

    /// Open the namespace of the process (its main thread) — the "host" namespace for the CNI
    /// plugin, whatever thread asks.
    pub fn process() -> Result<NetNs, NetnsError> {
        NetNs::open("/proc/self/ns/net")
    }

    /// Open the calling thread's namespace.
    pub fn current() -> Result<NetNs, NetnsError> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// The path this handle was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number: two handles refer to the same namespace iff (dev, inode)
    /// match; on one machine the inode alone is what `ip netns identify` compares.
    pub fn inode(&self) -> Result<u64, NetnsError> {
        self.file
            .metadata()
            .map(|m| m.ino())
            .map_err(|source| NetnsError::Open {
                path: self.path.clone(),
                source,
            })
    }

    /// Run `f` on a new thread that has entered this namespace, and return its result. The
    /// caller's thread is never moved. A panic in `f` is propagated to the caller.
    pub fn run<F, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns".to_string())
                .spawn_scoped(scope, || -> Result<T, NetnsError> {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Enter {
                            path: self.path.clone(),
                            source,
                        }
                    })?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Thread {
                    path: self.path.clone(),
                    source,
                })?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Move the calling thread into this namespace for good. Only for a process whose thread
    /// has nothing else to do, such as a short-lived helper process started to make one
    /// request inside a namespace; everything else uses [`NetNs::run`], which never moves the
    /// caller.
    pub fn enter_for_good(&self) -> Result<(), NetnsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: self.path.clone(),
            source,
        })
    }

    /// Run an async block to completion inside this namespace, on a dedicated thread with its
    /// own current-thread tokio runtime. Anything the future creates (sockets, child
    /// processes) is created in the namespace.
    pub fn run_async<F, Fut, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future<Output = T>,
        T: Send,
    {
        let path = self.path.clone();
        self.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| NetnsError::Runtime { path, source })?;
            Ok(rt.block_on(f()))
        })?
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Check a namespace name the way iproute2 does (a single path component).
pub fn validate_name(name: &str) -> Result<(), NetnsError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name == "." || name == ".." {
        Some("is a relative path component")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetnsError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Create the named namespace `/run/netns/<name>` (`ip netns add <name>`) and open it.
pub fn create_named(name: &str) -> Result<NetNs, NetnsError> {
    validate_name(name)?;
    run_ip(name, "create", &["netns", "add", name])?;
    NetNs::named(name)
}

/// Delete the named namespace (`ip netns del <name>`). The namespace itself lives on while a
/// process or an open handle still uses it. Deleting a name that does not exist is an error.
pub fn delete_named(name: &str) -> Result<(), NetnsError> {
    validate_name(name)?;
    run_ip(name, "delete", &["netns", "del", name])
}

/// Names under `/run/netns`, sorted. A missing directory means no named namespaces.
pub fn list_named() -> Result<Vec<String>, NetnsError> {
    let dir = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetnsError::Open {
                path: PathBuf::from(NETNS_RUN_DIR),
                source,
            });
        }
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

fn run_ip(name: &str, action: &'static str, args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError::Command {
            name: name.to_string(),
            action,
            detail: format!("run ip: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            name: name.to_string(),
            action,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_are_rejected_with_the_name() {
        for bad in ["", "a/b", "..", "."] {
            let err = validate_name(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("netns {bad}: invalid name")),
                "{err}"
            );
        }
        validate_name("crs1-n1").unwrap();
    }

    #[test]
    fn opening_a_missing_namespace_names_the_path() {
        let err = NetNs::named("calico-rs-does-not-exist").unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.to_string()
                .starts_with("netns /run/netns/calico-rs-does-not-exist: open:"),
            "{err}"
        );
    }

    #[test]
    fn run_in_own_namespace_returns_value_and_keeps_caller_thread() {
        let before = NetNs::current().unwrap().inode().unwrap();
        let ns = NetNs::of_pid(std::process::id()).unwrap();
        let v = ns.run(|| 41 + 1).unwrap();
        assert_eq!(v, 42);
        assert_eq!(NetNs::current().unwrap().inode().unwrap(), before);
    }
}

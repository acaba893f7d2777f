//! The lab's state file (`<state dir>/state.json`) and its owner lock.
//!
//! Liveness, as [`crate::sweep`] judges it: a lab is alive while some process holds the
//! exclusive `flock` on `<state dir>/owner.lock` (the `up` in progress, or the test / scenario
//! run that owns an ephemeral lab; the kernel drops the lock however the holder dies), or when
//! its `up` completed and it was made to persist (`calico-lab up` from the command line).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Ready,
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    /// Address on the lab subnet (`eth0` of the node namespace).
    pub ip: String,
    /// `calico-node`, `calico-felix`, or `none` (no agent binary was available).
    pub agent: String,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ip: String,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub phase: Phase,
    /// Kept by `sweep` once ready (a lab made by `calico-lab up`); ephemeral labs live only
    /// while their owner holds the lock.
    pub persistent: bool,
    pub routing: String,
    pub datastore: String,
    pub subnet: String,
    pub pool_cidr: String,
    pub fabric_netns: String,
    pub nodes: Vec<NodeState>,
    /// Keyed `namespace/pod`.
    pub pods: BTreeMap<String, PodState>,
    pub etcd_pid: Option<u32>,
    pub etcd_endpoint: Option<String>,
    /// Server ports every pod serves: (port, protocol, name).
    pub server_ports: Vec<(u16, String, String)>,
    /// Next container id sequence number.
    pub next_container: u64,
}

impl LabState {
    pub fn dir(&self) -> PathBuf {
        names::state_dir(&self.name)
    }

    pub fn path(lab: &str) -> PathBuf {
        names::state_dir(lab).join("state.json")
    }

    pub fn load(lab: &str) -> Result<LabState, LabError> {
        let path = Self::path(lab);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LabError::lab(lab, "no such lab (no state file)")
            } else {
                LabError::io(&path, e)
            }
        })?;
        serde_json::from_str(&text).map_err(|source| LabError::Json {
            what: path.display().to_string(),
            source,
        })
    }

    /// Write atomically (temp file + rename) so a killed writer never leaves half a file.
    pub fn save(&self) -> Result<(), LabError> {
        let path = Self::path(&self.name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| LabError::Json {
            what: path.display().to_string(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(|e| LabError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| LabError::io(&path, e))
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// The exclusive owner lock of a lab; released on drop (or by the kernel on death).
#[derive(Debug)]
pub struct OwnerLock {
    _lock: Flock<File>,
}

fn lock_path(lab: &str) -> PathBuf {
    names::state_dir(lab).join("owner.lock")
}

impl OwnerLock {
    /// Take the lock, creating the state dir; an error if another process holds it.
    pub fn acquire(lab: &str) -> Result<OwnerLock, LabError> {
        let dir = names::state_dir(lab);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
        let path = lock_path(lab);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LabError::io(&path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(OwnerLock { _lock: lock }),
            Err((_, errno)) => Err(LabError::lab(
                lab,
                format!("busy: another process holds {} ({errno})", path.display()),
            )),
        }
    }

    /// Whether some live process holds the lab's lock.
    pub fn held(lab: &str) -> bool {
        let path = lock_path(lab);
        match File::open(&path) {
            Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err(),
            Err(_) => false,
        }
    }
}

/// Names of the labs with a state directory.
pub fn state_dirs() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(names::STATE_ROOT) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Remove a lab's state directory (logs, datastore file, etcd data).
pub fn remove_dir(lab: &str) -> Result<(), LabError> {
    let dir = names::state_dir(lab);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::io(&dir, e)),
    }
}

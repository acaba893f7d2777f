//! Teardown of one lab and the sweep of dead labs' leftovers.
//!
//! A lab's leftovers are found three ways, so a lab killed at any point of `up` is still found:
//! namespaces named `clab-<lab>-…`, processes carrying the [`crate::names::LAB_TAG_ENV`] tag
//! (even after their namespace name is gone), and the state directory. Every process inside a
//! lab namespace is stopped before the namespace is deleted (a process keeps its namespace,
//! and so the veths and nft tables in it, alive). Deleting a node namespace deletes its veths
//! (both ends) and its nft tables with it; nothing lives in the root namespace.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::LabError;
use crate::names;
use crate::procs;
use crate::state::{self, LabState, OwnerLock, Phase};

/// What a teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TeardownReport {
    pub namespaces: Vec<String>,
    pub processes: Vec<u32>,
}

/// Names of namespaces that belong to `lab`.
pub fn lab_namespaces(lab: &str) -> Vec<String> {
    calico_linux::netns::list_named()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| names::lab_of_netns(n) == Some(lab))
        .collect()
}

/// Everything of `lab` still present: (namespaces, live processes, state dir exists).
pub fn leftovers(lab: &str) -> (Vec<String>, Vec<u32>, bool) {
    let ns = lab_namespaces(lab);
    let mut pids: BTreeSet<u32> = procs::tagged(Some(lab))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    for n in &ns {
        pids.extend(procs::in_netns(n));
    }
    (
        ns,
        pids.into_iter().collect(),
        names::state_dir(lab).exists(),
    )
}

/// Remove every trace of `lab`: processes (tagged or inside its namespaces), namespaces (pods,
/// then nodes, then the fabric), the state directory.
pub fn teardown(lab: &str) -> Result<TeardownReport, LabError> {
    names::validate_lab_name(lab)?;
    if let Ok(mut st) = LabState::load(lab) {
        st.phase = Phase::Stopping;
        let _ = st.save();
    }
    let mut report = TeardownReport::default();
    let namespaces = lab_namespaces(lab);
    let mut pids: BTreeSet<u32> = procs::tagged(Some(lab))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    for n in &namespaces {
        pids.extend(procs::in_netns(n));
    }
    let pids: Vec<u32> = pids.into_iter().collect();
    procs::stop(&pids, Duration::from_secs(2));
    report.processes = pids;
    // Pods first (their veths' host ends live in the nodes), then nodes, then the fabric.
    let rank = |n: &str| {
        if n.starts_with(&format!("{}p-", names::lab_prefix(lab))) {
            0
        } else if n.ends_with("-fab") {
            2
        } else {
            1
        }
    };
    let mut ordered = namespaces;
    ordered.sort_by_key(|n| rank(n));
    let mut errors = Vec::new();
    for n in ordered {
        // Processes that entered meanwhile (a CNI call racing the teardown).
        let late = procs::in_netns(&n);
        if !late.is_empty() {
            procs::stop(&late, Duration::from_millis(200));
        }
        match calico_linux::netns::delete_named(&n) {
            Ok(()) => report.namespaces.push(n),
            // Removed meanwhile by a concurrent teardown: gone is what we wanted.
            Err(_) if !std::path::Path::new("/run/netns").join(&n).exists() => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Err(e) = state::remove_dir(lab) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(LabError::lab(lab, errors.join("; ")))
    }
}

/// Whether a lab is in use: its owner holds the lock, or it is a finished persistent lab.
pub fn lab_alive(lab: &str) -> bool {
    if OwnerLock::held(lab) {
        return true;
    }
    matches!(LabState::load(lab), Ok(st) if st.phase == Phase::Ready && st.persistent)
}

/// [`lab_alive`] without the lock test (for a caller that holds the lock itself).
fn lab_alive_unlocked(lab: &str) -> bool {
    matches!(LabState::load(lab), Ok(st) if st.phase == Phase::Ready && st.persistent)
}

/// Every lab with any trace on the machine.
pub fn all_labs() -> BTreeSet<String> {
    let mut labs: BTreeSet<String> = state::state_dirs().into_iter().collect();
    for n in calico_linux::netns::list_named().unwrap_or_default() {
        if let Some(l) = names::lab_of_netns(&n) {
            labs.insert(l.to_string());
        }
    }
    for (_, l) in procs::tagged(None) {
        labs.insert(l);
    }
    labs.retain(|l| names::validate_lab_name(l).is_ok());
    labs
}

/// Tear down every dead lab (`all`: every lab). Returns the labs removed.
pub fn sweep(all: bool) -> Result<Vec<(String, TeardownReport)>, LabError> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for lab in all_labs() {
        if !all && lab_alive(&lab) {
            continue;
        }
        // Holding the lab's lock while tearing it down: a concurrent sweep (or an `up` that
        // started meanwhile) sees it busy and leaves it alone.
        let _lock = match OwnerLock::acquire(&lab) {
            Ok(l) => Some(l),
            Err(_) if !all => continue,
            Err(_) => None,
        };
        if !all && lab_alive_unlocked(&lab) {
            continue;
        }
        match teardown(&lab) {
            Ok(r) => removed.push((lab, r)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(LabError::command("sweep", errors.join("; ")))
    }
}

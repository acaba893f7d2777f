//! Shared test helpers: skip reasons, the binaries the lab runs, leftovers checks.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Once;

/// `/work/shared` as the repository layout places it, or `None` after a loud SKIP line.
pub fn shared_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: shared facts directory {} is missing",
            dir.display()
        );
        None
    }
}

/// Root and `ip` available, else a loud SKIP line.
pub fn lab_available(test: &str) -> bool {
    calico_linux::testlab::lab_available(test)
}

/// Build the binaries the lab runs (CNI plugin, calicoctl, and the node agent when its crate
/// exists) into this target directory, once per test process.
pub fn build_binaries() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut args = vec!["build", "-q", "-p", "calico-cni", "-p", "calicoctl"];
        for (krate, dir) in [
            ("calico-node", "crates/calico-node"),
            ("felix", "crates/felix"),
        ] {
            if root.join(dir).join("src").is_dir() {
                args.push("-p");
                args.push(krate);
            }
        }
        args.push("--bins");
        // Leftovers of earlier runs that were killed (never labs still in use).
        match calico_lab::sweep::sweep(false) {
            Ok(removed) if !removed.is_empty() => eprintln!("swept dead labs: {removed:?}"),
            Ok(_) => {}
            Err(e) => eprintln!("sweep of dead labs failed: {e}"),
        }
        let status = std::process::Command::new(env!("CARGO"))
            .args(&args)
            .current_dir(&root)
            .status()
            .expect("run cargo build for the lab's binaries");
        assert!(status.success(), "cargo {args:?} failed");
    });
}

/// Panics naming whatever of `lab` is still on the machine.
pub fn assert_nothing_left(lab: &str) {
    let (ns, pids, dir) = calico_lab::sweep::leftovers(lab);
    assert!(
        ns.is_empty() && pids.is_empty() && !dir,
        "lab {lab} left namespaces {ns:?}, processes {pids:?}, state dir present: {dir}"
    );
    // No interface of the root namespace has a peer in one of the lab's namespaces (the lab
    // never creates one there; a veth whose far end sat in a lab namespace would show here).
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&out.stdout);
    let prefix = calico_lab::names::lab_prefix(lab);
    assert!(
        !links.contains(&prefix),
        "root namespace has links tied to lab {lab}:\n{links}"
    );
}

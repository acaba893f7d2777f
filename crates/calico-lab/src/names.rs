//! Every object a lab creates is named from its lab name: namespaces `clab-<lab>-…`, the
//! state directory `/run/calico-lab/<lab>/`, and the environment tag [`LAB_TAG_ENV`] on every
//! process it starts. The prefix deliberately does not start with the project-wide test prefix
//! `crs` so the per-process sweep of `calico_linux::testlab` never mistakes a lab (which
//! outlives the CLI invocation that made it) for a dead test run.

use std::path::PathBuf;

use crate::error::LabError;

/// Every lab namespace starts with this.
pub const NS_PREFIX: &str = "clab-";

/// Environment variable set on every process a lab starts; value: the lab name.
pub const LAB_TAG_ENV: &str = "CALICO_LAB_NAME";

/// Root of the per-lab state directories.
pub const STATE_ROOT: &str = "/run/calico-lab";

/// Lab names: 1-12 of `[a-z0-9]`, so every derived name stays short and unambiguous.
pub fn validate_lab_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(LabError::lab(
            name,
            "invalid lab name: use 1-12 characters of [a-z0-9]",
        ))
    }
}

/// `clab-<lab>-`: the prefix of all the lab's namespaces.
pub fn lab_prefix(lab: &str) -> String {
    format!("{NS_PREFIX}{lab}-")
}

/// The lab a namespace name belongs to.
pub fn lab_of_netns(ns: &str) -> Option<&str> {
    let rest = ns.strip_prefix(NS_PREFIX)?;
    let (lab, _) = rest.split_once('-')?;
    Some(lab)
}

pub fn fabric_ns(lab: &str) -> String {
    format!("{}fab", lab_prefix(lab))
}

pub fn node_ns(lab: &str, node: &str) -> String {
    format!("{}n-{node}", lab_prefix(lab))
}

pub fn pod_ns(lab: &str, namespace: &str, pod: &str) -> String {
    format!("{}p-{namespace}-{pod}", lab_prefix(lab))
}

pub fn state_dir(lab: &str) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(lab)
}

/// A unique lab name for a process-owned lab (tests, the scenario runner): `r<pid hex><n>`.
pub fn ephemeral_lab_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("r{:x}x{n:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_their_lab() {
        assert_eq!(lab_of_netns(&fabric_ns("abc")), Some("abc"));
        assert_eq!(lab_of_netns(&node_ns("abc", "node-1")), Some("abc"));
        assert_eq!(lab_of_netns(&pod_ns("abc", "x", "a")), Some("abc"));
        assert_eq!(lab_of_netns("crs12-x"), None);
        assert!(validate_lab_name("demo1").is_ok());
        assert!(validate_lab_name("Demo").is_err());
        assert!(validate_lab_name("").is_err());
        assert!(validate_lab_name("a-b").is_err());
        assert!(validate_lab_name(&ephemeral_lab_name()).is_ok());
    }
}

//! Acceptance harness and benchmarks for the Felix agent (stream FT).
//!
//! - [`cluster`]: synthetic clusters (local and remote workload endpoints, policies) as v3 resources.
//! - [`lab`]: a node namespace with workloads behind `cali*` veths plumbed as the CNI plugin does,
//!   TCP/UDP/ICMP probes and echo servers inside namespaces.
//! - [`agent`]: the real `calico-felix` binary run inside a node namespace, its `/status`.
//! - [`etcd`]: a throw-away etcd on loopback ports that can be stopped and restarted.
//!
//! Everything that touches the kernel does it inside `calico_linux::testlab::LabNs` namespaces.

pub mod agent;
pub mod cluster;
pub mod etcd;
pub mod lab;

/// Errors of the harness (test code and the bench binary wrap them with anyhow).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Lab(#[from] calico_linux::testlab::LabError),
    #[error(transparent)]
    Netns(#[from] calico_linux::NetnsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

//! Felix's route programming (upstream `felix/dataplane/linux/{vxlan_mgr,route_table}` and the
//! IPIP manager), as a library the Felix agent spawns.
//!
//! * [`plan`] is pure: Nodes, IP pools, IPAM blocks and Felix settings in, the desired kernel
//!   state out (blackhole routes for local blocks, the VXLAN / IPIP device, per remote node FDB
//!   entries and neighbours, per remote block routes).
//! * [`apply`] reconciles one [`plan::Plan`] with the kernel through
//!   [`calico_linux::Netlink`], removing stale protocol-80 routes it owns.
//! * [`RouteSync`] is the I/O shell: it watches the datastore, replans on every change and
//!   applies.

pub mod apply;
pub mod mtu;
pub mod plan;
mod sync;

pub use sync::{RouteSync, RoutesConfig};

/// Errors of route programming. Messages name the object that failed.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// A pool asks for IP-in-IP but the kernel cannot do it.
    #[error("IP-in-IP mode unavailable: kernel has no ipip module")]
    IpipUnavailable,
    #[error(transparent)]
    Netlink(#[from] calico_linux::NetlinkError),
    #[error("datastore: {0}")]
    Datastore(#[from] calico_datastore::KvError),
    #[error("mtu file {path}: {source}")]
    MtuFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("node {0}: {1}")]
    Node(String, String),
}

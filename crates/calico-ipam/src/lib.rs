//! Calico's block/affinity IPAM.
//!
//! Two layers, as in the style guide's sans-I/O shape:
//!
//! * a **pure core** — [`block`] (the allocation block and its operations), [`handle`],
//!   [`config`], [`affinity`], [`pool`] (pool selection, block enumeration, choosing the next
//!   block), [`reservation`], [`keys`] (the etcd key layout) and [`check`] (the `ipam check`
//!   engine). No I/O, no async, time passed in.
//! * an **I/O shell** — [`client::IpamClient`] over `Arc<dyn KvStore>`: reads, decides with the
//!   core, writes with compare-and-swap and bounded retries.
//!
//! Storage is byte-compatible with upstream libcalico-go's etcd v3 layout (keys and JSON), so a
//! datastore can be shared with, or migrated from, upstream components.

pub mod addr;
pub mod affinity;
pub mod block;
pub mod check;
pub mod client;
pub mod config;
pub mod handle;
pub mod keys;
pub mod model;
pub mod pool;
pub mod reservation;

pub use addr::IpVersion;
pub use affinity::{AffinityState, BlockAffinity};
pub use block::{
    Affinity, AffinityKind, AllocationAttribute, AllocationBlock, BlockError, ReleaseOptions,
};

pub use check::{CheckReport, IpamSnapshot, LiveWorkloads};
pub use client::{
    AssignIpArgs, AssignedIp, AutoAssignArgs, AutoAssignResult, IpamAssignments, IpamClient,
    IpamError, ReleaseResult,
};
pub use config::IpamConfig;
pub use handle::IpamHandle;
pub use pool::{AllowedUse, AssignmentMode, PoolConfig, PoolFilter};
pub use reservation::Reservations;

/// Attribute keys upstream callers write on allocations.
pub mod attrs {
    pub const NODE: &str = "node";
    pub const POD: &str = "pod";
    pub const NAMESPACE: &str = "namespace";
    pub const TIMESTAMP: &str = "timestamp";
    pub const TYPE: &str = "type";
    pub const SERVICE: &str = "service";
    pub const TYPE_IPIP: &str = "ipipTunnelAddress";
    pub const TYPE_VXLAN: &str = "vxlanTunnelAddress";
    pub const TYPE_VXLAN_V6: &str = "vxlanV6TunnelAddress";
    pub const TYPE_WIREGUARD: &str = "wireguardTunnelAddress";
    pub const TYPE_WIREGUARD_V6: &str = "wireguardV6TunnelAddress";
}

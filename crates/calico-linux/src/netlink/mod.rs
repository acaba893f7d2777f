//! The [`Netlink`] trait: links, addresses, routes, neighbours, FDB entries, VXLAN devices and a
//! link-event monitor. [`RtNetlink`] implements it on rtnetlink (one connection per
//! namespace); [`crate::fake::FakeNetlink`] keeps the same state in memory.

mod rtnl;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use ipnet::IpNet;

pub use rtnl::RtNetlink;

use crate::netns::{NetNs, NetnsError};
use crate::types::{
    AddressEvent, AddressInfo, Family, FdbEntry, LinkEvent, LinkInfo, MacAddr, Neighbour, Route,
    RouteFilter, VethSpec, VxlanSpec,
};

/// A stream of link events: the initial dump as [`LinkEvent::Added`], then
/// [`LinkEvent::InSync`], then live changes. Dropping it stops the monitor.
pub type LinkEventStream = Pin<Box<dyn Stream<Item = Result<LinkEvent, NetlinkError>> + Send>>;

/// A stream of address events: the initial dump as [`AddressEvent::Added`], then
/// [`AddressEvent::InSync`], then live changes. Dropping it stops the monitor.
pub type AddressEventStream =
    Pin<Box<dyn Stream<Item = Result<AddressEvent, NetlinkError>> + Send>>;

/// Netlink errors. Messages name the object first: `link cali12ab: create veth: file exists`.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel answered with an errno.
    #[error("{object}: {op}: {reason}")]
    Kernel {
        object: String,
        op: &'static str,
        /// Positive errno (`libc::EEXIST`, ...).
        errno: i32,
        reason: String,
    },
    /// The request could not be made or the answer could not be understood.
    #[error("{object}: {op}: {detail}")]
    Protocol {
        object: String,
        op: &'static str,
        detail: String,
    },
    #[error("link {0}: not found")]
    LinkNotFound(String),
    #[error("link {name}: invalid name: {reason}")]
    InvalidLinkName { name: String, reason: &'static str },
    #[error("netlink: connect: {0}")]
    Connect(std::io::Error),
    #[error("netlink: no tokio runtime: {0}")]
    NoRuntime(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl NetlinkError {
    /// The kernel errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// `EEXIST`: the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// `ENOENT`/`ENODEV`/`ESRCH`, or a link lookup that found nothing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetlinkError::LinkNotFound(_))
            || matches!(
                self.errno(),
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH)
            )
    }
}

/// Validate an interface name against the kernel's rules (`dev_valid_name`).
pub fn validate_link_name(name: &str) -> Result<(), NetlinkError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > crate::MAX_IFNAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is a relative path component")
    } else if name.contains(['/', ':']) || name.chars().any(char::is_whitespace) {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetlinkError::InvalidLinkName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Every rtnetlink operation the CNI plugin, Felix and the lab need, in one namespace.
#[async_trait]
pub trait Netlink: Send + Sync {
    // --- links
    /// All links, sorted by index.
    async fn list_links(&self) -> Result<Vec<LinkInfo>, NetlinkError>;
    async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError>;
    async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetlinkError>;
    /// Create a veth pair (peer optionally straight into another namespace).
    async fn create_veth(&self, spec: &VethSpec) -> Result<(), NetlinkError>;
    /// Create a VXLAN device (not brought up).
    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetlinkError>;
    /// The VXLAN parameters of link `index` as the kernel has them (name, VNI, port, local,
    /// parent, learning, MTU, MAC), so a reconciler can compare them with what it wants;
    /// `None` if the link does not exist or is not a VXLAN device.
    async fn vxlan_info(&self, index: u32) -> Result<Option<VxlanSpec>, NetlinkError>;
    async fn set_link_up(&self, index: u32, up: bool) -> Result<(), NetlinkError>;
    async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError>;
    async fn set_link_mac(&self, index: u32, mac: MacAddr) -> Result<(), NetlinkError>;
    async fn set_link_name(&self, index: u32, name: &str) -> Result<(), NetlinkError>;
    /// Move a link into another namespace (it disappears from this one).
    async fn move_link_to_netns(&self, index: u32, netns: &NetNs) -> Result<(), NetlinkError>;
    async fn delete_link(&self, index: u32) -> Result<(), NetlinkError>;

    // --- addresses
    async fn add_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError>;
    async fn del_address(&self, index: u32, addr: IpNet) -> Result<(), NetlinkError>;
    /// Addresses of one link (or all links), sorted.
    async fn list_addresses(&self, index: Option<u32>) -> Result<Vec<AddressInfo>, NetlinkError>;

    // --- routes
    /// Add; fails with `EEXIST` ([`NetlinkError::is_exists`]) if the route exists.
    async fn add_route(&self, route: &Route) -> Result<(), NetlinkError>;
    /// Add or replace the route with the same (table, dst, metric).
    async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError>;
    /// Delete the route matching dst/table/metric/kind/protocol (and gateway/oif if set).
    async fn del_route(&self, route: &Route) -> Result<(), NetlinkError>;
    /// Routes passing `filter`, sorted.
    async fn list_routes(&self, filter: &RouteFilter) -> Result<Vec<Route>, NetlinkError>;

    // --- neighbours (permanent ARP/NDP entries)
    /// Add or replace a permanent entry.
    async fn replace_neighbour(&self, neigh: &Neighbour) -> Result<(), NetlinkError>;
    async fn del_neighbour(&self, neigh: &Neighbour) -> Result<(), NetlinkError>;
    /// Permanent entries of `family` (optionally on one link), sorted.
    async fn list_neighbours(
        &self,
        family: Family,
        index: Option<u32>,
    ) -> Result<Vec<Neighbour>, NetlinkError>;

    // --- bridge FDB on VXLAN devices
    /// Add or replace a permanent `self` FDB entry with a remote destination.
    async fn replace_fdb(&self, entry: &FdbEntry) -> Result<(), NetlinkError>;
    async fn del_fdb(&self, entry: &FdbEntry) -> Result<(), NetlinkError>;
    /// FDB entries with a remote destination on link `index`, sorted.
    async fn list_fdb(&self, index: u32) -> Result<Vec<FdbEntry>, NetlinkError>;

    // --- monitor
    /// Subscribe to link changes: initial dump, `InSync`, then live events.
    async fn monitor_links(&self) -> Result<LinkEventStream, NetlinkError>;
    /// Subscribe to address changes (v4 and v6): initial dump, `InSync`, then live events.
    /// Felix uses this to track host addresses.
    async fn monitor_addresses(&self) -> Result<AddressEventStream, NetlinkError>;
}

/// Pure state machine behind every link monitor: folds link snapshots and deletions into
/// [`LinkEvent`]s, suppressing repeats (the kernel re-sends unchanged links often).
#[derive(Debug, Default, Clone)]
pub struct LinkTracker {
    links: std::collections::BTreeMap<u32, LinkInfo>,
}

impl LinkTracker {
    pub fn new() -> Self {
        LinkTracker::default()
    }

    /// A link was reported present with `info`.
    pub fn update(&mut self, info: LinkInfo) -> Option<LinkEvent> {
        match self.links.insert(info.index, info.clone()) {
            None => Some(LinkEvent::Added(info)),
            Some(old) if old == info => None,
            Some(old) => Some(match (old.is_up(), info.is_up()) {
                (false, true) => LinkEvent::Up(info),
                (true, false) => LinkEvent::Down(info),
                _ => LinkEvent::Changed(info),
            }),
        }
    }

    /// The link with `index` was deleted. `last` is the kernel's final view of it, used when the
    /// tracker never saw the link.
    pub fn remove(&mut self, index: u32, last: Option<LinkInfo>) -> Option<LinkEvent> {
        match (self.links.remove(&index), last) {
            (Some(old), Some(last)) => Some(LinkEvent::Removed(LinkInfo {
                name: if last.name.is_empty() {
                    old.name
                } else {
                    last.name
                },
                ..last
            })),
            (Some(old), None) => Some(LinkEvent::Removed(old)),
            (None, _) => None,
        }
    }

    /// Current view, by index.
    pub fn links(&self) -> &std::collections::BTreeMap<u32, LinkInfo> {
        &self.links
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::OperState;

    fn link(index: u32, name: &str, up: bool) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            mac: None,
            mtu: 1500,
            admin_up: up,
            oper_state: if up { OperState::Up } else { OperState::Down },
            kind: Some("veth".into()),
        }
    }

    #[test]
    fn tracker_reports_add_up_change_down_remove_once() {
        let mut t = LinkTracker::new();
        assert_eq!(
            t.update(link(5, "cali1", false)),
            Some(LinkEvent::Added(link(5, "cali1", false)))
        );
        assert_eq!(t.update(link(5, "cali1", false)), None);
        assert_eq!(
            t.update(link(5, "cali1", true)),
            Some(LinkEvent::Up(link(5, "cali1", true)))
        );
        let mut renamed = link(5, "cali2", true);
        renamed.mtu = 1450;
        assert_eq!(t.update(renamed.clone()), Some(LinkEvent::Changed(renamed)));
        assert_eq!(
            t.update(link(5, "cali2", false)),
            Some(LinkEvent::Down(link(5, "cali2", false)))
        );
        assert_eq!(
            t.remove(5, None),
            Some(LinkEvent::Removed(link(5, "cali2", false)))
        );
        assert_eq!(t.remove(5, None), None);
    }

    #[test]
    fn link_names_are_validated() {
        validate_link_name("cali82111e10a96").unwrap();
        validate_link_name("vxlan.calico").unwrap();
        for bad in ["", "cali82111e10a96x", "a/b", "a b", "a:b", ".."] {
            let err = validate_link_name(bad).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("link {bad}: invalid name")),
                "{err}"
            );
        }
    }

    #[test]
    fn error_classification() {
        let e = NetlinkError::Kernel {
            object: "route 10.0.0.1/32".into(),
            op: "add",
            errno: libc::EEXIST,
            reason: "file exists".into(),
        };
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        assert_eq!(e.to_string(), "route 10.0.0.1/32: add: file exists");
        assert!(NetlinkError::LinkNotFound("x".into()).is_not_found());
    }
}

//! Plain data types shared by the traits, their real implementations and the fakes.
//!
//! They deliberately do not expose rtnetlink / netlink-packet-route types, so an upgrade of
//! those crates touches only `netlink/rtnl.rs`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Linux `IFNAMSIZ - 1`: the longest interface name the kernel accepts.
pub const MAX_IFNAME_LEN: usize = 15;

/// Route protocol numbers used by Calico (see `calico-policy-and-felix.md` §4).
pub mod proto {
    /// `RTPROT_KERNEL`: routes the kernel adds itself (connected routes).
    pub const KERNEL: u8 = 2;
    /// `RTPROT_BOOT`: Felix's default device-route protocol and `ip route add`'s default.
    pub const BOOT: u8 = 3;
    /// `RTPROT_STATIC`.
    pub const STATIC: u8 = 4;
    /// `RTPROT_BIRD`.
    pub const BIRD: u8 = 12;
    /// Felix's exclusive protocol for routes it must recognise without an interface.
    pub const FELIX: u8 = 80;
}

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The MAC Calico forces on every host-side workload veth.
    pub const CALICO_HOST: MacAddr = MacAddr([0xee; 6]);

    /// Build from a byte slice of exactly 6 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Error parsing a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mac address {0:?}: want six hex octets separated by ':'")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if part.is_empty() || part.len() > 2 {
                return Err(MacParseError(s.to_string()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

/// RFC 2863 operational state as reported by `IFLA_OPERSTATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum OperState {
    #[default]
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            OperState::Unknown => "unknown",
            OperState::NotPresent => "notpresent",
            OperState::Down => "down",
            OperState::LowerLayerDown => "lowerlayerdown",
            OperState::Testing => "testing",
            OperState::Dormant => "dormant",
            OperState::Up => "up",
        };
        f.write_str(s)
    }
}

/// One network interface as seen in a link dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// `IFF_UP` (administratively up).
    pub admin_up: bool,
    pub oper_state: OperState,
    /// `IFLA_INFO_KIND` ("veth", "vxlan", "bridge", ...), if the kernel reported one.
    pub kind: Option<String>,
}

impl LinkInfo {
    /// Up the way Felix means it: admin up and operationally up. Veths report `Up` once both
    /// ends are up; loopback reports `Unknown` while admin up, which counts as up too.
    pub fn is_up(&self) -> bool {
        self.admin_up && matches!(self.oper_state, OperState::Up | OperState::Unknown)
    }
}

/// A veth pair to create. The pair is created in the netns of the [`crate::Netlink`] handle;
/// the peer can be placed directly into another namespace.
#[derive(Clone, Debug)]
pub struct VethSpec {
    pub name: String,
    pub peer_name: String,
    /// Namespace for the peer end; `None` keeps it next to `name`.
    pub peer_netns: Option<crate::NetNs>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub peer_mac: Option<MacAddr>,
}

impl VethSpec {
    pub fn new(name: impl Into<String>, peer_name: impl Into<String>) -> Self {
        VethSpec {
            name: name.into(),
            peer_name: peer_name.into(),
            peer_netns: None,
            mtu: None,
            mac: None,
            peer_mac: None,
        }
    }
}

/// A VXLAN device to create (Calico: `vxlan.calico`, VNI 4096, port 4789, learning off).
#[derive(Clone, Debug)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// VTEP source address (the node IP).
    pub local: Option<IpAddr>,
    /// Parent interface index (the interface holding the node IP).
    pub parent_index: Option<u32>,
    pub learning: bool,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
}

impl VxlanSpec {
    /// Calico defaults: VNI 4096, UDP port 4789, learning off.
    pub fn calico(name: impl Into<String>) -> Self {
        VxlanSpec {
            name: name.into(),
            vni: 4096,
            port: 4789,
            local: None,
            parent_index: None,
            learning: false,
            mtu: None,
            mac: None,
        }
    }
}

/// An address assigned to an interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressInfo {
    pub index: u32,
    pub addr: IpNet,
}

/// `RTN_*` route type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RouteKind {
    #[default]
    Unicast,
    Local,
    Broadcast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Other(u8),
}

/// `RT_SCOPE_*` route scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RouteScope {
    #[default]
    Universe,
    Site,
    Link,
    Host,
    Nowhere,
    Other(u8),
}

/// A route in a kernel table. The identity of a route (what `del` and `replace` match on) is
/// (table, dst, tos=0, metric); the other fields describe where it goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub kind: RouteKind,
    pub scope: RouteScope,
    /// `RTPROT_*`, see [`proto`].
    pub protocol: u8,
    pub table: u32,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    pub metric: Option<u32>,
    pub src: Option<IpAddr>,
}

impl Route {
    /// A unicast route to `dst`, main table, protocol `boot`, scope universe.
    pub fn new(dst: IpNet) -> Self {
        Route {
            dst,
            kind: RouteKind::Unicast,
            scope: RouteScope::Universe,
            protocol: proto::BOOT,
            table: TABLE_MAIN,
            gateway: None,
            oif: None,
            onlink: false,
            metric: None,
            src: None,
        }
    }

    /// Calico's workload route: `<dst> dev <oif> scope link`.
    pub fn device(dst: IpNet, oif: u32) -> Self {
        Route {
            oif: Some(oif),
            scope: RouteScope::Link,
            ..Route::new(dst)
        }
    }

    /// A route via a gateway.
    pub fn via(dst: IpNet, gateway: IpAddr, oif: Option<u32>) -> Self {
        Route {
            gateway: Some(gateway),
            oif,
            ..Route::new(dst)
        }
    }

    /// `blackhole <dst>`.
    pub fn blackhole(dst: IpNet) -> Self {
        Route {
            kind: RouteKind::Blackhole,
            ..Route::new(dst)
        }
    }

    pub fn with_protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn with_onlink(mut self) -> Self {
        self.onlink = true;
        self
    }

    pub fn with_scope(mut self, scope: RouteScope) -> Self {
        self.scope = scope;
        self
    }

    pub fn with_metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }

    pub fn with_table(mut self, table: u32) -> Self {
        self.table = table;
        self
    }
}

/// Which address family a dump covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Family {
    #[default]
    V4,
    V6,
}

/// Filter for [`crate::Netlink::list_routes`]. `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RouteFilter {
    pub family: Family,
    /// Table to list; `None` means the main table.
    pub table: Option<u32>,
    pub protocol: Option<u8>,
    pub oif: Option<u32>,
}

impl RouteFilter {
    pub fn v4() -> Self {
        RouteFilter::default()
    }

    pub fn v6() -> Self {
        RouteFilter {
            family: Family::V6,
            ..RouteFilter::default()
        }
    }

    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = Some(protocol);
        self
    }

    pub fn oif(mut self, oif: u32) -> Self {
        self.oif = Some(oif);
        self
    }

    /// Whether `route` passes this filter.
    pub fn matches(&self, route: &Route) -> bool {
        let family_ok = match self.family {
            Family::V4 => matches!(route.dst, IpNet::V4(_)),
            Family::V6 => matches!(route.dst, IpNet::V6(_)),
        };
        family_ok
            && route.table == self.table.unwrap_or(TABLE_MAIN)
            && self.protocol.is_none_or(|p| p == route.protocol)
            && self.oif.is_none_or(|o| route.oif == Some(o))
    }
}

/// A permanent ARP/NDP entry (`ip neigh add <ip> lladdr <mac> dev <if> nud permanent`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// A bridge FDB entry on a VXLAN device
/// (`bridge fdb add <mac> dev <if> dst <remote> self permanent`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub index: u32,
    pub mac: MacAddr,
    pub dst: IpAddr,
}

/// What a link monitor reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link that was not known before (initial dump or created later).
    Added(LinkInfo),
    /// A known link became up ([`LinkInfo::is_up`] went false → true).
    Up(LinkInfo),
    /// A known link went down.
    Down(LinkInfo),
    /// Another attribute of a known link changed (name, MAC, MTU).
    Changed(LinkInfo),
    /// The link was deleted (or moved out of the namespace).
    Removed(LinkInfo),
    /// The initial dump is complete; everything before this was the existing state.
    InSync,
}

/// What an address monitor reports (IPv4 and IPv6, all links).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressEvent {
    /// An address appeared (initial dump or added later).
    Added(AddressInfo),
    /// An address was removed (also when its link went away).
    Removed(AddressInfo),
    /// The initial dump is complete.
    InSync,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "ee:ee:ee:ee:ee:ee".parse().unwrap();
        assert_eq!(m, MacAddr::CALICO_HOST);
        assert_eq!(m.to_string(), "ee:ee:ee:ee:ee:ee");
        let m: MacAddr = "66:f9:37:c3:7e:94".parse().unwrap();
        assert_eq!(m.0, [0x66, 0xf9, 0x37, 0xc3, 0x7e, 0x94]);
    }

    #[test]
    fn mac_rejects_bad_input() {
        for bad in [
            "",
            "ee:ee",
            "ee:ee:ee:ee:ee:ee:ee",
            "zz:ee:ee:ee:ee:ee",
            "eee:e:ee:ee:ee:ee",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            assert!(
                err.to_string().contains("invalid mac address"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn route_filter_matches_protocol_and_family() {
        let r = Route::blackhole("10.65.1.0/26".parse().unwrap()).with_protocol(proto::FELIX);
        assert!(RouteFilter::v4().matches(&r));
        assert!(RouteFilter::v4().protocol(80).matches(&r));
        assert!(!RouteFilter::v4().protocol(3).matches(&r));
        assert!(!RouteFilter::v6().matches(&r));
        assert!(!RouteFilter::v4().oif(3).matches(&r));
    }
}

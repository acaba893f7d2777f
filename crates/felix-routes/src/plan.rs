//! Pure planning: from Nodes, IP pools, IPAM blocks and Felix settings to the kernel state this
//! node should have. No I/O; [`crate::apply`] turns a [`Plan`] into netlink calls.
//!
//! Rules (upstream `vxlan_mgr.go`, `ipip_mgr.go`, reference §4.8):
//! * every block affine to this node gets `blackhole <block> proto 80`;
//! * a remote node's block in a pool with `vxlanMode: Always` gets
//!   `<block> via <remote VTEP> dev vxlan.calico onlink`; with `CrossSubnet` the same, unless
//!   the remote node's IP is in this node's subnet, then `<block> via <node IP> dev <parent>`;
//! * `ipipMode` the same with `tunl0` and the remote node IP as gateway;
//! * pools with neither mode are left to BGP (BIRD).
//! * each remote node with a VTEP (tunnel address, MAC, node IP) gets a permanent FDB entry
//!   `<mac> dst <node IP>` and neighbour `<tunnel IP> lladdr <mac>` on `vxlan.calico`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use calico_linux::MacAddr;
use calico_model::resources::ipam::EncapMode;
use ipnet::{IpNet, Ipv4Net};
use sha1::{Digest, Sha1};

/// Name of Calico's IPv4 VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.calico";
/// Name of the IPIP device (created by the kernel's ipip module in every namespace).
pub const IPIP_DEVICE: &str = "tunl0";
/// VXLAN v4 overhead in bytes.
pub const VXLAN_OVERHEAD: u32 = 50;
/// IPIP overhead in bytes.
pub const IPIP_OVERHEAD: u32 = 20;

/// One node, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `spec.bgp.ipv4Address` (address and subnet).
    pub ipv4: Option<Ipv4Net>,
    /// `spec.ipv4VXLANTunnelAddr`.
    pub vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// `spec.vxlanTunnelMACAddr`, else derived from the name ([`vtep_mac`]).
    pub vxlan_mac: Option<MacAddr>,
    /// `spec.bgp.ipv4IPIPTunnelAddr`.
    pub ipip_tunnel_addr: Option<Ipv4Addr>,
}

/// One IP pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub name: String,
    pub cidr: IpNet,
    pub vxlan: EncapMode,
    pub ipip: EncapMode,
    pub disabled: bool,
}

/// One IPAM block and the node it is affine to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockInfo {
    pub cidr: IpNet,
    /// `host:<node>` affinity's node; `None` for unaffine or virtual blocks.
    pub node: Option<String>,
}

/// Felix settings that change what is planned (FelixConfiguration / env).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixSettings {
    /// `vxlanEnabled`; `None` = on when a pool needs it (upstream auto-detection).
    pub vxlan_enabled: Option<bool>,
    /// `ipipEnabled`; `None` = on when a pool needs it.
    pub ipip_enabled: Option<bool>,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    /// `vxlanMTU`; `None`/0 = host MTU − 50.
    pub vxlan_mtu: Option<u32>,
    /// `ipipMTU`; `None`/0 = host MTU − 20.
    pub ipip_mtu: Option<u32>,
}

impl Default for FelixSettings {
    fn default() -> Self {
        FelixSettings {
            vxlan_enabled: None,
            ipip_enabled: None,
            vxlan_vni: 4096,
            vxlan_port: 4789,
            vxlan_mtu: None,
            ipip_mtu: None,
        }
    }
}

/// Everything the planner reads.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    pub local_node: String,
    pub nodes: BTreeMap<String, NodeInfo>,
    pub pools: Vec<PoolInfo>,
    pub blocks: Vec<BlockInfo>,
    pub felix: FelixSettings,
    /// MTU of the interface holding the node IP (1500 when unknown).
    pub host_mtu: u32,
    /// Whether the kernel can do IP-in-IP (`tunl0` exists / ipip module loaded).
    pub ipip_available: bool,
}

/// The device a planned route leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteDev {
    Vxlan,
    Ipip,
    /// The interface holding the node IP (CrossSubnet direct routes).
    Parent,
}

/// A route the plan wants, with the device left symbolic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlannedRoute {
    /// `blackhole <dst> proto 80`.
    Blackhole { dst: IpNet },
    /// `<dst> via <gateway> dev <dev> [onlink] proto 80`.
    Via {
        dst: IpNet,
        gateway: IpAddr,
        dev: RouteDev,
        onlink: bool,
    },
}

impl PlannedRoute {
    pub fn dst(&self) -> IpNet {
        match self {
            PlannedRoute::Blackhole { dst } | PlannedRoute::Via { dst, .. } => *dst,
        }
    }
}

/// The VXLAN device this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevicePlan {
    pub vni: u32,
    pub port: u16,
    /// VTEP source: this node's IP.
    pub local: Ipv4Addr,
    pub mac: MacAddr,
    /// This node's VXLAN tunnel address, assigned as /32.
    pub address: Ipv4Addr,
    pub mtu: u32,
}

/// The IPIP device settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipDevicePlan {
    pub address: Ipv4Addr,
    pub mtu: u32,
}

/// A remote VTEP: FDB `<mac> dst <node_ip>` plus neighbour `<tunnel_ip> lladdr <mac>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteVtep {
    pub node: String,
    pub node_ip: Ipv4Addr,
    pub tunnel_ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// A problem that keeps part of the plan from being programmed (the rest still is).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlanProblem {
    /// A pool uses IPIP and the kernel has no ipip module.
    IpipUnavailable { pool: String },
    /// VXLAN is wanted but this node lacks a node IP or a tunnel address yet.
    LocalVtepIncomplete { missing: &'static str },
    /// A remote node's block needs encapsulation but the node lacks what the route needs.
    RemoteIncomplete { node: String, missing: &'static str },
}

impl std::fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanProblem::IpipUnavailable { pool } => write!(
                f,
                "ippool {pool}: IP-in-IP mode unavailable: kernel has no ipip module"
            ),
            PlanProblem::LocalVtepIncomplete { missing } => {
                write!(f, "vxlan: local node has no {missing} yet")
            }
            PlanProblem::RemoteIncomplete { node, missing } => {
                write!(f, "node {node}: no {missing}; its blocks are not routed")
            }
        }
    }
}

/// The desired kernel state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub routes: BTreeSet<PlannedRoute>,
    pub vxlan: Option<VxlanDevicePlan>,
    pub ipip: Option<IpipDevicePlan>,
    pub vteps: BTreeSet<RemoteVtep>,
    /// MTU the CNI plugin should give workloads: the smallest MTU of the enabled encaps, else
    /// the host MTU.
    pub pod_mtu: u32,
    pub problems: Vec<PlanProblem>,
}

impl Plan {
    /// Whether a problem makes IPIP unusable (callers surface it as
    /// [`crate::RoutesError::IpipUnavailable`]).
    pub fn ipip_unavailable(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p, PlanProblem::IpipUnavailable { .. }))
    }
}

/// Upstream's deterministic VTEP MAC: `0x66` then the first 5 bytes of SHA-1(node name).
pub fn vtep_mac(node: &str) -> MacAddr {
    let d = Sha1::digest(node.as_bytes());
    MacAddr([0x66, d[0], d[1], d[2], d[3], d[4]])
}

/// VXLAN MTU for a host MTU (reference §4.8: host − 50).
pub fn vxlan_mtu(host_mtu: u32) -> u32 {
    host_mtu.saturating_sub(VXLAN_OVERHEAD)
}

/// IPIP MTU for a host MTU (host − 20).
pub fn ipip_mtu(host_mtu: u32) -> u32 {
    host_mtu.saturating_sub(IPIP_OVERHEAD)
}

fn nonzero(v: Option<u32>) -> Option<u32> {
    v.filter(|m| *m != 0)
}

/// Computes the plan.
pub fn plan(input: &PlanInput) -> Plan {
    let mut out = Plan::default();
    let host_mtu = if input.host_mtu == 0 {
        1500
    } else {
        input.host_mtu
    };
    let local = input.nodes.get(&input.local_node);
    let local_ip = local.and_then(|n| n.ipv4);
    let active_pools: Vec<&PoolInfo> = input.pools.iter().filter(|p| !p.disabled).collect();

    let vxlan_wanted = input
        .felix
        .vxlan_enabled
        .unwrap_or_else(|| active_pools.iter().any(|p| p.vxlan.enabled()));
    let ipip_wanted = input
        .felix
        .ipip_enabled
        .unwrap_or_else(|| active_pools.iter().any(|p| p.ipip.enabled()));

    // Devices.
    if vxlan_wanted {
        let mtu = nonzero(input.felix.vxlan_mtu).unwrap_or_else(|| vxlan_mtu(host_mtu));
        match (local_ip, local.and_then(|n| n.vxlan_tunnel_addr)) {
            (Some(ip), Some(addr)) => {
                let mac = local
                    .and_then(|n| n.vxlan_mac)
                    .unwrap_or_else(|| vtep_mac(&input.local_node));
                out.vxlan = Some(VxlanDevicePlan {
                    vni: input.felix.vxlan_vni,
                    port: input.felix.vxlan_port,
                    local: ip.addr(),
                    mac,
                    address: addr,
                    mtu,
                });
            }
            (None, _) => out.problems.push(PlanProblem::LocalVtepIncomplete {
                missing: "IPv4 address (spec.bgp.ipv4Address)",
            }),
            (Some(_), None) => out.problems.push(PlanProblem::LocalVtepIncomplete {
                missing: "VXLAN tunnel address (spec.ipv4VXLANTunnelAddr)",
            }),
        }
    }
    if ipip_wanted {
        if !input.ipip_available {
            for p in active_pools.iter().filter(|p| p.ipip.enabled()) {
                out.problems.push(PlanProblem::IpipUnavailable {
                    pool: p.name.clone(),
                });
            }
            if !active_pools.iter().any(|p| p.ipip.enabled()) {
                out.problems.push(PlanProblem::IpipUnavailable {
                    pool: "(ipipEnabled)".into(),
                });
            }
        } else if let Some(addr) = local.and_then(|n| n.ipip_tunnel_addr) {
            out.ipip = Some(IpipDevicePlan {
                address: addr,
                mtu: nonzero(input.felix.ipip_mtu).unwrap_or_else(|| ipip_mtu(host_mtu)),
            });
        }
    }
    let ipip_ok = ipip_wanted && input.ipip_available;

    // Pod MTU: smallest MTU among enabled encaps, else the host MTU.
    out.pod_mtu = host_mtu;
    if vxlan_wanted {
        let m = nonzero(input.felix.vxlan_mtu).unwrap_or_else(|| vxlan_mtu(host_mtu));
        out.pod_mtu = out.pod_mtu.min(m);
    }
    if ipip_ok {
        let m = nonzero(input.felix.ipip_mtu).unwrap_or_else(|| ipip_mtu(host_mtu));
        out.pod_mtu = out.pod_mtu.min(m);
    }

    // Remote VTEPs.
    if out.vxlan.is_some() {
        for n in input.nodes.values() {
            if n.name == input.local_node {
                continue;
            }
            if let (Some(ip), Some(tun)) = (n.ipv4, n.vxlan_tunnel_addr) {
                out.vteps.insert(RemoteVtep {
                    node: n.name.clone(),
                    node_ip: ip.addr(),
                    tunnel_ip: tun,
                    mac: n.vxlan_mac.unwrap_or_else(|| vtep_mac(&n.name)),
                });
            }
        }
    }

    // Routes.
    let mut reported: BTreeSet<(String, &'static str)> = BTreeSet::new();
    let mut blocks = input.blocks.clone();
    blocks.sort();
    for b in &blocks {
        let Some(owner) = &b.node else { continue };
        if !matches!(b.cidr, IpNet::V4(_)) {
            continue;
        }
        if *owner == input.local_node {
            // /32 blocks are never blackholed (upstream skips them too).
            if b.cidr.prefix_len() < 32 {
                out.routes.insert(PlannedRoute::Blackhole { dst: b.cidr });
            }
            continue;
        }
        let Some(pool) = active_pools
            .iter()
            .filter(|p| p.cidr.contains(&b.cidr))
            .max_by_key(|p| p.cidr.prefix_len())
        else {
            continue;
        };
        let remote = input.nodes.get(owner);
        let remote_ip = remote.and_then(|n| n.ipv4);
        let same_subnet = match (local_ip, remote_ip) {
            (Some(l), Some(r)) => l.trunc().contains(&r.addr()),
            _ => false,
        };
        let mut missing = |what: &'static str| {
            if reported.insert((owner.clone(), what)) {
                out.problems.push(PlanProblem::RemoteIncomplete {
                    node: owner.clone(),
                    missing: what,
                });
            }
        };
        let direct = |ip: Ipv4Net| PlannedRoute::Via {
            dst: b.cidr,
            gateway: IpAddr::V4(ip.addr()),
            dev: RouteDev::Parent,
            onlink: false,
        };
        if pool.vxlan.enabled() && out.vxlan.is_some() {
            if pool.vxlan == EncapMode::CrossSubnet && same_subnet {
                if let Some(ip) = remote_ip {
                    out.routes.insert(direct(ip));
                }
                continue;
            }
            match remote.and_then(|n| n.vxlan_tunnel_addr) {
                Some(vtep) if remote_ip.is_some() => {
                    out.routes.insert(PlannedRoute::Via {
                        dst: b.cidr,
                        gateway: IpAddr::V4(vtep),
                        dev: RouteDev::Vxlan,
                        onlink: true,
                    });
                }
                Some(_) => missing("IPv4 address"),
                None => missing("VXLAN tunnel address"),
            }
        } else if pool.ipip.enabled() && ipip_ok {
            let Some(ip) = remote_ip else {
                missing("IPv4 address");
                continue;
            };
            if pool.ipip == EncapMode::CrossSubnet && same_subnet {
                out.routes.insert(direct(ip));
            } else {
                out.routes.insert(PlannedRoute::Via {
                    dst: b.cidr,
                    gateway: IpAddr::V4(ip.addr()),
                    dev: RouteDev::Ipip,
                    onlink: true,
                });
            }
        }
    }
    out.problems.sort();
    out.problems.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, vtep: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ipv4: Some(ip.parse().unwrap()),
            vxlan_tunnel_addr: vtep.map(|v| v.parse().unwrap()),
            vxlan_mac: None,
            ipip_tunnel_addr: None,
        }
    }

    fn pool(cidr: &str, vxlan: EncapMode, ipip: EncapMode) -> PoolInfo {
        PoolInfo {
            name: format!("pool-{cidr}"),
            cidr: cidr.parse().unwrap(),
            vxlan,
            ipip,
            disabled: false,
        }
    }

    fn block(cidr: &str, node: &str) -> BlockInfo {
        BlockInfo {
            cidr: cidr.parse().unwrap(),
            node: Some(node.into()),
        }
    }

    fn input(vxlan: EncapMode, ipip: EncapMode) -> PlanInput {
        let mut nodes = BTreeMap::new();
        for n in [
            node("a", "10.0.0.1/24", Some("192.168.0.1")),
            node("b", "10.0.0.2/24", Some("192.168.1.1")),
            node("c", "10.0.1.3/24", Some("192.168.2.1")),
        ] {
            nodes.insert(n.name.clone(), n);
        }
        PlanInput {
            local_node: "a".into(),
            nodes,
            pools: vec![pool("192.168.0.0/16", vxlan, ipip)],
            blocks: vec![
                block("192.168.0.0/26", "a"),
                block("192.168.1.0/26", "b"),
                block("192.168.2.0/26", "c"),
                block("192.168.2.64/26", "c"),
                BlockInfo {
                    cidr: "192.168.3.0/26".parse().unwrap(),
                    node: None,
                },
            ],
            felix: FelixSettings::default(),
            host_mtu: 1500,
            ipip_available: false,
        }
    }

    fn via(dst: &str, gw: &str, dev: RouteDev, onlink: bool) -> PlannedRoute {
        PlannedRoute::Via {
            dst: dst.parse().unwrap(),
            gateway: gw.parse().unwrap(),
            dev,
            onlink,
        }
    }

    fn blackhole(dst: &str) -> PlannedRoute {
        PlannedRoute::Blackhole {
            dst: dst.parse().unwrap(),
        }
    }

    #[test]
    fn vtep_mac_matches_upstream_test_vector() {
        assert_eq!(vtep_mac("node1").to_string(), "66:f9:37:c3:7e:94");
    }

    #[test]
    fn mtu_math() {
        assert_eq!(vxlan_mtu(1500), 1450);
        assert_eq!(ipip_mtu(1500), 1480);
        assert_eq!(vxlan_mtu(9000), 8950);
    }

    #[test]
    fn vxlan_always_routes_every_remote_block_through_the_tunnel() {
        let p = plan(&input(EncapMode::Always, EncapMode::Never));
        let want: BTreeSet<_> = [
            blackhole("192.168.0.0/26"),
            via("192.168.1.0/26", "192.168.1.1", RouteDev::Vxlan, true),
            via("192.168.2.0/26", "192.168.2.1", RouteDev::Vxlan, true),
            via("192.168.2.64/26", "192.168.2.1", RouteDev::Vxlan, true),
        ]
        .into();
        assert_eq!(p.routes, want);
        let dev = p.vxlan.unwrap();
        assert_eq!(dev.vni, 4096);
        assert_eq!(dev.port, 4789);
        assert_eq!(dev.local, "10.0.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(dev.address, "192.168.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(dev.mac, vtep_mac("a"));
        assert_eq!(dev.mtu, 1450);
        assert_eq!(p.pod_mtu, 1450);
        let vteps: Vec<_> = p
            .vteps
            .iter()
            .map(|v| {
                (
                    v.node.as_str(),
                    v.node_ip.to_string(),
                    v.tunnel_ip.to_string(),
                )
            })
            .collect();
        assert_eq!(
            vteps,
            [
                ("b", "10.0.0.2".to_string(), "192.168.1.1".to_string()),
                ("c", "10.0.1.3".to_string(), "192.168.2.1".to_string())
            ]
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn vxlan_cross_subnet_routes_same_subnet_nodes_directly() {
        let p = plan(&input(EncapMode::CrossSubnet, EncapMode::Never));
        let want: BTreeSet<_> = [
            blackhole("192.168.0.0/26"),
            via("192.168.1.0/26", "10.0.0.2", RouteDev::Parent, false),
            via("192.168.2.0/26", "192.168.2.1", RouteDev::Vxlan, true),
            via("192.168.2.64/26", "192.168.2.1", RouteDev::Vxlan, true),
        ]
        .into();
        assert_eq!(p.routes, want);
    }

    #[test]
    fn bgp_pools_only_get_local_blackholes() {
        let p = plan(&input(EncapMode::Never, EncapMode::Never));
        assert_eq!(p.routes, [blackhole("192.168.0.0/26")].into());
        assert!(p.vxlan.is_none());
        assert!(p.vteps.is_empty());
        assert_eq!(p.pod_mtu, 1500);
    }

    #[test]
    fn ipip_without_module_is_a_clear_problem() {
        let p = plan(&input(EncapMode::Never, EncapMode::Always));
        assert!(p.ipip_unavailable());
        assert_eq!(
            p.problems[0].to_string(),
            "ippool pool-192.168.0.0/16: IP-in-IP mode unavailable: kernel has no ipip module"
        );
        assert_eq!(p.routes, [blackhole("192.168.0.0/26")].into());
        assert!(p.ipip.is_none());
    }

    #[test]
    fn ipip_with_module_routes_via_node_ips_on_tunl0() {
        let mut i = input(EncapMode::Never, EncapMode::CrossSubnet);
        i.ipip_available = true;
        i.nodes.get_mut("a").unwrap().ipip_tunnel_addr = Some("192.168.0.1".parse().unwrap());
        let p = plan(&i);
        let want: BTreeSet<_> = [
            blackhole("192.168.0.0/26"),
            via("192.168.1.0/26", "10.0.0.2", RouteDev::Parent, false),
            via("192.168.2.0/26", "10.0.1.3", RouteDev::Ipip, true),
            via("192.168.2.64/26", "10.0.1.3", RouteDev::Ipip, true),
        ]
        .into();
        assert_eq!(p.routes, want);
        assert_eq!(p.ipip.unwrap().mtu, 1480);
        assert_eq!(p.pod_mtu, 1480);
    }

    #[test]
    fn remote_node_without_vtep_is_reported_once_and_not_routed() {
        let mut i = input(EncapMode::Always, EncapMode::Never);
        i.nodes.get_mut("c").unwrap().vxlan_tunnel_addr = None;
        let p = plan(&i);
        assert_eq!(
            p.problems,
            [PlanProblem::RemoteIncomplete {
                node: "c".into(),
                missing: "VXLAN tunnel address"
            }]
        );
        assert!(
            p.routes
                .iter()
                .all(|r| !r.dst().to_string().starts_with("192.168.2."))
        );
        assert_eq!(p.vteps.len(), 1);
    }

    #[test]
    fn local_node_without_tunnel_address_gets_no_device() {
        let mut i = input(EncapMode::Always, EncapMode::Never);
        i.nodes.get_mut("a").unwrap().vxlan_tunnel_addr = None;
        let p = plan(&i);
        assert!(p.vxlan.is_none());
        assert!(matches!(
            p.problems[0],
            PlanProblem::LocalVtepIncomplete { .. }
        ));
        assert_eq!(p.routes, [blackhole("192.168.0.0/26")].into());
    }

    #[test]
    fn explicit_mtu_and_mac_win() {
        let mut i = input(EncapMode::Always, EncapMode::Never);
        i.felix.vxlan_mtu = Some(1400);
        let mac: MacAddr = "66:00:00:00:00:01".parse().unwrap();
        i.nodes.get_mut("b").unwrap().vxlan_mac = Some(mac);
        let p = plan(&i);
        assert_eq!(p.vxlan.unwrap().mtu, 1400);
        assert_eq!(p.pod_mtu, 1400);
        assert_eq!(p.vteps.iter().find(|v| v.node == "b").unwrap().mac, mac);
    }

    #[test]
    fn disabled_pools_and_vxlan_off_in_felix_config() {
        let mut i = input(EncapMode::Always, EncapMode::Never);
        i.felix.vxlan_enabled = Some(false);
        let p = plan(&i);
        assert!(p.vxlan.is_none());
        assert_eq!(p.routes, [blackhole("192.168.0.0/26")].into());
        let mut i = input(EncapMode::Always, EncapMode::Never);
        i.pools[0].disabled = true;
        assert!(plan(&i).vxlan.is_none());
    }
}

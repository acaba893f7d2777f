//! From resources to a per-family plan: the peers of the local node and everything else the
//! BIRD config states, with the semantics of upstream confd: peerings are computed as its
//! `updatePeersV1` does (global, then node-specific, then reverse peerings), then named and
//! filtered as its BIRD templates do.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use calico_model::Resource;
use calico_model::resources::bgp::{
    BindMode, ClusterRoutesMode, DEFAULT_AS_NUMBER, NextHopMode, ReversePeering, SourceAddress,
};
use calico_model::resources::ipam::EncapMode;
use calico_model::resources::{BGPConfigurationSpec, BGPPeerSpec, NodeSpec};
use calico_model::selector;
use ipnet::IpNet;

use crate::{AffinityState, BgpInputs, RenderError, duration, filters};

/// IP family of one rendered file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn matches(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
    fn matches_net(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
    /// BIRD channel / table keyword.
    pub fn channel(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "V4",
            Family::V6 => "V6",
        }
    }
}

/// Where a peering came from; the protocol name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// Node-to-node mesh (`Mesh_`).
    Mesh,
    /// A BGPPeer that applies to every node (`Global_`).
    Global,
    /// A BGPPeer selected for this node (`node`, `nodeSelector`, or a reverse peering) (`Node_`).
    Node,
}

impl PeerKind {
    fn prefix(self) -> &'static str {
        match self {
            PeerKind::Mesh => "Mesh",
            PeerKind::Global => "Global",
            PeerKind::Node => "Node",
        }
    }
}

/// Next-hop handling of a peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    Default,
    SelfAddress,
    Keep,
}

/// One BGP session of the local node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    /// BIRD protocol name, e.g. `Mesh_10_192_0_3`, `Global_10_192_0_1_port_166`.
    pub name: String,
    pub kind: PeerKind,
    pub ip: IpAddr,
    /// Remote port (omitted = 179).
    pub port: Option<u16>,
    pub as_number: u32,
    /// `local as` override for this session.
    pub local_as: Option<u32>,
    /// Local address for the TCP session (`source address`).
    pub source_address: Option<IpAddr>,
    pub password: Option<String>,
    /// `Some(hops)`: `ttl security on; multihop <hops>`; `None`: `ttl security off; multihop`.
    pub ttl_security: Option<u8>,
    pub passive: bool,
    /// `rr client; rr cluster id <id>` (this node is a route reflector, the peer its client).
    pub rr_cluster_id: Option<String>,
    /// Whether the peer is in the same AS (iBGP): `calico_export_to_bgp_peers(<this>)`.
    pub internal: bool,
    /// BIRD filter functions (BGPFilter) called on import, in order.
    pub import_filters: Vec<FilterCall>,
    /// BIRD filter functions (BGPFilter) called on export, in order.
    pub export_filters: Vec<FilterCall>,
    pub graceful_restart_time: Option<u64>,
    pub keepalive_time: Option<u64>,
    pub next_hop: NextHop,
    pub allow_local_as: Option<u32>,
    /// `reachableBy`: the gateway of a static /32 (/128) route to the peer.
    pub reachable_by: Option<IpAddr>,
}

/// A call of a BGPFilter function from a peer's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterCall {
    /// Function name (without quotes).
    pub function: String,
    /// `Some(same_as)` when the filter has peerType rules and takes the iBGP flag.
    pub arg: Option<bool>,
}

/// `debug` level of BIRD protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugLevel {
    /// `logSeverityScreen: Debug`: `debug all`.
    All,
    /// Info (default): state changes (and routes/filters/events for BGP).
    States,
    /// Anything else: no debug output.
    None,
}

/// How a pool's CIDR is treated by the export and kernel filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    pub cidr: IpNet,
    /// `disableBGPExport`: rejected towards every peer.
    pub export_disabled: bool,
    /// Kernel programming: `true` = BIRD installs the pool's routes, `false` = rejected (Felix).
    pub kernel_accept: bool,
    /// Why the kernel filter rejects (rendered as a comment).
    pub kernel_reason: &'static str,
}

/// A local block for `calico_aggr` / the blackhole static protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPlan {
    pub cidr: IpNet,
    pub state: AffinityState,
}

/// A rendered BGPFilter function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFunction {
    pub filter: String,
    pub function: String,
    /// Takes `(bool is_same_as)`.
    pub takes_peer_type: bool,
    /// Body lines (already indented by two spaces).
    pub body: Vec<String>,
}

/// Everything one file (`bird.cfg` or `bird6.cfg`) states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPlan {
    pub family: Family,
    pub node_name: String,
    pub router_id: String,
    /// This node's address of the family; `None` disables BGP in this file.
    pub node_ip: Option<IpAddr>,
    pub local_as: u32,
    pub listen_port: Option<u16>,
    /// `bindMode: NodeIP`: the address BIRD binds to.
    pub listen_address: Option<IpAddr>,
    pub debug: DebugLevel,
    pub ignored_interfaces: Vec<String>,
    pub normal_route_priority: i64,
    /// Felix owns IPIP routes: also reject routes via `tunl0` towards iBGP peers.
    pub felix_owns_ipip: bool,
    pub peers: Vec<PeerPlan>,
    pub pools: Vec<PoolPlan>,
    pub blocks: Vec<BlockPlan>,
    pub borrowed: Vec<IpAddr>,
    /// `apply_communities`: (cidr, community statements) in the configured order.
    pub communities: Vec<(String, Vec<String>)>,
    /// Service CIDRs advertised from this node (static blackhole routes, accepted on export).
    pub service_routes: Vec<IpNet>,
    /// Service CIDRs never programmed into the kernel from BGP (the local kube-proxy handles
    /// them).
    pub reject_cidrs: Vec<IpNet>,
    /// On a route reflector: external / load-balancer ranges whose routes are re-advertised.
    pub rr_service_ranges: Vec<IpNet>,
    pub filter_functions: Vec<FilterFunction>,
}

/// BIRD's largest integer, used to map route metrics to local preference.
pub const BIRD_INT_MAX: i64 = 2_147_483_647;

struct NodeInfo<'a> {
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    as_number: Option<u32>,
    rr_cluster_id: &'a str,
}

impl NodeInfo<'_> {
    fn ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// A candidate peering before naming (upstream's v1 `bgpPeer`).
struct Candidate {
    ip: IpAddr,
    port: Option<u16>,
    as_number: u32,
    rr_cluster_id: String,
    calico_node: bool,
    from: usize,
}

struct Ctx<'a> {
    inputs: &'a BgpInputs,
    family: Family,
    global: Option<&'a BGPConfigurationSpec>,
    node_cfg: Option<&'a BGPConfigurationSpec>,
    nodes: Vec<NodeInfo<'a>>,
    global_as: u32,
}

/// Plans one family's configuration.
pub fn plan(inputs: &BgpInputs, family: Family) -> Result<FamilyPlan, RenderError> {
    let mut nodes = Vec::new();
    for n in &inputs.nodes {
        nodes.push(node_info(n)?);
    }
    nodes.sort_by(|a, b| a.name.cmp(b.name));
    let global = inputs
        .bgp_configurations
        .iter()
        .find(|c| c.metadata.name == "default")
        .map(|c| &c.spec);
    let node_cfg_name = format!("node.{}", inputs.node_name);
    let node_cfg = inputs
        .bgp_configurations
        .iter()
        .find(|c| c.metadata.name == node_cfg_name)
        .map(|c| &c.spec);
    let global_as = global
        .and_then(|g| g.as_number)
        .map_or(DEFAULT_AS_NUMBER, |a| a.0);
    let ctx = Ctx {
        inputs,
        family,
        global,
        node_cfg,
        nodes,
        global_as,
    };

    let local = ctx
        .nodes
        .iter()
        .find(|n| n.name == inputs.node_name)
        .ok_or_else(|| RenderError::LocalNodeMissing(inputs.node_name.clone()))?;
    let router_id = match (inputs.router_id, local.v4) {
        (Some(id), _) => id.to_string(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => return Err(RenderError::NoRouterId(inputs.node_name.clone())),
    };
    let node_ip = local.ip(family);
    let local_as = local.as_number.unwrap_or(global_as);

    let listen_port = ctx.listen_port_of(&inputs.node_name);
    let listen_address = match global.and_then(|g| g.bind_mode) {
        Some(BindMode::NodeIP) => node_ip,
        _ => None,
    };
    let log_level = node_cfg
        .map(|c| c.log_severity_screen.as_str())
        .filter(|s| !s.is_empty())
        .or(global.map(|g| g.log_severity_screen.as_str()))
        .unwrap_or("")
        .to_ascii_lowercase();
    let debug = match log_level.as_str() {
        "debug" => DebugLevel::All,
        "info" | "" => DebugLevel::States,
        _ => DebugLevel::None,
    };
    let normal_route_priority = match family {
        Family::V4 => global.and_then(|g| g.ipv4_normal_route_priority),
        Family::V6 => global.and_then(|g| g.ipv6_normal_route_priority),
    }
    .unwrap_or(1024);
    let cluster_routes = global.and_then(|g| g.program_cluster_routes);
    let (bird_ipip, bird_no_encap) = match cluster_routes {
        Some(ClusterRoutesMode::Disabled) => (false, false),
        Some(ClusterRoutesMode::Enabled) => (true, true),
        Some(ClusterRoutesMode::EnabledIpipOnly) => (true, false),
        Some(ClusterRoutesMode::EnabledNoEncapOnly) | None => (false, true),
    };

    let filter_functions = filters::functions(&inputs.filters, family)?;
    let peers = match node_ip {
        Some(ip) => ctx.peers(local, ip, local_as, &filter_functions)?,
        None => Vec::new(),
    };

    let mut pools = Vec::new();
    for p in &inputs.ip_pools {
        let cidr: IpNet = p.spec.cidr.parse().map_err(|_| RenderError::BadPoolCidr {
            pool: p.metadata.name.clone(),
            value: p.spec.cidr.clone(),
        })?;
        if !family.matches_net(&cidr) {
            continue;
        }
        let enc = |m: Option<EncapMode>| m.is_some_and(EncapMode::enabled);
        let (kernel_accept, kernel_reason) = if enc(p.spec.vxlan_mode) {
            (false, "VXLAN routes are handled by Felix.")
        } else if enc(p.spec.ipip_mode) {
            (bird_ipip, "Cluster routes are handled by Felix.")
        } else {
            (bird_no_encap, "Cluster routes are handled by Felix.")
        };
        pools.push(PoolPlan {
            cidr: cidr.trunc(),
            export_disabled: p.spec.disable_bgp_export,
            kernel_accept,
            kernel_reason,
        });
    }
    pools.sort_by_key(|p| p.cidr.to_string());
    pools.dedup_by(|a, b| a.cidr == b.cidr);

    let mut blocks: Vec<BlockPlan> = inputs
        .block_affinities
        .iter()
        .filter(|b| family.matches_net(&b.cidr))
        .map(|b| BlockPlan {
            cidr: b.cidr.trunc(),
            state: b.state,
        })
        .collect();
    blocks.sort_by_key(|b| (b.cidr.to_string(), b.state));
    blocks.dedup_by(|a, b| a.cidr == b.cidr);
    let mut borrowed: Vec<IpAddr> = inputs
        .borrowed_ips
        .iter()
        .copied()
        .filter(|ip| family.matches(ip))
        .collect();
    borrowed.sort_by_key(|ip| ip.to_string());
    borrowed.dedup();

    let communities = ctx.communities()?;
    let (service_routes, reject_cidrs, rr_service_ranges) = ctx.service_routes(local)?;
    let ignored_interfaces = global
        .map(|g| g.ignored_interfaces.clone())
        .unwrap_or_default();

    Ok(FamilyPlan {
        family,
        node_name: inputs.node_name.clone(),
        router_id,
        node_ip,
        local_as,
        listen_port,
        listen_address,
        debug,
        ignored_interfaces,
        normal_route_priority,
        felix_owns_ipip: !bird_ipip,
        peers,
        pools,
        blocks,
        borrowed,
        communities,
        service_routes,
        reject_cidrs,
        rr_service_ranges,
        filter_functions,
    })
}

fn node_info(n: &Resource<NodeSpec>) -> Result<NodeInfo<'_>, RenderError> {
    let name = n.metadata.name.as_str();
    let bgp = n.spec.bgp.as_ref();
    let addr = |field: &'static str, v: Option<&String>| -> Result<Option<IpAddr>, RenderError> {
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let ip_part = v.split_once('/').map_or(v.as_str(), |(ip, _)| ip);
        ip_part
            .parse::<IpAddr>()
            .map(Some)
            .map_err(|_| RenderError::BadNodeAddress {
                node: name.to_string(),
                field,
                value: v.clone(),
            })
    };
    Ok(NodeInfo {
        name,
        labels: &n.metadata.labels,
        v4: addr("spec.bgp.ipv4Address", bgp.map(|b| &b.ipv4_address))?,
        v6: addr("spec.bgp.ipv6Address", bgp.map(|b| &b.ipv6_address))?,
        as_number: bgp.and_then(|b| b.as_number).map(|a| a.0),
        rr_cluster_id: bgp.map_or("", |b| b.route_reflector_cluster_id.as_str()),
    })
}

impl<'a> Ctx<'a> {
    /// Listen port of a node: its `node.<name>` BGPConfiguration, else the global one.
    fn listen_port_of(&self, node: &str) -> Option<u16> {
        let name = format!("node.{node}");
        let per_node = self
            .inputs
            .bgp_configurations
            .iter()
            .find(|c| c.metadata.name == name)
            .and_then(|c| c.spec.listen_port);
        per_node
            .or(self.global.and_then(|g| g.listen_port))
            .filter(|p| *p != 0)
            .and_then(|p| u16::try_from(p).ok())
    }

    fn node_as(&self, n: &NodeInfo<'_>) -> u32 {
        n.as_number.unwrap_or(self.global_as)
    }

    fn select(
        &self,
        peer: &str,
        field: &'static str,
        sel: &str,
    ) -> Result<Vec<usize>, RenderError> {
        let s = selector::parse(sel).map_err(|_| RenderError::BadSelector {
            peer: peer.to_string(),
            field,
            value: sel.to_string(),
        })?;
        Ok((0..self.nodes.len())
            .filter(|i| s.evaluate(self.nodes[*i].labels))
            .collect())
    }

    /// Nodes whose address is `ip`, whose AS is `as_number` (unset = global) and, when `port`
    /// is given, whose listen port is `port` (upstream `nodesWithIPPortAndAS`).
    fn nodes_with_ip_port_as(
        &self,
        ip: IpAddr,
        as_number: Option<u32>,
        port: Option<u16>,
    ) -> Vec<usize> {
        let want_as = as_number.unwrap_or(self.global_as);
        (0..self.nodes.len())
            .filter(|i| {
                let n = &self.nodes[*i];
                (n.v4 == Some(ip) || n.v6 == Some(ip))
                    && self.node_as(n) == want_as
                    && port.is_none_or(|p| self.listen_port_of(n.name).unwrap_or(179) == p)
            })
            .collect()
    }

    /// A Calico node as a peer (upstream `nodeAsBGPPeers`), for one family.
    fn node_as_candidate(&self, idx: usize, from: usize) -> Option<Candidate> {
        let n = &self.nodes[idx];
        let ip = n.ip(self.family)?;
        Some(Candidate {
            ip,
            port: self.listen_port_of(n.name),
            as_number: self.node_as(n),
            rr_cluster_id: n.rr_cluster_id.to_string(),
            calico_node: false,
            from,
        })
    }

    fn peers(
        &self,
        local: &NodeInfo<'_>,
        local_ip: IpAddr,
        local_as: u32,
        functions: &[FilterFunction],
    ) -> Result<Vec<PeerPlan>, RenderError> {
        let mut out: BTreeMap<String, PeerPlan> = BTreeMap::new();
        let local_cluster = local.rr_cluster_id;

        // Node-to-node mesh: every other non-RR node, unless this node is an RR or the mesh is off.
        let mesh_on = self
            .global
            .and_then(|g| g.node_to_node_mesh_enabled)
            .unwrap_or(true);
        if mesh_on && local_cluster.is_empty() {
            let password = match self.global.and_then(|g| g.node_mesh_password.as_ref()) {
                Some(p) => self.secret(p, "bgpconfiguration default")?,
                None => None,
            };
            let restart = match self
                .global
                .and_then(|g| g.node_mesh_max_restart_time.as_deref())
            {
                Some(d) => Some(
                    duration::seconds(d).ok_or_else(|| RenderError::BadDuration {
                        object: "bgpconfiguration default".into(),
                        field: "nodeMeshMaxRestartTime",
                        value: d.to_string(),
                    })?,
                ),
                None => None,
            };
            for n in &self.nodes {
                let Some(ip) = n.ip(self.family) else {
                    continue;
                };
                if ip == local_ip || !n.rr_cluster_id.is_empty() {
                    continue;
                }
                let as_number = self.node_as(n);
                let internal = as_number == local_as;
                let p = PeerPlan {
                    name: peer_name(PeerKind::Mesh, ip, None),
                    kind: PeerKind::Mesh,
                    ip,
                    port: self.listen_port_of(n.name),
                    as_number,
                    local_as: None,
                    source_address: Some(local_ip),
                    password: password.clone(),
                    ttl_security: None,
                    // Only the side with the lower address connects, to avoid open collisions.
                    passive: ip.to_string() > local_ip.to_string(),
                    rr_cluster_id: None,
                    internal,
                    import_filters: Vec::new(),
                    export_filters: Vec::new(),
                    graceful_restart_time: restart,
                    keepalive_time: None,
                    next_hop: NextHop::Default,
                    allow_local_as: None,
                    reachable_by: None,
                };
                out.entry(p.name.clone()).or_insert(p);
            }
        }

        // Explicit BGPPeers, as upstream's updatePeersV1 computes them for this node: first the
        // global ones, then node-specific ones (skipped when a global peering to the same
        // address and port exists), then reverse peerings towards Calico nodes.
        let mut peers: Vec<&Resource<BGPPeerSpec>> = self.inputs.peers.iter().collect();
        peers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let local_idx = self.nodes.iter().position(|n| n.name == local.name);
        let mut keys: BTreeMap<(IpAddr, Option<u16>), PeerKind> = BTreeMap::new();
        let mut chosen: Vec<(PeerKind, Candidate)> = Vec::new();
        for global_pass in [true, false] {
            for (pi, r) in peers.iter().enumerate() {
                let spec = &r.spec;
                let is_global = spec.node.is_empty() && spec.node_selector.is_empty();
                if is_global != global_pass {
                    continue;
                }
                if !global_pass {
                    let applies = if !spec.node_selector.is_empty() {
                        let sel =
                            self.select(&r.metadata.name, "nodeSelector", &spec.node_selector)?;
                        local_idx.is_some_and(|li| sel.contains(&li))
                    } else {
                        spec.node == local.name
                    };
                    if !applies {
                        continue;
                    }
                }
                let kind = if global_pass {
                    PeerKind::Global
                } else {
                    PeerKind::Node
                };
                for c in self.candidates_of(r, pi)? {
                    let key = (c.ip, c.port);
                    if keys.contains_key(&key) {
                        continue;
                    }
                    keys.insert(key, kind);
                    chosen.push((kind, c));
                }
            }
        }
        // Reverse peerings: this node is matched by a BGPPeer's remote side.
        for (pi, r) in peers.iter().enumerate() {
            let spec = &r.spec;
            if spec.reverse_peering == Some(ReversePeering::Manual) {
                continue;
            }
            let Some(li) = local_idx else { continue };
            let locals = if !spec.peer_selector.is_empty() {
                self.select(&r.metadata.name, "peerSelector", &spec.peer_selector)?
            } else {
                let Some((ip, port)) = calico_model::resources::bgp::parse_peer_ip(&spec.peer_ip)
                else {
                    continue;
                };
                if !self.family.matches(&ip) {
                    continue;
                }
                self.nodes_with_ip_port_as(ip, spec.as_number.map(|a| a.0), port)
            };
            if !locals.contains(&li) {
                continue;
            }
            let remotes = if !spec.node_selector.is_empty() {
                self.select(&r.metadata.name, "nodeSelector", &spec.node_selector)?
            } else if !spec.node.is_empty() {
                self.nodes
                    .iter()
                    .position(|n| n.name == spec.node)
                    .into_iter()
                    .collect()
            } else {
                (0..self.nodes.len()).collect()
            };
            for ri in remotes {
                let Some(c) = self.node_as_candidate(ri, pi) else {
                    continue;
                };
                let key = (c.ip, c.port);
                if keys.contains_key(&key) {
                    continue;
                }
                keys.insert(key, PeerKind::Node);
                chosen.push((PeerKind::Node, c));
            }
        }

        for (kind, c) in chosen {
            if c.ip == local_ip {
                continue;
            }
            let r = peers[c.from];
            let p = self.peer_plan(kind, c, r, local_ip, local_as, local_cluster, functions)?;
            out.entry(p.name.clone()).or_insert(p);
        }
        Ok(out.into_values().collect())
    }

    /// The peerings one BGPPeer asks for, in this family.
    fn candidates_of(
        &self,
        r: &Resource<BGPPeerSpec>,
        from: usize,
    ) -> Result<Vec<Candidate>, RenderError> {
        let spec = &r.spec;
        if !spec.peer_selector.is_empty() {
            let sel = self.select(&r.metadata.name, "peerSelector", &spec.peer_selector)?;
            return Ok(sel
                .into_iter()
                .filter_map(|i| self.node_as_candidate(i, from))
                .collect());
        }
        let (ip, mut port) = calico_model::resources::bgp::parse_peer_ip(&spec.peer_ip)
            .ok_or_else(|| RenderError::BadPeerIp {
                peer: r.metadata.name.clone(),
                value: spec.peer_ip.clone(),
            })?;
        if !self.family.matches(&ip) {
            return Ok(Vec::new());
        }
        let as_number = spec
            .as_number
            .ok_or_else(|| RenderError::PeerWithoutAs {
                peer: r.metadata.name.clone(),
            })?
            .0;
        if port.is_none() {
            // A Calico node is peered on its own listen port.
            if let Some(&ni) = self
                .nodes_with_ip_port_as(ip, Some(as_number), None)
                .first()
            {
                port = self.listen_port_of(self.nodes[ni].name);
            }
        }
        let calico_node = self
            .nodes
            .iter()
            .any(|n| n.v4 == Some(ip) || n.v6 == Some(ip));
        Ok(vec![Candidate {
            ip,
            port,
            as_number,
            rr_cluster_id: String::new(),
            calico_node,
            from,
        }])
    }

    #[allow(clippy::too_many_arguments)]
    fn peer_plan(
        &self,
        kind: PeerKind,
        c: Candidate,
        r: &Resource<BGPPeerSpec>,
        local_ip: IpAddr,
        node_as: u32,
        local_cluster: &str,
        functions: &[FilterFunction],
    ) -> Result<PeerPlan, RenderError> {
        let spec = &r.spec;
        let object = format!("bgppeer {}", r.metadata.name);
        let local_as = spec.local_as_number.map(|a| a.0).filter(|a| *a != 0);
        let effective_as = local_as.unwrap_or(node_as);
        let internal = c.as_number == effective_as;
        let password = match &spec.password {
            Some(p) => self.secret(p, &object)?,
            None => None,
        };
        let dur = |field: &'static str, v: Option<&str>| -> Result<Option<u64>, RenderError> {
            match v {
                Some(d) => duration::seconds(d)
                    .map(Some)
                    .ok_or_else(|| RenderError::BadDuration {
                        object: object.clone(),
                        field,
                        value: d.to_string(),
                    }),
                None => Ok(None),
            }
        };
        let mut next_hop = match spec.next_hop_mode {
            Some(NextHopMode::SelfAddress) => NextHop::SelfAddress,
            Some(NextHopMode::Keep) => NextHop::Keep,
            Some(NextHopMode::Auto) | None => NextHop::Default,
        };
        // The deprecated keepOriginalNextHop only matters for eBGP (iBGP keeps it anyway).
        if spec.keep_original_next_hop && !internal {
            next_hop = NextHop::Keep;
        }
        let rr_cluster_id =
            (internal && !local_cluster.is_empty() && c.rr_cluster_id != local_cluster)
                .then(|| local_cluster.to_string());
        let passive =
            kind == PeerKind::Global && c.calico_node && c.ip.to_string() > local_ip.to_string();
        let mut import_filters = Vec::new();
        let mut export_filters = Vec::new();
        for name in &spec.filters {
            let mut found = false;
            for f in functions.iter().filter(|f| &f.filter == name) {
                found = true;
                let call = FilterCall {
                    function: f.function.clone(),
                    arg: f.takes_peer_type.then_some(internal),
                };
                if f.function.contains("_importFilter") {
                    import_filters.push(call);
                } else {
                    export_filters.push(call);
                }
            }
            if !found && !self.inputs.filters.iter().any(|f| &f.metadata.name == name) {
                return Err(RenderError::MissingFilter {
                    filter: name.clone(),
                    peer: r.metadata.name.clone(),
                });
            }
        }
        let reachable_by = if spec.reachable_by.is_empty() {
            None
        } else {
            let gw: IpAddr =
                spec.reachable_by
                    .parse()
                    .map_err(|_| RenderError::BadReachableBy {
                        peer: r.metadata.name.clone(),
                        value: spec.reachable_by.clone(),
                    })?;
            if gw.is_ipv4() != c.ip.is_ipv4() {
                return Err(RenderError::BadReachableBy {
                    peer: r.metadata.name.clone(),
                    value: spec.reachable_by.clone(),
                });
            }
            Some(gw)
        };
        Ok(PeerPlan {
            reachable_by,
            name: peer_name(kind, c.ip, c.port),
            kind,
            ip: c.ip,
            port: c.port,
            as_number: c.as_number,
            local_as,
            source_address: match spec.source_address {
                Some(SourceAddress::NoSourceAddress) => None,
                Some(SourceAddress::UseNodeIP) | None => Some(local_ip),
            },
            password,
            ttl_security: spec
                .ttl_security
                .filter(|t| *t > 0)
                .map(|t| t.clamp(1, 255) as u8),
            passive,
            rr_cluster_id,
            internal,
            import_filters,
            export_filters,
            graceful_restart_time: dur("maxRestartTime", spec.max_restart_time.as_deref())?,
            keepalive_time: dur("keepaliveTime", spec.keepalive_time.as_deref())?,
            next_hop,
            allow_local_as: spec
                .num_allowed_local_as_numbers
                .filter(|n| *n > 0)
                .map(|n| n.min(i64::from(u32::MAX)) as u32),
        })
    }

    /// Resolves a `secretKeyRef`; a missing secret or key means no password (as upstream).
    fn secret(
        &self,
        p: &calico_model::resources::bgp::BGPPassword,
        object: &str,
    ) -> Result<Option<String>, RenderError> {
        let Some(r) = &p.secret_key_ref else {
            return Ok(None);
        };
        let Some(v) = self.inputs.secrets.get(&(r.name.clone(), r.key.clone())) else {
            return Ok(None);
        };
        if v.contains(['"', '\n', '\r']) {
            return Err(RenderError::BadPassword {
                object: object.to_string(),
            });
        }
        Ok(Some(v.clone()))
    }

    /// Service advertisement from the BGPConfiguration's serviceClusterIPs, serviceExternalIPs
    /// and serviceLoadBalancerIPs ranges (single-address LB entries are per-service and need
    /// the Service watcher, so they are left out here, as upstream does for the global ranges).
    /// A node labelled `node.kubernetes.io/exclude-from-external-load-balancers=true` does not
    /// advertise them but still keeps them out of its kernel.
    #[allow(clippy::type_complexity)]
    fn service_routes(
        &self,
        local: &NodeInfo<'_>,
    ) -> Result<(Vec<IpNet>, Vec<IpNet>, Vec<IpNet>), RenderError> {
        let Some(g) = self.global else {
            return Ok(Default::default());
        };
        let parse = |field: &'static str, v: &str| -> Result<IpNet, RenderError> {
            v.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| RenderError::BadServiceCidr {
                    field,
                    value: v.to_string(),
                })
        };
        let mut ranges = BTreeSet::new();
        let mut rr_ranges = BTreeSet::new();
        for b in &g.service_cluster_ips {
            ranges.insert(parse("serviceClusterIPs", &b.cidr)?);
        }
        for b in &g.service_external_ips {
            let n = parse("serviceExternalIPs", &b.cidr)?;
            ranges.insert(n);
            rr_ranges.insert(n);
        }
        for b in &g.service_load_balancer_ips {
            let n = parse("serviceLoadBalancerIPs", &b.cidr)?;
            rr_ranges.insert(n);
            if n.prefix_len() != n.max_prefix_len() {
                ranges.insert(n);
            }
        }
        let fam = |set: BTreeSet<IpNet>| -> Vec<IpNet> {
            set.into_iter()
                .filter(|n| self.family.matches_net(n))
                .collect()
        };
        let excluded = local
            .labels
            .get("node.kubernetes.io/exclude-from-external-load-balancers")
            .is_some_and(|v| v == "true");
        let reject = fam(ranges.clone());
        let advertise = if excluded { Vec::new() } else { fam(ranges) };
        let rr = if local.rr_cluster_id.is_empty() {
            Vec::new()
        } else {
            fam(rr_ranges)
        };
        Ok((advertise, reject, rr))
    }

    /// `apply_communities` statements: the node's own prefixAdvertisements when its
    /// `node.<name>` configuration has any, else the global ones.
    fn communities(&self) -> Result<Vec<(String, Vec<String>)>, RenderError> {
        let (cfg, cfg_name) = match (self.node_cfg, self.global) {
            (Some(n), _) if !n.prefix_advertisements.is_empty() => {
                (n, format!("node.{}", self.inputs.node_name))
            }
            (_, Some(g)) => (g, "default".to_string()),
            (Some(n), None) => (n, format!("node.{}", self.inputs.node_name)),
            (None, None) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for adv in &cfg.prefix_advertisements {
            let Ok(net) = adv.cidr.parse::<IpNet>() else {
                continue;
            };
            if !self.family.matches_net(&net) {
                continue;
            }
            let mut values = BTreeSet::new();
            for c in &adv.communities {
                if calico_model::resources::bgp::community_value_error(c).is_none() {
                    values.insert(c.clone());
                } else if let Some(def) = cfg.communities.iter().find(|d| &d.name == c) {
                    values.insert(def.value.clone());
                }
            }
            let mut stmts = Vec::new();
            for v in values {
                let parts: Vec<&str> = v.split(':').collect();
                if parts.iter().any(|p| p.parse::<u32>().is_err()) {
                    return Err(RenderError::BadCommunity {
                        config: cfg_name.clone(),
                        value: v,
                    });
                }
                match parts.as_slice() {
                    [a, b] => stmts.push(format!("bgp_community.add(({a}, {b}));")),
                    [a, b, c] => stmts.push(format!("bgp_large_community.add(({a}, {b}, {c}));")),
                    _ => {
                        return Err(RenderError::BadCommunity {
                            config: cfg_name.clone(),
                            value: v,
                        });
                    }
                }
            }
            if !stmts.is_empty() {
                out.push((adv.cidr.clone(), stmts));
            }
        }
        Ok(out)
    }
}

/// `Mesh_10_192_0_3`, `Node_fe0a__3`, `Global_10_192_0_1_port_166`.
pub fn peer_name(kind: PeerKind, ip: IpAddr, port: Option<u16>) -> String {
    let ip = ip.to_string().replace(['.', ':'], "_");
    match port {
        Some(p) if kind != PeerKind::Mesh => format!("{}_{ip}_port_{p}", kind.prefix()),
        _ => format!("{}_{ip}", kind.prefix()),
    }
}

pub(crate) fn filter_function_name(filter: &str, import: bool, family: Family) -> String {
    let dir = if import { "import" } else { "export" };
    format!(
        "bgp_{}_{dir}Filter{}",
        filters::truncate_name(filter),
        family.suffix()
    )
}

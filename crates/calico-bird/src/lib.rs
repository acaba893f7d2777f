//! Renders the BIRD 2 configuration of one Calico node (`bird.cfg` for IPv4, `bird6.cfg` for
//! IPv6) from the datastore's BGP resources, as upstream's confd does for BIRD 1.x.
//!
//! Pure and deterministic: [`render`] takes a [`BgpInputs`] snapshot and returns text; the same
//! inputs always give byte-identical output. Peers are sorted by protocol name, pools and
//! blocks by CIDR.
//!
//! Two stages: [`plan`] turns resources into a per-family [`FamilyPlan`] (which peers exist,
//! with which AS, port, password, RR and passive settings), and the `text` module writes that
//! plan in BIRD 2 syntax. Tests and callers can inspect the plan directly.

mod duration;
mod filters;
pub mod plan;
mod text;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use calico_model::Resource;
use calico_model::resources::{
    BGPConfigurationSpec, BGPFilterSpec, BGPPeerSpec, IPPoolSpec, NodeSpec,
};
use ipnet::IpNet;

pub use plan::{Family, FamilyPlan, PeerKind, PeerPlan};

/// State of an IPAM block affinity of the local node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AffinityState {
    /// `state: confirmed`.
    Confirmed,
    /// No state recorded (legacy affinities): treated as confirmed.
    Implicit,
    /// `state: pending`: not exported, no blackhole route.
    Pending,
    /// `state: pendingDeletion`: not exported, no blackhole route.
    PendingDeletion,
}

/// One IPAM block affine to the local node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockAffinity {
    pub cidr: IpNet,
    pub state: AffinityState,
}

/// Everything the renderer needs, already read from the datastore.
#[derive(Debug, Clone, Default)]
pub struct BgpInputs {
    /// The node this configuration is for (`NODENAME`).
    pub node_name: String,
    /// Router ID override (`CALICO_ROUTER_ID`); default: the node's IPv4 address.
    pub router_id: Option<Ipv4Addr>,
    /// `default` and `node.<name>` BGPConfigurations (others are ignored).
    pub bgp_configurations: Vec<Resource<BGPConfigurationSpec>>,
    pub nodes: Vec<Resource<NodeSpec>>,
    pub peers: Vec<Resource<BGPPeerSpec>>,
    pub filters: Vec<Resource<BGPFilterSpec>>,
    pub ip_pools: Vec<Resource<IPPoolSpec>>,
    /// Block affinities of the local node.
    pub block_affinities: Vec<BlockAffinity>,
    /// Addresses used on this node from blocks affine to other nodes (advertised as /32, /128).
    pub borrowed_ips: Vec<IpAddr>,
    /// Resolved secrets: (secret name, key) -> value, for `password.secretKeyRef`.
    pub secrets: BTreeMap<(String, String), String>,
}

/// The rendered files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedConfig {
    /// `bird.cfg` (IPv4).
    pub bird_cfg: String,
    /// `bird6.cfg` (IPv6).
    pub bird6_cfg: String,
}

/// Why a configuration could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("node {0}: not found among the Node resources")]
    LocalNodeMissing(String),
    #[error("node {0}: no IPv4 address (spec.bgp.ipv4Address) and no router id override")]
    NoRouterId(String),
    #[error("node {node}: invalid {field} {value:?}")]
    BadNodeAddress {
        node: String,
        field: &'static str,
        value: String,
    },
    #[error("bgppeer {peer}: invalid peerIP {value:?}")]
    BadPeerIp { peer: String, value: String },
    #[error("bgppeer {peer}: peerIP set without asNumber")]
    PeerWithoutAs { peer: String },
    #[error("bgppeer {peer}: invalid {field} {value:?}")]
    BadSelector {
        peer: String,
        field: &'static str,
        value: String,
    },
    #[error("{object}: invalid duration {field} {value:?}")]
    BadDuration {
        object: String,
        field: &'static str,
        value: String,
    },
    #[error("{object}: password contains a character BIRD strings cannot hold (\" or newline)")]
    BadPassword { object: String },
    #[error("ippool {pool}: invalid cidr {value:?}")]
    BadPoolCidr { pool: String, value: String },
    #[error("bgpfilter {filter}: {field}: {message}")]
    BadFilter {
        filter: String,
        field: String,
        message: String,
    },
    #[error("bgpconfiguration {config}: invalid community {value:?}")]
    BadCommunity { config: String, value: String },
    #[error("bgpconfiguration default: invalid {field} cidr {value:?}")]
    BadServiceCidr { field: &'static str, value: String },
    #[error("bgppeer {peer}: reachableBy {value:?} is not an address of the peer's family")]
    BadReachableBy { peer: String, value: String },
    #[error("bgpfilter {filter}: referenced by bgppeer {peer} but not found")]
    MissingFilter { filter: String, peer: String },
}

/// Renders `bird.cfg` and `bird6.cfg` for `inputs.node_name`.
pub fn render(inputs: &BgpInputs) -> Result<RenderedConfig, RenderError> {
    let v4 = plan::plan(inputs, Family::V4)?;
    let v6 = plan::plan(inputs, Family::V6)?;
    Ok(RenderedConfig {
        bird_cfg: text::render_family(&v4),
        bird6_cfg: text::render_family(&v6),
    })
}

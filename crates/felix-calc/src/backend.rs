//! The graph's internal ("v1 backend") model: what upstream's syncer update processors produce
//! from v3 resources. Selectors here are already scoped (§1.4); labels already carry the
//! namespace / service-account / orchestrator labels. [`crate::convert`] builds these.

use std::collections::BTreeMap;

use calico_model::selector::Selector;
use ipnet::IpNet;

use crate::msg::{HttpMatch, IcmpMatch, Protocol};

/// Which policy kinds the graph enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    NetworkPolicy,
    GlobalNetworkPolicy,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
        }
    }
}

/// Identity of a policy independent of its tier (the tier is a field that may change).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: String,
    pub name: String,
}

/// Identity of an endpoint or network set anywhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemKey {
    /// WorkloadEndpoint `namespace/name`.
    Workload(String, String),
    /// HostEndpoint name.
    Host(String),
    /// NetworkSet `namespace/name`.
    NetworkSet(String, String),
    /// GlobalNetworkSet name.
    GlobalNetworkSet(String),
}

/// A rule action in backend form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    Log,
    /// v3 `Pass`.
    NextTier,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Log => "log",
            Action::NextTier => "next-tier",
        }
    }
}

/// A rule port: a numeric range or a named port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Port {
    Range(u16, u16),
    Named(String),
}

/// One side (source or destination) of a backend rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entity {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    /// Final positive selector: scoped (§1.4) and, when a negated selector is also present,
    /// already combined with it as `(pos) && (!(neg))` (upstream's rule-scanner optimisation).
    pub selector: Option<Selector>,
    /// Negated selector, passed through unscoped; only set when there is no positive selector.
    pub not_selector: Option<Selector>,
    pub ports: Vec<Port>,
    pub not_ports: Vec<Port>,
    pub original_selector: String,
    pub original_not_selector: String,
    pub original_namespace_selector: String,
    pub original_sa_names: Vec<String>,
    pub original_sa_selector: String,
    /// Whether the v3 rule had a `serviceAccounts` block (for pass-through).
    pub has_sa_match: bool,
}

/// A backend rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub action: Action,
    pub ip_version: Option<u8>,
    pub protocol: Option<Protocol>,
    pub not_protocol: Option<Protocol>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub src: Entity,
    pub dst: Entity,
    pub http: Option<HttpMatch>,
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    pub fn new(action: Action) -> Self {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            src: Entity::default(),
            dst: Entity::default(),
            http: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// A backend policy (NetworkPolicy or GlobalNetworkPolicy after scoping).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub tier: String,
    /// Namespace of a NetworkPolicy; empty for global policies.
    pub namespace: String,
    /// `None` sorts after every number.
    pub order: Option<f64>,
    /// The scoped selector choosing the endpoints the policy applies to.
    pub selector: Selector,
    pub inbound: Vec<Rule>,
    pub outbound: Vec<Rule>,
    /// Governs ingress / egress. Upstream treats an empty types list as both.
    pub ingress: bool,
    pub egress: bool,
    pub do_not_track: bool,
    pub pre_dnat: bool,
    pub apply_on_forward: bool,
    /// `performanceHints: [AssumeNeededOnEveryNode]`.
    pub assume_needed_on_every_node: bool,
}

/// A tier's sort and default-action facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub order: Option<f64>,
    /// `Deny` or `Pass`.
    pub default_action: String,
}

/// A backend profile: rules plus labels inherited by endpoints that reference it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub inbound: Vec<Rule>,
    pub outbound: Vec<Rule>,
    pub labels: BTreeMap<String, String>,
}

/// A named port on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub port: u16,
}

/// What every selectable thing (endpoint or network set) contributes to the label index and to
/// IP sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    /// Own labels (already including the namespace / SA / orchestrator labels).
    pub labels: BTreeMap<String, String>,
    /// Profiles whose labels are inherited, in order.
    pub profiles: Vec<String>,
    /// Addresses / CIDRs that become members of selector IP sets.
    pub nets: Vec<IpNet>,
    /// Named ports (endpoints only).
    pub ports: Vec<NamedPort>,
}

/// Local workload endpoint details sent to the dataplane.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadDetails {
    pub orchestrator_id: String,
    pub workload_id: String,
    pub endpoint_id: String,
    pub interface_name: String,
    pub mac: String,
    pub ipv4_nets: Vec<String>,
    pub ipv6_nets: Vec<String>,
    pub ipv4_nat: Vec<(String, String)>,
    pub ipv6_nat: Vec<(String, String)>,
    pub allow_spoofed_source_prefixes: Vec<String>,
}

/// Local host endpoint details sent to the dataplane.
#[derive(Debug, Clone, PartialEq)]
pub struct HostDetails {
    pub interface_name: String,
    pub expected_ipv4_addrs: Vec<String>,
    pub expected_ipv6_addrs: Vec<String>,
}

/// Endpoint-specific part of an [`EndpointData`].
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointDetails {
    Workload(WorkloadDetails),
    Host(HostDetails),
}

/// A converted endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointData {
    pub node: String,
    pub item: Item,
    pub details: EndpointDetails,
}

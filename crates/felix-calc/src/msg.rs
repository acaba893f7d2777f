//! Messages from the calculation graph to the dataplane, mirroring upstream Felix's protobuf API
//! (`felix/proto/felixbackend.proto`, the policy-related `ToDataplane` payloads).
//!
//! Field names follow the proto (snake case). Empty lists and unset optionals are skipped when
//! serialised, which keeps golden files short.

use std::collections::BTreeMap;

use serde::Serialize;

/// One message to the dataplane.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ToDataplane {
    /// The datastore snapshot has been fully processed.
    InSync,
    IpSetUpdate(IpSetUpdate),
    IpSetDeltaUpdate(IpSetDeltaUpdate),
    IpSetRemove(IpSetRemove),
    ActivePolicyUpdate(ActivePolicyUpdate),
    ActivePolicyRemove(ActivePolicyRemove),
    ActiveProfileUpdate(ActiveProfileUpdate),
    ActiveProfileRemove(ActiveProfileRemove),
    WorkloadEndpointUpdate(WorkloadEndpointUpdate),
    WorkloadEndpointRemove(WorkloadEndpointRemove),
    HostEndpointUpdate(HostEndpointUpdate),
    HostEndpointRemove(HostEndpointRemove),
}

/// The kind of members an IP set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum IpSetType {
    /// Plain addresses.
    #[serde(rename = "IP")]
    Ip,
    /// `<ip>,(tcp|udp|sctp):<port>` (named ports).
    #[serde(rename = "IP_AND_PORT")]
    IpAndPort,
    /// CIDRs (selector sets: endpoint addresses as /32 or /128, network set CIDRs).
    #[serde(rename = "NET")]
    Net,
}

/// An IP set became active; carries its complete membership (sorted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpSetUpdate {
    pub id: String,
    #[serde(rename = "type")]
    pub set_type: IpSetType,
    pub members: Vec<String>,
}

/// Membership change of an IP set that was already sent (both lists sorted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpSetDeltaUpdate {
    pub id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub added_members: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpSetRemove {
    pub id: String,
}

/// Identity of a policy: tier, name, namespace ("" for global kinds) and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PolicyId {
    pub tier: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `NetworkPolicy` or `GlobalNetworkPolicy`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivePolicyUpdate {
    pub id: PolicyId,
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivePolicyRemove {
    pub id: PolicyId,
}

/// A policy's rules, ready for rendering: selectors already replaced by IP set IDs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Namespace of a NetworkPolicy; empty for global kinds.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub tier: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inbound_rules: Vec<Rule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outbound_rules: Vec<Rule>,
    #[serde(skip_serializing_if = "is_false")]
    pub untracked: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub pre_dnat: bool,
    /// The policy's own selector after scoping (canonical form).
    pub original_selector: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub perf_hints: Vec<String>,
}

/// Identity of a profile (its name, e.g. `kns.default`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProfileId {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveProfileUpdate {
    pub id: ProfileId,
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveProfileRemove {
    pub id: ProfileId,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inbound_rules: Vec<Rule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outbound_rules: Vec<Rule>,
}

/// A protocol by lower-case name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `udplite`) or number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Protocol {
    Name(String),
    Number(u8),
}

/// A port range; single ports have `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// ICMP type, optionally with code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IcmpMatch {
    #[serde(rename = "type")]
    pub icmp_type: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
}

/// The v3 service-account match, passed through for the policy-sync API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ServiceAccountMatch {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// The v3 HTTP match, passed through (enforced only by application-layer dataplanes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HttpMatch {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPathMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpPathMatch {
    Exact(String),
    Prefix(String),
}

/// A rule with selectors and named ports replaced by IP set IDs (upstream's `ParsedRule` as
/// sent in `proto.Rule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Rule {
    /// `allow`, `deny`, `log` or `next-tier` (v3 `Pass`).
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,

    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub src_net: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub src_ports: Vec<PortRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub src_named_port_ip_set_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub src_ip_set_ids: Vec<String>,

    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_net: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<PortRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_named_port_ip_set_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dst_ip_set_ids: Vec<String>,

    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpMatch>,

    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_src_net: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_src_ports: Vec<PortRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_src_named_port_ip_set_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_src_ip_set_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_dst_net: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_dst_ports: Vec<PortRange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_dst_named_port_ip_set_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_dst_ip_set_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpMatch>,

    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_src_selector: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_dst_selector: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_src_namespace_selector: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_dst_namespace_selector: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_not_src_selector: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_not_dst_selector: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_service_account_match: Option<ServiceAccountMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_service_account_match: Option<ServiceAccountMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_match: Option<HttpMatch>,
    /// Rule annotations (`metadata.annotations`), rendered as comments.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Identity of a workload endpoint, as upstream's v1 key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct WorkloadEndpointId {
    pub orchestrator_id: String,
    pub workload_id: String,
    pub endpoint_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadEndpointUpdate {
    pub id: WorkloadEndpointId,
    pub endpoint: WorkloadEndpoint,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadEndpointRemove {
    pub id: WorkloadEndpointId,
}

/// Policy applying to an endpoint from one tier, in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TierInfo {
    pub name: String,
    /// `Deny` or `Pass`: what happens after the tier's policies when none decided.
    pub default_action: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress_policies: Vec<PolicyId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress_policies: Vec<PolicyId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct NatInfo {
    pub ext_ip: String,
    pub int_ip: String,
}

/// A local workload endpoint with its ordered policy tiers and profiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadEndpoint {
    pub state: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv4_nets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv6_nets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv4_nat: Vec<NatInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv6_nat: Vec<NatInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
}

/// Identity of a host endpoint (its name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HostEndpointId {
    pub endpoint_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEndpointUpdate {
    pub id: HostEndpointId,
    pub endpoint: HostEndpoint,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEndpointRemove {
    pub id: HostEndpointId,
}

/// A local host endpoint with its normal, untracked, pre-DNAT and forward policy tiers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostEndpoint {
    /// Interface name; empty or `*` as in the resource.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub untracked_tiers: Vec<TierInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_dnat_tiers: Vec<TierInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward_tiers: Vec<TierInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_ipv4_addrs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_ipv6_addrs: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

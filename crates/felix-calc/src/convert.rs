//! v3 resources to the graph's backend model: upstream's syncer update processors
//! (`libcalico-go/lib/backend/syncersv1/updateprocessors/`) plus the rule scanner's selector
//! combination. This is where namespace / service-account scoping of selectors happens (§1.4),
//! `Pass` becomes `next-tier`, and endpoints get the well-known Calico labels.
//!
//! Selector scoping is done on strings exactly as upstream does it (parse, prefix, print,
//! textual `all()`/`global()` replacement, `(a) && (b)` concatenation), then parsed once more, so
//! the canonical forms and therefore the IP set IDs match upstream byte for byte.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_model::resources::policy::{self as v3p, Action as V3Action, PolicyType};
use calico_model::resources::{
    GlobalNetworkPolicySpec, GlobalNetworkSetSpec, HostEndpointSpec, NetworkPolicySpec,
    NetworkSetSpec, ProfileSpec, TierSpec, WorkloadEndpointSpec,
};
use calico_model::selector::{self, Selector};
use calico_model::{AnyResource, Resource};
use ipnet::IpNet;

use crate::backend::{
    self, Action, EndpointData, EndpointDetails, HostDetails, Item, ItemKey, NamedPort, PolicyKey,
    PolicyKind, Port, WorkloadDetails,
};
use crate::graph::BackendUpdate;
use crate::msg::{HttpMatch, HttpPathMatch, IcmpMatch, Protocol};

/// Label holding an endpoint's / network set's namespace.
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
/// Label holding a workload endpoint's service account.
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
/// Label holding a workload endpoint's orchestrator.
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
/// Prefix of namespace labels re-published on `kns.<ns>` profiles.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// Prefix of service-account labels re-published on `ksa.<ns>.<sa>` profiles.
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// Prefix of the per-namespace profile names.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";

/// One input to the graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A resource was created or updated.
    Upsert(Box<AnyResource>),
    /// A resource was deleted.
    Delete(ResourceId),
    /// The datastore snapshot is complete.
    InSync,
}

/// Identity of a deleted resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// The kind as written in manifests, e.g. `GlobalNetworkPolicy`.
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl Update {
    /// An upsert of any typed resource.
    pub fn upsert(r: impl Into<AnyResource>) -> Self {
        Update::Upsert(Box::new(r.into()))
    }

    /// A delete by kind, namespace (empty for cluster-scoped kinds) and name.
    pub fn delete(kind: &str, namespace: &str, name: &str) -> Self {
        Update::Delete(ResourceId::new(kind, namespace, name))
    }
}

impl ResourceId {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        ResourceId {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// A resource the graph could not use. The graph treats it as deleted (fail closed), as
/// upstream's validation filter does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?}: {field}: {message}")]
pub struct CalcError {
    pub kind: String,
    /// `namespace/name` for namespaced kinds.
    pub name: String,
    /// Path of the offending field, e.g. `spec.ingress[0].source.selector`.
    pub field: String,
    pub message: String,
}

/// Where a conversion error happened, for messages.
struct Ctx<'a> {
    kind: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> CalcError {
        let name = if self.namespace.is_empty() {
            self.name.to_string()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        CalcError {
            kind: self.kind.to_string(),
            name,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Converts an update into what the graph should apply (`None`: ignore it, e.g. staged policies
/// and unrelated kinds) and, for a resource that cannot be used, the error; the update to apply
/// is then the delete that stands in for the bad object.
pub(crate) fn to_backend(update: Update) -> (Option<BackendUpdate>, Option<CalcError>) {
    match update {
        Update::InSync => (Some(BackendUpdate::InSync), None),
        Update::Delete(id) => (delete_for(&id.kind, &id.namespace, &id.name), None),
        Update::Upsert(res) => {
            let meta = res.metadata();
            let fallback = delete_for(res.kind(), &meta.namespace, &meta.name);
            match convert_resource(*res) {
                Ok(u) => (u, None),
                Err(e) => (fallback, Some(e)),
            }
        }
    }
}

fn delete_for(kind: &str, namespace: &str, name: &str) -> Option<BackendUpdate> {
    let ns = namespace.to_string();
    let n = name.to_string();
    Some(match kind {
        "NetworkPolicy" => BackendUpdate::Policy(
            PolicyKey {
                kind: PolicyKind::NetworkPolicy,
                namespace: ns,
                name: n,
            },
            None,
        ),
        "GlobalNetworkPolicy" => BackendUpdate::Policy(
            PolicyKey {
                kind: PolicyKind::GlobalNetworkPolicy,
                namespace: String::new(),
                name: n,
            },
            None,
        ),
        "Tier" => BackendUpdate::Tier(n, None),
        "Profile" => BackendUpdate::Profile(n, None),
        "WorkloadEndpoint" => BackendUpdate::Endpoint(ItemKey::Workload(ns, n), None),
        "HostEndpoint" => BackendUpdate::Endpoint(ItemKey::Host(n), None),
        "NetworkSet" => BackendUpdate::NetworkSet(ItemKey::NetworkSet(ns, n), None),
        "GlobalNetworkSet" => BackendUpdate::NetworkSet(ItemKey::GlobalNetworkSet(n), None),
        _ => return None,
    })
}

fn convert_resource(res: AnyResource) -> Result<Option<BackendUpdate>, CalcError> {
    Ok(Some(match res {
        AnyResource::NetworkPolicy(r) => network_policy(&r)?,
        AnyResource::GlobalNetworkPolicy(r) => global_network_policy(&r)?,
        AnyResource::Tier(r) => tier(&r),
        AnyResource::Profile(r) => profile(&r)?,
        AnyResource::WorkloadEndpoint(r) => workload_endpoint(&r)?,
        AnyResource::HostEndpoint(r) => host_endpoint(&r)?,
        AnyResource::NetworkSet(r) => network_set(&r)?,
        AnyResource::GlobalNetworkSet(r) => global_network_set(&r)?,
        // Staged policies are never enforced; other kinds are not graph inputs (yet).
        _ => return Ok(None),
    }))
}

fn tier(r: &Resource<TierSpec>) -> BackendUpdate {
    let action = r.spec.default_action_or_deny();
    BackendUpdate::Tier(
        r.metadata.name.clone(),
        Some(backend::Tier {
            order: r.spec.order,
            default_action: if action == V3Action::Pass {
                "Pass"
            } else {
                "Deny"
            }
            .to_string(),
        }),
    )
}

fn network_policy(r: &Resource<NetworkPolicySpec>) -> Result<BackendUpdate, CalcError> {
    let ns = r.metadata.namespace.as_str();
    let cx = Ctx {
        kind: "NetworkPolicy",
        namespace: ns,
        name: &r.metadata.name,
    };
    let spec = &r.spec;
    // Upstream: `(<selector>) && projectcalico.org/namespace == '<ns>'`, then the SA selector.
    let mut sel = spec.selector.clone();
    if !ns.is_empty() {
        let ns_sel = format!("{LABEL_NAMESPACE} == '{ns}'");
        sel = if sel.is_empty() {
            ns_sel
        } else {
            format!("({sel}) && {ns_sel}")
        };
    }
    sel = prefix_and_append(
        &cx,
        "spec.serviceAccountSelector",
        &sel,
        &spec.service_account_selector,
        SERVICE_ACCOUNT_LABEL_PREFIX,
    )?;
    let key = PolicyKey {
        kind: PolicyKind::NetworkPolicy,
        namespace: ns.to_string(),
        name: r.metadata.name.clone(),
    };
    let policy = backend::Policy {
        tier: v3p::tier_or_default(&spec.tier).to_string(),
        namespace: ns.to_string(),
        order: spec.order,
        selector: parse_field(&cx, "spec.selector", &sel)?,
        inbound: rules(&cx, "spec.ingress", &spec.ingress, ns)?,
        outbound: rules(&cx, "spec.egress", &spec.egress, ns)?,
        ingress: governs(&spec.types, PolicyType::Ingress),
        egress: governs(&spec.types, PolicyType::Egress),
        do_not_track: false,
        pre_dnat: false,
        // Upstream sets this for namespaced policies; it only matters for host endpoints.
        apply_on_forward: true,
        assume_needed_on_every_node: assume_needed(&spec.performance_hints),
    };
    Ok(BackendUpdate::Policy(key, Some(policy)))
}

fn global_network_policy(
    r: &Resource<GlobalNetworkPolicySpec>,
) -> Result<BackendUpdate, CalcError> {
    let cx = Ctx {
        kind: "GlobalNetworkPolicy",
        namespace: "",
        name: &r.metadata.name,
    };
    let spec = &r.spec;
    let mut sel = spec.selector.clone();
    if !spec.namespace_selector.is_empty() {
        sel = prefix_and_append(
            &cx,
            "spec.namespaceSelector",
            &sel,
            &spec.namespace_selector,
            NAMESPACE_LABEL_PREFIX,
        )?;
        sel = sel.replace("all()", &format!("has({LABEL_NAMESPACE})"));
    }
    if !spec.service_account_selector.is_empty() {
        sel = prefix_and_append(
            &cx,
            "spec.serviceAccountSelector",
            &sel,
            &spec.service_account_selector,
            SERVICE_ACCOUNT_LABEL_PREFIX,
        )?;
        sel = sel.replace("all()", &format!("has({LABEL_SERVICE_ACCOUNT})"));
    }
    let key = PolicyKey {
        kind: PolicyKind::GlobalNetworkPolicy,
        namespace: String::new(),
        name: r.metadata.name.clone(),
    };
    let policy = backend::Policy {
        tier: v3p::tier_or_default(&spec.tier).to_string(),
        namespace: String::new(),
        order: spec.order,
        selector: parse_field(&cx, "spec.selector", &sel)?,
        inbound: rules(&cx, "spec.ingress", &spec.ingress, "")?,
        outbound: rules(&cx, "spec.egress", &spec.egress, "")?,
        ingress: governs(&spec.types, PolicyType::Ingress),
        egress: governs(&spec.types, PolicyType::Egress),
        do_not_track: spec.do_not_track,
        pre_dnat: spec.pre_dnat,
        apply_on_forward: spec.apply_on_forward,
        assume_needed_on_every_node: assume_needed(&spec.performance_hints),
    };
    Ok(BackendUpdate::Policy(key, Some(policy)))
}

/// Felix treats an empty `types` list as both directions (back-compat).
fn governs(types: &[PolicyType], t: PolicyType) -> bool {
    types.is_empty() || types.contains(&t)
}

fn assume_needed(hints: &[String]) -> bool {
    hints
        .iter()
        .any(|h| h == v3p::PERF_HINT_ASSUME_NEEDED_ON_EVERY_NODE)
}

fn profile(r: &Resource<ProfileSpec>) -> Result<BackendUpdate, CalcError> {
    let cx = Ctx {
        kind: "Profile",
        namespace: "",
        name: &r.metadata.name,
    };
    Ok(BackendUpdate::Profile(
        r.metadata.name.clone(),
        Some(backend::Profile {
            inbound: rules(&cx, "spec.ingress", &r.spec.ingress, "")?,
            outbound: rules(&cx, "spec.egress", &r.spec.egress, "")?,
            labels: r.spec.labels_to_apply.clone(),
        }),
    ))
}

fn workload_endpoint(r: &Resource<WorkloadEndpointSpec>) -> Result<BackendUpdate, CalcError> {
    let ns = r.metadata.namespace.as_str();
    let cx = Ctx {
        kind: "WorkloadEndpoint",
        namespace: ns,
        name: &r.metadata.name,
    };
    let spec = &r.spec;
    // Anti-forgery: a workload may not claim namespace / service-account profile labels.
    let mut labels: BTreeMap<String, String> = r
        .metadata
        .labels
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(NAMESPACE_LABEL_PREFIX) && !k.starts_with(SERVICE_ACCOUNT_LABEL_PREFIX)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(LABEL_NAMESPACE.to_string(), ns.to_string());
    if !spec.orchestrator.is_empty() {
        labels.insert(LABEL_ORCHESTRATOR.to_string(), spec.orchestrator.clone());
    }
    if !spec.service_account_name.is_empty() {
        labels.insert(
            LABEL_SERVICE_ACCOUNT.to_string(),
            spec.service_account_name.clone(),
        );
    }
    let mut nets = Vec::new();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (i, s) in spec.ip_networks.iter().enumerate() {
        let net = parse_net(s).ok_or_else(|| {
            cx.err(
                format!("spec.ipNetworks[{i}]"),
                format!("{s:?} is not an IP address or CIDR"),
            )
        })?;
        match net {
            IpNet::V4(_) => v4.push(net.to_string()),
            IpNet::V6(_) => v6.push(net.to_string()),
        }
        nets.push(net);
    }
    let (mut nat4, mut nat6) = (Vec::new(), Vec::new());
    for nat in &spec.ip_nats {
        if let (Ok(int), Ok(ext)) = (
            nat.internal_ip.parse::<IpAddr>(),
            nat.external_ip.parse::<IpAddr>(),
        ) {
            let pair = (int.to_string(), ext.to_string());
            if int.is_ipv4() {
                nat4.push(pair)
            } else {
                nat6.push(pair)
            }
        }
    }
    let mut spoof = Vec::new();
    for (i, s) in spec.allow_spoofed_source_prefixes.iter().enumerate() {
        let net = parse_net(s).ok_or_else(|| {
            cx.err(
                format!("spec.allowSpoofedSourcePrefixes[{i}]"),
                format!("{s:?} is not a CIDR"),
            )
        })?;
        spoof.push(net.to_string());
    }
    // Unnamed ports (CNI host ports) are not used by policy.
    let ports = spec
        .ports
        .iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| NamedPort {
            name: p.name.clone(),
            protocol: v1_protocol_name(&p.protocol),
            port: p.port,
        })
        .collect();
    let workload = if !spec.pod.is_empty() {
        spec.pod.clone()
    } else if !spec.workload.is_empty() {
        spec.workload.clone()
    } else {
        r.metadata.name.clone()
    };
    let details = WorkloadDetails {
        orchestrator_id: spec.orchestrator.clone(),
        workload_id: format!("{ns}/{workload}"),
        endpoint_id: if spec.endpoint.is_empty() {
            "eth0".to_string()
        } else {
            spec.endpoint.clone()
        },
        interface_name: spec.interface_name.clone(),
        mac: spec.mac.clone(),
        ipv4_nets: v4,
        ipv6_nets: v6,
        ipv4_nat: nat4,
        ipv6_nat: nat6,
        allow_spoofed_source_prefixes: spoof,
    };
    Ok(BackendUpdate::Endpoint(
        ItemKey::Workload(ns.to_string(), r.metadata.name.clone()),
        Some(EndpointData {
            node: spec.node.clone(),
            item: Item {
                labels,
                profiles: spec.profiles.clone(),
                nets,
                ports,
            },
            details: EndpointDetails::Workload(details),
        }),
    ))
}

fn host_endpoint(r: &Resource<HostEndpointSpec>) -> Result<BackendUpdate, CalcError> {
    let cx = Ctx {
        kind: "HostEndpoint",
        namespace: "",
        name: &r.metadata.name,
    };
    let spec = &r.spec;
    let mut nets = Vec::new();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (i, s) in spec.expected_ips.iter().enumerate() {
        let ip: IpAddr = s.parse().map_err(|_| {
            cx.err(
                format!("spec.expectedIPs[{i}]"),
                format!("{s:?} is not an IP address"),
            )
        })?;
        if ip.is_ipv4() {
            v4.push(ip.to_string())
        } else {
            v6.push(ip.to_string())
        }
        nets.push(IpNet::from(ip));
    }
    let ports = spec
        .ports
        .iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| NamedPort {
            name: p.name.clone(),
            protocol: v1_protocol_name(&p.protocol),
            port: p.port,
        })
        .collect();
    Ok(BackendUpdate::Endpoint(
        ItemKey::Host(r.metadata.name.clone()),
        Some(EndpointData {
            node: spec.node.clone(),
            item: Item {
                labels: r.metadata.labels.clone(),
                profiles: spec.profiles.clone(),
                nets,
                ports,
            },
            details: EndpointDetails::Host(HostDetails {
                interface_name: spec.interface_name.clone(),
                expected_ipv4_addrs: v4,
                expected_ipv6_addrs: v6,
            }),
        }),
    ))
}

fn network_set(r: &Resource<NetworkSetSpec>) -> Result<BackendUpdate, CalcError> {
    let ns = r.metadata.namespace.as_str();
    let cx = Ctx {
        kind: "NetworkSet",
        namespace: ns,
        name: &r.metadata.name,
    };
    let mut labels = r.metadata.labels.clone();
    labels.insert(LABEL_NAMESPACE.to_string(), ns.to_string());
    Ok(BackendUpdate::NetworkSet(
        ItemKey::NetworkSet(ns.to_string(), r.metadata.name.clone()),
        Some(Item {
            labels,
            // Namespace label inheritance, so namespaceSelector works for network sets too.
            profiles: vec![format!("{NAMESPACE_PROFILE_PREFIX}{ns}")],
            nets: nets_field(&cx, "spec.nets", &r.spec.nets)?,
            ports: Vec::new(),
        }),
    ))
}

fn global_network_set(r: &Resource<GlobalNetworkSetSpec>) -> Result<BackendUpdate, CalcError> {
    let cx = Ctx {
        kind: "GlobalNetworkSet",
        namespace: "",
        name: &r.metadata.name,
    };
    Ok(BackendUpdate::NetworkSet(
        ItemKey::GlobalNetworkSet(r.metadata.name.clone()),
        Some(Item {
            labels: r.metadata.labels.clone(),
            profiles: Vec::new(),
            nets: nets_field(&cx, "spec.nets", &r.spec.nets)?,
            ports: Vec::new(),
        }),
    ))
}

fn rules(
    cx: &Ctx<'_>,
    path: &str,
    rules: &[v3p::Rule],
    ns: &str,
) -> Result<Vec<backend::Rule>, CalcError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(cx, &format!("{path}[{i}]"), r, ns))
        .collect()
}

fn rule(cx: &Ctx<'_>, path: &str, r: &v3p::Rule, ns: &str) -> Result<backend::Rule, CalcError> {
    let action = match r.action {
        V3Action::Allow => Action::Allow,
        V3Action::Deny => Action::Deny,
        V3Action::Log => Action::Log,
        V3Action::Pass => Action::NextTier,
    };
    let mut out = backend::Rule::new(action);
    out.ip_version = match r.ip_version {
        None => None,
        Some(v @ (4 | 6)) => Some(v as u8),
        Some(v) => return Err(cx.err(format!("{path}.ipVersion"), format!("{v} is not 4 or 6"))),
    };
    out.protocol = r.protocol.as_ref().map(v1_protocol);
    out.not_protocol = r.not_protocol.as_ref().map(v1_protocol);
    out.icmp = icmp(cx, &format!("{path}.icmp"), r.icmp.as_ref())?;
    out.not_icmp = icmp(cx, &format!("{path}.notICMP"), r.not_icmp.as_ref())?;
    out.src = entity(cx, &format!("{path}.source"), &r.source, ns)?;
    out.dst = entity(cx, &format!("{path}.destination"), &r.destination, ns)?;
    if r.source.services.is_some() || r.destination.services.is_some() {
        // Service matches need the EndpointSlice index, which this graph does not have yet;
        // refuse rather than render a rule that silently matches nothing.
        return Err(cx.err(
            format!("{path}.services"),
            "service matches are not supported by this calculation graph",
        ));
    }
    out.http = r.http.as_ref().map(|h| HttpMatch {
        methods: h.methods.clone(),
        paths: h
            .paths
            .iter()
            .map(|p| {
                if p.exact.is_empty() {
                    HttpPathMatch::Prefix(p.prefix.clone())
                } else {
                    HttpPathMatch::Exact(p.exact.clone())
                }
            })
            .collect(),
    });
    out.annotations = r
        .metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .unwrap_or_default();
    Ok(out)
}

fn icmp(
    cx: &Ctx<'_>,
    path: &str,
    f: Option<&v3p::IcmpFields>,
) -> Result<Option<IcmpMatch>, CalcError> {
    let Some(f) = f else {
        return Ok(None);
    };
    let Some(t) = f.icmp_type else {
        return Ok(None);
    };
    let icmp_type = u8::try_from(t)
        .map_err(|_| cx.err(format!("{path}.type"), format!("{t} is out of range 0-255")))?;
    let code =
        match f.code {
            None => None,
            Some(c) => Some(u8::try_from(c).map_err(|_| {
                cx.err(format!("{path}.code"), format!("{c} is out of range 0-255"))
            })?),
        };
    Ok(Some(IcmpMatch { icmp_type, code }))
}

fn entity(
    cx: &Ctx<'_>,
    path: &str,
    e: &v3p::EntityRule,
    ns: &str,
) -> Result<backend::Entity, CalcError> {
    let sa_sel = match &e.service_accounts {
        Some(sa) => service_account_selector(cx, &format!("{path}.serviceAccounts"), sa)?,
        None => String::new(),
    };
    let ns_sel = if !e.namespace_selector.is_empty() {
        let s = prefix_selector(
            cx,
            &format!("{path}.namespaceSelector"),
            &e.namespace_selector,
            NAMESPACE_LABEL_PREFIX,
        )?;
        s.replace("all()", &format!("has({LABEL_NAMESPACE})"))
            .replace("global()", &format!("!has({LABEL_NAMESPACE})"))
    } else if !ns.is_empty() {
        format!("{LABEL_NAMESPACE} == '{ns}'")
    } else {
        String::new()
    };
    if !e.selector.is_empty() {
        parse_field(cx, &format!("{path}.selector"), &e.selector)?;
    }
    let parts: Vec<&str> = [sa_sel.as_str(), e.selector.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let mut sel = match parts.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        many => format!("({})", many.join(") && (")),
    };
    if !ns_sel.is_empty()
        && (!sel.is_empty() || !e.not_selector.is_empty() || !e.namespace_selector.is_empty())
    {
        sel = if sel.is_empty() {
            ns_sel
        } else {
            format!("({ns_sel}) && ({sel})")
        };
    }
    // Rule-scanner optimisation: a positive selector absorbs the negated one.
    let mut not_sel = e.not_selector.clone();
    if !not_sel.is_empty() {
        parse_field(cx, &format!("{path}.notSelector"), &not_sel)?;
    }
    if !sel.is_empty() && !not_sel.is_empty() {
        sel = format!("({sel}) && (!({not_sel}))");
        not_sel.clear();
    }
    let selector = if sel.is_empty() {
        None
    } else {
        Some(parse_field(cx, &format!("{path}.selector"), &sel)?)
    };
    let not_selector = if not_sel.is_empty() {
        None
    } else {
        Some(parse_field(cx, &format!("{path}.notSelector"), &not_sel)?)
    };
    Ok(backend::Entity {
        nets: nets_field(cx, &format!("{path}.nets"), &e.nets)?,
        not_nets: nets_field(cx, &format!("{path}.notNets"), &e.not_nets)?,
        selector,
        not_selector,
        ports: e.ports.iter().map(port).collect(),
        not_ports: e.not_ports.iter().map(port).collect(),
        original_selector: e.selector.clone(),
        original_not_selector: e.not_selector.clone(),
        original_namespace_selector: e.namespace_selector.clone(),
        original_sa_names: e
            .service_accounts
            .as_ref()
            .map(|s| s.names.clone())
            .unwrap_or_default(),
        original_sa_selector: e
            .service_accounts
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default(),
        has_sa_match: e.service_accounts.is_some(),
    })
}

/// `names` ⇒ `projectcalico.org/serviceaccount in {…}`, `selector` ⇒ `pcsa.`-prefixed, ANDed.
fn service_account_selector(
    cx: &Ctx<'_>,
    path: &str,
    sa: &v3p::ServiceAccountMatch,
) -> Result<String, CalcError> {
    let prefixed = if sa.selector.is_empty() {
        String::new()
    } else {
        prefix_selector(
            cx,
            &format!("{path}.selector"),
            &sa.selector,
            SERVICE_ACCOUNT_LABEL_PREFIX,
        )?
    };
    if sa.names.is_empty() {
        return Ok(prefixed);
    }
    let names = format!(
        "{LABEL_SERVICE_ACCOUNT} in {{ '{}' }}",
        sa.names.join("', '")
    );
    let names = parse_field(cx, &format!("{path}.names"), &names)?.to_string();
    Ok(if prefixed.is_empty() {
        names
    } else {
        format!("({prefixed}) && ({names})")
    })
}

fn port(p: &v3p::Port) -> Port {
    match p {
        v3p::Port::Range { min, max } => Port::Range(*min, *max),
        v3p::Port::Named(n) => Port::Named(n.clone()),
    }
}

/// Upstream's `prefixAndAppendSelector`.
fn prefix_and_append(
    cx: &Ctx<'_>,
    path: &str,
    current: &str,
    new: &str,
    prefix: &str,
) -> Result<String, CalcError> {
    if new.is_empty() {
        return Ok(current.to_string());
    }
    let prefixed = prefix_selector(cx, path, new, prefix)?;
    Ok(if current.is_empty() {
        prefixed
    } else {
        format!("({current}) && {prefixed}")
    })
}

/// Upstream's `parseSelectorAttachPrefix`: canonical form with every label prefixed.
fn prefix_selector(cx: &Ctx<'_>, path: &str, s: &str, prefix: &str) -> Result<String, CalcError> {
    Ok(parse_field(cx, path, s)?
        .with_label_prefix(prefix)
        .to_string())
}

fn parse_field(cx: &Ctx<'_>, path: &str, s: &str) -> Result<Selector, CalcError> {
    selector::parse(s).map_err(|e| cx.err(path, e.to_string()))
}

/// A CIDR (masked to its network) or a plain address (as /32 or /128).
fn parse_net(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse::<IpNet>().ok().map(|n| n.trunc())
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

fn nets_field(cx: &Ctx<'_>, path: &str, nets: &[String]) -> Result<Vec<IpNet>, CalcError> {
    nets.iter()
        .enumerate()
        .map(|(i, s)| {
            parse_net(s).ok_or_else(|| {
                cx.err(
                    format!("{path}[{i}]"),
                    format!("{s:?} is not an IP address or CIDR"),
                )
            })
        })
        .collect()
}

/// v1 protocol: lower-case names, numbers unchanged.
fn v1_protocol(p: &v3p::Protocol) -> Protocol {
    match p {
        v3p::Protocol::Number(n) => Protocol::Number(*n),
        v3p::Protocol::Name(n) => Protocol::Name(n.to_ascii_lowercase()),
    }
}

fn v1_protocol_name(p: &v3p::Protocol) -> String {
    match p.number() {
        Some(6) => "tcp".to_string(),
        Some(17) => "udp".to_string(),
        Some(132) => "sctp".to_string(),
        _ => p.to_string().to_ascii_lowercase(),
    }
}

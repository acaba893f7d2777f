//! The translations, as upstream's `libcalico-go/lib/backend/k8s/conversion` does them.
//!
//! Deviation on bad input: upstream's converter trusts the Kubernetes API server to have
//! validated its input (an unparsable CIDR there yields a rule without `nets`). Here nothing
//! validated the object before, so [`validate_network_policy`] applies the API server's checks
//! first and every translation returns an error naming the field instead.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use calico_model::Resource;
use calico_model::resources::endpoint::WorkloadEndpointPort;
use calico_model::resources::policy::{
    Action, EntityRule, PolicyType as CalicoPolicyType, Port, Protocol, Rule,
};
use calico_model::resources::{NetworkPolicySpec, ProfileSpec, WorkloadEndpointSpec};
use ipnet::IpNet;
use sha1::{Digest, Sha1};

use crate::error::K8sError;
use crate::types::{
    IntOrString, LabelSelector, Namespace, NetworkPolicy, NetworkPolicyPort, Peer, Pod, PolicyType,
    SelectorOperator, ServiceAccount,
};

/// Profile name prefix of namespace profiles (`kns.<namespace>`).
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// Profile name prefix of service-account profiles (`ksa.<namespace>.<serviceaccount>`).
pub const SERVICE_ACCOUNT_PROFILE_PREFIX: &str = "ksa.";
/// Prefix of namespace labels re-published on the namespace profile.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";
/// Prefix of service-account labels re-published on the service-account profile.
pub const SERVICE_ACCOUNT_LABEL_PREFIX: &str = "pcsa.";
/// The label (after the prefix) carrying the namespace / service-account name.
pub const NAME_LABEL: &str = "projectcalico.org/name";
/// Name prefix of Calico policies translated from Kubernetes NetworkPolicies.
pub const K8S_NETWORK_POLICY_PREFIX: &str = "knp.default.";
/// The order every translated Kubernetes NetworkPolicy gets.
pub const K8S_NETWORK_POLICY_ORDER: f64 = 1000.0;
/// Endpoint label: the pod's namespace.
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
/// Endpoint label: the orchestrator (`k8s`).
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
/// Endpoint label: the pod's service account.
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
/// The orchestrator name of Kubernetes endpoints.
pub const ORCHESTRATOR_K8S: &str = "k8s";
/// The interface name Kubernetes pods' endpoints carry.
pub const K8S_ENDPOINT: &str = "eth0";

/// Which kind of label selector is being translated: pod selectors are restricted to
/// Kubernetes endpoints, namespace selectors apply to `pcns.` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorKind {
    Pod,
    Namespace,
}

/// What a Pod contributes to its WorkloadEndpoint, independent of what the CNI plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpointFields {
    pub namespace: String,
    pub pod: String,
    pub node: String,
    /// Pod labels plus `projectcalico.org/{namespace,orchestrator,serviceaccount}`.
    pub labels: BTreeMap<String, String>,
    /// `[kns.<ns>, ksa.<ns>.<sa>]` (the second only with a service account).
    pub profiles: Vec<String>,
    pub service_account_name: String,
    /// Named (and host-mapped) ports of the containers, then of the init containers.
    pub ports: Vec<WorkloadEndpointPort>,
    /// Addresses from `status.podIPs` / `status.podIP` as /32 or /128 (empty for finished pods).
    pub ip_networks: Vec<String>,
}

/// `kns.<namespace>`.
pub fn namespace_profile_name(namespace: &str) -> String {
    format!("{NAMESPACE_PROFILE_PREFIX}{namespace}")
}

/// `ksa.<namespace>.<serviceaccount>` (namespace `default` when empty, as upstream).
pub fn service_account_profile_name(namespace: &str, service_account: &str) -> String {
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    format!("{SERVICE_ACCOUNT_PROFILE_PREFIX}{ns}.{service_account}")
}

/// Namespace → Profile `kns.<ns>`: labels re-published as `pcns.<key>` plus
/// `pcns.projectcalico.org/name`, one Allow rule in each direction.
pub fn namespace_to_profile(ns: &Namespace) -> Result<Resource<ProfileSpec>, K8sError> {
    let name = &ns.metadata.name;
    if name.is_empty() {
        return Err(invalid(
            "Namespace",
            name,
            "metadata.name",
            "name is required",
        ));
    }
    let mut labels: BTreeMap<String, String> = ns
        .metadata
        .labels
        .iter()
        .map(|(k, v)| (format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{NAMESPACE_LABEL_PREFIX}{NAME_LABEL}"),
        name.clone(),
    );
    let spec = ProfileSpec {
        ingress: vec![allow_all()],
        egress: vec![allow_all()],
        labels_to_apply: labels,
    };
    let mut profile = Resource::new("", &namespace_profile_name(name), spec);
    copy_identity(&ns.metadata, &mut profile.metadata);
    Ok(profile)
}

/// ServiceAccount → Profile `ksa.<ns>.<sa>`: labels re-published as `pcsa.<key>` plus
/// `pcsa.projectcalico.org/name`; no rules.
pub fn service_account_to_profile(sa: &ServiceAccount) -> Result<Resource<ProfileSpec>, K8sError> {
    let name = &sa.metadata.name;
    if name.is_empty() {
        return Err(invalid(
            "ServiceAccount",
            name,
            "metadata.name",
            "name is required",
        ));
    }
    let mut labels: BTreeMap<String, String> = sa
        .metadata
        .labels
        .iter()
        .map(|(k, v)| (format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(
        format!("{SERVICE_ACCOUNT_LABEL_PREFIX}{NAME_LABEL}"),
        name.clone(),
    );
    let spec = ProfileSpec {
        labels_to_apply: labels,
        ..ProfileSpec::default()
    };
    let mut profile = Resource::new(
        "",
        &service_account_profile_name(&sa.metadata.namespace, name),
        spec,
    );
    copy_identity(&sa.metadata, &mut profile.metadata);
    Ok(profile)
}

/// The WorkloadEndpoint name upstream gives a pod's `eth0`: `<node>-k8s-<pod>-eth0`, each
/// segment with `-` doubled.
pub fn workload_endpoint_name(node: &str, pod: &str) -> String {
    let esc = |s: &str| s.replace('-', "--");
    format!(
        "{}-{}-{}-{}",
        esc(node),
        ORCHESTRATOR_K8S,
        esc(pod),
        K8S_ENDPOINT
    )
}

/// The host-side veth name of a pod: `prefix` + the first 11 hex digits of
/// SHA-1(`"<namespace>.<pod>"`).
pub fn veth_name(prefix: &str, namespace: &str, pod: &str) -> String {
    let digest = Sha1::digest(format!("{namespace}.{pod}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{}", &hex[..11])
}

/// The parts of a pod's WorkloadEndpoint that Calico derives from the Pod object.
pub fn pod_endpoint_fields(pod: &Pod) -> Result<PodEndpointFields, K8sError> {
    let name = &pod.metadata.name;
    let err = |path: &str, msg: &str| invalid("Pod", name, path, msg);
    if name.is_empty() {
        return Err(err("metadata.name", "name is required"));
    }
    if pod.spec.host_network {
        return Err(err(
            "spec.hostNetwork",
            "host-networked pods have no workload endpoint",
        ));
    }
    let namespace = if pod.metadata.namespace.is_empty() {
        "default".to_string()
    } else {
        pod.metadata.namespace.clone()
    };
    let sa = &pod.spec.service_account_name;

    let mut profiles = vec![namespace_profile_name(&namespace)];
    if !sa.is_empty() {
        profiles.push(service_account_profile_name(&namespace, sa));
    }

    let mut labels = pod.metadata.labels.clone();
    labels.insert(LABEL_NAMESPACE.to_string(), namespace.clone());
    labels.insert(LABEL_ORCHESTRATOR.to_string(), ORCHESTRATOR_K8S.to_string());
    // Upstream adds the label only below the label-value length limit, for backwards
    // compatibility; longer names are matched through the `ksa.` profile.
    if !sa.is_empty() && sa.len() < 63 {
        labels.insert(LABEL_SERVICE_ACCOUNT.to_string(), sa.clone());
    }

    let mut ports = Vec::new();
    let containers = pod
        .spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.containers[{i}]"), c))
        .chain(
            pod.spec
                .init_containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.initContainers[{i}]"), c)),
        );
    for (cpath, c) in containers {
        for (pi, p) in c.ports.iter().enumerate() {
            if p.container_port == 0 || (p.host_port == 0 && p.name.is_empty()) {
                continue;
            }
            let path = format!("{cpath}.ports[{pi}]");
            let protocol = match p.protocol.as_str() {
                "TCP" | "" => "tcp",
                "UDP" => "udp",
                "SCTP" => "sctp",
                other => {
                    tracing::debug!(pod = %name, protocol = other, "ignoring named port with unknown protocol");
                    continue;
                }
            };
            let port = u16::try_from(p.container_port)
                .map_err(|_| err(&format!("{path}.containerPort"), "must be 1-65535"))?;
            let host_port = u16::try_from(p.host_port)
                .map_err(|_| err(&format!("{path}.hostPort"), "must be 0-65535"))?;
            ports.push(WorkloadEndpointPort {
                name: p.name.clone(),
                protocol: Protocol::Name(protocol.to_string()),
                port,
                host_port,
                host_ip: p.host_ip.clone(),
            });
        }
    }

    let mut addrs: Vec<(String, &str)> = Vec::new();
    if !pod.status.pod_ips.is_empty() {
        for (i, ip) in pod.status.pod_ips.iter().enumerate() {
            addrs.push((format!("status.podIPs[{i}].ip"), ip.ip.as_str()));
        }
    } else if !pod.status.pod_ip.is_empty() {
        addrs.push(("status.podIP".to_string(), pod.status.pod_ip.as_str()));
    }
    let finished = matches!(
        pod.status.phase.as_str(),
        "Failed" | "Succeeded" | "Completed"
    );
    let mut ip_networks = Vec::new();
    for (path, a) in addrs {
        let net = parse_cidr_or_ip(a)
            .ok_or_else(|| err(&path, &format!("{a:?} is not an IP address")))?;
        if !finished {
            ip_networks.push(net.to_string());
        }
    }

    Ok(PodEndpointFields {
        namespace,
        pod: name.clone(),
        node: pod.spec.node_name.clone(),
        labels,
        profiles,
        service_account_name: sa.clone(),
        ports,
        ip_networks,
    })
}

/// Applies a Pod to its WorkloadEndpoint. With `existing` (what the CNI plugin wrote on ADD)
/// the pod-derived fields (labels, profiles, service account, ports) are replaced and the
/// CNI-owned ones (ipNetworks, interfaceName, mac, containerID, NATs, gateways) kept, so the Pod
/// may be applied before or after CNI ADD with the same result. Without `existing` a new
/// endpoint is built as upstream's pod conversion does (addresses from the pod status, veth
/// name from `interface_prefix`); the pod must then be scheduled (`spec.nodeName`).
pub fn merge_pod_into_workload_endpoint(
    pod: &Pod,
    existing: Option<&Resource<WorkloadEndpointSpec>>,
    interface_prefix: &str,
) -> Result<Resource<WorkloadEndpointSpec>, K8sError> {
    let f = pod_endpoint_fields(pod)?;
    let mut wep = match existing {
        Some(w) => {
            if w.metadata.namespace != f.namespace
                || (!w.spec.pod.is_empty() && w.spec.pod != f.pod)
            {
                return Err(invalid(
                    "Pod",
                    &f.pod,
                    "metadata",
                    &format!(
                        "workload endpoint {}/{} belongs to pod {:?}",
                        w.metadata.namespace, w.metadata.name, w.spec.pod
                    ),
                ));
            }
            w.clone()
        }
        None => {
            if f.node.is_empty() {
                return Err(invalid(
                    "Pod",
                    &f.pod,
                    "spec.nodeName",
                    "pod is not scheduled; no workload endpoint yet",
                ));
            }
            let spec = WorkloadEndpointSpec {
                ip_networks: f.ip_networks.clone(),
                interface_name: veth_name(interface_prefix, &f.namespace, &f.pod),
                ..WorkloadEndpointSpec::default()
            };
            Resource::new(&f.namespace, &workload_endpoint_name(&f.node, &f.pod), spec)
        }
    };
    wep.metadata.labels = f.labels;
    wep.spec.orchestrator = ORCHESTRATOR_K8S.to_string();
    wep.spec.pod = f.pod;
    if wep.spec.node.is_empty() {
        wep.spec.node = f.node;
    }
    if wep.spec.endpoint.is_empty() {
        wep.spec.endpoint = K8S_ENDPOINT.to_string();
    }
    wep.spec.profiles = f.profiles;
    wep.spec.service_account_name = f.service_account_name;
    wep.spec.ports = f.ports;
    Ok(wep)
}

/// Kubernetes NetworkPolicy → Calico NetworkPolicy `knp.default.<name>` in tier `default`,
/// order 1000. The object is first checked as the Kubernetes API server would
/// ([`validate_network_policy`]).
pub fn k8s_network_policy_to_calico(
    np: &NetworkPolicy,
) -> Result<Resource<NetworkPolicySpec>, K8sError> {
    validate_network_policy(np)?;
    let name = &np.metadata.name;
    let mut ingress = Vec::new();
    for (i, r) in np.spec.ingress.iter().enumerate() {
        let rules = k8s_rule_to_calico(&r.from, &r.ports, true).map_err(|(p, m)| {
            invalid("NetworkPolicy", name, &format!("spec.ingress[{i}].{p}"), &m)
        })?;
        ingress.extend(rules);
    }
    let mut egress = Vec::new();
    for (i, r) in np.spec.egress.iter().enumerate() {
        let rules = k8s_rule_to_calico(&r.to, &r.ports, false).map_err(|(p, m)| {
            invalid("NetworkPolicy", name, &format!("spec.egress[{i}].{p}"), &m)
        })?;
        egress.extend(rules);
    }

    // Types come from policyTypes, after the API server's defaulting of an empty list
    // ([`default_policy_types`]). Egress rules without `Egress` in policyTypes are kept but do
    // not apply (upstream warns).
    let policy_types = default_policy_types(np);
    let has = |t| policy_types.contains(&t);
    let mut types = Vec::new();
    if has(PolicyType::Ingress) {
        types.push(CalicoPolicyType::Ingress);
    }
    if has(PolicyType::Egress) {
        types.push(CalicoPolicyType::Egress);
    } else if !egress.is_empty() {
        tracing::warn!(policy = %name, "policyTypes lacks Egress but the policy has egress rules");
    }
    if types.is_empty() {
        types.push(CalicoPolicyType::Ingress);
    }

    let spec = NetworkPolicySpec {
        tier: calico_model::resources::policy::DEFAULT_TIER.to_string(),
        order: Some(K8S_NETWORK_POLICY_ORDER),
        selector: k8s_selector_to_calico(Some(&np.spec.pod_selector), SelectorKind::Pod),
        ingress,
        egress,
        types,
        ..NetworkPolicySpec::default()
    };
    let namespace = if np.metadata.namespace.is_empty() {
        "default"
    } else {
        &np.metadata.namespace
    };
    let mut policy = Resource::new(
        namespace,
        &format!("{K8S_NETWORK_POLICY_PREFIX}{name}"),
        spec,
    );
    copy_identity(&np.metadata, &mut policy.metadata);
    policy.metadata.resource_version = np.metadata.resource_version.clone();
    Ok(policy)
}

/// `policyTypes` as the Kubernetes API server stores it: when empty, `Ingress`, plus `Egress`
/// when the policy has egress rules (`SetDefaults_NetworkPolicySpec`). Upstream's converter sees
/// only stored objects; this crate reads manifests, so it applies the defaulting itself.
pub fn default_policy_types(np: &NetworkPolicy) -> Vec<PolicyType> {
    if !np.spec.policy_types.is_empty() {
        return np.spec.policy_types.clone();
    }
    let mut types = vec![PolicyType::Ingress];
    if !np.spec.egress.is_empty() {
        types.push(PolicyType::Egress);
    }
    types
}

/// A Kubernetes label selector as upstream writes it in Calico syntax: `k == 'v'` per
/// matchLabels entry (sorted by key), then the matchExpressions in order, joined with ` && `.
/// Pod selectors are prefixed with `projectcalico.org/orchestrator == 'k8s'` (so an empty or
/// absent pod selector is every Kubernetes endpoint); an absent namespace selector is `""` and
/// an empty one `all()`.
pub fn k8s_selector_to_calico(sel: Option<&LabelSelector>, kind: SelectorKind) -> String {
    let mut parts = Vec::new();
    if kind == SelectorKind::Pod {
        parts.push(format!("{LABEL_ORCHESTRATOR} == '{ORCHESTRATOR_K8S}'"));
    }
    let Some(s) = sel else {
        return parts.join(" && ");
    };
    if kind == SelectorKind::Namespace
        && s.match_labels.is_empty()
        && s.match_expressions.is_empty()
    {
        return "all()".to_string();
    }
    for (k, v) in &s.match_labels {
        parts.push(format!("{k} == '{v}'"));
    }
    for e in &s.match_expressions {
        let values = e.values.join("', '");
        parts.push(match e.operator {
            SelectorOperator::In => format!("{} in {{ '{values}' }}", e.key),
            SelectorOperator::NotIn => format!("{} not in {{ '{values}' }}", e.key),
            SelectorOperator::Exists => format!("has({})", e.key),
            SelectorOperator::DoesNotExist => format!("! has({})", e.key),
        });
    }
    parts.join(" && ")
}

/// Upstream's `SimplifyPorts`: numeric ports merged into the fewest ranges; named ports first,
/// in input order. Lists with fewer than two numeric ports are returned as given.
pub fn simplify_ports(ports: Vec<Port>) -> Vec<Port> {
    if ports.len() <= 1 {
        return ports;
    }
    let mut out = Vec::new();
    let mut numeric: Vec<u32> = Vec::new();
    for p in &ports {
        match p {
            Port::Named(_) => out.push(p.clone()),
            Port::Range { min, max } => numeric.extend(u32::from(*min)..=u32::from(*max)),
        }
    }
    if numeric.len() <= 1 {
        return ports;
    }
    numeric.sort_unstable();
    let mut i = 0;
    while i < numeric.len() {
        let first = numeric[i];
        let mut last = first;
        i += 1;
        while i < numeric.len() && numeric[i] <= last + 1 {
            last = numeric[i];
            i += 1;
        }
        // Both came from u16 values, so the conversions cannot fail.
        let (min, max) = (
            u16::try_from(first).unwrap_or(u16::MAX),
            u16::try_from(last).unwrap_or(u16::MAX),
        );
        out.push(Port::Range { min, max });
    }
    out
}

/// Checks a NetworkPolicy as the Kubernetes API server does (the subset that matters for
/// translation): selectors, peers, ipBlocks, ports and protocols.
pub fn validate_network_policy(np: &NetworkPolicy) -> Result<(), K8sError> {
    let name = &np.metadata.name;
    let fail = |path: &str, msg: &str| Err(invalid("NetworkPolicy", name, path, msg));
    if name.is_empty() {
        return fail("metadata.name", "name is required");
    }
    if let Err((p, m)) = check_selector(&np.spec.pod_selector, "spec.podSelector") {
        return fail(&p, &m);
    }
    let rules = np
        .spec
        .ingress
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("spec.ingress[{i}]"), "from", &r.from, &r.ports))
        .chain(
            np.spec
                .egress
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("spec.egress[{i}]"), "to", &r.to, &r.ports)),
        );
    for (rpath, peers_key, peers, ports) in rules {
        for (i, peer) in peers.iter().enumerate() {
            if let Err((p, m)) = check_peer(peer, &format!("{rpath}.{peers_key}[{i}]")) {
                return fail(&p, &m);
            }
        }
        for (i, port) in ports.iter().enumerate() {
            if let Err((p, m)) = check_port(port, &format!("{rpath}.ports[{i}]")) {
                return fail(&p, &m);
            }
        }
    }
    Ok(())
}

type PathErr = (String, String);

fn check_selector(s: &LabelSelector, path: &str) -> Result<(), PathErr> {
    for (k, v) in &s.match_labels {
        if let Err(m) = check_label_key(k) {
            return Err((format!("{path}.matchLabels"), format!("key {k:?}: {m}")));
        }
        if let Err(m) = check_label_value(v) {
            return Err((
                format!("{path}.matchLabels.{k}"),
                format!("value {v:?}: {m}"),
            ));
        }
    }
    for (i, e) in s.match_expressions.iter().enumerate() {
        let epath = format!("{path}.matchExpressions[{i}]");
        if let Err(m) = check_label_key(&e.key) {
            return Err((format!("{epath}.key"), format!("{:?}: {m}", e.key)));
        }
        match e.operator {
            SelectorOperator::In | SelectorOperator::NotIn => {
                if e.values.is_empty() {
                    return Err((
                        format!("{epath}.values"),
                        "must be specified when operator is In or NotIn".to_string(),
                    ));
                }
                for (j, v) in e.values.iter().enumerate() {
                    if let Err(m) = check_label_value(v) {
                        return Err((format!("{epath}.values[{j}]"), format!("{v:?}: {m}")));
                    }
                }
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist => {
                if !e.values.is_empty() {
                    return Err((
                        format!("{epath}.values"),
                        "may not be specified when operator is Exists or DoesNotExist".to_string(),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_peer(peer: &Peer, path: &str) -> Result<(), PathErr> {
    let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
    match (&peer.ip_block, selectors) {
        (None, false) => Err((
            path.to_string(),
            "must specify a peer (podSelector, namespaceSelector or ipBlock)".to_string(),
        )),
        (Some(_), true) => Err((
            path.to_string(),
            "may not specify ipBlock together with podSelector or namespaceSelector".to_string(),
        )),
        (Some(b), false) => {
            let cidr = parse_cidr(&b.cidr).ok_or_else(|| {
                (
                    format!("{path}.ipBlock.cidr"),
                    format!("{:?} is not a CIDR", b.cidr),
                )
            })?;
            for (i, e) in b.except.iter().enumerate() {
                let epath = format!("{path}.ipBlock.except[{i}]");
                let ex =
                    parse_cidr(e).ok_or_else(|| (epath.clone(), format!("{e:?} is not a CIDR")))?;
                if !cidr.contains(&ex) || ex.prefix_len() <= cidr.prefix_len() {
                    return Err((
                        epath,
                        format!("{e:?} must be a strict subset of {:?}", b.cidr),
                    ));
                }
            }
            Ok(())
        }
        (None, true) => {
            if let Some(s) = &peer.pod_selector {
                check_selector(s, &format!("{path}.podSelector"))?;
            }
            if let Some(s) = &peer.namespace_selector {
                check_selector(s, &format!("{path}.namespaceSelector"))?;
            }
            Ok(())
        }
    }
}

fn check_port(p: &NetworkPolicyPort, path: &str) -> Result<(), PathErr> {
    if let Some(proto) = &p.protocol
        && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
    {
        return Err((
            format!("{path}.protocol"),
            format!("{proto:?} is not one of TCP, UDP, SCTP"),
        ));
    }
    match &p.port {
        Some(IntOrString::Int(n)) => {
            if !(1..=65535).contains(n) {
                return Err((format!("{path}.port"), format!("{n} is not 1-65535")));
            }
            if let Some(end) = p.end_port
                && (end < *n || end > 65535)
            {
                return Err((
                    format!("{path}.endPort"),
                    format!("{end} must be between port {n} and 65535"),
                ));
            }
        }
        Some(IntOrString::String(s)) => {
            if let Err(m) = check_port_name(s) {
                return Err((format!("{path}.port"), format!("{s:?}: {m}")));
            }
            if p.end_port.is_some() {
                return Err((
                    format!("{path}.endPort"),
                    "may not be specified with a named port".to_string(),
                ));
            }
        }
        None => {
            if p.end_port.is_some() {
                return Err((
                    format!("{path}.endPort"),
                    "may not be specified without port".to_string(),
                ));
            }
        }
    }
    Ok(())
}

/// One Kubernetes rule → Calico rules: one per protocol (sorted by name; no protocol first),
/// each repeated per peer, the ports of one protocol merged.
fn k8s_rule_to_calico(
    peers: &[Peer],
    ports: &[NetworkPolicyPort],
    ingress: bool,
) -> Result<Vec<Rule>, PathErr> {
    // Protocol name ("" = any) → ports (None = all ports of that protocol).
    let mut by_protocol: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
    if ports.is_empty() {
        by_protocol.insert(String::new(), None);
    }
    for (i, p) in ports.iter().enumerate() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
        let port = match &p.port {
            None => None,
            Some(v) => {
                let text = match p.end_port {
                    Some(end) => format!("{v}:{end}"),
                    None => v.to_string(),
                };
                Some(Port::parse(&text).map_err(|m| (format!("ports[{i}].port"), m))?)
            }
        };
        match (by_protocol.get_mut(&protocol), port) {
            (_, None) => {
                by_protocol.insert(protocol, None);
            }
            (None, Some(port)) => {
                by_protocol.insert(protocol, Some(vec![port]));
            }
            (Some(Some(list)), Some(port)) => list.push(port),
            // Already "all ports" for this protocol: a specific port adds nothing.
            (Some(None), Some(_)) => {}
        }
    }

    let peer_fields: Vec<EntityRule> = if peers.is_empty() {
        vec![EntityRule::default()]
    } else {
        peers
            .iter()
            .enumerate()
            .map(|(i, p)| peer_to_entity(p).map_err(|(path, m)| (format!("peers[{i}].{path}"), m)))
            .collect::<Result<_, _>>()?
    };

    let mut rules = Vec::new();
    for (protocol, ports) in by_protocol {
        let ports = simplify_ports(ports.unwrap_or_default());
        let protocol = (!protocol.is_empty()).then_some(Protocol::Name(protocol));
        for peer in &peer_fields {
            let mut rule = Rule {
                action: Action::Allow,
                protocol: protocol.clone(),
                ..Rule::default()
            };
            if ingress {
                rule.source = peer.clone();
                rule.destination.ports = ports.clone();
            } else {
                rule.destination = peer.clone();
                rule.destination.ports = ports.clone();
            }
            rules.push(rule);
        }
    }
    Ok(rules)
}

fn peer_to_entity(peer: &Peer) -> Result<EntityRule, PathErr> {
    let mut e = EntityRule::default();
    if let Some(b) = &peer.ip_block {
        let net = parse_cidr(&b.cidr).ok_or_else(|| {
            (
                "ipBlock.cidr".to_string(),
                format!("{:?} is not a CIDR", b.cidr),
            )
        })?;
        e.nets = vec![net.trunc().to_string()];
        for (i, x) in b.except.iter().enumerate() {
            let net = parse_cidr(x).ok_or_else(|| {
                (
                    format!("ipBlock.except[{i}]"),
                    format!("{x:?} is not a CIDR"),
                )
            })?;
            e.not_nets.push(net.trunc().to_string());
        }
        return Ok(e);
    }
    e.selector = k8s_selector_to_calico(peer.pod_selector.as_ref(), SelectorKind::Pod);
    e.namespace_selector =
        k8s_selector_to_calico(peer.namespace_selector.as_ref(), SelectorKind::Namespace);
    Ok(e)
}

fn allow_all() -> Rule {
    Rule {
        action: Action::Allow,
        ..Rule::default()
    }
}

fn copy_identity(from: &crate::types::ObjectMeta, to: &mut calico_model::ObjectMeta) {
    to.uid = from.uid.clone();
    to.creation_timestamp = from.creation_timestamp.clone();
}

fn invalid(kind: &str, name: &str, path: &str, message: &str) -> K8sError {
    K8sError::Invalid {
        kind: kind.to_string(),
        name: name.to_string(),
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// `a.b.c.d/n` or `x::y/n` (the address may have host bits set, as Go's `ParseCIDR` allows).
fn parse_cidr(s: &str) -> Option<IpNet> {
    IpNet::from_str(s).ok()
}

/// A CIDR, or a bare address as a /32 or /128.
fn parse_cidr_or_ip(s: &str) -> Option<IpNet> {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(IpNet::from(ip));
    }
    parse_cidr(s).map(|n| n.trunc())
}

/// Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err("prefix must be a DNS subdomain".to_string());
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_string());
    }
    check_label_value(name)
}

/// Kubernetes label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric.
fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let b = v.as_bytes();
    let ok = v.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(
            "must be at most 63 alphanumerics, '-', '_' or '.', starting and ending \
             alphanumeric"
                .to_string(),
        )
    }
}

/// IANA service name: 1-15 lower-case alphanumerics and `-`, at least one letter, no leading,
/// trailing or double `-`.
fn check_port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err("must be a port name (1-15 lower-case alphanumerics or '-', with a letter)".to_string())
    }
}

/// What one Kubernetes object becomes in Calico.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    /// From a Namespace (`kns.`) or a ServiceAccount (`ksa.`).
    Profile(Resource<ProfileSpec>),
    /// From a NetworkPolicy (`knp.default.`).
    NetworkPolicy(Resource<NetworkPolicySpec>),
    /// From a Pod: to be merged into its WorkloadEndpoint
    /// ([`merge_pod_into_workload_endpoint`]).
    PodEndpoint(Box<PodEndpointFields>),
}

/// Translates any supported Kubernetes object.
pub fn translate(r: &crate::types::K8sResource) -> Result<Translated, K8sError> {
    use crate::types::K8sResource;
    Ok(match r {
        K8sResource::Namespace(ns) => Translated::Profile(namespace_to_profile(ns)?),
        K8sResource::ServiceAccount(sa) => Translated::Profile(service_account_to_profile(sa)?),
        K8sResource::NetworkPolicy(np) => {
            Translated::NetworkPolicy(k8s_network_policy_to_calico(np)?)
        }
        K8sResource::Pod(p) => Translated::PodEndpoint(Box::new(pod_endpoint_fields(p)?)),
    })
}

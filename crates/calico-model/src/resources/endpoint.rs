//! `HostEndpoint` (a host interface or set of host IPs under policy) and `WorkloadEndpoint`
//! (a container/VM interface; in Kubernetes generated from pods).

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::common::{
    is_strictly_masked, is_valid_interface_name, is_valid_port_name, parse_cidr_or_ip_net,
    validate_meta_labels_annotations,
};
use crate::resources::policy::{Protocol, validate_resource_name};

/// A named port of a host endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default)]
    pub name: String,
    pub protocol: Protocol,
    #[serde(default)]
    pub port: u16,
}

/// A named or host-mapped port of a workload endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: Protocol,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub host_port: u16,
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// A 1:1 NAT mapping of a workload endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpNat {
    #[serde(default, rename = "internalIP")]
    pub internal_ip: String,
    #[serde(default, rename = "externalIP")]
    pub external_ip: String,
}

/// A DSCP value: a number 0–63 or a well-known name (`AF11`, `EF`, `CS1`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dscp {
    Number(u8),
    Name(String),
}

/// Bandwidth, packet-rate, connection and DSCP controls of a workload endpoint (field order as
/// upstream's `QoSControls`). Zero means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QosControls {
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingress_bandwidth: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingress_burst: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingress_peakrate: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingress_minburst: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub egress_bandwidth: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub egress_burst: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub egress_peakrate: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub egress_minburst: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingress_packet_rate: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingress_packet_burst: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub egress_packet_rate: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub egress_packet_burst: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ingress_max_connections: i64,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub egress_max_connections: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<Dscp>,
}

/// `HostEndpoint.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// An interface name, `*` (all host traffic), or empty (match by `expectedIPs`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// `WorkloadEndpoint.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// The endpoint's addresses (/32 or /128 only).
    #[serde(default, rename = "ipNetworks", skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<String>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(
        default,
        rename = "ipv4Gateway",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_gateway: String,
    #[serde(
        default,
        rename = "ipv6Gateway",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_gateway: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<WorkloadEndpointPort>,
    /// CIDRs the endpoint may send from despite the RPF check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
    #[serde(
        default,
        rename = "qosControls",
        skip_serializing_if = "Option::is_none"
    )]
    pub qos_controls: Option<QosControls>,
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Validates a list of names; `set` lists (`+listType=set` in the CRD) reject duplicates.
fn validate_name_list(path: &str, names: &[String], set: bool, errs: &mut Errors) {
    for (i, n) in names.iter().enumerate() {
        validate_resource_name(&format!("{path}[{i}]"), n, errs);
        if set && names[..i].contains(n) {
            errs.push(format!("{path}[{i}]"), format!("duplicate entry {n:?}"));
        }
    }
}

fn validate_optional_name(path: &str, s: &str, errs: &mut Errors) {
    if !s.is_empty() {
        validate_resource_name(path, s, errs);
    }
}

fn validate_port_protocol(path: &str, p: &Protocol, errs: &mut Errors) {
    if !p.supports_ports() {
        errs.push(
            path,
            format!("protocol {p} does not support ports (use TCP, UDP or SCTP)"),
        );
    }
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`
fn is_valid_container_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A MAC address in one of the forms Go's `net.ParseMAC` accepts (`:`/`-` separated octets or
/// `.`-separated groups of four hex digits; 6, 8 or 20 octets).
fn is_valid_mac(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    let ok_len = |n: usize| matches!(n, 6 | 8 | 20);
    for sep in [':', '-'] {
        if s.contains(sep) {
            let parts: Vec<&str> = s.split(sep).collect();
            return ok_len(parts.len()) && parts.iter().all(|p| hex(p, 2));
        }
    }
    if s.contains('.') {
        let parts: Vec<&str> = s.split('.').collect();
        return ok_len(parts.len() * 2) && parts.iter().all(|p| hex(p, 4));
    }
    false
}

impl Spec for HostEndpointSpec {
    const KIND: &'static str = "HostEndpoint";
    const PLURAL: &'static str = "hostendpoints";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["hostendpoint", "hep", "heps"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn apply_defaults(_meta: &mut ObjectMeta, spec: &mut Self) {
        for p in &mut spec.ports {
            p.protocol = p.protocol.canonical();
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        if spec.node.is_empty() {
            errs.push("spec.node", "node must be specified");
        } else {
            validate_resource_name("spec.node", &spec.node, errs);
        }
        if spec.interface_name.is_empty() && spec.expected_ips.is_empty() {
            errs.push(
                "spec.interfaceName",
                "at least one of interfaceName or expectedIPs must be specified",
            );
        }
        if !spec.interface_name.is_empty()
            && spec.interface_name != "*"
            && !is_valid_interface_name(&spec.interface_name)
        {
            errs.push(
                "spec.interfaceName",
                format!(
                    "{:?} is not a valid interface name (\"*\" or 1-15 of [a-zA-Z0-9_.-])",
                    spec.interface_name
                ),
            );
        }
        for (i, ip) in spec.expected_ips.iter().enumerate() {
            if ip.parse::<std::net::IpAddr>().is_err() {
                errs.push(
                    format!("spec.expectedIPs[{i}]"),
                    format!("invalid IP address {ip:?}"),
                );
            } else if spec.expected_ips[..i].contains(ip) {
                errs.push(
                    format!("spec.expectedIPs[{i}]"),
                    format!("duplicate entry {ip:?}"),
                );
            }
        }
        validate_name_list("spec.profiles", &spec.profiles, true, errs);
        for (i, p) in spec.ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            if !is_valid_port_name(&p.name) {
                errs.push(
                    format!("{path}.name"),
                    format!(
                        "{:?} is not a valid port name (1-15 lower-case alphanumerics or '-', \
                         at least one letter)",
                        p.name
                    ),
                );
            }
            validate_port_protocol(&format!("{path}.protocol"), &p.protocol, errs);
            if p.port == 0 {
                errs.push(format!("{path}.port"), "port must be between 1 and 65535");
            }
        }
    }
}

impl Spec for WorkloadEndpointSpec {
    const KIND: &'static str = "WorkloadEndpoint";
    const PLURAL: &'static str = "workloadendpoints";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &["workloadendpoint", "wep", "weps"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn apply_defaults(_meta: &mut ObjectMeta, spec: &mut Self) {
        for p in &mut spec.ports {
            p.protocol = p.protocol.canonical();
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        validate_optional_name("spec.orchestrator", &spec.orchestrator, errs);
        validate_optional_name("spec.workload", &spec.workload, errs);
        validate_optional_name("spec.node", &spec.node, errs);
        validate_optional_name("spec.pod", &spec.pod, errs);
        validate_optional_name("spec.endpoint", &spec.endpoint, errs);
        validate_optional_name("spec.serviceAccountName", &spec.service_account_name, errs);
        if !spec.container_id.is_empty() && !is_valid_container_id(&spec.container_id) {
            errs.push(
                "spec.containerID",
                format!(
                    "{:?} is not a valid container ID (alphanumerics and '-', starting and \
                     ending alphanumeric)",
                    spec.container_id
                ),
            );
        }

        let mut networks = Vec::new();
        for (i, n) in spec.ip_networks.iter().enumerate() {
            let path = format!("spec.ipNetworks[{i}]");
            match parse_cidr_or_ip_net(n) {
                None => errs.push(path, format!("invalid CIDR {n:?}")),
                Some((_, net)) => {
                    if !is_strictly_masked(&net) {
                        errs.push(
                            &path,
                            format!("{n:?} is not a network address (host bits are set)"),
                        );
                    }
                    if net.prefix_len() != net.max_prefix_len() {
                        errs.push(
                            &path,
                            format!(
                                "IP network {n:?} contains multiple addresses (only /32 or /128)"
                            ),
                        );
                    }
                    networks.push(net);
                }
            }
        }

        for (i, nat) in spec.ip_nats.iter().enumerate() {
            let path = format!("spec.ipNATs[{i}]");
            let int = parse_cidr_or_ip_net(&nat.internal_ip);
            let ext = parse_cidr_or_ip_net(&nat.external_ip);
            if int.is_none() {
                errs.push(
                    format!("{path}.internalIP"),
                    format!("invalid IP address {:?}", nat.internal_ip),
                );
            }
            if ext.is_none() {
                errs.push(
                    format!("{path}.externalIP"),
                    format!("invalid IP address {:?}", nat.external_ip),
                );
            }
            if let (Some((ia, _)), Some((ea, _))) = (&int, &ext)
                && ia.is_ipv4() != ea.is_ipv4()
            {
                errs.push(format!("{path}.externalIP"), "mismatched IP versions");
            }
            if let Some((ia, _)) = int
                && !networks.iter().any(|n| n.contains(&ia))
            {
                errs.push(
                    format!("{path}.internalIP"),
                    format!("NAT internal IP {ia} is not in the endpoint's ipNetworks"),
                );
            }
        }

        if !spec.ipv4_gateway.is_empty()
            && !spec
                .ipv4_gateway
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_ipv4())
        {
            errs.push(
                "spec.ipv4Gateway",
                format!("{:?} is not an IPv4 address", spec.ipv4_gateway),
            );
        }
        if !spec.ipv6_gateway.is_empty()
            && !spec
                .ipv6_gateway
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_ipv6())
        {
            errs.push(
                "spec.ipv6Gateway",
                format!("{:?} is not an IPv6 address", spec.ipv6_gateway),
            );
        }

        validate_name_list("spec.profiles", &spec.profiles, false, errs);

        if spec.interface_name.is_empty() {
            errs.push("spec.interfaceName", "interfaceName must be specified");
        } else if spec.interface_name != "*" && !is_valid_interface_name(&spec.interface_name) {
            errs.push(
                "spec.interfaceName",
                format!(
                    "{:?} is not a valid interface name (1-15 of [a-zA-Z0-9_.-])",
                    spec.interface_name
                ),
            );
        }
        if !spec.mac.is_empty() && !is_valid_mac(&spec.mac) {
            errs.push(
                "spec.mac",
                format!("{:?} is not a valid MAC address", spec.mac),
            );
        }

        for (i, p) in spec.ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            if !p.name.is_empty() && !is_valid_port_name(&p.name) {
                errs.push(
                    format!("{path}.name"),
                    format!(
                        "{:?} is not a valid port name (1-15 lower-case alphanumerics or '-', \
                         at least one letter)",
                        p.name
                    ),
                );
            }
            if p.name.is_empty() && p.host_port == 0 {
                errs.push(
                    format!("{path}.name"),
                    "port name must not be empty if no hostPort is specified",
                );
            }
            validate_port_protocol(&format!("{path}.protocol"), &p.protocol, errs);
            if p.port == 0 {
                errs.push(format!("{path}.port"), "port must be between 1 and 65535");
            }
            if !p.host_ip.is_empty() {
                let ok =
                    parse_cidr_or_ip_net(&p.host_ip).is_some_and(|(_, n)| is_strictly_masked(&n));
                if !ok {
                    errs.push(
                        format!("{path}.hostIP"),
                        format!("{:?} is not a valid IP address", p.host_ip),
                    );
                }
            }
        }

        for (i, c) in spec.allow_spoofed_source_prefixes.iter().enumerate() {
            if parse_cidr_or_ip_net(c).is_none() {
                errs.push(
                    format!("spec.allowSpoofedSourcePrefixes[{i}]"),
                    format!("invalid IP address or CIDR {c:?}"),
                );
            }
        }

        if let Some(q) = &spec.qos_controls {
            validate_qos(q, errs);
        }
    }
}

fn validate_qos(q: &QosControls, errs: &mut Errors) {
    // (field, value, min, max, zero allowed): the ranges upstream documents for each control.
    const P15: i64 = 1_000_000_000_000_000;
    let checks = [
        ("ingressBandwidth", q.ingress_bandwidth, 1_000, P15),
        ("egressBandwidth", q.egress_bandwidth, 1_000, P15),
        ("ingressBurst", q.ingress_burst, 1_000, 34_359_738_360),
        ("egressBurst", q.egress_burst, 1_000, 34_359_738_360),
        (
            "ingressPeakrate",
            q.ingress_peakrate,
            1_010,
            P15 + P15 / 100,
        ),
        ("egressPeakrate", q.egress_peakrate, 1_010, P15 + P15 / 100),
        ("ingressMinburst", q.ingress_minburst, 1_000, 100_000_000),
        ("egressMinburst", q.egress_minburst, 1_000, 100_000_000),
        ("ingressPacketRate", q.ingress_packet_rate, 1, 10_000),
        ("ingressPacketBurst", q.ingress_packet_burst, 1, 10_000),
        ("egressPacketRate", q.egress_packet_rate, 1, 10_000),
        ("egressPacketBurst", q.egress_packet_burst, 1, 10_000),
        (
            "ingressMaxConnections",
            q.ingress_max_connections,
            1,
            4_294_967_295,
        ),
        (
            "egressMaxConnections",
            q.egress_max_connections,
            1,
            4_294_967_295,
        ),
    ];
    for (name, v, min, max) in checks {
        if v != 0 && !(min..=max).contains(&v) {
            errs.push(
                format!("spec.qosControls.{name}"),
                format!("{v} is out of range {min}-{max} (or 0 for unset)"),
            );
        }
    }
    if let Some(d) = &q.dscp {
        let ok = match d {
            Dscp::Number(n) => *n <= 63,
            Dscp::Name(s) => is_dscp_name(s),
        };
        if !ok {
            errs.push(
                "spec.qosControls.dscp",
                "DSCP must be 0-63 or a well-known name",
            );
        }
    }
}

fn is_dscp_name(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "DF", "EF", "AF11", "AF12", "AF13", "AF21", "AF22", "AF23", "AF31", "AF32", "AF33", "AF41",
        "AF42", "AF43", "CS0", "CS1", "CS2", "CS3", "CS4", "CS5", "CS6",
    ];
    NAMES.contains(&s)
}

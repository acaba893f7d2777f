//! Policy kinds (`NetworkPolicy`, `GlobalNetworkPolicy` and their staged variants) and the rule
//! types shared with `Profile`: [`Rule`], [`EntityRule`], [`Protocol`], [`Port`], ICMP and HTTP
//! matches.
//!
//! Shapes, defaulting and validation follow upstream's `projectcalico.org/v3` API
//! (`api/pkg/apis/projectcalico/v3/*policy*.go`, the CRD CEL rules and libcalico-go's
//! validator).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::common::{
    is_strictly_masked, parse_cidr_with_prefix, validate_annotation_map,
    validate_meta_labels_annotations, validate_selector_field,
};

/// The label carrying a policy's tier (set by defaulting).
pub const LABEL_TIER: &str = "projectcalico.org/tier";
/// The tier a policy belongs to when `spec.tier` is empty.
pub const DEFAULT_TIER: &str = "default";
/// Most rules per direction in one policy or profile.
pub const MAX_RULES: usize = 1024;
/// Most CIDRs in `nets` / `notNets`.
pub const MAX_NETS: usize = 256;
/// Most entries in `ports` / `notPorts`.
pub const MAX_PORTS: usize = 50;
/// Most entries in `http.methods` / `http.paths`.
pub const MAX_HTTP_ITEMS: usize = 20;
/// The only defined performance hint.
pub const PERF_HINT_ASSUME_NEEDED_ON_EVERY_NODE: &str = "AssumeNeededOnEveryNode";

/// Protocol names in their canonical casing.
pub const PROTOCOL_NAMES: &[&str] = &["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite"];

/// Upstream's rejection of numeric ports (or ranges) in a rule without a protocol
/// (libcalico-go `validateRule`, `protocolSingleOrRangePortsMsg`).
pub const NUMERIC_PORTS_NEED_PROTOCOL: &str =
    "rules that specify numeric ports or port ranges must set protocol to TCP, UDP or SCTP";

// ---------------------------------------------------------------------------------------------
// Rule types
// ---------------------------------------------------------------------------------------------

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Log,
    Pass,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Deny => "Deny",
            Action::Log => "Log",
            Action::Pass => "Pass",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A direction a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// What a staged policy would do to its enforced counterpart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StagedAction {
    #[default]
    Set,
    Delete,
    Learn,
    Ignore,
}

/// An IP protocol: a name (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`) or a number.
///
/// Like upstream's `numorstring.Protocol`: a string holding only digits that fit a `u8` is read
/// as a number; numbers are written as numbers and names as strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    Number(u8),
    Name(String),
}

impl Protocol {
    /// The name in canonical casing when it is one of the known names (any case), else `self`.
    pub fn canonical(&self) -> Protocol {
        match self {
            Protocol::Name(n) => PROTOCOL_NAMES
                .iter()
                .find(|k| k.eq_ignore_ascii_case(n))
                .map(|k| Protocol::Name((*k).to_string()))
                .unwrap_or_else(|| self.clone()),
            Protocol::Number(_) => self.clone(),
        }
    }

    /// The protocol number, for numbers and for the known names.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => Some(*n),
            Protocol::Name(n) => match n.to_ascii_lowercase().as_str() {
                "tcp" => Some(6),
                "udp" => Some(17),
                "icmp" => Some(1),
                "icmpv6" => Some(58),
                "sctp" => Some(132),
                "udplite" => Some(136),
                _ => None,
            },
        }
    }

    /// Whether the protocol has ports (TCP, UDP, SCTP).
    pub fn supports_ports(&self) -> bool {
        matches!(self.number(), Some(6 | 17 | 132))
    }

    /// `ICMP` or protocol number 1.
    pub fn is_icmp(&self) -> bool {
        match self {
            Protocol::Number(n) => *n == 1,
            Protocol::Name(n) => n == "ICMP",
        }
    }

    /// `ICMPv6` or protocol number 58.
    pub fn is_icmpv6(&self) -> bool {
        match self {
            Protocol::Number(n) => *n == 58,
            Protocol::Name(n) => n == "ICMPv6",
        }
    }

    /// `TCP` or protocol number 6.
    pub fn is_tcp(&self) -> bool {
        match self {
            Protocol::Number(n) => *n == 6,
            Protocol::Name(n) => n == "TCP",
        }
    }

    fn problem(&self) -> Option<String> {
        match self {
            Protocol::Number(0) => Some("protocol number invalid: must be 1-255".into()),
            Protocol::Number(_) => None,
            Protocol::Name(n) if PROTOCOL_NAMES.contains(&n.as_str()) => None,
            Protocol::Name(n) => Some(format!(
                "protocol name {n:?} invalid: must be one of TCP, UDP, ICMP, ICMPv6, SCTP, \
                 UDPLite or a number 1-255"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Number(n) => write!(f, "{n}"),
            Protocol::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            Protocol::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a protocol name or a number 0-255")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} out of range 0-255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} out of range 0-255")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                if !v.is_empty()
                    && v.bytes().all(|b| b.is_ascii_digit())
                    && let Ok(n) = v.parse::<u8>()
                {
                    return Ok(Protocol::Number(n));
                }
                Ok(Protocol::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A port match: a single port or an inclusive range (`min == max` for a single port), or a
/// named port.
///
/// Written back as upstream does: a single port as a number, a range as `"min:max"`, a named
/// port as its name. Input may be a number, `"80"`, `"80:90"` or a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Port {
    Range { min: u16, max: u16 },
    Named(String),
}

impl Port {
    pub fn single(p: u16) -> Port {
        Port::Range { min: p, max: p }
    }

    pub fn is_named(&self) -> bool {
        matches!(self, Port::Named(_))
    }

    /// Parses the string form (`"80"`, `"80:90"`, `"http"`), as upstream's `PortFromString`.
    pub fn parse(s: &str) -> Result<Port, String> {
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if digits(s) {
            return s
                .parse::<u16>()
                .map(Port::single)
                .map_err(|_| format!("invalid port format ({s})"));
        }
        if let Some((a, b)) = s.split_once(':')
            && digits(a)
            && digits(b)
        {
            let min = a
                .parse::<u16>()
                .map_err(|_| format!("invalid minimum port number in range ({s})"))?;
            let max = b
                .parse::<u16>()
                .map_err(|_| format!("invalid maximum port number in range ({s})"))?;
            if min > max {
                return Err(format!(
                    "minimum port number ({min}) is greater than maximum port number \
                     ({max}) in port range"
                ));
            }
            return Ok(Port::Range { min, max });
        }
        let name_ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return Err(format!("invalid name for named port ({s})"));
        }
        Ok(Port::Named(s.to_string()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Named(n) => f.write_str(n),
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => s.serialize_u16(*min),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, a \"min:max\" range or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::custom(format!("port number {v} out of range 0-65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::single)
                    .map_err(|_| E::custom(format!("port number {v} out of range 0-65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                Port::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// ICMP type/code match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpFields {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

/// One HTTP path match: exactly one of `exact` or `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPath {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exact: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// HTTP request match (application layer policy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPath>,
}

/// Match on a Kubernetes Service's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// Match on the service account of the peer pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

/// Extra information about a rule (rendered as rule comments).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMetadata {
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::load::string_map"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// Source or destination match criteria of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
}

impl EntityRule {
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

/// A rule: match criteria and an action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

impl Rule {
    /// Upstream defaulting of a rule: protocol names in canonical casing.
    pub fn apply_defaults(&mut self) {
        if let Some(p) = &self.protocol {
            self.protocol = Some(p.canonical());
        }
        if let Some(p) = &self.not_protocol {
            self.not_protocol = Some(p.canonical());
        }
    }

    /// Validates the rule on its own (not its place in a policy); `path` is e.g.
    /// `spec.ingress[0]`.
    pub fn validate(&self, path: &str, errs: &mut Errors) {
        if let Some(v) = self.ip_version
            && v != 4
            && v != 6
        {
            errs.push(format!("{path}.ipVersion"), format!("{v} is not 4 or 6"));
        }
        if let Some(p) = &self.protocol
            && let Some(m) = p.problem()
        {
            errs.push(format!("{path}.protocol"), m);
        }
        if let Some(p) = &self.not_protocol
            && let Some(m) = p.problem()
        {
            errs.push(format!("{path}.notProtocol"), m);
        }
        if let Some(icmp) = &self.icmp {
            validate_icmp(&format!("{path}.icmp"), icmp, errs);
            let ok = self
                .protocol
                .as_ref()
                .is_some_and(|p| p.is_icmp() || p.is_icmpv6());
            if !ok {
                errs.push(
                    format!("{path}.icmp"),
                    "ICMP fields require protocol to be ICMP or ICMPv6",
                );
            }
        }
        if let Some(icmp) = &self.not_icmp {
            validate_icmp(&format!("{path}.notICMP"), icmp, errs);
        }
        for (field, proto) in [
            ("protocol", &self.protocol),
            ("notProtocol", &self.not_protocol),
        ] {
            let Some(p) = proto else { continue };
            if p.is_icmp() && self.ip_version.is_some_and(|v| v != 4) {
                errs.push(
                    format!("{path}.ipVersion"),
                    format!("{field} ICMP requires ipVersion 4"),
                );
            }
            if p.is_icmpv6() && self.ip_version.is_some_and(|v| v != 6) {
                errs.push(
                    format!("{path}.ipVersion"),
                    format!("{field} ICMPv6 requires ipVersion 6"),
                );
            }
        }

        // Ports need a protocol that has ports. Without a protocol only named ports are
        // allowed (they resolve to a protocol per endpoint).
        for (side, ent) in [("source", &self.source), ("destination", &self.destination)] {
            for (field, ports) in [("ports", &ent.ports), ("notPorts", &ent.not_ports)] {
                if ports.is_empty() {
                    continue;
                }
                match &self.protocol {
                    None if ports.iter().any(|p| !p.is_named()) => errs.push(
                        format!("{path}.{side}.{field}"),
                        NUMERIC_PORTS_NEED_PROTOCOL,
                    ),
                    Some(p) if !p.supports_ports() => errs.push(
                        format!("{path}.{side}.{field}"),
                        format!(
                            "rules that specify ports must set protocol to TCP, UDP or SCTP \
                             (protocol is {p})"
                        ),
                    ),
                    _ => {}
                }
            }
        }

        // CIDRs: valid, one family per rule, matching ipVersion, no negated catch-all.
        let mut seen_v4 = false;
        let mut seen_v6 = false;
        for (side, ent) in [("source", &self.source), ("destination", &self.destination)] {
            for (field, nets, negated) in
                [("nets", &ent.nets, false), ("notNets", &ent.not_nets, true)]
            {
                let fpath = format!("{path}.{side}.{field}");
                if nets.len() > MAX_NETS {
                    errs.push(&fpath, format!("more than {MAX_NETS} entries"));
                }
                let (mut v4, mut v6) = (false, false);
                for (i, n) in nets.iter().enumerate() {
                    if nets[..i].contains(n) {
                        errs.push(format!("{fpath}[{i}]"), format!("duplicate entry {n:?}"));
                    }
                    let Some(net) = parse_cidr_with_prefix(n) else {
                        errs.push(format!("{fpath}[{i}]"), format!("invalid CIDR {n:?}"));
                        continue;
                    };
                    if !is_strictly_masked(&net) {
                        errs.push(
                            format!("{fpath}[{i}]"),
                            format!("{n:?} is not a network address (host bits are set)"),
                        );
                    }
                    match net {
                        ipnet::IpNet::V4(_) => v4 = true,
                        ipnet::IpNet::V6(_) => v6 = true,
                    }
                    let catch_all = match net {
                        ipnet::IpNet::V4(_) => n == "0.0.0.0/0",
                        ipnet::IpNet::V6(n6) => n6.prefix_len() == 0 && n6.addr().is_unspecified(),
                    };
                    if negated && catch_all {
                        errs.push(
                            format!("{fpath}[{i}]"),
                            format!(
                                "catch-all CIDR {n:?} in a negated match creates a logical \
                                 contradiction (matches no traffic)"
                            ),
                        );
                    }
                }
                if let Some(ver) = self.ip_version
                    && ((v4 && ver != 4) || (v6 && ver != 6))
                {
                    errs.push(&fpath, "rule IP version doesn't match CIDR version");
                }
                if (v4 && seen_v6) || (v6 && seen_v4) || (v4 && v6) {
                    errs.push(&fpath, "rule contains both IPv4 and IPv6 CIDRs");
                }
                seen_v4 |= v4;
                seen_v6 |= v6;
            }
            validate_entity_rule(&format!("{path}.{side}"), ent, errs);
        }

        if let Some(http) = &self.http {
            let hpath = format!("{path}.http");
            if self.action != Action::Allow {
                errs.push(&hpath, "HTTP match is only valid on Allow rules");
            }
            if self.protocol.as_ref().is_some_and(|p| !p.is_tcp()) {
                errs.push(
                    format!("{path}.protocol"),
                    "rules with HTTP match must have protocol TCP or unset",
                );
            }
            validate_http(&hpath, http, errs);
        }

        if self.destination.services.is_some()
            && (!self.destination.ports.is_empty() || !self.destination.not_ports.is_empty())
        {
            let f = if self.destination.ports.is_empty() {
                "notPorts"
            } else {
                "ports"
            };
            errs.push(
                format!("{path}.destination.{f}"),
                "ports and notPorts cannot be specified with services",
            );
        }

        if let Some(m) = &self.metadata {
            validate_annotation_map(
                &format!("{path}.metadata.annotations"),
                &m.annotations,
                errs,
            );
        }
    }
}

fn validate_icmp(path: &str, icmp: &IcmpFields, errs: &mut Errors) {
    if let Some(t) = icmp.icmp_type
        && !(0..=254).contains(&t)
    {
        errs.push(format!("{path}.type"), format!("{t} is out of range 0-254"));
    }
    if let Some(c) = icmp.code {
        if !(0..=255).contains(&c) {
            errs.push(format!("{path}.code"), format!("{c} is out of range 0-255"));
        }
        if icmp.icmp_type.is_none() {
            errs.push(
                format!("{path}.code"),
                "ICMP code specified without an ICMP type",
            );
        }
    }
}

fn validate_http(path: &str, http: &HttpMatch, errs: &mut Errors) {
    if http.methods.len() > MAX_HTTP_ITEMS {
        errs.push(
            format!("{path}.methods"),
            format!("more than {MAX_HTTP_ITEMS} methods"),
        );
    }
    for (i, m) in http.methods.iter().enumerate() {
        if http.methods[..i].contains(m) {
            errs.push(
                format!("{path}.methods[{i}]"),
                format!("duplicate method {m:?}"),
            );
        }
    }
    if http.paths.len() > MAX_HTTP_ITEMS {
        errs.push(
            format!("{path}.paths"),
            format!("more than {MAX_HTTP_ITEMS} paths"),
        );
    }
    for (i, p) in http.paths.iter().enumerate() {
        let ppath = format!("{path}.paths[{i}]");
        if !p.exact.is_empty() && !p.prefix.is_empty() {
            errs.push(
                &ppath,
                "invalid path match: both 'exact' and 'prefix' are set",
            );
            continue;
        }
        let (field, v) = if p.exact.is_empty() {
            ("prefix", &p.prefix)
        } else {
            ("exact", &p.exact)
        };
        if v.is_empty() {
            errs.push(
                &ppath,
                "invalid path match: either 'exact' or 'prefix' must be set",
            );
            continue;
        }
        if v.len() > 1024 {
            errs.push(format!("{ppath}.{field}"), "longer than 1024 characters");
        }
        if !v.starts_with('/') || v.contains(['?', ' ', '#']) {
            errs.push(
                format!("{ppath}.{field}"),
                format!("invalid path {v:?}: must start with '/' and not contain '?', '#' or ' '"),
            );
        }
    }
}

fn validate_entity_rule(path: &str, e: &EntityRule, errs: &mut Errors) {
    validate_selector_field(&format!("{path}.selector"), &e.selector, errs);
    validate_selector_field(&format!("{path}.notSelector"), &e.not_selector, errs);
    validate_selector_field(
        &format!("{path}.namespaceSelector"),
        &e.namespace_selector,
        errs,
    );
    if e.selector.contains("global(") {
        errs.push(
            format!("{path}.selector"),
            "global() can only be used in an EntityRule namespaceSelector",
        );
    }
    if e.namespace_selector.contains("global(") {
        let compact: String = e
            .namespace_selector
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if compact != "global()" {
            errs.push(
                format!("{path}.namespaceSelector"),
                "global() cannot be combined with other selectors",
            );
        }
    }
    for (field, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
        if ports.len() > MAX_PORTS {
            errs.push(
                format!("{path}.{field}"),
                format!("more than {MAX_PORTS} entries"),
            );
        }
        for (i, p) in ports.iter().enumerate() {
            if let Port::Range { min, max } = p {
                if *min == 0 || *max == 0 {
                    errs.push(
                        format!("{path}.{field}[{i}]"),
                        "port range invalid, port number must be between 1 and 65535",
                    );
                } else if min > max {
                    errs.push(
                        format!("{path}.{field}[{i}]"),
                        "port range invalid: min > max",
                    );
                }
            }
        }
    }
    if let Some(sa) = &e.service_accounts {
        validate_selector_field(
            &format!("{path}.serviceAccounts.selector"),
            &sa.selector,
            errs,
        );
        for (i, n) in sa.names.iter().enumerate() {
            if sa.names[..i].contains(n) {
                errs.push(
                    format!("{path}.serviceAccounts.names[{i}]"),
                    format!("duplicate name {n:?}"),
                );
            }
        }
    }
    if let Some(svc) = &e.services {
        let spath = format!("{path}.services");
        if svc.name.is_empty() {
            errs.push(
                format!("{spath}.name"),
                "services must specify a service name",
            );
        } else {
            validate_resource_name(&format!("{spath}.name"), &svc.name, errs);
        }
        if !svc.namespace.is_empty() {
            validate_resource_name(&format!("{spath}.namespace"), &svc.namespace, errs);
        }
        if !e.namespace_selector.is_empty() {
            errs.push(
                &spath,
                "cannot specify NamespaceSelector and Services on the same rule",
            );
        }
        if e.service_accounts.is_some() {
            errs.push(
                &spath,
                "cannot specify ServiceAccounts and Services on the same rule",
            );
        }
        if !e.selector.is_empty() || !e.not_selector.is_empty() {
            errs.push(
                &spath,
                "cannot specify Selector/NotSelector and Services on the same rule",
            );
        }
        if !e.nets.is_empty() || !e.not_nets.is_empty() {
            errs.push(
                &spath,
                "cannot specify Nets/NotNets and Services on the same rule",
            );
        }
    }
}

/// Validates ingress and egress rule lists under `path` (`spec`), including the
/// direction-dependent restrictions policies have. `global` adds the GlobalNetworkPolicy rule
/// that service matches must name a namespace.
pub fn validate_rule_lists(
    path: &str,
    ingress: &[Rule],
    egress: &[Rule],
    global: bool,
    errs: &mut Errors,
) {
    for (dir, rules) in [("ingress", ingress), ("egress", egress)] {
        if rules.len() > MAX_RULES {
            errs.push(
                format!("{path}.{dir}"),
                format!("more than {MAX_RULES} rules"),
            );
        }
        for (i, r) in rules.iter().enumerate() {
            r.validate(&format!("{path}.{dir}[{i}]"), errs);
        }
    }
    for (i, r) in egress.iter().enumerate() {
        let rpath = format!("{path}.egress[{i}]");
        if r.source.services.is_some() {
            errs.push(
                format!("{rpath}.source.services"),
                "not allowed in egress rule source",
            );
        }
        if r.http.is_some() {
            errs.push(
                format!("{rpath}.http"),
                "HTTP match is not allowed in egress rules",
            );
        }
        if global
            && let Some(s) = &r.destination.services
            && s.namespace.is_empty()
        {
            errs.push(
                format!("{rpath}.destination.services.namespace"),
                "must specify a namespace",
            );
        }
    }
    for (i, r) in ingress.iter().enumerate() {
        let rpath = format!("{path}.ingress[{i}]");
        if r.destination.services.is_some() {
            errs.push(
                format!("{rpath}.destination.services"),
                "not allowed in ingress rule destination",
            );
        }
        if global
            && let Some(s) = &r.source.services
            && s.namespace.is_empty()
        {
            errs.push(
                format!("{rpath}.source.services.namespace"),
                "must specify a namespace",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Policy specs
// ---------------------------------------------------------------------------------------------

/// `NetworkPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_order"
    )]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// `GlobalNetworkPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_order"
    )]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub do_not_track: bool,
    #[serde(default, rename = "preDNAT", skip_serializing_if = "is_false")]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// `StagedNetworkPolicy.spec`: a `NetworkPolicy` spec plus `stagedAction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_order"
    )]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// `StagedGlobalNetworkPolicy.spec`: a `GlobalNetworkPolicy` spec plus `stagedAction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedGlobalNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_order"
    )]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub do_not_track: bool,
    #[serde(default, rename = "preDNAT", skip_serializing_if = "is_false")]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// Writes an order the way Go's JSON encoder writes a `float64`: integral values without a
/// fractional part (`order: 100`, not `100.0`).
pub fn serialize_order<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 => {
            s.serialize_i64(*x as i64)
        }
        Some(x) => s.serialize_f64(*x),
        None => s.serialize_none(),
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl NetworkPolicySpec {
    /// The tier, `default` when empty.
    pub fn tier_or_default(&self) -> &str {
        tier_or_default(&self.tier)
    }
}

impl GlobalNetworkPolicySpec {
    /// The tier, `default` when empty.
    pub fn tier_or_default(&self) -> &str {
        tier_or_default(&self.tier)
    }
}

impl StagedNetworkPolicySpec {
    /// The enforced `NetworkPolicy` spec this staged policy would set.
    pub fn to_enforced(&self) -> NetworkPolicySpec {
        NetworkPolicySpec {
            tier: self.tier.clone(),
            order: self.order,
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
            selector: self.selector.clone(),
            types: self.types.clone(),
            service_account_selector: self.service_account_selector.clone(),
            performance_hints: self.performance_hints.clone(),
        }
    }

    /// The staged action, `Set` when unset.
    pub fn action(&self) -> StagedAction {
        self.staged_action.unwrap_or_default()
    }
}

impl StagedGlobalNetworkPolicySpec {
    /// The enforced `GlobalNetworkPolicy` spec this staged policy would set.
    pub fn to_enforced(&self) -> GlobalNetworkPolicySpec {
        GlobalNetworkPolicySpec {
            tier: self.tier.clone(),
            order: self.order,
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
            selector: self.selector.clone(),
            types: self.types.clone(),
            do_not_track: self.do_not_track,
            pre_dnat: self.pre_dnat,
            apply_on_forward: self.apply_on_forward,
            service_account_selector: self.service_account_selector.clone(),
            namespace_selector: self.namespace_selector.clone(),
            performance_hints: self.performance_hints.clone(),
        }
    }

    /// The staged action, `Set` when unset.
    pub fn action(&self) -> StagedAction {
        self.staged_action.unwrap_or_default()
    }
}

/// The tier name, `default` when empty.
pub fn tier_or_default(tier: &str) -> &str {
    if tier.is_empty() { DEFAULT_TIER } else { tier }
}

/// Upstream's `types` defaulting: `[Ingress]` unless there are egress rules; `[Egress]` with only
/// egress rules; both with both.
pub fn default_policy_types(ingress: &[Rule], egress: &[Rule], types: &mut Vec<PolicyType>) {
    if !types.is_empty() {
        return;
    }
    match (ingress.is_empty(), egress.is_empty()) {
        (_, true) => types.push(PolicyType::Ingress),
        (true, false) => types.push(PolicyType::Egress),
        (false, false) => types.extend([PolicyType::Ingress, PolicyType::Egress]),
    }
}

/// Policy defaulting shared by every policy kind: tier, tier label, `default.` name prefix,
/// protocol casing, and (unless `skip_types`) `types`.
fn default_policy_common(
    meta: &mut ObjectMeta,
    tier: &mut String,
    ingress: &mut [Rule],
    egress: &mut [Rule],
    types: &mut Vec<PolicyType>,
    skip_types: bool,
) {
    if tier.is_empty() {
        *tier = DEFAULT_TIER.to_string();
    }
    // Default-tier policies used to be stored as `default.<name>`; upstream now strips that
    // prefix (the policy-name and v1→v3 CRD migrations), so `default.x` in tier `default` is `x`.
    if tier == DEFAULT_TIER {
        if let Some(rest) = meta.name.strip_prefix("default.")
            && !rest.is_empty()
        {
            meta.name = rest.to_string();
        }
        meta.labels
            .entry(LABEL_TIER.to_string())
            .or_insert_with(|| tier.clone());
    } else {
        meta.labels.insert(LABEL_TIER.to_string(), tier.clone());
    }
    for r in ingress.iter_mut().chain(egress.iter_mut()) {
        r.apply_defaults();
    }
    if !skip_types {
        default_policy_types(ingress, egress, types);
    }
}

// Names: `nameLabelFmt` with one optional dotted prefix, or (namespaced kinds only)
// `knp.default.<subdomain>` / `ossg.default.<subdomain>`.
fn is_label_dot_label(name: &str) -> bool {
    match name.split_once('.') {
        None => is_strict_label(name),
        Some((a, b)) => is_strict_label(a) && is_strict_label(b),
    }
}

// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` without upstream's 63-character cap (the regex has none;
// the whole name is capped at 253).
fn is_strict_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain_unbounded(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_strict_label)
}

/// Whether `s` matches upstream's resource-name rule (`nameRegex`): dot-separated lower-case
/// alphanumeric/`-` labels, each starting and ending alphanumeric, at most 253 characters in
/// total, with no per-label length limit.
pub fn is_valid_resource_name(s: &str) -> bool {
    s.len() <= 253 && is_subdomain_unbounded(s)
}

/// Validates a resource name or a reference to one (profiles, nodes, tiers, services) with
/// upstream's `name` rule.
pub fn validate_resource_name(path: &str, s: &str, errs: &mut Errors) {
    if !is_valid_resource_name(s) {
        errs.push(
            path,
            format!(
                "{s:?} is not a valid name: must be lower-case alphanumerics, '-' or '.', start \
                 and end with an alphanumeric, at most 253 characters"
            ),
        );
    }
}

/// Whether `name` is a valid NetworkPolicy / StagedNetworkPolicy name.
pub fn is_valid_network_policy_name(name: &str) -> bool {
    if name.len() > 253 {
        return false;
    }
    if is_label_dot_label(name) {
        return true;
    }
    ["knp.default.", "ossg.default."]
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(is_subdomain_unbounded))
}

/// Whether `name` is a valid GlobalNetworkPolicy / StagedGlobalNetworkPolicy name.
pub fn is_valid_global_network_policy_name(name: &str) -> bool {
    name.len() <= 253 && is_label_dot_label(name)
}

fn push_policy_name_error(meta: &ObjectMeta, namespaced: bool, errs: &mut Errors) {
    let extra = if namespaced {
        ", or knp.default.<name>"
    } else {
        ""
    };
    if meta.name.len() > 253 {
        errs.push(
            "metadata.name",
            format!("name is too long by {} bytes", meta.name.len() - 253),
        );
    } else {
        errs.push(
            "metadata.name",
            format!(
                "{:?} is not a valid policy name: must be lower-case alphanumerics or '-', \
                 starting and ending alphanumeric, with at most one '.'-separated prefix{extra}",
                meta.name
            ),
        );
    }
}

fn validate_tier_ref(path: &str, tier: &str, errs: &mut Errors) {
    if !tier.is_empty() {
        validate_resource_name(path, tier, errs);
    }
}

fn validate_types(path: &str, types: &[PolicyType], errs: &mut Errors) {
    for (i, t) in types.iter().enumerate() {
        if types[..i].contains(t) {
            errs.push(
                format!("{path}[{i}]"),
                format!("'{t:?}' type specified more than once"),
            );
        }
    }
    if types.len() > 2 {
        errs.push(path, "at most 2 types may be given");
    }
}

fn validate_perf_hints(path: &str, hints: &[String], errs: &mut Errors) {
    for (i, h) in hints.iter().enumerate() {
        if h != PERF_HINT_ASSUME_NEEDED_ON_EVERY_NODE {
            errs.push(
                format!("{path}[{i}]"),
                format!("unknown performance hint {h:?} (only AssumeNeededOnEveryNode)"),
            );
        } else if hints[..i].contains(h) {
            errs.push(
                format!("{path}[{i}]"),
                format!("duplicate performance hint {h:?}"),
            );
        }
    }
}

fn validate_no_global(path: &str, sel: &str, errs: &mut Errors) {
    if sel.contains("global(") {
        errs.push(
            path,
            "global() can only be used in an EntityRule namespaceSelector",
        );
    }
}

fn validate_np_spec(spec: &NetworkPolicySpec, errs: &mut Errors) {
    validate_tier_ref("spec.tier", &spec.tier, errs);
    validate_selector_field("spec.selector", &spec.selector, errs);
    validate_no_global("spec.selector", &spec.selector, errs);
    validate_selector_field(
        "spec.serviceAccountSelector",
        &spec.service_account_selector,
        errs,
    );
    validate_no_global(
        "spec.serviceAccountSelector",
        &spec.service_account_selector,
        errs,
    );
    validate_types("spec.types", &spec.types, errs);
    validate_perf_hints("spec.performanceHints", &spec.performance_hints, errs);
    validate_rule_lists("spec", &spec.ingress, &spec.egress, false, errs);
}

fn validate_gnp_spec(spec: &GlobalNetworkPolicySpec, errs: &mut Errors) {
    validate_tier_ref("spec.tier", &spec.tier, errs);
    validate_selector_field("spec.selector", &spec.selector, errs);
    validate_no_global("spec.selector", &spec.selector, errs);
    validate_selector_field(
        "spec.serviceAccountSelector",
        &spec.service_account_selector,
        errs,
    );
    validate_no_global(
        "spec.serviceAccountSelector",
        &spec.service_account_selector,
        errs,
    );
    validate_selector_field("spec.namespaceSelector", &spec.namespace_selector, errs);
    validate_no_global("spec.namespaceSelector", &spec.namespace_selector, errs);
    validate_types("spec.types", &spec.types, errs);
    validate_perf_hints("spec.performanceHints", &spec.performance_hints, errs);
    if spec.do_not_track && spec.pre_dnat {
        errs.push("spec.preDNAT", "preDNAT and doNotTrack cannot both be true");
    }
    if spec.pre_dnat && !spec.egress.is_empty() {
        errs.push("spec.egress", "preDNAT policy cannot have any egress rules");
    }
    if spec.pre_dnat && spec.types.contains(&PolicyType::Egress) {
        errs.push("spec.types", "preDNAT policy cannot have 'Egress' type");
    }
    if !spec.apply_on_forward && (spec.do_not_track || spec.pre_dnat) {
        errs.push(
            "spec.applyOnForward",
            "applyOnForward must be true if either preDNAT or doNotTrack is true",
        );
    }
    validate_rule_lists("spec", &spec.ingress, &spec.egress, true, errs);
}

/// Staged `Delete` must carry nothing but `tier` (and `stagedAction`); each other field that
/// is set is reported.
fn validate_staged_delete<T: Serialize>(spec: &T, errs: &mut Errors) {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(spec) else {
        return;
    };
    for key in fields.keys() {
        if key != "tier" && key != "stagedAction" {
            errs.push(
                format!("spec.{key}"),
                "must be empty when stagedAction is Delete (only tier may be set)",
            );
        }
    }
}

impl Spec for NetworkPolicySpec {
    const KIND: &'static str = "NetworkPolicy";
    const PLURAL: &'static str = "networkpolicies";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &[
        "networkpolicy",
        "policy",
        "policies",
        "pol",
        "pols",
        "np",
        "nps",
    ];

    fn apply_defaults(meta: &mut ObjectMeta, spec: &mut Self) {
        default_policy_common(
            meta,
            &mut spec.tier,
            &mut spec.ingress,
            &mut spec.egress,
            &mut spec.types,
            false,
        );
    }

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if !is_valid_network_policy_name(&meta.name) {
            push_policy_name_error(meta, true, errs);
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        validate_np_spec(spec, errs);
    }
}

impl Spec for GlobalNetworkPolicySpec {
    const KIND: &'static str = "GlobalNetworkPolicy";
    const PLURAL: &'static str = "globalnetworkpolicies";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["globalnetworkpolicy", "gnp", "gnps"];

    fn apply_defaults(meta: &mut ObjectMeta, spec: &mut Self) {
        default_policy_common(
            meta,
            &mut spec.tier,
            &mut spec.ingress,
            &mut spec.egress,
            &mut spec.types,
            false,
        );
    }

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if !is_valid_global_network_policy_name(&meta.name) {
            push_policy_name_error(meta, false, errs);
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        validate_gnp_spec(spec, errs);
    }
}

impl Spec for StagedNetworkPolicySpec {
    const KIND: &'static str = "StagedNetworkPolicy";
    const PLURAL: &'static str = "stagednetworkpolicies";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &["stagednetworkpolicy", "snp", "snps"];

    fn apply_defaults(meta: &mut ObjectMeta, spec: &mut Self) {
        // The CRD defaults `stagedAction` to `Set`.
        let delete = *spec.staged_action.get_or_insert(StagedAction::Set) == StagedAction::Delete;
        default_policy_common(
            meta,
            &mut spec.tier,
            &mut spec.ingress,
            &mut spec.egress,
            &mut spec.types,
            delete,
        );
    }

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if !is_valid_network_policy_name(&meta.name) {
            push_policy_name_error(meta, true, errs);
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        if spec.action() == StagedAction::Delete {
            validate_staged_delete(spec, errs);
            validate_tier_ref("spec.tier", &spec.tier, errs);
        } else {
            validate_np_spec(&spec.to_enforced(), errs);
        }
    }
}

impl Spec for StagedGlobalNetworkPolicySpec {
    const KIND: &'static str = "StagedGlobalNetworkPolicy";
    const PLURAL: &'static str = "stagedglobalnetworkpolicies";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["stagedglobalnetworkpolicy", "sgnp", "sgnps"];

    fn apply_defaults(meta: &mut ObjectMeta, spec: &mut Self) {
        // The CRD defaults `stagedAction` to `Set`.
        let delete = *spec.staged_action.get_or_insert(StagedAction::Set) == StagedAction::Delete;
        default_policy_common(
            meta,
            &mut spec.tier,
            &mut spec.ingress,
            &mut spec.egress,
            &mut spec.types,
            delete,
        );
    }

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if !is_valid_global_network_policy_name(&meta.name) {
            push_policy_name_error(meta, false, errs);
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        if spec.action() == StagedAction::Delete {
            validate_staged_delete(spec, errs);
            validate_tier_ref("spec.tier", &spec.tier, errs);
        } else {
            validate_gnp_spec(&spec.to_enforced(), errs);
        }
    }
}

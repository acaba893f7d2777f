//! The rule scanner: backend rules become dataplane rules whose selectors and named ports are
//! replaced by IP set IDs (upstream `felix/calc/rule_scanner.go`). Also defines the IP set
//! identities.

use std::collections::BTreeMap;

use base64::Engine as _;
use calico_model::selector::Selector;
use sha2::{Digest, Sha224};

use crate::backend::{self, Port};
use crate::msg::{self, IpSetType, PortRange, Protocol, ServiceAccountMatch};

/// What one IP set stands for: the addresses of everything a selector matches, or, with a named
/// port, `ip,proto:port` of every endpoint the selector matches that has that port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IpSetData {
    pub selector: Selector,
    /// `(protocol, port name)` for a named-port set.
    pub named_port: Option<(String, String)>,
}

impl IpSetData {
    /// Selector sets use the selector's unique ID; named-port sets
    /// `n:` + base64url(SHA-224(`n:<selector id>,<proto>,<port name>`)), as upstream.
    pub fn unique_id(&self) -> String {
        let sel_id = self.selector.unique_id();
        match &self.named_port {
            None => sel_id,
            Some((proto, name)) => make_unique_id("n", &format!("{sel_id},{proto},{name}")),
        }
    }

    pub fn set_type(&self) -> IpSetType {
        if self.named_port.is_some() {
            IpSetType::IpAndPort
        } else {
            IpSetType::Net
        }
    }

    /// A human-readable description (logs, golden files).
    pub fn describe(&self) -> String {
        match &self.named_port {
            None => format!("sel({})", self.selector),
            Some((proto, name)) => format!("port({proto}:{name}, {})", self.selector),
        }
    }
}

/// Upstream's `hash.MakeUniqueID`.
fn make_unique_id(prefix: &str, content: &str) -> String {
    let mut h = Sha224::new();
    h.update(prefix.as_bytes());
    h.update(b":");
    h.update(content.as_bytes());
    format!(
        "{prefix}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
    )
}

/// Converts one backend rule, adding every IP set it references to `sets` (keyed by ID).
pub(crate) fn scan_rule(rule: &backend::Rule, sets: &mut BTreeMap<String, IpSetData>) -> msg::Rule {
    // Named ports on endpoints carry a protocol; rules carry it at the top level. Upstream
    // defaults to TCP.
    let np_proto = match &rule.protocol {
        Some(Protocol::Name(n)) if n == "udp" => "udp",
        Some(Protocol::Number(17)) => "udp",
        Some(Protocol::Name(n)) if n == "sctp" => "sctp",
        Some(Protocol::Number(132)) => "sctp",
        _ => "tcp",
    };
    let (src_ports, src_named) = split_ports(&rule.src.ports);
    let (dst_ports, dst_named) = split_ports(&rule.dst.ports);
    let (not_src_ports, not_src_named) = split_ports(&rule.src.not_ports);
    let (not_dst_ports, not_dst_named) = split_ports(&rule.dst.not_ports);

    let mut add = |data: IpSetData| -> String {
        let id = data.unique_id();
        sets.entry(id.clone()).or_insert(data);
        id
    };
    // Named ports are filtered by the positive selector of the same side, also when negated:
    // the rule only matches inside that selector anyway.
    let named = |names: &[String], sel: &Option<Selector>| -> Vec<IpSetData> {
        names
            .iter()
            .map(|n| IpSetData {
                selector: sel.clone().unwrap_or_else(Selector::all),
                named_port: Some((np_proto.to_string(), n.clone())),
            })
            .collect()
    };
    let src_np: Vec<String> = named(&src_named, &rule.src.selector)
        .into_iter()
        .map(&mut add)
        .collect();
    let dst_np: Vec<String> = named(&dst_named, &rule.dst.selector)
        .into_iter()
        .map(&mut add)
        .collect();
    let not_src_np: Vec<String> = named(&not_src_named, &rule.src.selector)
        .into_iter()
        .map(&mut add)
        .collect();
    let not_dst_np: Vec<String> = named(&not_dst_named, &rule.dst.selector)
        .into_iter()
        .map(&mut add)
        .collect();

    // A selector set is redundant when only named ports are used: they are already filtered by
    // the selector.
    let mut sel_set =
        |sel: &Option<Selector>, numeric: &[PortRange], named: &[String]| -> Vec<String> {
            match sel {
                Some(s) if !numeric.is_empty() || named.is_empty() => {
                    vec![add(IpSetData {
                        selector: s.clone(),
                        named_port: None,
                    })]
                }
                _ => Vec::new(),
            }
        };
    let src_sets = sel_set(&rule.src.selector, &src_ports, &src_named);
    let dst_sets = sel_set(&rule.dst.selector, &dst_ports, &dst_named);
    let not_src_sets = sel_set(&rule.src.not_selector, &[], &[]);
    let not_dst_sets = sel_set(&rule.dst.not_selector, &[], &[]);

    let nets = |v: &[ipnet::IpNet]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let sa = |e: &backend::Entity| {
        e.has_sa_match.then(|| ServiceAccountMatch {
            selector: e.original_sa_selector.clone(),
            names: e.original_sa_names.clone(),
        })
    };
    msg::Rule {
        action: rule.action.as_str().to_string(),
        ip_version: rule.ip_version,
        protocol: rule.protocol.clone(),
        src_net: nets(&rule.src.nets),
        src_ports,
        src_named_port_ip_set_ids: src_np,
        src_ip_set_ids: src_sets,
        dst_net: nets(&rule.dst.nets),
        dst_ports,
        dst_named_port_ip_set_ids: dst_np,
        dst_ip_set_ids: dst_sets,
        icmp: rule.icmp,
        not_protocol: rule.not_protocol.clone(),
        not_src_net: nets(&rule.src.not_nets),
        not_src_ports,
        not_src_named_port_ip_set_ids: not_src_np,
        not_src_ip_set_ids: not_src_sets,
        not_dst_net: nets(&rule.dst.not_nets),
        not_dst_ports,
        not_dst_named_port_ip_set_ids: not_dst_np,
        not_dst_ip_set_ids: not_dst_sets,
        not_icmp: rule.not_icmp,
        original_src_selector: rule.src.original_selector.clone(),
        original_dst_selector: rule.dst.original_selector.clone(),
        original_src_namespace_selector: rule.src.original_namespace_selector.clone(),
        original_dst_namespace_selector: rule.dst.original_namespace_selector.clone(),
        original_not_src_selector: rule.src.original_not_selector.clone(),
        original_not_dst_selector: rule.dst.original_not_selector.clone(),
        src_service_account_match: sa(&rule.src),
        dst_service_account_match: sa(&rule.dst),
        http_match: rule.http.clone(),
        metadata: rule.annotations.clone(),
    }
}

fn split_ports(ports: &[Port]) -> (Vec<PortRange>, Vec<String>) {
    let mut numeric = Vec::new();
    let mut named = Vec::new();
    for p in ports {
        match p {
            Port::Range(first, last) => numeric.push(PortRange {
                first: *first,
                last: *last,
            }),
            Port::Named(n) => named.push(n.clone()),
        }
    }
    (numeric, named)
}

/// Converts a list of rules.
pub(crate) fn scan_rules(
    rules: &[backend::Rule],
    sets: &mut BTreeMap<String, IpSetData>,
) -> Vec<msg::Rule> {
    rules.iter().map(|r| scan_rule(r, sets)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Action, Rule};
    use calico_model::selector::parse;

    #[test]
    fn selector_set_id_is_selector_uid() {
        let d = IpSetData {
            selector: parse("").unwrap(),
            named_port: None,
        };
        assert_eq!(d.unique_id(), "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug");
        assert_eq!(d.set_type(), IpSetType::Net);
    }

    #[test]
    fn named_port_id_hashes_selector_proto_and_name() {
        let d = IpSetData {
            selector: parse("").unwrap(),
            named_port: Some(("tcp".into(), "http".into())),
        };
        let expect = make_unique_id("n", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug,tcp,http");
        assert_eq!(d.unique_id(), expect);
        assert!(expect.starts_with("n:") && expect.len() == 2 + 38);
        assert_eq!(d.set_type(), IpSetType::IpAndPort);
    }

    #[test]
    fn named_ports_only_skip_the_selector_set() {
        let mut r = Rule::new(Action::Allow);
        r.protocol = Some(Protocol::Name("udp".into()));
        r.dst.selector = Some(parse("app == 'dns'").unwrap());
        r.dst.ports = vec![Port::Named("dns".into())];
        let mut sets = BTreeMap::new();
        let out = scan_rule(&r, &mut sets);
        assert!(out.dst_ip_set_ids.is_empty());
        assert_eq!(out.dst_named_port_ip_set_ids.len(), 1);
        let d = &sets[&out.dst_named_port_ip_set_ids[0]];
        assert_eq!(d.named_port, Some(("udp".into(), "dns".into())));
        assert_eq!(d.selector.to_string(), r#"app == "dns""#);

        r.dst.ports.push(Port::Range(53, 53));
        let mut sets = BTreeMap::new();
        let out = scan_rule(&r, &mut sets);
        assert_eq!(out.dst_ip_set_ids.len(), 1);
        assert_eq!(
            out.dst_ports,
            vec![PortRange {
                first: 53,
                last: 53
            }]
        );
        assert_eq!(sets.len(), 2);
    }
}

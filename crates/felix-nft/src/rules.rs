//! One policy rule → nft rule text, per IP family; IP set members → nft set elements.

use std::collections::BTreeSet;
use std::net::IpAddr;

use felix_calc::msg::{PortRange, Protocol, Rule};
use ipnet::IpNet;

use crate::names;

/// Mark bits, as upstream Felix allocates them from the default mark mask.
pub const MARK_ACCEPT: u32 = 0x10000;
pub const MARK_PASS: u32 = 0x20000;
/// Every bit we own (Accept, Pass, Drop, Scratch0).
pub const MARK_ALL: u32 = 0xf0000;

/// Errors rendering a rule or a set member.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("{owner}: rule {index}: unknown action {action:?}")]
    Action {
        owner: String,
        index: usize,
        action: String,
    },
    #[error("{owner}: rule {index}: unknown protocol {protocol:?}")]
    Protocol {
        owner: String,
        index: usize,
        protocol: String,
    },
    #[error("{owner}: rule {index}: {field}: invalid CIDR {value:?}")]
    Cidr {
        owner: String,
        index: usize,
        field: &'static str,
        value: String,
    },
    #[error("ip set {set}: invalid member {member:?}")]
    Member { set: String, member: String },
}

/// IP family of a rendered rule or set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn addr_kw(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub fn digit(self) -> char {
        match self {
            Family::V4 => '4',
            Family::V6 => '6',
        }
    }

    pub fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    fn of(addr: &IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Where a rule is rendered: its owner (for errors and names) and what Log prints.
pub struct RuleCtx<'a> {
    pub owner: &'a str,
    pub log_prefix: &'a str,
    /// Whether IPv6 IP sets exist (see [`crate::Config::set_families`]). Without them, IPv6
    /// variants render as if every set were empty: a positive set match (or a rule whose every
    /// port alternative is a named-port set) cannot match, a negated one always matches.
    pub v6_sets: bool,
    /// Whether IP set `id` has prefixes in family `fam` (its set is then the interval set
    /// [`names::prefix_set`], else the hash set [`names::selector_set`]).
    pub prefix_sets: &'a dyn Fn(&str, Family) -> bool,
}

impl RuleCtx<'_> {
    fn addr_set(&self, id: &str, fam: Family) -> String {
        if (self.prefix_sets)(id, fam) {
            names::prefix_set(id, fam)
        } else {
            names::selector_set(id, fam)
        }
    }
}

/// The family of an IP set member that is a prefix shorter than an address (`10.0.0.0/24`),
/// which only an interval set can hold; `None` for addresses (`10.0.0.1`, `10.0.0.1/32`) and
/// named-port members (`10.0.0.1,tcp:80`).
pub fn prefix_member_family(m: &str) -> Option<Family> {
    let (addr, len) = m.split_once('/')?;
    let len: u8 = len.trim().parse().ok()?;
    let (fam, host) = if addr.contains(':') {
        (Family::V6, 128)
    } else {
        (Family::V4, 32)
    };
    (len < host).then_some(fam)
}

/// Protocol → (number, nft name used in the rule).
pub fn protocol(p: &Protocol) -> Option<(u8, String)> {
    let n = match p {
        Protocol::Number(n) => *n,
        Protocol::Name(s) => match s.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" => 58,
            "sctp" => 132,
            "udplite" => 136,
            other => other.parse().ok()?,
        },
    };
    let name = match n {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "ipv6-icmp".to_string(),
        other => other.to_string(),
    };
    Some((n, name))
}

/// Parse a CIDR or bare address; returns the nft text (host bits cleared, /32 and /128
/// written as bare addresses) and its family.
pub fn parse_net(s: &str) -> Option<(IpNet, Family)> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n.trunc(),
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    let fam = Family::of(&net.addr());
    Some((net, fam))
}

pub fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn is_catch_all(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

/// Drop every net contained in another one (nft interval sets reject overlaps).
///
/// Linear after sorting: prefixes either nest or are disjoint, so in (first address, prefix
/// length) order a net's only possible container among the kept ones is the last kept net of
/// its family (sets hold 20,000 addresses and more).
pub fn coalesce(nets: impl IntoIterator<Item = IpNet>) -> BTreeSet<IpNet> {
    let mut sorted: Vec<IpNet> = nets.into_iter().map(|n| n.trunc()).collect();
    sorted.sort_by_key(|n| (n.network(), n.prefix_len()));
    let mut out = BTreeSet::new();
    let (mut last4, mut last6): (Option<IpNet>, Option<IpNet>) = (None, None);
    for n in sorted {
        let last = if n.addr().is_ipv4() {
            &mut last4
        } else {
            &mut last6
        };
        if last.is_some_and(|k| k.contains(&n)) {
            continue;
        }
        *last = Some(n);
        out.insert(n);
    }
    out
}

/// `{ a, b }` or a single value.
fn anon(items: &[String]) -> String {
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

fn ports(ps: &[PortRange]) -> String {
    let items: Vec<String> = ps
        .iter()
        .map(|p| {
            if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}-{}", p.first, p.last)
            }
        })
        .collect();
    anon(&items)
}

/// The action statement of a rule inside a policy or profile chain.
fn action(ctx: &RuleCtx<'_>, index: usize, action: &str) -> Result<String, RuleError> {
    Ok(match action {
        "allow" | "Allow" => format!("meta mark set meta mark | {MARK_ACCEPT:#x} return"),
        "deny" | "Deny" => "drop".to_string(),
        "next-tier" | "pass" | "Pass" => format!("meta mark set meta mark | {MARK_PASS:#x} return"),
        "log" | "Log" => format!("log prefix \"{}: \"", ctx.log_prefix),
        other => {
            return Err(RuleError::Action {
                owner: ctx.owner.to_string(),
                index,
                action: other.to_string(),
            });
        }
    })
}

/// Nets of one family from a rule field; `None` when the rule must be skipped for this family,
/// as upstream's `filterNets`: the field has CIDRs but none of this family, or (negated) one of
/// them is the family's catch-all (`0.0.0.0/0`, `::/0`).
fn nets_for(
    ctx: &RuleCtx<'_>,
    index: usize,
    field: &'static str,
    values: &[String],
    fam: Family,
    negated: bool,
) -> Result<Option<Vec<String>>, RuleError> {
    let mut out = Vec::new();
    for v in values {
        let (net, f) = parse_net(v).ok_or_else(|| RuleError::Cidr {
            owner: ctx.owner.to_string(),
            index,
            field,
            value: v.clone(),
        })?;
        if f == fam {
            if negated && is_catch_all(&net) {
                // As upstream: a negated catch-all can never match; the rule is dropped.
                return Ok(None);
            }
            out.push(net);
        }
    }
    if !values.is_empty() && out.is_empty() {
        return Ok(None);
    }
    Ok(Some(coalesce(out).iter().map(net_text).collect()))
}

/// Render `rule` (number `index` in its chain) for one family: zero rules when it cannot
/// match this family, several when alternatives (ports OR named ports) need one nft rule each.
pub fn render_rule(
    ctx: &RuleCtx<'_>,
    index: usize,
    rule: &Rule,
    fam: Family,
) -> Result<Vec<String>, RuleError> {
    let act = action(ctx, index, &rule.action)?;
    match rule.ip_version {
        Some(4) if fam != Family::V4 => return Ok(vec![]),
        Some(6) if fam != Family::V6 => return Ok(vec![]),
        _ => {}
    }
    let proto_err = |p: &Protocol| RuleError::Protocol {
        owner: ctx.owner.to_string(),
        index,
        protocol: match p {
            Protocol::Name(s) => s.clone(),
            Protocol::Number(n) => n.to_string(),
        },
    };
    let kw = fam.addr_kw();
    // IPv6 sets that are not rendered are empty.
    let no_sets = fam == Family::V6 && !ctx.v6_sets;
    let positive_sets = !rule.src_ip_set_ids.is_empty() || !rule.dst_ip_set_ids.is_empty();
    let only_named = |nums: &[PortRange], ids: &[String]| nums.is_empty() && !ids.is_empty();
    if no_sets
        && (positive_sets
            || only_named(&rule.src_ports, &rule.src_named_port_ip_set_ids)
            || only_named(&rule.dst_ports, &rule.dst_named_port_ip_set_ids))
    {
        return Ok(vec![]);
    }
    let negated_sets = [
        &rule.not_src_ip_set_ids,
        &rule.not_dst_ip_set_ids,
        &rule.not_src_named_port_ip_set_ids,
        &rule.not_dst_named_port_ip_set_ids,
    ]
    .iter()
    .any(|ids| !ids.is_empty());
    let mut m: Vec<String> = Vec::new();
    if rule.ip_version.is_some() || (no_sets && negated_sets) {
        // (Dropped always-true set matches must not widen the IPv6 variant to IPv4.)
        // Nothing else in the rule may be family-specific; say it explicitly.
        m.push(match fam {
            Family::V4 => "meta nfproto ipv4".to_string(),
            Family::V6 => "meta nfproto ipv6".to_string(),
        });
    }
    if let Some(p) = &rule.protocol {
        let (n, name) = protocol(p).ok_or_else(|| proto_err(p))?;
        if (n == 1 && fam == Family::V6) || (n == 58 && fam == Family::V4) {
            return Ok(vec![]);
        }
        m.push(format!("meta l4proto {name}"));
    }
    if let Some(p) = &rule.not_protocol {
        let (_, name) = protocol(p).ok_or_else(|| proto_err(p))?;
        m.push(format!("meta l4proto != {name}"));
    }
    for (field, dir, pos, neg) in [
        ("src_net", "saddr", &rule.src_net, &rule.not_src_net),
        ("dst_net", "daddr", &rule.dst_net, &rule.not_dst_net),
    ] {
        let Some(p) = nets_for(ctx, index, field, pos, fam, false)? else {
            return Ok(vec![]);
        };
        if !p.is_empty() {
            m.push(format!("{kw} {dir} {}", anon(&p)));
        }
        let Some(n) = nets_for(ctx, index, field, neg, fam, true)? else {
            return Ok(vec![]);
        };
        if !n.is_empty() {
            m.push(format!("{kw} {dir} != {}", anon(&n)));
        }
    }
    for (dir, ids) in [
        ("saddr", &rule.src_ip_set_ids),
        ("daddr", &rule.dst_ip_set_ids),
    ] {
        for id in ids {
            m.push(format!("{kw} {dir} @{}", ctx.addr_set(id, fam)));
        }
    }
    for (dir, ids) in [
        ("saddr", &rule.not_src_ip_set_ids),
        ("daddr", &rule.not_dst_ip_set_ids),
    ] {
        for id in ids.iter().filter(|_| !no_sets) {
            m.push(format!("{kw} {dir} != @{}", ctx.addr_set(id, fam)));
        }
    }
    if !rule.not_src_ports.is_empty() {
        m.push(format!("th sport != {}", ports(&rule.not_src_ports)));
    }
    if !rule.not_dst_ports.is_empty() {
        m.push(format!("th dport != {}", ports(&rule.not_dst_ports)));
    }
    for (addr, port, ids) in [
        ("saddr", "sport", &rule.not_src_named_port_ip_set_ids),
        ("daddr", "dport", &rule.not_dst_named_port_ip_set_ids),
    ] {
        for id in ids.iter().filter(|_| !no_sets) {
            m.push(format!(
                "{kw} {addr} . meta l4proto . th {port} != @{}",
                names::named_port_set(id, fam)
            ));
        }
    }
    let icmp_kw = match fam {
        Family::V4 => "icmp",
        Family::V6 => "icmpv6",
    };
    if let Some(i) = &rule.icmp {
        m.push(format!("{icmp_kw} type {}", i.icmp_type));
        if let Some(c) = i.code {
            m.push(format!("{icmp_kw} code {c}"));
        }
    }
    if let Some(i) = &rule.not_icmp {
        match i.code {
            None => m.push(format!("{icmp_kw} type != {}", i.icmp_type)),
            Some(c) => m.push(format!(
                "{icmp_kw} type . {icmp_kw} code != {{ {} . {c} }}",
                i.icmp_type
            )),
        }
    }
    // Positive port matches: numeric ports OR any named-port set, per direction.
    let alternatives = |addr: &str, port: &str, nums: &[PortRange], ids: &[String]| {
        let mut alts = Vec::new();
        if !nums.is_empty() {
            alts.push(format!("th {port} {}", ports(nums)));
        }
        for id in ids.iter().filter(|_| !no_sets) {
            alts.push(format!(
                "{kw} {addr} . meta l4proto . th {port} @{}",
                names::named_port_set(id, fam)
            ));
        }
        if alts.is_empty() {
            alts.push(String::new());
        }
        alts
    };
    let src_alts = alternatives(
        "saddr",
        "sport",
        &rule.src_ports,
        &rule.src_named_port_ip_set_ids,
    );
    let dst_alts = alternatives(
        "daddr",
        "dport",
        &rule.dst_ports,
        &rule.dst_named_port_ip_set_ids,
    );
    let base = m.join(" ");
    let mut out = Vec::new();
    for s in &src_alts {
        for d in &dst_alts {
            let parts: Vec<&str> = [base.as_str(), s.as_str(), d.as_str(), act.as_str()]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
            out.push(parts.join(" "));
        }
    }
    Ok(out)
}

/// Set elements for one family of an address/CIDR set (coalesced), or of a named-port set
/// (`<ip>,<proto>:<port>` → `ip . proto . port`).
pub fn set_elements(
    set: &str,
    named_port: bool,
    members: &BTreeSet<String>,
    fam: Family,
) -> Result<BTreeSet<String>, RuleError> {
    let bad = |m: &str| RuleError::Member {
        set: set.to_string(),
        member: m.to_string(),
    };
    if named_port {
        let mut out = BTreeSet::new();
        for m in members {
            let (ip, rest) = m.split_once(',').ok_or_else(|| bad(m))?;
            let (proto, port) = rest.split_once(':').ok_or_else(|| bad(m))?;
            let addr: IpAddr = ip.parse().map_err(|_| bad(m))?;
            let (n, _) = protocol(&Protocol::Name(proto.to_string())).ok_or_else(|| bad(m))?;
            let port: u16 = port.parse().map_err(|_| bad(m))?;
            if Family::of(&addr) == fam {
                out.insert(format!("{addr} . {n} . {port}"));
            }
        }
        return Ok(out);
    }
    let mut nets = Vec::new();
    for m in members {
        let (net, f) = parse_net(m).ok_or_else(|| bad(m))?;
        if f == fam {
            nets.push(net);
        }
    }
    Ok(coalesce(nets).iter().map(net_text).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use felix_calc::msg::IcmpMatch;

    fn ctx() -> RuleCtx<'static> {
        RuleCtx {
            owner: "policy p",
            log_prefix: "calico-packet",
            v6_sets: true,
            prefix_sets: &|_, _| false,
        }
    }

    #[test]
    fn allow_tcp_port_from_selector() {
        let r = Rule {
            action: "allow".into(),
            protocol: Some(Protocol::Name("TCP".into())),
            dst_ports: vec![
                PortRange {
                    first: 80,
                    last: 80,
                },
                PortRange {
                    first: 8000,
                    last: 8080,
                },
            ],
            src_ip_set_ids: vec!["s:abc".into()],
            ..Default::default()
        };
        assert_eq!(
            render_rule(&ctx(), 0, &r, Family::V4).unwrap(),
            vec![
                "meta l4proto tcp ip saddr @s4-s-abc th dport { 80, 8000-8080 } \
                 meta mark set meta mark | 0x10000 return"
            ]
        );
    }

    #[test]
    fn family_filtering() {
        let r = Rule {
            action: "deny".into(),
            src_net: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        assert!(render_rule(&ctx(), 0, &r, Family::V6).unwrap().is_empty());
        let icmp = Rule {
            action: "allow".into(),
            protocol: Some(Protocol::Name("icmp".into())),
            icmp: Some(IcmpMatch {
                icmp_type: 8,
                code: None,
            }),
            ..Default::default()
        };
        assert!(
            render_rule(&ctx(), 0, &icmp, Family::V6)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn not_nets_filter_the_rule_per_family_as_upstream() {
        // notNets of the other family only: the rule does not exist for this family.
        let v6_only = Rule {
            action: "deny".into(),
            not_dst_net: vec!["fd00::/8".into()],
            ..Default::default()
        };
        assert!(
            render_rule(&ctx(), 0, &v6_only, Family::V4)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            render_rule(&ctx(), 0, &v6_only, Family::V6).unwrap().len(),
            1
        );
        // Mixed nets, notNets of one family: only that family keeps the rule.
        let mixed = Rule {
            action: "deny".into(),
            src_net: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
            not_src_net: vec!["192.0.2.7/32".into()],
            ..Default::default()
        };
        let v4 = render_rule(&ctx(), 0, &mixed, Family::V4).unwrap();
        assert!(
            v4[0].contains("ip saddr 192.0.2.0/24 ip saddr != 192.0.2.7"),
            "{v4:?}"
        );
        assert!(
            render_rule(&ctx(), 0, &mixed, Family::V6)
                .unwrap()
                .is_empty()
        );
        // A negated catch-all can never match: skipped, never an unconditional verdict.
        let never = Rule {
            action: "deny".into(),
            not_src_net: vec!["0.0.0.0/0".into(), "fd00::/8".into()],
            ..Default::default()
        };
        assert!(
            render_rule(&ctx(), 0, &never, Family::V4)
                .unwrap()
                .is_empty()
        );
        assert_eq!(render_rule(&ctx(), 0, &never, Family::V6).unwrap().len(), 1);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let r = Rule {
            action: "allow".into(),
            dst_net: vec!["10.0.0.300/8".into()],
            ..Default::default()
        };
        let e = render_rule(&ctx(), 3, &r, Family::V4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "policy p: rule 3: dst_net: invalid CIDR \"10.0.0.300/8\""
        );
        let r = Rule {
            action: "frobnicate".into(),
            ..Default::default()
        };
        assert!(render_rule(&ctx(), 0, &r, Family::V4).is_err());
    }

    #[test]
    fn coalesce_matches_the_quadratic_definition() {
        // Deterministic pseudo-random nets over a small space, so that nesting is common.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let mut nets = Vec::new();
            for _ in 0..(round % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let addr = std::net::Ipv4Addr::from(0x0a00_0000 | (x as u32 & 0x0000_0fff));
                let len = 20 + (x >> 40) as u8 % 13;
                nets.push(IpNet::from(ipnet::Ipv4Net::new(addr, len).unwrap()).trunc());
                if x & 1 == 0 {
                    let v6: IpNet = format!("fd00::{:x}/{}", x as u16 & 0xff, 120 + (x >> 50) % 9)
                        .parse()
                        .unwrap();
                    nets.push(v6.trunc());
                }
            }
            let slow: BTreeSet<IpNet> = nets
                .iter()
                .filter(|n| !nets.iter().any(|k| k != *n && k.contains(*n)))
                .copied()
                .collect();
            assert_eq!(coalesce(nets.clone()), slow, "{nets:?}");
        }
    }

    #[test]
    fn coalesce_drops_contained_nets() {
        let m: BTreeSet<String> = ["10.0.0.0/8", "10.1.2.3/32", "192.168.0.1", "fd00::1/128"]
            .into_iter()
            .map(String::from)
            .collect();
        let v4 = set_elements("s", false, &m, Family::V4).unwrap();
        assert_eq!(
            v4.into_iter().collect::<Vec<_>>(),
            vec!["10.0.0.0/8", "192.168.0.1"]
        );
        let v6 = set_elements("s", false, &m, Family::V6).unwrap();
        assert_eq!(v6.into_iter().collect::<Vec<_>>(), vec!["fd00::1"]);
    }
}

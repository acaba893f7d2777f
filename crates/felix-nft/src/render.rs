//! Desired state → one rendered `table inet calico` (pure).
//!
//! Layout (chains of the emulated iptables tables are prefixed as in upstream's nft mode):
//! - `raw-PREROUTING` (priority raw): clear our mark bits; workload anti-spoofing via the
//!   `wl-antispoof` verdict map; untracked (doNotTrack) host-endpoint ingress policy.
//! - `raw-OUTPUT`: untracked host-endpoint egress policy.
//! - `mangle-PREROUTING` (priority mangle): preDNAT host-endpoint policy.
//! - `filter-INPUT` / `filter-FORWARD` / `filter-OUTPUT` (priority filter): conntrack
//!   (established/related accepted, invalid dropped) first, then dispatch by interface name
//!   through verdict maps to per-endpoint chains. Unknown workload interfaces are dropped.
//!
//! A workload's per-endpoint chains hold only what is specific to it (mark reset, VXLAN/IPIP
//! drop) and `goto` a policy-dispatch chain shared by every workload with the same ordered
//! tiers, policies and profiles in that direction (`tp-<hash>` / `fp-<hash>`, named by a hash
//! of the dispatch rules, present while at least one endpoint uses it), so a table with many
//! similar endpoints holds each dispatch sequence once.
//!
//! Per-endpoint chains follow upstream's mark protocol: a policy chain that allows sets the
//! Accept bit and returns; Pass sets the Pass bit and returns (skipping the rest of the tier);
//! the endpoint chain returns when Accept is set and drops at the end of a tier whose default
//! action is Deny, or when no profile accepted.

use std::collections::{BTreeMap, BTreeSet};

use felix_calc::msg::{IpSetType, PolicyId, Rule, TierInfo};

use crate::names::{self, comment};
use crate::rules::{self, Family, MARK_ACCEPT, MARK_ALL, MARK_PASS, RuleCtx, RuleError};
use crate::ruleset::{ChainDef, MapDef, Ruleset, SetDef};
use crate::state::DesiredState;

/// What happens to workload → host traffic after the workload's egress policy allowed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointToHostAction {
    /// Felix's default.
    #[default]
    Drop,
    /// Leave the decision to other tables.
    Return,
    /// Upstream manifests' choice.
    Accept,
}

/// A failsafe `proto:port`, optionally restricted to a peer CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoPort {
    /// `tcp` or `udp` (or `sctp`).
    pub protocol: String,
    pub port: u16,
    /// Peer net (source for inbound, destination for outbound).
    pub net: Option<String>,
}

impl ProtoPort {
    pub fn new(protocol: &str, port: u16) -> Self {
        ProtoPort {
            protocol: protocol.to_string(),
            port,
            net: None,
        }
    }
}

/// Renderer configuration (the FelixConfiguration fields that shape the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our table's name (family is always `inet`).
    pub table: String,
    /// Workload interface prefixes (`interfacePrefix`, default `cali`).
    pub workload_prefixes: Vec<String>,
    pub endpoint_to_host_action: EndpointToHostAction,
    pub failsafe_inbound: Vec<ProtoPort>,
    pub failsafe_outbound: Vec<ProtoPort>,
    /// Drop VXLAN (UDP `vxlan_port`) and IPIP from workloads unless allowed.
    pub allow_vxlan_from_workloads: bool,
    pub allow_ipip_from_workloads: bool,
    pub vxlan_port: u16,
    pub disable_conntrack_invalid_check: bool,
    /// Prefix of Log rules.
    pub log_prefix: String,
    /// `ipv6Support`: with `false` (upstream's manifests set it for IPv4-only clusters) no
    /// IPv6 address sets and no IPv6 variants of rules are rendered, so IPv6 traffic on
    /// workload interfaces only meets family-independent rules and the default drop.
    pub ipv6: bool,
}

impl Config {
    /// The address families rendered.
    pub fn families(&self) -> &'static [Family] {
        if self.ipv6 {
            &Family::BOTH
        } else {
            &[Family::V4]
        }
    }

    /// The families IP sets are rendered for: IPv6 sets only once some set has an IPv6 member.
    /// Until then every IPv6 set would be empty, so they are left out and rules render as if
    /// they were empty (a match on one never matches, a negated one always does): half the
    /// sets and set-matching rules of an IPv4-only cluster, which is most of the first load.
    pub fn set_families(&self, state: &DesiredState) -> &'static [Family] {
        if self.ipv6 && state.has_ipv6_members() {
            &Family::BOTH
        } else {
            &[Family::V4]
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let fs = |list: &[(&str, u16)]| list.iter().map(|(p, n)| ProtoPort::new(p, *n)).collect();
        Config {
            table: "calico".to_string(),
            workload_prefixes: vec!["cali".to_string()],
            endpoint_to_host_action: EndpointToHostAction::Drop,
            failsafe_inbound: fs(&[
                ("tcp", 22),
                ("udp", 68),
                ("tcp", 179),
                ("tcp", 2379),
                ("tcp", 2380),
                ("tcp", 5473),
                ("tcp", 6443),
                ("tcp", 6666),
                ("tcp", 6667),
            ]),
            failsafe_outbound: fs(&[
                ("udp", 53),
                ("udp", 67),
                ("tcp", 179),
                ("tcp", 2379),
                ("tcp", 2380),
                ("tcp", 5473),
                ("tcp", 6443),
                ("tcp", 6666),
                ("tcp", 6667),
            ]),
            allow_vxlan_from_workloads: false,
            allow_ipip_from_workloads: false,
            vxlan_port: 4789,
            disable_conntrack_invalid_check: false,
            log_prefix: "calico-packet".to_string(),
            ipv6: true,
        }
    }
}

/// Errors rendering the table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("failsafe {protocol}:{port}: {problem}")]
    Failsafe {
        protocol: String,
        port: u16,
        problem: &'static str,
    },
}

/// Names of the verdict maps.
pub mod maps {
    pub const FROM_WL: &str = "from-wl";
    pub const TO_WL: &str = "to-wl";
    pub const WL_ANTISPOOF: &str = "wl-antispoof";
    pub const FROM_HEP: &str = "from-hep";
    pub const TO_HEP: &str = "to-hep";
    pub const FROM_HEP_FWD: &str = "from-hep-fwd";
    pub const TO_HEP_FWD: &str = "to-hep-fwd";
    pub const RAW_FROM_HEP: &str = "raw-from-hep";
    pub const RAW_TO_HEP: &str = "raw-to-hep";
    pub const MANGLE_FROM_HEP: &str = "mangle-from-hep";
}

/// Which kind of endpoint chain is being built (decides tail behaviour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Tracked filter chain: end-of-tier drop, profiles, final drop.
    Normal,
    /// applyOnForward chain: end-of-tier drop; allowed by default without tiers.
    Forward,
    /// doNotTrack: no end-of-tier drop; Allow = notrack + accept.
    Untracked,
    /// preDNAT: no end-of-tier drop; Allow = accept.
    PreDnat,
}

const IPV6_HOST_ICMP: &str =
    "meta l4proto ipv6-icmp icmpv6 type { 130, 131, 132, 133, 135, 136 } accept";

fn mark_clear(bits: u32) -> String {
    format!("meta mark set meta mark & {:#010x}", !bits)
}

fn mark_is_set(bit: u32) -> String {
    format!("meta mark & {bit:#x} == {bit:#x}")
}

fn mark_is_clear(bit: u32) -> String {
    format!("meta mark & {bit:#x} == 0")
}

fn chain(base: Option<&str>, rules: Vec<String>) -> ChainDef {
    ChainDef {
        base: base.map(str::to_string),
        rules,
    }
}

/// Linux interface names are 1..=15 bytes without `/`, whitespace or quotes; nft's `ifname`
/// key holds 16 bytes. An invalid name would make nft reject the whole table.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '"' | '\\' | '*'))
}

fn vmap_decl() -> String {
    "type ifname : verdict;".to_string()
}

/// Render the whole table.
pub fn render(state: &DesiredState, cfg: &Config) -> Result<Ruleset, RenderError> {
    let mut r = Ruleset {
        family: "inet".to_string(),
        table: cfg.table.clone(),
        ..Default::default()
    };
    for name in [
        maps::FROM_WL,
        maps::TO_WL,
        maps::WL_ANTISPOOF,
        maps::FROM_HEP,
        maps::TO_HEP,
        maps::FROM_HEP_FWD,
        maps::TO_HEP_FWD,
        maps::RAW_FROM_HEP,
        maps::RAW_TO_HEP,
        maps::MANGLE_FROM_HEP,
    ] {
        r.maps.insert(
            name.to_string(),
            MapDef {
                decl: vmap_decl(),
                elements: BTreeMap::new(),
            },
        );
    }
    render_sets(state, cfg, &mut r)?;
    render_policies(state, cfg, &mut r)?;
    render_base_chains(cfg, &mut r)?;
    render_workloads(state, cfg, &mut r);
    render_host_endpoints(state, &mut r);
    render_nat_outgoing(state, &mut r);
    Ok(r)
}

/// Names of the natOutgoing sets (per family, suffix `4` / `6`).
pub mod nat_sets {
    pub const ALL_POOLS: &str = "all-ipam-pools";
    pub const MASQ_POOLS: &str = "masq-ipam-pools";
}

/// natOutgoing (upstream's `cali-nat-outgoing`): traffic from a natOutgoing pool to a
/// destination outside every enabled pool is masqueraded, in a `nat-POSTROUTING` chain at
/// srcnat + 10 (after kube-proxy's). Rendered only when IP pools are known, so a table
/// without pools is unchanged.
fn render_nat_outgoing(state: &DesiredState, r: &mut Ruleset) {
    if state.ip_pools.is_empty() {
        return;
    }
    let enabled = || state.ip_pools.values().filter(|p| !p.disabled);
    let mut rules_out = Vec::new();
    for fam in Family::BOTH {
        let in_fam = |n: &ipnet::IpNet| {
            matches!(
                (fam, n),
                (Family::V4, ipnet::IpNet::V4(_)) | (Family::V6, ipnet::IpNet::V6(_))
            )
        };
        let all = rules::coalesce(enabled().map(|p| p.cidr.trunc()).filter(in_fam));
        let masq = rules::coalesce(
            enabled()
                .filter(|p| p.nat_outgoing)
                .map(|p| p.cidr.trunc())
                .filter(in_fam),
        );
        let d = fam.digit();
        let decl = format!("type {}; flags interval;", fam.addr_type());
        let all_name = format!("{}{d}", nat_sets::ALL_POOLS);
        let masq_name = format!("{}{d}", nat_sets::MASQ_POOLS);
        add_set(
            r,
            all_name.clone(),
            decl.clone(),
            all.iter().map(rules::net_text).collect(),
        );
        add_set(
            r,
            masq_name.clone(),
            decl,
            masq.iter().map(rules::net_text).collect(),
        );
        let kw = if fam == Family::V4 { "ip" } else { "ip6" };
        rules_out.push(format!(
            "{kw} saddr @{masq_name} {kw} daddr != @{all_name} masquerade {}",
            comment("natOutgoing")
        ));
    }
    r.chains.insert(
        "nat-POSTROUTING".into(),
        chain(
            Some("type nat hook postrouting priority srcnat + 10; policy accept;"),
            rules_out,
        ),
    );
}

fn add_set(r: &mut Ruleset, name: String, decl: String, elements: BTreeSet<String>) {
    r.sets.insert(name, SetDef { decl, elements });
}

fn render_sets(state: &DesiredState, cfg: &Config, r: &mut Ruleset) -> Result<(), RenderError> {
    let families = cfg.set_families(state);
    for (id, set) in &state.ip_sets {
        let np = set.set_type == IpSetType::IpAndPort;
        for &fam in families {
            let elements = rules::set_elements(id, np, &set.members, fam)?;
            let (name, decl) = set_decl(id, np, fam, set.has_prefixes(fam));
            add_set(r, name, decl, elements);
        }
    }
    // Sets referenced by rules but not (yet) sent: declared empty so the table loads;
    // an empty set matches nothing, which is what an unknown selector selects.
    for (id, np) in referenced_sets(state) {
        declare_referenced(r, state, families, &id, np);
    }
    Ok(())
}

fn declare_referenced(
    r: &mut Ruleset,
    state: &DesiredState,
    families: &[Family],
    id: &str,
    np: bool,
) {
    for &fam in families {
        let (name, decl) = set_decl(id, np, fam, state.has_prefixes(id, fam));
        if !r.sets.contains_key(&name) {
            tracing::debug!(set = %id, "ip set referenced before it was sent; declared empty");
            add_set(r, name, decl, BTreeSet::new());
        }
    }
}

/// IP set ids (and whether as named-port sets) referenced by the rules of `rules`.
pub(crate) fn rule_set_refs<'a>(
    rules: impl IntoIterator<Item = &'a Rule>,
    out: &mut BTreeSet<(String, bool)>,
) {
    for rule in rules {
        for id in rule
            .src_ip_set_ids
            .iter()
            .chain(&rule.dst_ip_set_ids)
            .chain(&rule.not_src_ip_set_ids)
            .chain(&rule.not_dst_ip_set_ids)
        {
            out.insert((id.clone(), false));
        }
        for id in rule
            .src_named_port_ip_set_ids
            .iter()
            .chain(&rule.dst_named_port_ip_set_ids)
            .chain(&rule.not_src_named_port_ip_set_ids)
            .chain(&rule.not_dst_named_port_ip_set_ids)
        {
            out.insert((id.clone(), true));
        }
    }
}

fn referenced_sets(state: &DesiredState) -> BTreeSet<(String, bool)> {
    let mut referenced = BTreeSet::new();
    let rules = state
        .policies
        .values()
        .flat_map(|p| p.inbound_rules.iter().chain(&p.outbound_rules))
        .chain(
            state
                .profiles
                .values()
                .flat_map(|p| p.inbound_rules.iter().chain(&p.outbound_rules)),
        );
    rule_set_refs(rules, &mut referenced);
    referenced
}

/// Every set name IP set `id` can render to (both families; addresses, prefixes, named ports).
pub(crate) fn set_names(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (np, prefixes) in [(false, false), (false, true), (true, false)] {
        for fam in Family::BOTH {
            out.push(set_decl(id, np, fam, prefixes).0);
        }
    }
    out
}

/// The sets IP set `id` renders to, given whether rules reference it as a plain and as a
/// named-port set, into `r` (the same result as the full rendering for these names).
pub(crate) fn render_set(
    state: &DesiredState,
    cfg: &Config,
    id: &str,
    referenced: (bool, bool),
    r: &mut Ruleset,
) -> Result<(), RenderError> {
    let families = cfg.set_families(state);
    if let Some(set) = state.ip_sets.get(id) {
        let np = set.set_type == IpSetType::IpAndPort;
        for &fam in families {
            let elements = rules::set_elements(id, np, &set.members, fam)?;
            let (name, decl) = set_decl(id, np, fam, set.has_prefixes(fam));
            add_set(r, name, decl, elements);
        }
    }
    if referenced.0 {
        declare_referenced(r, state, families, id, false);
    }
    if referenced.1 {
        declare_referenced(r, state, families, id, true);
    }
    Ok(())
}

/// Name and declaration of one family's set of IP set `id`: named-port sets are hash sets of
/// concatenations; address sets are hash sets of addresses unless the IP set has prefixes in
/// this family, which need an interval set (loading 20,000 addresses into interval sets took a
/// fifth of a cold start's `nft -f`: each address is two kernel elements, checked for overlap).
fn set_decl(id: &str, named_port: bool, fam: Family, prefixes: bool) -> (String, String) {
    if named_port {
        (
            names::named_port_set(id, fam),
            format!("type {} . inet_proto . inet_service;", fam.addr_type()),
        )
    } else if prefixes {
        (
            names::prefix_set(id, fam),
            format!("type {}; flags interval;", fam.addr_type()),
        )
    } else {
        (
            names::selector_set(id, fam),
            format!("type {};", fam.addr_type()),
        )
    }
}

fn rule_chain(
    rules_in: &[Rule],
    owner: &str,
    cfg: &Config,
    state: &DesiredState,
) -> Result<Vec<String>, RuleError> {
    let ctx = RuleCtx {
        owner,
        log_prefix: &cfg.log_prefix,
        v6_sets: cfg.set_families(state).contains(&Family::V6),
        prefix_sets: &|id, fam| state.has_prefixes(id, fam),
    };
    let mut out = Vec::new();
    for (i, rule) in rules_in.iter().enumerate() {
        let v4 = rules::render_rule(&ctx, i, rule, Family::V4)?;
        let v6 = if cfg.ipv6 {
            rules::render_rule(&ctx, i, rule, Family::V6)?
        } else {
            Vec::new()
        };
        // A rule with no family-specific match renders identically for both families and
        // is emitted once (the inet table sees both).
        let same = v4 == v6;
        out.extend(v4);
        if !same {
            out.extend(v6);
        }
    }
    Ok(out)
}

fn render_policies(state: &DesiredState, cfg: &Config, r: &mut Ruleset) -> Result<(), RenderError> {
    for id in state.policies.keys() {
        render_policy(state, cfg, id, r)?;
    }
    for name in state.profiles.keys() {
        render_profile(state, cfg, name, r)?;
    }
    Ok(())
}

/// Policy `id`'s two chains into `r` (nothing when the policy is not active).
pub(crate) fn render_policy(
    state: &DesiredState,
    cfg: &Config,
    id: &PolicyId,
    r: &mut Ruleset,
) -> Result<(), RenderError> {
    if let Some(p) = state.policies.get(id) {
        let owner = format!("policy {}", names::policy_id(id));
        r.chains.insert(
            names::policy_chain(id, true),
            chain(None, rule_chain(&p.inbound_rules, &owner, cfg, state)?),
        );
        r.chains.insert(
            names::policy_chain(id, false),
            chain(None, rule_chain(&p.outbound_rules, &owner, cfg, state)?),
        );
    }
    Ok(())
}

/// Profile `name`'s two chains into `r` (nothing when the profile is not active).
pub(crate) fn render_profile(
    state: &DesiredState,
    cfg: &Config,
    name: &str,
    r: &mut Ruleset,
) -> Result<(), RenderError> {
    if let Some(p) = state.profiles.get(name) {
        let owner = format!("profile {name}");
        r.chains.insert(
            names::profile_chain(name, true),
            chain(None, rule_chain(&p.inbound_rules, &owner, cfg, state)?),
        );
        r.chains.insert(
            names::profile_chain(name, false),
            chain(None, rule_chain(&p.outbound_rules, &owner, cfg, state)?),
        );
    }
    Ok(())
}

fn failsafe_rules(
    own: &[ProtoPort],
    dport_dir: &str,
    reverse: Option<&[ProtoPort]>,
) -> Result<Vec<String>, RenderError> {
    // own ports as destination ports (peer net as saddr for inbound, daddr for outbound);
    // in raw chains also the other direction's ports as source ports (return traffic).
    let mut out = Vec::new();
    let mut group = |list: &[ProtoPort], port_kw: &str, net_dir: &str| -> Result<(), RenderError> {
        let mut plain: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for pp in list {
            let (_, pname) = rules::protocol(&felix_calc::msg::Protocol::Name(pp.protocol.clone()))
                .filter(|(n, _)| matches!(n, 6 | 17 | 132))
                .ok_or_else(|| RenderError::Failsafe {
                    protocol: pp.protocol.clone(),
                    port: pp.port,
                    problem: "protocol must be tcp, udp or sctp",
                })?;
            match &pp.net {
                None => {
                    plain.entry(pname).or_default().insert(pp.port);
                }
                Some(net) => {
                    let (n, fam) = rules::parse_net(net).ok_or(RenderError::Failsafe {
                        protocol: pp.protocol.clone(),
                        port: pp.port,
                        problem: "invalid net",
                    })?;
                    let kw = if fam == Family::V4 { "ip" } else { "ip6" };
                    out.push(format!(
                        "{kw} {net_dir} {} meta l4proto {pname} th {port_kw} {} accept",
                        rules::net_text(&n),
                        pp.port
                    ));
                }
            }
        }
        for (pname, ports) in plain {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            out.push(format!(
                "meta l4proto {pname} th {port_kw} {{ {} }} accept",
                list.join(", ")
            ));
        }
        Ok(())
    };
    let net_dir = if dport_dir == "in" { "saddr" } else { "daddr" };
    group(own, "dport", net_dir)?;
    if let Some(rev) = reverse {
        let rev_dir = if dport_dir == "in" { "saddr" } else { "daddr" };
        group(rev, "sport", rev_dir)?;
    }
    Ok(out)
}

fn render_base_chains(cfg: &Config, r: &mut Ruleset) -> Result<(), RenderError> {
    let conntrack = || {
        let mut v = vec!["ct state established,related accept".to_string()];
        if !cfg.disable_conntrack_invalid_check {
            v.push("ct state invalid drop".to_string());
        }
        v
    };
    let wl_in: Vec<String> = cfg
        .workload_prefixes
        .iter()
        .map(|p| format!("iifname \"{p}*\""))
        .collect();
    let wl_out: Vec<String> = cfg
        .workload_prefixes
        .iter()
        .map(|p| format!("oifname \"{p}*\""))
        .collect();

    // raw
    let mut pre = vec![
        mark_clear(MARK_ALL),
        format!("iifname vmap @{}", maps::WL_ANTISPOOF),
    ];
    pre.extend(wl_in.iter().map(|m| format!("{m} return")));
    pre.push(format!("iifname vmap @{}", maps::RAW_FROM_HEP));
    r.chains.insert(
        "raw-PREROUTING".into(),
        chain(
            Some("type filter hook prerouting priority raw; policy accept;"),
            pre,
        ),
    );
    let mut rout = vec![mark_clear(MARK_ALL)];
    rout.extend(wl_out.iter().map(|m| format!("{m} return")));
    rout.push(format!("oifname vmap @{}", maps::RAW_TO_HEP));
    r.chains.insert(
        "raw-OUTPUT".into(),
        chain(
            Some("type filter hook output priority raw; policy accept;"),
            rout,
        ),
    );
    // mangle (preDNAT)
    let mut mangle = vec!["ct state established,related accept".to_string()];
    mangle.extend(wl_in.iter().map(|m| format!("{m} return")));
    mangle.push(format!("iifname vmap @{}", maps::MANGLE_FROM_HEP));
    r.chains.insert(
        "mangle-PREROUTING".into(),
        chain(
            Some("type filter hook prerouting priority mangle; policy accept;"),
            mangle,
        ),
    );

    // filter INPUT
    let mut input = conntrack();
    input.push(format!("{} accept", mark_is_set(MARK_ACCEPT)));
    input.extend(wl_in.iter().map(|m| format!("{m} goto wl-to-host")));
    input.push("jump from-hep-dispatch".to_string());
    r.chains.insert(
        "filter-INPUT".into(),
        chain(
            Some("type filter hook input priority filter; policy accept;"),
            input,
        ),
    );
    let to_host_tail = match cfg.endpoint_to_host_action {
        EndpointToHostAction::Drop => "drop",
        EndpointToHostAction::Return => "return",
        EndpointToHostAction::Accept => "accept",
    };
    r.chains.insert(
        "wl-to-host".into(),
        chain(
            None,
            vec![
                IPV6_HOST_ICMP.to_string(),
                "jump from-wl-dispatch".to_string(),
                format!("{to_host_tail} {}", comment("DefaultEndpointToHostAction")),
            ],
        ),
    );

    // filter FORWARD
    let mut fwd = conntrack();
    fwd.push(mark_clear(MARK_ALL & !MARK_ACCEPT));
    fwd.push(format!(
        "{} jump from-hep-fwd-dispatch",
        mark_is_clear(MARK_ACCEPT)
    ));
    fwd.extend(wl_in.iter().map(|m| format!("{m} jump from-wl-dispatch")));
    fwd.extend(wl_out.iter().map(|m| format!("{m} jump to-wl-dispatch")));
    fwd.push("jump to-hep-fwd-dispatch".to_string());
    r.chains.insert(
        "filter-FORWARD".into(),
        chain(
            Some("type filter hook forward priority filter; policy accept;"),
            fwd,
        ),
    );

    // filter OUTPUT
    let mut out = conntrack();
    out.push(format!("{} accept", mark_is_set(MARK_ACCEPT)));
    out.extend(wl_out.iter().map(|m| {
        format!(
            "{m} return {}",
            comment("host to local workload is not policed")
        )
    }));
    out.push("jump to-hep-dispatch".to_string());
    r.chains.insert(
        "filter-OUTPUT".into(),
        chain(
            Some("type filter hook output priority filter; policy accept;"),
            out,
        ),
    );

    // dispatch chains: the workload ones end in the fail-closed drop
    let unknown = format!("drop {}", comment("unknown interface"));
    let dispatch = |map: &str, dir: &str, catch_all: bool| {
        let mut v = vec![format!("{dir} vmap @{map}")];
        if catch_all {
            v.push(unknown.clone());
        }
        chain(None, v)
    };
    for (name, map, dir, catch_all) in [
        ("from-wl-dispatch", maps::FROM_WL, "iifname", true),
        ("to-wl-dispatch", maps::TO_WL, "oifname", true),
        ("from-hep-dispatch", maps::FROM_HEP, "iifname", false),
        ("to-hep-dispatch", maps::TO_HEP, "oifname", false),
        (
            "from-hep-fwd-dispatch",
            maps::FROM_HEP_FWD,
            "iifname",
            false,
        ),
        ("to-hep-fwd-dispatch", maps::TO_HEP_FWD, "oifname", false),
    ] {
        r.chains.insert(name.into(), dispatch(map, dir, catch_all));
    }

    // failsafes
    r.chains.insert(
        "failsafe-in".into(),
        chain(None, failsafe_rules(&cfg.failsafe_inbound, "in", None)?),
    );
    r.chains.insert(
        "failsafe-out".into(),
        chain(None, failsafe_rules(&cfg.failsafe_outbound, "out", None)?),
    );
    r.chains.insert(
        "raw-failsafe-in".into(),
        chain(
            None,
            failsafe_rules(&cfg.failsafe_inbound, "in", Some(&cfg.failsafe_outbound))?,
        ),
    );
    r.chains.insert(
        "raw-failsafe-out".into(),
        chain(
            None,
            failsafe_rules(&cfg.failsafe_outbound, "out", Some(&cfg.failsafe_inbound))?,
        ),
    );
    Ok(())
}

/// The policy part of an endpoint chain: tiers, then (Normal kind) profiles and final drop.
fn endpoint_policy_rules(
    state: &DesiredState,
    tiers: &[TierInfo],
    inbound: bool,
    profiles: &[String],
    kind: Kind,
    out: &mut Vec<String>,
) {
    let mut any_tier = false;
    for tier in tiers {
        let pols: &[PolicyId] = if inbound {
            &tier.ingress_policies
        } else {
            &tier.egress_policies
        };
        if pols.is_empty() {
            continue;
        }
        any_tier = true;
        out.push(format!(
            "{} {}",
            mark_clear(MARK_PASS),
            comment(&format!("start of tier {}", tier.name))
        ));
        for pid in pols {
            if state.policies.contains_key(pid) {
                out.push(format!(
                    "{} jump {}",
                    mark_is_clear(MARK_PASS),
                    names::policy_chain(pid, inbound)
                ));
            } else {
                // Fail closed on a policy the graph named but never sent.
                out.push(format!(
                    "{} drop {}",
                    mark_is_clear(MARK_PASS),
                    comment(&format!("unknown policy {}", names::policy_id(pid)))
                ));
                continue;
            }
            let accepted = mark_is_set(MARK_ACCEPT);
            out.push(match kind {
                Kind::Normal | Kind::Forward => format!("{accepted} return"),
                Kind::Untracked => format!("{accepted} notrack accept"),
                Kind::PreDnat => format!("{accepted} accept"),
            });
        }
        let end_drop = matches!(kind, Kind::Normal | Kind::Forward)
            && !tier.default_action.eq_ignore_ascii_case("pass");
        if end_drop {
            out.push(format!(
                "{} drop {}",
                mark_is_clear(MARK_PASS),
                comment(&format!("end of tier {}", tier.name))
            ));
        }
    }
    match kind {
        Kind::Normal => {
            for p in profiles {
                if state.profiles.contains_key(p) {
                    out.push(format!("jump {}", names::profile_chain(p, inbound)));
                    out.push(format!("{} return", mark_is_set(MARK_ACCEPT)));
                } else {
                    out.push(format!("drop {}", comment(&format!("unknown profile {p}"))));
                }
            }
            out.push(format!("drop {}", comment("no profile matched")));
        }
        Kind::Forward if !any_tier => {
            out.push(format!(
                "meta mark set meta mark | {MARK_ACCEPT:#x} return {}",
                comment("allow forwarded traffic by default")
            ));
        }
        _ => {}
    }
}

fn render_workloads(state: &DesiredState, cfg: &Config, r: &mut Ruleset) {
    // Endpoints with the same tiers and profiles share their dispatch chains: each distinct
    // combination is rendered (and hashed into its name) once, not once per endpoint (1,000
    // endpoints with 100 policies each were most of a full rendering).
    let mut memo = DispatchMemo::default();
    for ep in state.workloads.values() {
        render_workload(state, cfg, ep, r, Some(&mut memo));
    }
}

/// Shared dispatch chain names by (inbound, tiers, profiles), within one rendering.
pub(crate) type DispatchMemo<'a> =
    std::collections::HashMap<(bool, &'a [TierInfo], &'a [String]), String>;

/// The map key of an interface name.
pub(crate) fn ifname_key(iface: &str) -> String {
    format!("\"{}\"", iface.replace('"', ""))
}

/// One workload's anti-spoofing chain (`as-`), its shared dispatch chains and its map
/// elements, into `r` (whose workload maps must exist). Skipped (with a warning) when the
/// interface name is invalid.
pub(crate) fn render_workload<'a>(
    state: &DesiredState,
    cfg: &Config,
    ep: &'a felix_calc::msg::WorkloadEndpoint,
    r: &mut Ruleset,
    mut memo: Option<&mut DispatchMemo<'a>>,
) {
    {
        let iface = ep.name.as_str();
        if !valid_ifname(iface) {
            tracing::warn!(endpoint = %iface, "workload endpoint has no valid interface name; skipped");
            return;
        }
        let key = ifname_key(iface);
        let admin_down = !ep.state.is_empty() && ep.state != "active";
        // The workload maps go straight to the endpoint's shared dispatch chain, which starts
        // by clearing our mark bits (and, from the workload, dropping VXLAN/IPIP); there are
        // no per-endpoint to/from chains (with 1,000 endpoints those were 2,000 chains and
        // 6,000 rules of every cold start's `nft -f`). Admin-down endpoints map to drop.
        for (inbound, map) in [(true, maps::TO_WL), (false, maps::FROM_WL)] {
            let memo_key = (inbound, ep.tiers.as_slice(), ep.profile_ids.as_slice());
            let known = memo.as_deref().and_then(|m| m.get(&memo_key));
            let verdict = if admin_down {
                "drop".to_string()
            } else if let Some(shared) = known {
                format!("goto {shared}")
            } else {
                let mut dispatch = vec![mark_clear(MARK_ACCEPT | MARK_PASS)];
                if !inbound {
                    if !cfg.allow_vxlan_from_workloads {
                        dispatch.push(format!(
                            "meta l4proto udp udp dport {} drop {}",
                            cfg.vxlan_port,
                            comment("VXLAN from workload")
                        ));
                    }
                    if !cfg.allow_ipip_from_workloads {
                        dispatch.push(format!(
                            "meta l4proto 4 drop {}",
                            comment("IPIP from workload")
                        ));
                    }
                }
                endpoint_policy_rules(
                    state,
                    &ep.tiers,
                    inbound,
                    &ep.profile_ids,
                    Kind::Normal,
                    &mut dispatch,
                );
                let shared = names::shared_dispatch_chain(inbound, &dispatch);
                let verdict = format!("goto {shared}");
                if let Some(m) = memo.as_deref_mut() {
                    m.insert(memo_key, shared.clone());
                }
                r.chains
                    .entry(shared)
                    .or_insert_with(|| chain(None, dispatch));
                verdict
            };
            if let Some(m) = r.maps.get_mut(map) {
                m.elements.insert(key.clone(), verdict);
            }
        }
        // Anti-spoofing: the source must be one of the endpoint's own addresses or an
        // allowed spoofed prefix; IPv6 neighbour discovery from link-local/unspecified is let
        // through.
        let mut srcs: BTreeMap<Family, Vec<ipnet::IpNet>> = BTreeMap::new();
        for s in ep
            .ipv4_nets
            .iter()
            .chain(&ep.ipv6_nets)
            .chain(&ep.allow_spoofed_source_prefixes)
        {
            match rules::parse_net(s) {
                Some((n, f)) => srcs.entry(f).or_default().push(n),
                None => {
                    tracing::warn!(endpoint = %iface, net = %s, "ignoring invalid endpoint address")
                }
            }
        }
        let mut rules = Vec::new();
        for (fam, nets) in srcs {
            let kw = if fam == Family::V4 { "ip" } else { "ip6" };
            let list: Vec<String> = rules::coalesce(nets).iter().map(rules::net_text).collect();
            let set = if list.len() == 1 {
                list[0].clone()
            } else {
                format!("{{ {} }}", list.join(", "))
            };
            rules.push(format!("{kw} saddr {set} return"));
        }
        // Two plain rules rather than one `{ ::, fe80::/10 }`: every anonymous set is a set of
        // its own in the kernel, and with one per endpoint they made up a third of a cold
        // start's `nft -f` time (1,000 endpoints: 1.2 s of 2.9 s).
        rules.push("meta l4proto ipv6-icmp ip6 saddr :: return".to_string());
        rules.push("meta l4proto ipv6-icmp ip6 saddr fe80::/10 return".to_string());
        rules.push(format!("drop {}", comment("spoofed source")));
        let name = names::endpoint_chain("as-", iface);
        r.chains.insert(name.clone(), chain(None, rules));
        if let Some(m) = r.maps.get_mut(maps::WL_ANTISPOOF) {
            m.elements.insert(key, format!("goto {name}"));
        }
    }
}

fn render_host_endpoints(state: &DesiredState, r: &mut Ruleset) {
    for (id, ep) in &state.host_endpoints {
        let iface = ep.name.as_str();
        if !valid_ifname(iface) {
            tracing::warn!(host_endpoint = %id.endpoint_id, "host endpoint without a valid interface name (`*` is not supported); skipped");
            continue;
        }
        let key = format!("\"{}\"", iface.replace('"', ""));
        let mut add = |prefix: &str, map: &str, rules: Vec<String>| {
            let name = names::endpoint_chain(prefix, iface);
            r.chains.insert(name.clone(), chain(None, rules));
            if let Some(m) = r.maps.get_mut(map) {
                m.elements.insert(key.clone(), format!("goto {name}"));
            }
        };
        for (inbound, prefix, map, failsafe) in [
            (true, "fh-", maps::FROM_HEP, "failsafe-in"),
            (false, "th-", maps::TO_HEP, "failsafe-out"),
        ] {
            let mut rules = vec![
                format!("jump {failsafe}"),
                mark_clear(MARK_ACCEPT | MARK_PASS),
            ];
            endpoint_policy_rules(
                state,
                &ep.tiers,
                inbound,
                &ep.profile_ids,
                Kind::Normal,
                &mut rules,
            );
            add(prefix, map, rules);
        }
        for (inbound, prefix, map) in [
            (true, "fhfw-", maps::FROM_HEP_FWD),
            (false, "thfw-", maps::TO_HEP_FWD),
        ] {
            let mut rules = vec![mark_clear(MARK_ACCEPT | MARK_PASS)];
            endpoint_policy_rules(
                state,
                &ep.forward_tiers,
                inbound,
                &[],
                Kind::Forward,
                &mut rules,
            );
            add(prefix, map, rules);
        }
        if !ep.untracked_tiers.is_empty() {
            for (inbound, prefix, map, failsafe) in [
                (true, "raw-fh-", maps::RAW_FROM_HEP, "raw-failsafe-in"),
                (false, "raw-th-", maps::RAW_TO_HEP, "raw-failsafe-out"),
            ] {
                let mut rules = vec![format!("jump {failsafe}")];
                endpoint_policy_rules(
                    state,
                    &ep.untracked_tiers,
                    inbound,
                    &[],
                    Kind::Untracked,
                    &mut rules,
                );
                add(prefix, map, rules);
            }
        }
        if !ep.pre_dnat_tiers.is_empty() {
            let mut rules = vec!["jump failsafe-in".to_string()];
            endpoint_policy_rules(
                state,
                &ep.pre_dnat_tiers,
                true,
                &[],
                Kind::PreDnat,
                &mut rules,
            );
            add("mangle-fh-", maps::MANGLE_FROM_HEP, rules);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use felix_calc::msg::{
        ToDataplane, WorkloadEndpoint, WorkloadEndpointId, WorkloadEndpointUpdate,
    };

    fn with_wep(iface: &str) -> DesiredState {
        let mut s = DesiredState::new();
        s.apply(&ToDataplane::WorkloadEndpointUpdate(
            WorkloadEndpointUpdate {
                id: WorkloadEndpointId {
                    orchestrator_id: "k8s".into(),
                    workload_id: "ns/pod".into(),
                    endpoint_id: "eth0".into(),
                },
                endpoint: WorkloadEndpoint {
                    state: "active".into(),
                    name: iface.into(),
                    mac: String::new(),
                    profile_ids: vec![],
                    ipv4_nets: vec!["10.0.0.1/32".into()],
                    ipv6_nets: vec![],
                    tiers: vec![],
                    ipv4_nat: vec![],
                    ipv6_nat: vec![],
                    allow_spoofed_source_prefixes: vec![],
                },
            },
        ))
        .unwrap();
        s
    }

    #[test]
    fn invalid_interface_names_are_skipped_not_fatal() {
        let cfg = Config::default();
        let ok = render(&with_wep("cali0123456789a"), &cfg).unwrap();
        assert!(ok.chains.contains_key("as-cali0123456789a"));
        assert!(ok.maps[maps::FROM_WL].elements["\"cali0123456789a\""].starts_with("goto fp-"));
        for bad in ["cali0123456789ab", "cali\"x", "", "a b"] {
            let r = render(&with_wep(bad), &cfg).unwrap();
            assert!(r.maps[maps::FROM_WL].elements.is_empty(), "{bad:?}");
        }
    }

    fn dispatch_chains(r: &Ruleset) -> Vec<&String> {
        r.chains
            .keys()
            .filter(|n| n.starts_with("tp-") || n.starts_with("fp-"))
            .collect()
    }

    #[test]
    fn endpoints_with_the_same_policies_share_dispatch_chains() {
        let cfg = Config::default();
        let mut s = with_wep("cali1");
        let mut other = s.workloads.values().next().unwrap().clone();
        other.name = "cali2".into();
        let id = |w: &str| WorkloadEndpointId {
            orchestrator_id: "k8s".into(),
            workload_id: w.into(),
            endpoint_id: "eth0".into(),
        };
        s.workloads.insert(id("ns/b"), other.clone());
        let shared = render(&s, &cfg).unwrap();
        assert_eq!(dispatch_chains(&shared).len(), 2, "one per direction");
        let tp = dispatch_chains(&shared)
            .into_iter()
            .find(|n| n.starts_with("tp-"))
            .unwrap()
            .clone();
        for ep in ["\"cali1\"", "\"cali2\""] {
            assert_eq!(shared.maps[maps::TO_WL].elements[ep], format!("goto {tp}"));
        }
        // A different profile list is a different signature.
        other.profile_ids = vec!["kns.x".into()];
        s.workloads.insert(id("ns/b"), other);
        let split = render(&s, &cfg).unwrap();
        assert_eq!(dispatch_chains(&split).len(), 4);
        // Removing the last user deletes its shared chains.
        s.workloads.remove(&id("ns/b"));
        let back = render(&s, &cfg).unwrap();
        let diff = back.diff_script(&split).unwrap();
        assert_eq!(
            diff.matches("delete chain inet calico tp-").count(),
            1,
            "{diff}"
        );
        assert_eq!(
            diff.matches("delete chain inet calico fp-").count(),
            1,
            "{diff}"
        );
        assert!(
            !diff.contains(&format!("delete chain inet calico {tp}")),
            "{diff}"
        );
    }

    #[test]
    fn bad_failsafe_is_an_error_naming_it() {
        let cfg = Config {
            failsafe_inbound: vec![ProtoPort::new("icmp", 1)],
            ..Config::default()
        };
        let e = render(&DesiredState::new(), &cfg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failsafe icmp:1: protocol must be tcp, udp or sctp"
        );
    }
}

#[cfg(test)]
mod nat_outgoing_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::state::PoolNat;

    fn pool(cidr: &str, nat: bool, disabled: bool) -> PoolNat {
        PoolNat {
            cidr: cidr.parse().unwrap(),
            nat_outgoing: nat,
            disabled,
        }
    }

    #[test]
    fn no_pools_no_nat_chain() {
        let r = render(&DesiredState::new(), &Config::default()).unwrap();
        assert!(!r.chains.contains_key("nat-POSTROUTING"));
        assert!(!r.sets.contains_key("masq-ipam-pools4"));
    }

    #[test]
    fn nat_outgoing_golden() {
        let mut s = DesiredState::new();
        s.ip_pools
            .insert("a".into(), pool("10.65.0.0/16", true, false));
        s.ip_pools
            .insert("b".into(), pool("10.66.0.0/16", false, false));
        s.ip_pools
            .insert("c".into(), pool("10.67.0.0/16", true, true));
        s.ip_pools
            .insert("d".into(), pool("10.65.1.0/24", true, false));
        s.ip_pools
            .insert("e".into(), pool("fd00:10::/64", true, false));
        let r = render(&s, &Config::default()).unwrap();
        let def = r.definition();
        let lines: Vec<&str> = def
            .lines()
            .filter(|l| !l.contains("masquerade"))
            .filter(|l| {
                l.contains("ipam-pools")
                    || l.contains("nat-POSTROUTING")
                    || l.contains("hook postrouting")
            })
            .collect();
        let tag4 = crate::ruleset::rule_tag(
            "nat-POSTROUTING",
            &format!(
                "ip saddr @masq-ipam-pools4 ip daddr != @all-ipam-pools4 masquerade {}",
                comment("natOutgoing")
            ),
        );
        assert_eq!(
            lines,
            vec![
                "  set all-ipam-pools4 { type ipv4_addr; flags interval; elements = { 10.65.0.0/16, 10.66.0.0/16 }; }",
                "  set all-ipam-pools6 { type ipv6_addr; flags interval; elements = { fd00:10::/64 }; }",
                "  set masq-ipam-pools4 { type ipv4_addr; flags interval; elements = { 10.65.0.0/16 }; }",
                "  set masq-ipam-pools6 { type ipv6_addr; flags interval; elements = { fd00:10::/64 }; }",
                "  chain nat-POSTROUTING {",
                "    type nat hook postrouting priority srcnat + 10; policy accept;",
            ],
            "{def}"
        );
        assert!(def.contains(&format!(
            "    ip saddr @masq-ipam-pools4 ip daddr != @all-ipam-pools4 masquerade comment \"{tag4}"
        )), "{def}");
        assert!(
            def.contains("ip6 saddr @masq-ipam-pools6 ip6 daddr != @all-ipam-pools6 masquerade"),
            "{def}"
        );
    }

    #[test]
    fn pool_change_is_incremental() {
        let mut s = DesiredState::new();
        s.ip_pools
            .insert("a".into(), pool("10.65.0.0/16", true, false));
        let old = render(&s, &Config::default()).unwrap();
        s.ip_pools
            .insert("b".into(), pool("10.70.0.0/16", false, false));
        let new = render(&s, &Config::default()).unwrap();
        let diff = new.diff_script(&old).unwrap();
        assert_eq!(
            diff,
            "add element inet calico all-ipam-pools4 { 10.70.0.0/16 }\n"
        );
    }
}

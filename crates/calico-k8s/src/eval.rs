//! A small, pure reachability evaluator: given workload endpoints (labels, profiles, address,
//! named ports), profiles and Calico NetworkPolicies, decide whether a connection from one
//! endpoint to another on a protocol/port is allowed, following Calico's evaluation model
//! (reference §1.4 selector scoping, §1.8 evaluation order).
//!
//! Scope: workload endpoints only (no host endpoints, network sets or GlobalNetworkPolicies) and
//! the `default` tier only (default action Deny). Conntrack is not modelled: a connection is
//! allowed when the source's egress and the destination's ingress both allow its first packet.
//! Rules matching on source ports never match (a probe's source port is ephemeral).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use calico_model::Resource;
use calico_model::resources::endpoint::WorkloadEndpointPort;
use calico_model::resources::policy::{
    Action, DEFAULT_TIER, EntityRule, PolicyType, Port, Protocol, Rule,
};
use calico_model::resources::{NetworkPolicySpec, ProfileSpec};
use calico_model::selector::{self, Labels};
use ipnet::IpNet;

use crate::convert::{LABEL_NAMESPACE, NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX};

/// A workload endpoint as the evaluator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub namespace: String,
    /// The endpoint's own labels (as on the WorkloadEndpoint).
    pub labels: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub ip: IpAddr,
    pub ports: Vec<WorkloadEndpointPort>,
}

/// The Calico state the evaluator decides against.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub profiles: BTreeMap<String, ProfileSpec>,
    pub policies: Vec<Resource<NetworkPolicySpec>>,
}

/// What the evaluator cannot decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("policy {namespace}/{name}: tier {tier:?} is not supported (default tier only)")]
    UnsupportedTier {
        namespace: String,
        name: String,
        tier: String,
    },
    #[error("policy {namespace}/{name}: {field}: bad selector {selector:?}: {message}")]
    BadSelector {
        namespace: String,
        name: String,
        field: String,
        selector: String,
        message: String,
    },
}

/// One connection attempt: protocol name (`TCP`, `UDP`, `SCTP`, `ICMP`) and destination port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub protocol: Protocol,
    pub port: u16,
}

struct EffectiveLabels(BTreeMap<String, String>);

impl Labels for EffectiveLabels {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// Looks labels up under a prefix (`pcns.`): how a rule's namespaceSelector is evaluated.
struct Prefixed<'a> {
    labels: &'a EffectiveLabels,
    prefix: &'a str,
}

impl Labels for Prefixed<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.labels.get(&format!("{}{key}", self.prefix))
    }
}

impl PolicySet {
    /// Whether `src` may open a connection to `dst` with `probe`: the source's egress and the
    /// destination's ingress must both allow it.
    pub fn allows(&self, src: &Endpoint, dst: &Endpoint, probe: &Probe) -> Result<bool, EvalError> {
        let pkt = Packet { src, dst, probe };
        Ok(self.direction_allows(src, PolicyType::Egress, &pkt)?
            && self.direction_allows(dst, PolicyType::Ingress, &pkt)?)
    }

    /// Own labels (minus forged `pcns.`/`pcsa.` ones) over the profiles' labels in order.
    fn effective_labels(&self, ep: &Endpoint) -> EffectiveLabels {
        let mut out = BTreeMap::new();
        for p in &ep.profiles {
            if let Some(spec) = self.profiles.get(p) {
                for (k, v) in &spec.labels_to_apply {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        for (k, v) in &ep.labels {
            if k.starts_with(NAMESPACE_LABEL_PREFIX) || k.starts_with(SERVICE_ACCOUNT_LABEL_PREFIX)
            {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
        EffectiveLabels(out)
    }

    fn direction_allows(
        &self,
        ep: &Endpoint,
        dir: PolicyType,
        pkt: &Packet<'_>,
    ) -> Result<bool, EvalError> {
        let labels = self.effective_labels(ep);
        let mut applicable: Vec<&Resource<NetworkPolicySpec>> = Vec::new();
        for p in &self.policies {
            let tier = if p.spec.tier.is_empty() {
                DEFAULT_TIER
            } else {
                &p.spec.tier
            };
            if tier != DEFAULT_TIER {
                return Err(EvalError::UnsupportedTier {
                    namespace: p.metadata.namespace.clone(),
                    name: p.metadata.name.clone(),
                    tier: tier.to_string(),
                });
            }
            if !types_of(&p.spec).contains(&dir) {
                continue;
            }
            let sel = parse(p, "spec.selector", &p.spec.selector)?;
            if ep.namespace == p.metadata.namespace && sel.evaluate(&labels) {
                applicable.push(p);
            }
        }
        applicable.sort_by(|a, b| policy_order(a, b));

        if !applicable.is_empty() {
            for p in applicable {
                let rules = match dir {
                    PolicyType::Ingress => &p.spec.ingress,
                    PolicyType::Egress => &p.spec.egress,
                };
                for (i, r) in rules.iter().enumerate() {
                    let field = format!("spec.{}[{i}]", dir_name(dir));
                    if self.rule_matches(r, Some(p), &field, pkt)? {
                        match r.action {
                            Action::Allow => return Ok(true),
                            Action::Deny => return Ok(false),
                            // Pass leaves the tier: on to the profiles.
                            Action::Pass => return self.profiles_allow(ep, dir, pkt),
                            Action::Log => {}
                        }
                    }
                }
            }
            // End of the default tier: Deny.
            return Ok(false);
        }
        self.profiles_allow(ep, dir, pkt)
    }

    fn profiles_allow(
        &self,
        ep: &Endpoint,
        dir: PolicyType,
        pkt: &Packet<'_>,
    ) -> Result<bool, EvalError> {
        for name in &ep.profiles {
            // A missing profile is replaced by a deny-all one.
            let Some(spec) = self.profiles.get(name) else {
                return Ok(false);
            };
            let rules = match dir {
                PolicyType::Ingress => &spec.ingress,
                PolicyType::Egress => &spec.egress,
            };
            for r in rules {
                if self.rule_matches(r, None, "profile", pkt)? {
                    match r.action {
                        Action::Allow => return Ok(true),
                        Action::Deny => return Ok(false),
                        Action::Pass | Action::Log => {}
                    }
                }
            }
        }
        Ok(false)
    }

    fn rule_matches(
        &self,
        r: &Rule,
        policy: Option<&Resource<NetworkPolicySpec>>,
        field: &str,
        pkt: &Packet<'_>,
    ) -> Result<bool, EvalError> {
        if let Some(p) = &r.protocol
            && p.number() != pkt.probe.protocol.number()
        {
            return Ok(false);
        }
        if let Some(p) = &r.not_protocol
            && p.number() == pkt.probe.protocol.number()
        {
            return Ok(false);
        }
        if r.icmp.is_some() || r.not_icmp.is_some() || r.http.is_some() {
            // ICMP type/code and HTTP matches are not modelled: such a rule never matches.
            return Ok(false);
        }
        if !r.source.ports.is_empty() || !r.source.not_ports.is_empty() {
            return Ok(false);
        }
        let ns = policy.map(|p| p.metadata.namespace.as_str());
        Ok(
            self.entity_matches(&r.source, pkt.src, ns, policy, &format!("{field}.source"))?
                && self.entity_matches(
                    &r.destination,
                    pkt.dst,
                    ns,
                    policy,
                    &format!("{field}.destination"),
                )?
                && dest_ports_match(&r.destination, pkt),
        )
    }

    fn entity_matches(
        &self,
        e: &EntityRule,
        ep: &Endpoint,
        policy_ns: Option<&str>,
        policy: Option<&Resource<NetworkPolicySpec>>,
        field: &str,
    ) -> Result<bool, EvalError> {
        if !e.nets.is_empty() && !e.nets.iter().any(|n| net_contains(n, ep.ip)) {
            return Ok(false);
        }
        if e.not_nets.iter().any(|n| net_contains(n, ep.ip)) {
            return Ok(false);
        }
        let labels = self.effective_labels(ep);
        let parse_field = |sub: &str, s: &str| -> Result<selector::Selector, EvalError> {
            match policy {
                Some(p) => parse(p, &format!("{field}.{sub}"), s),
                None => selector::parse(s).map_err(|err| EvalError::BadSelector {
                    namespace: String::new(),
                    name: "profile".to_string(),
                    field: format!("{field}.{sub}"),
                    selector: s.to_string(),
                    message: err.to_string(),
                }),
            }
        };
        // §1.4: a namespaceSelector is evaluated on the `pcns.` labels; without one a namespaced
        // policy's selectors are confined to its own namespace.
        let scoped = !e.selector.is_empty()
            || !e.not_selector.is_empty()
            || !e.namespace_selector.is_empty();
        if scoped {
            if !e.namespace_selector.is_empty() {
                let nsel = parse_field("namespaceSelector", &e.namespace_selector)?;
                let view = Prefixed {
                    labels: &labels,
                    prefix: NAMESPACE_LABEL_PREFIX,
                };
                // `all()` means "any namespaced endpoint": every workload endpoint is one.
                if labels.get(LABEL_NAMESPACE).is_none() || !nsel.evaluate(&view) {
                    return Ok(false);
                }
            } else if let Some(ns) = policy_ns
                && ep.namespace != ns
            {
                return Ok(false);
            }
            if !e.selector.is_empty() && !parse_field("selector", &e.selector)?.evaluate(&labels) {
                return Ok(false);
            }
        }
        // notSelector is not namespace-scoped.
        if !e.not_selector.is_empty()
            && parse_field("notSelector", &e.not_selector)?.evaluate(&labels)
        {
            return Ok(false);
        }
        Ok(true)
    }
}

struct Packet<'a> {
    src: &'a Endpoint,
    dst: &'a Endpoint,
    probe: &'a Probe,
}

fn dest_ports_match(e: &EntityRule, pkt: &Packet<'_>) -> bool {
    let hit = |p: &Port| match p {
        Port::Range { min, max } => (*min..=*max).contains(&pkt.probe.port),
        // A named port matches the destination's own port of that name and protocol.
        Port::Named(name) => pkt.dst.ports.iter().any(|wp| {
            wp.name == *name
                && wp.port == pkt.probe.port
                && wp.protocol.number() == pkt.probe.protocol.number()
        }),
    };
    (e.ports.is_empty() || e.ports.iter().any(hit)) && !e.not_ports.iter().any(hit)
}

fn net_contains(net: &str, ip: IpAddr) -> bool {
    if let Ok(n) = IpNet::from_str(net) {
        return n.contains(&ip);
    }
    IpAddr::from_str(net).is_ok_and(|a| a == ip)
}

/// Types as Felix sees a stored policy: empty means both directions (back-compat).
fn types_of(spec: &NetworkPolicySpec) -> Vec<PolicyType> {
    if spec.types.is_empty() {
        vec![PolicyType::Ingress, PolicyType::Egress]
    } else {
        spec.types.clone()
    }
}

fn dir_name(d: PolicyType) -> &'static str {
    match d {
        PolicyType::Ingress => "ingress",
        PolicyType::Egress => "egress",
    }
}

/// Order ascending (none last), then `name/namespace/kind`.
fn policy_order(a: &Resource<NetworkPolicySpec>, b: &Resource<NetworkPolicySpec>) -> Ordering {
    let key = |p: &Resource<NetworkPolicySpec>| {
        format!("{}/{}/NetworkPolicy", p.metadata.name, p.metadata.namespace)
    };
    match (a.spec.order, b.spec.order) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| key(a).cmp(&key(b)))
}

fn parse(
    p: &Resource<NetworkPolicySpec>,
    field: &str,
    s: &str,
) -> Result<selector::Selector, EvalError> {
    selector::parse(s).map_err(|e| EvalError::BadSelector {
        namespace: p.metadata.namespace.clone(),
        name: p.metadata.name.clone(),
        field: field.to_string(),
        selector: s.to_string(),
        message: e.to_string(),
    })
}

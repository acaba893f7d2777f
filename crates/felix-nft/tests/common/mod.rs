//! Builders for calculation-graph messages and the scenarios the golden and lab tests share.
#![allow(dead_code)]

use felix_calc::msg::*;
use felix_nft::DesiredState;

pub fn pid(tier: &str, name: &str, ns: &str) -> PolicyId {
    PolicyId {
        tier: tier.into(),
        name: name.into(),
        namespace: ns.into(),
        kind: if ns.is_empty() {
            "GlobalNetworkPolicy".into()
        } else {
            "NetworkPolicy".into()
        },
    }
}

pub fn policy(id: &PolicyId, inbound: Vec<Rule>, outbound: Vec<Rule>) -> ToDataplane {
    ToDataplane::ActivePolicyUpdate(ActivePolicyUpdate {
        id: id.clone(),
        policy: Policy {
            namespace: id.namespace.clone(),
            tier: id.tier.clone(),
            inbound_rules: inbound,
            outbound_rules: outbound,
            untracked: false,
            pre_dnat: false,
            original_selector: "all()".into(),
            perf_hints: vec![],
        },
    })
}

pub fn profile(name: &str, inbound: Vec<Rule>, outbound: Vec<Rule>) -> ToDataplane {
    ToDataplane::ActiveProfileUpdate(ActiveProfileUpdate {
        id: ProfileId { name: name.into() },
        profile: Profile {
            inbound_rules: inbound,
            outbound_rules: outbound,
        },
    })
}

pub fn ipset(id: &str, t: IpSetType, members: &[&str]) -> ToDataplane {
    ToDataplane::IpSetUpdate(IpSetUpdate {
        id: id.into(),
        set_type: t,
        members: members.iter().map(|s| s.to_string()).collect(),
    })
}

pub fn rule(action: &str) -> Rule {
    Rule {
        action: action.into(),
        ..Default::default()
    }
}

pub fn tcp(ports: &[(u16, u16)]) -> Rule {
    Rule {
        protocol: Some(Protocol::Name("tcp".into())),
        dst_ports: ports
            .iter()
            .map(|(a, b)| PortRange {
                first: *a,
                last: *b,
            })
            .collect(),
        ..Default::default()
    }
}

pub fn tier(
    name: &str,
    default_action: &str,
    ingress: &[PolicyId],
    egress: &[PolicyId],
) -> TierInfo {
    TierInfo {
        name: name.into(),
        default_action: default_action.into(),
        ingress_policies: ingress.to_vec(),
        egress_policies: egress.to_vec(),
    }
}

pub fn wep_id(iface: &str) -> WorkloadEndpointId {
    WorkloadEndpointId {
        orchestrator_id: "k8s".into(),
        workload_id: format!("default/{iface}"),
        endpoint_id: "eth0".into(),
    }
}

pub fn wep(iface: &str, v4: &[&str], profiles: &[&str], tiers: Vec<TierInfo>) -> ToDataplane {
    ToDataplane::WorkloadEndpointUpdate(WorkloadEndpointUpdate {
        id: wep_id(iface),
        endpoint: WorkloadEndpoint {
            state: "active".into(),
            name: iface.into(),
            mac: String::new(),
            profile_ids: profiles.iter().map(|s| s.to_string()).collect(),
            ipv4_nets: v4.iter().map(|s| s.to_string()).collect(),
            ipv6_nets: vec![],
            tiers,
            ipv4_nat: vec![],
            ipv6_nat: vec![],
            allow_spoofed_source_prefixes: vec![],
        },
    })
}

pub fn state(msgs: &[ToDataplane]) -> DesiredState {
    let mut s = DesiredState::new();
    for m in msgs {
        s.apply(m).expect("apply message");
    }
    s
}

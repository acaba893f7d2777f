//! Differential property test: random Kubernetes NetworkPolicies over a small fixed cluster,
//! decided once by a direct implementation of the Kubernetes NetworkPolicy semantics and once by
//! translating to Calico (this crate) and running the Calico evaluator. Both must agree on every
//! pair and probe, and every translated policy must pass calico-model validation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_k8s::convert;
use calico_k8s::eval::{Endpoint, PolicySet, Probe};
use calico_k8s::types::{
    IntOrString, LabelSelector, NetworkPolicy, NetworkPolicyPort, Peer, PolicyType,
    SelectorOperator,
};
use calico_k8s::{K8sResource, types};
use calico_model::resources::policy::Protocol;
use ipnet::IpNet;
use proptest::prelude::*;
use serde_json::{Value, json};

struct Pod {
    ns: &'static str,
    labels: BTreeMap<String, String>,
    ip: IpAddr,
}

fn namespaces() -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for (ns, env) in [("x", "prod"), ("y", "dev")] {
        let mut l = BTreeMap::new();
        l.insert("kubernetes.io/metadata.name".to_string(), ns.to_string());
        l.insert("env".to_string(), env.to_string());
        m.insert(ns, l);
    }
    m
}

fn pods(roles: &[&'static str; 4]) -> Vec<Pod> {
    [("x", "a"), ("x", "b"), ("y", "a"), ("y", "b")]
        .iter()
        .zip(roles)
        .enumerate()
        .map(|(i, ((ns, p), role))| {
            let mut labels = BTreeMap::new();
            labels.insert("pod".to_string(), (*p).to_string());
            if !role.is_empty() {
                labels.insert("role".to_string(), (*role).to_string());
            }
            Pod {
                ns,
                labels,
                ip: format!("10.65.0.{}", i + 1).parse().expect("ip"),
            }
        })
        .collect()
}

/// Every pod serves these (name, port, protocol).
const SERVED: [(&str, u16, &str); 2] = [("http", 80, "TCP"), ("dns", 53, "UDP")];

fn selector_matches(s: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && s.match_expressions.iter().all(|e| {
            let v = labels.get(&e.key);
            match e.operator {
                SelectorOperator::In => v.is_some_and(|v| e.values.contains(v)),
                SelectorOperator::NotIn => v.is_none_or(|v| !e.values.contains(v)),
                SelectorOperator::Exists => v.is_some(),
                SelectorOperator::DoesNotExist => v.is_none(),
            }
        })
}

/// The Kubernetes semantics of one direction for `me`, talking to `peer`.
fn k8s_direction_allows(
    policies: &[NetworkPolicy],
    me: &Pod,
    peer: &Pod,
    dir: PolicyType,
    proto: &str,
    port: u16,
) -> bool {
    let nss = namespaces();
    let mut isolated = false;
    for np in policies {
        if np.metadata.namespace != me.ns
            || !selector_matches(&np.spec.pod_selector, &me.labels)
            || !convert::default_policy_types(np).contains(&dir)
        {
            continue;
        }
        isolated = true;
        let rules: Vec<(&Vec<Peer>, &Vec<NetworkPolicyPort>)> = match dir {
            PolicyType::Ingress => np
                .spec
                .ingress
                .iter()
                .map(|r| (&r.from, &r.ports))
                .collect(),
            PolicyType::Egress => np.spec.egress.iter().map(|r| (&r.to, &r.ports)).collect(),
        };
        for (peers, ports) in rules {
            let peer_ok = peers.is_empty()
                || peers.iter().any(|p| {
                    if let Some(b) = &p.ip_block {
                        let net: IpNet = b.cidr.parse().expect("cidr");
                        return net.contains(&peer.ip)
                            && !b
                                .except
                                .iter()
                                .any(|x| x.parse::<IpNet>().expect("except").contains(&peer.ip));
                    }
                    let ns_ok = match &p.namespace_selector {
                        None => peer.ns == np.metadata.namespace,
                        Some(s) => selector_matches(s, &nss[peer.ns]),
                    };
                    let pod_ok = p
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| selector_matches(s, &peer.labels));
                    ns_ok && pod_ok
                });
            let port_ok = ports.is_empty()
                || ports.iter().any(|p| {
                    p.protocol.as_deref().unwrap_or("TCP") == proto
                        && match &p.port {
                            None => true,
                            Some(IntOrString::Int(n)) => {
                                let end = p.end_port.unwrap_or(*n);
                                (*n..=end).contains(&i32::from(port))
                            }
                            // Every pod serves the same named ports.
                            Some(IntOrString::String(name)) => SERVED
                                .iter()
                                .any(|(n, sp, spro)| n == name && *sp == port && *spro == proto),
                        }
                });
            if peer_ok && port_ok {
                return true;
            }
        }
    }
    !isolated
}

fn arb_selector() -> impl Strategy<Value = LabelSelector> {
    let ml = prop::option::of(prop_oneof![Just("a"), Just("b")]);
    let expr = prop_oneof![
        Just(("role", SelectorOperator::In, vec!["web"])),
        Just(("role", SelectorOperator::NotIn, vec!["db"])),
        Just(("role", SelectorOperator::Exists, vec![])),
        Just(("role", SelectorOperator::DoesNotExist, vec![])),
        Just(("pod", SelectorOperator::In, vec!["a", "b"])),
    ];
    (ml, prop::collection::vec(expr, 0..3)).prop_map(|(ml, exprs)| {
        let mut s = LabelSelector::default();
        if let Some(v) = ml {
            s.match_labels.insert("pod".into(), v.into());
        }
        for (k, op, vals) in exprs {
            s.match_expressions.push(types::LabelSelectorRequirement {
                key: k.into(),
                operator: op,
                values: vals.into_iter().map(String::from).collect(),
            });
        }
        s
    })
}

fn arb_ns_selector() -> impl Strategy<Value = LabelSelector> {
    prop_oneof![
        Just(BTreeMap::new()),
        Just(BTreeMap::from([("env".to_string(), "prod".to_string())])),
        Just(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "y".to_string()
        )])),
    ]
    .prop_map(|ml| LabelSelector {
        match_labels: ml,
        match_expressions: vec![],
    })
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        arb_selector().prop_map(|s| Peer {
            pod_selector: Some(s),
            ..Peer::default()
        }),
        arb_ns_selector().prop_map(|s| Peer {
            namespace_selector: Some(s),
            ..Peer::default()
        }),
        (arb_selector(), arb_ns_selector()).prop_map(|(p, n)| Peer {
            pod_selector: Some(p),
            namespace_selector: Some(n),
            ..Peer::default()
        }),
        (1u8..=4, any::<bool>()).prop_map(|(i, wide)| Peer {
            ip_block: Some(if wide {
                types::IpBlock {
                    cidr: "10.65.0.0/24".into(),
                    except: vec![format!("10.65.0.{i}/32")],
                }
            } else {
                types::IpBlock {
                    cidr: format!("10.65.0.{i}/32"),
                    except: vec![],
                }
            }),
            ..Peer::default()
        }),
    ]
}

fn arb_port() -> impl Strategy<Value = NetworkPolicyPort> {
    let proto = prop_oneof![
        Just(None),
        Just(Some("TCP")),
        Just(Some("UDP")),
        Just(Some("SCTP"))
    ];
    let port = prop_oneof![
        Just((None, None)),
        Just((Some(IntOrString::Int(80)), None)),
        Just((Some(IntOrString::Int(53)), None)),
        Just((Some(IntOrString::Int(50)), Some(81))),
        Just((Some(IntOrString::String("http".into())), None)),
        Just((Some(IntOrString::String("dns".into())), None)),
    ];
    (proto, port).prop_map(|(pr, (port, end_port))| NetworkPolicyPort {
        protocol: pr.map(String::from),
        port,
        end_port,
    })
}

fn arb_policy(i: usize) -> impl Strategy<Value = NetworkPolicy> {
    let rule = || {
        (
            prop::collection::vec(arb_peer(), 0..3),
            prop::collection::vec(arb_port(), 0..3),
        )
    };
    (
        prop_oneof![Just("x"), Just("y")],
        arb_selector(),
        prop_oneof![
            Just(vec![]),
            Just(vec![PolicyType::Ingress]),
            Just(vec![PolicyType::Egress]),
            Just(vec![PolicyType::Ingress, PolicyType::Egress]),
        ],
        prop::collection::vec(rule(), 0..3),
        prop::collection::vec(rule(), 0..3),
    )
        .prop_map(move |(ns, sel, types_, ing, eg)| {
            let mut np = NetworkPolicy::default();
            np.metadata.name = format!("p{i}");
            np.metadata.namespace = ns.into();
            np.spec.pod_selector = sel;
            np.spec.policy_types = types_;
            np.spec.ingress = ing
                .into_iter()
                .map(|(from, ports)| types::IngressRule { from, ports })
                .collect();
            np.spec.egress = eg
                .into_iter()
                .map(|(to, ports)| types::EgressRule { to, ports })
                .collect();
            np
        })
}

fn calico_state(policies: &[NetworkPolicy], pods: &[Pod]) -> (PolicySet, Vec<Endpoint>) {
    let mut set = PolicySet::default();
    for (ns, labels) in namespaces() {
        let v = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}});
        let K8sResource::Namespace(n) = K8sResource::from_value(v).expect("ns") else {
            panic!("kind")
        };
        let p = convert::namespace_to_profile(&n).expect("profile");
        set.profiles.insert(p.metadata.name.clone(), p.spec);
    }
    let ports: Vec<Value> = SERVED
        .iter()
        .map(|(n, p, pr)| json!({"name": n, "containerPort": p, "protocol": pr}))
        .collect();
    let mut eps = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        let v = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod{i}"), "namespace": p.ns, "labels": p.labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"podIP": p.ip.to_string()}});
        let K8sResource::Pod(pod) = K8sResource::from_value(v).expect("pod") else {
            panic!("kind")
        };
        let w = convert::merge_pod_into_workload_endpoint(&pod, None, "cali").expect("wep");
        eps.push(Endpoint {
            namespace: w.metadata.namespace.clone(),
            labels: w.metadata.labels.clone(),
            profiles: w.spec.profiles.clone(),
            ip: p.ip,
            ports: w.spec.ports.clone(),
        });
    }
    for np in policies {
        let p = convert::k8s_network_policy_to_calico(np).expect("translates");
        let mut d = p.clone();
        d.apply_defaults();
        d.validate().expect("translated policy is valid calico");
        set.policies.push(p);
    }
    (set, eps)
}

fn arb_roles() -> impl Strategy<Value = [&'static str; 4]> {
    let r = || prop_oneof![Just(""), Just("web"), Just("db")];
    (r(), r(), r(), r()).prop_map(|(a, b, c, d)| [a, b, c, d])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn calico_translation_agrees_with_kubernetes_semantics(
        p0 in arb_policy(0),
        p1 in arb_policy(1),
        extra in prop::option::of(arb_policy(2)),
        roles in arb_roles(),
    ) {
        let mut policies = vec![p0, p1];
        policies.extend(extra);
        let pods = pods(&roles);
        let (set, eps) = calico_state(&policies, &pods);
        for (si, src) in pods.iter().enumerate() {
            for (di, dst) in pods.iter().enumerate() {
                if si == di {
                    continue;
                }
                for (proto, port) in [("TCP", 80), ("UDP", 53), ("TCP", 81), ("SCTP", 80), ("UDP", 80)] {
                    let want = k8s_direction_allows(&policies, src, dst, PolicyType::Egress, proto, port)
                        && k8s_direction_allows(&policies, dst, src, PolicyType::Ingress, proto, port);
                    let probe = Probe { protocol: Protocol::Name(proto.into()), port };
                    let got = set.allows(&eps[si], &eps[di], &probe).expect("evaluates");
                    prop_assert_eq!(
                        got, want,
                        "pod{} -> pod{} {}/{}\npolicies: {:#?}\ntranslated: {:#?}",
                        si, di, proto, port, policies, set.policies
                    );
                }
            }
        }
    }
}

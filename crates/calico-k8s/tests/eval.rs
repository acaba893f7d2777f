//! The reachability evaluator on hand-written Calico policies: tier order, Deny/Pass, profiles,
//! notSelector, named ports, nets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use calico_k8s::eval::{Endpoint, EvalError, PolicySet, Probe};
use calico_model::Resource;
use calico_model::resources::endpoint::WorkloadEndpointPort;
use calico_model::resources::policy::Protocol;
use calico_model::resources::{NetworkPolicySpec, ProfileSpec};

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    let opts = serde_saphyr::options! { strict_booleans: true };
    let v: serde_json::Value = serde_saphyr::from_str_with_options(text, opts).expect("yaml");
    serde_json::from_value(v).expect("decodes")
}

fn ep(ns: &str, app: &str, ip: &str) -> Endpoint {
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), app.to_string());
    labels.insert("projectcalico.org/namespace".to_string(), ns.to_string());
    Endpoint {
        namespace: ns.to_string(),
        labels,
        profiles: vec![format!("kns.{ns}")],
        ip: ip.parse::<IpAddr>().expect("ip"),
        ports: vec![WorkloadEndpointPort {
            name: "http".into(),
            protocol: Protocol::Name("tcp".into()),
            port: 8080,
            host_port: 0,
            host_ip: String::new(),
        }],
    }
}

fn set(policies: &[&str]) -> PolicySet {
    let mut s = PolicySet::default();
    for ns in ["x", "y"] {
        let p: ProfileSpec = yaml(&format!(
            "ingress: [{{action: Allow}}]\negress: [{{action: Allow}}]\n\
             labelsToApply: {{pcns.ns: {ns}, pcns.projectcalico.org/name: {ns}}}"
        ));
        s.profiles.insert(format!("kns.{ns}"), p);
    }
    s.policies = policies
        .iter()
        .map(|t| yaml::<Resource<NetworkPolicySpec>>(t))
        .collect();
    s
}

fn tcp(port: u16) -> Probe {
    Probe {
        protocol: Protocol::Name("TCP".into()),
        port,
    }
}

#[test]
fn no_policy_means_profiles_allow() {
    let s = set(&[]);
    assert!(
        s.allows(
            &ep("x", "a", "10.0.0.1"),
            &ep("y", "b", "10.0.0.2"),
            &tcp(80)
        )
        .expect("eval")
    );
}

#[test]
fn missing_profile_denies() {
    let s = set(&[]);
    let mut dst = ep("x", "b", "10.0.0.2");
    dst.profiles = vec!["kns.gone".into()];
    assert!(
        !s.allows(&ep("x", "a", "10.0.0.1"), &dst, &tcp(80))
            .expect("eval")
    );
}

const DENY_FIRST: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: a-deny, namespace: x}
spec:
  order: 10
  selector: app == 'b'
  types: [Ingress]
  ingress:
  - {action: Deny, source: {selector: app == 'a'}}";

const ALLOW_ALL_IN: &str = "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: b-allow, namespace: x}
spec:
  order: 20
  selector: app == 'b'
  types: [Ingress]
  ingress: [{action: Allow}]";

#[test]
fn lower_order_deny_wins_and_other_sources_reach_the_allow() {
    let s = set(&[ALLOW_ALL_IN, DENY_FIRST]);
    let b = ep("x", "b", "10.0.0.2");
    assert!(
        !s.allows(&ep("x", "a", "10.0.0.1"), &b, &tcp(80))
            .expect("eval")
    );
    assert!(
        s.allows(&ep("x", "c", "10.0.0.3"), &b, &tcp(80))
            .expect("eval")
    );
    // The rule selector is scoped to the policy's namespace: app=a in y is not denied.
    assert!(
        s.allows(&ep("y", "a", "10.0.1.1"), &b, &tcp(80))
            .expect("eval")
    );
}

#[test]
fn selected_endpoint_without_matching_rule_is_denied_at_end_of_tier() {
    let s = set(&[DENY_FIRST]);
    let b = ep("x", "b", "10.0.0.2");
    assert!(
        !s.allows(&ep("x", "c", "10.0.0.3"), &b, &tcp(80))
            .expect("eval")
    );
    // Not selected: profiles decide.
    assert!(
        s.allows(
            &ep("x", "c", "10.0.0.3"),
            &ep("x", "d", "10.0.0.4"),
            &tcp(80)
        )
        .expect("eval")
    );
}

#[test]
fn pass_goes_to_profiles() {
    let s = set(&["apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  selector: all()
  types: [Ingress]
  ingress: [{action: Pass}]"]);
    assert!(
        s.allows(
            &ep("x", "a", "10.0.0.1"),
            &ep("x", "b", "10.0.0.2"),
            &tcp(80)
        )
        .expect("eval")
    );
}

#[test]
fn named_port_nets_and_not_selector() {
    let s = set(&["apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  selector: app == 'b'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {nets: [10.0.0.0/24], notSelector: app == 'evil'}
    destination: {ports: [http]}"]);
    let b = ep("x", "b", "10.0.0.2");
    let a = ep("x", "a", "10.0.0.1");
    assert!(s.allows(&a, &b, &tcp(8080)).expect("eval"));
    assert!(
        !s.allows(&a, &b, &tcp(80)).expect("eval"),
        "port 80 is not named http"
    );
    let udp = Probe {
        protocol: Protocol::Name("UDP".into()),
        port: 8080,
    };
    assert!(
        !s.allows(&a, &b, &udp).expect("eval"),
        "protocol must match"
    );
    assert!(
        !s.allows(&ep("x", "a", "10.9.0.1"), &b, &tcp(8080))
            .expect("eval"),
        "outside nets"
    );
    // notSelector is not namespace-scoped: app=evil in namespace y is excluded too.
    assert!(
        !s.allows(&ep("y", "evil", "10.0.0.9"), &b, &tcp(8080))
            .expect("eval")
    );
}

#[test]
fn namespace_selector_uses_pcns_labels_and_forged_ones_are_ignored() {
    let s = set(&["apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  selector: all()
  types: [Ingress]
  ingress: [{action: Allow, source: {namespaceSelector: ns == 'y'}}]"]);
    let b = ep("x", "b", "10.0.0.2");
    assert!(
        s.allows(&ep("y", "a", "10.0.1.1"), &b, &tcp(80))
            .expect("eval")
    );
    let mut forger = ep("x", "a", "10.0.0.1");
    forger.labels.insert("pcns.ns".into(), "y".into());
    assert!(!s.allows(&forger, &b, &tcp(80)).expect("eval"));
}

#[test]
fn other_tiers_are_reported_not_guessed() {
    let s = set(&["apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec: {tier: security, selector: all(), types: [Ingress]}"]);
    let e = s
        .allows(
            &ep("x", "a", "10.0.0.1"),
            &ep("x", "b", "10.0.0.2"),
            &tcp(80),
        )
        .expect_err("tier");
    assert!(matches!(e, EvalError::UnsupportedTier { .. }), "{e}");
}

//! Synthetic clusters as v3 resources (the same shape `felix-calc/tests/scale.rs` uses): local
//! workload endpoints on the benchmark node, remote endpoints on another node, and policies
//! whose rules select remote endpoints through per-policy selectors (so each policy has its own
//! IP set) and a named port.

use calico_model::AnyResource;
use felix_calc::Update;
use serde_json::{Value, json};

/// The node the local endpoints live on.
pub const NODE: &str = "bench-node";
/// Namespace of every generated endpoint and namespaced policy.
pub const NAMESPACE: &str = "bench";

/// Sizes of a synthetic cluster.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub local: usize,
    pub remote: usize,
    pub policies: usize,
}

/// Interface name of local endpoint `i` (`cali` + 11 hex digits = 15 bytes).
pub fn local_iface(i: usize) -> String {
    format!("cali{i:011x}")
}

/// Address of local endpoint `i` (10.64.0.0/14: up to 262,144).
pub fn local_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)
}

/// Address of remote endpoint `i` (10.128.0.0/10).
pub fn remote_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 128 + i / 65536, (i / 256) % 256, i % 256)
}

/// The namespace profile every generated endpoint references (allows all: profiles only apply
/// when no tier decided).
pub fn profile() -> Value {
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Profile",
        "metadata": {"name": format!("kns.{NAMESPACE}")},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}
    })
}

/// A workload endpoint.
pub fn wep(name: &str, node: &str, iface: &str, ip: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"orchestrator": "k8s", "node": node, "pod": name, "endpoint": "eth0",
                 "interfaceName": iface, "ipNetworks": [format!("{ip}/32")],
                 "profiles": [format!("kns.{NAMESPACE}")],
                 "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}
    })
}

pub fn local(i: usize) -> Value {
    wep(
        &format!("l{i}"),
        NODE,
        &local_iface(i),
        &local_ip(i),
        json!({"app": format!("local-{}", i % 10)}),
    )
}

/// Remote endpoint `i` with its `app` label naming the policy whose source set it is in.
pub fn remote(i: usize, app: usize) -> Value {
    wep(
        &format!("r{i}"),
        "bench-remote",
        &format!("calr{i:011x}"),
        &remote_ip(i),
        json!({"app": format!("app-{app}"), "role": format!("r-{}", i % 50)}),
    )
}

/// Policy `i`: applies to one tenth of the local endpoints; ingress TCP 80 or the `http` named
/// port from remote endpoints labelled `app-<i>`; egress to one of 50 roles.
pub fn policy(i: usize) -> Value {
    let global = i.is_multiple_of(2);
    let mut meta = json!({"name": format!("p{i}")});
    if !global {
        meta["namespace"] = json!(NAMESPACE);
    }
    json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": if global { "GlobalNetworkPolicy" } else { "NetworkPolicy" },
        "metadata": meta,
        "spec": {
            "order": i as f64,
            "selector": format!("app == 'local-{}'", i % 10),
            "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Allow", "protocol": "TCP",
                         "source": {"selector": format!("app == 'app-{i}'")},
                         "destination": {"ports": [80, "http"]}}],
            "egress": [{"action": "Allow",
                        "destination": {"selector": format!("role == 'r-{}'", i % 50)}}]
        }
    })
}

/// Every resource of the cluster: profile, policies, local endpoints, remote endpoints.
pub fn resources(spec: Spec) -> Vec<Value> {
    let mut out = Vec::with_capacity(1 + spec.policies + spec.local + spec.remote);
    out.push(profile());
    out.extend((0..spec.policies).map(policy));
    out.extend((0..spec.local).map(local));
    out.extend((0..spec.remote).map(|i| remote(i, i % spec.policies.max(1))));
    out
}

/// Resources as calculation-graph updates.
pub fn updates(values: &[Value]) -> Result<Vec<Update>, calico_model::ModelError> {
    values
        .iter()
        .map(|v| AnyResource::from_value(v.clone()).map(Update::upsert))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_addresses_are_valid_and_unique() {
        assert_eq!(local_iface(0xfff).len(), 15);
        assert_eq!(local_ip(300), "10.64.1.44");
        assert_eq!(remote_ip(100_000), "10.129.134.160");
        let spec = Spec {
            local: 3,
            remote: 5,
            policies: 2,
        };
        let r = resources(spec);
        assert_eq!(r.len(), 1 + 2 + 3 + 5);
        let u = updates(&r).unwrap();
        assert_eq!(u.len(), r.len());
    }

    #[test]
    fn graph_activates_every_policy() {
        let spec = Spec {
            local: 10,
            remote: 40,
            policies: 20,
        };
        let mut g = felix_calc::CalcGraph::new(NODE);
        for u in updates(&resources(spec)).unwrap() {
            g.apply(u).unwrap();
        }
        g.apply(Update::InSync).unwrap();
        let msgs = g.flush();
        let active = msgs
            .iter()
            .filter(|m| matches!(m, felix_calc::ToDataplane::ActivePolicyUpdate(_)))
            .count();
        assert_eq!(active, 20);
    }
}

//! The Kubernetes path of ADD against the real kernel: a Pod stored (by calicoctl's code, as
//! `calicoctl apply -f` stores it) before ADD and a Pod applied after ADD give the same
//! WorkloadEndpoint (labels, profiles, service account, named ports); a later Pod change reaches
//! the endpoint; a stored object that does not decode fails ADD naming its key, and everything
//! ADD did is rolled back.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;

use calico_k8s::K8sObject;
use calico_linux::testlab::{LabNs, lab_available};
use calico_model::Resource;
use calico_model::resources::WorkloadEndpointSpec;
use calicoctl::k8s::{Write, write};
use common::*;
use serde_json::{Value, json};

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns1", "labels": labels},
        "spec": {"nodeName": NODE, "serviceAccountName": "api",
            "containers": [{"name": "srv", "image": "nginx",
                "ports": [{"name": "http", "containerPort": 8080},
                          {"containerPort": 9090},
                          {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}],
            "initContainers": [{"name": "init", "ports": [{"name": "metrics", "containerPort": 9100}]}]}})
}

/// What `calicoctl apply -f` does with a Pod document.
fn apply_pod(lab: &Lab, v: Value) {
    let mut obj = K8sObject::from_value(v).unwrap();
    calicoctl::k8s::handle_namespace(&mut obj, None).unwrap();
    lab.rt
        .block_on(write(&lab.client(), &obj, Write::Apply))
        .unwrap();
}

fn wep_of(lab: &Lab, pod: &str) -> Resource<WorkloadEndpointSpec> {
    lab.weps()
        .into_iter()
        .find(|w| w.spec.pod == pod)
        .unwrap_or_else(|| panic!("no endpoint for pod {pod}"))
}

/// The pod-derived part of an endpoint: everything but the identity and what CNI owns per
/// container (addresses, veth, MAC, container ID) and the server's stamps.
fn pod_part(w: &Resource<WorkloadEndpointSpec>) -> Value {
    let mut spec = serde_json::to_value(&w.spec).unwrap();
    let o = spec.as_object_mut().unwrap();
    for k in ["pod", "containerID", "ipNetworks", "interfaceName", "mac"] {
        o.remove(k);
    }
    json!({"labels": w.metadata.labels, "namespace": w.metadata.namespace, "spec": spec})
}

#[test]
fn pod_before_and_after_add_give_the_same_endpoint() {
    if !lab_available("pod_before_and_after_add_give_the_same_endpoint") {
        return;
    }
    let lab = Lab::new("10.83.0.0/24", 26);
    let (wl1, wl2) = (LabNs::new("wl").unwrap(), LabNs::new("wl").unwrap());
    let labels = json!({"app": "web", "tier": "fe"});

    // Pod first, then ADD.
    apply_pod(&lab, pod("before", labels.clone()));
    let o = lab.run(
        "ADD",
        "ctrbefore0123456",
        &netns_path(&wl1),
        &k8s_args("before", "ctrbefore0123456"),
    );
    assert!(o.ok, "ADD before: {} {}", o.stdout, o.stderr);

    // ADD first (no Pod known: only what CNI_ARGS tell), then the Pod.
    let o = lab.run(
        "ADD",
        "ctrafter01234567",
        &netns_path(&wl2),
        &k8s_args("after", "ctrafter01234567"),
    );
    assert!(o.ok, "ADD after: {} {}", o.stdout, o.stderr);
    let bare = wep_of(&lab, "after");
    assert_eq!(
        bare.metadata.labels,
        BTreeMap::from([
            ("projectcalico.org/namespace".to_string(), "ns1".to_string()),
            (
                "projectcalico.org/orchestrator".to_string(),
                "k8s".to_string()
            ),
        ])
    );
    assert_eq!(bare.spec.profiles, vec!["kns.ns1"]);
    assert!(bare.spec.ports.is_empty());
    apply_pod(&lab, pod("after", labels.clone()));

    let (before, after) = (wep_of(&lab, "before"), wep_of(&lab, "after"));
    assert_eq!(pod_part(&before), pod_part(&after));
    // And that common result is the Pod's.
    assert_eq!(
        before.metadata.labels,
        BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "fe".to_string()),
            ("projectcalico.org/namespace".to_string(), "ns1".to_string()),
            (
                "projectcalico.org/orchestrator".to_string(),
                "k8s".to_string()
            ),
            (
                "projectcalico.org/serviceaccount".to_string(),
                "api".to_string()
            ),
        ])
    );
    assert_eq!(before.spec.profiles, vec!["kns.ns1", "ksa.ns1.api"]);
    assert_eq!(before.spec.service_account_name, "api");
    let names: Vec<(&str, u16)> = before
        .spec
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port))
        .collect();
    assert_eq!(names, vec![("http", 8080), ("dns", 53), ("metrics", 9100)]);
    // CNI-owned fields of the late-Pod endpoint are what ADD wrote.
    assert_eq!(after.spec.ip_networks, bare.spec.ip_networks);
    assert_eq!(after.spec.mac, bare.spec.mac);
    assert_eq!(after.spec.interface_name, bare.spec.interface_name);
    assert_eq!(after.spec.container_id, "ctrafter01234567");

    // A later label change reaches the endpoint of the pod-first workload too.
    apply_pod(&lab, pod("before", json!({"app": "web2"})));
    let w = wep_of(&lab, "before");
    assert_eq!(w.metadata.labels["app"], "web2");
    assert!(!w.metadata.labels.contains_key("tier"));

    for (c, ns, p) in [
        ("ctrbefore0123456", &wl1, "before"),
        ("ctrafter01234567", &wl2, "after"),
    ] {
        let o = lab.run("DEL", c, &netns_path(ns), &k8s_args(p, c));
        assert!(o.ok, "DEL {p}: {} {}", o.stdout, o.stderr);
    }
    assert!(lab.weps().is_empty());
    assert!(lab.host_veths().is_empty(), "{:?}", lab.host_veths());
}

#[test]
fn undecodable_stored_pod_fails_add_naming_the_key_and_rolls_back() {
    if !lab_available("undecodable_stored_pod_fails_add_naming_the_key_and_rolls_back") {
        return;
    }
    let lab = Lab::new("10.84.0.0/24", 26);
    let wl = LabNs::new("wl").unwrap();
    let key = calico_k8s::store::pod_key("ns1", "broken");
    let bad = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "broken", "namespace": "ns1"},
        "spec": {"containers": [{"name": "c", "ports": [{"name": "x", "containerPort": 70000}]}]}});
    lab.rt
        .block_on(
            lab.client()
                .kv()
                .put(&key, bad.to_string().into_bytes(), None),
        )
        .unwrap();
    let c = "ctrbroken0123456";
    let o = lab.run("ADD", c, &netns_path(&wl), &k8s_args("broken", c));
    assert!(!o.ok, "ADD should fail: {}", o.stdout);
    let msg = o.stdout.to_string();
    assert!(
        msg.contains("spec.containers[0].ports[0].containerPort"),
        "error should name the field: {msg}"
    );
    // Rolled back: no endpoint, no veth, no address held.
    assert!(lab.weps().is_empty());
    assert!(lab.host_veths().is_empty(), "{:?}", lab.host_veths());
    assert!(lab.handles().is_empty(), "{:?}", lab.handles());

    // Garbage that is not even JSON: the key is named.
    lab.rt
        .block_on(lab.client().kv().put(&key, b"{not json".to_vec(), None))
        .unwrap();
    let o = lab.run("ADD", c, &netns_path(&wl), &k8s_args("broken", c));
    assert!(!o.ok);
    assert!(o.stdout.to_string().contains(&key), "{}", o.stdout);
    assert!(lab.handles().is_empty(), "{:?}", lab.handles());
}

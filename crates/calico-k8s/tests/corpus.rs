//! Every Kubernetes NetworkPolicy e2e scenario in `shared/corpus/k8s-netpol/`: the setup's
//! namespaces and pods and every step's resources are translated and validated, then the pure
//! evaluator ([`calico_k8s::eval`]) decides each non-ignored reachability cell, which must equal
//! the scenario's expectation. Pod IPs are fixed fakes (`$(POD_IP x/b)` substituted).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use calico_k8s::eval::{Endpoint, PolicySet, Probe};
use calico_k8s::types::NetworkPolicy;
use calico_k8s::{K8sResource, convert};
use calico_model::Spec;
use calico_model::resources::policy::Protocol;
use serde_json::{Value, json};

fn corpus_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/k8s-netpol");
    d.is_dir().then_some(d)
}

fn yaml(text: &str) -> Value {
    let opts = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, opts).expect("scenario yaml parses")
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().expect("label value is a string").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn validated<S: Spec>(r: &calico_model::Resource<S>, what: &str) {
    let mut r = r.clone();
    r.apply_defaults();
    if let Err(e) = r.validate() {
        panic!("{what}: translated resource fails calico validation: {e}");
    }
}

struct Cluster {
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// name (`x/a`) → (pod object, ip)
    pods: BTreeMap<String, (Value, IpAddr)>,
    policies: BTreeMap<(String, String), NetworkPolicy>,
}

impl Cluster {
    fn policy_set(&self, file: &str) -> (PolicySet, BTreeMap<String, Endpoint>) {
        let mut set = PolicySet::default();
        for (name, labels) in &self.namespaces {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels}});
            let K8sResource::Namespace(ns) = K8sResource::from_value(ns).expect("namespace loads")
            else {
                panic!("kind")
            };
            let p = convert::namespace_to_profile(&ns).expect("namespace translates");
            validated(&p, file);
            set.profiles.insert(p.metadata.name.clone(), p.spec);
        }
        let mut eps = BTreeMap::new();
        for (name, (pod, ip)) in &self.pods {
            let K8sResource::Pod(pod) = K8sResource::from_value(pod.clone()).expect("pod loads")
            else {
                panic!("kind")
            };
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": pod.spec.service_account_name, "namespace": pod.metadata.namespace}});
            let K8sResource::ServiceAccount(sa) = K8sResource::from_value(sa).expect("sa loads")
            else {
                panic!("kind")
            };
            let p = convert::service_account_to_profile(&sa).expect("sa translates");
            validated(&p, file);
            set.profiles.insert(p.metadata.name.clone(), p.spec);
            let wep = convert::merge_pod_into_workload_endpoint(&pod, None, "cali")
                .expect("pod translates");
            validated(&wep, file);
            eps.insert(
                name.clone(),
                Endpoint {
                    namespace: wep.metadata.namespace.clone(),
                    labels: wep.metadata.labels.clone(),
                    profiles: wep.spec.profiles.clone(),
                    ip: *ip,
                    ports: wep.spec.ports.clone(),
                },
            );
        }
        for np in self.policies.values() {
            let p =
                convert::k8s_network_policy_to_calico(np).unwrap_or_else(|e| panic!("{file}: {e}"));
            validated(&p, file);
            set.policies.push(p);
        }
        (set, eps)
    }
}

fn np_from(file: &str, v: &Value) -> Option<NetworkPolicy> {
    if !K8sResource::is_supported(v) {
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
        println!("{file}: resource kind {kind:?} is not a Kubernetes kind; not translated here");
        return None;
    }
    match K8sResource::from_value(v.clone()).unwrap_or_else(|e| panic!("{file}: {e}")) {
        K8sResource::NetworkPolicy(np) => Some(np),
        other => panic!("{file}: only NetworkPolicies expected in steps, got {other:?}"),
    }
}

fn policy_key(np: &NetworkPolicy) -> (String, String) {
    (np.metadata.namespace.clone(), np.metadata.name.clone())
}

/// Returns (cells checked, mismatches).
fn run_scenario(path: &Path) -> (usize, Vec<String>) {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("?")
        .to_string();
    let mut text = std::fs::read_to_string(path).expect("read scenario");
    let raw = yaml(&text);
    let pods = raw["setup"]["pods"].as_array().cloned().unwrap_or_default();
    let mut ips = BTreeMap::new();
    for (i, p) in pods.iter().enumerate() {
        let name = p["name"].as_str().expect("pod name").to_string();
        let i = u8::try_from(i + 1).expect("few pods");
        ips.insert(name, IpAddr::V4(Ipv4Addr::new(10, 65, 0, i)));
    }
    for (name, ip) in &ips {
        let IpAddr::V4(v4) = ip else { unreachable!() };
        let slash4 = Ipv4Addr::from(u32::from(*v4) & 0xf000_0000);
        text = text.replace(
            &format!("$(SLASH4_CONTAINING POD_IP {name})"),
            &format!("{slash4}/4"),
        );
        text = text.replace(&format!("$(POD_IP {name})"), &ip.to_string());
    }
    text = text.replace("$(HOST_MASK)", "32");
    assert!(!text.contains("$("), "{file}: unknown placeholder left");
    let doc = yaml(&text);

    let mut cluster = Cluster {
        namespaces: BTreeMap::new(),
        pods: BTreeMap::new(),
        policies: BTreeMap::new(),
    };
    for ns in doc["setup"]["namespaces"].as_array().into_iter().flatten() {
        cluster.namespaces.insert(
            ns["name"].as_str().expect("ns name").to_string(),
            str_map(&ns["labels"]),
        );
    }
    let ports: Vec<Value> = doc["setup"]["server_ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            json!({"name": p["name"], "containerPort": p["port"],
            "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP"))})
        })
        .collect();
    for p in doc["setup"]["pods"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().expect("pod name").to_string();
        let ip = ips[&name];
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p["pod"], "namespace": p["namespace"], "labels": p["labels"]},
            "spec": {"nodeName": p.get("node").cloned().unwrap_or(json!("node-1")),
                "serviceAccountName": p.get("serviceAccount").cloned().unwrap_or(json!("default")),
                "containers": [{"name": "server", "ports": ports}]},
            "status": {"podIP": ip.to_string()}});
        cluster.pods.insert(name, (pod, ip));
    }

    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (si, step) in doc["steps"].as_array().into_iter().flatten().enumerate() {
        for r in step["create"].as_array().into_iter().flatten() {
            if let Some(np) = np_from(&file, r) {
                let k = policy_key(&np);
                assert!(
                    !cluster.policies.contains_key(&k),
                    "{file}: create of existing {k:?}"
                );
                cluster.policies.insert(k, np);
            }
        }
        for r in step["update"].as_array().into_iter().flatten() {
            if let Some(np) = np_from(&file, r) {
                cluster.policies.insert(policy_key(&np), np);
            }
        }
        for r in step["delete"].as_array().into_iter().flatten() {
            if let Some(np) = np_from(&file, r) {
                cluster.policies.remove(&policy_key(&np));
            }
        }
        if let Some(a) = step.get("add_pod_labels") {
            let pod = a["pod"].as_str().expect("pod");
            let (obj, _) = cluster.pods.get_mut(pod).expect("known pod");
            for (k, v) in str_map(&a["labels"]) {
                obj["metadata"]["labels"][k] = json!(v);
            }
        }
        if let Some(a) = step.get("add_namespace_labels") {
            let ns = a["namespace"].as_str().expect("namespace");
            cluster
                .namespaces
                .get_mut(ns)
                .expect("known namespace")
                .extend(str_map(&a["labels"]));
        }
        if step["delete_all_policies"].as_bool() == Some(true) {
            cluster.policies.clear();
        }
        let (set, eps) = cluster.policy_set(&file);
        for e in step["expect"].as_array().into_iter().flatten() {
            let protocol = e["protocol"].as_str().expect("protocol");
            let probe = Probe {
                protocol: Protocol::Name(protocol.to_string()),
                port: u16::try_from(e["port"].as_u64().unwrap_or(0)).expect("port"),
            };
            for (from, row) in e["reachability"].as_object().into_iter().flatten() {
                for (to, want) in row.as_object().into_iter().flatten() {
                    let want = want.as_str().expect("cell");
                    if want == "ignored" {
                        continue;
                    }
                    let got = set.allows(&eps[from], &eps[to], &probe).expect("evaluates");
                    let got = if got { "allowed" } else { "blocked" };
                    checked += 1;
                    if got != want {
                        mismatches.push(format!(
                            "{file} step {si} {protocol}/{}: {from} -> {to}: expected {want}, got {got}",
                            probe.port
                        ));
                    }
                }
            }
        }
    }
    (checked, mismatches)
}

#[test]
fn k8s_netpol_corpus_translates_and_evaluates_as_expected() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIP: ../shared/corpus/k8s-netpol not found (the shared corpus is not mounted)");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios in {}", dir.display());
    let (mut cells, mut bad) = (0, Vec::new());
    for f in &files {
        let (c, m) = run_scenario(f);
        cells += c;
        bad.extend(m);
    }
    println!(
        "{} scenarios, {cells} cells evaluated, {} mismatches",
        files.len(),
        bad.len()
    );
    assert!(cells > 0, "no reachability cells evaluated");
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

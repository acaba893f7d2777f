//! Kubernetes objects through the real `calicoctl` binary (`create|apply|replace|delete -f`),
//! against a temporary embedded datastore: the translations it writes, the Pod store and the
//! merge into existing WorkloadEndpoints, errors naming the field, and every
//! `shared/corpus/k8s-netpol` scenario run step by step through `calicoctl` with the
//! reachability decided from what ended up in the datastore.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (clippy.toml)

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use calico_datastore::client::Client;
use calico_datastore::config::{DatastoreConfig, connect};
use calico_k8s::eval::{Endpoint, PolicySet, Probe};
use calico_model::resources::policy::Protocol;
use calico_model::resources::{NetworkPolicySpec, ProfileSpec, WorkloadEndpointSpec};
use calico_model::{AnyResource, KindInfo, Resource};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_calicoctl");

struct Env {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    rt: tokio::runtime::Runtime,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("calicoctl.cfg");
        std::fs::write(
            &cfg,
            format!(
                "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {{}}\nspec:\n  datastoreType: embedded\n  embeddedPath: {}\n",
                dir.path().join("calico.db").display()
            ),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Env { dir, cfg, rt }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(&self.cfg)
            .env_remove("DATASTORE_TYPE")
            .env_remove("ETCD_ENDPOINTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// `calicoctl <verb> -f -` with `docs` as a YAML stream; must succeed.
    fn ok(&self, verb: &str, docs: &[Value]) -> String {
        let o = self.run(&[verb, "-f", "-"], &stream(docs));
        assert_eq!(
            o.code, 0,
            "{verb} failed\nstdout:\n{}\nstderr:\n{}",
            o.stdout, o.stderr
        );
        o.stdout
    }

    fn client(&self) -> Client {
        let cfg =
            DatastoreConfig::embedded(self.dir.path().join("calico.db").display().to_string());
        Client::new(self.rt.block_on(connect(&cfg)).unwrap())
    }

    fn list<S>(&self, kind: &str) -> Vec<Resource<S>>
    where
        Resource<S>: TryFrom<AnyResource>,
    {
        let info = KindInfo::lookup(kind).unwrap();
        self.rt
            .block_on(self.client().list(info, None))
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.try_into().ok().unwrap())
            .collect()
    }

    fn get<S>(&self, kind: &str, ns: &str, name: &str) -> Option<Resource<S>>
    where
        Resource<S>: TryFrom<AnyResource>,
    {
        let info = KindInfo::lookup(kind).unwrap();
        match self.rt.block_on(self.client().get(info, ns, name)) {
            Ok(r) => Some(r.try_into().ok().unwrap()),
            Err(e) if e.is_not_found() => None,
            Err(e) => panic!("get {kind} {ns}/{name}: {e}"),
        }
    }

    fn stored(&self, key: &str) -> Option<Value> {
        self.rt
            .block_on(self.client().kv().get(key))
            .unwrap()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
    }

    /// A WorkloadEndpoint as the CNI plugin writes it on ADD without a stored Pod.
    fn cni_endpoint(&self, node: &str, ns: &str, pod: &str, ip: &str) -> Value {
        let esc = |s: &str| s.replace('-', "--");
        json!({
            "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": format!("{}-k8s-{}-eth0", esc(node), esc(pod)), "namespace": ns,
                "labels": {"projectcalico.org/namespace": ns,
                           "projectcalico.org/orchestrator": "k8s"}},
            "spec": {"orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
                "containerID": format!("ctr-{pod}"), "ipNetworks": [format!("{ip}/32")],
                "interfaceName": calico_k8s::convert::veth_name("cali", ns, pod),
                "mac": "ee:ee:ee:ee:ee:ee", "profiles": [format!("kns.{ns}")]},
        })
    }
}

fn stream(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", serde_json::to_string_pretty(d).unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn namespace(name: &str, labels: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}})
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases
// ---------------------------------------------------------------------------------------------

#[test]
fn namespace_service_account_and_policy_are_translated_and_deleted() {
    let e = Env::new();
    // YAML as a user writes it; `ns: y` must stay the string "y" (YAML 1.2, as kubectl).
    let text = "\
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {ns: y, team: blue}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: api, namespace: x, labels: {tier: backend}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: x}
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
  - from:
    - namespaceSelector: {}
      podSelector:
        matchExpressions: [{key: role, operator: In, values: [fe, be]}]
    ports: [{port: 80}, {port: 81}, {protocol: UDP, port: 53}]
";
    let o = e.run(&["apply", "-f", "-"], text);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout, "Successfully applied 3 resource(s)\n");

    let kns: Resource<ProfileSpec> = e.get("Profile", "", "kns.x").expect("kns.x");
    assert_eq!(
        kns.spec.labels_to_apply,
        BTreeMap::from([
            ("pcns.ns".to_string(), "y".to_string()),
            ("pcns.team".to_string(), "blue".to_string()),
            ("pcns.projectcalico.org/name".to_string(), "x".to_string()),
        ])
    );
    assert_eq!(kns.spec.ingress.len(), 1);
    assert_eq!(kns.spec.egress.len(), 1);
    let ksa: Resource<ProfileSpec> = e.get("Profile", "", "ksa.x.api").expect("ksa.x.api");
    assert_eq!(
        ksa.spec.labels_to_apply,
        BTreeMap::from([
            ("pcsa.tier".to_string(), "backend".to_string()),
            ("pcsa.projectcalico.org/name".to_string(), "api".to_string()),
        ])
    );
    assert!(ksa.spec.ingress.is_empty() && ksa.spec.egress.is_empty());
    // Every namespace has its `default` service account, as in Kubernetes.
    let ksa_default: Resource<ProfileSpec> = e.get("Profile", "", "ksa.x.default").unwrap();
    assert_eq!(
        ksa_default.spec.labels_to_apply["pcsa.projectcalico.org/name"],
        "default"
    );
    assert!(
        e.stored("/calico/k8s/v1/serviceaccounts/x/default")
            .is_some()
    );

    let np: Resource<NetworkPolicySpec> = e
        .get("NetworkPolicy", "x", "knp.default.allow-web")
        .expect("knp policy");
    let v = serde_json::to_value(&np.spec).unwrap();
    assert_eq!(v["order"], 1000.0);
    assert_eq!(v["tier"], "default");
    assert_eq!(
        v["selector"],
        "projectcalico.org/orchestrator == 'k8s' && app == 'web'"
    );
    assert_eq!(v["types"], json!(["Ingress"]));
    assert_eq!(
        v["ingress"],
        json!([
            {"action": "Allow", "protocol": "TCP",
             "source": {"selector": "projectcalico.org/orchestrator == 'k8s' && role in { 'fe', 'be' }",
                        "namespaceSelector": "all()"},
             "destination": {"ports": ["80:81"]}},
            {"action": "Allow", "protocol": "UDP",
             "source": {"selector": "projectcalico.org/orchestrator == 'k8s' && role in { 'fe', 'be' }",
                        "namespaceSelector": "all()"},
             "destination": {"ports": [53]}},
        ])
    );
    // The objects themselves are stored.
    assert_eq!(
        e.stored("/calico/k8s/v1/namespaces/x").unwrap()["metadata"]["labels"]["ns"],
        "y"
    );
    assert!(e.stored("/calico/k8s/v1/serviceaccounts/x/api").is_some());
    assert!(
        e.stored("/calico/k8s/v1/networkpolicies/x/allow-web")
            .is_some()
    );

    // Namespace label change → the profile's labels (which endpoints inherit).
    e.ok("apply", &[namespace("x", &json!({"ns": "z"}))]);
    let kns: Resource<ProfileSpec> = e.get("Profile", "", "kns.x").unwrap();
    assert_eq!(kns.spec.labels_to_apply["pcns.ns"], "z");
    assert!(!kns.spec.labels_to_apply.contains_key("pcns.team"));

    // create of an existing object fails naming it; --skip-exists accepts it.
    let o = e.run(
        &["create", "-f", "-"],
        &stream(&[namespace("x", &json!({}))]),
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("Namespace(x): resource already exists"),
        "{}",
        o.stderr
    );
    let o = e.run(
        &["create", "--skip-exists", "-f", "-"],
        &stream(&[namespace("x", &json!({"ns": "z"}))]),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully created 1 'Namespace' resource(s)\n");

    // delete -f removes the translations and the stored objects.
    let o = e.run(&["delete", "-f", "-"], text);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout, "Successfully deleted 3 resource(s)\n");
    assert!(e.get::<ProfileSpec>("Profile", "", "kns.x").is_none());
    assert!(e.get::<ProfileSpec>("Profile", "", "ksa.x.api").is_none());
    assert!(
        e.get::<ProfileSpec>("Profile", "", "ksa.x.default")
            .is_none()
    );
    assert!(
        e.get::<NetworkPolicySpec>("NetworkPolicy", "x", "knp.default.allow-web")
            .is_none()
    );
    assert!(e.stored("/calico/k8s/v1/namespaces/x").is_none());
    // Again: not found, unless --skip-not-exists.
    let o = e.run(&["delete", "-f", "-"], text);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("Failed to delete resource: Namespace(x): resource does not exist"),
        "{}",
        o.stderr
    );
    let o = e.run(&["delete", "-s", "-f", "-"], text);
    assert_eq!(o.code, 0, "{}", o.stderr);

    // Deleting a Namespace deletes what is stored in it, as Kubernetes does; other namespaces'
    // objects and the endpoints stay.
    e.ok("apply", &[e.cni_endpoint("node-a", "x", "p1", "10.65.0.9")]);
    let o = e.run(&["apply", "-f", "-"], text);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let pod =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "x"}});
    let other = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "api", "namespace": "xx"}});
    e.ok("apply", &[pod, other]);
    let o = e.run(
        &["delete", "-f", "-"],
        &stream(&[namespace("x", &json!({}))]),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully deleted 1 'Namespace' resource(s)\n");
    let left: Vec<String> =
        e.rt.block_on(e.client().kv().list("/calico/k8s/"))
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect();
    assert_eq!(left, vec!["/calico/k8s/v1/serviceaccounts/xx/api"]);
    let profiles: Vec<String> = e
        .list::<ProfileSpec>("Profile")
        .into_iter()
        .map(|p| p.metadata.name)
        .collect();
    assert_eq!(profiles, vec!["ksa.xx.api"]);
    assert!(e.list::<NetworkPolicySpec>("NetworkPolicy").is_empty());
    assert_eq!(e.list::<WorkloadEndpointSpec>("WorkloadEndpoint").len(), 1);
}

fn web_pod(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "x", "labels": labels},
        "spec": {"nodeName": "node-a", "serviceAccountName": "api",
            "containers": [{"name": "srv", "image": "nginx",
                "ports": [{"name": "http", "containerPort": 8080},
                          {"containerPort": 9090},
                          {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]}})
}

#[test]
fn pod_is_stored_and_merged_into_an_existing_endpoint() {
    let e = Env::new();
    // The endpoint CNI ADD wrote before the Pod was known.
    e.ok(
        "apply",
        &[e.cni_endpoint("node-a", "x", "web-1", "10.65.0.7")],
    );
    // A WEP of another pod in the namespace must stay untouched.
    e.ok(
        "apply",
        &[e.cni_endpoint("node-b", "x", "other", "10.65.0.8")],
    );
    let before: Resource<WorkloadEndpointSpec> = e
        .get("WorkloadEndpoint", "x", "node--a-k8s-web--1-eth0")
        .unwrap();
    let other_before: Resource<WorkloadEndpointSpec> = e
        .get("WorkloadEndpoint", "x", "node--b-k8s-other-eth0")
        .unwrap();

    let out = e.ok("apply", &[web_pod(json!({"app": "web"}))]);
    assert_eq!(out, "Successfully applied 1 'Pod' resource(s)\n");
    assert_eq!(
        e.stored("/calico/k8s/v1/pods/x/web-1").unwrap()["metadata"]["labels"]["app"],
        "web"
    );
    let wep: Resource<WorkloadEndpointSpec> = e
        .get("WorkloadEndpoint", "x", "node--a-k8s-web--1-eth0")
        .unwrap();
    assert_eq!(
        wep.metadata.labels,
        BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("projectcalico.org/namespace".to_string(), "x".to_string()),
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
    assert_eq!(wep.spec.profiles, vec!["kns.x", "ksa.x.api"]);
    assert_eq!(wep.spec.service_account_name, "api");
    let ports = serde_json::to_value(&wep.spec.ports).unwrap();
    assert_eq!(
        ports,
        json!([{"name": "http", "protocol": "TCP", "port": 8080},
               {"name": "dns", "protocol": "UDP", "port": 53}])
    );
    // CNI-owned fields are kept.
    assert_eq!(wep.spec.ip_networks, before.spec.ip_networks);
    assert_eq!(wep.spec.container_id, before.spec.container_id);
    assert_eq!(wep.spec.mac, before.spec.mac);
    assert_eq!(wep.spec.interface_name, before.spec.interface_name);
    let other: Resource<WorkloadEndpointSpec> = e
        .get("WorkloadEndpoint", "x", "node--b-k8s-other-eth0")
        .unwrap();
    assert_eq!(other, other_before);

    // Label change on the Pod reaches the endpoint; removed labels go.
    e.ok("apply", &[web_pod(json!({"app": "web2", "tier": "fe"}))]);
    let wep: Resource<WorkloadEndpointSpec> = e
        .get("WorkloadEndpoint", "x", "node--a-k8s-web--1-eth0")
        .unwrap();
    assert_eq!(wep.metadata.labels["app"], "web2");
    assert_eq!(wep.metadata.labels["tier"], "fe");

    // Deleting the Pod deletes the stored object, not the endpoint (CNI DEL's job).
    let o = e.run(&["delete", "-f", "-"], &stream(&[web_pod(json!({}))]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "Successfully deleted 1 'Pod' resource(s)\n");
    assert!(e.stored("/calico/k8s/v1/pods/x/web-1").is_none());
    assert!(
        e.get::<WorkloadEndpointSpec>("WorkloadEndpoint", "x", "node--a-k8s-web--1-eth0")
            .is_some()
    );

    // replace needs the stored object.
    let o = e.run(&["replace", "-f", "-"], &stream(&[web_pod(json!({}))]));
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("Pod(x/web-1): resource does not exist"),
        "{}",
        o.stderr
    );
}

#[test]
fn mixed_stream_with_v3_resources_and_list_and_namespace_flag() {
    let e = Env::new();
    let text = "\
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: n1}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: sa1}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny}
  spec: {podSelector: {}}
";
    let o = e.run(&["apply", "-n", "team-a", "-f", "-"], text);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout, "Successfully applied 3 resource(s)\n");
    assert!(
        e.get::<ProfileSpec>("Profile", "", "ksa.team-a.sa1")
            .is_some()
    );
    let sets = e.list::<calico_model::resources::NetworkSetSpec>("NetworkSet");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].metadata.namespace, "team-a");
    assert!(
        e.get::<NetworkPolicySpec>("NetworkPolicy", "team-a", "knp.default.deny")
            .is_some()
    );
    // Without -n: namespace default.
    let o = e.run(&["apply", "-f", "-"], text);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        e.get::<NetworkPolicySpec>("NetworkPolicy", "default", "knp.default.deny")
            .is_some()
    );
    // A namespace that contradicts -n, and -n with a Namespace: errors.
    let o = e.run(
        &["apply", "-n", "b", "-f", "-"],
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s, namespace: a}\n",
    );
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("a != b"), "{}", o.stderr);
    let o = e.run(
        &["apply", "-n", "b", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("Namespace is not namespaced"),
        "{}",
        o.stderr
    );
}

#[test]
fn bad_kubernetes_objects_are_errors_naming_the_field() {
    let e = Env::new();
    let cases = [
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n",
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  egress:\n  - ports: [{protocol: ICMP, port: 1}]\n",
            "spec.egress[0].ports[0].protocol",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    portz: []\n",
            "spec.containers[0]",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    ports: [{name: x, containerPort: 70000}]\n",
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n",
            "metadata.name",
        ),
        (
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s, namespace: a/b}\n",
            "metadata.namespace",
        ),
    ];
    for (text, field) in cases {
        let o = e.run(&["apply", "-f", "-"], text);
        assert_eq!(o.code, 1, "{text}: {}", o.stdout);
        assert!(
            o.stderr.contains(field),
            "{text}: error should name {field}: {}",
            o.stderr
        );
        let o = e.run(&["validate", "-f", "-"], text);
        assert_eq!(o.code, 1, "validate {text}: {}", o.stdout);
        assert!(o.stdout.contains(field), "validate {text}: {}", o.stdout);
    }
    // Nothing was written.
    assert!(e.list::<ProfileSpec>("Profile").is_empty());
    assert!(e.list::<NetworkPolicySpec>("NetworkPolicy").is_empty());
    assert!(
        e.rt.block_on(e.client().kv().list("/calico/k8s/"))
            .unwrap()
            .kvs
            .is_empty()
    );
    // One bad document does not stop the good ones.
    let o = e.run(
        &["apply", "-f", "-"],
        &format!(
            "{}---\n{}",
            cases[0].0, "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n"
        ),
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.contains("Partial success: applied 1 out of 2"),
        "{}",
        o.stdout
    );
    assert!(e.get::<ProfileSpec>("Profile", "", "kns.ok").is_some());
}

// ---------------------------------------------------------------------------------------------
// The k8s-netpol corpus through calicoctl
// ---------------------------------------------------------------------------------------------

fn corpus_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/k8s-netpol");
    d.is_dir().then_some(d)
}

fn yaml(text: &str) -> Value {
    let opts = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, opts).expect("scenario yaml parses")
}

/// Runs one scenario: endpoints written first (as CNI ADD without a Pod does), then the setup's
/// Namespaces, ServiceAccounts and Pods applied, then every step through calicoctl; after each
/// step the Calico state read back from the datastore decides every expected cell.
/// Returns (cells checked, mismatches).
fn run_scenario(path: &Path) -> (usize, Vec<String>) {
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let mut text = std::fs::read_to_string(path).unwrap();
    let raw = yaml(&text);
    let mut ips = BTreeMap::new();
    for (i, p) in raw["setup"]["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let i = u8::try_from(i + 1).unwrap();
        ips.insert(
            p["name"].as_str().unwrap().to_string(),
            Ipv4Addr::new(10, 65, 0, i),
        );
    }
    for (name, ip) in &ips {
        let slash4 = Ipv4Addr::from(u32::from(*ip) & 0xf000_0000);
        text = text.replace(
            &format!("$(SLASH4_CONTAINING POD_IP {name})"),
            &format!("{slash4}/4"),
        );
        text = text.replace(&format!("$(POD_IP {name})"), &ip.to_string());
    }
    text = text.replace("$(HOST_MASK)", "32");
    assert!(!text.contains("$("), "{file}: unknown placeholder left");
    let doc = yaml(&text);

    let e = Env::new();
    let ports: Vec<Value> = doc["setup"]["server_ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| json!({"name": p["name"], "containerPort": p["port"], "protocol": p["protocol"]}))
        .collect();
    let mut namespaces: BTreeMap<String, Value> = BTreeMap::new();
    for ns in doc["setup"]["namespaces"].as_array().into_iter().flatten() {
        namespaces.insert(
            ns["name"].as_str().unwrap().to_string(),
            namespace(ns["name"].as_str().unwrap(), &ns["labels"]),
        );
    }
    let mut pods: BTreeMap<String, Value> = BTreeMap::new();
    let mut setup = Vec::new();
    let mut weps = Vec::new();
    let mut sas = BTreeSet::new();
    for (i, p) in doc["setup"]["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = p["name"].as_str().unwrap().to_string();
        let (ns, pod) = (p["namespace"].as_str().unwrap(), p["pod"].as_str().unwrap());
        let node = p["node"]
            .as_str()
            .map_or_else(|| format!("node-{}", i % 2), str::to_string);
        let sa = p["serviceAccount"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        weps.push(e.cni_endpoint(&node, ns, pod, &ips[&name].to_string()));
        if sas.insert((ns.to_string(), sa.clone())) {
            setup.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": ns}}));
        }
        pods.insert(
            name,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": p["labels"]},
                "spec": {"nodeName": node, "serviceAccountName": sa,
                    "containers": [{"name": "server", "image": "agnhost", "ports": ports}]}}),
        );
    }
    e.ok("apply", &weps);
    let mut all: Vec<Value> = namespaces.values().cloned().collect();
    all.extend(setup);
    all.extend(pods.values().cloned());
    let out = e.ok("apply", &all);
    assert_eq!(
        out,
        format!("Successfully applied {} resource(s)\n", all.len()),
        "{file}"
    );

    let mut policies: BTreeSet<(String, String)> = BTreeSet::new();
    let id = |r: &Value| {
        (
            r["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            r["metadata"]["name"].as_str().unwrap().to_string(),
        )
    };
    let mut checked = 0;
    let mut bad = Vec::new();
    for (si, step) in doc["steps"].as_array().into_iter().flatten().enumerate() {
        for (verb, key) in [
            ("create", "create"),
            ("apply", "update"),
            ("delete", "delete"),
        ] {
            let rs: Vec<Value> = step[key].as_array().cloned().unwrap_or_default();
            if rs.is_empty() {
                continue;
            }
            e.ok(verb, &rs);
            for r in &rs {
                if r["kind"] == "NetworkPolicy" {
                    if verb == "delete" {
                        policies.remove(&id(r));
                    } else {
                        policies.insert(id(r));
                    }
                }
            }
        }
        if let Some(a) = step.get("add_pod_labels") {
            let pod = pods.get_mut(a["pod"].as_str().unwrap()).unwrap();
            for (k, v) in a["labels"].as_object().unwrap() {
                pod["metadata"]["labels"][k] = v.clone();
            }
            e.ok("apply", std::slice::from_ref(pod));
        }
        if let Some(a) = step.get("add_namespace_labels") {
            let ns = namespaces
                .get_mut(a["namespace"].as_str().unwrap())
                .unwrap();
            for (k, v) in a["labels"].as_object().unwrap() {
                ns["metadata"]["labels"][k] = v.clone();
            }
            e.ok("apply", std::slice::from_ref(ns));
        }
        if step["delete_all_policies"].as_bool() == Some(true) && !policies.is_empty() {
            let docs: Vec<Value> = policies
                .iter()
                .map(|(ns, name)| {
                    json!({"apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}})
                })
                .collect();
            e.ok("delete", &docs);
            policies.clear();
        }

        // What calicoctl left in the datastore.
        let stored: Vec<Resource<NetworkPolicySpec>> = e.list("NetworkPolicy");
        let names: BTreeSet<(String, String)> = stored
            .iter()
            .map(|p| {
                let n = p
                    .metadata
                    .name
                    .strip_prefix("knp.default.")
                    .unwrap_or_else(|| {
                        panic!(
                            "{file}: policy {} lacks the knp.default. prefix",
                            p.metadata.name
                        )
                    });
                (p.metadata.namespace.clone(), n.to_string())
            })
            .collect();
        assert_eq!(names, policies, "{file} step {si}: stored policies");
        for p in &stored {
            assert_eq!(p.spec.order, Some(1000.0), "{file}: {}", p.metadata.name);
        }
        let set = PolicySet {
            profiles: e
                .list::<ProfileSpec>("Profile")
                .into_iter()
                .map(|p| (p.metadata.name, p.spec))
                .collect(),
            policies: stored,
        };
        let eps: BTreeMap<String, Endpoint> = e
            .list::<WorkloadEndpointSpec>("WorkloadEndpoint")
            .into_iter()
            .map(|w| {
                let name = format!("{}/{}", w.metadata.namespace, w.spec.pod);
                let ip: IpAddr = w.spec.ip_networks[0]
                    .trim_end_matches("/32")
                    .parse()
                    .unwrap();
                (
                    name,
                    Endpoint {
                        namespace: w.metadata.namespace.clone(),
                        labels: w.metadata.labels.clone(),
                        profiles: w.spec.profiles.clone(),
                        ip,
                        ports: w.spec.ports.clone(),
                    },
                )
            })
            .collect();
        for x in step["expect"].as_array().into_iter().flatten() {
            let protocol = x["protocol"].as_str().unwrap();
            let probe = Probe {
                protocol: Protocol::Name(protocol.to_string()),
                port: u16::try_from(x["port"].as_u64().unwrap_or(0)).unwrap(),
            };
            for (from, row) in x["reachability"].as_object().into_iter().flatten() {
                for (to, want) in row.as_object().into_iter().flatten() {
                    let want = want.as_str().unwrap();
                    if want == "ignored" {
                        continue;
                    }
                    let got = set
                        .allows(&eps[from], &eps[to], &probe)
                        .unwrap_or_else(|err| panic!("{file}: {err}"));
                    let got = if got { "allowed" } else { "blocked" };
                    checked += 1;
                    if got != want {
                        bad.push(format!(
                            "{file} step {si} {protocol}/{}: {from} -> {to}: expected {want}, got {got}",
                            probe.port
                        ));
                    }
                }
            }
        }
    }
    (checked, bad)
}

#[test]
fn k8s_netpol_corpus_applied_through_calicoctl() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIP: ../shared/corpus/k8s-netpol not found (the shared corpus is not mounted)");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
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
        "{} scenarios, {cells} cells decided from calicoctl-written state, {} mismatches",
        files.len(),
        bad.len()
    );
    assert!(cells > 0);
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

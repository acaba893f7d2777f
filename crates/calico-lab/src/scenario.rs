//! The scenario runner: FORMAT.md (`/work/shared/scenarios/FORMAT.md`) in full.
//!
//! One scenario file = one case. The runner builds a lab for it (nodes, routing and datastore
//! from `topology`, overridable), applies the setup the Kubernetes way (Namespaces,
//! ServiceAccounts and Pods through `calicoctl apply`, so labels, service accounts and named
//! ports reach the endpoints through the Kubernetes translation), networks every pod with the
//! real CNI plugin, then runs the steps in order. After each step it waits for every node's
//! Felix to report the datastore's current revision as applied (bounded), probes every
//! non-ignored cell of every expectation in parallel, re-probes mismatching cells briefly (a
//! probe that times out is `blocked`), and records every cell where observed and expected
//! differ.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use calico_linux::NetNs;
use serde::Deserialize;

use crate::bins;
use crate::error::LabError;
use crate::lab::{DatastoreKind, Lab, LabSpec, Routing};
use crate::names;
use crate::probe::{self, Proto};
use crate::procs::InNs;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub setup: Setup,
    #[serde(default)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Topology {
    pub nodes: Option<NodesSpec>,
    pub routing: Option<String>,
    pub datastore: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NodesSpec {
    Count(usize),
    Names(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Setup {
    #[serde(default)]
    pub namespaces: Vec<NamespaceSpec>,
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    #[serde(default)]
    pub server_ports: Vec<ServerPort>,
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamespaceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PodSpec {
    pub name: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, serde_json::Value>,
    pub node: Option<String>,
    #[serde(rename = "serviceAccount")]
    pub service_account: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerPort {
    pub port: u16,
    pub protocol: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HostSpec {
    pub name: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Step {
    #[serde(default)]
    pub create: Vec<serde_json::Value>,
    #[serde(default)]
    pub update: Vec<serde_json::Value>,
    #[serde(default)]
    pub delete: Vec<serde_json::Value>,
    pub add_pod_labels: Option<AddPodLabels>,
    pub add_namespace_labels: Option<AddNamespaceLabels>,
    #[serde(default)]
    pub delete_all_policies: bool,
    #[serde(default)]
    pub expect: Vec<Expect>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AddPodLabels {
    pub pod: String,
    pub labels: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AddNamespaceLabels {
    pub namespace: String,
    pub labels: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Expect {
    #[serde(default)]
    pub port: Option<u16>,
    pub protocol: String,
    pub reachability: BTreeMap<String, BTreeMap<String, String>>,
}

/// Runner options (command-line overrides of `topology`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub datastore: Option<DatastoreKind>,
    pub nodes: Option<usize>,
    pub routing: Option<Routing>,
    pub probe_timeout: Duration,
    pub converge_timeout: Duration,
    /// Scenario files run at the same time (each in its own lab).
    pub jobs: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            datastore: None,
            nodes: None,
            routing: None,
            probe_timeout: Duration::from_millis(1000),
            converge_timeout: Duration::from_secs(30),
            jobs: 3,
        }
    }
}

/// One cell where observed and expected differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub step: usize,
    pub port: u16,
    pub protocol: String,
    pub from: String,
    pub to: String,
    pub expected: bool,
    pub observed: bool,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = |b: bool| if b { "allowed" } else { "blocked" };
        write!(
            f,
            "step {} {}/{}: {} -> {}: expected {}, observed {}",
            self.step + 1,
            self.port,
            self.protocol,
            self.from,
            self.to,
            word(self.expected),
            word(self.observed)
        )
    }
}

/// The outcome of one scenario file.
#[derive(Debug, Clone, Default)]
pub struct CaseResult {
    pub file: String,
    pub id: String,
    pub mismatches: Vec<Mismatch>,
    pub error: Option<String>,
    pub cells: usize,
    /// Per step: from the step's changes being in the datastore (calicoctl returned) to every
    /// node's Felix reporting that revision applied in the kernel.
    pub convergence: Vec<Duration>,
    /// Per step: the time calicoctl took to apply the step's changes.
    pub apply: Vec<Duration>,
    /// Steps whose first probe round (right after convergence) already matched.
    pub first_round_ok: usize,
    pub elapsed: Duration,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.mismatches.is_empty()
    }
}

/// Parse a scenario file (YAML 1.2 booleans: `ns: y` stays a string).
pub fn load(path: &Path) -> Result<Scenario, LabError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| LabError::io(path, e))?;
    let opts = serde_saphyr::options! { strict_booleans: true };
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(&text, opts).map_err(|e| LabError::Scenario {
            file: file.clone(),
            detail: e.to_string(),
        })?;
    let sc: Scenario = serde_json::from_value(value).map_err(|e| LabError::Scenario {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    validate(&sc).map_err(|detail| LabError::Scenario { file, detail })?;
    Ok(sc)
}

/// Every `.yaml`/`.yml` file named or inside a named directory, sorted per directory.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LabError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| LabError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            v.sort();
            out.extend(v);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(LabError::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    Ok(out)
}

fn pod_parts(p: &PodSpec) -> Result<(String, String), String> {
    let (ns, pod) = match p.name.split_once('/') {
        Some((n, q)) => (n.to_string(), q.to_string()),
        None => (
            p.namespace.clone().unwrap_or_else(|| "default".into()),
            p.name.clone(),
        ),
    };
    let ns = p.namespace.clone().unwrap_or(ns);
    let pod = p.pod.clone().unwrap_or(pod);
    if format!("{ns}/{pod}") != p.name {
        return Err(format!(
            "pod {:?}: name must be namespace/pod ({ns}/{pod})",
            p.name
        ));
    }
    Ok((ns, pod))
}

fn validate(sc: &Scenario) -> Result<(), String> {
    let mut endpoints = BTreeSet::new();
    for p in &sc.setup.pods {
        pod_parts(p)?;
        if !endpoints.insert(p.name.clone()) {
            return Err(format!("setup.pods: duplicate pod {:?}", p.name));
        }
    }
    for h in &sc.setup.hosts {
        if !endpoints.insert(h.name.clone()) {
            return Err(format!("setup.hosts: duplicate name {:?}", h.name));
        }
    }
    for sp in &sc.setup.server_ports {
        let proto = sp.protocol.as_deref().unwrap_or("TCP");
        match proto.parse::<Proto>() {
            Ok(Proto::Icmp) | Err(_) => {
                return Err(format!(
                    "setup.server_ports: port {}: invalid protocol {proto:?}",
                    sp.port
                ));
            }
            Ok(_) => {}
        }
    }
    if let Some(r) = &sc.topology.routing {
        r.parse::<Routing>()
            .map_err(|e| format!("topology.routing: {e}"))?;
    }
    if let Some(d) = &sc.topology.datastore {
        d.parse::<DatastoreKind>()
            .map_err(|e| format!("topology.datastore: {e}"))?;
    }
    for (i, st) in sc.steps.iter().enumerate() {
        for (j, e) in st.expect.iter().enumerate() {
            let at = format!("steps[{i}].expect[{j}]");
            let proto = e
                .protocol
                .parse::<Proto>()
                .map_err(|err| format!("{at}.protocol: {err}"))?;
            if proto != Proto::Icmp && e.port.is_none() {
                return Err(format!("{at}: port is required for {}", e.protocol));
            }
            for (from, row) in &e.reachability {
                if !endpoints.contains(from) {
                    return Err(format!("{at}.reachability: unknown pod {from:?}"));
                }
                for (to, v) in row {
                    if !endpoints.contains(to) {
                        return Err(format!("{at}.reachability.{from}: unknown pod {to:?}"));
                    }
                    if !matches!(v.as_str(), "allowed" | "blocked" | "ignored") {
                        return Err(format!(
                            "{at}.reachability.{from}.{to}: invalid value {v:?} (allowed | blocked | ignored)"
                        ));
                    }
                }
            }
        }
        if let Some(a) = &st.add_pod_labels
            && !sc.setup.pods.iter().any(|p| p.name == a.pod)
        {
            return Err(format!(
                "steps[{i}].add_pod_labels: unknown pod {:?}",
                a.pod
            ));
        }
        if let Some(a) = &st.add_namespace_labels
            && !sc.setup.namespaces.iter().any(|n| n.name == a.namespace)
        {
            return Err(format!(
                "steps[{i}].add_namespace_labels: unknown namespace {:?}",
                a.namespace
            ));
        }
    }
    Ok(())
}

fn label_map(
    labels: &BTreeMap<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    labels
        .iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), serde_json::Value::String(s))
        })
        .collect()
}

/// Replace `$(POD_IP ns/pod)`, `$(HOST_MASK)` and `$(SLASH4_CONTAINING POD_IP ns/pod)` in a
/// string.
pub fn substitute(s: &str, ips: &BTreeMap<String, Ipv4Addr>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find(')')
            .ok_or_else(|| format!("unterminated placeholder in {s:?}"))?;
        let words: Vec<&str> = after[..end].split_whitespace().collect();
        let ip_of = |name: &str| {
            ips.get(name)
                .copied()
                .ok_or_else(|| format!("placeholder names unknown pod {name:?}"))
        };
        let value = match words.as_slice() {
            ["POD_IP", pod] => ip_of(pod)?.to_string(),
            ["HOST_MASK"] => "32".to_string(),
            ["SLASH4_CONTAINING", "POD_IP", pod] => {
                let net = ipnet::Ipv4Net::new(ip_of(pod)?, 4)
                    .map_err(|e| e.to_string())?
                    .trunc();
                net.to_string()
            }
            _ => return Err(format!("unknown placeholder $({})", &after[..end])),
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute_value(
    v: &serde_json::Value,
    ips: &BTreeMap<String, Ipv4Addr>,
) -> Result<serde_json::Value, String> {
    Ok(match v {
        serde_json::Value::String(s) => serde_json::Value::String(substitute(s, ips)?),
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(|x| substitute_value(x, ips))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), substitute_value(x, ips)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn is_policy(doc: &serde_json::Value) -> bool {
    doc.get("kind")
        .and_then(|k| k.as_str())
        .is_some_and(|k| k.ends_with("NetworkPolicy"))
}

fn doc_key(doc: &serde_json::Value) -> (String, String, String) {
    let s = |p: &str| {
        doc.pointer(p)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

/// A probe endpoint: a pod or a host, its namespace and address.
#[derive(Debug, Clone)]
struct Endpoint {
    netns: String,
    ip: Ipv4Addr,
}

/// The live state of one scenario run.
struct Run<'a> {
    sc: &'a Scenario,
    lab: Lab,
    /// Namespace labels as currently applied.
    ns_labels: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    pod_labels: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    endpoints: BTreeMap<String, Endpoint>,
    ips: BTreeMap<String, Ipv4Addr>,
    /// Policies applied by steps and not deleted since (for `delete_all_policies`).
    policies: BTreeMap<(String, String, String), serde_json::Value>,
    /// Pod name -> node.
    placement: BTreeMap<String, String>,
    opts: &'a RunOptions,
}

/// Run one file.
pub fn run_file(path: &Path, opts: &RunOptions) -> CaseResult {
    let t0 = Instant::now();
    let mut res = CaseResult {
        file: path.display().to_string(),
        ..CaseResult::default()
    };
    let sc = match load(path) {
        Ok(sc) => sc,
        Err(e) => {
            res.error = Some(e.to_string());
            return res;
        }
    };
    res.id = sc.id.clone();
    if let Err(e) = run_scenario(&sc, opts, &mut res) {
        res.error = Some(e.to_string());
    }
    res.elapsed = t0.elapsed();
    res
}

fn node_names(sc: &Scenario, opts: &RunOptions) -> Vec<String> {
    if let Some(n) = opts.nodes {
        return (1..=n.max(1)).map(|i| format!("node-{i}")).collect();
    }
    match &sc.topology.nodes {
        Some(NodesSpec::Names(v)) if !v.is_empty() => v.clone(),
        Some(NodesSpec::Count(n)) => (1..=(*n).max(1)).map(|i| format!("node-{i}")).collect(),
        _ => vec!["node-1".into()],
    }
}

/// The scenario's pod placement on `nodes`: its own `node` when that node exists, else spread
/// (a `node-K` the overridden topology lacks maps to node `(K-1) mod n`).
fn place(sc: &Scenario, nodes: &[String]) -> Vec<String> {
    sc.setup
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.node {
            Some(n) if nodes.contains(n) => n.clone(),
            Some(n) => {
                let k = n
                    .rsplit('-')
                    .next()
                    .and_then(|k| k.parse::<usize>().ok())
                    .unwrap_or(i + 1);
                nodes[(k.max(1) - 1) % nodes.len()].clone()
            }
            None => nodes[i % nodes.len()].clone(),
        })
        .collect()
}

fn run_scenario(sc: &Scenario, opts: &RunOptions, res: &mut CaseResult) -> Result<(), LabError> {
    let nodes = node_names(sc, opts);
    let placement = place(sc, &nodes);
    let routing = match opts.routing {
        Some(r) => r,
        None => sc
            .topology
            .routing
            .as_deref()
            .map(|r| {
                r.parse().map_err(|e: String| LabError::Scenario {
                    file: sc.id.clone(),
                    detail: e,
                })
            })
            .transpose()?
            .unwrap_or(Routing::BgpMesh),
    };
    let datastore = match opts.datastore {
        Some(d) => d,
        None => sc
            .topology
            .datastore
            .as_deref()
            .map(|d| {
                d.parse().map_err(|e: String| LabError::Scenario {
                    file: sc.id.clone(),
                    detail: e,
                })
            })
            .transpose()?
            .unwrap_or(DatastoreKind::Embedded),
    };
    let mut spec = LabSpec::new(&names::ephemeral_lab_name(), nodes.len());
    spec.nodes = nodes;
    spec.routing = routing;
    spec.datastore = datastore;
    spec.server_ports = sc
        .setup
        .server_ports
        .iter()
        .map(|p| {
            (
                p.port,
                p.protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_ascii_uppercase(),
                p.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let mut lab = Lab::up(&spec)?;
    for st in &sc.steps {
        for e in &st.expect {
            if let Some(p) = e.port {
                lab.extra_serve_ports.insert(p);
            }
        }
    }
    let mut run = Run {
        sc,
        lab,
        ns_labels: BTreeMap::new(),
        pod_labels: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        ips: BTreeMap::new(),
        policies: BTreeMap::new(),
        placement: BTreeMap::new(),
        opts,
    };
    run.setup(&placement)?;
    for (i, step) in sc.steps.iter().enumerate() {
        run.step(i, step, res)?;
    }
    let lab = run.lab;
    lab.down()?;
    Ok(())
}

impl Run<'_> {
    fn namespace_doc(&self, ns: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": self.ns_labels.get(ns).cloned().unwrap_or_default()},
        })
    }

    fn pod_doc(&self, p: &PodSpec) -> Result<serde_json::Value, LabError> {
        let (ns, pod) = pod_parts(p).map_err(|d| LabError::Scenario {
            file: self.sc.id.clone(),
            detail: d,
        })?;
        let ports: Vec<serde_json::Value> = self
            .sc
            .setup
            .server_ports
            .iter()
            .map(|sp| {
                let mut port = serde_json::json!({
                    "containerPort": sp.port,
                    "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into()).to_ascii_uppercase(),
                });
                if let Some(n) = &sp.name {
                    port["name"] = n.clone().into();
                }
                port
            })
            .collect();
        let node = self.placement.get(&p.name).cloned().unwrap_or_default();
        let mut doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": ns,
                "labels": self.pod_labels.get(&p.name).cloned().unwrap_or_default(),
            },
            "spec": {
                "nodeName": node,
                "serviceAccountName": p.service_account.clone().unwrap_or_else(|| "default".into()),
                "containers": [{"name": "server", "image": "calico-lab", "ports": ports}],
            },
        });
        if let Some(ip) = self.ips.get(&p.name) {
            doc["status"] = serde_json::json!({"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]});
        }
        Ok(doc)
    }

    fn setup(&mut self, placement: &[String]) -> Result<(), LabError> {
        let sc = self.sc;
        let mut docs = Vec::new();
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        for n in &sc.setup.namespaces {
            self.ns_labels.insert(n.name.clone(), label_map(&n.labels));
            namespaces.insert(n.name.clone());
        }
        for p in &sc.setup.pods {
            let (ns, _) = pod_parts(p).map_err(|d| LabError::Scenario {
                file: sc.id.clone(),
                detail: d,
            })?;
            if namespaces.insert(ns.clone()) {
                // A pod in a namespace the setup does not list: the namespace exists anyway.
                let mut l = serde_json::Map::new();
                l.insert("kubernetes.io/metadata.name".into(), ns.clone().into());
                self.ns_labels.insert(ns.clone(), l);
            }
            self.pod_labels.insert(p.name.clone(), label_map(&p.labels));
        }
        for ns in &namespaces {
            docs.push(self.namespace_doc(ns));
        }
        let mut sas = BTreeSet::new();
        for p in &sc.setup.pods {
            let (ns, _) = pod_parts(p).unwrap_or_default();
            let sa = p
                .service_account
                .clone()
                .unwrap_or_else(|| "default".into());
            if sas.insert((ns.clone(), sa.clone())) {
                docs.push(serde_json::json!({
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": sa, "namespace": ns},
                }));
            }
        }
        self.lab.calicoctl_apply(&docs)?;
        // The API objects exist before the runtime networks the pods, as in Kubernetes.
        for (p, node) in sc.setup.pods.iter().zip(placement) {
            self.placement.insert(p.name.clone(), node.clone());
        }
        let pod_docs: Vec<serde_json::Value> = sc
            .setup
            .pods
            .iter()
            .map(|p| self.pod_doc(p))
            .collect::<Result<_, _>>()?;
        self.lab.calicoctl_apply(&pod_docs)?;
        for (p, node) in sc.setup.pods.iter().zip(placement) {
            let (ns, pod) = pod_parts(p).unwrap_or_default();
            let st = self.lab.add_pod(&ns, &pod, Some(node))?;
            let ip: Ipv4Addr = st.ip.parse().map_err(|_| {
                LabError::lab(
                    self.lab.name(),
                    format!("pod {}: not an IPv4 address {:?}", p.name, st.ip),
                )
            })?;
            self.ips.insert(p.name.clone(), ip);
            self.endpoints.insert(
                p.name.clone(),
                Endpoint {
                    netns: st.netns.clone(),
                    ip,
                },
            );
        }
        // Now with the pods' addresses and nodes (an update of existing endpoints).
        let pod_docs: Vec<serde_json::Value> = sc
            .setup
            .pods
            .iter()
            .map(|p| self.pod_doc(p))
            .collect::<Result<_, _>>()?;
        self.lab.calicoctl_apply(&pod_docs)?;
        for (i, h) in sc.setup.hosts.iter().enumerate() {
            let netns = self.add_host(i, h)?;
            self.endpoints.insert(
                h.name.clone(),
                Endpoint {
                    netns,
                    ip: h.address,
                },
            );
        }
        self.lab.wait_converged(self.opts.converge_timeout)?;
        self.lab.wait_pod_routes(Duration::from_secs(30))?;
        Ok(())
    }

    /// A host outside the cluster: a namespace on the fabric holding its address, routed from
    /// every node through the fabric, and routing every pod back through the pod's node.
    fn add_host(&mut self, i: usize, h: &HostSpec) -> Result<String, LabError> {
        let lab = self.lab.name().to_string();
        let ns = self.lab.add_host(i, &h.name, h.address, true)?;
        // The pod server is `calico-lab serve` (also when the lab runs inside a test binary).
        let me = bins::require("calico-lab")?;
        let mut argv = vec![me.display().to_string(), "serve".into()];
        let mut ports: BTreeSet<u16> = self.sc.setup.server_ports.iter().map(|p| p.port).collect();
        ports.extend(
            self.sc
                .steps
                .iter()
                .flat_map(|st| st.expect.iter().filter_map(|e| e.port)),
        );
        for p in ports {
            argv.push("--port".into());
            argv.push(p.to_string());
        }
        let log = self.lab.state.dir().join(format!("host-{}.log", h.name));
        let child = InNs {
            lab: &lab,
            netns: &ns,
            argv,
            env: vec![],
        }
        .spawn(&log)?;
        drop(child);
        Ok(ns)
    }

    fn step(&mut self, i: usize, step: &Step, res: &mut CaseResult) -> Result<(), LabError> {
        let file = self.sc.id.clone();
        let subst = |docs: &[serde_json::Value], ips: &BTreeMap<String, Ipv4Addr>| {
            docs.iter()
                .map(|d| substitute_value(d, ips))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|detail| LabError::Scenario {
                    file: file.clone(),
                    detail: format!("steps[{i}]: {detail}"),
                })
        };
        let t_apply = Instant::now();
        let create = subst(&step.create, &self.ips)?;
        self.lab.calicoctl_docs("create", &create)?;
        let update = subst(&step.update, &self.ips)?;
        self.lab.calicoctl_docs("apply", &update)?;
        for d in create.iter().chain(&update).filter(|d| is_policy(d)) {
            self.policies.insert(doc_key(d), d.clone());
        }
        let delete = subst(&step.delete, &self.ips)?;
        self.lab.calicoctl_docs("delete", &delete)?;
        for d in &delete {
            self.policies.remove(&doc_key(d));
        }
        if let Some(a) = &step.add_pod_labels {
            self.pod_labels
                .entry(a.pod.clone())
                .or_default()
                .extend(label_map(&a.labels));
            let p = self
                .sc
                .setup
                .pods
                .iter()
                .find(|p| p.name == a.pod)
                .cloned()
                .ok_or_else(|| LabError::Scenario {
                    file: file.clone(),
                    detail: format!("unknown pod {}", a.pod),
                })?;
            let doc = self.pod_doc(&p)?;
            self.lab.calicoctl_apply(&[doc])?;
        }
        if let Some(a) = &step.add_namespace_labels {
            self.ns_labels
                .entry(a.namespace.clone())
                .or_default()
                .extend(label_map(&a.labels));
            let doc = self.namespace_doc(&a.namespace);
            self.lab.calicoctl_apply(&[doc])?;
        }
        if step.delete_all_policies {
            let all: Vec<serde_json::Value> =
                std::mem::take(&mut self.policies).into_values().collect();
            self.lab.calicoctl_docs("delete", &all)?;
        }
        res.apply.push(t_apply.elapsed());
        let conv = self.lab.wait_converged(self.opts.converge_timeout)?;
        res.convergence.push(conv);
        let mut cells = Vec::new();
        for e in &step.expect {
            let proto: Proto = e.protocol.parse().map_err(|d| LabError::Scenario {
                file: file.clone(),
                detail: d,
            })?;
            let port = e.port.unwrap_or(0);
            for (from, row) in &e.reachability {
                for (to, v) in row {
                    let expected = match v.as_str() {
                        "allowed" => true,
                        "blocked" => false,
                        _ => continue,
                    };
                    cells.push((from.clone(), to.clone(), port, proto, expected));
                }
            }
        }
        res.cells += cells.len();
        let mut observed = self.probe_cells(&cells)?;
        if cells.iter().zip(&observed).all(|(c, o)| c.4 == *o) {
            res.first_round_ok += 1;
        }
        // Re-probe only the cells that differ, briefly: a late kernel update shows as a cell
        // that flips; a real mismatch stays.
        for _ in 0..2 {
            let wrong: Vec<_> = cells
                .iter()
                .zip(&observed)
                .filter(|(c, o)| c.4 != **o)
                .map(|(c, _)| c.clone())
                .collect();
            if wrong.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            let again = self.probe_cells(&wrong)?;
            for (c, o) in wrong.iter().zip(again) {
                if let Some(idx) = cells.iter().position(|x| x == c) {
                    observed[idx] = o;
                }
            }
        }
        for (c, o) in cells.iter().zip(observed) {
            if c.4 != o {
                res.mismatches.push(Mismatch {
                    step: i,
                    port: c.2,
                    protocol: c.3.as_str().into(),
                    from: c.0.clone(),
                    to: c.1.clone(),
                    expected: c.4,
                    observed: o,
                });
            }
        }
        Ok(())
    }

    fn probe_cells(
        &self,
        cells: &[(String, String, u16, Proto, bool)],
    ) -> Result<Vec<bool>, LabError> {
        probe_many(
            &cells
                .iter()
                .map(|(from, to, port, proto, _)| {
                    let src = self.endpoints.get(from).ok_or_else(|| LabError::Scenario {
                        file: self.sc.id.clone(),
                        detail: format!("unknown pod {from}"),
                    })?;
                    let dst = self.endpoints.get(to).ok_or_else(|| LabError::Scenario {
                        file: self.sc.id.clone(),
                        detail: format!("unknown pod {to}"),
                    })?;
                    Ok((src.netns.clone(), dst.ip, *port, *proto))
                })
                .collect::<Result<Vec<_>, LabError>>()?,
            self.opts.probe_timeout,
        )
    }
}

/// Probe every (source namespace, destination, port, protocol) at once; results in order.
pub fn probe_many(
    probes: &[(String, Ipv4Addr, u16, Proto)],
    timeout: Duration,
) -> Result<Vec<bool>, LabError> {
    let mut handles = BTreeMap::new();
    for (ns, ..) in probes {
        if !handles.contains_key(ns) {
            handles.insert(ns.clone(), NetNs::named(ns)?);
        }
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = probes
            .iter()
            .map(|(ns, dst, port, proto)| {
                let h = handles.get(ns);
                s.spawn(move || match h {
                    Some(h) => probe::probe(h, *dst, *port, *proto, timeout),
                    None => Ok(false),
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(LabError::command("probe", "probe thread panicked")))
            })
            .collect()
    })
}

/// A case's report: a PASS line, or FAIL with every mismatching cell (or the error).
pub fn render_case(r: &CaseResult) -> String {
    let id = if r.id.is_empty() { &r.file } else { &r.id };
    let mut out = String::new();
    if r.passed() {
        out.push_str(&format!(
            "PASS {id} ({} cells, {:.1}s)\n",
            r.cells,
            r.elapsed.as_secs_f64()
        ));
        return out;
    }
    out.push_str(&format!("FAIL {id} ({})\n", r.file));
    for m in &r.mismatches {
        out.push_str(&format!("  {m}\n"));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

/// Run files (`jobs` at a time), calling `report` as each finishes.
pub fn run_files(
    files: &[PathBuf],
    opts: &RunOptions,
    mut report: impl FnMut(&CaseResult) + Send,
) -> Vec<CaseResult> {
    let queue = std::sync::Mutex::new(files.iter().enumerate().rev().collect::<Vec<_>>());
    let (tx, rx) = std::sync::mpsc::channel::<(usize, CaseResult)>();
    let mut results: Vec<Option<CaseResult>> = vec![None; files.len()];
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            let tx = tx.clone();
            let queue = &queue;
            s.spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((i, f)) = next else { break };
                    let r = run_file(f, opts);
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            report(&r);
            results[i] = Some(r);
        }
    });
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let mut ips = BTreeMap::new();
        ips.insert("y/b".to_string(), Ipv4Addr::new(10, 244, 3, 7));
        assert_eq!(
            substitute("$(POD_IP y/b)/$(HOST_MASK)", &ips).unwrap(),
            "10.244.3.7/32"
        );
        assert_eq!(
            substitute("$(SLASH4_CONTAINING POD_IP y/b)", &ips).unwrap(),
            "0.0.0.0/4"
        );
        assert!(
            substitute("$(POD_IP z/z)", &ips)
                .unwrap_err()
                .contains("z/z")
        );
        assert!(substitute("$(NOPE)", &ips).unwrap_err().contains("NOPE"));
        assert_eq!(substitute("plain", &ips).unwrap(), "plain");
    }

    #[test]
    fn placement_spreads_and_maps_missing_nodes() {
        let sc: Scenario = serde_json::from_value(serde_json::json!({
            "id": "t",
            "setup": {"pods": [
                {"name": "x/a", "node": "node-2"},
                {"name": "x/b"},
                {"name": "x/c"},
            ]},
        }))
        .unwrap();
        let one = vec!["node-1".to_string()];
        assert_eq!(place(&sc, &one), vec!["node-1"; 3]);
        let three: Vec<String> = (1..=3).map(|i| format!("node-{i}")).collect();
        assert_eq!(place(&sc, &three), vec!["node-2", "node-2", "node-3"]);
    }

    #[test]
    fn bad_cells_are_named() {
        let sc: Scenario = serde_json::from_value(serde_json::json!({
            "id": "t",
            "setup": {"pods": [{"name": "x/a"}]},
            "steps": [{"expect": [{"port": 80, "protocol": "TCP",
                "reachability": {"x/a": {"x/q": "allowed"}}}]}],
        }))
        .unwrap();
        assert!(validate(&sc).unwrap_err().contains("x/q"));
    }
}

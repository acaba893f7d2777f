//! A lab: bring-up, pods through the real CNI plugin, the datastore and Felix status seams,
//! and teardown.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Child;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use calico_datastore::config::{DatastoreConfig, connect};
use calico_linux::NetNs;
use ipnet::IpNet;
use serde::Deserialize;

use crate::error::LabError;
use crate::fabric;
use crate::names;
use crate::procs::{self, InNs};
use crate::state::{LabState, NodeState, OwnerLock, Phase, PodState};
use crate::{bins, sweep};

/// The node agent the lab runs in every node namespace: the first of these that exists.
/// `calico-node` (CONTRACTS.md §3) runs Felix and BIRD itself; `calico-felix` alone gives
/// policy without BGP routes (VXLAN routes once Felix runs felix-routes).
const NODE_AGENTS: &[&str] = &["calico-node", "calico-felix"];

/// Felix's health server, inside every node namespace.
pub const FELIX_HEALTH_PORT: u16 = 9099;
const ETCD_CLIENT_PORT: u16 = 2379;
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    BgpMesh,
    BgpRouteReflector,
    Vxlan,
}

impl Routing {
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::BgpMesh => "bgp-mesh",
            Routing::BgpRouteReflector => "bgp-route-reflector",
            Routing::Vxlan => "vxlan",
        }
    }
}

impl FromStr for Routing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bgp-mesh" => Ok(Routing::BgpMesh),
            "bgp-route-reflector" => Ok(Routing::BgpRouteReflector),
            "vxlan" => Ok(Routing::Vxlan),
            other => Err(format!(
                "invalid routing {other:?}: expected bgp-mesh, bgp-route-reflector or vxlan"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatastoreKind {
    Embedded,
    Etcd,
}

impl DatastoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatastoreKind::Embedded => "embedded",
            DatastoreKind::Etcd => "etcd",
        }
    }
}

impl FromStr for DatastoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(DatastoreKind::Embedded),
            "etcd" | "etcdv3" => Ok(DatastoreKind::Etcd),
            other => Err(format!(
                "invalid datastore {other:?}: expected embedded or etcd"
            )),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub name: String,
    pub nodes: Vec<String>,
    pub routing: Routing,
    pub datastore: DatastoreKind,
    /// Survives the creating process (CLI `up`); otherwise torn down when the `Lab` drops.
    pub persistent: bool,
    /// Ports every pod serves on TCP, UDP and SCTP: (port, protocol, name) — the protocol and
    /// name are what the pod's endpoint declares as named ports.
    pub server_ports: Vec<(u16, String, String)>,
    /// With `bgp-route-reflector`: how many nodes (the first ones) are route reflectors.
    pub route_reflectors: usize,
}

impl LabSpec {
    pub fn new(name: &str, nodes: usize) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            nodes: (1..=nodes.max(1)).map(|i| format!("node-{i}")).collect(),
            routing: Routing::BgpMesh,
            datastore: DatastoreKind::Embedded,
            persistent: false,
            server_ports: vec![
                (80, "TCP".into(), "serve-80-tcp".into()),
                (81, "TCP".into(), "serve-81-tcp".into()),
            ],
            route_reflectors: 1,
        }
    }
}

/// Felix's `/status` (CONTRACTS.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct FelixStatus {
    pub ready: bool,
    pub in_sync: bool,
    pub applied_revision: i64,
}

/// A running lab. Dropping an ephemeral lab tears it down.
pub struct Lab {
    pub state: LabState,
    children: Mutex<Vec<Child>>,
    owner: Option<OwnerLock>,
    /// Extra ports the pod servers listen on (beyond `server_ports`), e.g. every port a
    /// scenario probes.
    pub extra_serve_ports: BTreeSet<u16>,
}

impl Lab {
    /// Build a lab: fabric, nodes, datastore, agents. On failure everything created so far is
    /// removed.
    pub fn up(spec: &LabSpec) -> Result<Lab, LabError> {
        names::validate_lab_name(&spec.name)?;
        if spec.nodes.is_empty() {
            return Err(LabError::lab(&spec.name, "at least one node is needed"));
        }
        if crate::state::LabState::path(&spec.name).exists()
            || calico_linux::netns::list_named()?
                .iter()
                .any(|n| names::lab_of_netns(n) == Some(spec.name.as_str()))
        {
            return Err(LabError::lab(
                &spec.name,
                "already exists (calico-lab down --name it first)",
            ));
        }
        let owner = OwnerLock::acquire(&spec.name)?;
        let state = LabState {
            name: spec.name.clone(),
            phase: Phase::Starting,
            persistent: spec.persistent,
            routing: spec.routing.as_str().into(),
            datastore: spec.datastore.as_str().into(),
            subnet: fabric::SUBNET.into(),
            pool_cidr: fabric::POOL_CIDR.into(),
            fabric_netns: names::fabric_ns(&spec.name),
            nodes: spec
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| NodeState {
                    name: n.clone(),
                    netns: names::node_ns(&spec.name, n),
                    ip: fabric::node_ip(i + 1),
                    agent: "none".into(),
                    pid: None,
                })
                .collect(),
            pods: BTreeMap::new(),
            etcd_pid: None,
            etcd_endpoint: None,
            server_ports: spec.server_ports.clone(),
            next_container: 1,
        };
        state.save()?;
        let mut lab = Lab {
            state,
            children: Mutex::new(Vec::new()),
            owner: Some(owner),
            extra_serve_ports: BTreeSet::new(),
        };
        match lab.bring_up(spec) {
            Ok(()) => {
                lab.state.phase = Phase::Ready;
                lab.state.save()?;
                if spec.persistent {
                    lab.owner = None;
                }
                Ok(lab)
            }
            Err(e) => {
                tracing::warn!(lab = %spec.name, error = %e, "up failed; tearing down");
                lab.teardown();
                Err(e)
            }
        }
    }

    /// Open an existing lab from its state file (CLI invocations after `up`).
    pub fn open(name: &str) -> Result<Lab, LabError> {
        names::validate_lab_name(name)?;
        let state = LabState::load(name)?;
        Ok(Lab {
            state,
            children: Mutex::new(Vec::new()),
            owner: None,
            extra_serve_ports: BTreeSet::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    fn log_path(&self, what: &str) -> std::path::PathBuf {
        self.state.dir().join(format!("{what}.log"))
    }

    fn bring_up(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        let t0 = Instant::now();
        let fab = self.state.fabric_netns.clone();
        fabric::create_fabric(&fab)?;
        for (i, node) in self.state.nodes.iter().enumerate() {
            fabric::create_node(&fab, &node.netns, i + 1, &node.ip)?;
        }
        tracing::info!(lab = %self.name(), nodes = self.state.nodes.len(), elapsed = ?t0.elapsed(), "namespaces wired");
        if spec.datastore == DatastoreKind::Etcd {
            self.start_etcd()?;
            tracing::info!(lab = %self.name(), elapsed = ?t0.elapsed(), "etcd healthy");
        }
        self.state.save()?;
        self.apply_cluster_config(spec.routing)?;
        let agent = NODE_AGENTS.iter().find(|a| bins::find(a).is_some());
        for i in 0..self.state.nodes.len() {
            let (pid, name) = match agent {
                Some(a) => (Some(self.start_node_agent(i, a, spec.routing)?), *a),
                None => (None, "none"),
            };
            self.state.nodes[i].pid = pid;
            self.state.nodes[i].agent = name.to_string();
        }
        self.state.save()?;
        if agent.is_none() {
            tracing::warn!(
                lab = %self.name(),
                "neither calico-node nor calico-felix found: pods get networking but no policy or routes"
            );
        } else {
            self.wait_agents_ready(Duration::from_secs(60))?;
            tracing::info!(lab = %self.name(), elapsed = ?t0.elapsed(), "node agents ready");
        }
        if spec.routing == Routing::BgpRouteReflector && agent == Some(&"calico-node") {
            self.make_route_reflectors(spec.route_reflectors)?;
        }
        Ok(())
    }

    /// Datastore settings every lab process gets (the calicoctl/Felix/CNI environment).
    pub fn datastore_env(&self) -> Vec<(String, String)> {
        match &self.state.etcd_endpoint {
            Some(ep) if self.state.datastore == "etcd" => vec![
                ("DATASTORE_TYPE".into(), "etcdv3".into()),
                ("ETCD_ENDPOINTS".into(), ep.clone()),
            ],
            _ => {
                let db = self.state.dir().join("calico.db").display().to_string();
                vec![
                    ("DATASTORE_TYPE".into(), "embedded".into()),
                    ("CALICO_DATASTORE_PATH".into(), db.clone()),
                    ("DATASTORE_PATH".into(), db),
                ]
            }
        }
    }

    fn start_etcd(&mut self) -> Result<(), LabError> {
        let etcd = bins::require("etcd")?;
        let dir = self.state.dir().join("etcd");
        let fab_ip = fabric::fabric_ip();
        let client = format!("http://{fab_ip}:{ETCD_CLIENT_PORT}");
        let args = procs::argv([
            etcd.display().to_string(),
            "--name".into(),
            "lab".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen-client-urls".into(),
            format!("{client},http://127.0.0.1:{ETCD_CLIENT_PORT}"),
            "--advertise-client-urls".into(),
            client.clone(),
            "--listen-peer-urls".into(),
            "http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls".into(),
            "http://127.0.0.1:2380".into(),
            "--initial-cluster".into(),
            "lab=http://127.0.0.1:2380".into(),
            "--heartbeat-interval=10".into(),
            "--election-timeout=100".into(),
            "--log-level=warn".into(),
        ]);
        let child = InNs {
            lab: &self.state.name,
            netns: &self.state.fabric_netns,
            argv: args,
            env: vec![(
                "ETCD_UNSUPPORTED_ARCH".into(),
                std::env::consts::ARCH.into(),
            )],
        }
        .spawn(&self.log_path("etcd"))?;
        self.state.etcd_pid = Some(child.id());
        self.state.etcd_endpoint = Some(client);
        self.keep(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], ETCD_CLIENT_PORT));
        wait_for(
            "etcd /health",
            Duration::from_secs(20),
            || match fabric::http_get(
                &self.state.fabric_netns,
                addr,
                "/health",
                Duration::from_millis(500),
            ) {
                Ok((200, body)) if body.contains("true") => Ok(true),
                _ => Ok(false),
            },
        )
    }

    /// The pool, and BGP settings for the chosen routing mode, before any agent starts.
    fn apply_cluster_config(&self, routing: Routing) -> Result<(), LabError> {
        let vxlan = if routing == Routing::Vxlan {
            "Always"
        } else {
            "Never"
        };
        let mut docs = vec![serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "lab-ipv4-pool"},
            "spec": {
                "cidr": fabric::POOL_CIDR,
                "blockSize": fabric::POOL_BLOCK_SIZE,
                "ipipMode": "Never",
                "vxlanMode": vxlan,
                "natOutgoing": false,
                "nodeSelector": "all()",
            }
        })];
        if routing == Routing::BgpRouteReflector {
            docs.push(serde_json::json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPConfiguration",
                "metadata": {"name": "default"},
                "spec": {"nodeToNodeMeshEnabled": false, "asNumber": 64512}
            }));
            docs.push(serde_json::json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": "lab-peer-with-rr"},
                "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}
            }));
        }
        self.calicoctl_apply(&docs)
    }

    /// The first `count` nodes become route reflectors once calico-node has registered their
    /// Nodes, as upstream's docs do it: one `routeReflectorClusterID` shared by the reflectors
    /// and the label `route-reflector=true`, which the `lab-peer-with-rr` BGPPeer selects.
    fn make_route_reflectors(&self, count: usize) -> Result<(), LabError> {
        if count == 0 || count > self.state.nodes.len() {
            return Err(LabError::lab(
                self.name(),
                format!(
                    "route_reflectors {count}: expected 1..={} (the node count)",
                    self.state.nodes.len()
                ),
            ));
        }
        for node in self.state.nodes.iter().take(count) {
            let name = node.name.clone();
            wait_for(
                &format!("Node {name} registered"),
                Duration::from_secs(30),
                || Ok(self.calicoctl(&["get", "node", &name], None).is_ok()),
            )?;
            self.calicoctl(
                &[
                    "patch",
                    "node",
                    &name,
                    "-p",
                    r#"{"metadata":{"labels":{"route-reflector":"true"}},"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}"#,
                ],
                None,
            )?;
        }
        Ok(())
    }

    /// `calicoctl <args>` inside node `node`'s namespace with that node's `CALICO_RUN_DIR`
    /// (`nodes/<node>/`, where its `bird.ctl` is): what `calicoctl node status` needs.
    pub fn node_calicoctl(&self, node: &str, args: &[&str]) -> Result<String, LabError> {
        let st = self
            .state
            .node(node)
            .ok_or_else(|| LabError::lab(self.name(), format!("no node {node:?}")))?;
        let bin = bins::require("calicoctl")?;
        let mut argv = vec![bin.display().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut env = self.datastore_env();
        env.push((
            "CALICO_RUN_DIR".into(),
            self.node_run_dir(node).display().to_string(),
        ));
        InNs {
            lab: &self.state.name,
            netns: &st.netns,
            argv,
            env,
        }
        .run_ok(None, CMD_TIMEOUT)
    }

    /// A node's `CALICO_RUN_DIR`.
    pub fn node_run_dir(&self, node: &str) -> std::path::PathBuf {
        self.state.dir().join("nodes").join(node)
    }

    /// A host outside the cluster (the `i`th, 0-based): namespace `<prefix>h-<name>` on the
    /// fabric, lab address `fabric::host_ip(i)` plus `address`/32 on its `eth0`; every node
    /// routes `address` through the fabric to it. With `route_pods` it also routes every
    /// current pod back through the pod's node (source `address`); without, it has no route to
    /// any pod (a reply to a pod address goes nowhere), as an outside host of a natOutgoing
    /// cluster. Returns the namespace.
    pub fn add_host(
        &self,
        i: usize,
        name: &str,
        address: std::net::Ipv4Addr,
        route_pods: bool,
    ) -> Result<String, LabError> {
        let ns = format!("{}h-{name}", names::lab_prefix(self.name()));
        fabric::create_ns(&ns)?;
        let fab = self.state.fabric_netns.clone();
        let peer = format!("vh{i}");
        let lab_ip = fabric::host_ip(i);
        procs::ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &peer, "netns", &fab,
        ])?;
        procs::ip(&[
            "-n",
            &fab,
            "link",
            "set",
            &peer,
            "master",
            fabric::BRIDGE,
            "up",
        ])?;
        procs::ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{lab_ip}/24"),
            "dev",
            "eth0",
        ])?;
        procs::ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{address}/32"),
            "dev",
            "eth0",
        ])?;
        procs::ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        if route_pods {
            for p in self.state.pods.values() {
                if let Some(node) = self.state.node(&p.node) {
                    procs::ip(&[
                        "-n",
                        &ns,
                        "route",
                        "add",
                        &format!("{}/32", p.ip),
                        "via",
                        &node.ip,
                        "src",
                        &address.to_string(),
                    ])?;
                }
            }
        }
        for node in &self.state.nodes {
            procs::ip(&[
                "-n",
                &node.netns,
                "route",
                "add",
                &format!("{address}/32"),
                "via",
                &lab_ip,
            ])?;
        }
        Ok(ns)
    }

    /// Start the agent of node `i`. The one place that knows how each agent is configured.
    fn start_node_agent(
        &mut self,
        i: usize,
        agent: &str,
        routing: Routing,
    ) -> Result<u32, LabError> {
        let bin = bins::require(agent)?;
        let node = self.state.nodes[i].clone();
        let run_dir = self.node_run_dir(&node.name);
        std::fs::create_dir_all(&run_dir).map_err(|e| LabError::io(&run_dir, e))?;
        let mut env = self.datastore_env();
        let backend = match routing {
            Routing::Vxlan => "vxlan",
            _ => "bird",
        };
        env.extend(
            [
                ("NODENAME", node.name.clone()),
                ("FELIX_FELIXHOSTNAME", node.name.clone()),
                ("IP", format!("{}/24", node.ip)),
                ("AS", "64512".into()),
                ("CLUSTER_TYPE", "k8s".into()),
                ("CALICO_NETWORKING_BACKEND", backend.into()),
                ("NO_DEFAULT_POOLS", "true".into()),
                ("CALICO_RUN_DIR", run_dir.display().to_string()),
                ("FELIX_HEALTHENABLED", "true".into()),
                ("FELIX_HEALTHHOST", "127.0.0.1".into()),
                ("FELIX_HEALTHPORT", FELIX_HEALTH_PORT.to_string()),
                (
                    "FELIX_ENDPOINTSTATUSPATHPREFIX",
                    run_dir.display().to_string(),
                ),
                ("FELIX_LOGSEVERITYSCREEN", "info".into()),
                ("FELIX_DEFAULTENDPOINTTOHOSTACTION", "ACCEPT".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
        );
        let child = InNs {
            lab: &self.state.name,
            netns: &node.netns,
            argv: procs::argv([bin.display().to_string()]),
            env,
        }
        .spawn(&self.log_path(&format!("{}-{agent}", node.name)))?;
        let pid = child.id();
        self.keep(child);
        Ok(pid)
    }

    fn keep(&self, child: Child) {
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
    }

    /// Felix's `/status` on one node.
    pub fn felix_status(&self, node: &NodeState) -> Result<FelixStatus, LabError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], FELIX_HEALTH_PORT));
        let (code, body) =
            fabric::http_get(&node.netns, addr, "/status", Duration::from_millis(800))?;
        if code != 200 {
            return Err(LabError::command(
                format!("node {}: GET /status", node.name),
                format!("HTTP {code}: {body}"),
            ));
        }
        serde_json::from_str(&body).map_err(|source| LabError::Json {
            what: format!("node {}: /status body", node.name),
            source,
        })
    }

    fn has_agents(&self) -> bool {
        self.state.nodes.iter().any(|n| n.agent != "none")
    }

    fn wait_agents_ready(&self, timeout: Duration) -> Result<(), LabError> {
        wait_for("node agents ready", timeout, || {
            for node in &self.state.nodes {
                if let Some(pid) = node.pid
                    && !procs::alive(pid)
                {
                    return Err(LabError::lab(
                        self.name(),
                        format!(
                            "node {}: {} exited; see {}",
                            node.name,
                            node.agent,
                            self.log_path(&format!("{}-{}", node.name, node.agent))
                                .display()
                        ),
                    ));
                }
                match self.felix_status(node) {
                    Ok(s) if s.ready && s.in_sync => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        })
    }

    /// The datastore's current revision, read from inside the lab (etcd listens there).
    pub fn datastore_revision(&self) -> Result<i64, LabError> {
        let env: BTreeMap<String, String> = self.datastore_env().into_iter().collect();
        let cfg =
            DatastoreConfig::from_env(&env).map_err(|e| LabError::Datastore(e.to_string()))?;
        let fab = NetNs::named(&self.state.fabric_netns)?;
        fab.run_async(|| async move {
            let kv = connect(&cfg)
                .await
                .map_err(|e| LabError::Datastore(e.to_string()))?;
            kv.current_revision()
                .await
                .map_err(|e| LabError::Datastore(e.to_string()))
        })?
    }

    /// Wait until every node's Felix has applied the datastore's current revision. Returns the
    /// time it took. Without agents there is nothing to wait for.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration, LabError> {
        let t0 = Instant::now();
        if !self.has_agents() {
            return Ok(t0.elapsed());
        }
        let rev = self.datastore_revision()?;
        let mut last = BTreeMap::new();
        let r = wait_for("convergence", timeout, || {
            for node in &self.state.nodes {
                match self.felix_status(node) {
                    Ok(s) => {
                        last.insert(node.name.clone(), format!("{s:?}"));
                        if !(s.ready && s.in_sync && s.applied_revision >= rev) {
                            return Ok(false);
                        }
                    }
                    Err(e) => {
                        last.insert(node.name.clone(), e.to_string());
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        });
        match r {
            Ok(()) => Ok(t0.elapsed()),
            Err(LabError::Timeout { what, secs, .. }) => Err(LabError::Timeout {
                what,
                secs,
                detail: format!("datastore revision {rev}; nodes: {last:?}"),
            }),
            Err(e) => Err(e),
        }
    }

    /// `calicoctl <args>` against the lab's datastore, run inside the fabric namespace.
    pub fn calicoctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String, LabError> {
        let bin = bins::require("calicoctl")?;
        let mut argv = vec![bin.display().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        InNs {
            lab: &self.state.name,
            netns: &self.state.fabric_netns,
            argv,
            env: self.datastore_env(),
        }
        .run_ok(stdin, CMD_TIMEOUT)
    }

    /// `calicoctl apply -f -` of these documents.
    pub fn calicoctl_apply(&self, docs: &[serde_json::Value]) -> Result<(), LabError> {
        self.calicoctl_docs("apply", docs)
    }

    /// `calicoctl <verb> -f -` (apply, create, replace, delete) of these documents.
    pub fn calicoctl_docs(&self, verb: &str, docs: &[serde_json::Value]) -> Result<(), LabError> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for d in docs {
            text.push_str("---\n");
            text.push_str(&d.to_string());
            text.push('\n');
        }
        self.calicoctl(&[verb, "-f", "-"], Some(text.as_bytes()))
            .map(|_| ())
    }

    /// The node a new pod goes to when none is named: the one with the fewest pods.
    pub fn pick_node(&self) -> String {
        let mut count: BTreeMap<&str, usize> = self
            .state
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), 0))
            .collect();
        for p in self.state.pods.values() {
            if let Some(c) = count.get_mut(p.node.as_str()) {
                *c += 1;
            }
        }
        self.state
            .nodes
            .iter()
            .min_by_key(|n| count.get(n.name.as_str()).copied().unwrap_or(0))
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    fn cni_conf(&self, node: &str) -> serde_json::Value {
        let mut conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "calico",
            "nodename": node,
            "mtu": if self.state.routing == "vxlan" { 1450 } else { 1500 },
            "ipam": {"type": "calico-ipam"},
            "policy": {"type": "k8s"},
            "log_level": "warning",
        });
        match &self.state.etcd_endpoint {
            Some(ep) if self.state.datastore == "etcd" => {
                conf["datastore_type"] = "etcdv3".into();
                conf["etcd_endpoints"] = ep.clone().into();
            }
            _ => {
                conf["datastore_type"] = "embedded".into();
                conf["datastore_path"] = self
                    .state
                    .dir()
                    .join("calico.db")
                    .display()
                    .to_string()
                    .into();
            }
        }
        conf
    }

    /// Run the `calico` CNI plugin in the pod's node namespace, as a runtime would.
    fn cni(&self, command: &str, pod: &PodState) -> Result<String, LabError> {
        let bin = bins::require("calico")?;
        let dir = bin
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let node = self
            .state
            .node(&pod.node)
            .ok_or_else(|| LabError::lab(self.name(), format!("no node {}", pod.node)))?;
        let env = vec![
            ("CNI_COMMAND".to_string(), command.to_string()),
            ("CNI_CONTAINERID".into(), pod.container_id.clone()),
            ("CNI_NETNS".into(), format!("/var/run/netns/{}", pod.netns)),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_PATH".into(), dir),
            (
                "CNI_ARGS".into(),
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    pod.namespace, pod.pod, pod.container_id
                ),
            ),
        ];
        let conf = self.cni_conf(&node.name).to_string();
        InNs {
            lab: &self.state.name,
            netns: &node.netns,
            argv: procs::argv([bin.display().to_string()]),
            env,
        }
        .run_ok(Some(conf.as_bytes()), CMD_TIMEOUT)
        .map_err(|e| {
            LabError::lab(
                self.name(),
                format!("CNI {command} {}/{}: {e}", pod.namespace, pod.pod),
            )
        })
    }

    /// Ports the pod servers listen on (TCP, UDP and SCTP each).
    fn serve_ports(&self) -> BTreeSet<u16> {
        let mut ports: BTreeSet<u16> = self.state.server_ports.iter().map(|p| p.0).collect();
        ports.extend(self.extra_serve_ports.iter().copied());
        ports
    }

    /// Create a pod: its namespace, CNI ADD on its node, the server process inside it.
    pub fn add_pod(
        &mut self,
        namespace: &str,
        pod: &str,
        node: Option<&str>,
    ) -> Result<PodState, LabError> {
        let key = format!("{namespace}/{pod}");
        if self.state.pods.contains_key(&key) {
            return Err(LabError::lab(self.name(), format!("pod {key} exists")));
        }
        let node = match node {
            Some(n) => {
                if self.state.node(n).is_none() {
                    return Err(LabError::lab(
                        self.name(),
                        format!("pod {key}: no node {n:?}"),
                    ));
                }
                n.to_string()
            }
            None => self.pick_node(),
        };
        let seq = self.state.next_container;
        self.state.next_container += 1;
        let mut ps = PodState {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            node,
            netns: names::pod_ns(&self.state.name, namespace, pod),
            container_id: format!("{:0>64}", format!("{seq:x}")),
            ip: String::new(),
            server_pid: None,
        };
        fabric::create_ns(&ps.netns)?;
        let result = match self.cni("ADD", &ps) {
            Ok(r) => r,
            Err(e) => {
                let _ = calico_linux::netns::delete_named(&ps.netns);
                return Err(e);
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&result).map_err(|source| LabError::Json {
                what: format!("CNI ADD {key} result"),
                source,
            })?;
        let addr = v["ips"][0]["address"].as_str().unwrap_or_default();
        ps.ip = addr.split('/').next().unwrap_or_default().to_string();
        if ps.ip.is_empty() {
            return Err(LabError::lab(
                self.name(),
                format!("CNI ADD {key}: no address in {result}"),
            ));
        }
        // The pod server is `calico-lab serve` (also when the lab runs inside a test binary).
        let me = bins::require("calico-lab")?;
        let mut argv = vec![me.display().to_string(), "serve".into()];
        for p in self.serve_ports() {
            argv.push("--port".into());
            argv.push(p.to_string());
        }
        let child = InNs {
            lab: &self.state.name,
            netns: &ps.netns,
            argv,
            env: vec![],
        }
        .spawn(&self.log_path(&format!("pod-{namespace}-{pod}")))?;
        ps.server_pid = Some(child.id());
        self.keep(child);
        self.state.pods.insert(key, ps.clone());
        self.state.save()?;
        Ok(ps)
    }

    /// Delete a pod: CNI DEL, its server, its namespace.
    pub fn del_pod(&mut self, key: &str) -> Result<(), LabError> {
        let ps = self
            .state
            .pods
            .get(key)
            .cloned()
            .ok_or_else(|| LabError::lab(self.name(), format!("no pod {key}")))?;
        let r = self.cni("DEL", &ps);
        let pids = procs::in_netns(&ps.netns);
        procs::stop(&pids, Duration::from_millis(300));
        self.reap();
        let _ = calico_linux::netns::delete_named(&ps.netns);
        self.state.pods.remove(key);
        self.state.save()?;
        r.map(|_| ())
    }

    /// Wait until every node routes every other node's pods through the lab (BGP or VXLAN),
    /// not through its default route.
    pub fn wait_pod_routes(&self, timeout: Duration) -> Result<(), LabError> {
        if !self.has_agents() || self.state.nodes.len() < 2 {
            return Ok(());
        }
        let mut missing = Vec::new();
        let r = wait_for("pod routes between nodes", timeout, || {
            missing.clear();
            for node in &self.state.nodes {
                let dsts = routed_prefixes(&node.netns)?;
                for p in self.state.pods.values().filter(|p| p.node != node.name) {
                    let Ok(ip) = p.ip.parse::<std::net::IpAddr>() else {
                        continue;
                    };
                    if !dsts.iter().any(|n| n.contains(&ip)) {
                        missing.push(format!(
                            "{} -> {}/{} ({})",
                            node.name, p.namespace, p.pod, p.ip
                        ));
                    }
                }
            }
            Ok(missing.is_empty())
        });
        match r {
            Err(LabError::Timeout { what, secs, .. }) => Err(LabError::Timeout {
                what,
                secs,
                detail: format!("no route: {}", missing.join(", ")),
            }),
            other => other,
        }
    }

    fn reap(&self) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }

    /// Stop everything and remove the lab (namespaces, processes, state dir).
    pub fn down(mut self) -> Result<sweep::TeardownReport, LabError> {
        self.owner = None;
        let r = self.teardown_inner();
        std::mem::forget(self);
        r
    }

    fn teardown(&mut self) {
        if let Err(e) = self.teardown_inner() {
            tracing::warn!(lab = %self.state.name, error = %e, "teardown failed");
        }
    }

    fn teardown_inner(&mut self) -> Result<sweep::TeardownReport, LabError> {
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        let report = sweep::teardown(&self.state.name);
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.owner = None;
        report
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owner.is_some() && !self.state.persistent {
            self.teardown();
        } else {
            // Children of a persistent lab keep running; just reap the exited ones.
            self.reap();
        }
    }
}

/// Destination prefixes a node routes somewhere real (not its default route, not a
/// blackhole or unreachable route).
fn routed_prefixes(ns: &str) -> Result<Vec<IpNet>, LabError> {
    let out = procs::ip(&["-n", ns, "-j", "route", "show"])?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    Ok(v.iter()
        .filter(|r| {
            r.get("type")
                .and_then(|t| t.as_str())
                .is_none_or(|t| t == "unicast")
        })
        .filter_map(|r| r.get("dst")?.as_str())
        .filter(|d| *d != "default")
        .filter_map(|d| {
            d.parse::<IpNet>()
                .ok()
                .or_else(|| d.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        })
        .collect())
}

/// Poll `check` every 50 ms until it says true, fails, or `timeout` passes.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool, LabError>,
) -> Result<(), LabError> {
    let t0 = Instant::now();
    loop {
        if check()? {
            return Ok(());
        }
        if t0.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs_f64(),
                detail: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Lab {
    /// A pod the Kubernetes way: its Namespace and Pod objects through calicoctl (labels reach
    /// the endpoint through the Kubernetes translation), then the runtime's CNI ADD, then the
    /// Pod again with its node and address.
    pub fn add_pod_k8s(
        &mut self,
        namespace: &str,
        pod: &str,
        node: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<PodState, LabError> {
        let node = node.map(str::to_string).unwrap_or_else(|| self.pick_node());
        let ns_doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}},
        });
        let ports: Vec<serde_json::Value> = self
            .state
            .server_ports
            .iter()
            .map(|(port, proto, name)| {
                serde_json::json!({"containerPort": port, "protocol": proto, "name": name})
            })
            .collect();
        let pod_doc = |ip: Option<&str>| {
            let mut d = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": namespace, "labels": labels},
                "spec": {"nodeName": node, "serviceAccountName": "default",
                         "containers": [{"name": "server", "image": "calico-lab", "ports": ports}]},
            });
            if let Some(ip) = ip {
                d["status"] =
                    serde_json::json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]});
            }
            d
        };
        let sa_doc = serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": namespace},
        });
        self.calicoctl_apply(&[ns_doc, sa_doc, pod_doc(None)])?;
        let st = self.add_pod(namespace, pod, Some(&node))?;
        self.calicoctl_apply(&[pod_doc(Some(&st.ip))])?;
        Ok(st)
    }
}

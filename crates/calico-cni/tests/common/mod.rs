//! Shared lab for the plugin acceptance tests: a "node" namespace playing the host (forwarding on,
//! a covering route for 169.254.1.1), a temporary embedded datastore with one pool, and the
//! `calico` binary run inside the node namespace the way a runtime runs it. Every namespace is a
//! `LabNs` (removed on drop, also on panic); spawned plugin processes are killed on drop.

#![allow(dead_code)] // each test file uses a different subset
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};

use calico_datastore::client::Client;
use calico_datastore::config::{DatastoreConfig, connect};
use calico_ipam::IpamClient;
use calico_ipam::check::LiveWorkloads;
use calico_linux::testlab::LabNs;
use calico_model::resources::WorkloadEndpointSpec;
use calico_model::{AnyResource, KindInfo, Resource};
use serde_json::{Value, json};

pub const CALICO: &str = env!("CARGO_BIN_EXE_calico");
pub const CALICO_IPAM: &str = env!("CARGO_BIN_EXE_calico-ipam");
pub const NETWORK: &str = "k8s-pod-network";
pub const NODE: &str = "node-a";

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A scratch directory, on /dev/shm when there is one (SQLite fsyncs are cheap there).
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    if std::path::Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

pub struct Lab {
    pub node: LabNs,
    pub db: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
}

/// One plugin invocation's outcome.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: Value,
    pub stderr: String,
}

/// A plugin process started with [`Lab::spawn`]; SIGKILLed on drop if still running.
pub struct Running {
    pub child: Option<Child>,
}

impl Running {
    /// Waits for the process and parses its output.
    pub fn finish(mut self) -> Outcome {
        let child = self.child.take().unwrap();
        let out = child.wait_with_output().unwrap();
        outcome(out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn outcome(out: std::process::Output) -> Outcome {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("plugin stdout not JSON ({e}): {text}\nstderr: {stderr}"))
    };
    Outcome {
        ok: out.status.success(),
        stdout,
        stderr,
    }
}

/// The network's IPAM handle of a container, as the plugin names it.
pub fn handle_of(container: &str) -> String {
    format!("{NETWORK}.{container}")
}

pub fn netns_path(ns: &LabNs) -> String {
    format!("/var/run/netns/{}", ns.name())
}

pub fn k8s_args(pod: &str, container: &str) -> String {
    format!("K8S_POD_NAMESPACE=ns1;K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container}")
}

impl Lab {
    /// The node namespace plus a datastore holding one IPPool `cidr` with `block_size`.
    pub fn new(cidr: &str, block_size: u8) -> Lab {
        let node = LabNs::new("cninode").expect("node netns");
        node.sysctl("net.ipv4.ip_forward", "1").expect("forwarding");
        // Proxy ARP for 169.254.1.1 needs a route covering it (see the lab recipes).
        node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
            .expect("covering route");
        let lab = Lab {
            node,
            db: scratch("calico-cni-lab-"),
            rt: rt(),
        };
        lab.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool-a}}\n\
             spec: {{cidr: {cidr}, blockSize: {block_size}}}\n"
        ));
        lab
    }

    pub fn db_path(&self) -> String {
        self.db.path().join("calico.db").display().to_string()
    }

    pub fn client(&self) -> Client {
        let kv = self
            .rt
            .block_on(connect(&DatastoreConfig::embedded(self.db_path())))
            .expect("store");
        Client::new(kv)
    }

    pub fn ipam(&self) -> IpamClient {
        IpamClient::new(self.client().kv().clone())
    }

    pub fn apply(&self, yaml: &str) {
        let client = self.client();
        for d in calico_model::load::parse_documents(yaml, "test").unwrap() {
            let r = AnyResource::from_value(d).unwrap();
            self.rt.block_on(client.apply(r)).expect("apply");
        }
    }

    pub fn conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "calico",
            "nodename": NODE,
            "datastore_type": "embedded",
            "datastore_path": self.db_path(),
            "mtu": 1400,
            "ipam": {"type": "calico-ipam"},
        })
    }

    /// Starts the `calico` plugin for `command` inside the node namespace (`ip netns exec`
    /// execs the plugin, so the child's pid is the plugin's) and feeds it the configuration.
    pub fn spawn(&self, command: &str, container: &str, netns: &str, args: &str) -> Running {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.node.name(), CALICO])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", args)
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn plugin");
        let mut stdin = child.stdin.take().unwrap();
        let running = Running { child: Some(child) };
        // A plugin killed before it read stdin makes this fail (EPIPE); that is fine.
        let _ = stdin.write_all(self.conf().to_string().as_bytes());
        drop(stdin);
        running
    }

    pub fn run(&self, command: &str, container: &str, netns: &str, args: &str) -> Outcome {
        self.spawn(command, container, netns, args).finish()
    }

    /// Host-side workload interfaces (`cali*`) in the node namespace.
    pub fn host_veths(&self) -> BTreeSet<String> {
        self.node
            .ip(&["-o", "link", "show"])
            .unwrap()
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("cali"))
            .collect()
    }

    /// ifindex of a link in the node namespace.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        let out = self.node.ip(&["-o", "link", "show", "dev", name]).ok()?;
        out.split(':').next()?.trim().parse().ok()
    }

    pub fn handles(&self) -> BTreeSet<String> {
        let snap = self.rt.block_on(self.ipam().snapshot()).unwrap();
        snap.handles.keys().cloned().collect()
    }

    pub fn weps(&self) -> Vec<Resource<WorkloadEndpointSpec>> {
        let client = self.client();
        let kind = KindInfo::lookup("WorkloadEndpoint").unwrap();
        self.rt
            .block_on(client.list(kind, None))
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.try_into().ok().unwrap())
            .collect()
    }

    /// The live workloads as Calico sees them: each WorkloadEndpoint's handle and addresses.
    pub fn live(&self) -> LiveWorkloads {
        let mut live = LiveWorkloads::default();
        for w in self.weps() {
            let h = handle_of(&w.spec.container_id);
            live.handles.insert(h.clone());
            for n in &w.spec.ip_networks {
                let ip: IpAddr = n.split('/').next().unwrap().parse().unwrap();
                live.add_ip(ip, &h);
            }
        }
        live
    }
}

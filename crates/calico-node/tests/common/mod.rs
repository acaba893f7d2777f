//! Namespace cluster harness for calico-node lab tests and the mesh benchmark: a fabric
//! namespace with a bridge, one namespace per node (eth0 on the bridge, 10.99.0.<i>/24), a shared
//! sqlite datastore, and real `calico-node` + `bird` processes per node. Everything is killed and
//! deleted on drop (LabNs guards), also when a test panics. Never touches the root namespace.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_datastore::KvStore;
use calico_datastore::client::Client;
use calico_datastore::sqlite::SqliteStore;
use calico_ipam::{AutoAssignArgs, IpamClient};
use calico_linux::testlab::{LabNs, ifname};
use calico_model::{AnyResource, KindInfo};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const POOL: &str = "10.65.0.0/16";

pub struct NodeNs {
    pub name: String,
    pub ip: String,
    pub ns: LabNs,
    pub run_dir: PathBuf,
    pub pid: Option<u32>,
}

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub kv: Arc<dyn KvStore>,
    pub client: Client,
    pub nodes: Vec<NodeNs>,
    pub extra: Vec<LabNs>,
    pub fabric: LabNs,
    pub dir: tempfile::TempDir,
}

pub fn node_bin() -> &'static str {
    env!("CARGO_BIN_EXE_calico-node")
}

/// `target/<profile>/calicoctl` if it has been built.
pub fn calicoctl_bin() -> Option<PathBuf> {
    let p = Path::new(node_bin()).parent()?.join("calicoctl");
    p.is_file().then_some(p)
}

pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Cluster {
    /// `n` node namespaces on a bridge; nothing started yet.
    pub fn new(n: usize) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::Builder::new()
            .prefix("calico-node-lab")
            .tempdir()
            .unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(dir.path().join("ds.db")).unwrap());
        let client = Client::new(kv.clone());
        let fabric = LabNs::new("fab").unwrap();
        fabric
            .ip(&["link", "add", "br0", "type", "bridge"])
            .unwrap();
        fabric.ip(&["link", "set", "br0", "up"]).unwrap();
        let mut c = Cluster {
            rt,
            kv,
            client,
            nodes: Vec::new(),
            extra: Vec::new(),
            fabric,
            dir,
        };
        for i in 1..=n {
            let ns = c.attach(&format!("n{i}"), &format!("10.99.0.{i}/24"));
            ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
            let run_dir = c.dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&run_dir).unwrap();
            c.nodes.push(NodeNs {
                name: format!("node-{i}"),
                ip: format!("10.99.0.{i}"),
                ns,
                run_dir,
                pid: None,
            });
        }
        c
    }

    /// A namespace with eth0 on the bridge at `cidr`.
    pub fn attach(&self, tag: &str, cidr: &str) -> LabNs {
        let ns = LabNs::new(tag).unwrap();
        let port = ifname("p");
        ns.veth_to("eth0", &self.fabric, &port).unwrap();
        self.fabric
            .ip(&["link", "set", &port, "master", "br0"])
            .unwrap();
        self.fabric.ip(&["link", "set", &port, "up"]).unwrap();
        ns.ip(&["addr", "add", cidr, "dev", "eth0"]).unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ns
    }

    /// Starts calico-node in node `i` (0-based) with the default lab env plus `extra`.
    pub fn start(&mut self, i: usize, extra: &[(&str, &str)]) {
        let ds = self.dir.path().join("ds.db");
        let n = &self.nodes[i];
        let mut env: Vec<(String, String)> = vec![
            ("NODENAME".into(), n.name.clone()),
            ("IP".into(), "autodetect".into()),
            ("IP_AUTODETECTION_METHOD".into(), "interface=eth0".into()),
            ("DATASTORE_PATH".into(), ds.display().to_string()),
            ("CALICO_RUN_DIR".into(), n.run_dir.display().to_string()),
            ("CALICO_NETWORKING_BACKEND".into(), "bird".into()),
            ("CALICO_IPV4POOL_CIDR".into(), POOL.into()),
            ("CALICO_IPV4POOL_IPIP".into(), "Never".into()),
            ("CALICO_IPV4POOL_VXLAN".into(), "Never".into()),
            ("CALICO_DISABLE_FELIX".into(), "true".into()),
            ("CLUSTER_TYPE".into(), "lab,bgp".into()),
        ];
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut cmd = String::from("exec env");
        for (k, v) in &env {
            cmd.push_str(&format!(" '{k}={v}'"));
        }
        cmd.push_str(&format!(
            " '{}' 2>>'{}'",
            node_bin(),
            n.run_dir.join("node.log").display()
        ));
        let pid = n.ns.spawn(&["sh", "-c", &cmd]).unwrap();
        self.nodes[i].pid = Some(pid);
    }

    pub fn start_all(&mut self, extra: &[(&str, &str)]) {
        for i in 0..self.nodes.len() {
            self.start(i, extra);
        }
    }

    /// SIGTERM to calico-node `i`; waits until it exited (and its BIRD with it).
    pub fn stop(&mut self, i: usize) {
        let Some(pid) = self.nodes[i].pid.take() else {
            return;
        };
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
        wait_for("calico-node exit", Duration::from_secs(15), || {
            let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
            gone.then_some(())
        });
        wait_for("bird exit", Duration::from_secs(10), || {
            self.bird_pid(i).is_none().then_some(())
        });
    }

    pub fn log(&self, i: usize) -> String {
        let d = &self.nodes[i].run_dir;
        format!(
            "--- node.log\n{}\n--- bird.log\n{}",
            std::fs::read_to_string(d.join("node.log")).unwrap_or_default(),
            std::fs::read_to_string(d.join("bird.log")).unwrap_or_default()
        )
    }

    /// Pid of the bird running in node `i`'s namespace.
    pub fn bird_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].ns.processes_inside().into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "bird")
                && std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "))
        })
    }

    /// Waits until every started node has its BIRD control socket answering.
    pub fn wait_started(&self, timeout: Duration) {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.pid.is_none() {
                continue;
            }
            let ctl = n.run_dir.join("bird.ctl");
            let ok = wait_until(timeout, || {
                ctl.exists() && self.birdc(i, &["show", "status"]).contains("Daemon is up")
            });
            assert!(ok, "node {} did not start:\n{}", n.name, self.log(i));
        }
    }

    pub fn birdc(&self, i: usize, args: &[&str]) -> String {
        let ctl = self.nodes[i].run_dir.join("bird.ctl");
        let out = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&ctl)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Established BGP protocol names of node `i`.
    pub fn established(&self, i: usize) -> Vec<String> {
        self.birdc(i, &["show", "protocols"])
            .lines()
            .filter(|l| l.contains(" BGP ") && l.contains("Established"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Allocates one address for node `i` (creating its first block), returns the block CIDR.
    pub fn allocate_block(&self, i: usize, handle: &str) -> String {
        let node = self.nodes[i].name.clone();
        self.rt.block_on(async {
            let ipam = IpamClient::new(self.kv.clone());
            ipam.load_pools_from_store().await.unwrap();
            let out = ipam
                .auto_assign(AutoAssignArgs {
                    num4: 1,
                    handle_id: Some(handle.to_string()),
                    hostname: node,
                    ..AutoAssignArgs::default()
                })
                .await
                .unwrap();
            out.v4.ips[0].block.to_string()
        })
    }

    /// Kernel routes of node `i` (`ip -4 route`).
    pub fn routes(&self, i: usize) -> String {
        self.nodes[i].ns.ip(&["-4", "route"]).unwrap_or_default()
    }

    /// Whether node `i` has a BIRD route to `cidr` via `via`.
    pub fn has_route(&self, i: usize, cidr: &str, via: &str) -> bool {
        self.routes(i)
            .lines()
            .any(|l| l.starts_with(&format!("{cidr} via {via} ")) && l.contains("proto bird"))
    }

    pub fn apply_json(&self, v: serde_json::Value) {
        let r = AnyResource::from_value(v).unwrap();
        self.rt.block_on(self.client.apply(r)).unwrap();
    }

    pub fn delete(&self, kind: &str, name: &str) {
        let k = KindInfo::lookup(kind).unwrap();
        self.rt
            .block_on(self.client.delete(k, "", name, None))
            .unwrap();
    }

    /// Updates Node `i` with `f` (retrying conflicts).
    pub fn modify_node(&self, i: usize, f: impl Fn(&mut serde_json::Value)) {
        let k = KindInfo::lookup("Node").unwrap();
        for _ in 0..10 {
            let r = self
                .rt
                .block_on(self.client.get(k, "", &self.nodes[i].name))
                .unwrap();
            let mut v = r.to_value();
            f(&mut v);
            let r = AnyResource::from_value(v).unwrap();
            match self.rt.block_on(self.client.update(r)) {
                Ok(_) => return,
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("update node: {e}"),
            }
        }
        panic!("update node: too many conflicts");
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Waits until every node has a BIRD route to every other node's block (via its node IP).
/// `blocks[i]` is node i's block. Returns the time it took.
pub fn wait_full_mesh(c: &Cluster, blocks: &[String], timeout: Duration) -> Duration {
    let (_, t) = wait_for("full route mesh", timeout, || {
        for i in 0..c.nodes.len() {
            if c.nodes[i].pid.is_none() {
                continue;
            }
            let routes = c.routes(i);
            for (j, b) in blocks.iter().enumerate() {
                if i == j || c.nodes[j].pid.is_none() {
                    continue;
                }
                let want = format!("{b} via {} ", c.nodes[j].ip);
                if !routes
                    .lines()
                    .any(|l| l.starts_with(&want) && l.contains("proto bird"))
                {
                    return None;
                }
            }
        }
        Some(())
    });
    t
}

impl Cluster {
    /// Claims `cidr` (one block) for node `i` through IPAM, as a new block affinity.
    pub fn claim_block(&self, i: usize, cidr: &str) {
        let node = self.nodes[i].name.clone();
        self.rt.block_on(async {
            let ipam = IpamClient::new(self.kv.clone());
            ipam.load_pools_from_store().await.unwrap();
            let (claimed, failed) = ipam
                .claim_affinity(cidr.parse().unwrap(), &node)
                .await
                .unwrap();
            assert!(
                failed.is_empty() && !claimed.is_empty(),
                "claim {cidr}: {failed:?}"
            );
        });
    }

    pub fn create_pool(&self) {
        self.apply_json(serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": POOL, "ipipMode": "Never", "vxlanMode": "Never", "blockSize": 26,
                     "natOutgoing": true}
        }));
    }
}

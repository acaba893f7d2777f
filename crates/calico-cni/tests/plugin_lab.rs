//! The `calico` and `calico-ipam` binaries driven as a runtime drives them, against the real
//! kernel: a "node" namespace plays the host, workload namespaces play containers, the datastore
//! is a temporary embedded store. Every namespace is created by the test and removed on drop.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use calico_datastore::client::Client;
use calico_datastore::config::{DatastoreConfig, connect};
use calico_linux::testlab::{LabNs, lab_available};
use calico_model::{AnyResource, KindInfo};
use serde_json::{Value, json};

struct Lab {
    node: LabNs,
    db: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let node = LabNs::new("cninode").expect("node netns");
        node.sysctl("net.ipv4.ip_forward", "1").expect("forwarding");
        // A real host has a default route; proxy ARP for 169.254.1.1 needs a unicast route
        // covering it (see the lab recipes), which a fresh namespace lacks (and this kernel has
        // no dummy interfaces to hang one on).
        node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
            .expect("covering route");
        Lab {
            node,
            db: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn db_path(&self) -> String {
        self.db.path().join("calico.db").display().to_string()
    }

    fn client(&self, rt: &tokio::runtime::Runtime) -> Client {
        let kv = rt
            .block_on(connect(&DatastoreConfig::embedded(self.db_path())))
            .expect("store");
        Client::new(kv)
    }

    fn apply(&self, rt: &tokio::runtime::Runtime, yaml: &str) {
        let client = self.client(rt);
        for d in calico_model::load::parse_documents(yaml, "test").unwrap() {
            let r = AnyResource::from_value(d).unwrap();
            rt.block_on(client.apply(r)).expect("apply");
        }
    }

    /// Runs `bin` for `command` inside the node namespace; returns (exit ok, stdout JSON).
    fn plugin(
        &self,
        bin: &str,
        command: &str,
        conf: &Value,
        container: &str,
        netns: &str,
        args: &str,
    ) -> (bool, Value) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.node.name(), bin])
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
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!(
                    "plugin stdout not JSON ({e}): {text}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        };
        (out.status.success(), v)
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "calico",
            "nodename": "node-a",
            "datastore_type": "embedded",
            "datastore_path": self.db_path(),
            "mtu": 1400,
            "ipam": {"type": "calico-ipam"},
        })
    }

    fn links(&self) -> String {
        self.node.ip(&["-o", "link", "show"]).unwrap()
    }
}

const CALICO: &str = env!("CARGO_BIN_EXE_calico");
const CALICO_IPAM: &str = env!("CARGO_BIN_EXE_calico-ipam");

const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pool-a}\nspec: {cidr: 10.77.0.0/24, blockSize: 26}\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn netns_path(ns: &LabNs) -> String {
    format!("/var/run/netns/{}", ns.name())
}

fn handles(lab: &Lab, rt: &tokio::runtime::Runtime) -> usize {
    let client = lab.client(rt);
    rt.block_on(client.kv().list("/calico/ipam/v2/handle/"))
        .unwrap()
        .kvs
        .len()
}

#[test]
fn add_check_del_every_version_and_traffic_between_workloads() {
    if !lab_available("add_check_del_every_version_and_traffic_between_workloads") {
        return;
    }
    let rt = rt();
    let lab = Lab::new();
    lab.apply(&rt, POOL);
    let mut pods = Vec::new();
    for (i, version) in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
    ]
    .iter()
    .enumerate()
    {
        let wl = LabNs::new("wl").unwrap();
        let container = format!("ctr{i}abcdef0123");
        let args = format!(
            "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod-{i};K8S_POD_INFRA_CONTAINER_ID={container}"
        );
        let conf = lab.conf(version);
        let (ok, res) = lab.plugin(CALICO, "ADD", &conf, &container, &netns_path(&wl), &args);
        assert!(ok, "ADD {version}: {res}");
        assert_eq!(res["cniVersion"], *version);
        let ip = if version.starts_with("0.1") || version.starts_with("0.2") {
            assert!(
                res.get("ips").is_none(),
                "{version}: legacy shape expected: {res}"
            );
            res["ip4"]["ip"].as_str().unwrap().to_string()
        } else {
            let ip0 = &res["ips"][0];
            assert_eq!(
                ip0.get("version").is_some(),
                version.starts_with("0."),
                "{version}: ips[].version: {res}"
            );
            assert_eq!(ip0["interface"], 1);
            assert_eq!(res["interfaces"][1]["name"], "eth0");
            assert_eq!(res["interfaces"][1]["sandbox"], netns_path(&wl));
            assert_eq!(
                res["interfaces"][1].get("mtu").is_some(),
                *version == "1.1.0",
                "{res}"
            );
            assert!(
                res["interfaces"][0]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("cali")
            );
            ip0["address"].as_str().unwrap().to_string()
        };
        assert!(ip.starts_with("10.77.0.") && ip.ends_with("/32"), "{ip}");
        // Kernel state: container address and default route, host veth with the Calico MAC and
        // a scope-link route.
        let addr = wl.ip(&["-o", "addr", "show", "dev", "eth0"]).unwrap();
        assert!(addr.contains(&ip), "{addr}");
        let routes = wl.ip(&["route"]).unwrap();
        assert!(
            routes.contains("default via 169.254.1.1 dev eth0"),
            "{routes}"
        );
        let mtu = wl.ip(&["-o", "link", "show", "eth0"]).unwrap();
        assert!(mtu.contains("mtu 1400"), "{mtu}");
        let host_routes = lab.node.ip(&["route"]).unwrap();
        let bare = ip.trim_end_matches("/32");
        assert!(
            host_routes
                .lines()
                .any(|l| l.starts_with(bare) && l.contains("dev cali") && l.contains("scope link")),
            "{host_routes}"
        );
        assert!(lab.links().contains("ee:ee:ee:ee:ee:ee"));
        if *version >= "0.4.0" {
            let mut check = conf.clone();
            check["prevResult"] = res.clone();
            let (ok, out) =
                lab.plugin(CALICO, "CHECK", &check, &container, &netns_path(&wl), &args);
            assert!(ok, "CHECK {version}: {out}");
        }
        pods.push((wl, container, args, bare.to_string(), *version));
    }
    // The WorkloadEndpoints exist with upstream names.
    let client = lab.client(&rt);
    let weps = rt
        .block_on(client.list(KindInfo::lookup("WorkloadEndpoint").unwrap(), Some("ns1")))
        .unwrap();
    assert_eq!(weps.items.len(), pods.len());
    assert!(
        weps.items
            .iter()
            .any(|w| w.metadata().name == "node--a-k8s-pod--0-eth0")
    );

    // Workload-to-workload traffic through the host (proxy ARP for 169.254.1.1, /32 routes).
    let (a, b) = (&pods[0], &pods[5]);
    assert!(a.0.ping(&b.3, 2).unwrap(), "ping {} -> {}", a.3, b.3);
    assert!(b.0.ping(&a.3, 2).unwrap(), "ping {} -> {}", b.3, a.3);

    // DEL twice each: idempotent; everything is gone afterwards. The container end is gone
    // when DEL returns (the kernel's final cleanup of the veth may finish later, in the
    // plugin's helper process).
    for (wl, container, args, _, version) in &pods {
        let conf = lab.conf(version);
        for _ in 0..2 {
            let (ok, out) = lab.plugin(CALICO, "DEL", &conf, container, &netns_path(wl), args);
            assert!(ok, "DEL {version}: {out}");
        }
        let links = wl.ip(&["-o", "link", "show"]).unwrap();
        assert!(!links.contains("eth0"), "eth0 left after DEL: {links}");
    }
    assert!(
        !lab.links().contains("cali"),
        "host veths left: {}",
        lab.links()
    );
    assert_eq!(handles(&lab, &rt), 0, "handles left after DEL");
    let weps = rt
        .block_on(client.list(KindInfo::lookup("WorkloadEndpoint").unwrap(), Some("ns1")))
        .unwrap();
    assert!(weps.items.is_empty());
}

#[test]
fn version_lists_every_supported_version() {
    let lab_less = Command::new(CALICO)
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(br#"{"cniVersion":"1.0.0"}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    let v: Value = serde_json::from_slice(&lab_less.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    let got: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(got, calico_cni::spec::SUPPORTED_VERSIONS);
}

#[test]
fn errors_leave_nothing_behind() {
    if !lab_available("errors_leave_nothing_behind") {
        return;
    }
    let rt = rt();
    let lab = Lab::new();
    // A pool of 4 addresses.
    lab.apply(&rt, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tiny}\nspec: {cidr: 10.78.0.0/30, blockSize: 30}\n");
    let wl = LabNs::new("wl").unwrap();
    let ns = netns_path(&wl);

    // Malformed stdin: decode error (6).
    let (ok, out) = lab.plugin(CALICO, "ADD", &json!("not an object"), "c1", &ns, "");
    assert!(!ok);
    assert_eq!(out["code"], 6, "{out}");

    // A known field with the wrong type: invalid config (7) naming it.
    let mut bad = lab.conf("1.0.0");
    bad["mtu"] = json!("big");
    let (ok, out) = lab.plugin(CALICO, "ADD", &bad, "c1", &ns, "");
    assert!(!ok);
    assert_eq!(out["code"], 7, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("mtu"), "{out}");

    // Unknown pool: invalid config (7) naming the pool.
    let mut conf = lab.conf("1.0.0");
    conf["ipam"]["ipv4_pools"] = json!(["no-such-pool"]);
    let (ok, out) = lab.plugin(CALICO, "ADD", &conf, "c1", &ns, "");
    assert!(!ok);
    assert_eq!(out["code"], 7, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("no-such-pool"),
        "{out}"
    );

    // Missing netns: container unknown (3), nothing allocated.
    let (ok, out) = lab.plugin(
        CALICO,
        "ADD",
        &lab.conf("1.0.0"),
        "c1",
        "/var/run/netns/crs-does-not-exist",
        "",
    );
    assert!(!ok);
    assert_eq!(out["code"], 3, "{out}");

    // Missing environment: code 4 naming the variable.
    let (ok, out) = lab.plugin(CALICO, "ADD", &lab.conf("1.0.0"), "", &ns, "");
    assert!(!ok);
    assert_eq!(out["code"], 4, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{out}"
    );

    // Exhaust the pool: 4 succeed, the 5th fails with a clear message and leaves nothing.
    let mut wls = Vec::new();
    for i in 0..4 {
        let w = LabNs::new("wl").unwrap();
        let (ok, out) = lab.plugin(
            CALICO,
            "ADD",
            &lab.conf("1.0.0"),
            &format!("full{i}"),
            &netns_path(&w),
            "",
        );
        assert!(ok, "{out}");
        wls.push(w);
    }
    let links_before = lab.links();
    let (ok, out) = lab.plugin(CALICO, "ADD", &lab.conf("1.0.0"), "c5", &ns, "");
    assert!(!ok, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("IPv4"), "{out}");
    assert_eq!(lab.links(), links_before, "a failed ADD left an interface");
    assert!(
        wl.ip(&["-o", "link"])
            .unwrap()
            .lines()
            .all(|l| !l.contains("eth0")),
        "eth0 left in the workload"
    );
    assert_eq!(handles(&lab, &rt), 4, "the failed ADD left a handle");

    // The IPAM plugin alone: DEL of an unknown container is success.
    let mut ipam_conf = lab.conf("1.0.0");
    ipam_conf["type"] = json!("calico-ipam");
    let (ok, out) = lab.plugin(CALICO_IPAM, "DEL", &ipam_conf, "never-added", &ns, "");
    assert!(ok, "{out}");
    for (i, w) in wls.iter().enumerate() {
        let (ok, out) = lab.plugin(
            CALICO,
            "DEL",
            &lab.conf("1.0.0"),
            &format!("full{i}"),
            &netns_path(w),
            "",
        );
        assert!(ok, "{out}");
    }
    assert_eq!(handles(&lab, &rt), 0);
    let _ = Arc::new(());
}

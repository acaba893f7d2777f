//! Acceptance lab for the Felix agent: the real `calico-felix` binary in a node namespace,
//! workloads in namespaces behind `cali*` veths (plumbed like the CNI plugin), resources written
//! through `calico_datastore::client::Client`, real TCP/UDP/ICMP traffic.
//!
//! Needs root, `nft`, and a built `calico-felix` (`cargo build -p felix`; found in
//! `target/{debug,release}` or `$FELIX_BIN`); each test prints a loud SKIP otherwise.
//! etcd tests need `/usr/bin/etcd`. The etcd outage lasts `FELIX_FT_OUTAGE_SECS` (default 8 s);
//! `FELIX_FT_FULL=1` runs the full 30 s outage of the issue.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_datastore::client::Client;
use calico_datastore::etcd::{EtcdOptions, EtcdStore};
use calico_datastore::kv::KvStore;
use calico_datastore::sqlite::SqliteStore;
use calico_linux::testlab::{binary_in_path, lab_available};
use calico_model::AnyResource;
use felix_bench::agent::{Felix, HEALTH_PORT, felix_binary, http_get};
use felix_bench::etcd::Etcd;
use felix_bench::lab::{self, Flow, HOST_IP, Node, Workload};
use serde_json::{Value, json};

const NODE: &str = "ft-node";
const DENY_WAIT: Duration = Duration::from_millis(800);

fn ready(test: &str) -> Option<PathBuf> {
    if !lab_available(test) {
        return None;
    }
    if !binary_in_path("nft") {
        eprintln!("\n*** SKIP {test}: `nft` not installed ***\n");
        return None;
    }
    match felix_binary() {
        Some(b) => Some(b),
        None => {
            eprintln!(
                "\n*** SKIP {test}: calico-felix not built (cargo build -p felix, or set FELIX_BIN) ***\n"
            );
            None
        }
    }
}

fn res(v: Value) -> AnyResource {
    AnyResource::from_value(v).unwrap()
}

fn wep(name: &str, iface: &str, ip: &str, labels: Value, extra: Value) -> AnyResource {
    let mut spec = json!({"orchestrator": "k8s", "node": NODE, "pod": name, "endpoint": "eth0",
        "interfaceName": iface, "ipNetworks": [format!("{ip}/32")], "profiles": ["kns.ns1"]});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    res(
        json!({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": "ns1", "labels": labels}, "spec": spec}),
    )
}

/// The lab: node running Felix, workloads A (client), B (server), C (other), U (unknown
/// interface, no endpoint), a store client and the tokio runtime driving it. The runtime's
/// worker threads live in the node namespace (so an etcd inside it is reachable) and every
/// datastore call runs on them.
struct Lab {
    rt: tokio::runtime::Runtime,
    kv: Arc<dyn KvStore>,
    client: Client,
    felix: Felix,
    etcd: Option<Etcd>,
    node: Node,
    a: Workload,
    b: Workload,
    c: Workload,
    u: Workload,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// `etcd`: false = embedded store in a temp dir; true = etcd inside the node namespace.
    fn new(bin: &std::path::Path, tag: &str, etcd: bool, felix_env: &[(&str, &str)]) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::new(&format!("{tag}n")).unwrap();
        let rt = node
            .ns
            .netns()
            .run(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            })
            .unwrap()
            .unwrap();
        let db = dir.path().join("store.db").display().to_string();
        let etcd = etcd.then(|| Etcd::start(&node.ns, dir.path()).unwrap());
        let kv: Arc<dyn KvStore> = match &etcd {
            None => Arc::new(SqliteStore::open(&db).unwrap()),
            Some(e) => {
                let opts = EtcdOptions {
                    endpoints: vec![e.endpoint()],
                    dial_timeout: Duration::from_secs(1),
                    ..Default::default()
                };
                Arc::new(block(&rt, EtcdStore::connect(opts)).unwrap())
            }
        };
        let client = Client::new(kv.clone());
        let c2 = client.clone();
        block(&rt, async move { c2.ensure_initialized().await }).unwrap();
        let a = node
            .add_workload(&format!("{tag}a"), "cali1a", "10.65.0.2")
            .unwrap();
        let b = node
            .add_workload(&format!("{tag}b"), "cali2b", "10.65.0.3")
            .unwrap();
        let c = node
            .add_workload(&format!("{tag}c"), "cali3c", "10.65.0.4")
            .unwrap();
        let u = node
            .add_workload(&format!("{tag}u"), "cali4u", "10.65.0.5")
            .unwrap();
        for (port, ns, ip) in [
            (8080, &b.ns, &b.ip),
            (9050, &b.ns, &b.ip),
            (8080, &a.ns, &a.ip),
        ] {
            lab::tcp_echo(ns, ip, port).unwrap();
        }
        lab::udp_echo(&b.ns, &b.ip, 5353).unwrap();
        lab::udp_echo(&b.ns, &b.ip, 5354).unwrap();
        lab::tcp_echo(&node.ns, HOST_IP, 7000).unwrap();
        let endpoint = etcd.as_ref().map(Etcd::endpoint).unwrap_or_default();
        let ds: Vec<(&str, &str)> = match &etcd {
            None => vec![("DATASTORE_TYPE", "embedded"), ("DATASTORE_PATH", &db)],
            Some(_) => vec![("DATASTORE_TYPE", "etcdv3"), ("ETCD_ENDPOINTS", &endpoint)],
        };
        let felix = Felix::start(&node.ns, bin, NODE, &ds, felix_env, dir.path()).unwrap();
        let lab = Lab {
            rt,
            kv,
            client,
            felix,
            etcd,
            node,
            a,
            b,
            c,
            u,
            _dir: dir,
        };
        lab.apply(vec![
            res(
                json!({"apiVersion": "projectcalico.org/v3", "kind": "Profile",
                "metadata": {"name": "kns.ns1"},
                "spec": {"labelsToApply": {"pcns.team": "blue"},
                         "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}}),
            ),
            wep(
                "a",
                "cali1a",
                "10.65.0.2",
                json!({"role": "client"}),
                json!({"serviceAccountName": "sa-a"}),
            ),
            wep(
                "b",
                "cali2b",
                "10.65.0.3",
                json!({"app": "server"}),
                json!({"ports": [{"name": "web", "protocol": "TCP", "port": 8080}]}),
            ),
            wep(
                "c",
                "cali3c",
                "10.65.0.4",
                json!({"role": "other"}),
                json!({}),
            ),
        ]);
        lab
    }

    fn revision(&self) -> i64 {
        let kv = self.kv.clone();
        block(&self.rt, async move { kv.current_revision().await }).unwrap()
    }

    /// Write resources; return the store revision after them.
    fn apply(&self, rs: Vec<AnyResource>) -> i64 {
        for r in rs {
            let c = self.client.clone();
            block(&self.rt, async move { c.apply(r).await }).unwrap();
        }
        self.revision()
    }

    fn delete(&self, kind: &str, ns: &str, name: &str) -> i64 {
        let info = calico_model::KINDS.iter().find(|k| k.kind == kind).unwrap();
        let (c, ns, name) = (self.client.clone(), ns.to_string(), name.to_string());
        block(
            &self.rt,
            async move { c.delete(info, &ns, &name, None).await },
        )
        .unwrap();
        self.revision()
    }

    /// Apply and wait until Felix reports the revision programmed.
    fn step(&mut self, what: &str, rs: Vec<AnyResource>) {
        let rev = self.apply(rs);
        self.wait(what, rev);
    }

    fn wait(&mut self, what: &str, rev: i64) {
        let t = Instant::now();
        self.felix
            .wait_applied(&self.node.ns, rev, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        eprintln!("{what}: revision {rev} applied after {:?}", t.elapsed());
    }

    fn tcp(&self, from: &Workload, to: &Workload, port: u16) -> bool {
        lab::tcp_ok(&from.ns, &to.ip, port, DENY_WAIT).unwrap()
    }

    fn udp(&self, from: &Workload, to: &Workload, port: u16) -> bool {
        lab::udp_ok(&from.ns, &to.ip, port, DENY_WAIT).unwrap()
    }

    fn ping(&self, from: &Workload, to: &Workload) -> bool {
        lab::ping_ok(&from.ns, &to.ip).unwrap()
    }
}

/// Run `f` on a worker thread of `rt` (inside the node namespace) and wait for it.
fn block<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(f)).unwrap()
}

/// `(expected, got, what)` checks collected so one run reports every mismatch.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, want: bool, got: bool, what: &str) {
        let mark = if want == got { "ok  " } else { "FAIL" };
        eprintln!(
            "  [{mark}] {what}: expected {}, got {}",
            allow(want),
            allow(got)
        );
        if want != got {
            self.0.push(format!(
                "{what}: expected {}, got {}",
                allow(want),
                allow(got)
            ));
        }
    }

    /// A non-traffic fact.
    fn holds(&mut self, ok: bool, what: &str) {
        eprintln!("  [{}] {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.0.push(format!("{what}: does not hold"));
        }
    }

    fn done(self, felix: &Felix) {
        assert!(
            self.0.is_empty(),
            "{} traffic check(s) failed:\n{}\n--- felix log tail ---\n{}",
            self.0.len(),
            self.0.join("\n"),
            felix.log_tail(40)
        );
    }
}

fn allow(b: bool) -> &'static str {
    if b { "allowed" } else { "denied" }
}

fn gnp(name: &str, spec: Value) -> AnyResource {
    res(
        json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": name}, "spec": spec}),
    )
}

fn np(name: &str, spec: Value) -> AnyResource {
    res(
        json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "ns1"}, "spec": spec}),
    )
}

/// Every rule feature allowing and denying real traffic, against the given datastore.
fn features(lab: &mut Lab, full: bool) {
    let mut ck = Checks::default();
    lab.wait("initial endpoints", lab.revision());

    // Profiles only (kns.ns1 allows all): baseline traffic through Felix's table.
    ck.holds(lab.tcp(&lab.a, &lab.b, 8080), "profile: A->B tcp/8080");
    ck.holds(lab.udp(&lab.a, &lab.b, 5353), "profile: A->B udp/5353");
    ck.holds(lab.ping(&lab.a, &lab.b), "profile: A->B icmp echo");
    // Unknown cali* interface (no endpoint): dropped both ways and to the host.
    ck.expect(false, lab.ping(&lab.u, &lab.b), "unknown cali4u -> B icmp");
    ck.expect(
        false,
        lab::tcp_ok(&lab.a.ns, &lab.u.ip, 8080, DENY_WAIT).unwrap(),
        "A -> unknown cali4u tcp",
    );
    ck.expect(
        false,
        lab::tcp_ok(&lab.u.ns, HOST_IP, 7000, DENY_WAIT).unwrap(),
        "unknown cali4u -> host tcp",
    );
    // DefaultEndpointToHostAction (default Drop): workload -> host dropped.
    ck.expect(
        false,
        lab::tcp_ok(&lab.a.ns, HOST_IP, 7000, DENY_WAIT).unwrap(),
        "A -> host tcp/7000 (DefaultEndpointToHostAction Drop)",
    );

    // Ingress policy on B: selector + TCP port, named port, UDP from nets, ICMP type 8 from
    // clients; everything else hits the end-of-tier deny.
    lab.step("ingress policy on B", vec![np("b-in", json!({
        "selector": "app == 'server'", "types": ["Ingress"],
        "ingress": [
            {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'client'"}, "destination": {"ports": ["web"]}},
            {"action": "Allow", "protocol": "UDP", "source": {"nets": ["10.65.0.2/32"]}, "destination": {"ports": ["5353:5353"]}},
            {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}, "source": {"selector": "role == 'client'"}}
        ]}))]);
    ck.holds(
        lab.tcp(&lab.a, &lab.b, 8080),
        "selector+named port: A(client)->B tcp/8080(web)",
    );
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 9050),
        "end of tier: A->B tcp/9050",
    );
    ck.expect(
        false,
        lab.tcp(&lab.c, &lab.b, 8080),
        "selector: C(other)->B tcp/8080",
    );
    ck.holds(
        lab.udp(&lab.a, &lab.b, 5353),
        "nets+port range: A->B udp/5353",
    );
    ck.expect(false, lab.udp(&lab.a, &lab.b, 5354), "port: A->B udp/5354");
    ck.expect(false, lab.udp(&lab.c, &lab.b, 5353), "nets: C->B udp/5353");
    ck.holds(lab.ping(&lab.a, &lab.b), "icmp type 8: A->B ping");
    ck.expect(false, lab.ping(&lab.c, &lab.b), "icmp selector: C->B ping");
    ck.holds(
        lab.tcp(&lab.b, &lab.a, 8080),
        "types Ingress only: B->A egress unaffected",
    );

    // A label change: C becomes a client, A stops being one.
    lab.step(
        "relabel A and C",
        vec![
            wep(
                "a",
                "cali1a",
                "10.65.0.2",
                json!({"role": "gone"}),
                json!({"serviceAccountName": "sa-a"}),
            ),
            wep(
                "c",
                "cali3c",
                "10.65.0.4",
                json!({"role": "client"}),
                json!({}),
            ),
        ],
    );
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 8080),
        "relabel: A(gone)->B tcp/8080",
    );
    ck.holds(
        lab.tcp(&lab.c, &lab.b, 8080),
        "relabel: C(client)->B tcp/8080",
    );

    // Tiers: security (order 10, default Pass) denies port range 9000-9100 and passes the rest;
    // default tier: notSelector / serviceAccounts / namespaceSelector allows.
    lab.step("tiers, Pass, notSelector, serviceAccounts, namespaceSelector", vec![
        res(json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "security"},
                   "spec": {"order": 10, "defaultAction": "Pass"}})),
        gnp("security.ranges", json!({"tier": "security", "order": 1, "selector": "app == 'server'", "types": ["Ingress"],
            "ingress": [{"action": "Log", "protocol": "TCP", "destination": {"ports": ["9000:9100"]}},
                        {"action": "Deny", "protocol": "TCP", "destination": {"ports": ["9000:9100"]}},
                        {"action": "Pass", "protocol": "UDP"}]})),
        np("b-in", json!({"selector": "app == 'server'", "types": ["Ingress"], "order": 100,
            "ingress": [
                {"action": "Allow", "protocol": "TCP", "source": {"serviceAccounts": {"names": ["sa-a"]}}, "destination": {"ports": [8080]}},
                {"action": "Allow", "protocol": "TCP", "source": {"notSelector": "role == 'client'"}, "destination": {"ports": [9050]}},
                {"action": "Allow", "protocol": "UDP", "source": {"namespaceSelector": "team == 'blue'"}}
            ]})),
    ]);
    ck.holds(
        lab.tcp(&lab.a, &lab.b, 8080),
        "serviceAccounts: A(sa-a)->B tcp/8080",
    );
    ck.expect(
        false,
        lab.tcp(&lab.c, &lab.b, 8080),
        "serviceAccounts: C(no sa)->B tcp/8080",
    );
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 9050),
        "security tier Deny range 9000-9100 beats default-tier allow: A->B tcp/9050",
    );
    ck.expect(
        true,
        lab.udp(&lab.c, &lab.b, 5354),
        "Pass + namespaceSelector: C->B udp/5354",
    );

    // Move the security deny away: notSelector now decides 9050.
    lab.step("drop security deny", vec![
        gnp("security.ranges", json!({"tier": "security", "order": 1, "selector": "app == 'server'", "types": ["Ingress"],
            "ingress": [{"action": "Pass"}]})),
    ]);
    ck.expect(
        true,
        lab.tcp(&lab.a, &lab.b, 9050),
        "notSelector: A(not client)->B tcp/9050",
    );
    ck.expect(
        false,
        lab.tcp(&lab.c, &lab.b, 9050),
        "notSelector: C(client)->B tcp/9050",
    );

    if full {
        // Egress policy on A: order and Deny before Allow, notNets, ICMP code.
        lab.step("egress policy on A", vec![
            np("a-out", json!({"selector": "role == 'gone'", "types": ["Egress"], "order": 1,
                "egress": [
                    {"action": "Deny", "protocol": "UDP", "destination": {"notNets": ["10.65.0.4/32"]}},
                    {"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}, "destination": {"nets": ["10.65.0.4/32"]}},
                    {"action": "Allow"}
                ]})),
            gnp("c-open", json!({"selector": "role == 'client'", "types": ["Ingress"], "ingress": [{"action": "Allow"}]})),
        ]);
        ck.expect(
            false,
            lab.udp(&lab.a, &lab.b, 5354),
            "egress notNets Deny: A->B udp",
        );
        ck.expect(
            true,
            lab.tcp(&lab.a, &lab.b, 9050),
            "egress Allow after Deny: A->B tcp/9050",
        );
        ck.expect(
            false,
            lab.ping(&lab.a, &lab.c),
            "egress icmp type 8 code 0 Deny: A->C ping",
        );

        // Anti-spoofing: A sends from an address it does not own (one-way UDP to a counting
        // sink in C, so no return route is needed).
        lab.a
            .ns
            .ip(&["addr", "add", "10.65.9.9/32", "dev", "eth0"])
            .unwrap();
        let sink = lab::UdpSink::start(&lab.c.ns, &lab.c.ip, 6000).unwrap();
        let spoof = |lab: &Lab| {
            sink.probe_from(&lab.a.ns, "10.65.9.9", &lab.c.ip, 6000, DENY_WAIT)
                .unwrap()
        };
        let own = |lab: &Lab| {
            sink.probe_from(&lab.a.ns, &lab.a.ip, &lab.c.ip, 6000, DENY_WAIT)
                .unwrap()
        };
        lab.delete("NetworkPolicy", "ns1", "a-out");
        lab.step("A without egress policy", vec![]);
        ck.expect(
            true,
            own(lab),
            "anti-spoofing: A->C udp from its own address",
        );
        ck.expect(false, spoof(lab), "anti-spoofing: A->C udp from 10.65.9.9");
        lab.step("allowSpoofedSourcePrefixes on A", vec![
            wep("a", "cali1a", "10.65.0.2", json!({"role": "gone"}),
                json!({"serviceAccountName": "sa-a", "allowSpoofedSourcePrefixes": ["10.65.9.9/32"]})),
        ]);
        let ok = spoof(lab);
        ck.expect(
            true,
            ok,
            "allowSpoofedSourcePrefixes: A->C udp from 10.65.9.9",
        );
        if !ok {
            let chain = lab
                .node
                .ns
                .exec(&["nft", "list", "chain", "inet", "calico", "as-cali1a"])
                .unwrap();
            let rpf = lab
                .node
                .ns
                .exec(&["sh", "-c", "grep . /proc/sys/net/ipv4/conf/*/rp_filter"])
                .unwrap();
            eprintln!(
                "diagnostics:\n{}\n{}",
                String::from_utf8_lossy(&chain.stdout),
                String::from_utf8_lossy(&rpf.stdout)
            );
        }
    }
    ck.done(&lab.felix);
}

#[test]
fn features_embedded_store() {
    let Some(bin) = ready("features_embedded_store") else {
        return;
    };
    let mut lab = Lab::new(&bin, "fte", false, &[]);
    features(&mut lab, true);
}

#[test]
fn features_etcd_subset_and_outage() {
    let Some(bin) = ready("features_etcd_subset_and_outage") else {
        return;
    };
    if !Etcd::available() {
        eprintln!("\n*** SKIP features_etcd_subset_and_outage: /usr/bin/etcd missing ***\n");
        return;
    }
    let mut lab = Lab::new(&bin, "ftx", true, &[]);
    features(&mut lab, false);

    // Outage: etcd stopped; the dataplane stays as programmed, readiness goes 503, and a
    // change made after etcd returns is applied (resync).
    let outage = if std::env::var_os("FELIX_FT_FULL").is_some() {
        30
    } else {
        std::env::var("FELIX_FT_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8)
    };
    let table_before = lab.node.nft_table().unwrap().unwrap();
    let mut ck = Checks::default();
    lab.etcd.as_mut().unwrap().stop();
    let down = Instant::now();
    let mut saw_503 = None;
    while down.elapsed() < Duration::from_secs(outage) {
        if saw_503.is_none() && lab.felix.readiness(&lab.node.ns).ok() == Some(503) {
            saw_503 = Some(down.elapsed());
        }
        assert!(
            lab.felix.running(),
            "felix exited during the outage:\n{}",
            lab.felix.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let last = http_get(&lab.node.ns, HEALTH_PORT, "/readiness");
    eprintln!("etcd down {outage} s; readiness 503 after {saw_503:?}; last /readiness {last:?}");
    ck.expect(true, saw_503.is_some(), "readiness 503 while etcd is down");
    ck.expect(
        true,
        lab.tcp(&lab.a, &lab.b, 9050),
        "during outage: A->B tcp/9050 still allowed",
    );
    ck.expect(
        false,
        lab.tcp(&lab.c, &lab.b, 9050),
        "during outage: C->B tcp/9050 still denied",
    );
    let table_during = lab.node.nft_table().unwrap().unwrap();
    ck.expect(
        true,
        table_during == table_before,
        "during outage: nft table unchanged",
    );
    lab.etcd.as_mut().unwrap().resume().unwrap();
    // Resync: a change after the outage is programmed.
    lab.step(
        "after etcd returns: C loses the client role",
        vec![wep(
            "c",
            "cali3c",
            "10.65.0.4",
            json!({"role": "other"}),
            json!({}),
        )],
    );
    ck.expect(
        true,
        lab.tcp(&lab.c, &lab.b, 9050),
        "after outage (resync): C(other)->B tcp/9050 now allowed by notSelector",
    );
    let code = lab.felix.readiness(&lab.node.ns).unwrap();
    ck.expect(true, (200..300).contains(&code), "readiness good again");
    ck.done(&lab.felix);
}

/// kill -9 while a flow runs; a hand-deleted nft rule is restored within the refresh interval.
#[test]
fn faults_kill9_and_hand_deleted_rule() {
    let Some(bin) = ready("faults_kill9_and_hand_deleted_rule") else {
        return;
    };
    let mut lab = Lab::new(
        &bin,
        "ftk",
        false,
        &[("FELIX_NFTABLESREFRESHINTERVAL", "2")],
    );
    let mut ck = Checks::default();
    lab.step("policy on B", vec![np("b-in", json!({
        "selector": "app == 'server'", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'client'"}, "destination": {"ports": [8080]}}]}))]);
    ck.expect(
        true,
        lab.tcp(&lab.a, &lab.b, 8080),
        "before kill: A->B tcp/8080",
    );
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 9050),
        "before kill: A->B tcp/9050",
    );
    let mut flow = Flow::open(&lab.a.ns, &lab.b.ip, 8080).unwrap();
    ck.expect(true, flow.exchange(), "flow before kill");
    lab.felix.kill9();
    let mut all = true;
    for _ in 0..10 {
        all &= flow.exchange();
        std::thread::sleep(Duration::from_millis(100));
    }
    ck.expect(
        true,
        all,
        "established flow keeps passing while Felix is dead",
    );
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 9050),
        "Felix dead: A->B tcp/9050 still denied",
    );
    ck.expect(
        false,
        lab.tcp(&lab.c, &lab.b, 8080),
        "Felix dead: C->B tcp/8080 still denied",
    );
    lab.felix.restart(&lab.node.ns).unwrap();
    let rev = lab.revision();
    lab.wait("restart", rev);
    ck.expect(true, flow.exchange(), "flow after restart");
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 9050),
        "after restart: A->B tcp/9050 denied",
    );
    ck.expect(
        true,
        lab.tcp(&lab.a, &lab.b, 8080),
        "after restart: A->B tcp/8080 allowed",
    );

    // Delete the allow rule of B's policy chain by hand.
    let chain = "pi-np/ns1/b-in";
    let listing = lab
        .node
        .ns
        .exec_ok(&["nft", "-a", "list", "chain", "inet", "calico", chain])
        .unwrap();
    let handle = listing
        .lines()
        .find(|l| l.contains("ip saddr") && l.contains("dport 8080"))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("allow rule not found in {chain}:\n{listing}"));
    lab.node
        .ns
        .exec_ok(&[
            "nft", "delete", "rule", "inet", "calico", chain, "handle", &handle,
        ])
        .unwrap();
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 8080),
        "rule deleted by hand: A->B tcp/8080",
    );
    let t = Instant::now();
    let mut restored = None;
    while t.elapsed() < Duration::from_secs(8) {
        if lab::tcp_ok(&lab.a.ns, &lab.b.ip, 8080, Duration::from_millis(300)).unwrap() {
            restored = Some(t.elapsed());
            break;
        }
    }
    eprintln!("hand-deleted rule restored after {restored:?} (refresh interval 2 s)");
    ck.expect(
        true,
        restored.is_some_and(|d| d <= Duration::from_millis(3500)),
        "rule restored within the 2 s refresh interval (+1.5 s slack)",
    );
    // Clean exit leaves the table.
    let code = lab.felix.terminate(Duration::from_secs(10));
    ck.expect(true, code == Some(0), "SIGTERM: clean exit 0");
    ck.expect(
        true,
        lab.node.nft_table().unwrap().is_some(),
        "table left after SIGTERM",
    );
    ck.expect(
        false,
        lab.tcp(&lab.a, &lab.b, 9050),
        "after exit: A->B tcp/9050 still denied",
    );
    ck.done(&lab.felix);
}

/// Host endpoints through the agent: an external namespace behind the node's `eth0h`; failsafe,
/// normal, preDNAT, applyOnForward and doNotTrack policy on real traffic, plus
/// DefaultEndpointToHostAction Accept.
#[test]
fn host_endpoints_and_endpoint_to_host_accept() {
    let Some(bin) = ready("host_endpoints_and_endpoint_to_host_accept") else {
        return;
    };
    let mut lab = Lab::new(
        &bin,
        "fth",
        false,
        &[("FELIX_DEFAULTENDPOINTTOHOSTACTION", "Accept")],
    );
    let mut ck = Checks::default();
    let ext = calico_linux::testlab::LabNs::new("fthx").unwrap();
    let node = &lab.node.ns;
    node.veth_to("eth0h", &ext, "eth0").unwrap();
    node.ip(&["addr", "add", "10.98.0.1/24", "dev", "eth0h"])
        .unwrap();
    node.ip(&["link", "set", "eth0h", "up"]).unwrap();
    ext.ip(&["addr", "add", "10.98.0.2/24", "dev", "eth0"])
        .unwrap();
    ext.ip(&["link", "set", "eth0", "up"]).unwrap();
    ext.ip(&["route", "add", "10.65.0.0/16", "via", "10.98.0.1"])
        .unwrap();
    for port in [22, 7000, 7001] {
        lab::tcp_echo(node, "10.98.0.1", port).unwrap();
    }
    lab::udp_echo(node, "10.98.0.1", 5353).unwrap();
    let to_host = |port| lab::tcp_ok(&ext, "10.98.0.1", port, DENY_WAIT).unwrap();
    let to_b = |port| lab::tcp_ok(&ext, "10.65.0.3", port, DENY_WAIT).unwrap();
    let udp_host = || lab::udp_ok(&ext, "10.98.0.1", 5353, DENY_WAIT).unwrap();
    let rev = lab.revision();
    lab.wait("workloads", rev);
    ck.expect(
        true,
        lab::tcp_ok(&lab.a.ns, HOST_IP, 7000, DENY_WAIT).unwrap(),
        "DefaultEndpointToHostAction Accept: A -> host tcp/7000",
    );
    ck.expect(
        true,
        to_host(7000),
        "no host endpoint: ext -> host tcp/7000",
    );

    lab.step(
        "host endpoint without policy",
        vec![res(
            json!({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
            "metadata": {"name": "h1", "labels": {"role": "host"}},
            "spec": {"node": NODE, "interfaceName": "eth0h", "expectedIPs": ["10.98.0.1"]}}),
        )],
    );
    ck.expect(false, to_host(7000), "HEP, no policy: ext -> host tcp/7000");
    ck.expect(true, to_host(22), "failsafe: ext -> host tcp/22");
    ck.expect(
        true,
        to_b(8080),
        "HEP without forward policy: ext -> B tcp/8080 forwarded",
    );

    lab.step(
        "normal, preDNAT and forward policy",
        vec![
            gnp("hep-normal", json!({"order": 10, "selector": "role == 'host'", "types": ["Ingress", "Egress"],
                "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [7000, 7001]}}],
                "egress": [{"action": "Allow"}]})),
            gnp("hep-prednat", json!({"order": 5, "selector": "role == 'host'", "preDNAT": true, "applyOnForward": true,
                "types": ["Ingress"],
                "ingress": [{"action": "Deny", "protocol": "TCP", "source": {"nets": ["10.98.0.2/32"]}, "destination": {"ports": [7001]}}]})),
            gnp("hep-forward", json!({"order": 20, "selector": "role == 'host'", "applyOnForward": true,
                "types": ["Ingress"],
                "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"nets": ["10.65.0.3/32"], "ports": [9050]}},
                            {"action": "Allow", "destination": {"nets": ["10.65.0.0/16"]}}]})),
        ],
    );
    ck.expect(
        true,
        to_host(7000),
        "normal HEP policy: ext -> host tcp/7000",
    );
    ck.expect(
        false,
        to_host(7001),
        "preDNAT Deny beats normal Allow: ext -> host tcp/7001",
    );
    ck.expect(true, to_b(8080), "applyOnForward Allow: ext -> B tcp/8080");
    ck.expect(false, to_b(9050), "applyOnForward Deny: ext -> B tcp/9050");
    ck.expect(
        false,
        udp_host(),
        "no untracked policy: ext -> host udp/5353",
    );

    lab.step(
        "doNotTrack policy",
        vec![gnp(
            "hep-untracked",
            json!({"order": 1, "selector": "role == 'host'", "doNotTrack": true,
            "applyOnForward": true, "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Allow", "protocol": "UDP", "destination": {"ports": [5353]}}],
            "egress": [{"action": "Allow", "protocol": "UDP", "source": {"ports": [5353]}}]}),
        )],
    );
    ck.expect(
        true,
        udp_host(),
        "doNotTrack Allow both ways: ext -> host udp/5353",
    );
    ck.expect(false, to_host(7001), "doNotTrack does not open tcp/7001");
    ck.done(&lab.felix);
}

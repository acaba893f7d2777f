//! Lab test: the real `calico-felix` binary in a node namespace, two workload namespaces
//! behind `cali*` veths (plus one unknown `cali*` interface), the embedded datastore, and real
//! ping / TCP traffic allowed and denied by policy.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use calico_datastore::client::Client;
use calico_datastore::sqlite::SqliteStore;
use calico_datastore::{KvStore, Revision};
use calico_linux::testlab::{self, LabNs};
use calico_model::AnyResource;
use felix::testsupport::{FelixLab, FelixOptions, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_calico-felix");
const WAIT: Duration = Duration::from_secs(15);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn res(yaml: &str) -> Vec<AnyResource> {
    calico_model::load::parse_documents(yaml, "test")
        .unwrap()
        .into_iter()
        .map(|d| AnyResource::from_value(d).unwrap())
        .collect()
}

fn apply(rt: &tokio::runtime::Runtime, client: &Client, yaml: &str) -> Revision {
    rt.block_on(async {
        for r in res(yaml) {
            client.apply(r).await.unwrap();
        }
        client.kv().current_revision().await.unwrap()
    })
}

/// A workload namespace with `eth0` (the peer of `iface` in `node`) holding `ip/32`, routed
/// through 169.254.1.1 as the CNI plugin does it.
fn workload(node: &LabNs, tag: &str, iface: &str, ip: &str) -> LabNs {
    let ns = LabNs::new(tag).unwrap();
    node.veth_to(iface, &ns, "eth0").unwrap();
    node.ip(&["link", "set", iface, "address", "ee:ee:ee:ee:ee:ee"])
        .unwrap();
    node.ip(&["link", "set", iface, "up"]).unwrap();
    ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])
        .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])
    .unwrap();
    ns
}

fn tcp_server(ns: &LabNs, port: u16) {
    let code = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{port}))\ns.listen(16)\nwhile True:\n  c,_=s.accept()\n  c.sendall(b'ok')\n  c.close()\n"
    );
    ns.spawn(&["/usr/bin/python3", "-c", &code]).unwrap();
}

fn tcp_ok(ns: &LabNs, ip: &str, port: u16) -> bool {
    let code = format!(
        "import socket,sys\ntry:\n  s=socket.create_connection(('{ip}',{port}),timeout=1)\n  sys.exit(0 if s.recv(2)==b'ok' else 1)\nexcept Exception:\n  sys.exit(1)\n"
    );
    ns.exec(&["/usr/bin/python3", "-c", &code])
        .unwrap()
        .status
        .success()
}

/// The workload's own MAC (the CNI plugin records it in the endpoint; Felix programs a
/// static ARP entry with it).
fn mac_of(ns: &LabNs) -> String {
    let out = ns.ip(&["-o", "link", "show", "eth0"]).unwrap();
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string()
}

fn wep(name: &str, iface: &str, ip: &str, app: &str, mac: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n\
         metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}\n\
         spec: {{orchestrator: k8s, node: node1, pod: {app}, endpoint: eth0, interfaceName: {iface},\n\
         \x20 mac: '{mac}', ipNetworks: ['{ip}/32'], profiles: [allow-all]}}\n"
    )
}

const BASE: &str = "\
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: allow-all}
spec: {ingress: [{action: Allow}], egress: [{action: Allow}]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool1}
spec: {cidr: 10.65.0.0/16, natOutgoing: true}
";

fn policy(allow_icmp: bool) -> String {
    let icmp = if allow_icmp {
        "\n  - {action: Allow, protocol: ICMP, source: {selector: app == 'a'}}"
    } else {
        ""
    };
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: b-ingress}}\n\
         spec:\n  selector: app == 'b'\n  types: [Ingress]\n  ingress:\n\
         \x20 - {{action: Allow, protocol: TCP, source: {{selector: app == 'a'}}, destination: {{ports: [8080]}}}}{icmp}\n"
    )
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn node_has(node: &LabNs, args: &[&str], needle: &str) -> bool {
    node.ip(args).unwrap().contains(needle)
}

#[test]
fn felix_programs_policy_routes_and_status_in_a_lab() {
    if !testlab::lab_available("felix_programs_policy_routes_and_status_in_a_lab")
        || !testlab::binary_in_path("nft")
    {
        return;
    }
    let _ = testlab::sweep_stale();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("calico.db");
    let run = dir.path().join("run");
    let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&db).unwrap());
    let client = Client::new(Arc::clone(&kv));
    rt.block_on(client.ensure_initialized()).unwrap();
    apply(&rt, &client, BASE);
    apply(&rt, &client, &policy(false));

    let node = LabNs::new("fxnode").unwrap();
    // A real host has a default route; proxy ARP answers for 169.254.1.1 only when the host
    // can route it somewhere other than the asking interface.
    node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
        .unwrap();
    let wa = workload(&node, "fxa", "calia1", "10.65.0.1");
    let wb = workload(&node, "fxb", "calib1", "10.65.0.2");
    // A cali interface Felix knows nothing about, with a route added behind its back.
    let wc = workload(&node, "fxc", "calic1", "10.65.0.3");
    node.ip(&[
        "route",
        "add",
        "10.65.0.3/32",
        "dev",
        "calic1",
        "scope",
        "link",
    ])
    .unwrap();

    let (mac_a, mac_b) = (mac_of(&wa), mac_of(&wb));
    let rev = apply(
        &rt,
        &client,
        &(wep("node1-k8s-a-eth0", "calia1", "10.65.0.1", "a", &mac_a)
            + "---\n"
            + &wep("node1-k8s-b-eth0", "calib1", "10.65.0.2", "b", &mac_b)),
    );

    let opts = FelixOptions::embedded("node1", &db, &run)
        .set("FELIX_IPTABLESREFRESHINTERVAL", "1")
        .set("FELIX_ROUTEREFRESHINTERVAL", "1");
    let felix = FelixLab::start(&node, BIN, &opts).unwrap();
    let st = felix.wait_applied(rev, WAIT);
    let st = st.unwrap_or_else(|e| panic!("{e}\n--- felix log ---\n{}", felix.log()));
    assert!(st.ready && st.in_sync, "{st:?}");
    assert!(
        felix.log().contains("dataplane in sync"),
        "log:\n{}",
        felix.log()
    );
    // felix-routes ran inside Felix (a readiness gate) and wrote the pod MTU for the CNI plugin.
    let mtu = std::fs::read_to_string(run.join("mtu")).unwrap();
    assert!(mtu.trim().parse::<u32>().is_ok(), "mtu file {mtu:?}");
    let (code, _) = felix.get("/readiness").unwrap();
    assert!(code == 200 || code == 204, "readiness {code}");
    let (code, _) = felix.get("/liveness").unwrap();
    assert!(code == 200 || code == 204, "liveness {code}");

    // Endpoint manager: routes, sysctls, status files.
    let routes = node.ip(&["route", "show", "proto", "boot"]).unwrap();
    assert!(
        routes.contains("10.65.0.1 dev calia1 scope link"),
        "{routes}"
    );
    assert!(
        routes.contains("10.65.0.2 dev calib1 scope link"),
        "{routes}"
    );
    assert!(
        node_has(
            &node,
            &["neigh", "show", "dev", "calia1"],
            &format!("10.65.0.1 lladdr {mac_a} PERMANENT")
        ),
        "static ARP"
    );
    let proxy_arp = node
        .exec_ok(&["cat", "/proc/sys/net/ipv4/conf/calia1/proxy_arp"])
        .unwrap();
    assert_eq!(proxy_arp.trim(), "1");
    let status_file = run.join("endpoint-status").join("k8s%2Fdefault%2Fa%2Feth0");
    // Status files are written right after the pass that programmed the kernel reports it.
    wait_for("the status file of a", || status_file.exists());
    let content = std::fs::read_to_string(&status_file).unwrap_or_else(|e| {
        let list: Vec<_> = std::fs::read_dir(run.join("endpoint-status"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!("{}: {e}; dir has {list:?}", status_file.display())
    });
    assert!(content.contains("\"ifaceName\":\"calia1\""), "{content}");
    // The unknown interface's route is still in its grace period.
    assert!(node_has(&node, &["route", "show"], "10.65.0.3 dev calic1"));

    // Policy: TCP 8080 from a to b allowed, TCP 9090 and ping denied; b → a allowed (profile).
    tcp_server(&wb, 8080);
    tcp_server(&wb, 9090);
    tcp_server(&wa, 8080);
    std::thread::sleep(Duration::from_millis(300));
    if !tcp_ok(&wa, "10.65.0.2", 8080) {
        if std::env::var_os("FELIX_LAB_PAUSE").is_some() {
            std::thread::sleep(Duration::from_secs(90));
        }
        panic!(
            "a -> b:8080 should be allowed\n{}",
            diagnostics(&node, &wa, &wb, &felix)
        );
    }
    assert!(
        !tcp_ok(&wa, "10.65.0.2", 9090),
        "a -> b:9090 should be denied"
    );
    assert!(
        !wa.ping("10.65.0.2", 1).unwrap(),
        "ping a -> b should be denied"
    );
    assert!(tcp_ok(&wb, "10.65.0.1", 8080), "b -> a should be allowed");
    // Traffic from the unknown cali interface is dropped.
    assert!(
        !wc.ping("10.65.0.1", 1).unwrap(),
        "unknown cali interface must be dropped"
    );

    // A policy change is applied live.
    let rev = apply(&rt, &client, &policy(true));
    felix.wait_applied(rev, WAIT).unwrap();
    assert!(
        wa.ping("10.65.0.2", 1).unwrap(),
        "ping a -> b allowed after the update"
    );

    // natOutgoing chain programmed from the pool.
    let table = node
        .exec_ok(&["nft", "list", "table", "inet", "calico"])
        .unwrap();
    assert!(table.contains("masquerade"), "{table}");

    // Metrics.
    let (code, metrics) = http_get(&node, 9091, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("felix_active_local_endpoints 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("felix_cluster_num_workload_endpoints 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("felix_host{host=\"node1\"} 1"),
        "{metrics}"
    );

    // Out-of-band changes are repaired by the periodic resync (1 s here).
    node.exec_ok(&["nft", "delete", "table", "inet", "calico"])
        .unwrap();
    wait_for("nft table restored", || {
        node.exec(&["nft", "list", "table", "inet", "calico"])
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        tcp_ok(&wa, "10.65.0.2", 8080),
        "a -> b:8080 after the repair"
    );
    assert!(
        !tcp_ok(&wa, "10.65.0.2", 9090),
        "a -> b:9090 denied after the repair"
    );

    // Endpoint removal removes its route and status file.
    let rev = rt.block_on(async {
        let kind = calico_model::KindInfo::lookup("WorkloadEndpoint").unwrap();
        client
            .delete(kind, "default", "node1-k8s-b-eth0", None)
            .await
            .unwrap();
        kv.current_revision().await.unwrap()
    });
    felix.wait_applied(rev, WAIT).unwrap();
    assert!(!node_has(&node, &["route", "show"], "10.65.0.2 dev calib1"));
    let gone = run.join("endpoint-status").join("k8s%2Fdefault%2Fb%2Feth0");
    wait_for("the status file of b to go", || !gone.exists());
    // b's interface is now unknown: its traffic is dropped.
    assert!(
        !tcp_ok(&wb, "10.65.0.1", 8080),
        "removed endpoint must be cut off"
    );

    // Status heartbeat in the datastore.
    let status = rt
        .block_on(kv.get("/calico/felix/v2/no-region/host/node1/status"))
        .unwrap();
    assert!(status.is_some(), "status key");

    // The unknown route on the unknown cali interface goes after its 10 s grace period.
    wait_for("grace period expiry", || {
        !node_has(&node, &["route", "show"], "10.65.0.3 dev calic1")
    });

    // SIGTERM: clean exit, dataplane left programmed.
    assert!(felix.stop(Duration::from_secs(5)), "felix did not stop");
    let table = node
        .exec_ok(&["nft", "list", "table", "inet", "calico"])
        .unwrap();
    assert!(table.contains("calia1"), "table kept after exit");

    // A restart reconciles what the previous run (or anyone) left in our table.
    node.exec_ok(&["nft", "add", "chain", "inet", "calico", "rogue"])
        .unwrap();
    let rev = rt.block_on(kv.current_revision()).unwrap();
    let felix2 = FelixLab::start(&node, BIN, &opts).unwrap();
    felix2
        .wait_applied(rev, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n--- felix log ---\n{}", felix2.log()));
    let table = node
        .exec_ok(&["nft", "list", "table", "inet", "calico"])
        .unwrap();
    assert!(!table.contains("rogue"), "{table}");
    assert!(table.contains("\"calia1\" : goto fp-"), "{table}");
    assert!(felix2.stop(Duration::from_secs(5)));
    drop((wa, wb, wc));
}

fn diagnostics(node: &LabNs, wa: &LabNs, wb: &LabNs, felix: &FelixLab<'_>) -> String {
    let out = |ns: &LabNs, argv: &[&str]| {
        ns.exec(argv)
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| e.to_string())
    };
    format!(
        "--- node nft ---\n{}\n--- node routes ---\n{}\n--- ip_forward {} ---\n--- wa ping b: {:?} ---\n--- wb ss ---\n{}\n--- wa routes ---\n{}\n--- felix log ---\n{}",
        out(node, &["nft", "list", "ruleset"]),
        out(node, &["ip", "route"]),
        out(node, &["cat", "/proc/sys/net/ipv4/ip_forward"]),
        wa.ping("10.65.0.2", 1),
        out(wb, &["ss", "-ltn"]),
        out(wa, &["ip", "route"]),
        felix.log()
    )
}

#[test]
fn felix_applies_config_live_and_exits_for_restart_fields() {
    if !testlab::lab_available("felix_applies_config_live_and_exits_for_restart_fields")
        || !testlab::binary_in_path("nft")
    {
        return;
    }
    let _ = testlab::sweep_stale();
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("calico.db");
    let run = dir.path().join("run");
    let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&db).unwrap());
    let client = Client::new(Arc::clone(&kv));
    rt.block_on(client.ensure_initialized()).unwrap();
    apply(&rt, &client, BASE);

    let node = LabNs::new("fxcfg").unwrap();
    node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
        .unwrap();
    node.ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"])
        .unwrap();
    let wa = workload(&node, "fxcfga", "calia1", "10.65.0.1");
    let mac_a = mac_of(&wa);
    let rev = apply(
        &rt,
        &client,
        &wep("node1-k8s-a-eth0", "calia1", "10.65.0.1", "a", &mac_a),
    );
    tcp_server(&node, 7070);

    let opts = FelixOptions::embedded("node1", &db, &run)
        .set("FELIX_ENDPOINTREPORTINGENABLED", "true")
        .set("FELIX_ENDPOINTREPORTINGDELAY", "0.1");
    let felix = FelixLab::start(&node, BIN, &opts).unwrap();
    felix
        .wait_applied(rev, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n--- felix log ---\n{}", felix.log()));
    // Per-endpoint status in the datastore (EndpointReportingEnabled).
    let key = "/calico/felix/v2/no-region/host/node1/workload/k8s/default%2fa/endpoint/eth0";
    wait_for("endpoint status key", || {
        rt.block_on(kv.get(key))
            .unwrap()
            .is_some_and(|kv| kv.value == br#"{"status":"up"}"#.to_vec())
    });

    // Felix's default DefaultEndpointToHostAction is Drop.
    assert!(
        !tcp_ok(&wa, "10.99.0.1", 7070),
        "workload -> host dropped by default"
    );

    // Live: FelixConfiguration default sets Accept; no restart.
    let rev = apply(
        &rt,
        &client,
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n\
         spec: {defaultEndpointToHostAction: Accept}\n",
    );
    felix.wait_applied(rev, WAIT).unwrap();
    assert!(
        tcp_ok(&wa, "10.99.0.1", 7070),
        "workload -> host accepted after the change"
    );
    assert!(felix.alive());

    // The node-specific configuration wins over the global one.
    let rev = apply(
        &rt,
        &client,
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node.node1}\n\
         spec: {defaultEndpointToHostAction: Drop}\n",
    );
    felix.wait_applied(rev, WAIT).unwrap();
    assert!(
        !tcp_ok(&wa, "10.99.0.1", 7070),
        "node.node1 Drop wins over default Accept"
    );

    // A listener setting needs a restart: Felix exits with a clear log line.
    apply(
        &rt,
        &client,
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: node.node1}\n\
         spec: {defaultEndpointToHostAction: Drop, prometheusMetricsPort: 9092}\n",
    );
    wait_for("felix to exit for the restart", || !felix.alive());
    let log = felix.log();
    assert!(
        log.contains("restarts it") && log.contains("prometheusmetricsport"),
        "{log}"
    );
}

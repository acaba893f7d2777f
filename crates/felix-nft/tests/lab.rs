//! The rendered table in a real kernel: a node namespace with three workload namespaces
//! behind `cali*` veths (plumbed as Calico's CNI plugin does), real TCP and ICMP.
//! Loud SKIP when not root or `nft` is missing. Every namespace is removed on drop.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use calico_linux::nft::{Nft, NftCli, TableFamily};
use calico_linux::testlab::{LabNs, binary_in_path, lab_available};
use common::*;
use felix_calc::msg::*;
use felix_nft::{ApplyKind, Config, NftDataplane};

/// An address the node owns (workload -> host traffic goes to INPUT).
const HOST_IP: &str = "10.99.0.1";

struct Workload {
    ns: LabNs,
    ip: &'static str,
}

/// The recipe's add-workload steps: host side `iface` (ee:ee:ee:ee:ee:ee, proxy ARP), `/32`
/// route on the node, default route via 169.254.1.1 in the workload.
fn plumb(node: &LabNs, tag: &str, iface: &str, ip: &'static str) -> Workload {
    let ns = LabNs::new(tag).unwrap();
    node.veth_to(iface, &ns, "eth0").unwrap();
    node.ip(&["link", "set", iface, "address", "ee:ee:ee:ee:ee:ee"])
        .unwrap();
    node.sysctl(&format!("net.ipv4.conf.{iface}.proxy_arp"), "1")
        .unwrap();
    node.sysctl(&format!("net.ipv4.neigh.{iface}.proxy_delay"), "0")
        .unwrap();
    node.sysctl(&format!("net.ipv4.conf.{iface}.forwarding"), "1")
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
    node.ip(&[
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        iface,
        "scope",
        "link",
    ])
    .unwrap();
    Workload { ns, ip }
}

/// A TCP listener inside `ns` that accepts forever on a background thread.
fn listen(ns: &LabNs, ip: &str, port: u16) {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    let l = ns.netns().run(|| TcpListener::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
}

/// Whether a TCP connection from inside `ns` to ip:port completes within 1.5 s.
fn tcp_ok(ns: &LabNs, ip: &str, port: u16) -> bool {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    ns.netns()
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok())
        .unwrap()
}

fn ping_ok(ns: &LabNs, dst: &str) -> bool {
    ns.ping(dst, 1).unwrap()
}

fn ping_from(ns: &LabNs, src: &str, dst: &str) -> bool {
    let prog: &[&str] = if binary_in_path("ping") {
        &["ping"]
    } else {
        &["busybox", "ping"]
    };
    let mut argv = prog.to_vec();
    argv.extend(["-q", "-c", "1", "-w", "2", "-I", src, dst]);
    ns.exec(&argv).unwrap().status.success()
}

fn wep_msg(iface: &str, ip: &str, tiers: Vec<TierInfo>, spoof: &[&str]) -> ToDataplane {
    let mut m = wep(iface, &[&format!("{ip}/32")], &["kns.default"], tiers);
    if let ToDataplane::WorkloadEndpointUpdate(u) = &mut m {
        u.endpoint.allow_spoofed_source_prefixes = spoof.iter().map(|s| s.to_string()).collect();
    }
    m
}

#[test]
fn policy_enforced_on_real_traffic() {
    if !lab_available("policy_enforced_on_real_traffic") {
        return;
    }
    if !binary_in_path("nft") {
        eprintln!("SKIP policy_enforced_on_real_traffic: `nft` not installed");
        return;
    }
    let node = LabNs::new("fnnode").unwrap();
    node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
        .unwrap();
    node.ip(&["addr", "add", HOST_IP, "dev", "lo"]).unwrap();
    let a = plumb(&node, "fnwa", "cali1a", "10.65.0.2");
    let b = plumb(&node, "fnwb", "cali2b", "10.65.0.3");
    // A workload whose interface Felix never heard of.
    let c = plumb(&node, "fnwc", "cali3c", "10.65.0.4");
    listen(&b.ns, b.ip, 8080);
    listen(&b.ns, b.ip, 9090);
    listen(&a.ns, a.ip, 8080);

    // Before any table: everything flows (baseline, so the denials below mean something).
    assert!(tcp_ok(&a.ns, b.ip, 9090), "baseline tcp");
    assert!(
        ping_ok(&c.ns, a.ip),
        "baseline ping from the unknown workload"
    );
    assert!(ping_ok(&c.ns, HOST_IP), "baseline ping to the host");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let nft = NftCli::in_netns(node.netns().clone());
    let mut dp = NftDataplane::new(nft, Config::default());
    let web = pid("default", "default.web", "");
    let tiers_b = vec![tier("default", "Deny", std::slice::from_ref(&web), &[])];
    for m in [
        profile("kns.default", vec![rule("allow")], vec![rule("allow")]),
        ipset("s:frontend", IpSetType::Net, &["10.65.0.2/32"]),
        policy(
            &web,
            vec![
                Rule {
                    action: "allow".into(),
                    src_ip_set_ids: vec!["s:frontend".into()],
                    ..tcp(&[(8080, 8080)])
                },
                Rule {
                    action: "allow".into(),
                    protocol: Some(Protocol::Name("icmp".into())),
                    ..Default::default()
                },
            ],
            vec![],
        ),
        wep_msg("cali1a", a.ip, vec![], &[]),
        wep_msg("cali2b", b.ip, tiers_b.clone(), &[]),
        ToDataplane::InSync,
    ] {
        dp.on_message(&m).unwrap();
    }
    assert_eq!(rt.block_on(dp.apply()).unwrap(), ApplyKind::Full);

    // Policy on B: tcp 8080 from the frontend set and ICMP allowed, the rest dropped.
    assert!(tcp_ok(&a.ns, b.ip, 8080), "A -> B:8080 allowed");
    assert!(
        !tcp_ok(&a.ns, b.ip, 9090),
        "A -> B:9090 denied (end of tier)"
    );
    assert!(ping_ok(&a.ns, b.ip), "A -> B ping allowed");
    assert!(ping_ok(&b.ns, a.ip), "B -> A ping allowed (profiles)");
    assert!(tcp_ok(&b.ns, a.ip, 8080), "B -> A:8080 allowed (profiles)");

    // Unknown cali* interface: dropped in both directions.
    assert!(!ping_ok(&c.ns, a.ip), "unknown cali3c -> A dropped");
    assert!(!tcp_ok(&a.ns, c.ip, 8080), "A -> unknown cali3c dropped");
    assert!(!ping_ok(&c.ns, HOST_IP), "unknown cali3c -> host dropped");

    // A label change: A leaves the frontend set (incremental transaction, set elements only).
    dp.on_message(&ToDataplane::IpSetDeltaUpdate(IpSetDeltaUpdate {
        id: "s:frontend".into(),
        added_members: vec![],
        removed_members: vec!["10.65.0.2/32".into()],
    }))
    .unwrap();
    let (script, kind) = dp.pending_script().unwrap();
    assert_eq!(kind, ApplyKind::Incremental);
    assert_eq!(
        script,
        "delete element inet calico s4-s-frontend { 10.65.0.2 }\n"
    );
    assert_eq!(rt.block_on(dp.apply()).unwrap(), ApplyKind::Incremental);
    assert!(
        !tcp_ok(&a.ns, b.ip, 8080),
        "A -> B:8080 denied after the set change"
    );
    assert!(ping_ok(&a.ns, b.ip), "ICMP still allowed");

    // Anti-spoofing: A sends from an address that is not its own.
    a.ns.ip(&["addr", "add", "10.65.0.9/32", "dev", "eth0"])
        .unwrap();
    node.ip(&[
        "route",
        "add",
        "10.65.0.9/32",
        "dev",
        "cali1a",
        "scope",
        "link",
    ])
    .unwrap();
    assert!(
        !ping_from(&a.ns, "10.65.0.9", b.ip),
        "spoofed source dropped"
    );
    dp.on_message(&wep_msg("cali1a", a.ip, vec![], &["10.65.0.9/32"]))
        .unwrap();
    assert_eq!(rt.block_on(dp.apply()).unwrap(), ApplyKind::Incremental);
    assert!(
        ping_from(&a.ns, "10.65.0.9", b.ip),
        "allowSpoofedSourcePrefixes lets it through (so the drop above was anti-spoofing)"
    );

    // Drift: somebody deletes the fail-closed rule by hand; the unknown workload gets through
    // until the resync restores it.
    let listing = node
        .exec_ok(&[
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "calico",
            "from-wl-dispatch",
        ])
        .unwrap();
    let handle = listing
        .lines()
        .find(|l| l.contains("unknown interface"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap()
        .trim()
        .to_string();
    node.exec_ok(&[
        "nft",
        "delete",
        "rule",
        "inet",
        "calico",
        "from-wl-dispatch",
        "handle",
        &handle,
    ])
    .unwrap();
    assert!(ping_ok(&c.ns, a.ip), "hole after the manual deletion");
    assert!(rt.block_on(dp.resync()).unwrap(), "resync saw the drift");
    assert!(!ping_ok(&c.ns, a.ip), "resync restored the drop");
    assert!(!rt.block_on(dp.resync()).unwrap(), "no drift after repair");

    // Drift that keeps the rule count: the drop is replaced in place by an accept.
    let listing = node
        .exec_ok(&[
            "nft",
            "-a",
            "list",
            "chain",
            "inet",
            "calico",
            "from-wl-dispatch",
        ])
        .unwrap();
    let handle = listing
        .lines()
        .find(|l| l.contains("unknown interface"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap()
        .trim()
        .to_string();
    node.exec_ok(&[
        "nft",
        "replace",
        "rule",
        "inet",
        "calico",
        "from-wl-dispatch",
        "handle",
        &handle,
        "accept",
    ])
    .unwrap();
    assert!(ping_ok(&c.ns, a.ip), "hole after the in-place edit");
    assert!(
        rt.block_on(dp.resync()).unwrap(),
        "resync saw the edited rule"
    );
    assert!(!ping_ok(&c.ns, a.ip), "resync restored the drop again");

    // Felix goes away: the table stays, and so does the protection.
    drop(dp);
    let nft = NftCli::in_netns(node.netns().clone());
    assert!(
        rt.block_on(nft.list_table(TableFamily::Inet, "calico"))
            .unwrap()
            .is_some()
    );
    assert!(!ping_ok(&c.ns, a.ip), "still dropped with no Felix");
    assert!(ping_ok(&a.ns, b.ip), "allowed flow still allowed");
}

#[test]
fn endpoint_to_host_action() {
    if !lab_available("endpoint_to_host_action") {
        return;
    }
    if !binary_in_path("nft") {
        eprintln!("SKIP endpoint_to_host_action: `nft` not installed");
        return;
    }
    let node = LabNs::new("fnhost").unwrap();
    node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
        .unwrap();
    node.ip(&["addr", "add", HOST_IP, "dev", "lo"]).unwrap();
    let a = plumb(&node, "fnha", "cali1a", "10.65.0.2");
    assert!(ping_ok(&a.ns, HOST_IP), "baseline: workload -> host");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (action, reachable) in [
        (felix_nft::EndpointToHostAction::Drop, false),
        (felix_nft::EndpointToHostAction::Accept, true),
        (felix_nft::EndpointToHostAction::Return, true),
        (felix_nft::EndpointToHostAction::Drop, false),
    ] {
        let cfg = Config {
            endpoint_to_host_action: action,
            ..Config::default()
        };
        let mut dp = NftDataplane::new(NftCli::in_netns(node.netns().clone()), cfg);
        dp.on_message(&profile(
            "kns.default",
            vec![rule("allow")],
            vec![rule("allow")],
        ))
        .unwrap();
        dp.on_message(&wep_msg("cali1a", a.ip, vec![], &[]))
            .unwrap();
        // A fresh dataplane replaces whatever the previous one left (start of day).
        assert_eq!(rt.block_on(dp.apply()).unwrap(), ApplyKind::Full);
        assert_eq!(
            ping_ok(&a.ns, HOST_IP),
            reachable,
            "workload -> host with {action:?}"
        );
    }
}

fn hep(
    iface: &str,
    tiers: Vec<TierInfo>,
    forward: Vec<TierInfo>,
    pre_dnat: Vec<TierInfo>,
) -> ToDataplane {
    ToDataplane::HostEndpointUpdate(HostEndpointUpdate {
        id: HostEndpointId {
            endpoint_id: format!("node-{iface}"),
        },
        endpoint: HostEndpoint {
            name: iface.into(),
            profile_ids: vec![],
            tiers,
            untracked_tiers: vec![],
            pre_dnat_tiers: pre_dnat,
            forward_tiers: forward,
            expected_ipv4_addrs: vec![],
            expected_ipv6_addrs: vec![],
        },
    })
}

/// A host endpoint on the node's uplink: failsafe ports stay open with no policy, normal
/// policy opens more, applyOnForward policy polices forwarded traffic, preDNAT denies early.
#[test]
fn host_endpoint_failsafe_forward_and_prednat() {
    if !lab_available("host_endpoint_failsafe_forward_and_prednat") {
        return;
    }
    if !binary_in_path("nft") {
        eprintln!("SKIP host_endpoint_failsafe_forward_and_prednat: `nft` not installed");
        return;
    }
    let node = LabNs::new("fnhep").unwrap();
    node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
        .unwrap();
    let ext = LabNs::new("fnext").unwrap();
    node.veth_to("eth0", &ext, "eth0").unwrap();
    node.ip(&["addr", "add", "10.99.1.1/24", "dev", "eth0"])
        .unwrap();
    node.ip(&["link", "set", "eth0", "up"]).unwrap();
    ext.ip(&["addr", "add", "10.99.1.2/24", "dev", "eth0"])
        .unwrap();
    ext.ip(&["link", "set", "eth0", "up"]).unwrap();
    ext.ip(&["route", "add", "10.65.0.0/24", "via", "10.99.1.1"])
        .unwrap();
    let a = plumb(&node, "fnhwa", "cali1a", "10.65.0.2");
    listen(&node, "10.99.1.1", 22);
    listen(&node, "10.99.1.1", 8080);
    listen(&a.ns, a.ip, 80);
    assert!(tcp_ok(&ext, "10.99.1.1", 8080), "baseline to host");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut dp = NftDataplane::new(NftCli::in_netns(node.netns().clone()), Config::default());
    dp.on_message(&profile(
        "kns.default",
        vec![rule("allow")],
        vec![rule("allow")],
    ))
    .unwrap();
    dp.on_message(&wep_msg("cali1a", a.ip, vec![], &[]))
        .unwrap();
    dp.on_message(&hep("eth0", vec![], vec![], vec![])).unwrap();
    rt.block_on(dp.apply()).unwrap();
    assert!(tcp_ok(&ext, "10.99.1.1", 22), "failsafe tcp:22 open");
    assert!(
        !tcp_ok(&ext, "10.99.1.1", 8080),
        "host endpoint without policy drops"
    );
    assert!(
        tcp_ok(&ext, a.ip, 80),
        "forwarded traffic allowed by default"
    );

    // Normal policy opens 8080; an applyOnForward policy denies forwarded traffic.
    let open = pid("default", "default.open-8080", "");
    let fwd = pid("default", "default.no-forward", "");
    dp.on_message(&policy(
        &open,
        vec![Rule {
            action: "allow".into(),
            ..tcp(&[(8080, 8080)])
        }],
        vec![],
    ))
    .unwrap();
    dp.on_message(&policy(&fwd, vec![rule("deny")], vec![]))
        .unwrap();
    dp.on_message(&hep(
        "eth0",
        vec![tier("default", "Deny", std::slice::from_ref(&open), &[])],
        vec![tier("default", "Deny", std::slice::from_ref(&fwd), &[])],
        vec![],
    ))
    .unwrap();
    assert_eq!(rt.block_on(dp.apply()).unwrap(), ApplyKind::Incremental);
    assert!(tcp_ok(&ext, "10.99.1.1", 8080), "policy opened 8080");
    assert!(!tcp_ok(&ext, a.ip, 80), "applyOnForward deny");

    // preDNAT deny of the external peer (failsafe still applies first).
    let pre = pid("default", "default.prednat", "");
    dp.on_message(&policy(
        &pre,
        vec![Rule {
            action: "deny".into(),
            src_net: vec!["10.99.1.2/32".into()],
            ..Default::default()
        }],
        vec![],
    ))
    .unwrap();
    dp.on_message(&hep(
        "eth0",
        vec![tier("default", "Deny", std::slice::from_ref(&open), &[])],
        vec![],
        vec![tier("default", "Deny", std::slice::from_ref(&pre), &[])],
    ))
    .unwrap();
    rt.block_on(dp.apply()).unwrap();
    assert!(!tcp_ok(&ext, "10.99.1.1", 8080), "preDNAT deny");
    assert!(tcp_ok(&ext, "10.99.1.1", 22), "failsafe beats preDNAT deny");
}

/// Real Calico resources through the real calculation graph into the kernel: a label change
/// on the client turns an allowed flow into a denied one with an incremental transaction.
#[test]
fn calc_graph_to_kernel() {
    if !lab_available("calc_graph_to_kernel") {
        return;
    }
    if !binary_in_path("nft") {
        eprintln!("SKIP calc_graph_to_kernel: `nft` not installed");
        return;
    }
    use calico_model::AnyResource;
    use felix_calc::{CalcGraph, Update};

    let node = LabNs::new("fncalc").unwrap();
    node.sysctl("net.ipv4.ip_forward", "1").unwrap();
    node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
        .unwrap();
    let fe = plumb(&node, "fncfe", "cali1a", "10.65.0.2");
    let be = plumb(&node, "fncbe", "cali2b", "10.65.0.3");
    listen(&be.ns, be.ip, 8080);
    listen(&be.ns, be.ip, 9090);

    let wep = |app: &str| {
        format!(
            "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: node1-k8s-fe-eth0, namespace: ns1, labels: {{app: {app}}}}}
spec: {{orchestrator: k8s, node: node1, pod: fe, endpoint: eth0,
       interfaceName: cali1a, ipNetworks: [10.65.0.2/32]}}
"
        )
    };
    let yaml = format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: backend-in}}
spec:
  selector: app == 'backend'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {{selector: app == 'frontend'}}
    destination: {{ports: [8080]}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: all-out}}
spec:
  selector: all()
  types: [Egress]
  egress: [{{action: Allow}}]
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {{name: node1-k8s-be-eth0, namespace: ns1, labels: {{app: backend}}}}
spec: {{orchestrator: k8s, node: node1, pod: be, endpoint: eth0,
       interfaceName: cali2b, ipNetworks: [10.65.0.3/32]}}
---
{}",
        wep("frontend")
    );
    let mut graph = CalcGraph::new("node1");
    for doc in calico_model::load::parse_documents(&yaml, "test").unwrap() {
        graph
            .apply(Update::upsert(AnyResource::from_value(doc).unwrap()))
            .unwrap();
    }
    graph.apply(Update::InSync).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut dp = NftDataplane::new(NftCli::in_netns(node.netns().clone()), Config::default());
    for m in graph.flush() {
        dp.on_message(&m).unwrap();
    }
    assert_eq!(rt.block_on(dp.apply()).unwrap(), ApplyKind::Full);
    assert!(
        tcp_ok(&fe.ns, be.ip, 8080),
        "frontend -> backend:8080 allowed"
    );
    assert!(!tcp_ok(&fe.ns, be.ip, 9090), "backend:9090 denied");

    // Relabel the client: it leaves the frontend selector's IP set.
    for doc in calico_model::load::parse_documents(&wep("other"), "relabel").unwrap() {
        graph
            .apply(Update::upsert(AnyResource::from_value(doc).unwrap()))
            .unwrap();
    }
    for m in graph.flush() {
        dp.on_message(&m).unwrap();
    }
    let (script, kind) = dp.pending_script().unwrap();
    assert_eq!(kind, ApplyKind::Incremental);
    assert!(
        script.contains("delete element inet calico s4-") && script.contains("10.65.0.2"),
        "{script}"
    );
    assert_eq!(
        script.lines().count(),
        1,
        "one set element, nothing else: {script}"
    );
    rt.block_on(dp.apply()).unwrap();
    assert!(!tcp_ok(&fe.ns, be.ip, 8080), "relabelled client denied");
}

/// IPv6 workloads: the v6 halves of selector sets, rules and anti-spoofing in the kernel.
#[test]
fn ipv6_policy_and_antispoofing() {
    if !lab_available("ipv6_policy_and_antispoofing") {
        return;
    }
    if !binary_in_path("nft") {
        eprintln!("SKIP ipv6_policy_and_antispoofing: `nft` not installed");
        return;
    }
    let node = LabNs::new("fn6node").unwrap();
    node.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    let plumb6 = |tag: &str, iface: &str, ip: &'static str| {
        let ns = LabNs::new(tag).unwrap();
        node.veth_to(iface, &ns, "eth0").unwrap();
        node.ip(&["link", "set", iface, "address", "ee:ee:ee:ee:ee:ee"])
            .unwrap();
        node.sysctl(&format!("net.ipv6.conf.{iface}.accept_dad"), "0")
            .unwrap();
        node.ip(&["link", "set", iface, "up"]).unwrap();
        ns.sysctl("net.ipv6.conf.eth0.accept_dad", "0").unwrap();
        ns.ip(&["addr", "add", &format!("{ip}/128"), "dev", "eth0", "nodad"])
            .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fe80::ecee:eeff:feee:eeee",
            "dev",
            "eth0",
        ])
        .unwrap();
        node.ip(&["-6", "route", "add", &format!("{ip}/128"), "dev", iface])
            .unwrap();
        Workload { ns, ip }
    };
    let a = plumb6("fn6a", "cali1a", "fd00::2");
    let b = plumb6("fn6b", "cali2b", "fd00::3");
    listen(&b.ns, b.ip, 8080);
    listen(&b.ns, b.ip, 9090);
    let v6 = |ip: &str| format!("[{ip}]");
    let tcp6 = |ns: &LabNs, ip: &str, port: u16| {
        let addr: SocketAddr = format!("{}:{port}", v6(ip)).parse().unwrap();
        ns.netns()
            .run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(1500)).is_ok())
            .unwrap()
    };
    // Neighbour discovery and routes can take a moment on fresh links.
    let mut baseline = false;
    for _ in 0..10 {
        if tcp6(&a.ns, b.ip, 9090) {
            baseline = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(baseline, "baseline IPv6 tcp");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut dp = NftDataplane::new(NftCli::in_netns(node.netns().clone()), Config::default());
    let web = pid("default", "default.web6", "");
    let wep6 = |iface: &str, ip: &str, tiers: Vec<TierInfo>, spoof: &[&str]| {
        let mut m = wep(iface, &[], &["kns.default"], tiers);
        if let ToDataplane::WorkloadEndpointUpdate(u) = &mut m {
            u.endpoint.ipv6_nets = vec![format!("{ip}/128")];
            u.endpoint.allow_spoofed_source_prefixes =
                spoof.iter().map(|s| s.to_string()).collect();
        }
        m
    };
    for m in [
        profile("kns.default", vec![rule("allow")], vec![rule("allow")]),
        ipset("s:fe6", IpSetType::Net, &["fd00::2/128", "10.65.0.2/32"]),
        policy(
            &web,
            vec![
                Rule {
                    action: "allow".into(),
                    src_ip_set_ids: vec!["s:fe6".into()],
                    ..tcp(&[(8080, 8080)])
                },
                Rule {
                    action: "allow".into(),
                    protocol: Some(Protocol::Name("icmpv6".into())),
                    ..Default::default()
                },
            ],
            vec![],
        ),
        wep6("cali1a", a.ip, vec![], &[]),
        wep6(
            "cali2b",
            b.ip,
            vec![tier("default", "Deny", std::slice::from_ref(&web), &[])],
            &[],
        ),
    ] {
        dp.on_message(&m).unwrap();
    }
    rt.block_on(dp.apply()).unwrap();
    assert!(tcp6(&a.ns, b.ip, 8080), "v6 8080 allowed from the set");
    assert!(!tcp6(&a.ns, b.ip, 9090), "v6 9090 denied");

    // Spoofed v6 source from A.
    a.ns.ip(&["addr", "add", "fd00::9/128", "dev", "eth0", "nodad"])
        .unwrap();
    node.ip(&["-6", "route", "add", "fd00::9/128", "dev", "cali1a"])
        .unwrap();
    assert!(
        ping_from(&a.ns, "fd00::2", b.ip),
        "ICMPv6 from the real source"
    );
    assert!(
        !ping_from(&a.ns, "fd00::9", b.ip),
        "spoofed v6 source dropped"
    );
    dp.on_message(&wep6("cali1a", a.ip, vec![], &["fd00::9/128"]))
        .unwrap();
    rt.block_on(dp.apply()).unwrap();
    assert!(
        ping_from(&a.ns, "fd00::9", b.ip),
        "allowed once fd00::9 is an allowed spoofed prefix"
    );
}

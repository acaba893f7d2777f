//! Multi-host acceptance of calico-node through the lab: pods on different nodes reach each
//! other with a BGP full mesh, with one and two route reflectors, and with VXLAN; every BGP
//! session shows `Established` in `calicoctl node status` on its node; natOutgoing makes an
//! outside host see the node's address instead of the pod's.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use calico_lab::bench;
use calico_lab::lab::{Lab, LabSpec, Routing};
use calico_lab::names;
use calico_lab::probe::{self, Proto};

const MESH_CHECKS: &[(u16, Proto)] = &[(80, Proto::Tcp), (0, Proto::Icmp)];
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A lab of `nodes` nodes with one pod per node (`x/p<i>` on `node-<i>`), every node routing
/// every other node's pods.
fn lab_with_pods(nodes: usize, routing: Routing, route_reflectors: usize) -> Lab {
    let mut spec = LabSpec::new(&names::ephemeral_lab_name(), nodes);
    spec.routing = routing;
    spec.route_reflectors = route_reflectors;
    let mut lab = Lab::up(&spec).expect("lab up");
    for i in 1..=nodes {
        lab.add_pod_k8s(
            "x",
            &format!("p{i}"),
            Some(&format!("node-{i}")),
            &BTreeMap::new(),
        )
        .expect("pod");
    }
    lab.wait_converged(Duration::from_secs(30))
        .expect("felix converged");
    lab.wait_pod_routes(Duration::from_secs(30))
        .expect("pod routes on every node");
    lab
}

fn assert_full_mesh(lab: &Lab) {
    let took = bench::wait_pod_mesh(lab, MESH_CHECKS, PROBE_TIMEOUT, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("lab {}: {e}", lab.name()));
    eprintln!(
        "lab {} ({} nodes, {}): every pod reaches every other pod (TCP, ICMP) after {} ms",
        lab.name(),
        lab.state.nodes.len(),
        lab.state.routing,
        took.as_millis()
    );
}

/// `calicoctl node status` on `node` until every peer in `peers` is on an `Established` row;
/// returns the last output.
fn node_status_established(lab: &Lab, node: &str, peers: &[String]) -> String {
    let t0 = Instant::now();
    loop {
        let out = lab
            .node_calicoctl(node, &["node", "status"])
            .unwrap_or_else(|e| format!("error: {e}"));
        let ok = peers.iter().all(|p| {
            out.lines()
                .any(|l| l.contains(&format!(" {p} ")) && l.contains("Established"))
        });
        if ok {
            return out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "node {node}: not every peer of {peers:?} Established:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn established_rows(status: &str) -> usize {
    status.lines().filter(|l| l.contains("Established")).count()
}

#[test]
fn full_mesh_three_nodes_pods_reach_each_other_and_sessions_established() {
    if !common::lab_available("full_mesh_three_nodes") {
        return;
    }
    common::build_binaries();
    let lab = lab_with_pods(3, Routing::BgpMesh, 1);
    assert_full_mesh(&lab);
    for node in &lab.state.nodes {
        let peers: Vec<String> = lab
            .state
            .nodes
            .iter()
            .filter(|n| n.name != node.name)
            .map(|n| n.ip.clone())
            .collect();
        let out = node_status_established(&lab, &node.name, &peers);
        assert!(out.contains("node-to-node mesh"), "{out}");
        assert_eq!(established_rows(&out), 2, "node {}:\n{out}", node.name);
    }
    let name = lab.name().to_string();
    lab.down().expect("down");
    common::assert_nothing_left(&name);
}

/// Four nodes, mesh off, the first `rrs` nodes reflect: pods reach each other; a client node
/// peers with exactly the reflectors, a reflector with every other node.
fn route_reflectors(rrs: usize) {
    let lab = lab_with_pods(4, Routing::BgpRouteReflector, rrs);
    assert_full_mesh(&lab);
    let ips: Vec<String> = lab.state.nodes.iter().map(|n| n.ip.clone()).collect();
    for (i, node) in lab.state.nodes.iter().enumerate() {
        let peers: Vec<String> = if i < rrs {
            ips.iter().filter(|ip| **ip != node.ip).cloned().collect()
        } else {
            ips[..rrs].to_vec()
        };
        let out = node_status_established(&lab, &node.name, &peers);
        assert!(!out.contains("node-to-node mesh"), "{out}");
        assert_eq!(
            established_rows(&out),
            peers.len(),
            "node {} ({} reflectors):\n{out}",
            node.name,
            rrs
        );
    }
    let name = lab.name().to_string();
    lab.down().expect("down");
    common::assert_nothing_left(&name);
}

#[test]
fn four_nodes_one_route_reflector() {
    if !common::lab_available("four_nodes_one_route_reflector") {
        return;
    }
    common::build_binaries();
    route_reflectors(1);
}

#[test]
fn four_nodes_two_route_reflectors() {
    if !common::lab_available("four_nodes_two_route_reflectors") {
        return;
    }
    common::build_binaries();
    route_reflectors(2);
}

#[test]
fn vxlan_three_nodes_pods_reach_each_other() {
    if !common::lab_available("vxlan_three_nodes") {
        return;
    }
    common::build_binaries();
    let lab = lab_with_pods(3, Routing::Vxlan, 1);
    assert_full_mesh(&lab);
    // The routes to other nodes' pods go through the VXLAN device.
    let out = std::process::Command::new("ip")
        .args(["-n", &lab.state.nodes[0].netns, "route", "show"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(routes.contains("vxlan.calico"), "{routes}");
    let name = lab.name().to_string();
    lab.down().expect("down");
    common::assert_nothing_left(&name);
}

/// The peer address a TCP server in namespace `ns` on `port` sees when `pod` connects, or
/// `None` when the connection does not complete.
fn peer_seen_by_host(lab: &Lab, ns: &str, port: u16, pod: &str) -> Option<Ipv4Addr> {
    let handle = calico_linux::NetNs::named(ns).unwrap();
    let listener = handle
        .run(|| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let src = calico_linux::NetNs::named(&lab.state.pods[pod].netns).unwrap();
    let connected = probe::probe(
        &src,
        "203.0.113.10".parse().unwrap(),
        port,
        Proto::Tcp,
        Duration::from_secs(1),
    )
    .unwrap();
    // The server may see the handshake's last ACK a moment after the client's connect returned.
    let t0 = Instant::now();
    let accepted = loop {
        match listener.accept() {
            Ok((_, SocketAddr::V4(peer))) => break Some(*peer.ip()),
            Ok((_, other)) => panic!("IPv6 peer {other}"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if t0.elapsed() > Duration::from_millis(500) {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    assert_eq!(connected, accepted.is_some(), "probe vs accept disagree");
    accepted
}

#[test]
fn nat_outgoing_host_sees_node_address_and_without_it_the_pod_address() {
    if !common::lab_available("nat_outgoing") {
        return;
    }
    common::build_binaries();
    let lab = lab_with_pods(2, Routing::BgpMesh, 1);
    let pod = lab.state.pods["x/p2"].clone();
    let node_ip: Ipv4Addr = lab.state.node("node-2").unwrap().ip.parse().unwrap();
    let pod_ip: Ipv4Addr = pod.ip.parse().unwrap();
    // An outside host with no route back to the pods (only its fabric /24 and its own /32).
    let host = lab
        .add_host(0, "ext", "203.0.113.10".parse().unwrap(), false)
        .expect("host");

    lab.calicoctl(
        &[
            "patch",
            "ippool",
            "lab-ipv4-pool",
            "-p",
            r#"{"spec":{"natOutgoing":true}}"#,
        ],
        None,
    )
    .expect("natOutgoing on");
    lab.wait_converged(Duration::from_secs(20)).unwrap();
    assert_eq!(
        peer_seen_by_host(&lab, &host, 8080, "x/p2"),
        Some(node_ip),
        "natOutgoing true: the host sees the node's address"
    );

    lab.calicoctl(
        &[
            "patch",
            "ippool",
            "lab-ipv4-pool",
            "-p",
            r#"{"spec":{"natOutgoing":false}}"#,
        ],
        None,
    )
    .expect("natOutgoing off");
    lab.wait_converged(Duration::from_secs(20)).unwrap();
    assert_eq!(
        peer_seen_by_host(&lab, &host, 8081, "x/p2"),
        None,
        "natOutgoing false: the pod's address arrives and the host cannot answer it"
    );
    // Given a route back, the host answers and sees the pod's own address.
    let out = std::process::Command::new("ip")
        .args([
            "-n",
            &host,
            "route",
            "add",
            &format!("{pod_ip}/32"),
            "via",
            &node_ip.to_string(),
        ])
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(
        peer_seen_by_host(&lab, &host, 8082, "x/p2"),
        Some(pod_ip),
        "natOutgoing false: the host sees the pod's address"
    );
    let name = lab.name().to_string();
    lab.down().expect("down");
    common::assert_nothing_left(&name);
}

/// FRR daemons started in a lab namespace: each is killed (its whole process group) when the
/// guard drops, also on panic. The lab's teardown stops them too (they run in a lab namespace
/// and carry the lab tag) and removes their directory under the lab's state directory.
struct FrrGuard(Vec<std::process::Child>);

impl Drop for FrrGuard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // Own process group (procs::InNs::spawn): the group id is the daemon's pid.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = c.wait();
        }
    }
}

fn frr_available() -> bool {
    std::path::Path::new("/usr/lib/frr/bgpd").is_file()
        && std::path::Path::new("/usr/lib/frr/zebra").is_file()
        && std::process::Command::new("id")
            .arg("frr")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The acceptance's foreign router: FRR in its own namespace on the lab fabric, AS 65001, a
/// global BGPPeer (through the lab's calicoctl) makes every node (AS 64512) peer with it; FRR
/// learns every node's block with the node as next hop (no static routes back: the host is
/// added without them), and TCP and ICMP from its namespace reach every pod.
#[test]
fn frr_tor_learns_blocks_and_reaches_pods() {
    if !common::lab_available("frr_tor_learns_blocks_and_reaches_pods") {
        return;
    }
    if !frr_available() {
        eprintln!(
            "SKIP frr_tor_learns_blocks_and_reaches_pods: FRR (/usr/lib/frr/bgpd, zebra, user frr) not installed"
        );
        return;
    }
    common::build_binaries();
    let t0 = Instant::now();
    let lab = lab_with_pods(3, Routing::BgpMesh, 1);
    let tor_ip = calico_lab::fabric::host_ip(0);
    let tor = lab
        .add_host(0, "tor", "203.0.113.20".parse().unwrap(), false)
        .expect("tor host");
    // No route to any pod before FRR learns them.
    let before = procs_ip(&["-n", &tor, "-4", "route", "show"]);
    assert!(!before.contains("10.244."), "{before}");

    let dir = lab.state.dir().join("frr");
    std::fs::create_dir_all(&dir).unwrap();
    let mut conf = format!(
        "hostname tor\nrouter bgp 65001\n bgp router-id {tor_ip}\n no bgp ebgp-requires-policy\n no bgp network import-check\n"
    );
    for n in &lab.state.nodes {
        conf.push_str(&format!(
            " neighbor {ip} remote-as 64512\n neighbor {ip} timers connect 1\n",
            ip = n.ip
        ));
    }
    std::fs::write(dir.join("bgpd.conf"), conf).unwrap();
    std::fs::write(dir.join("zebra.conf"), "hostname tor\n").unwrap();
    // FRR drops to user frr: its directory must be its own.
    let st = std::process::Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "chown frr {}", dir.display());
    let ds = dir.display().to_string();
    let mut frr = FrrGuard(Vec::new());
    for daemon in ["zebra", "bgpd"] {
        let child = calico_lab::procs::InNs {
            lab: lab.name(),
            netns: &tor,
            argv: calico_lab::procs::argv([
                format!("/usr/lib/frr/{daemon}"),
                "-f".into(),
                format!("{ds}/{daemon}.conf"),
                "-i".into(),
                format!("{ds}/{daemon}.pid"),
                "-z".into(),
                format!("{ds}/zserv.api"),
                "--vty_socket".into(),
                ds.clone(),
                "-P".into(),
                "0".into(),
                "--log".into(),
                format!("file:{ds}/{daemon}.log"),
            ]),
            env: Vec::new(),
        }
        .spawn(&dir.join(format!("{daemon}.out")))
        .expect("start FRR daemon");
        frr.0.push(child);
        if daemon == "zebra" {
            // bgpd connects to zebra's socket; give zebra a moment to create it.
            let z = dir.join("zserv.api");
            let t = Instant::now();
            while !z.exists() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    lab.calicoctl_apply(&[serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "tor"},
        "spec": {"peerIP": tor_ip, "asNumber": 65001}
    })])
    .expect("BGPPeer tor");

    // Every node's block (the /26 of its pod), learned with the node as next hop.
    let blocks: Vec<(String, String)> = lab
        .state
        .pods
        .values()
        .map(|p| {
            let net: ipnet::Ipv4Net = format!("{}/{}", p.ip, calico_lab::fabric::POOL_BLOCK_SIZE)
                .parse()
                .unwrap();
            let node = lab.state.node(&p.node).unwrap();
            (net.trunc().to_string(), node.ip.clone())
        })
        .collect();
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    let vtysh = |cmd: &str| {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &tor,
                "vtysh",
                "--vty_socket",
                &ds,
                "-c",
                cmd,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Every node exports the pool's routes it knows (upstream's `calico_export_to_bgp_peers`
    // accepts any route in the pool), so FRR may hold a block as a multipath route over several
    // nodes; the block's own node must be one of its next hops.
    let t_peer = Instant::now();
    let routes = loop {
        let r = bgp_routes(&tor);
        let all = blocks
            .iter()
            .all(|(b, via)| r.get(b).is_some_and(|hops| hops.contains(via)));
        if all {
            break r;
        }
        assert!(
            t_peer.elapsed() < Duration::from_secs(20),
            "FRR did not learn every block {blocks:?}; kernel bgp routes: {r:?}\n{}",
            vtysh("show bgp summary")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "FRR (AS 65001) learned every block after {:?}: {routes:?}",
        t_peer.elapsed()
    );
    // Only blocks, no pod /32s: workload routes sit at the normal priority (metric 1024), which
    // calico_aggr does not treat as elevated (live-migration) routes.
    let hosts: Vec<&String> = routes
        .keys()
        .filter(|d| !d.contains('/') || d.ends_with("/32"))
        .collect();
    assert!(
        hosts.is_empty(),
        "pod host routes exported to the ToR: {hosts:?}"
    );
    for (b, via) in &blocks {
        let bgp = vtysh(&format!("show ip bgp {b}"));
        assert!(
            bgp.contains(&format!("{via} from {via}")) && bgp.contains("64512"),
            "show ip bgp {b} lacks the path from {via} (AS 64512):\n{bgp}"
        );
    }
    for n in &lab.state.nodes {
        let nb = vtysh(&format!("show bgp neighbor {}", n.ip));
        assert!(nb.contains("BGP state = Established"), "{}: {nb}", n.name);
    }

    // Traffic from the ToR's namespace reaches every pod (TCP 80 and ICMP).
    let src = calico_linux::NetNs::named(&tor).unwrap();
    for (key, p) in &lab.state.pods {
        let ip: Ipv4Addr = p.ip.parse().unwrap();
        for &(port, proto) in MESH_CHECKS {
            let t = Instant::now();
            let ok = loop {
                if probe::probe(&src, ip, port, proto, PROBE_TIMEOUT).unwrap() {
                    break true;
                }
                if t.elapsed() > Duration::from_secs(5) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            assert!(ok, "ToR -> {key} ({ip}) {port}/{proto:?} blocked");
        }
    }
    eprintln!(
        "ToR reaches every pod (TCP, ICMP); test body {:?}",
        t0.elapsed()
    );
    drop(frr);
    let name = lab.name().to_string();
    lab.down().expect("down");
    common::assert_nothing_left(&name);
}

fn procs_ip(args: &[&str]) -> String {
    calico_lab::procs::ip(args).unwrap_or_else(|e| format!("error: {e}"))
}

/// `proto bgp` IPv4 routes in namespace `ns`: destination -> next hops (single or multipath).
fn bgp_routes(ns: &str) -> BTreeMap<String, Vec<String>> {
    let out = procs_ip(&["-n", ns, "-4", "-j", "route", "show", "proto", "bgp"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    v.iter()
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?.to_string();
            let mut hops: Vec<String> = r
                .get("gateway")
                .and_then(|g| g.as_str())
                .map(str::to_string)
                .into_iter()
                .collect();
            if let Some(nh) = r.get("nexthops").and_then(|n| n.as_array()) {
                hops.extend(
                    nh.iter()
                        .filter_map(|h| h.get("gateway")?.as_str().map(str::to_string)),
                );
            }
            Some((dst, hops))
        })
        .collect()
}

//! Real calico-node + BIRD in namespace clusters (see `common`). Needs root, `bird`/`birdc`
//! (and `/usr/lib/frr/bgpd` for the ToR test); prints SKIP otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use calico_linux::testlab::{self, binary_in_path};
use common::{Cluster, calicoctl_bin, wait_for, wait_full_mesh, wait_until};
use serde_json::json;

fn lab(test: &str) -> bool {
    if !testlab::lab_available(test) {
        return false;
    }
    if !binary_in_path("bird") || !binary_in_path("birdc") {
        eprintln!("SKIP {test}: bird/birdc not installed");
        return false;
    }
    true
}

/// Destination → next-hop addresses of `ip route` output, single-path (`via` on the route's
/// line) and multipath (indented `nexthop via` lines) alike.
fn route_next_hops(out: &str) -> std::collections::HashMap<&str, Vec<&str>> {
    let mut m = std::collections::HashMap::<&str, Vec<&str>>::new();
    let mut current = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !line.starts_with(char::is_whitespace) {
            current = words.first().copied();
            if let Some(dst) = current {
                m.entry(dst).or_default();
            }
        }
        let Some(dst) = current else { continue };
        for w in words.windows(2) {
            if w[0] == "via" {
                m.entry(dst).or_default().push(w[1]);
            }
        }
    }
    m
}

#[test]
fn route_next_hops_reads_single_and_multipath_routes() {
    let out = "10.65.1.0/26 nhid 15 proto bgp metric 20 \n\tnexthop via 10.99.0.1 dev eth0 weight 1 \n\tnexthop via 10.99.0.2 dev eth0 weight 1 \n10.65.2.0/26 via 10.99.0.3 dev eth0 proto bgp metric 20 \n10.99.0.0/24 dev eth0 proto kernel scope link src 10.99.0.254 \n";
    let m = route_next_hops(out);
    assert_eq!(m["10.65.1.0/26"], ["10.99.0.1", "10.99.0.2"]);
    assert_eq!(m["10.65.2.0/26"], ["10.99.0.3"]);
    assert!(m["10.99.0.0/24"].is_empty());
}

fn blocks(c: &Cluster) -> Vec<String> {
    (0..c.nodes.len())
        .map(|i| c.allocate_block(i, &format!("lab-{i}")))
        .collect()
}

#[test]
fn full_mesh_three_nodes_with_faults() {
    if !lab("full_mesh_three_nodes_with_faults") {
        return;
    }
    let mut c = Cluster::new(3);
    c.start_all(&[]);
    c.wait_started(Duration::from_secs(20));
    let blocks = blocks(&c);
    let t = wait_full_mesh(&c, &blocks, Duration::from_secs(30));
    eprintln!("3-node mesh: every block routed everywhere {t:?} after allocation");

    // Startup wrote the Node (autodetected address), the default pool and the defaults.
    let node1 =
        c.rt.block_on(calico_node::startup::get_node(&c.client, "node-1"))
            .unwrap()
            .unwrap();
    assert_eq!(
        node1.spec.bgp.as_ref().unwrap().ipv4_address,
        "10.99.0.1/24"
    );
    assert_eq!(
        std::fs::read_to_string(c.nodes[0].run_dir.join("nodename")).unwrap(),
        "node-1"
    );

    // Every session Established, and `calicoctl node status` says so.
    wait_for("sessions established", Duration::from_secs(20), || {
        (0..3).all(|i| c.established(i).len() == 2).then_some(())
    });
    match calicoctl_bin() {
        Some(bin) => {
            let out = std::process::Command::new(bin)
                .args(["node", "status", "--run-dir"])
                .arg(&c.nodes[0].run_dir)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("Calico process is running."), "{text}");
            for peer in ["10.99.0.2", "10.99.0.3"] {
                let row = text.lines().find(|l| l.contains(peer)).unwrap_or_default();
                assert!(
                    row.contains("node-to-node mesh") && row.contains("Established"),
                    "{text}"
                );
            }
            eprintln!("{text}");
        }
        None => eprintln!(
            "SKIP part of full_mesh_three_nodes_with_faults: calicoctl binary not built \
             (cargo build -p calicoctl); node status not checked"
        ),
    }

    // Fault: kill node-2's BIRD. calico-node restarts it and its routes come back.
    let old = c.bird_pid(1).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for (j, b) in blocks.iter().enumerate().filter(|(j, _)| *j != 1) {
        let _ = c.nodes[1]
            .ns
            .ip(&["route", "del", b, "via", &c.nodes[j].ip]);
    }
    let (new, t) = wait_for("bird restarted", Duration::from_secs(10), || {
        c.bird_pid(1).filter(|p| *p != old)
    });
    eprintln!("bird restarted as {new} after {t:?}");
    let t = wait_full_mesh(&c, &blocks, Duration::from_secs(30));
    eprintln!("routes back {t:?} after restart");

    // Stop node-3: its block is withdrawn from the others.
    c.stop(2);
    let (_, t) = wait_for("node-3 routes withdrawn", Duration::from_secs(15), || {
        (!c.has_route(0, &blocks[2], "10.99.0.3") && !c.has_route(1, &blocks[2], "10.99.0.3"))
            .then_some(())
    });
    eprintln!("node-3 stopped: its block withdrawn after {t:?}");
    // The rest of the mesh stays.
    assert!(c.has_route(0, &blocks[1], "10.99.0.2"), "{}", c.routes(0));

    // `calico-node -bird-ready` on node-1 now names the lost peer.
    let ready = |i: usize| {
        std::process::Command::new(common::node_bin())
            .arg("-bird-ready")
            .env("CALICO_RUN_DIR", &c.nodes[i].run_dir)
            .output()
            .unwrap()
    };
    let out = ready(0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("BIRD is not ready: BGP not established with Mesh_10_99_0_3"),
        "{err}"
    );
    let out = ready(1);
    assert!(!out.status.success(), "node-2 also lost node-3");
}

#[test]
fn bird_ready_probe_passes_when_every_session_is_established() {
    if !lab("bird_ready_probe_passes_when_every_session_is_established") {
        return;
    }
    let mut c = Cluster::new(2);
    c.start_all(&[]);
    c.wait_started(Duration::from_secs(20));
    wait_for("session established", Duration::from_secs(20), || {
        (c.established(0).len() == 1).then_some(())
    });
    let out = std::process::Command::new(common::node_bin())
        .arg("-bird-ready")
        .env("CALICO_RUN_DIR", &c.nodes[0].run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn route_reflectors_one_and_two() {
    if !lab("route_reflectors_one_and_two") {
        return;
    }
    for rrs in [1usize, 2] {
        let mut c = Cluster::new(4);
        c.start_all(&[]);
        c.wait_started(Duration::from_secs(20));
        c.apply_json(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": false}
        }));
        for i in 0..rrs {
            c.modify_node(i, |v| {
                v["metadata"]["labels"] = json!({"route-reflector": "true"});
                v["spec"]["bgp"]["routeReflectorClusterID"] = json!("224.0.0.1");
            });
        }
        c.apply_json(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
            "metadata": {"name": "peer-with-rr"},
            "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}
        }));
        let blocks = blocks(&c);
        let t = wait_full_mesh(&c, &blocks, Duration::from_secs(40));
        eprintln!("{rrs} route reflector(s), 4 nodes: full route mesh after {t:?}");
        // Clients peer with the reflectors only. Routes can arrive through the first
        // reflector while the session to the second is still coming up: wait for it.
        let mut sessions = c.established(3);
        let t0 = std::time::Instant::now();
        while sessions.len() < rrs && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
            sessions = c.established(3);
        }
        assert_eq!(sessions.len(), rrs, "node-4 sessions: {sessions:?}");
        assert!(
            sessions.iter().all(|s| s.starts_with("Node_10_99_0_")),
            "{sessions:?}"
        );
    }
}

fn frr_available() -> bool {
    std::path::Path::new("/usr/lib/frr/bgpd").exists()
        && std::path::Path::new("/usr/lib/frr/zebra").exists()
}

#[test]
fn frr_tor_learns_blocks_and_bgppeer_delete_drops_session() {
    if !lab("frr_tor_learns_blocks_and_bgppeer_delete_drops_session") {
        return;
    }
    if !frr_available() {
        eprintln!("SKIP frr_tor_learns_blocks_and_bgppeer_delete_drops_session: FRR not installed");
        return;
    }
    let mut c = Cluster::new(3);
    let tor = c.attach("tor", "10.99.0.254/24");
    let d = c.dir.path().join("frr");
    std::fs::create_dir_all(&d).unwrap();
    let mut conf = String::from(
        "hostname tor\nrouter bgp 65000\n bgp router-id 10.99.0.254\n no bgp ebgp-requires-policy\n no bgp network import-check\n",
    );
    for n in &c.nodes {
        conf.push_str(&format!(
            " neighbor {ip} remote-as 64512\n neighbor {ip} timers connect 1\n",
            ip = n.ip
        ));
    }
    std::fs::write(d.join("bgpd.conf"), conf).unwrap();
    std::fs::write(d.join("zebra.conf"), "hostname tor\n").unwrap();
    // FRR runs as user frr: its directory must be writable by it.
    let _ = std::process::Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(&d)
        .status();
    let _ = std::process::Command::new("chmod")
        .args(["755"])
        .arg(c.dir.path())
        .status();
    let ds = d.display().to_string();
    for daemon in ["zebra", "bgpd"] {
        tor.spawn(&[
            &format!("/usr/lib/frr/{daemon}"),
            "-f",
            &format!("{ds}/{daemon}.conf"),
            "-i",
            &format!("{ds}/{daemon}.pid"),
            "-z",
            &format!("{ds}/zserv.api"),
            "--vty_socket",
            &ds,
            "-P",
            "0",
            "--log",
            &format!("file:{ds}/{daemon}.log"),
        ])
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    c.start_all(&[]);
    c.wait_started(Duration::from_secs(20));
    c.apply_json(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "tor"},
        "spec": {"peerIP": "10.99.0.254", "asNumber": 65000}
    }));
    let blocks = blocks(&c);
    let vtysh = |cmd: &str| {
        String::from_utf8_lossy(
            &tor.exec(&["vtysh", "--vty_socket", &ds, "-c", cmd])
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    // Every node also re-advertises the blocks it learned over the mesh (next hop self, as
    // upstream's multihop global peers do), so once the mesh is up the ToR holds each block as
    // an ECMP route; the owner must be among its next hops.
    let learned = || {
        let r = tor.ip(&["-4", "route"]).unwrap_or_default();
        let hops = route_next_hops(&r);
        c.nodes.iter().zip(&blocks).all(|(n, b)| {
            hops.get(b.as_str())
                .is_some_and(|h| h.iter().any(|ip| ip == &n.ip))
        })
    };
    let t0 = std::time::Instant::now();
    if !wait_until(Duration::from_secs(40), learned) {
        let file = |f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        panic!(
            "ToR did not learn every block {blocks:?} in 40 s\n--- ToR routes\n{}\n--- bgp summary\n{}\n--- node-1 protocols\n{}\n--- bgpd.log\n{}\n--- zebra.log\n{}\n{}",
            tor.ip(&["-4", "route"]).unwrap_or_default(),
            vtysh("show bgp summary"),
            c.birdc(0, &["show", "protocols", "all", "Global_10_99_0_254"]),
            file("bgpd.log"),
            file("zebra.log"),
            c.log(0),
        );
    }
    let t = t0.elapsed();
    eprintln!("FRR ToR learned all 3 blocks after {t:?}");
    let established =
        |ip: &str| vtysh(&format!("show bgp neighbor {ip}")).contains("BGP state = Established");
    assert!(established("10.99.0.1"), "{}", vtysh("show bgp summary"));
    let global = c.established(0);
    assert!(
        global.contains(&"Global_10_99_0_254".to_string()),
        "{global:?}"
    );

    // Deleting the BGPPeer drops the session within seconds.
    let t0 = std::time::Instant::now();
    c.delete("BGPPeer", "tor");
    let ok = wait_until(Duration::from_secs(10), || {
        !c.nodes.iter().any(|n| established(&n.ip))
    });
    assert!(ok, "sessions still up:\n{}", vtysh("show bgp summary"));
    eprintln!(
        "BGPPeer deleted: ToR sessions down after {:?}",
        t0.elapsed()
    );
}

#[test]
fn vxlan_backend_two_nodes_tunnel_addresses_and_routes() {
    if !lab("vxlan_backend_two_nodes_tunnel_addresses_and_routes") {
        return;
    }
    let mut c = Cluster::new(2);
    c.start_all(&[
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
    ]);
    // No BIRD in vxlan mode; the VXLAN device appears once the tunnel address is allocated.
    let (_, t) = wait_for("vxlan routes both ways", Duration::from_secs(20), || {
        let ok = (0..2).all(|i| {
            c.nodes[i]
                .ns
                .ip(&["-4", "route", "show", "proto", "80"])
                .unwrap_or_default()
                .contains("dev vxlan.calico metric 1024 onlink")
        });
        ok.then_some(())
    });
    eprintln!("vxlan backend: routes through vxlan.calico after {t:?}");
    assert!(c.bird_pid(0).is_none(), "bird runs in vxlan mode");
    let nodes: Vec<_> = (0..2)
        .map(|i| {
            c.rt.block_on(calico_node::startup::get_node(&c.client, &c.nodes[i].name))
                .unwrap()
                .unwrap()
        })
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        let tun: std::net::IpAddr = n.spec.ipv4_vxlan_tunnel_addr.parse().unwrap();
        assert!(common::POOL.parse::<ipnet::IpNet>().unwrap().contains(&tun));
        assert_eq!(
            n.spec.vxlan_tunnel_mac_addr,
            felix_routes::plan::vtep_mac(&c.nodes[i].name).to_string()
        );
        // The allocation is recorded under upstream's handle.
        let ips = c.rt.block_on(
            calico_ipam::IpamClient::new(c.kv.clone())
                .ips_by_handle(&calico_node::startup::vxlan_handle(&c.nodes[i].name)),
        );
        assert_eq!(ips.unwrap(), vec![tun]);
    }
    // Node-1 reaches node-2's VTEP through the tunnel; the MTU file holds host MTU - 50.
    let tun2 = &nodes[1].spec.ipv4_vxlan_tunnel_addr;
    assert!(
        c.nodes[0].ns.ping(tun2, 2).unwrap(),
        "ping {tun2} through vxlan failed"
    );
    assert_eq!(
        std::fs::read_to_string(c.nodes[0].run_dir.join("mtu")).unwrap(),
        "1450"
    );
    // VXLAN switched off on the pool later: the running nodes release their tunnel addresses
    // and felix-routes removes the device.
    c.apply_json(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
        "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": common::POOL, "vxlanMode": "Never", "ipipMode": "Never",
                 "blockSize": 26, "natOutgoing": true}
    }));
    let (_, t) = wait_for("tunnel address released", Duration::from_secs(10), || {
        let n =
            c.rt.block_on(calico_node::startup::get_node(&c.client, "node-2"))
                .unwrap()
                .unwrap();
        n.spec.ipv4_vxlan_tunnel_addr.is_empty().then_some(())
    });
    eprintln!("vxlan off: tunnel address released after {t:?}");
    wait_for("vxlan device removed", Duration::from_secs(10), || {
        c.nodes[1]
            .ns
            .ip(&["link", "show", "vxlan.calico"])
            .is_err()
            .then_some(())
    });

    // SIGTERM: calico-node exits cleanly.
    c.stop(0);
    let log = std::fs::read_to_string(c.nodes[0].run_dir.join("node.log")).unwrap();
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert!(!log.contains("Calico node failed"), "{log}");
}

/// calico-node supervising the real `calico-felix` (stream F's agent, which runs felix-routes):
/// VXLAN routes programmed by Felix, Felix restarted when killed, stopped on SIGTERM.
#[test]
fn felix_child_programs_vxlan_and_is_supervised() {
    if !lab("felix_child_programs_vxlan_and_is_supervised") {
        return;
    }
    let felix = std::path::Path::new(common::node_bin()).with_file_name("calico-felix");
    if !felix.is_file() {
        eprintln!(
            "SKIP felix_child_programs_vxlan_and_is_supervised: calico-felix not built \
             (cargo build -p felix)"
        );
        return;
    }
    let mut c = Cluster::new(2);
    c.start_all(&[
        ("CALICO_NETWORKING_BACKEND", "vxlan"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
        ("CALICO_DISABLE_FELIX", "false"),
        ("FELIX_HEALTHENABLED", "true"),
    ]);
    fn felix_pid(c: &Cluster, i: usize) -> Option<u32> {
        c.nodes[i].ns.processes_inside().into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|s| s.trim() == "calico-felix")
                && std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "))
        })
    }
    let (_, t) = wait_for("felix vxlan routes", Duration::from_secs(30), || {
        (0..2)
            .all(|i| {
                c.nodes[i]
                    .ns
                    .ip(&["-4", "route", "show", "proto", "80"])
                    .unwrap_or_default()
                    .contains("dev vxlan.calico metric 1024 onlink")
            })
            .then_some(())
    });
    eprintln!("felix child: vxlan routes after {t:?}");
    let old = felix_pid(&c, 0).expect("felix running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (new, t) = wait_for("felix restarted", Duration::from_secs(10), || {
        felix_pid(&c, 0).filter(|p| *p != old)
    });
    eprintln!("felix restarted as {new} after {t:?}");
    c.stop(0);
    assert!(
        felix_pid(&c, 0).is_none(),
        "felix survived calico-node's SIGTERM"
    );
}

//! Real-kernel tests. Each test builds its own namespaces with `testlab::LabNs` (deleted on drop,
//! also on panic) and never touches the root namespace. They need root; without it they print
//! a SKIP line and pass.

// Test helpers outside #[test] fns unwrap too; clippy's allow-unwrap-in-tests only covers the
// test functions themselves.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use calico_linux::netns::{self, NetNs};
use calico_linux::testlab::{self, LabNs, ifname};
use calico_linux::types::proto;
use calico_linux::{
    Family, FdbEntry, IfaceKey, LinkEvent, MacAddr, Neighbour, Netlink, Nft, NftCli, ProcSysctl,
    Route, RouteFilter, RouteKind, RouteScope, RtNetlink, Sysctl, TableFamily, VethSpec, VxlanSpec,
};
use futures::StreamExt;
use ipnet::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

macro_rules! require_lab {
    ($name:expr) => {
        if !testlab::lab_available($name) {
            return;
        }
    };
}

/// Assert a lab namespace name is gone from `ip netns list`.
fn assert_ns_gone(name: &str) {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name)),
        "namespace {name} still listed:\n{list}"
    );
}

/// Plumb one workload exactly like the CNI plugin does (reference §2.5), using only this
/// crate's API: the veth is created from inside the workload namespace with its peer placed
/// straight into the host namespace. Returns the host-side interface name.
async fn add_workload(host: &LabNs, wl: &LabNs, wl_ip: &str) -> String {
    let host_if = ifname("cali");
    let wl_nl = RtNetlink::connect_in(wl.netns()).unwrap();
    let host_nl = RtNetlink::connect_in(host.netns()).unwrap();

    let mut spec = VethSpec::new("eth0", host_if.clone());
    spec.peer_netns = Some(host.netns().clone());
    spec.mtu = Some(1450);
    wl_nl.create_veth(&spec).await.unwrap();

    let host_link = host_nl
        .link_by_name(&host_if)
        .await
        .unwrap()
        .expect("peer in host ns");
    assert!(
        wl_nl.link_by_name(&host_if).await.unwrap().is_none(),
        "peer must not stay in the workload namespace"
    );
    host_nl
        .set_link_mac(host_link.index, MacAddr::CALICO_HOST)
        .await
        .unwrap();
    let sys = ProcSysctl::in_netns(host.netns().clone());
    sys.set_iface(&host_if, IfaceKey::ProxyArp, "1").unwrap();
    sys.set_iface(&host_if, IfaceKey::ProxyDelay, "0").unwrap();
    sys.set_iface(&host_if, IfaceKey::Forwarding, "1").unwrap();
    sys.set_iface(&host_if, IfaceKey::RouteLocalnet, "1")
        .unwrap();
    host_nl.set_link_up(host_link.index, true).await.unwrap();

    let eth0 = wl_nl.link_by_name("eth0").await.unwrap().unwrap();
    assert_eq!(eth0.mtu, 1450);
    wl_nl
        .add_address(eth0.index, net(&format!("{wl_ip}/32")))
        .await
        .unwrap();
    wl_nl.set_link_up(eth0.index, true).await.unwrap();
    wl_nl
        .add_route(&Route::device(net("169.254.1.1/32"), eth0.index))
        .await
        .unwrap();
    wl_nl
        .add_route(&Route::via(
            net("0.0.0.0/0"),
            ip("169.254.1.1"),
            Some(eth0.index),
        ))
        .await
        .unwrap();
    host_nl
        .add_route(&Route::device(net(&format!("{wl_ip}/32")), host_link.index))
        .await
        .unwrap();
    host_if
}

#[tokio::test]
async fn veth_proxy_arp_workloads_ping_through_host() {
    require_lab!("veth_proxy_arp_workloads_ping_through_host");
    let host = LabNs::new("host").unwrap();
    let w1 = LabNs::new("w1").unwrap();
    let w2 = LabNs::new("w2").unwrap();
    let names = [
        host.name().to_string(),
        w1.name().to_string(),
        w2.name().to_string(),
    ];

    let host_nl = RtNetlink::connect_in(host.netns()).unwrap();
    // The host needs a unicast route covering 169.254.1.1 for proxy ARP to answer (recipe
    // §3.1), an address to be pinged on, and forwarding between workloads.
    let lo = host_nl.link_by_name("lo").await.unwrap().unwrap();
    host_nl
        .add_route(&Route::device(net("169.254.1.1/32"), lo.index))
        .await
        .unwrap();
    host_nl
        .add_address(lo.index, net("10.99.0.1/32"))
        .await
        .unwrap();
    host.sysctl("net.ipv4.ip_forward", "1").unwrap();

    let cali1 = add_workload(&host, &w1, "10.65.0.2").await;
    let cali2 = add_workload(&host, &w2, "10.65.0.3").await;

    // What the CNI plugin programmed, read back through the API.
    let link1 = host_nl.link_by_name(&cali1).await.unwrap().unwrap();
    assert_eq!(link1.mac, Some(MacAddr::CALICO_HOST));
    assert_eq!(link1.kind.as_deref(), Some("veth"));
    let routes = host_nl
        .list_routes(&RouteFilter::v4().oif(link1.index))
        .await
        .unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].dst, net("10.65.0.2/32"));
    assert_eq!(routes[0].scope, RouteScope::Link);
    assert_eq!(routes[0].protocol, proto::BOOT);
    let w1_nl = RtNetlink::connect_in(w1.netns()).unwrap();
    let w1_routes = w1_nl.list_routes(&RouteFilter::v4()).await.unwrap();
    assert!(
        w1_routes
            .iter()
            .any(|r| r.dst == net("0.0.0.0/0") && r.gateway == Some(ip("169.254.1.1"))),
        "{w1_routes:?}"
    );
    let addrs = w1_nl.list_addresses(None).await.unwrap();
    assert!(
        addrs.iter().any(|a| a.addr == net("10.65.0.2/32")),
        "{addrs:?}"
    );
    // The same facts as `ip` shows them.
    let shown = host.ip(&["route", "show", "dev", &cali2]).unwrap();
    assert!(shown.contains("10.65.0.3 scope link"), "{shown}");

    assert!(
        w1.ping("10.99.0.1", 2).unwrap(),
        "workload -> host via 169.254.1.1 failed"
    );
    assert!(
        w1.ping("10.65.0.3", 2).unwrap(),
        "workload -> workload failed"
    );
    assert!(
        w2.ping("10.65.0.2", 2).unwrap(),
        "workload -> workload failed"
    );
    // The ARP entry the workload learned for its gateway is the host veth's MAC.
    let neigh = w1.ip(&["neigh", "show", "169.254.1.1"]).unwrap();
    assert!(neigh.contains("ee:ee:ee:ee:ee:ee"), "{neigh}");

    drop((host_nl, w1_nl));
    drop((host, w1, w2));
    for n in &names {
        assert_ns_gone(n);
    }
}

#[tokio::test]
async fn proxy_arp_needs_the_covering_route() {
    // The negative half of the recipe: without a route covering 169.254.1.1 on the host the
    // workload cannot resolve its gateway. Proves the ping test above can fail.
    require_lab!("proxy_arp_needs_the_covering_route");
    let host = LabNs::new("hnr").unwrap();
    let w = LabNs::new("wnr").unwrap();
    let host_nl = RtNetlink::connect_in(host.netns()).unwrap();
    let lo = host_nl.link_by_name("lo").await.unwrap().unwrap();
    host_nl
        .add_address(lo.index, net("10.99.0.1/32"))
        .await
        .unwrap();
    add_workload(&host, &w, "10.65.0.9").await;
    assert!(
        !w.ping("10.99.0.1", 1).unwrap(),
        "ping must fail without the covering route"
    );
    host_nl
        .add_route(&Route::device(net("169.254.1.1/32"), lo.index))
        .await
        .unwrap();
    assert!(
        w.ping("10.99.0.1", 2).unwrap(),
        "ping must work once the route exists"
    );
}

#[tokio::test]
async fn routes_blackhole_protocol_replace_delete_onlink() {
    require_lab!("routes_blackhole_protocol_replace_delete_onlink");
    let ns = LabNs::new("rt").unwrap();
    let peer = LabNs::new("rtp").unwrap();
    let nl = RtNetlink::connect_in(ns.netns()).unwrap();
    let eth = ifname("eth");
    ns.veth_to(&eth, &peer, "eth0").unwrap();
    let link = nl.link_by_name(&eth).await.unwrap().unwrap();
    nl.set_link_up(link.index, true).await.unwrap();
    nl.add_address(link.index, net("10.99.0.1/24"))
        .await
        .unwrap();

    let bh = Route::blackhole(net("10.65.1.0/26")).with_protocol(proto::FELIX);
    nl.add_route(&bh).await.unwrap();
    let err = nl.add_route(&bh).await.unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert_eq!(err.to_string(), "route 10.65.1.0/26: add: file exists");

    let felix = nl
        .list_routes(&RouteFilter::v4().protocol(proto::FELIX))
        .await
        .unwrap();
    assert_eq!(felix.len(), 1, "{felix:?}");
    assert_eq!(felix[0].kind, RouteKind::Blackhole);
    assert_eq!(felix[0].dst, net("10.65.1.0/26"));
    let shown = ns.ip(&["route", "show", "proto", "80"]).unwrap();
    assert_eq!(shown.trim(), "blackhole 10.65.1.0/26");

    // Gateway route with onlink (VXLAN-style) and a metric.
    let onlink = Route::via(net("10.65.2.0/26"), ip("10.77.0.9"), Some(link.index))
        .with_onlink()
        .with_protocol(proto::FELIX)
        .with_metric(1024);
    nl.add_route(&onlink).await.unwrap();
    let shown = ns.ip(&["route", "show", "10.65.2.0/26"]).unwrap();
    assert!(
        shown.contains("via 10.77.0.9") && shown.contains("onlink"),
        "{shown}"
    );
    let listed = nl
        .list_routes(&RouteFilter::v4().protocol(proto::FELIX).oif(link.index))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].onlink);
    assert_eq!(listed[0].metric, Some(1024));
    assert_eq!(listed[0].gateway, Some(ip("10.77.0.9")));

    // Replace the blackhole by a device route for the same prefix.
    let dev = Route::device(net("10.65.1.0/26"), link.index).with_protocol(proto::FELIX);
    nl.replace_route(&dev).await.unwrap();
    let shown = ns.ip(&["route", "show", "10.65.1.0/26"]).unwrap();
    assert!(
        shown.contains(&format!("dev {eth}")) && !shown.contains("blackhole"),
        "{shown}"
    );

    // Filtering by protocol leaves kernel routes out.
    let kernel = nl
        .list_routes(&RouteFilter::v4().protocol(proto::KERNEL))
        .await
        .unwrap();
    assert!(kernel.iter().all(|r| r.protocol == proto::KERNEL));
    assert!(
        kernel.iter().any(|r| r.dst == net("10.99.0.0/24")),
        "{kernel:?}"
    );

    nl.del_route(&dev).await.unwrap();
    nl.del_route(&listed[0]).await.unwrap();
    assert!(
        nl.list_routes(&RouteFilter::v4().protocol(proto::FELIX))
            .await
            .unwrap()
            .is_empty()
    );
    let err = nl.del_route(&dev).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // Addresses: list and delete.
    nl.del_address(link.index, net("10.99.0.1/24"))
        .await
        .unwrap();
    assert!(
        nl.list_addresses(Some(link.index))
            .await
            .unwrap()
            .iter()
            .all(|a| a.addr.addr().is_ipv6())
    );
    let err = nl
        .del_address(link.index, net("10.99.0.1/24"))
        .await
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EADDRNOTAVAIL), "{err}");
}

#[tokio::test]
async fn link_settings_rename_move_delete() {
    require_lab!("link_settings_rename_move_delete");
    let a = LabNs::new("lka").unwrap();
    let b = LabNs::new("lkb").unwrap();
    let nl = RtNetlink::connect_in(a.netns()).unwrap();
    let nl_b = RtNetlink::connect_in(b.netns()).unwrap();
    let (x, y) = (ifname("vx"), ifname("vy"));
    nl.create_veth(&VethSpec::new(x.clone(), y.clone()))
        .await
        .unwrap();
    let lx = nl.link_by_name(&x).await.unwrap().unwrap();
    let ly = nl.link_by_name(&y).await.unwrap().unwrap();
    assert!(!lx.admin_up);

    let err = nl
        .create_veth(&VethSpec::new(x.clone(), ifname("vz")))
        .await
        .unwrap_err();
    assert!(err.is_exists(), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("link {x}: create veth: ")),
        "{err}"
    );

    nl.set_link_mtu(lx.index, 1400).await.unwrap();
    let mac: MacAddr = "ee:ee:ee:ee:ee:ee".parse().unwrap();
    nl.set_link_mac(lx.index, mac).await.unwrap();
    let renamed = ifname("rn");
    nl.set_link_name(lx.index, &renamed).await.unwrap();
    nl.set_link_up(lx.index, true).await.unwrap();
    nl.set_link_up(ly.index, true).await.unwrap();
    let got = nl.link_by_index(lx.index).await.unwrap().unwrap();
    assert_eq!(got.name, renamed);
    assert_eq!(got.mtu, 1400);
    assert_eq!(got.mac, Some(mac));
    assert!(got.admin_up);
    let shown = a.ip(&["link", "show", &renamed]).unwrap();
    assert!(
        shown.contains("mtu 1400") && shown.contains("ee:ee:ee:ee:ee:ee"),
        "{shown}"
    );

    // Move y into b, then the veth is cross-namespace.
    nl.move_link_to_netns(ly.index, b.netns()).await.unwrap();
    assert!(nl.link_by_name(&y).await.unwrap().is_none());
    let in_b = nl_b
        .link_by_name(&y)
        .await
        .unwrap()
        .expect("moved link in b");
    assert!(!in_b.admin_up, "moving resets admin state");

    // The listing includes lo and our link, sorted by index.
    let links = nl.list_links().await.unwrap();
    assert!(links.windows(2).all(|w| w[0].index < w[1].index));
    assert!(links.iter().any(|l| l.name == "lo"));

    nl.delete_link(lx.index).await.unwrap();
    assert!(nl.link_by_index(lx.index).await.unwrap().is_none());
    assert!(
        nl_b.link_by_name(&y).await.unwrap().is_none(),
        "peer goes with it"
    );
    let err = nl.delete_link(lx.index).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = nl.set_link_up(99_999, true).await.unwrap_err();
    assert!(
        err.to_string().starts_with("link index 99999: set up: "),
        "{err}"
    );
}

#[tokio::test]
async fn vxlan_device_fdb_neighbour_and_traffic() {
    require_lab!("vxlan_device_fdb_neighbour_and_traffic");
    let n1 = LabNs::new("vx1").unwrap();
    let n2 = LabNs::new("vx2").unwrap();
    n1.veth_to("eth0", &n2, "eth0").unwrap();
    let nodes = [(&n1, 1u8), (&n2, 2u8)];
    let mut nls = Vec::new();
    for (ns, i) in nodes {
        let nl = RtNetlink::connect_in(ns.netns()).unwrap();
        let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap();
        nl.add_address(eth0.index, net(&format!("10.99.0.{i}/24")))
            .await
            .unwrap();
        nl.set_link_up(eth0.index, true).await.unwrap();
        let mut spec = VxlanSpec::calico("vxlan.calico");
        spec.local = Some(ip(&format!("10.99.0.{i}")));
        spec.parent_index = Some(eth0.index);
        spec.mtu = Some(1450);
        spec.mac = Some(MacAddr([0x66, 0, 0, 0, 0, i]));
        nl.create_vxlan(&spec).await.unwrap();
        let vx = nl.link_by_name("vxlan.calico").await.unwrap().unwrap();
        assert_eq!(vx.kind.as_deref(), Some("vxlan"));
        assert_eq!(vx.mtu, 1450);
        let got = nl.vxlan_info(vx.index).await.unwrap().expect("vxlan info");
        assert_eq!(got.vni, 4096);
        assert_eq!(got.port, 4789);
        assert_eq!(got.local, spec.local);
        assert_eq!(got.parent_index, Some(eth0.index));
        assert!(!got.learning);
        assert_eq!(got.mac, spec.mac);
        assert!(
            nl.vxlan_info(eth0.index).await.unwrap().is_none(),
            "veth is not vxlan"
        );
        nl.set_link_up(vx.index, true).await.unwrap();
        nl.add_address(vx.index, net(&format!("10.65.{i}.0/32")))
            .await
            .unwrap();
        ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
        nls.push((nl, vx.index));
    }
    let details = n1.ip(&["-d", "link", "show", "vxlan.calico"]).unwrap();
    assert!(details.contains("vxlan id 4096"), "{details}");
    assert!(details.contains("local 10.99.0.1"), "{details}");
    assert!(details.contains("dstport 4789"), "{details}");
    assert!(details.contains("nolearning"), "{details}");

    for (me, (nl, vx)) in [(1u8, &nls[0]), (2u8, &nls[1])] {
        let other = 3 - me;
        let mac = MacAddr([0x66, 0, 0, 0, 0, other]);
        let neigh = Neighbour {
            index: *vx,
            ip: ip(&format!("10.65.{other}.0")),
            mac,
        };
        nl.replace_neighbour(&neigh).await.unwrap();
        nl.replace_neighbour(&neigh).await.unwrap(); // idempotent
        let fdb = FdbEntry {
            index: *vx,
            mac,
            dst: ip(&format!("10.99.0.{other}")),
        };
        nl.replace_fdb(&fdb).await.unwrap();
        nl.replace_fdb(&fdb).await.unwrap();
        nl.add_route(
            &Route::via(
                net(&format!("10.65.{other}.0/26")),
                ip(&format!("10.65.{other}.0")),
                Some(*vx),
            )
            .with_onlink()
            .with_protocol(proto::FELIX),
        )
        .await
        .unwrap();
        assert_eq!(
            nl.list_neighbours(Family::V4, Some(*vx)).await.unwrap(),
            vec![neigh.clone()]
        );
        assert_eq!(nl.list_fdb(*vx).await.unwrap(), vec![fdb.clone()]);
    }
    let fdb_shown = n1
        .exec_ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
        .unwrap();
    assert!(
        fdb_shown.contains("66:00:00:00:00:02 dst 10.99.0.2 self permanent"),
        "{fdb_shown}"
    );
    let neigh_shown = n1.ip(&["neigh", "show", "dev", "vxlan.calico"]).unwrap();
    assert!(
        neigh_shown.contains("10.65.2.0 lladdr 66:00:00:00:00:02 PERMANENT"),
        "{neigh_shown}"
    );

    // Traffic crosses the tunnel: the tunnel address of node 2 answers from node 1.
    assert!(n1.ping("10.65.2.0", 2).unwrap(), "ping over vxlan failed");

    // Delete FDB and neighbour; listing shows them gone; deleting again is not-found.
    let (nl, vx) = &nls[0];
    let mac = MacAddr([0x66, 0, 0, 0, 0, 2]);
    let fdb = FdbEntry {
        index: *vx,
        mac,
        dst: ip("10.99.0.2"),
    };
    nl.del_fdb(&fdb).await.unwrap();
    assert!(nl.list_fdb(*vx).await.unwrap().is_empty());
    assert!(nl.del_fdb(&fdb).await.unwrap_err().is_not_found());
    let neigh = Neighbour {
        index: *vx,
        ip: ip("10.65.2.0"),
        mac,
    };
    nl.del_neighbour(&neigh).await.unwrap();
    assert!(
        nl.list_neighbours(Family::V4, Some(*vx))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn sysctls_apply_inside_the_namespace_only() {
    require_lab!("sysctls_apply_inside_the_namespace_only");
    let ns = LabNs::new("sy").unwrap();
    let peer = LabNs::new("syp").unwrap();
    let ifc = ifname("calisy");
    ns.veth_to(&ifc, &peer, "eth0").unwrap();
    let sys = ProcSysctl::in_netns(ns.netns().clone());
    for (key, value) in [
        (IfaceKey::ProxyArp, "1"),
        (IfaceKey::Forwarding, "1"),
        (IfaceKey::RouteLocalnet, "1"),
        (IfaceKey::RpFilter, "2"),
        (IfaceKey::ProxyDelay, "0"),
        (IfaceKey::AcceptRa, "0"),
        (IfaceKey::ProxyNdp, "1"),
        (IfaceKey::Ipv6Forwarding, "1"),
        (IfaceKey::DisableIpv6, "0"),
        (IfaceKey::AcceptDad, "0"),
    ] {
        sys.set_iface(&ifc, key, value).unwrap();
        assert_eq!(sys.get_iface(&ifc, key).unwrap(), value, "{key}");
        // Cross-check with sysctl(8) run inside the namespace.
        let shown = ns.exec_ok(&["sysctl", "-n", &key.dotted(&ifc)]).unwrap();
        assert_eq!(shown.trim(), value, "{key}");
    }
    sys.set("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(sys.get("net.ipv4.ip_forward").unwrap(), "1");

    // The interface exists only in the lab namespace: the caller's namespace does not see it.
    let here = ProcSysctl::new()
        .get_iface(&ifc, IfaceKey::ProxyArp)
        .unwrap_err();
    assert_eq!(here.io_kind(), Some(std::io::ErrorKind::NotFound), "{here}");
    // Errors name the interface and key.
    let err = sys
        .set_iface("calinothere0", IfaceKey::ProxyArp, "1")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "interface calinothere0: set proxy_arp: no such file or directory"
    );
    let err = sys
        .set_iface(&ifc, IfaceKey::RpFilter, "banana")
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("interface {ifc}: set rp_filter: ")),
        "{err}"
    );
}

#[tokio::test]
async fn nft_apply_list_delete_inside_namespace() {
    require_lab!("nft_apply_list_delete_inside_namespace");
    let ns = LabNs::new("nf").unwrap();
    let nft = NftCli::in_netns(ns.netns().clone());
    let table = "calico_test";
    assert!(
        nft.list_table(TableFamily::Inet, table)
            .await
            .unwrap()
            .is_none()
    );

    let script = format!(
        "table inet {table} {{\n\
         \tset allowed {{ type ipv4_addr; elements = {{ 10.65.1.2 }} }}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip saddr @allowed counter accept\n\
         \t}}\n\
         }}\n"
    );
    nft.apply(&script).await.unwrap();
    let json = nft
        .list_table(TableFamily::Inet, table)
        .await
        .unwrap()
        .unwrap();
    let items = json["nftables"].as_array().unwrap();
    assert!(items.iter().any(|i| i["table"]["name"] == table), "{json}");
    assert!(
        items.iter().any(|i| i["chain"]["name"] == "forward"),
        "{json}"
    );
    assert!(
        items.iter().any(|i| i["set"]["name"] == "allowed"),
        "{json}"
    );
    // Only the lab namespace has it.
    let here = std::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .unwrap();
    assert!(
        !here.status.success(),
        "table leaked into the caller's namespace"
    );

    // A bad transaction is rejected as a whole, naming the line.
    let bad = format!(
        "add set inet {table} s2 {{ type ipv4_addr; }}\nadd rule inet {table} forward bogus stuff\n"
    );
    let err = nft.apply(&bad).await.unwrap_err();
    match &err {
        calico_linux::NftError::Apply { line, text, stderr } => {
            assert_eq!(*line, Some(2), "{stderr}");
            assert!(text.as_deref().unwrap().contains("bogus"), "{err}");
            assert!(stderr.contains("Error"), "{stderr}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("at line 2"), "{err}");
    let json = nft
        .list_table(TableFamily::Inet, table)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["set"]["name"] == "s2"),
        "half of a failed transaction was applied: {json}"
    );

    assert!(nft.delete_table(TableFamily::Inet, table).await.unwrap());
    assert!(!nft.delete_table(TableFamily::Inet, table).await.unwrap());
    assert!(
        nft.list_table(TableFamily::Inet, table)
            .await
            .unwrap()
            .is_none()
    );
}

async fn next_event(events: &mut calico_linux::netlink::LinkEventStream) -> LinkEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("link event within 5s")
        .expect("stream open")
        .expect("no monitor error")
}

/// Wait for an event satisfying `pred`, skipping others (e.g. the peer's events).
async fn wait_event(
    events: &mut calico_linux::netlink::LinkEventStream,
    what: &str,
    pred: impl Fn(&LinkEvent) -> bool,
) -> LinkEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} event within 5s"))
            .expect("stream open")
            .expect("no monitor error");
        if pred(&ev) {
            return ev;
        }
    }
}

#[tokio::test]
async fn link_monitor_sees_veth_appear_change_and_disappear() {
    require_lab!("link_monitor_sees_veth_appear_change_and_disappear");
    let ns = LabNs::new("mon").unwrap();
    let nl = RtNetlink::connect_in(ns.netns()).unwrap();
    let mut events = nl.monitor_links().await.unwrap();
    match next_event(&mut events).await {
        LinkEvent::Added(l) => assert_eq!(l.name, "lo"),
        other => panic!("want lo first, got {other:?}"),
    }
    assert_eq!(next_event(&mut events).await, LinkEvent::InSync);

    let (a, b) = (ifname("ma"), ifname("mb"));
    ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])
        .unwrap();
    wait_event(
        &mut events,
        "added",
        |e| matches!(e, LinkEvent::Added(l) if l.name == a),
    )
    .await;
    ns.ip(&["link", "set", &a, "up"]).unwrap();
    ns.ip(&["link", "set", &b, "up"]).unwrap();
    wait_event(
        &mut events,
        "up",
        |e| matches!(e, LinkEvent::Up(l) if l.name == a),
    )
    .await;
    ns.ip(&["link", "set", &a, "mtu", "1400"]).unwrap();
    wait_event(
        &mut events,
        "changed",
        |e| matches!(e, LinkEvent::Changed(l) if l.name == a && l.mtu == 1400),
    )
    .await;
    ns.ip(&["link", "set", &a, "down"]).unwrap();
    wait_event(
        &mut events,
        "down",
        |e| matches!(e, LinkEvent::Down(l) if l.name == a),
    )
    .await;
    ns.ip(&["link", "del", &a]).unwrap();
    wait_event(
        &mut events,
        "removed",
        |e| matches!(e, LinkEvent::Removed(l) if l.name == a),
    )
    .await;
    wait_event(
        &mut events,
        "removed peer",
        |e| matches!(e, LinkEvent::Removed(l) if l.name == b),
    )
    .await;
}

#[test]
fn lab_drop_kills_processes_and_deletes_namespace() {
    require_lab!("lab_drop_kills_processes_and_deletes_namespace");
    let ns = LabNs::new("cl").unwrap();
    let name = ns.name().to_string();
    let pid = ns.spawn(&["sleep", "600"]).unwrap();
    assert!(ns.processes_inside().contains(&pid));
    assert!(netns::list_named().unwrap().contains(&name));
    drop(ns);
    assert_ns_gone(&name);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the lab"
    );
}

#[test]
fn lab_cleans_up_on_panic() {
    require_lab!("lab_cleans_up_on_panic");
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let ns = LabNs::new("pn").unwrap();
        *name.lock().unwrap() = ns.name().to_string();
        panic!("test body failed");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty());
    assert_ns_gone(&name);
}

#[test]
fn sweep_removes_leftovers_of_dead_runs_only() {
    require_lab!("sweep_removes_leftovers_of_dead_runs_only");
    // A namespace of this (live) run must survive the sweep. Created first: a process's first
    // LabNs::new sweeps dead runs itself, which would take the stale namespace below away
    // before the explicit sweep this test checks.
    let live = LabNs::new("live").unwrap();
    // A pid that certainly belongs to no live process: a child we started and reaped.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let dead_pid = dead.id();
    let stale_name = format!(
        "{}{dead_pid:x}-sweep{}",
        testlab::PROJECT_PREFIX,
        std::process::id()
    );
    let stale = netns::create_named(&stale_name).unwrap();
    // A leftover process inside it, tagged like LabNs::spawn tags them.
    let mut orphan = stale
        .run(|| {
            std::process::Command::new("sleep")
                .arg("600")
                .env(testlab::LAB_ENV, &stale_name)
                .spawn()
        })
        .unwrap()
        .unwrap();
    let prefix = format!("{}{dead_pid:x}-", testlab::PROJECT_PREFIX);
    let report = testlab::sweep(&prefix).unwrap();
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "orphan must have been killed");
    assert_eq!(report.namespaces, vec![stale_name.clone()]);
    assert!(report.killed.contains(&orphan.id()), "{report:?}");
    assert_ns_gone(&stale_name);
    drop(stale);

    let report = testlab::sweep_stale().unwrap();
    assert!(!report.namespaces.contains(&live.name().to_string()));
    assert!(
        netns::list_named()
            .unwrap()
            .contains(&live.name().to_string())
    );
}

#[test]
fn netns_run_enters_and_returns() {
    require_lab!("netns_run_enters_and_returns");
    let ns = LabNs::new("run").unwrap();
    let before = NetNs::current().unwrap().inode().unwrap();
    let inside = ns
        .netns()
        .run(|| NetNs::current().unwrap().inode().unwrap())
        .unwrap();
    assert_eq!(inside, ns.netns().inode().unwrap());
    assert_ne!(inside, before);
    assert_eq!(NetNs::current().unwrap().inode().unwrap(), before);
    // Opening by pid: a process spawned inside reports the lab namespace.
    let pid = ns.spawn(&["sleep", "600"]).unwrap();
    let by_pid = NetNs::of_pid(pid).unwrap();
    assert_eq!(by_pid.inode().unwrap(), inside);
    // run_async gives a runtime inside the namespace.
    let links = ns
        .netns()
        .run_async(|| async {
            let nl = RtNetlink::connect().unwrap();
            nl.list_links().await.unwrap()
        })
        .unwrap();
    assert_eq!(
        links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        vec!["lo"]
    );
}

#[test]
fn sweep_spares_a_run_that_holds_its_lock() {
    require_lab!("sweep_spares_a_run_that_holds_its_lock");
    use nix::fcntl::{Flock, FlockArg};
    // Pretend another live run (e.g. in another PID namespace, so its pid is invisible here)
    // owns a namespace: its pid looks dead, but it holds its run lock.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let owner = format!("{}{:x}", testlab::PROJECT_PREFIX, dead.id());
    std::fs::create_dir_all(testlab::LOCK_DIR).unwrap();
    let lock_path = std::path::Path::new(testlab::LOCK_DIR).join(format!("{owner}.lock"));
    let file = std::fs::File::create(&lock_path).unwrap();
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let name = format!("{owner}-locked{}", std::process::id());
    let _ns = netns::create_named(&name).unwrap();

    let report = testlab::sweep(&format!("{owner}-")).unwrap();
    assert!(report.namespaces.is_empty(), "{report:?}");
    assert!(netns::list_named().unwrap().contains(&name));

    drop(lock); // the "run" dies
    let report = testlab::sweep(&format!("{owner}-")).unwrap();
    assert_eq!(report.namespaces, vec![name.clone()]);
    assert_ns_gone(&name);
    assert!(!lock_path.exists(), "stale lock file removed");
}

#[tokio::test]
async fn ipv6_addresses_routes_and_neighbours() {
    require_lab!("ipv6_addresses_routes_and_neighbours");
    let ns = LabNs::new("v6").unwrap();
    let peer = LabNs::new("v6p").unwrap();
    let ifc = ifname("cali6");
    ns.veth_to(&ifc, &peer, "eth0").unwrap();
    let nl = RtNetlink::connect_in(ns.netns()).unwrap();
    let link = nl.link_by_name(&ifc).await.unwrap().unwrap();
    // Calico disables DAD so addresses are usable at once.
    ProcSysctl::in_netns(ns.netns().clone())
        .set_iface_many(
            &ifc,
            &[
                (IfaceKey::DisableIpv6, "0"),
                (IfaceKey::AcceptDad, "0"),
                (IfaceKey::ProxyNdp, "1"),
            ],
        )
        .unwrap();
    nl.set_link_up(link.index, true).await.unwrap();
    nl.add_address(link.index, net("fd00:99::1/128"))
        .await
        .unwrap();
    let addrs = nl.list_addresses(Some(link.index)).await.unwrap();
    assert!(
        addrs.iter().any(|a| a.addr == net("fd00:99::1/128")),
        "{addrs:?}"
    );

    let r = Route::device(net("fd00:65::2/128"), link.index).with_protocol(proto::FELIX);
    nl.add_route(&r).await.unwrap();
    let bh = Route::blackhole(net("fd00:65:1::/122")).with_protocol(proto::FELIX);
    nl.add_route(&bh).await.unwrap();
    let listed = nl
        .list_routes(&RouteFilter::v6().protocol(proto::FELIX))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|x| x.dst == r.dst && x.oif == Some(link.index))
    );
    assert!(
        listed
            .iter()
            .any(|x| x.dst == bh.dst && x.kind == RouteKind::Blackhole)
    );
    assert!(
        nl.list_routes(&RouteFilter::v4().protocol(proto::FELIX))
            .await
            .unwrap()
            .is_empty()
    );
    let shown = ns.ip(&["-6", "route", "show", "proto", "80"]).unwrap();
    assert!(shown.contains("blackhole fd00:65:1::/122"), "{shown}");
    assert!(shown.contains(&format!("fd00:65::2 dev {ifc}")), "{shown}");

    // Via a link-local gateway (how the workload reaches the host veth).
    let gw = Route::via(
        net("::/0"),
        ip("fe80::ecee:eeff:feee:eeee"),
        Some(link.index),
    )
    .with_protocol(proto::FELIX);
    nl.add_route(&gw).await.unwrap();
    let shown = ns.ip(&["-6", "route", "show", "default"]).unwrap();
    assert!(shown.contains("via fe80::ecee:eeff:feee:eeee"), "{shown}");

    let n = Neighbour {
        index: link.index,
        ip: ip("fd00:65::2"),
        mac: "66:00:00:00:00:09".parse().unwrap(),
    };
    nl.replace_neighbour(&n).await.unwrap();
    assert_eq!(
        nl.list_neighbours(Family::V6, Some(link.index))
            .await
            .unwrap(),
        vec![n.clone()]
    );
    assert!(
        nl.list_neighbours(Family::V4, Some(link.index))
            .await
            .unwrap()
            .is_empty()
    );
    nl.del_neighbour(&n).await.unwrap();
    for route in [&r, &bh, &gw] {
        nl.del_route(route).await.unwrap();
    }
    assert!(
        nl.list_routes(&RouteFilter::v6().protocol(proto::FELIX))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn address_monitor_sees_addresses_come_and_go() {
    require_lab!("address_monitor_sees_addresses_come_and_go");
    use calico_linux::AddressEvent;
    let ns = LabNs::new("amon").unwrap();
    let peer = LabNs::new("amonp").unwrap();
    let ifc = ifname("am");
    ns.veth_to(&ifc, &peer, "eth0").unwrap();
    ns.ip(&["addr", "add", "10.98.0.1/24", "dev", &ifc])
        .unwrap();
    let nl = RtNetlink::connect_in(ns.netns()).unwrap();
    let link = nl.link_by_name(&ifc).await.unwrap().unwrap();
    let mut events = nl.monitor_addresses().await.unwrap();
    let mut dump = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("event within 5s")
            .unwrap()
            .unwrap();
        match ev {
            AddressEvent::InSync => break,
            AddressEvent::Added(a) => dump.push(a),
            other => panic!("unexpected during dump: {other:?}"),
        }
    }
    let first = calico_linux::AddressInfo {
        index: link.index,
        addr: net("10.98.0.1/24"),
    };
    assert!(dump.contains(&first), "{dump:?}");
    assert!(
        dump.iter().any(|a| a.addr == net("127.0.0.1/8")),
        "{dump:?}"
    );

    ns.ip(&["addr", "add", "10.98.1.1/32", "dev", &ifc])
        .unwrap();
    let second = calico_linux::AddressInfo {
        index: link.index,
        addr: net("10.98.1.1/32"),
    };
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("added event")
        .unwrap()
        .unwrap();
    assert_eq!(ev, AddressEvent::Added(second.clone()));
    ns.ip(&["addr", "del", "10.98.1.1/32", "dev", &ifc])
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("removed event")
        .unwrap()
        .unwrap();
    assert_eq!(ev, AddressEvent::Removed(second));
}

#[tokio::test]
async fn link_monitor_keeps_up_with_a_burst_of_veths() {
    require_lab!("link_monitor_keeps_up_with_a_burst_of_veths");
    const PAIRS: usize = 200;
    let ns = LabNs::new("burst").unwrap();
    let nl = RtNetlink::connect_in(ns.netns()).unwrap();
    let mut events = nl.monitor_links().await.unwrap();
    wait_event(&mut events, "in sync", |e| *e == LinkEvent::InSync).await;

    let dir = std::env::temp_dir().join(format!("{}-burst", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let batch = dir.join("veths.batch");
    let lines: String = (0..PAIRS)
        .map(|i| format!("link add bA{i} up type veth peer name bB{i}\nlink set bB{i} up\n"))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    ns.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    // Every link must be reported added, and every A end must end up up.
    let mut added = std::collections::BTreeSet::new();
    let mut up = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while added.len() < 2 * PAIRS || up.len() < PAIRS {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("timeout: {} added, {} up", added.len(), up.len()))
            .unwrap()
            .unwrap();
        match ev {
            LinkEvent::Added(l) => {
                if l.is_up() && l.name.starts_with("bA") {
                    up.insert(l.name.clone());
                }
                added.insert(l.name);
            }
            LinkEvent::Up(l) | LinkEvent::Changed(l) if l.is_up() && l.name.starts_with("bA") => {
                up.insert(l.name);
            }
            _ => {}
        }
    }
    let listed = nl.list_links().await.unwrap();
    assert_eq!(listed.len(), 2 * PAIRS + 1);
}

/// Elements of `set` as `nft -j` lists them (addresses, prefixes, or concatenations).
async fn set_elements(nft: &NftCli, table: &str, set: &str) -> Vec<String> {
    let json = nft
        .list_table(TableFamily::Inet, table)
        .await
        .unwrap()
        .unwrap();
    let item = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["set"]["name"] == set)
        .unwrap_or_else(|| panic!("no set {set}: {json}"))
        .clone();
    let text = |v: &serde_json::Value| -> String {
        if let Some(s) = v.as_str() {
            return s.to_string();
        }
        if let Some(n) = v.as_u64() {
            return n.to_string();
        }
        if let Some(p) = v.get("prefix") {
            return format!("{}/{}", p["addr"].as_str().unwrap(), p["len"]);
        }
        if let Some(c) = v.get("concat") {
            let parts: Vec<String> = c
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect();
            return parts.join(" . ");
        }
        v.to_string()
    };
    let mut out: Vec<String> = item["set"]["elem"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn set_elements_over_nfnetlink_match_what_nft_lists() {
    use calico_linux::ElementChange;
    require_lab!("set_elements_over_nfnetlink_match_what_nft_lists");
    let ns = LabNs::new("nfel").unwrap();
    let nft = NftCli::in_netns(ns.netns().clone());
    let t = "calico_el";
    let d4 = "type ipv4_addr; flags interval;";
    let d6 = "type ipv6_addr; flags interval;";
    let dn = "type ipv4_addr . inet_proto . inet_service;";
    let dn6 = "type ipv6_addr . inet_proto . inet_service;";
    // Created by nft (as a full apply does), with adjacent members and a prefix.
    nft.apply(&format!(
        "table inet {t} {{\n  set a {{ {d4} elements = {{ 10.0.0.1, 10.0.0.2, 10.0.0.4, 10.1.0.0/16 }}; }}\n  set b {{ {d6} }}\n  set n {{ {dn} elements = {{ 10.0.0.1 . 6 . 80 }}; }}\n  set n6 {{ {dn6} }}\n}}\n"
    ))
    .await
    .unwrap();
    let ch = |set: &str, decl: &str, add: bool, els: &[&str]| ElementChange {
        set: set.into(),
        decl: decl.into(),
        add,
        elements: els.iter().map(|s| s.to_string()).collect(),
    };
    // Fill the gap (adjacent on both sides), remove a member next to another, add a prefix,
    // the top address, IPv6 and a named-port element, in one batch.
    let changes = [
        ch("a", d4, false, &["10.0.0.1"]),
        ch(
            "a",
            d4,
            true,
            &["10.0.0.3", "192.168.0.0/24", "255.255.255.255"],
        ),
        ch("b", d6, true, &["fd00::1", "fd00:1::/64"]),
        ch("n", dn, false, &["10.0.0.1 . 6 . 80"]),
        ch("n", dn, true, &["10.0.0.9 . 17 . 53"]),
        ch("n6", dn6, true, &["fd00::9 . 132 . 3868"]),
    ];
    assert!(calico_linux::nftnl::encode(TableFamily::Inet, t, &changes).is_some());
    // The nfnetlink path itself must accept it (no silent fallback to nft -f here).
    let batch = calico_linux::nftnl::encode(TableFamily::Inet, t, &changes).unwrap();
    ns.netns()
        .run(|| calico_linux::nftnl::send(&batch))
        .unwrap()
        .unwrap();
    assert_eq!(
        set_elements(&nft, t, "a").await,
        [
            "10.0.0.2",
            "10.0.0.3",
            "10.0.0.4",
            "10.1.0.0/16",
            "192.168.0.0/24",
            "255.255.255.255"
        ]
    );
    assert_eq!(set_elements(&nft, t, "b").await, ["fd00:1::/64", "fd00::1"]);
    assert_eq!(set_elements(&nft, t, "n").await, ["10.0.0.9 . udp . 53"]);
    assert_eq!(set_elements(&nft, t, "n6").await, ["fd00::9 . sctp . 3868"]);
    // Lookups agree with the listing at the edges of the changed ranges.
    let get = |set: &str, el: &str| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "nft",
                "get",
                "element",
                "inet",
                t,
                set,
            ])
            .arg(format!("{{ {el} }}"))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!get("a", "10.0.0.1"));
    assert!(get("a", "10.0.0.3"));
    assert!(!get("a", "10.0.0.5"));
    assert!(get("a", "192.168.0.255"));
    assert!(!get("a", "192.168.1.0"));

    // Removing what is not there: the kernel rejects the batch as a whole, and the trait
    // method reports nft's error (its fallback) with the set unchanged.
    let bad = [
        ch("a", d4, false, &["10.0.0.2"]),
        ch("a", d4, false, &["10.9.9.9"]),
    ];
    let b = calico_linux::nftnl::encode(TableFamily::Inet, t, &bad).unwrap();
    let err = ns
        .netns()
        .run(|| calico_linux::nftnl::send(&b))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_enoent()), "{err}");
    assert!(
        nft.apply_elements(TableFamily::Inet, t, &bad)
            .await
            .is_err()
    );
    assert!(
        set_elements(&nft, t, "a")
            .await
            .contains(&"10.0.0.2".to_string())
    );
    // Through the trait: the same result as nft -f would give.
    nft.apply_elements(
        TableFamily::Inet,
        t,
        &[ch("a", d4, false, &["10.0.0.2", "10.0.0.3"])],
    )
    .await
    .unwrap();
    assert_eq!(
        set_elements(&nft, t, "a").await,
        [
            "10.0.0.4",
            "10.1.0.0/16",
            "192.168.0.0/24",
            "255.255.255.255"
        ]
    );
    assert!(nft.delete_table(TableFamily::Inet, t).await.unwrap());
}

fn libc_enoent() -> i32 {
    2
}

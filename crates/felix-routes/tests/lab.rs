//! Real-kernel test: two node namespaces joined by a veth, one `RouteSync` per node programming
//! VXLAN from a shared sqlite datastore. Needs root; prints SKIP otherwise. Never touches the
//! root namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_datastore::KvStore;
use calico_datastore::client::Client;
use calico_datastore::sqlite::SqliteStore;
use calico_ipam::AllocationBlock;
use calico_linux::testlab::{self, LabNs};
use calico_model::resources::ipam::EncapMode;
use calico_model::resources::node::NodeBGPSpec;
use calico_model::resources::{IPPoolSpec, NodeSpec};
use calico_model::{AnyResource, Resource};
use felix_routes::{RouteSync, RoutesConfig};

async fn put_node(client: &Client, name: &str, ip: &str, vtep: &str) {
    let spec = NodeSpec {
        bgp: Some(NodeBGPSpec {
            ipv4_address: ip.into(),
            ..Default::default()
        }),
        ipv4_vxlan_tunnel_addr: vtep.into(),
        ..Default::default()
    };
    client
        .create(AnyResource::from(Resource::new("", name, spec)))
        .await
        .unwrap();
}

async fn put_block(kv: &Arc<dyn KvStore>, cidr: &str, node: &str) {
    let mut b =
        AllocationBlock::new(cidr.parse().unwrap(), time::OffsetDateTime::now_utc()).unwrap();
    b.affinity = Some(format!("host:{node}"));
    let key = calico_ipam::keys::block_key(&b.cidr);
    kv.put(&key, serde_json::to_vec(&b).unwrap(), None)
        .await
        .unwrap();
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn routes(ns: &LabNs) -> String {
    ns.ip(&["-4", "route", "show", "proto", "80"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_between_two_node_namespaces() {
    if !testlab::lab_available("vxlan_between_two_node_namespaces") {
        return;
    }
    let a = LabNs::new("fra").unwrap();
    let b = LabNs::new("frb").unwrap();
    a.veth_to("eth0", &b, "eth0").unwrap();
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"])
        .unwrap();
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])
        .unwrap();
    a.ip(&["link", "set", "eth0", "up"]).unwrap();
    b.ip(&["link", "set", "eth0", "up"]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(dir.path().join("ds.db")).unwrap());
    let client = Client::new(kv.clone());
    let mut pool = IPPoolSpec {
        cidr: "192.168.0.0/16".into(),
        vxlan_mode: Some(EncapMode::Always),
        ipip_mode: Some(EncapMode::Never),
        ..Default::default()
    };
    pool.block_size = 26;
    client
        .create(AnyResource::from(Resource::new("", "pool1", pool)))
        .await
        .unwrap();
    put_node(&client, "node-a", "10.99.0.1/24", "192.168.0.1").await;
    put_node(&client, "node-b", "10.99.0.2/24", "192.168.1.1").await;
    put_block(&kv, "192.168.0.0/26", "node-a").await;
    put_block(&kv, "192.168.1.0/26", "node-b").await;
    // A "pod" address in node-b's block.
    // (on lo: this kernel has no dummy module).
    b.ip(&["addr", "add", "192.168.1.10/32", "dev", "lo"])
        .unwrap();
    // A stale proto-80 route felix-routes must remove.
    a.ip(&["route", "add", "blackhole", "10.250.0.0/24", "proto", "80"])
        .unwrap();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut readies = Vec::new();
    for (ns, node) in [(&a, "node-a"), (&b, "node-b")] {
        let cfg = RoutesConfig {
            netns: Some(ns.netns().clone()),
            mtu_file: Some(dir.path().join(format!("{node}.mtu"))),
            resync_interval: Duration::from_secs(2),
            ..Default::default()
        };
        let sync = RouteSync::new(kv.clone(), node.to_string(), cfg);
        readies.push(sync.ready());
        tasks.push(tokio::spawn(sync.run(stop_rx.clone())));
    }
    for r in &mut readies {
        tokio::time::timeout(Duration::from_secs(10), r.wait_for(|v| *v))
            .await
            .unwrap()
            .unwrap();
    }

    let ra = routes(&a);
    assert!(ra.contains("blackhole 192.168.0.0/26 metric 1024"), "{ra}");
    assert!(
        ra.contains("192.168.1.0/26 via 192.168.1.1 dev vxlan.calico metric 1024 onlink"),
        "{ra}"
    );
    assert!(!ra.contains("10.250.0.0/24"), "stale route kept:\n{ra}");
    let link = a.ip(&["-d", "link", "show", "vxlan.calico"]).unwrap();
    assert!(link.contains("vxlan id 4096"), "{link}");
    assert!(link.contains("dstport 4789"), "{link}");
    assert!(link.contains("local 10.99.0.1"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(
        link.contains(&felix_routes::plan::vtep_mac("node-a").to_string()),
        "{link}"
    );
    let fdb = a
        .exec_ok(&["bridge", "fdb", "show", "dev", "vxlan.calico"])
        .unwrap();
    assert!(
        fdb.contains(&format!(
            "{} dst 10.99.0.2",
            felix_routes::plan::vtep_mac("node-b")
        )),
        "{fdb}"
    );
    let neigh = a.ip(&["neigh", "show", "dev", "vxlan.calico"]).unwrap();
    assert!(neigh.contains("192.168.1.1 lladdr"), "{neigh}");
    assert!(neigh.contains("PERMANENT"), "{neigh}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("node-a.mtu")).unwrap(),
        "1450"
    );

    // Traffic through the tunnel: node-a's VTEP to the pod address in node-b's block.
    assert!(
        a.ping("192.168.1.10", 2).unwrap(),
        "ping through vxlan failed"
    );

    // A new block on node-b appears on node-a quickly.
    let t0 = Instant::now();
    put_block(&kv, "192.168.1.64/26", "node-b").await;
    wait_for("new block route", Duration::from_secs(5), || {
        routes(&a).contains("192.168.1.64/26 via 192.168.1.1")
    });
    eprintln!("block on node-b -> route on node-a: {:?}", t0.elapsed());

    // The block goes away: its route is withdrawn.
    kv.delete(
        &calico_ipam::keys::block_key(&"192.168.1.64/26".parse().unwrap()),
        None,
    )
    .await
    .unwrap();
    wait_for("route withdrawn", Duration::from_secs(5), || {
        !routes(&a).contains("192.168.1.64/26")
    });

    // Drift: a route deleted behind our back comes back on resync.
    a.ip(&["route", "del", "192.168.1.0/26"]).unwrap();
    wait_for("route repaired", Duration::from_secs(6), || {
        routes(&a).contains("192.168.1.0/26 via 192.168.1.1")
    });

    stop_tx.send(true).unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    // Stopping leaves the dataplane programmed.
    assert!(routes(&a).contains("192.168.1.0/26"));
}

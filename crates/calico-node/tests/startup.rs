//! Startup against a real (sqlite) datastore, no kernel: Node create/update keeps what others
//! set, default pool only when none exists, defaults idempotent, tunnel addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use calico_datastore::KvStore;
use calico_datastore::client::Client;
use calico_datastore::sqlite::SqliteStore;
use calico_model::{AnyResource, KindInfo};
use calico_node::config::NodeEnv;
use calico_node::startup;

fn setup() -> (tempfile::TempDir, Arc<dyn KvStore>, Client) {
    let d = tempfile::tempdir().unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(d.path().join("ds.db")).unwrap());
    let c = Client::new(kv.clone());
    (d, kv, c)
}

fn env(pairs: &[(&str, &str)]) -> NodeEnv {
    let m: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    NodeEnv::from_env(&m).unwrap()
}

#[tokio::test]
async fn node_update_keeps_route_reflector_cluster_id_and_labels() {
    let (_d, _kv, c) = setup();
    let e = env(&[("AS", "65010")]);
    let n = startup::ensure_node(&c, "n1", Some("10.0.0.1/24".parse().unwrap()), &e)
        .await
        .unwrap();
    assert_eq!(n.spec.bgp.as_ref().unwrap().ipv4_address, "10.0.0.1/24");
    assert_eq!(n.spec.bgp.as_ref().unwrap().as_number.unwrap().0, 65010);
    // Someone makes it a route reflector and labels it.
    let k = KindInfo::lookup("Node").unwrap();
    let mut v = c.get(k, "", "n1").await.unwrap().to_value();
    v["spec"]["bgp"]["routeReflectorClusterID"] = "224.0.0.1".into();
    v["metadata"]["labels"] = serde_json::json!({"rr": "true"});
    c.update(AnyResource::from_value(v).unwrap()).await.unwrap();
    // Restart with a new address.
    let n = startup::ensure_node(&c, "n1", Some("10.0.0.9/24".parse().unwrap()), &e)
        .await
        .unwrap();
    let bgp = n.spec.bgp.unwrap();
    assert_eq!(bgp.ipv4_address, "10.0.0.9/24");
    assert_eq!(bgp.route_reflector_cluster_id, "224.0.0.1");
    assert_eq!(n.metadata.labels["rr"], "true");
    // IP=none (None) keeps the stored address.
    let n = startup::ensure_node(&c, "n1", None, &e).await.unwrap();
    assert_eq!(n.spec.bgp.unwrap().ipv4_address, "10.0.0.9/24");
}

#[tokio::test]
async fn default_pool_only_when_no_v4_pool_and_defaults_idempotent() {
    let (_d, _kv, c) = setup();
    let e = env(&[
        ("CALICO_IPV4POOL_CIDR", "10.70.0.0/16"),
        ("CALICO_IPV4POOL_BLOCK_SIZE", "28"),
        ("CALICO_IPV4POOL_VXLAN", "CrossSubnet"),
        ("CLUSTER_TYPE", "k8s,bgp"),
    ]);
    assert!(startup::ensure_default_pool(&c, &e).await.unwrap());
    assert!(!startup::ensure_default_pool(&c, &e).await.unwrap());
    let p = c
        .get(
            KindInfo::lookup("IPPool").unwrap(),
            "",
            startup::DEFAULT_POOL,
        )
        .await
        .unwrap()
        .to_value();
    assert_eq!(p["spec"]["cidr"], "10.70.0.0/16");
    assert_eq!(p["spec"]["blockSize"], 28);
    assert_eq!(p["spec"]["vxlanMode"], "CrossSubnet");
    assert_eq!(p["spec"]["natOutgoing"], true);
    let none = env(&[("NO_DEFAULT_POOLS", "true")]);
    assert!(!startup::ensure_default_pool(&c, &none).await.unwrap());

    startup::ensure_defaults(&c, &e).await.unwrap();
    let ci = c
        .get(
            KindInfo::lookup("ClusterInformation").unwrap(),
            "",
            "default",
        )
        .await
        .unwrap()
        .to_value();
    assert_eq!(ci["spec"]["clusterType"], "k8s,bgp");
    assert_eq!(ci["spec"]["datastoreReady"], true);
    let guid = ci["spec"]["clusterGUID"].clone();
    startup::ensure_defaults(&c, &e).await.unwrap();
    let ci2 = c
        .get(
            KindInfo::lookup("ClusterInformation").unwrap(),
            "",
            "default",
        )
        .await
        .unwrap()
        .to_value();
    assert_eq!(
        ci2["spec"]["clusterGUID"], guid,
        "defaults must not be rewritten"
    );
    for kind in ["FelixConfiguration", "BGPConfiguration"] {
        c.get(KindInfo::lookup(kind).unwrap(), "", "default")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn vxlan_tunnel_address_allocated_kept_and_released() {
    let (_d, kv, c) = setup();
    let e = env(&[
        ("CALICO_IPV4POOL_CIDR", "10.71.0.0/16"),
        ("CALICO_IPV4POOL_VXLAN", "Always"),
    ]);
    startup::ensure_default_pool(&c, &e).await.unwrap();
    startup::ensure_node(&c, "n1", Some("10.0.0.1/24".parse().unwrap()), &e)
        .await
        .unwrap();
    let n = startup::ensure_vxlan_tunnel(&kv, &c, "n1").await.unwrap();
    let addr = n.spec.ipv4_vxlan_tunnel_addr.clone();
    assert!(addr.starts_with("10.71."), "{addr}");
    assert_eq!(
        n.spec.vxlan_tunnel_mac_addr,
        felix_routes::plan::vtep_mac("n1").to_string()
    );
    // A restart keeps the same address.
    let n = startup::ensure_vxlan_tunnel(&kv, &c, "n1").await.unwrap();
    assert_eq!(n.spec.ipv4_vxlan_tunnel_addr, addr);
    let ipam = calico_ipam::IpamClient::new(kv.clone());
    assert_eq!(
        ipam.ips_by_handle("vxlan-tunnel-addr-n1").await.unwrap(),
        vec![addr.parse::<std::net::IpAddr>().unwrap()]
    );
    // VXLAN turned off on the pool: the address is released and cleared.
    let k = KindInfo::lookup("IPPool").unwrap();
    let mut v = c
        .get(k, "", startup::DEFAULT_POOL)
        .await
        .unwrap()
        .to_value();
    v["spec"]["vxlanMode"] = "Never".into();
    c.update(AnyResource::from_value(v).unwrap()).await.unwrap();
    let n = startup::ensure_vxlan_tunnel(&kv, &c, "n1").await.unwrap();
    assert_eq!(n.spec.ipv4_vxlan_tunnel_addr, "");
    assert!(
        ipam.ips_by_handle("vxlan-tunnel-addr-n1")
            .await
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn ipip_tunnel_address_goes_to_spec_bgp() {
    let (_d, kv, c) = setup();
    let e = env(&[
        ("CALICO_IPV4POOL_CIDR", "10.72.0.0/16"),
        ("CALICO_IPV4POOL_IPIP", "Always"),
    ]);
    startup::ensure_default_pool(&c, &e).await.unwrap();
    startup::ensure_node(&c, "n2", Some("10.0.0.2/24".parse().unwrap()), &e)
        .await
        .unwrap();
    let n = startup::ensure_tunnel(&kv, &c, "n2", startup::Tunnel::Ipip)
        .await
        .unwrap();
    let addr = n.spec.bgp.unwrap().ipv4_ipip_tunnel_addr;
    assert!(addr.starts_with("10.72."), "{addr}");
    assert_eq!(n.spec.ipv4_vxlan_tunnel_addr, "");
    let ipam = calico_ipam::IpamClient::new(kv.clone());
    assert_eq!(
        ipam.ips_by_handle("ipip-tunnel-addr-n2").await.unwrap(),
        vec![addr.parse::<std::net::IpAddr>().unwrap()]
    );
    // No VXLAN pool: the VXLAN step changes nothing.
    let n = startup::ensure_vxlan_tunnel(&kv, &c, "n2").await.unwrap();
    assert_eq!(n.spec.ipv4_vxlan_tunnel_addr, "");
}

//! Behaviour not covered by the upstream corpus: ttlSecurity, next-hop modes, local AS,
//! sourceAddress None, per-node AS and listen port, RR peers skipped by the mesh, reverse
//! peerings, disableBGPExport and VXLAN pools, borrowed addresses, BGPFilter operators, and
//! the errors for bad input. The feature-rich config is also checked with `bird -p`.

use std::path::Path;
use std::process::Command;

use calico_bird::{AffinityState, BgpInputs, BlockAffinity, Family, PeerKind, RenderError};
use calico_model::AnyResource;

fn inputs(node: &str, yaml: &str) -> BgpInputs {
    let mut i = BgpInputs {
        node_name: node.to_string(),
        ..Default::default()
    };
    for doc in calico_model::load::parse_documents(yaml, "test").expect("yaml") {
        match AnyResource::from_value(doc).expect("resource") {
            AnyResource::BGPConfiguration(r) => i.bgp_configurations.push(r),
            AnyResource::BGPPeer(r) => i.peers.push(r),
            AnyResource::BGPFilter(r) => i.filters.push(r),
            AnyResource::Node(r) => i.nodes.push(r),
            AnyResource::IPPool(r) => i.ip_pools.push(r),
            other => panic!("unexpected kind {}", other.kind()),
        }
    }
    i
}

const CLUSTER: &str = r#"
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 65000
  nodeMeshMaxRestartTime: 2m
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceLoadBalancerIPs: [{cidr: 203.0.113.0/24}, {cidr: 203.0.113.5/32}]
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: node.n2}
spec:
  listenPort: 1790
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1, labels: {rack: a}}
spec: {bgp: {ipv4Address: 10.0.0.1/24, ipv6Address: "fd00::1/64"}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2, labels: {rack: a}}
spec: {bgp: {ipv4Address: 10.0.0.2/24, asNumber: 65002}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: rr1, labels: {rr: "yes"}}
spec: {bgp: {ipv4Address: 10.0.0.9/24, routeReflectorClusterID: 1.1.1.1}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  nodeSelector: rack == 'a'
  peerIP: 192.0.2.1
  asNumber: 64999
  localASNumber: 65100
  ttlSecurity: 2
  keepOriginalNextHop: true
  sourceAddress: None
  keepaliveTime: 10s
  maxRestartTime: 90s
  numAllowedLocalASNumbers: 2
  reachableBy: 10.0.0.254
  filters: [f1]
  password: {secretKeyRef: {name: s, key: k}}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: to-rr}
spec:
  nodeSelector: "!has(rr)"
  peerSelector: has(rr)
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata: {name: f1}
spec:
  exportV4:
    - {action: Accept, cidr: 10.10.0.0/16, matchOperator: NotIn}
    - {action: Reject, cidr: 10.20.0.0/16, matchOperator: Equal, peerType: eBGP}
    - {action: Accept, cidr: 10.30.0.0/16, matchOperator: In, prefixLength: {min: 24, max: 28}}
  importV4:
    - {action: Reject, cidr: 10.40.0.0/16, matchOperator: NotEqual}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: nobgp}
spec: {cidr: 10.99.0.0/16, disableBGPExport: true}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: vx}
spec: {cidr: 10.98.0.0/16, vxlanMode: Always}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: plain}
spec: {cidr: 10.97.0.0/16}
"#;

fn cluster() -> BgpInputs {
    let mut i = inputs("n1", CLUSTER);
    i.secrets.insert(("s".into(), "k".into()), "sekret".into());
    i.block_affinities = vec![
        BlockAffinity {
            cidr: "10.97.1.0/26".parse().expect("cidr"),
            state: AffinityState::Confirmed,
        },
        BlockAffinity {
            cidr: "10.97.2.0/26".parse().expect("cidr"),
            state: AffinityState::PendingDeletion,
        },
    ];
    i.borrowed_ips = vec!["10.97.3.7".parse().expect("ip")];
    i
}

#[test]
fn peers_of_a_feature_rich_node() {
    let plan = calico_bird::plan::plan(&cluster(), Family::V4).expect("plan");
    let names: Vec<&str> = plan.peers.iter().map(|p| p.name.as_str()).collect();
    // rr1 is a route reflector: not in the mesh, peered through the to-rr BGPPeer instead.
    assert_eq!(names, ["Mesh_10_0_0_2", "Node_10_0_0_9", "Node_192_0_2_1"]);
    let mesh = &plan.peers[0];
    assert_eq!(mesh.kind, PeerKind::Mesh);
    assert_eq!(
        (mesh.as_number, mesh.port),
        (65002, Some(1790)),
        "peer node's own AS and listen port"
    );
    assert!(!mesh.internal, "different AS: eBGP export");
    assert!(mesh.passive, "10.0.0.2 > 10.0.0.1");
    assert_eq!(mesh.graceful_restart_time, Some(120));
    let rr = &plan.peers[1];
    assert_eq!((rr.as_number, rr.rr_cluster_id.as_deref()), (65000, None));
    assert!(rr.internal && !rr.passive);
    let tor = &plan.peers[2];
    assert_eq!(tor.local_as, Some(65100));
    assert_eq!(tor.ttl_security, Some(2));
    assert_eq!(tor.source_address, None);
    assert_eq!(tor.password.as_deref(), Some("sekret"));
    assert_eq!(tor.next_hop, calico_bird::plan::NextHop::Keep);
    assert_eq!(
        (
            tor.keepalive_time,
            tor.graceful_restart_time,
            tor.allow_local_as
        ),
        (Some(10), Some(90), Some(2))
    );
    assert_eq!(tor.import_filters.len(), 1);
    assert_eq!(
        tor.export_filters[0].arg,
        Some(false),
        "filter with peerType rules gets the iBGP flag"
    );

    let v6 = calico_bird::plan::plan(&cluster(), Family::V6).expect("plan v6");
    assert!(v6.peers.is_empty(), "no other node has IPv6");
}

#[test]
fn route_reflector_side_and_reverse_peerings() {
    let mut i = cluster();
    i.node_name = "rr1".into();
    let plan = calico_bird::plan::plan(&i, Family::V4).expect("plan");
    let names: Vec<&str> = plan.peers.iter().map(|p| p.name.as_str()).collect();
    // Reverse peerings of to-rr: the RR peers with every node matching nodeSelector.
    assert_eq!(
        names,
        ["Node_10_0_0_1", "Node_10_0_0_2_port_1790"],
        "n2 listens on 1790"
    );
    assert_eq!(
        plan.peers[0].rr_cluster_id.as_deref(),
        Some("1.1.1.1"),
        "iBGP client"
    );
    assert_eq!(
        plan.peers[1].rr_cluster_id, None,
        "n2 is in another AS: not a client"
    );
}

#[test]
fn rendered_text_states_the_features() {
    let r = calico_bird::render(&cluster()).expect("render");
    let t = &r.bird_cfg;
    for want in [
        "local as 65100;",
        "neighbor 192.0.2.1 as 64999;",
        "ttl security on;\n  multihop 2;",
        "password \"sekret\";",
        "next hop keep;",
        "allow local as 2;",
        "keepalive time 10;",
        "graceful restart time 90;",
        "neighbor 10.0.0.2 port 1790 as 65002;",
        "if (net ~ 10.99.0.0/16) then { reject; } # BGP export is disabled.",
        "if (net ~ 10.98.0.0/16) then { reject; } # VXLAN routes are handled by Felix.",
        "if (net ~ 10.97.0.0/16) then { accept; }",
        "route 10.97.1.0/26 blackhole;",
        "if ( net = 10.97.3.7/32 ) then { accept; }",
        "(net !~ 10.10.0.0/16)",
        "(net = 10.20.0.0/16)&&(!is_same_as)",
        "(net ~ [ 10.30.0.0/16{24,28} ])",
        "(net != 10.40.0.0/16)",
        "route 192.0.2.1/32 via 10.0.0.254;",
        "function 'bgp_f1_exportFilterV4'(bool is_same_as)",
        "'bgp_f1_exportFilterV4'(false);",
    ] {
        assert!(t.contains(want), "bird.cfg lacks {want:?}:\n{t}");
    }
    assert!(
        !t.contains("route 10.97.2.0/26 blackhole"),
        "pending-deletion block must not be advertised"
    );
    let export_fn = t
        .split("function calico_export_to_bgp_peers")
        .nth(1)
        .and_then(|s| s.split("\n}\n").next())
        .expect("export function");
    assert!(
        !export_fn.contains("10.99.0.0/16) then { accept"),
        "export-disabled pool must not be exported"
    );
    assert!(
        !export_fn.contains("10.98.0.0/16) then { reject"),
        "VXLAN pool is exported"
    );
    // The ToR session has no source address, so it is not strictly bound.
    assert!(!t.contains("strict bind"));
}

#[test]
fn service_ranges_are_advertised_and_kept_out_of_the_kernel() {
    let t = calico_bird::render(&cluster()).expect("render").bird_cfg;
    for want in [
        "route 10.96.0.0/12 blackhole;",
        "route 203.0.113.0/24 blackhole;",
        "if ( net = 10.96.0.0/12 ) then { accept; }",
        "if ( net ~ 10.96.0.0/12 ) then { reject; }",
    ] {
        assert!(t.contains(want), "bird.cfg lacks {want:?}:\n{t}");
    }
    assert!(
        !t.contains("203.0.113.5/32"),
        "single LB addresses are per-service, not global"
    );

    let mut rr = cluster();
    rr.node_name = "rr1".into();
    let t = calico_bird::render(&rr).expect("render").bird_cfg;
    assert!(
        t.contains("if ( net ~ 203.0.113.5/32 ) then { accept; } # Route reflector"),
        "{t}"
    );

    let mut excluded = cluster();
    excluded.nodes[0].metadata.labels.insert(
        "node.kubernetes.io/exclude-from-external-load-balancers".into(),
        "true".into(),
    );
    let t = calico_bird::render(&excluded).expect("render").bird_cfg;
    assert!(
        !t.contains("route 10.96.0.0/12 blackhole;"),
        "excluded node must not advertise"
    );
    assert!(
        t.contains("if ( net ~ 10.96.0.0/12 ) then { reject; }"),
        "but still keeps it out of the kernel"
    );
}

#[test]
fn bird2_accepts_the_feature_rich_config() {
    let bird = Path::new("/usr/sbin/bird");
    if !bird.exists() {
        eprintln!("SKIP bird2_accepts_the_feature_rich_config: /usr/sbin/bird not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    for node in ["n1", "n2", "rr1"] {
        let mut i = cluster();
        i.node_name = node.into();
        let r = calico_bird::render(&i).expect("render");
        for (name, text) in [("bird.cfg", &r.bird_cfg), ("bird6.cfg", &r.bird6_cfg)] {
            let path = tmp.path().join(format!("{node}-{name}"));
            std::fs::write(&path, text).expect("write");
            let out = Command::new(bird)
                .arg("-p")
                .arg("-c")
                .arg(&path)
                .output()
                .expect("bird -p");
            assert!(
                out.status.success(),
                "{node} {name}: {}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_the_object() {
    let base = cluster();
    let mut i = base.clone();
    i.node_name = "nope".into();
    assert_eq!(
        calico_bird::render(&i),
        Err(RenderError::LocalNodeMissing("nope".into()))
    );

    let mut i = base.clone();
    i.secrets.insert(("s".into(), "k".into()), "a\"b".into());
    assert_eq!(
        calico_bird::render(&i),
        Err(RenderError::BadPassword {
            object: "bgppeer tor".into()
        })
    );

    let mut i = base.clone();
    i.filters.clear();
    assert_eq!(
        calico_bird::render(&i),
        Err(RenderError::MissingFilter {
            filter: "f1".into(),
            peer: "tor".into()
        })
    );

    let mut i = base.clone();
    i.peers[0].spec.as_number = None;
    assert_eq!(
        calico_bird::render(&i),
        Err(RenderError::PeerWithoutAs { peer: "tor".into() })
    );

    let mut i = base.clone();
    i.peers[0].spec.reachable_by = "fd00::1".into();
    assert_eq!(
        calico_bird::render(&i),
        Err(RenderError::BadReachableBy {
            peer: "tor".into(),
            value: "fd00::1".into()
        })
    );

    let mut i = base;
    i.peers[0].spec.peer_ip = "not-an-ip".into();
    let err = calico_bird::render(&i).expect_err("bad peer ip");
    assert!(err.to_string().contains("bgppeer tor"), "{err}");
}

//! Positive and negative cases for the networking/config kinds: IPPool, IPReservation,
//! IPAMConfiguration, BGPConfiguration, BGPPeer, BGPFilter, FelixConfiguration,
//! KubeControllersConfiguration, Node and ClusterInformation.
//!
//! Each negative case asserts that the resource is rejected and that the error names the
//! offending field path.

use calico_model::AnyResource;
use calico_model::load::parse_documents;
use calico_model::resources::node::NodeStatus;

/// Parses one YAML document, applies defaults and validates.
fn load(yaml: &str) -> Result<AnyResource, String> {
    let docs = parse_documents(yaml, "test").map_err(|e| e.to_string())?;
    assert_eq!(docs.len(), 1, "test input must hold one document");
    let mut r = AnyResource::from_value(docs.into_iter().next().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    r.apply_defaults();
    r.validate().map_err(|e| e.to_string())?;
    Ok(r)
}

/// Asserts the manifest is accepted and survives a `to_value → from_value` round trip.
fn ok(yaml: &str) -> AnyResource {
    let r = load(yaml).unwrap_or_else(|e| panic!("expected valid, got: {e}\n{yaml}"));
    let back = AnyResource::from_value(r.to_value()).expect("re-parse own output");
    assert_eq!(back, r, "round trip changed the resource");
    // And through YAML text, as `get -o yaml | apply` does.
    let text = serde_saphyr::to_string(&r.to_value()).expect("render YAML");
    let docs = parse_documents(&text, "rendered").expect("re-parse rendered YAML");
    let again = AnyResource::from_value(docs.into_iter().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("re-parse of own YAML failed: {e}\n{text}"));
    assert_eq!(again, r, "YAML round trip changed the resource:\n{text}");
    r
}

/// Asserts the manifest is rejected and the error mentions every `needle`.
fn bad(yaml: &str, needles: &[&str]) {
    match load(yaml) {
        Ok(r) => panic!("expected rejection mentioning {needles:?}, but accepted: {r:?}"),
        Err(e) => {
            for n in needles {
                assert!(e.contains(n), "error {e:?} does not mention {n:?}");
            }
        }
    }
}

fn kind(kind: &str, name: &str, spec: &str) -> String {
    let spec = spec.trim_end();
    let body = if spec.is_empty() {
        " {}".to_string()
    } else {
        format!("\n{spec}")
    };
    format!(
        "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: {name}\nspec:{body}\n"
    )
}

fn pool(spec: &str) -> String {
    kind("IPPool", "p", spec)
}

fn spec_json(r: &AnyResource) -> serde_json::Value {
    r.to_value()["spec"].clone()
}

// ------------------------------------------------------------------------------------------
// IPPool
// ------------------------------------------------------------------------------------------

#[test]
fn ippool_defaults_v4_and_v6() {
    let r = ok(&pool("  cidr: 10.1.0.0/16"));
    let s = spec_json(&r);
    assert_eq!(s["blockSize"], 26);
    assert_eq!(s["ipipMode"], "Never");
    assert_eq!(s["vxlanMode"], "Never");
    assert_eq!(s["nodeSelector"], "all()");
    assert_eq!(s["allowedUses"], serde_json::json!(["Workload", "Tunnel"]));
    assert_eq!(s["assignmentMode"], "Automatic");
    assert!(
        s.get("natOutgoing").is_none(),
        "unset bools are omitted: {s}"
    );

    let r = ok(&pool("  cidr: fd00:10::/48"));
    assert_eq!(spec_json(&r)["blockSize"], 122);
    // The CIDR is stored in canonical form.
    let r = ok(&pool("  cidr: 'FD00:0010:0000::/48'"));
    assert_eq!(spec_json(&r)["cidr"], "fd00:10::/48");
    let r = ok(&pool("  cidr: 10.0.0.0\n  disabled: true"));
    assert_eq!(spec_json(&r)["cidr"], "10.0.0.0/32");
}

#[test]
fn ippool_explicit_values_are_kept() {
    let r = ok(&pool(
        "  cidr: 10.2.0.0/16\n  blockSize: 28\n  ipipMode: CrossSubnet\n  natOutgoing: true\n  nodeSelector: zone == \"west\"\n  assignmentMode: Manual",
    ));
    let s = spec_json(&r);
    assert_eq!(s["blockSize"], 28);
    assert_eq!(s["ipipMode"], "CrossSubnet");
    assert_eq!(s["natOutgoing"], true);
    assert_eq!(s["nodeSelector"], "zone == \"west\"");
    assert_eq!(s["assignmentMode"], "Manual");
}

#[test]
fn ippool_block_size_range() {
    ok(&pool("  cidr: 10.0.0.0/16\n  blockSize: 20"));
    ok(&pool("  cidr: 10.0.0.0/16\n  blockSize: 32"));
    bad(
        &pool("  cidr: 10.0.0.0/16\n  blockSize: 19"),
        &["spec.blockSize", "between 20 and 32 for IPv4"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/16\n  blockSize: 33"),
        &["spec.blockSize", "between 20 and 32 for IPv4"],
    );
    ok(&pool("  cidr: fd00::/64\n  blockSize: 116"));
    ok(&pool("  cidr: fd00::/64\n  blockSize: 128"));
    bad(
        &pool("  cidr: fd00::/64\n  blockSize: 115"),
        &["spec.blockSize", "between 116 and 128 for IPv6"],
    );
    bad(
        &pool("  cidr: fd00::/64\n  blockSize: 129"),
        &["spec.blockSize"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/16\n  blockSize: -1"),
        &["spec.blockSize"],
    );
}

#[test]
fn ippool_must_hold_a_block_unless_disabled() {
    bad(&pool("  cidr: 1.2.3.0/27"), &["spec.cidr", "blockSize"]);
    ok(&pool("  cidr: 1.2.3.0/27\n  disabled: true"));
    bad(&pool("  cidr: aabb:aabb::ffff/128"), &["spec.cidr"]);
    ok(&pool("  cidr: aabb:aabb::ffff/128\n  disabled: true"));
    bad(
        &pool("  cidr: 10.0.0.0/24\n  blockSize: 23"),
        &["spec.cidr"],
    );
}

#[test]
fn ippool_cidr_rules() {
    bad(&pool("  cidr: 1.2.3.4/33"), &["spec.cidr"]);
    bad(&pool("  cidr: aa:bb::/129"), &["spec.cidr"]);
    bad(&pool("  cidr: garbage"), &["spec.cidr"]);
    bad(
        &pool("  natOutgoing: true"),
        &["spec.cidr", "must be specified"],
    );
    bad(
        &pool("  cidr: 10.1.2.3/16"),
        &["spec.cidr", "not strictly masked"],
    );
    bad(
        &pool("  cidr: 169.254.5.0/24"),
        &["spec.cidr", "Link Local"],
    );
    bad(&pool("  cidr: 169.0.0.0/8"), &["spec.cidr", "Link Local"]);
    bad(&pool("  cidr: fe80::/120"), &["spec.cidr", "Link Local"]);
}

#[test]
fn ippool_encapsulation_modes() {
    bad(
        &pool("  cidr: 1.2.3.0/24\n  ipipMode: Always\n  vxlanMode: Always"),
        &["spec.ipipMode", "cannot both be enabled"],
    );
    bad(
        &pool("  cidr: 1.2.3.0/24\n  ipipMode: CrossSubnet\n  vxlanMode: Always"),
        &["ipipMode"],
    );
    ok(&pool(
        "  cidr: 1.2.3.0/24\n  ipipMode: Never\n  vxlanMode: Always",
    ));
    bad(
        &pool("  cidr: 1.2.3.0/24\n  ipipMode: never"),
        &["spec.ipipMode"],
    );
    bad(
        &pool("  cidr: 1.2.3.0/24\n  vxlanMode: never"),
        &["spec.vxlanMode"],
    );
    bad(
        &pool("  cidr: 1.2.3.0/24\n  ipipMode: badVal"),
        &["spec.ipipMode"],
    );
    bad(
        &pool("  cidr: fd00::/120\n  ipipMode: Always"),
        &["spec.ipipMode", "IPv6"],
    );
    ok(&pool("  cidr: fd00::/120\n  vxlanMode: Always"));
}

#[test]
fn ippool_allowed_uses_and_load_balancer() {
    ok(&pool(
        "  cidr: 10.0.0.0/24\n  allowedUses: [Workload, Tunnel]",
    ));
    ok(&pool("  cidr: 10.0.0.0/24\n  allowedUses: [LoadBalancer]"));
    bad(
        &pool("  cidr: 10.0.0.0/24\n  allowedUses: [Garbage]"),
        &["spec.allowedUses"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  allowedUses: [Workload, Workload]"),
        &["spec.allowedUses[1]"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  allowedUses: [LoadBalancer, Workload]"),
        &["spec.allowedUses", "LoadBalancer cannot be combined"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  allowedUses: [LoadBalancer]\n  ipipMode: Always"),
        &[
            "spec.ipipMode",
            "LoadBalancer IP pool cannot have IPIP or VXLAN enabled",
        ],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  allowedUses: [LoadBalancer]\n  vxlanMode: CrossSubnet"),
        &["spec.vxlanMode"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  allowedUses: [LoadBalancer]\n  disableBGPExport: true"),
        &["spec.disableBGPExport"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  allowedUses: [LoadBalancer]\n  nodeSelector: has(x)"),
        &["spec.nodeSelector"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  namespaceSelector: has(x)"),
        &["spec.namespaceSelector", "Tunnel"],
    );
    ok(&pool(
        "  cidr: 10.0.0.0/24\n  namespaceSelector: has(x)\n  allowedUses: [Workload]",
    ));
    bad(
        &pool("  cidr: 10.0.0.0/24\n  assignmentMode: Sometimes"),
        &["spec.assignmentMode"],
    );
}

#[test]
fn ippool_selectors_and_deprecated_fields() {
    bad(
        &pool("  cidr: 10.0.0.0/24\n  nodeSelector: this is not valid selector syntax"),
        &["spec.nodeSelector"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  nodeSelector: global()"),
        &["spec.nodeSelector", "global()"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  ipip:\n    enabled: true\n    mode: always"),
        &["spec.ipip"],
    );
    ok(&pool("  cidr: 10.0.0.0/24\n  nat-outgoing: false"));
    bad(
        &pool("  cidr: 10.0.0.0/24\n  nat-outgoing: true"),
        &["spec.nat-outgoing"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  blocksize: 26"),
        &["spec", "blocksize"],
    );
    bad(
        &pool("  cidr: 10.0.0.0/24\n  blockSize: \"26\""),
        &["spec.blockSize"],
    );
}

#[test]
fn null_values_read_as_unset() {
    // A YAML key without a value is null; upstream (Go) decodes it as the zero value.
    let r = ok(&pool(
        "  cidr: 10.0.0.0/24\n  nodeSelector:\n  allowedUses:\n  natOutgoing:",
    ));
    assert_eq!(spec_json(&r)["nodeSelector"], "all()");
    ok(&peer(
        "  peerIP: 10.0.0.1\n  asNumber: 64512\n  peerSelector:\n  filters:",
    ));
    ok(&kind(
        "KubeControllersConfiguration",
        "default",
        "  controllers:",
    ));
    ok(&node(
        "  bgp:\n    ipv4Address: 10.0.0.1/24\n    ipv6Address:",
    ));
}

#[test]
fn ippool_metadata_rules() {
    bad(
        &kind("IPPool", "Bad_Name", "  cidr: 10.0.0.0/24"),
        &["metadata.name"],
    );
    let long = "x".repeat(254);
    bad(
        &kind("IPPool", &long, "  cidr: 10.0.0.0/24"),
        &["metadata.name"],
    );
    ok(&kind("IPPool", &"x".repeat(253), "  cidr: 10.0.0.0/24"));
    let labelled = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  labels:\n    ProjectCalico.org/label: v\nspec:\n  cidr: 10.0.0.0/24\n";
    bad(labelled, &["metadata.labels"]);
}

// ------------------------------------------------------------------------------------------
// IPReservation and IPAMConfiguration
// ------------------------------------------------------------------------------------------

#[test]
fn ipreservation_rules() {
    ok(&kind(
        "IPReservation",
        "r",
        "  reservedCIDRs: [10.0.0.1, 10.0.1.0/24, cafe::1, cafe:f00d::/96, 10.0.2.3/16]",
    ));
    bad(
        &kind("IPReservation", "r", "  reservedCIDRs: [10.0.1.0/33]"),
        &["spec.reservedCIDRs[0]"],
    );
    bad(
        &kind("IPReservation", "r", "  reservedCIDRs: [10.0.0.1, garbage]"),
        &["spec.reservedCIDRs[1]"],
    );
    bad(
        &kind("IPReservation", "r", "  reservedIPs: [10.0.0.1]"),
        &["reservedIPs"],
    );
}

#[test]
fn ipamconfiguration_rules() {
    let r = ok(&kind("IPAMConfiguration", "default", ""));
    let s = spec_json(&r);
    assert_eq!(s["autoAllocateBlocks"], true);
    assert_eq!(s["strictAffinity"], false);
    assert!(s.get("maxBlocksPerHost").is_none());
    ok(&kind(
        "IPAMConfiguration",
        "default",
        "  strictAffinity: true\n  maxBlocksPerHost: 8",
    ));
    bad(
        &kind("IPAMConfiguration", "other", ""),
        &["metadata.name", "default"],
    );
    bad(
        &kind(
            "IPAMConfiguration",
            "default",
            "  strictAffinity: true\n  maxBlocksPerHost: -1",
        ),
        &["spec.maxBlocksPerHost"],
    );
    bad(
        &kind(
            "IPAMConfiguration",
            "default",
            "  strictAffinity: true\n  maxBlocksPerHost: 1000001",
        ),
        &["spec.maxBlocksPerHost"],
    );
    bad(
        &kind("IPAMConfiguration", "default", "  maxBlocksPerHost: 4"),
        &["spec.maxBlocksPerHost", "strictAffinity"],
    );
    bad(
        &kind(
            "IPAMConfiguration",
            "default",
            "  strictAffinity: false\n  autoAllocateBlocks: false",
        ),
        &["spec.autoAllocateBlocks"],
    );
    bad(
        &kind(
            "IPAMConfiguration",
            "default",
            "  kubeVirtVMAddressPersistence: Maybe",
        ),
        &["kubeVirtVMAddressPersistence"],
    );
}

// ------------------------------------------------------------------------------------------
// BGPConfiguration
// ------------------------------------------------------------------------------------------

fn bgpconf(spec: &str) -> String {
    kind("BGPConfiguration", "default", spec)
}

#[test]
fn bgpconfiguration_defaults_and_fields() {
    let r = ok(&bgpconf(""));
    let s = spec_json(&r);
    assert_eq!(s["logSeverityScreen"], "Info");
    assert_eq!(s["serviceLoadBalancerAggregation"], "Enabled");
    let r = ok(&bgpconf(
        "  asNumber: 63400\n  listenPort: 178\n  bindMode: NodeIP\n  nodeToNodeMeshEnabled: false\n  serviceClusterIPs: [{cidr: 10.96.0.0/12}]\n  serviceExternalIPs: [{cidr: 8.8.8.8}, {cidr: 'fdf5:1234::808:808'}]\n  serviceLoadBalancerIPs: [{cidr: 192.0.2.0/24}]\n  ignoredInterfaces: [valid_iface*, interface_name]\n  localWorkloadPeeringIPV4: 169.254.0.179\n  localWorkloadPeeringIPV6: 'fd00::179'\n  programClusterRoutes: EnabledNoEncapOnly",
    ));
    let s = spec_json(&r);
    assert_eq!(s["asNumber"], 63400);
    assert_eq!(s["nodeToNodeMeshEnabled"], false);
}

#[test]
fn bgpconfiguration_rules() {
    bad(
        &bgpconf("  logSeverityScreen: info"),
        &["spec.logSeverityScreen"],
    );
    bad(
        &bgpconf("  logSeverityScreen: INFO"),
        &["spec.logSeverityScreen"],
    );
    bad(&bgpconf("  listenPort: 0"), &["spec.listenPort"]);
    bad(&bgpconf("  listenPort: 65536"), &["spec.listenPort"]);
    bad(
        &bgpconf("  serviceClusterIPs: [{cidr: x.x.x.x}]"),
        &["spec.serviceClusterIPs[0].cidr"],
    );
    bad(
        &bgpconf("  serviceExternalIPs: [{cidr: y.y.y.y}]"),
        &["spec.serviceExternalIPs[0].cidr"],
    );
    bad(
        &bgpconf("  ignoredInterfaces: ['*']"),
        &["spec.ignoredInterfaces[0]"],
    );
    bad(&bgpconf("  bindMode: Everywhere"), &["spec.bindMode"]);
    bad(
        &bgpconf("  localWorkloadPeeringIPV4: 'fd00::1'"),
        &["spec.localWorkloadPeeringIPV4"],
    );
    bad(
        &bgpconf("  nodeMeshMaxRestartTime: soon"),
        &["spec.nodeMeshMaxRestartTime"],
    );
    bad(&bgpconf("  asNumber: -5"), &["spec.asNumber"]);
}

#[test]
fn bgpconfiguration_mesh_rules() {
    let pw =
        "  nodeMeshPassword:\n    secretKeyRef:\n      name: bgp-secrets\n      key: rr-password";
    ok(&bgpconf(&format!("  nodeToNodeMeshEnabled: true\n{pw}")));
    ok(&bgpconf(pw));
    bad(
        &bgpconf(&format!("  nodeToNodeMeshEnabled: false\n{pw}")),
        &["spec.nodeMeshPassword", "nodeToNodeMeshEnabled"],
    );
    ok(&bgpconf(
        "  nodeToNodeMeshEnabled: true\n  nodeMeshMaxRestartTime: 200s",
    ));
    bad(
        &bgpconf("  nodeToNodeMeshEnabled: false\n  nodeMeshMaxRestartTime: 200s"),
        &["spec.nodeMeshMaxRestartTime"],
    );
    bad(
        &bgpconf("  nodeMeshPassword:\n    secretKeyRef:\n      name: s"),
        &["spec.nodeMeshPassword.secretKeyRef.key"],
    );
}

#[test]
fn bgpconfiguration_communities() {
    ok(&bgpconf(
        "  communities:\n  - name: big\n    value: 63400:300:100\n  prefixAdvertisements:\n  - cidr: 172.218.4.0/26\n    communities: [big, '63400:120']",
    ));
    bad(
        &bgpconf(
            "  communities:\n  - name: c\n    value: '65536:1'\n  prefixAdvertisements:\n  - cidr: 10.0.0.0/8\n    communities: [c]",
        ),
        &["spec.communities[0].value", "16 bit"],
    );
    bad(
        &bgpconf(
            "  communities:\n  - name: c\n    value: '1:2:4294967296'\n  prefixAdvertisements:\n  - cidr: 10.0.0.0/8\n    communities: [c]",
        ),
        &["spec.communities[0].value", "32 bit"],
    );
    bad(
        &bgpconf(
            "  communities:\n  - name: c\n    value: abc\n  prefixAdvertisements:\n  - cidr: 10.0.0.0/8\n    communities: [c]",
        ),
        &["spec.communities[0].value"],
    );
    bad(
        &bgpconf("  communities:\n  - name: c\n    value: '1:2'"),
        &["spec.communities", "not used"],
    );
    bad(
        &bgpconf(
            "  prefixAdvertisements:\n  - cidr: 10.0.0.0/8\n    communities: [undefined-name]",
        ),
        &["spec.prefixAdvertisements[0].communities[0]"],
    );
    bad(
        &bgpconf("  prefixAdvertisements:\n  - cidr: bogus\n    communities: ['1:2']"),
        &["spec.prefixAdvertisements[0].cidr"],
    );
}

// ------------------------------------------------------------------------------------------
// BGPPeer
// ------------------------------------------------------------------------------------------

fn peer(spec: &str) -> String {
    kind("BGPPeer", "peer", spec)
}

#[test]
fn bgppeer_peer_ip_forms() {
    for ip in [
        "1.2.3.4",
        "192.168.1.1:500",
        "'[9000::]:500'",
        "'fd5f::6:ee'",
    ] {
        ok(&peer(&format!("  peerIP: {ip}\n  asNumber: 64567")));
    }
    for ip in [
        "999.999.999.999",
        "'xyz:::'",
        "'[192.168.0.0]:98956'",
        "'192.168.0.0:65536'",
        "'192.168.0.0:0'",
        "'192.168.0.330:170'",
        "'[9000::]:98956'",
        "'192.168.0.0:'",
        "'[9000::]:'",
        "'[9000::]:65536'",
        "'[9000::]:0'",
        "'[9000::FFFFF]:170'",
        "':8552'",
        "'[]:8552'",
        "'9000:::500'",
    ] {
        bad(&peer(&format!("  peerIP: {ip}")), &["spec.peerIP"]);
    }
}

#[test]
fn bgppeer_exclusive_fields() {
    bad(
        &peer("  node: my-node\n  nodeSelector: has(mylabel)"),
        &["spec.node", "nodeSelector"],
    );
    bad(
        &peer("  peerIP: 1.2.3.4\n  peerSelector: has(mylabel)"),
        &["spec.peerIP", "peerSelector"],
    );
    bad(
        &peer("  asNumber: 61234\n  peerSelector: has(mylabel)"),
        &["spec.asNumber", "peerSelector"],
    );
    ok(&peer(
        "  nodeSelector: has(mylabel)\n  peerSelector: has(mylabel)",
    ));
    bad(
        &peer("  localWorkloadSelector: color == 'red'"),
        &["spec.asNumber", "localWorkloadSelector"],
    );
    ok(&peer(
        "  localWorkloadSelector: color == 'red'\n  asNumber: 65401",
    ));
    bad(
        &peer("  localWorkloadSelector: color == 'red'\n  asNumber: 65401\n  peerIP: 10.0.0.1"),
        &["spec.peerIP"],
    );
    bad(
        &peer("  localWorkloadSelector: color == 'red'\n  asNumber: 65401\n  peerSelector: has(x)"),
        &["spec.peerSelector"],
    );
    bad(
        &peer("  peerIP: 10.0.0.1\n  keepOriginalNextHop: true\n  nextHopMode: Self"),
        &["spec.keepOriginalNextHop"],
    );
    ok(&peer("  peerIP: 10.0.0.1\n  keepOriginalNextHop: true"));
    ok(&peer("  peerIP: 10.0.0.1\n  nextHopMode: Keep"));
    bad(
        &peer("  peerIP: 10.0.0.1\n  nextHopMode: Invalid"),
        &["spec.nextHopMode"],
    );
}

#[test]
fn bgppeer_reachable_by() {
    bad(
        &peer("  reachableBy: 100.200.0.0"),
        &["spec.reachableBy", "peerIP"],
    );
    ok(&peer("  peerIP: '9.9.9.9:4444'\n  reachableBy: 1.2.3.4"));
    ok(&peer(
        "  peerIP: '[aabb::ffff]:4444'\n  reachableBy: 'aabb:aabb::ffff'",
    ));
    bad(
        &peer("  peerIP: '9.9.9.9:4444'\n  reachableBy: 999.999.999.999"),
        &["spec.reachableBy"],
    );
    bad(
        &peer("  peerIP: 1.2.3.4\n  reachableBy: 'aabb::1'"),
        &["spec.reachableBy", "family"],
    );
    bad(
        &peer("  peerIP: '[aabb::ffff]:4444'\n  reachableBy: 1.2.3.4"),
        &["spec.reachableBy", "family"],
    );
}

#[test]
fn bgppeer_other_fields() {
    let r = ok(&peer(
        "  peerIP: 10.50.1.1\n  asNumber: '1.10'\n  localASNumber: 64000\n  nodeSelector: rack == 'rack1'\n  sourceAddress: None\n  failureDetectionMode: BFDIfDirectlyConnected\n  restartMode: LongLivedGracefulRestart\n  birdGatewayMode: DirectIfDirectlyConnected\n  maxRestartTime: 10s\n  keepaliveTime: 20s\n  numAllowedLocalASNumbers: 2\n  ttlSecurity: 1\n  filters: [first-bgp-filter, second]\n  reversePeering: Manual\n  password:\n    secretKeyRef:\n      name: tigera-bgp-passwords\n      key: my-peering",
    ));
    let s = spec_json(&r);
    assert_eq!(
        s["asNumber"], 65546,
        "asdot 1.10 is 1*65536+10 and is written as a number"
    );
    assert_eq!(s["sourceAddress"], "None");
    bad(&peer("  sourceAddress: rubbish"), &["spec.sourceAddress"]);
    bad(
        &peer("  failureDetectionMode: Sometimes"),
        &["spec.failureDetectionMode"],
    );
    bad(
        &peer("  maxRestartTime: 10 seconds"),
        &["spec.maxRestartTime"],
    );
    bad(&peer("  ttlSecurity: 256"), &["spec.ttlSecurity"]);
    bad(&peer("  filters: [Bad_Filter]"), &["spec.filters[0]"]);
    bad(&peer("  asNumber: 4294967296"), &["spec.asNumber"]);
    bad(
        &peer("  password:\n    secretKeyRef:\n      name: s"),
        &["spec.password.secretKeyRef.key"],
    );
    bad(
        &peer("  nodeSelector: \"kubernetes.io/hostname: == 'casey-crc-kadm-node-4'\""),
        &["spec.nodeSelector"],
    );
    bad(&peer("  node: Not_A_Node"), &["spec.node"]);
    bad(&peer("  peerIp: 1.2.3.4"), &["peerIp"]);
}

// ------------------------------------------------------------------------------------------
// BGPFilter
// ------------------------------------------------------------------------------------------

fn filter(spec: &str) -> String {
    kind("BGPFilter", "f", spec)
}

#[test]
fn bgpfilter_rules() {
    ok(&filter(
        "  exportV4:\n  - action: Accept\n    matchOperator: In\n    cidr: 77.0.0.0/16\n    source: RemotePeers\n    prefixLength: {min: 24, max: 32}\n  - action: Reject\n    interface: '*.calico'\n  importV6:\n  - action: Accept\n    matchOperator: Equal\n    cidr: '5000::0/64'\n  - action: Reject",
    ));
    bad(
        &filter("  exportV4:\n  - action: Accept\n    cidr: 10.0.0.0/8"),
        &["spec.exportV4[0].cidr", "matchOperator"],
    );
    bad(
        &filter("  exportV6:\n  - action: Accept\n    matchOperator: In"),
        &["spec.exportV6[0].matchOperator"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    prefixLength: {min: 16}"),
        &["spec.exportV4[0].prefixLength", "cidr"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    matchOperator: In\n    cidr: 'fd00::/48'"),
        &["spec.exportV4[0].cidr"],
    );
    bad(
        &filter("  importV6:\n  - action: Accept\n    matchOperator: In\n    cidr: 10.0.0.0/8"),
        &["spec.importV6[0].cidr"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    matchOperator: In\n    cidr: 10.1.0.0/8"),
        &["spec.exportV4[0].cidr"],
    );
    bad(
        &filter(
            "  exportV4:\n  - action: Accept\n    matchOperator: In\n    cidr: 10.0.0.0/8\n    prefixLength: {max: 33}",
        ),
        &["spec.exportV4[0].prefixLength.max"],
    );
    // Redundant on import rules, but accepted (upstream's own confd fixtures use it).
    ok(&filter(
        "  importV4:\n  - action: Accept\n    source: RemotePeers",
    ));
    bad(
        &filter("  exportV4:\n  - action: Accept\n    interface: much-too-long-interface"),
        &["spec.exportV4[0].interface"],
    );
    bad(
        &filter("  exportV4:\n  - action: Drop"),
        &["spec.exportV4[0].action"],
    );
    bad(
        &filter("  exportV4:\n  - matchOperator: In\n    cidr: 10.0.0.0/8"),
        &["spec.exportV4[0]", "action"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    matchOperator: Within\n    cidr: 10.0.0.0/8"),
        &["spec.exportV4[0].matchOperator"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    peerType: xBGP"),
        &["spec.exportV4[0].peerType"],
    );
}

#[test]
fn bgpfilter_operations() {
    ok(&filter(
        "  exportV4:\n  - action: Accept\n    peerType: eBGP\n    priority: 512\n    asPathPrefix: [65000]\n    operations:\n    - addCommunity: {value: '65000:100'}\n    - prependASPath: {prefix: [65000, 65001]}\n  importV4:\n  - action: Accept\n    communities: {values: ['65000:100']}\n    operations:\n    - setPriority: {value: 512}",
    ));
    bad(
        &filter("  exportV4:\n  - action: Reject\n    operations:\n    - setPriority: {value: 5}"),
        &["spec.exportV4[0].operations", "Accept"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    operations:\n    - {}"),
        &["spec.exportV4[0].operations[0]", "exactly one"],
    );
    bad(
        &filter(
            "  exportV4:\n  - action: Accept\n    operations:\n    - addCommunity: {value: '65000:1'}\n      setPriority: {value: 100}",
        ),
        &["spec.exportV4[0].operations[0]"],
    );
    bad(
        &filter(
            "  exportV4:\n  - action: Accept\n    operations:\n    - addCommunity: {value: '65536:1'}",
        ),
        &["spec.exportV4[0].operations[0].addCommunity.value"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    operations:\n    - setPriority: {value: 0}"),
        &["spec.exportV4[0].operations[0].setPriority.value"],
    );
    bad(
        &filter("  exportV4:\n  - action: Accept\n    priority: 0"),
        &["spec.exportV4[0].priority"],
    );
    bad(
        &filter("  importV4:\n  - action: Accept\n    communities: {values: []}"),
        &["spec.importV4[0].communities.values"],
    );
    bad(
        &filter(
            "  exportV4:\n  - action: Accept\n    operations:\n    - prependASPath: {prefix: []}",
        ),
        &["spec.exportV4[0].operations[0].prependASPath.prefix"],
    );
}

// ------------------------------------------------------------------------------------------
// FelixConfiguration
// ------------------------------------------------------------------------------------------

fn felix(name: &str, spec: &str) -> String {
    kind("FelixConfiguration", name, spec)
}

#[test]
fn felix_defaults() {
    let r = ok(&felix("default", ""));
    let s = spec_json(&r);
    assert_eq!(s["nftablesMode"], "Auto");
    assert_eq!(s["floatingIPs"], "Disabled");
    assert_eq!(s["bpfConnectTimeLoadBalancing"], "TCP");
    assert_eq!(s["bpfHostNetworkedNATWithoutCTLB"], "Enabled");
    // Explicit values win.
    let r = ok(&felix("default", "  nftablesMode: Enabled"));
    assert_eq!(spec_json(&r)["nftablesMode"], "Enabled");
}

#[test]
fn felix_durations() {
    for d in [
        "90s", "1m30s", "500ms", "1.5h", "'0'", "0s", "10us", "2h45m",
    ] {
        ok(&felix("default", &format!("  routeRefreshInterval: {d}")));
    }
    // A bare YAML number is not a duration string (Go's metav1.Duration refuses it too).
    bad(
        &felix("default", "  routeRefreshInterval: 0"),
        &["spec.routeRefreshInterval"],
    );
    for d in ["10 seconds", "-1s", "5", "s", "1x", "''"] {
        bad(
            &felix("default", &format!("  routeRefreshInterval: {d}")),
            &["spec.routeRefreshInterval"],
        );
    }
    bad(
        &felix("default", "  reportingTTL: 10"),
        &["spec.reportingTTL"],
    );
    bad(
        &felix(
            "default",
            "  healthTimeoutOverrides: [{name: Valid, timeout: -1s}]",
        ),
        &["spec.healthTimeoutOverrides[0].timeout"],
    );
    ok(&felix(
        "default",
        "  healthTimeoutOverrides: [{name: Valid, timeout: 0s}]",
    ));
    bad(
        &felix(
            "default",
            "  healthTimeoutOverrides: [{name: '%', timeout: 10s}]",
        ),
        &["spec.healthTimeoutOverrides[0].name"],
    );
    bad(
        &felix(
            "default",
            "  healthTimeoutOverrides: [{name: '', timeout: 10s}]",
        ),
        &["spec.healthTimeoutOverrides[0].name"],
    );
    bad(
        &felix(
            "default",
            "  bpfConntrackTimeouts: {tcpEstablished: forever}",
        ),
        &["spec.bpfConntrackTimeouts.tcpEstablished"],
    );
    ok(&felix(
        "default",
        "  bpfConntrackTimeouts: {tcpEstablished: 1h, tcpFinsSeen: Auto}",
    ));
}

#[test]
fn felix_enums() {
    ok(&felix("default", "  chainInsertMode: append"));
    ok(&felix("default", "  chainInsertMode: Insert"));
    bad(
        &felix("default", "  chainInsertMode: top"),
        &["spec.chainInsertMode"],
    );
    ok(&felix("default", "  defaultEndpointToHostAction: Drop"));
    bad(
        &felix("default", "  defaultEndpointToHostAction: drop"),
        &["spec.defaultEndpointToHostAction"],
    );
    bad(
        &felix("default", "  iptablesMangleAllowAction: Drop"),
        &["spec.iptablesMangleAllowAction"],
    );
    ok(&felix("default", "  iptablesFilterDenyAction: Reject"));
    for b in ["Legacy", "NFT", "Auto"] {
        ok(&felix("default", &format!("  iptablesBackend: {b}")));
    }
    bad(
        &felix("default", "  iptablesBackend: badVal"),
        &["spec.iptablesBackend"],
    );
    for l in ["badVal", "Critical", "debug"] {
        bad(
            &felix("default", &format!("  logSeverityScreen: {l}")),
            &["spec.logSeverityScreen"],
        );
    }
    ok(&felix(
        "default",
        "  logSeverityScreen: Fatal\n  logSeverityFile: Debug\n  logSeveritySys: Info",
    ));
    bad(
        &felix("default", "  bpfLogLevel: badVal"),
        &["spec.bpfLogLevel"],
    );
    bad(
        &felix("default", "  bpfExternalServiceMode: Foo"),
        &["spec.bpfExternalServiceMode"],
    );
    ok(&felix("default", "  bpfExternalServiceMode: DSR"));
    bad(
        &felix("default", "  awsSrcDstCheck: enable"),
        &["spec.awsSrcDstCheck"],
    );
    ok(&felix("default", "  awsSrcDstCheck: DoNothing"));
    bad(
        &felix("default", "  nftablesMode: On"),
        &["spec.nftablesMode"],
    );
    bad(
        &felix("default", "  routeSource: Magic"),
        &["spec.routeSource"],
    );
}

#[test]
fn felix_numeric_bounds() {
    let bounded: &[(&str, i64, i64)] = &[
        ("debugPort", 0, 65535),
        ("bpfExtToServiceConnmark", 0, 4_294_967_295),
        ("bpfKubeProxyHealthzPort", 0, 65535),
        ("ipv4NormalRoutePriority", 1, 2_147_483_646),
        ("ipv4ElevatedRoutePriority", 1, 2_147_483_646),
        ("ipv6NormalRoutePriority", 1, 2_147_483_646),
        ("ipv6ElevatedRoutePriority", 1, 2_147_483_646),
        ("wireguardListeningPort", 1, 65535),
        ("wireguardListeningPortV6", 1, 65535),
        ("wireguardRoutingRulePriority", 1, 32765),
        ("bpfMaglevMaxEndpointsPerService", 1, 3000),
        ("bpfMaglevMaxServices", 1, 3000),
        ("iptablesMarkMask", 0, 4_294_967_295),
        ("logActionRateLimitBurst", 0, 9999),
    ];
    for (field, min, max) in bounded {
        ok(&felix("default", &format!("  {field}: {min}")));
        ok(&felix("default", &format!("  {field}: {max}")));
        bad(
            &felix("default", &format!("  {field}: {}", min - 1)),
            &[&format!("spec.{field}")],
        );
        bad(
            &felix("default", &format!("  {field}: {}", max + 1)),
            &[&format!("spec.{field}")],
        );
    }
    // Mark masks are usually written in hex; YAML reads 0x… as an integer.
    let r = ok(&felix("default", "  iptablesMarkMask: 0xffff0000"));
    assert_eq!(spec_json(&r)["iptablesMarkMask"], 0xffff_0000_u32);
    bad(&felix("default", "  ipipMTU: 1.5"), &["spec.ipipMTU"]);
    bad(&felix("default", "  ipipMTU: big"), &["spec.ipipMTU"]);
}

#[test]
fn felix_addresses_and_lists() {
    ok(&felix("default", "  natOutgoingAddress: 10.0.0.1"));
    bad(
        &felix("default", "  natOutgoingAddress: 'fd00::1'"),
        &["spec.natOutgoingAddress", "IPv4"],
    );
    bad(
        &felix("default", "  natOutgoingAddress: not-an-ip"),
        &["spec.natOutgoingAddress"],
    );
    bad(
        &felix("default", "  deviceRouteSourceAddress: 'fd00::1'"),
        &["spec.deviceRouteSourceAddress"],
    );
    ok(&felix(
        "default",
        "  deviceRouteSourceAddressIPv6: 'fd00::1'",
    ));
    bad(
        &felix("default", "  deviceRouteSourceAddressIPv6: 10.0.0.1"),
        &["spec.deviceRouteSourceAddressIPv6", "IPv6"],
    );
    ok(&felix(
        "default",
        "  externalNodesList: [1.1.1.1, 1.1.1.2/32, 1.1.3.0/23]",
    ));
    bad(
        &felix("default", "  externalNodesList: [foobar, 1.1.1.1]"),
        &["spec.externalNodesList[0]"],
    );
    bad(
        &felix("default", "  externalNodesList: ['abcd::1']"),
        &["spec.externalNodesList[0]"],
    );
    ok(&felix(
        "default",
        "  kubeNodePortRanges: ['3000:4000', 5000, '30000:32767']",
    ));
    bad(
        &felix("default", "  kubeNodePortRanges: [1, 2, 3, 4, 5, 6, 7, 8]"),
        &["spec.kubeNodePortRanges", "max 7"],
    );
    bad(
        &felix("default", "  kubeNodePortRanges: [testport]"),
        &["spec.kubeNodePortRanges[0]"],
    );
    bad(
        &felix("default", "  kubeNodePortRanges: ['4000:3000']"),
        &["spec.kubeNodePortRanges[0]"],
    );
    ok(&felix(
        "default",
        "  failsafeInboundHostPorts: [{protocol: TCP, port: 22}, {protocol: UDP, port: 68, net: 10.0.0.0/8}]",
    ));
    ok(&felix("default", "  failsafeOutboundHostPorts: []"));
    bad(
        &felix(
            "default",
            "  failsafeInboundHostPorts: [{protocol: jolly-UDP, port: 0}]",
        ),
        &["spec.failsafeInboundHostPorts[0].protocol"],
    );
    bad(
        &felix(
            "default",
            "  failsafeInboundHostPorts: [{protocol: TCP, port: 70000}]",
        ),
        &["spec.failsafeInboundHostPorts[0].port"],
    );
    bad(
        &felix("default", "  failsafeInboundHostPorts: [{protocol: TCP}]"),
        &["spec.failsafeInboundHostPorts[0]", "port"],
    );
    bad(
        &felix("default", "  iptablesNATOutgoingInterfaceFilter: cali@123"),
        &["spec.iptablesNATOutgoingInterfaceFilter"],
    );
    ok(&felix(
        "default",
        "  iptablesNATOutgoingInterfaceFilter: eth+",
    ));
    bad(
        &felix("default", "  openstackRegion: FOO"),
        &["spec.openstackRegion"],
    );
    bad(
        &felix(
            "default",
            "  openstackRegion: my-region-has-a-very-long-and-extremely-interesting-name",
        ),
        &["spec.openstackRegion"],
    );
    ok(&felix("default", "  openstackRegion: foo"));
    bad(
        &felix("default", "  bpfDataIfacePattern: '*'"),
        &["spec.bpfDataIfacePattern"],
    );
    ok(&felix(
        "default",
        "  bpfDataIfacePattern: '^(en.*|eth.*|tunl0$)'",
    ));
    bad(
        &felix("default", "  mtuIfacePattern: '(eth'"),
        &["spec.mtuIfacePattern"],
    );
    ok(&felix(
        "default",
        "  featureDetectOverride: 'SNATFullyRandom=true,MASQFullyRandom=false,RestoreSupportsLock='",
    ));
    bad(
        &felix("default", "  featureDetectOverride: 'SNATFullyRandom=yes'"),
        &["spec.featureDetectOverride"],
    );
    ok(&felix("default", "  logActionRateLimit: 10/second"));
    bad(
        &felix("default", "  logActionRateLimit: 0/second"),
        &["spec.logActionRateLimit"],
    );
    bad(
        &felix("default", "  logPrefix: 'bad!prefix'"),
        &["spec.logPrefix"],
    );
    ok(&felix("default", "  natPortRange: '32768:65000'"));
    bad(
        &felix("default", "  natPortRange: 'a:b'"),
        &["spec.natPortRange"],
    );
    ok(&felix("default", "  istioDSCPMark: 23"));
    ok(&felix("default", "  istioDSCPMark: AF11"));
    bad(
        &felix("default", "  istioDSCPMark: 64"),
        &["spec.istioDSCPMark"],
    );
    bad(
        &felix("default", "  bpfLogFilters: {'bad iface!': 'tcp'}"),
        &["spec.bpfLogFilters"],
    );
    bad(&felix("default", "  ipv6support: false"), &["ipv6support"]);
}

#[test]
fn felix_route_tables() {
    ok(&felix("default", "  routeTableRange: {min: 1, max: 250}"));
    ok(&felix("default", "  routeTableRange: {min: 8, max: 8}"));
    for (min, max) in [(0, 250), (-5, 250), (50, 45), (1, 253)] {
        bad(
            &felix(
                "default",
                &format!("  routeTableRange: {{min: {min}, max: {max}}}"),
            ),
            &["spec.routeTableRange", "1..250"],
        );
    }
    ok(&felix(
        "default",
        "  routeTableRanges: [{min: 1, max: 10000}]",
    ));
    ok(&felix(
        "default",
        "  routeTableRanges: [{min: 8, max: 8}, {min: 7, max: 7}]",
    ));
    bad(
        &felix("default", "  routeTableRanges: [{min: 0, max: 250}]"),
        &["spec.routeTableRanges[0].min"],
    );
    bad(
        &felix("default", "  routeTableRanges: [{min: 50, max: 45}]"),
        &["spec.routeTableRanges[0]", "greater than max"],
    );
    bad(
        &felix(
            "default",
            "  routeTableRanges: [{min: 1, max: 64424509440}]",
        ),
        &["spec.routeTableRanges"],
    );
    bad(
        &felix("default", "  routeTableRanges: [{min: 1, max: 65536}]"),
        &["spec.routeTableRanges", "too many"],
    );
    bad(
        &felix(
            "default",
            "  routeTableRanges: [{min: 1, max: 2}, {min: 3, max: 4}, {min: 5, max: 65536}]",
        ),
        &["too many"],
    );
    bad(
        &felix(
            "default",
            "  routeTableRange: {min: 1, max: 250}\n  routeTableRanges: [{min: 1, max: 250}]",
        ),
        &["spec.routeTableRange", "cannot both be set"],
    );
}

#[test]
fn felix_node_selector_scope() {
    ok(&felix("gpu-nodes", "  nodeSelector: role == 'gpu'"));
    bad(
        &felix("default", "  nodeSelector: role == 'gpu'"),
        &["spec.nodeSelector", "default"],
    );
    bad(
        &felix("node.worker-1", "  nodeSelector: role == 'gpu'"),
        &["spec.nodeSelector"],
    );
    bad(
        &felix("gpu-nodes", "  nodeSelector: role == "),
        &["spec.nodeSelector"],
    );
}

#[test]
fn felix_every_field_name_round_trips() {
    // Every declared JSON name is accepted by the parser and written back under the same name.
    use calico_model::resources::FelixConfigurationSpec;
    assert!(
        FelixConfigurationSpec::FIELD_NAMES.len() > 150,
        "the field table looks truncated"
    );
    let mut seen = std::collections::BTreeSet::new();
    for name in FelixConfigurationSpec::FIELD_NAMES {
        assert!(seen.insert(*name), "duplicate field {name}");
    }
}

// ------------------------------------------------------------------------------------------
// KubeControllersConfiguration
// ------------------------------------------------------------------------------------------

#[test]
fn kcc_rules() {
    let r = ok(&kind(
        "KubeControllersConfiguration",
        "default",
        "  controllers:\n    loadbalancer: {}\n    node:\n      reconcilerPeriod: 5m\n      leakGracePeriod: 15m\n      syncLabels: Enabled\n      hostEndpoint:\n        autoCreate: Enabled\n        templates:\n        - generateName: custom\n          interfaceCIDRs: [1.2.3.0/24]\n          nodeSelector: has(my-label)\n          labels: {key: value}",
    ));
    let s = spec_json(&r);
    assert_eq!(s["healthChecks"], "Enabled");
    assert_eq!(s["prometheusMetricsPort"], 9094);
    let r = ok(&kind(
        "KubeControllersConfiguration",
        "default",
        "  prometheusMetricsPort: 0",
    ));
    assert_eq!(
        spec_json(&r)["prometheusMetricsPort"],
        0,
        "an explicit 0 (metrics off) is kept"
    );
    ok(&kind(
        "KubeControllersConfiguration",
        "default",
        "  logSeverityScreen: Trace",
    ));
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  logSeverityScreen: None",
        ),
        &["spec.logSeverityScreen"],
    );
    assert_eq!(s["controllers"]["loadBalancer"]["assignIPs"], "AllServices");
    let r = ok(&kind("KubeControllersConfiguration", "default", ""));
    assert_eq!(
        spec_json(&r)["controllers"],
        serde_json::json!({}),
        "controllers is always written"
    );

    bad(
        &kind("KubeControllersConfiguration", "kcc", ""),
        &["metadata.name", "default"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  logSeverityScreen: Verbose",
        ),
        &["spec.logSeverityScreen"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  healthChecks: On",
        ),
        &["spec.healthChecks"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  etcdV3CompactionPeriod: ten",
        ),
        &["spec.etcdV3CompactionPeriod"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  prometheusMetricsPort: 70000",
        ),
        &["spec.prometheusMetricsPort"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  controllers:\n    node:\n      syncLabels: enabled",
        ),
        &["spec.controllers.node.syncLabels"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  controllers:\n    policy:\n      reconcilerPeriod: 5 minutes",
        ),
        &["spec.controllers.policy.reconcilerPeriod"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  controllers:\n    node:\n      hostEndpoint:\n        templates:\n        - interfaceCIDRs: [nope]",
        ),
        &["spec.controllers.node.hostEndpoint.templates[0].interfaceCIDRs[0]"],
    );
    bad(
        &kind(
            "KubeControllersConfiguration",
            "default",
            "  controllers:\n    loadBalancer:\n      assignIPs: Some",
        ),
        &["spec.controllers.loadBalancer.assignIPs"],
    );
}

// ------------------------------------------------------------------------------------------
// Node and ClusterInformation
// ------------------------------------------------------------------------------------------

fn node(spec: &str) -> String {
    kind("Node", "node-1", spec)
}

#[test]
fn node_rules() {
    ok(&node("  bgp:\n    ipv4Address: 1.2.3.4/32"));
    ok(&node("  bgp:\n    ipv6Address: 'aabb:aabb::ffff/128'"));
    ok(&node("  bgp:\n    ipv4IPIPTunnelAddr: 10.0.0.1"));
    ok(&node(""));
    bad(&node("  bgp: {}"), &["spec.bgp", "empty"]);
    bad(
        &node("  bgp:\n    ipv4Address: 'aabb:aabb::ffff/128'"),
        &["spec.bgp.ipv4Address"],
    );
    bad(
        &node("  bgp:\n    ipv6Address: 1.2.3.4/32"),
        &["spec.bgp.ipv6Address"],
    );
    bad(
        &node("  bgp:\n    ipv4Address: 1.2.3.4/32\n    routeReflectorClusterID: abcdef"),
        &["spec.bgp.routeReflectorClusterID"],
    );
    bad(
        &node("  bgp:\n    ipv4Address: 1.2.3.4/32\n    routeReflectorClusterID: 300.34.3.1"),
        &["spec.bgp.routeReflectorClusterID"],
    );
    ok(&node(
        "  bgp:\n    ipv4Address: 1.2.3.4/32\n    routeReflectorClusterID: 245.0.0.1\n    asNumber: 64512",
    ));
    ok(&node("  wireguard:\n    interfaceIPv4Address: 1.2.3.4"));
    bad(
        &node("  wireguard:\n    interfaceIPv4Address: foo.bar"),
        &["spec.wireguard.interfaceIPv4Address"],
    );
    ok(&node(
        "  ipv4VXLANTunnelAddr: 10.0.0.2\n  vxlanTunnelMACAddr: '66:2f:3a:aa:bb:cc'",
    ));
    bad(
        &node("  vxlanTunnelMACAddr: '66:2f:3a:aa:bb'"),
        &["spec.vxlanTunnelMACAddr"],
    );
    bad(
        &node("  ipv6VXLANTunnelAddr: 10.0.0.2"),
        &["spec.ipv6VXLANTunnelAddr"],
    );
    ok(&node(
        "  orchRefs:\n  - nodeName: node4\n    orchestrator: k8s\n  addresses:\n  - address: 10.0.0.5\n    type: InternalIP",
    ));
    bad(
        &node("  addresses:\n  - address: 10.0.0.5\n    type: PublicIP"),
        &["spec.addresses[0].type"],
    );
    bad(
        &node("  addresses:\n  - address: nope"),
        &["spec.addresses[0].address"],
    );
    bad(
        &node("  orchRefs:\n  - nodeName: node4"),
        &["spec.orchRefs[0].orchestrator"],
    );
}

#[test]
fn node_status_wireguard_keys() {
    let good =
        serde_json::json!({"wireguardPublicKey": "jlkVyQYooZYzI2wFfNhSZez5eWh44yfq1wKVjLvSXgY="});
    assert!(NodeStatus::from_value(&good).is_ok());
    let badk = serde_json::json!({"wireguardPublicKey": "foobar"});
    let errs = NodeStatus::from_value(&badk).expect_err("invalid key must be rejected");
    assert_eq!(errs[0].path, "status.wireguardPublicKey");
    let badc = serde_json::json!({"podCIDRs": ["10.0.0.0/33"]});
    assert_eq!(
        NodeStatus::from_value(&badc).expect_err("bad cidr")[0].path,
        "status.podCIDRs[0]"
    );
}

#[test]
fn clusterinformation_rules() {
    let r = ok(&kind(
        "ClusterInformation",
        "default",
        "  clusterGUID: 3b4c1a6b6c0b4d8d9c7a1c2e3f4a5b6c\n  clusterType: k8s,bgp\n  calicoVersion: v3.30.0\n  datastoreReady: true\n  variant: Calico",
    ));
    assert_eq!(spec_json(&r)["datastoreReady"], true);
    let r = ok(&kind(
        "ClusterInformation",
        "default",
        "  datastoreReady: false",
    ));
    assert_eq!(
        spec_json(&r)["datastoreReady"],
        false,
        "an explicit false is kept"
    );
    bad(
        &kind("ClusterInformation", "cluster", ""),
        &["metadata.name", "default"],
    );
    bad(
        &kind("ClusterInformation", "default", "  clusterGuid: x"),
        &["clusterGuid"],
    );
}

#[test]
fn kinds_reject_namespaces_and_unknown_top_level_fields() {
    let with_ns = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n  namespace: default\nspec:\n  cidr: 10.0.0.0/24\n";
    bad(with_ns, &["metadata.namespace"]);
    let extra = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\nspec: {}\nextra: 1\n";
    bad(extra, &["extra"]);
}

// ------------------------------------------------------------------------------------------
// Inputs of the upstream confd/BIRD golden scenarios (shared corpus): every document must load,
// default and validate, since the BIRD renderer consumes exactly these resources.
// ------------------------------------------------------------------------------------------

#[test]
fn bird_scenario_inputs_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/bird");
    if !dir.is_dir() {
        eprintln!(
            "SKIP bird_scenario_inputs_load: shared corpus not found at {}",
            dir.display()
        );
        return;
    }
    let mut scenarios: Vec<_> = std::fs::read_dir(&dir)
        .expect("read bird corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path().join("input.yaml")))
        .filter(|p| p.is_file())
        .collect();
    scenarios.sort();
    assert!(
        !scenarios.is_empty(),
        "no scenario inputs under {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for path in &scenarios {
        let text = std::fs::read_to_string(path).expect("read input.yaml");
        let docs = parse_documents(&text, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for doc in docs {
            count += 1;
            let res = AnyResource::from_value(doc)
                .map_err(|e| e.to_string())
                .and_then(|mut r| {
                    r.apply_defaults();
                    r.validate().map_err(|e| e.to_string())?;
                    Ok(r)
                });
            match res {
                Ok(r) => println!("PASS  {}  {}", path.display(), r.id()),
                Err(e) => {
                    println!("FAIL  {}  {e}", path.display());
                    failures.push(format!("{}: {e}", path.display()));
                }
            }
        }
    }
    assert!(count > 0);
    assert!(
        failures.is_empty(),
        "scenario inputs failed:\n{}",
        failures.join("\n")
    );
}

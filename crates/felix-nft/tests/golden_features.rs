//! Feature goldens end to end: the v3 inputs of `crates/felix-calc/tests/golden_features/`
//! through the real calculation graph into the renderer; the whole `table inet calico` text must
//! equal `tests/golden_features/<case>[.<variant>].nft`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p felix-nft --test golden_features` rewrites the goldens; review
//! the diff. Every case also asserts the rules a reader would look for (`feature_facts`), so a
//! regression cannot be hidden by regenerating, and every rendered table is checked by the real
//! `nft -c -f` inside a lab namespace (loud SKIP when not root or without nft).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use calico_model::AnyResource;
use felix_calc::{CalcGraph, Update};
use felix_nft::{Config, DesiredState, EndpointToHostAction, ProtoPort, render};

fn input_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../felix-calc/tests/golden_features")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden_features")
}

/// (golden name, input case, renderer config) for every case and config variant.
fn variants() -> Vec<(String, PathBuf, Config)> {
    let mut files: Vec<_> = std::fs::read_dir(input_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 14,
        "inputs missing in {}",
        input_dir().display()
    );
    let mut out = Vec::new();
    for f in files {
        let case = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".in.yaml")
            .to_string();
        match case.as_str() {
            "14-endpoint-to-host" => {
                for (suffix, action) in [
                    ("drop", EndpointToHostAction::Drop),
                    ("return", EndpointToHostAction::Return),
                    ("accept", EndpointToHostAction::Accept),
                ] {
                    let cfg = Config {
                        endpoint_to_host_action: action,
                        ..Config::default()
                    };
                    out.push((format!("{case}.{suffix}"), f.clone(), cfg));
                }
            }
            "12-host-endpoints" => {
                out.push((
                    format!("{case}.default-failsafes"),
                    f.clone(),
                    Config::default(),
                ));
                // Operator-set failsafes, one restricted to a peer net.
                let cfg = Config {
                    failsafe_inbound: vec![ProtoPort {
                        protocol: "tcp".into(),
                        port: 22,
                        net: Some("192.168.0.0/16".into()),
                    }],
                    failsafe_outbound: vec![ProtoPort::new("udp", 53)],
                    ..Config::default()
                };
                out.push((format!("{case}.custom-failsafes"), f.clone(), cfg));
            }
            _ => out.push((case, f, Config::default())),
        }
    }
    out
}

fn render_case(path: &Path, cfg: &Config) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut graph = CalcGraph::new("node1");
    for doc in calico_model::load::parse_documents(&text, &path.display().to_string()).unwrap() {
        graph
            .apply(Update::upsert(AnyResource::from_value(doc).unwrap()))
            .unwrap();
    }
    graph.apply(Update::InSync).unwrap();
    let mut state = DesiredState::new();
    for m in graph.flush() {
        state.apply(&m).unwrap();
    }
    render(&state, cfg).unwrap().full_script()
}

/// The chain `name`'s body (lines between `chain <name> {` and its closing brace).
/// The rules of chain `name`; a workload chain's final `goto` to its shared policy-dispatch
/// chain (`tp-…` / `fp-…`) is followed, so the facts read as one endpoint's rule sequence.
/// A chain's rules, following a final `goto` into a shared dispatch chain. `tw-<if>` /
/// `fw-<if>` name an endpoint's dispatch (to / from the workload): the chain its `to-wl` /
/// `from-wl` map element goes to.
fn chain<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    for (prefix, map) in [("tw-", "to-wl"), ("fw-", "from-wl")] {
        if let Some(iface) = name.strip_prefix(prefix) {
            let head = format!("  map {map} {{");
            let line = table
                .lines()
                .find(|l| l.starts_with(&head))
                .unwrap_or_else(|| panic!("map {map} missing"));
            let key = format!("\"{iface}\" : goto ");
            let at = line
                .find(&key)
                .unwrap_or_else(|| panic!("no {map} element for {iface}: {line}"));
            let target = line[at + key.len()..]
                .split([',', ' '])
                .next()
                .unwrap_or_default();
            return chain(table, target);
        }
    }
    let head = format!("  chain {name} {{");
    let mut lines = table.lines().skip_while(|l| *l != head);
    assert!(lines.next().is_some(), "chain {name} missing");
    let mut body: Vec<&str> = lines.take_while(|l| *l != "  }").map(str::trim).collect();
    let shared = body.last().and_then(|l| {
        let target = l.strip_prefix("goto ")?.split_whitespace().next()?;
        (target.starts_with("tp-") || target.starts_with("fp-")).then_some(target)
    });
    if let Some(target) = shared {
        body.pop();
        body.extend(chain(table, target));
    }
    body
}

fn chains_starting(table: &str, prefix: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| l.strip_prefix("  chain "))
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.trim_end_matches(" {").to_string())
        .collect()
}

fn has(lines: &[&str], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

fn assert_has(table: &str, chain_name: &str, needles: &[&str]) {
    let body = chain(table, chain_name);
    for n in needles {
        assert!(
            has(&body, n),
            "chain {chain_name} lacks `{n}`:\n{}",
            body.join("\n")
        );
    }
}

/// Index of the first line of `body` containing `needle`.
fn pos(body: &[&str], needle: &str) -> usize {
    body.iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not found in\n{}", body.join("\n")))
}

fn feature_facts(name: &str, t: &str) {
    // Every table: unknown cali* interfaces are dropped in both directions.
    assert!(has(&chain(t, "from-wl-dispatch"), "drop comment"), "{name}");
    assert!(has(&chain(t, "to-wl-dispatch"), "drop comment"), "{name}");
    match name {
        "01-protocols" => {
            let c = "pi-np/ns1/protocols";
            assert_has(
                t,
                c,
                &[
                    "meta l4proto tcp th dport 80 ",
                    "meta l4proto udp th dport 53 ",
                    "meta l4proto 132 th dport 3868 ",
                    "icmp type 8 ",
                    "icmp type 3 icmp code 4",
                    "icmpv6 type 128 icmpv6 code 0",
                    "meta l4proto 47 ",
                ],
            );
            assert_has(
                t,
                "po-np/ns1/protocols",
                &["meta l4proto != 136", "meta nfproto ipv4"],
            );
        }
        "02-ports" => assert_has(
            t,
            "pi-gnp/ports",
            &[
                "th dport { 80, 443, 8000-8080 }",
                "th dport != 8005-8006",
                "th sport 1024-65535",
                "th sport != 5353",
                "meta l4proto 132 th dport != 1-1023",
            ],
        ),
        "03-named-ports" => {
            let body = chain(t, "pi-gnp/named");
            // The named port and the numeric port are alternatives: one rule each.
            assert!(
                has(&body, "ip daddr . meta l4proto . th dport @n4-"),
                "{body:?}"
            );
            assert!(has(&body, "th dport 9000"), "{body:?}");
            assert!(
                has(&body, "ip saddr . meta l4proto . th sport @n4-"),
                "{body:?}"
            );
            // Every endpoint with a tcp `http` port, local and remote, in one set.
            assert!(t.contains("elements = { 10.0.0.1 . 6 . 8080, 10.0.1.2 . 6 . 80 }"));
            assert!(
                t.contains("elements = { 10.0.1.2 . 132 . 3868 }"),
                "sctp named port"
            );
            assert!(
                t.contains("elements = { 10.0.1.2 . 17 . 53 }"),
                "udp source named port"
            );
        }
        "04-nets" => {
            assert_has(
                t,
                "pi-gnp/nets",
                &[
                    "ip saddr 192.0.2.0/24 ip saddr != 192.0.2.128/25 meta mark set",
                    "ip saddr != 10.0.0.0/8 drop",
                ],
            );
            // nets [v4, v6] with notNets [v4 only]: upstream's filterNets drops the rule for
            // IPv6 (the negated field has no IPv6 CIDR), so no ip6 rule for it.
            assert!(
                !chain(t, "pi-gnp/nets")
                    .iter()
                    .any(|l| l.contains("2001:db8::/32")),
                "IPv6 variant of a rule whose notNets are IPv4-only"
            );
            assert_has(
                t,
                "po-gnp/nets",
                &[
                    "ip daddr { 198.51.100.7, 203.0.0.0/16 } meta mark set",
                    "ip6 daddr != fd00::/8 drop",
                ],
            );
        }
        "05-selectors" => {
            let body = chain(t, "pi-np/ns1/sel");
            // notSelector alone: a positive set of the namespace's endpoints minus the
            // selected ones (upstream scopes it to the namespace and folds the negation in).
            assert_eq!(
                body.iter().filter(|l| l.contains("ip saddr @s4-")).count(),
                2
            );
            assert!(
                t.contains("elements = { 10.0.1.2 }"),
                "frontend minus canary set"
            );
            assert!(
                t.contains("elements = { 10.0.0.1, 10.0.1.5 }"),
                "ns1 minus frontend set"
            );
        }
        "06-namespace-selector" => {
            assert_has(t, "pi-np/ns1/nssel", &["ip saddr @s4-"]);
            assert_has(t, "po-gnp/gnp-nssel", &["ip daddr @s4-"]);
            assert!(t.contains("elements = { 10.0.2.2 }"));
            assert!(
                t.contains("elements = { 10.0.2.2, 10.0.2.3 }"),
                "blue namespace set"
            );
        }
        "07-service-accounts" => {
            assert_has(t, "pi-np/ns1/sa", &["ip saddr @s4-"]);
            assert_has(t, "po-np/ns1/sa", &["ip daddr @s4-"]);
            assert!(t.contains("elements = { 10.0.1.2 }") && t.contains("elements = { 10.0.1.3 }"));
        }
        "08-tiers-pass-order" => {
            let body = chain(t, "tw-cali0001");
            let sec = pos(&body, "start of tier security");
            let a_first = pos(&body, "jump pi-gnp/security.a-first");
            let block = pos(&body, "jump pi-gnp/security.block-bad");
            let dflt = pos(&body, "start of tier default");
            let z = pos(&body, "jump pi-np/ns1/z-ordered");
            let a = pos(&body, "jump pi-np/ns1/a-unordered");
            let prof = pos(&body, "jump pri-kns.ns1");
            assert!(
                sec < a_first && a_first < block && block < dflt && dflt < z && z < a && a < prof
            );
            // security's default action is Pass: no end-of-tier drop between it and default.
            assert!(
                !body[block..dflt].iter().any(|l| l.contains("drop")),
                "{body:?}"
            );
            // default ends in Deny: a drop unless Pass between its last policy and profiles.
            assert!(body[a..prof].iter().any(|l| l.contains("drop")), "{body:?}");
            let pol = chain(t, "pi-gnp/security.block-bad");
            assert!(has(&pol, "log prefix \"calico-packet: \""), "{pol:?}");
            assert!(
                has(&pol, "meta mark set meta mark | 0x20000"),
                "Pass sets the pass mark: {pol:?}"
            );
        }
        "09-types" => {
            let tw = chain(t, "tw-cali0001");
            let fw = chain(t, "fw-cali0001");
            assert!(has(&tw, "pi-gnp/only-ingress") && !has(&tw, "pi-gnp/only-egress"));
            assert!(has(&fw, "po-gnp/only-egress") && !has(&fw, "po-gnp/only-ingress"));
        }
        "10-profiles" => {
            let tw = chain(t, "tw-cali0001");
            assert!(pos(&tw, "pri-kns.ns1") < pos(&tw, "pri-ksa.ns1.default"));
            // The missing profile is a deny-all.
            assert_eq!(chain(t, "pri-missing-profile").len(), 1);
            assert!(has(&chain(t, "pri-missing-profile"), "drop"));
        }
        "11-network-sets" => {
            assert!(t.contains("198.51.100.0/24") && t.contains("2001:db8:1::/48"));
            assert!(t.contains("192.0.2.10") && t.contains("203.0.113.0/24"));
            // A set with prefixes is an interval set (`c4-`); addresses only, a hash set.
            assert_has(t, "po-gnp/blocklist", &["ip daddr @c4-", "drop"]);
            assert!(
                t.lines()
                    .filter(|l| l.trim_start().starts_with("set c4-"))
                    .all(|l| l.contains("flags interval")),
                "{t}"
            );
            assert!(
                t.lines()
                    .filter(|l| l.trim_start().starts_with("set s4-"))
                    .all(|l| !l.contains("flags interval") && !l.contains('/')),
                "{t}"
            );
        }
        "12-host-endpoints.default-failsafes" | "12-host-endpoints.custom-failsafes" => {
            assert!(
                !chains_starting(t, "raw-fh-eth0").is_empty(),
                "untracked ingress chain"
            );
            assert!(
                !chains_starting(t, "mangle-fh-eth0").is_empty(),
                "preDNAT chain"
            );
            assert!(!chains_starting(t, "fhfw-eth0").is_empty(), "forward chain");
            assert_has(
                t,
                "fh-eth0",
                &["jump failsafe-in", "pi-gnp/normal", "pri-hep-profile"],
            );
            assert_has(
                t,
                "raw-fh-eth0",
                &["jump raw-failsafe-in", "notrack accept"],
            );
            assert_has(
                t,
                "raw-th-eth0",
                &["jump raw-failsafe-out", "notrack accept"],
            );
            assert_has(t, "mangle-fh-eth0", &["jump failsafe-in", "pi-gnp/prednat"]);
            assert_has(t, "fhfw-eth0", &["pi-gnp/forward"]);
            assert_has(t, "thfw-eth0", &["po-gnp/forward"]);
            // preDNAT never applies to egress.
            assert!(!t.contains("jump po-gnp/prednat"));
            if name.ends_with("custom-failsafes") {
                assert_has(
                    t,
                    "failsafe-in",
                    &["ip saddr 192.168.0.0/16 meta l4proto tcp th dport 22 accept"],
                );
                assert!(!has(&chain(t, "failsafe-in"), "2379"));
            } else {
                assert_has(t, "failsafe-in", &["2379", "6443"]);
            }
        }
        "13-anti-spoofing" => {
            assert_has(
                t,
                "as-cali0001",
                &["10.0.0.1", "192.0.2.0/24", "fd00:1::1", "spoofed source"],
            );
            let as2 = chain(t, "as-cali0002");
            assert!(has(&as2, "10.0.0.2") && !has(&as2, "192.0.2.0/24"));
        }
        "14-endpoint-to-host.drop" => {
            assert!(chain(t, "wl-to-host").last().unwrap().starts_with("drop"))
        }
        "14-endpoint-to-host.accept" => {
            assert!(chain(t, "wl-to-host").last().unwrap().starts_with("accept"))
        }
        "14-endpoint-to-host.return" => {
            assert!(chain(t, "wl-to-host").last().unwrap().starts_with("return"))
        }
        other => panic!("no facts for {other}"),
    }
}

#[test]
fn feature_tables() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    if update {
        std::fs::create_dir_all(golden_dir()).unwrap();
    }
    let mut failures = Vec::new();
    for (name, input, cfg) in variants() {
        let text = render_case(&input, &cfg);
        feature_facts(&name, &text);
        let path = golden_dir().join(format!("{name}.nft"));
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(want) if want == text => {}
            Ok(_) => failures.push(format!(
                "{name}: table differs from {} (UPDATE_GOLDEN=1 and review)\n{text}",
                path.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run with UPDATE_GOLDEN=1)",
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn feature_tables_pass_nft_check() {
    use calico_linux::testlab::{LabNs, binary_in_path, lab_available};
    if !lab_available("feature_tables_pass_nft_check") {
        return;
    }
    if !binary_in_path("nft") {
        eprintln!("\n*** SKIP feature_tables_pass_nft_check: `nft` not installed ***\n");
        return;
    }
    let ns = LabNs::new("ftchk").unwrap();
    let dir = tempdir("check");
    for (name, input, cfg) in variants() {
        nft_check(&ns, &dir, &name, &render_case(&input, &cfg));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nft -c -f` of `script` inside `ns` must succeed.
fn nft_check(ns: &calico_linux::testlab::LabNs, dir: &std::path::Path, name: &str, script: &str) {
    let path = dir.join(format!("{name}.nft"));
    std::fs::write(&path, script).unwrap();
    let out = ns
        .exec(&["nft", "-c", "-f", path.to_str().unwrap()])
        .unwrap();
    assert!(
        out.status.success(),
        "nft -c rejected {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Upstream (`felix/rules` `filterNets`) skips a rule for an IP version when its nets or
/// notNets had CIDRs but none of that version. Here such a rule renders as an unconditional,
/// family-neutral verdict: `Deny destination.notNets [fd00::/8]` becomes a bare `drop` that also
/// drops every IPv4 packet (and the IPv6 packets the rule was meant to let through to later
/// rules). Found by the feature goldens (04-nets); fixed in felix-nft `rules::nets_for`.
#[test]
fn single_family_not_nets_rule_is_skipped_for_the_other_family() {
    let yaml = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: v6-only}
spec:
  selector: all()
  types: [Egress]
  egress:
    - {action: Deny, destination: {notNets: ["fd00::/8"]}}
    - {action: Allow}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w1, namespace: ns1}
spec: {orchestrator: k8s, node: node1, pod: w1, endpoint: eth0, interfaceName: cali0001, ipNetworks: [10.0.0.1/32]}
"#;
    let dir = tempdir("v6only");
    let input = dir.join("v6-only.in.yaml");
    std::fs::write(&input, yaml).unwrap();
    let t = render_case(&input, &Config::default());
    let body = chain(&t, "po-gnp/v6-only");
    assert!(
        !body.iter().any(|l| l.starts_with("drop")),
        "unconditional drop rendered for the IPv4 side:\n{}",
        body.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("felix-nft-features-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// IPv6 sets exist only once some set has an IPv6 member. Before that, IPv6 variants render
/// as if the sets were empty: a positive selector (or named port) cannot match, and a negated
/// one always does, which must still only apply to IPv6 packets. With an IPv6 member the full
/// rendering returns. Both tables pass `nft -c` where a lab is available.
#[test]
fn ipv6_sets_only_with_ipv6_members() {
    let policy = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: neg}
spec:
  selector: all()
  types: [Ingress]
  ingress:
    - {action: Deny, source: {notSelector: "app == 'trusted'"}}
    - {action: Allow, protocol: TCP, source: {selector: "app == 'trusted'"}}
    - {action: Allow, protocol: TCP, destination: {ports: [http]}}
    - {action: Allow, protocol: TCP, destination: {ports: [81, http]}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: w1, namespace: ns1, labels: {app: trusted}}
spec:
  orchestrator: k8s
  node: node1
  pod: w1
  endpoint: eth0
  interfaceName: cali0001
  ports: [{name: http, protocol: TCP, port: 80}]
"#;
    let dir = tempdir("v6sets");
    let render_with = |nets: &str| {
        let input = dir.join(format!("v6sets-{}.in.yaml", nets.len()));
        std::fs::write(&input, format!("{policy}  ipNetworks: [{nets}]\n")).unwrap();
        render_case(&input, &Config::default())
    };
    let v4 = render_with("10.0.0.1/32");
    let body = chain(&v4, "pi-gnp/neg");
    assert!(!v4.contains("set s6-") && !v4.contains("set n6-"), "{v4}");
    assert!(
        !body.iter().any(|l| l.contains("ip6")),
        "{}",
        body.join("\n")
    );
    // notSelector: the IPv6 variant is an IPv6-only drop.
    assert!(
        body.iter()
            .any(|l| l.contains("ip saddr != @s4-") && l.contains("drop"))
    );
    assert!(
        body.iter().any(|l| l.starts_with("meta nfproto ipv6 drop")),
        "{}",
        body.join("\n")
    );
    // The numeric alternative of [81, http] stays for IPv6 (it renders family-neutral).
    assert!(body.iter().any(|l| l.contains("th dport 81")));
    let dual = render_with("10.0.0.1/32, 'fd00::1/128'");
    let body6 = chain(&dual, "pi-gnp/neg");
    assert!(
        dual.contains("set s6-") && dual.contains("set n6-"),
        "{dual}"
    );
    assert!(body6.iter().any(|l| l.contains("ip6 saddr != @s6-")));
    assert!(body6.iter().any(|l| l.contains("ip6 saddr @s6-")));
    assert!(
        body6
            .iter()
            .any(|l| l.contains("ip6 daddr . meta l4proto . th dport @n6-"))
    );
    assert!(!body6.iter().any(|l| l.starts_with("meta nfproto ipv6")));

    use calico_linux::testlab::{LabNs, binary_in_path, lab_available};
    if lab_available("ipv6_sets_only_with_ipv6_members") && binary_in_path("nft") {
        let ns = LabNs::new("v6chk").unwrap();
        nft_check(&ns, &dir, "v4", &v4);
        nft_check(&ns, &dir, "dual", &dual);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

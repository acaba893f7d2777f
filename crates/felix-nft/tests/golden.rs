//! Golden files: scenarios (calculation-graph messages in) → rendered table / transaction out.
//! `UPDATE_GOLDEN=1 cargo test -p felix-nft --test golden` rewrites them; review the diff.
//! Every golden is also checked by the real `nft -c -f` inside a lab namespace (loud SKIP when
//! not root or nft is missing), as are random rule combinations.

#![allow(clippy::cloned_ref_to_slice_refs)] // `&[id.clone()]` reads better in scenarios

mod common;

use std::path::PathBuf;

use common::*;
use felix_calc::msg::*;
use felix_nft::{Config, DesiredState, EndpointToHostAction, ProtoPort, render};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.nft"))
}

fn check_golden(name: &str, text: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        text, want,
        "golden {name} differs; rerun with UPDATE_GOLDEN=1 and review"
    );
}

fn full(state: &DesiredState, cfg: &Config) -> String {
    render(state, cfg).expect("render").full_script()
}

/// Scenarios: name → (state, config).
fn scenarios() -> Vec<(&'static str, DesiredState, Config)> {
    let cfg = Config::default();
    let mut out = Vec::new();

    out.push(("empty", DesiredState::new(), cfg.clone()));

    // Kubernetes default: namespace profile allows all, SA profile has no rules.
    out.push((
        "k8s_profiles",
        state(&[
            profile("kns.default", vec![rule("allow")], vec![rule("allow")]),
            profile("ksa.default.default", vec![], vec![]),
            wep(
                "cali1a",
                &["10.65.0.2/32"],
                &["kns.default", "ksa.default.default"],
                vec![],
            ),
        ]),
        cfg.clone(),
    ));

    // Every rule feature, two tiers (first default Pass), Log/Allow/Deny/Pass.
    let p_sec = pid("security", "security.block", "");
    let p_web = pid("default", "knp.default.web", "default");
    let p_all = pid("default", "default.allow-icmp", "");
    let rules_in = vec![
        Rule {
            action: "log".into(),
            ..tcp(&[(22, 22)])
        },
        Rule {
            action: "deny".into(),
            src_net: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
            not_src_net: vec!["192.0.2.7/32".into()],
            ..tcp(&[(22, 22)])
        },
        Rule {
            action: "next-tier".into(),
            src_ip_set_ids: vec!["s:ns-kube-system".into()],
            ..Default::default()
        },
        Rule {
            action: "deny".into(),
            protocol: Some(Protocol::Name("udp".into())),
            not_dst_ports: vec![PortRange {
                first: 53,
                last: 53,
            }],
            not_src_ip_set_ids: vec!["s:trusted".into()],
            ..Default::default()
        },
    ];
    let web_in = vec![
        Rule {
            action: "allow".into(),
            src_ip_set_ids: vec!["s:app-frontend".into()],
            dst_named_port_ip_set_ids: vec!["n:http".into()],
            ..tcp(&[(8080, 8080), (9000, 9100)])
        },
        Rule {
            action: "allow".into(),
            ip_version: Some(6),
            not_protocol: Some(Protocol::Name("tcp".into())),
            dst_net: vec!["fd00::/64".into()],
            ..Default::default()
        },
        Rule {
            action: "deny".into(),
            protocol: Some(Protocol::Number(132)),
            src_ports: vec![PortRange {
                first: 1000,
                last: 2000,
            }],
            ..Default::default()
        },
    ];
    let web_out = vec![
        Rule {
            action: "allow".into(),
            dst_ip_set_ids: vec!["s:db".into()],
            not_dst_ip_set_ids: vec!["s:db-canary".into()],
            ..tcp(&[(5432, 5432)])
        },
        Rule {
            action: "allow".into(),
            protocol: Some(Protocol::Name("udp".into())),
            dst_ports: vec![PortRange {
                first: 53,
                last: 53,
            }],
            ..Default::default()
        },
    ];
    let icmp_in = vec![
        Rule {
            action: "allow".into(),
            protocol: Some(Protocol::Name("icmp".into())),
            icmp: Some(IcmpMatch {
                icmp_type: 8,
                code: Some(0),
            }),
            ..Default::default()
        },
        Rule {
            action: "allow".into(),
            protocol: Some(Protocol::Name("icmpv6".into())),
            icmp: Some(IcmpMatch {
                icmp_type: 128,
                code: None,
            }),
            ..Default::default()
        },
        Rule {
            action: "deny".into(),
            protocol: Some(Protocol::Name("icmp".into())),
            not_icmp: Some(IcmpMatch {
                icmp_type: 3,
                code: Some(4),
            }),
            ..Default::default()
        },
        Rule {
            action: "deny".into(),
            protocol: Some(Protocol::Name("icmp".into())),
            not_icmp: Some(IcmpMatch {
                icmp_type: 0,
                code: None,
            }),
            ..Default::default()
        },
    ];
    let policy_rules = state(&[
        ipset(
            "s:ns-kube-system",
            IpSetType::Net,
            &["10.65.9.0/26", "10.65.9.5/32"],
        ),
        ipset("s:trusted", IpSetType::Net, &["10.0.0.0/8", "fd00::/8"]),
        ipset(
            "s:app-frontend",
            IpSetType::Net,
            &["10.65.0.3/32", "fd00::3/128"],
        ),
        ipset("s:db", IpSetType::Net, &["10.65.1.9/32"]),
        ipset("s:db-canary", IpSetType::Net, &[]),
        ipset(
            "n:http",
            IpSetType::IpAndPort,
            &["10.65.0.2,tcp:80", "fd00::2,tcp:80", "10.65.0.4,udp:8053"],
        ),
        policy(&p_sec, rules_in, vec![]),
        policy(&p_web, web_in, web_out),
        policy(&p_all, icmp_in, vec![]),
        profile("kns.default", vec![rule("allow")], vec![rule("allow")]),
        wep(
            "cali1a",
            &["10.65.0.2/32"],
            &["kns.default"],
            vec![
                tier("security", "Pass", &[p_sec.clone()], &[]),
                tier(
                    "default",
                    "Deny",
                    &[p_web.clone(), p_all.clone()],
                    &[p_web.clone()],
                ),
            ],
        ),
    ]);
    out.push(("policy_rules", policy_rules.clone(), cfg.clone()));
    // The same with ipv6Support off: no IPv6 sets, no IPv6 variants of rules.
    out.push((
        "policy_rules_ipv6_off",
        policy_rules,
        Config {
            ipv6: false,
            ..cfg.clone()
        },
    ));

    // Anti-spoofing with IPv6 and allowSpoofedSourcePrefixes; an admin-down endpoint.
    let mut s = state(&[wep("cali2b", &["10.65.0.5/32"], &[], vec![])]);
    if let Some(ep) = s.workloads.values_mut().next() {
        ep.ipv6_nets = vec!["fd00::5/128".into()];
        ep.allow_spoofed_source_prefixes = vec!["198.51.100.0/24".into()];
    }
    s.apply(&wep("cali3c", &["10.65.0.6/32"], &[], vec![]))
        .expect("apply");
    if let Some(ep) = s.workloads.get_mut(&wep_id("cali3c")) {
        ep.state = "down".into();
    }
    out.push(("antispoof_admin_down", s, cfg.clone()));

    // Missing profile and policy: fail closed; DefaultEndpointToHostAction=Accept; two
    // interface prefixes; conntrack invalid check disabled.
    let ghost = pid("default", "default.ghost", "");
    out.push((
        "fail_closed_and_config",
        state(&[wep(
            "cali4d",
            &["10.65.0.7/32"],
            &["kns.missing"],
            vec![tier("default", "Deny", &[ghost.clone()], &[ghost])],
        )]),
        Config {
            endpoint_to_host_action: EndpointToHostAction::Accept,
            workload_prefixes: vec!["cali".into(), "tap".into()],
            disable_conntrack_invalid_check: true,
            allow_ipip_from_workloads: true,
            ..cfg.clone()
        },
    ));

    // Host endpoint: normal, forward, untracked and preDNAT tiers; failsafe with a CIDR.
    let p_host = pid("default", "default.host-ssh", "");
    let p_fwd = pid("default", "default.fwd", "");
    let p_untr = pid("default", "default.untracked", "");
    let p_pre = pid("default", "default.prednat", "");
    let mut hs = state(&[
        policy(
            &p_host,
            vec![Rule {
                action: "allow".into(),
                ..tcp(&[(22, 22)])
            }],
            vec![rule("allow")],
        ),
        policy(&p_fwd, vec![rule("deny")], vec![rule("allow")]),
        policy(
            &p_untr,
            vec![Rule {
                action: "allow".into(),
                ..tcp(&[(11211, 11211)])
            }],
            vec![Rule {
                action: "allow".into(),
                ..tcp(&[(11211, 11211)])
            }],
        ),
        policy(
            &p_pre,
            vec![Rule {
                action: "deny".into(),
                src_net: vec!["203.0.113.0/24".into()],
                ..Default::default()
            }],
            vec![],
        ),
    ]);
    hs.apply(&ToDataplane::HostEndpointUpdate(HostEndpointUpdate {
        id: HostEndpointId {
            endpoint_id: "node1-eth0".into(),
        },
        endpoint: HostEndpoint {
            name: "eth0".into(),
            profile_ids: vec![],
            tiers: vec![tier(
                "default",
                "Deny",
                &[p_host.clone()],
                &[p_host.clone()],
            )],
            untracked_tiers: vec![tier(
                "default",
                "Deny",
                &[p_untr.clone()],
                &[p_untr.clone()],
            )],
            pre_dnat_tiers: vec![tier("default", "Deny", &[p_pre.clone()], &[])],
            forward_tiers: vec![tier("default", "Deny", &[p_fwd.clone()], &[p_fwd.clone()])],
            expected_ipv4_addrs: vec!["10.99.0.1".into()],
            expected_ipv6_addrs: vec![],
        },
    }))
    .expect("apply");
    hs.apply(&ToDataplane::HostEndpointUpdate(HostEndpointUpdate {
        id: HostEndpointId {
            endpoint_id: "node1-eth1".into(),
        },
        endpoint: HostEndpoint {
            name: "eth1".into(),
            profile_ids: vec![],
            tiers: vec![],
            untracked_tiers: vec![],
            pre_dnat_tiers: vec![],
            forward_tiers: vec![],
            expected_ipv4_addrs: vec![],
            expected_ipv6_addrs: vec![],
        },
    }))
    .expect("apply");
    let mut fs_cfg = cfg.clone();
    fs_cfg.failsafe_inbound.push(ProtoPort {
        protocol: "tcp".into(),
        port: 10250,
        net: Some("10.99.0.0/24".into()),
    });
    out.push(("host_endpoints", hs, fs_cfg));
    out
}

#[test]
fn golden_tables() {
    for (name, st, cfg) in scenarios() {
        check_golden(name, &full(&st, &cfg));
    }
}

/// An endpoint's label change reaches the dataplane as an IP set delta (and possibly a new
/// tier list for the endpoint). The transaction must not grow with the number of policies.
fn label_change_script(n_policies: usize) -> String {
    let mut msgs = vec![ipset("s:role-db", IpSetType::Net, &["10.65.0.2/32"])];
    let ids: Vec<PolicyId> = (0..n_policies)
        .map(|i| pid("default", &format!("default.p{i}"), ""))
        .collect();
    for id in &ids {
        msgs.push(policy(
            id,
            vec![Rule {
                action: "allow".into(),
                src_ip_set_ids: vec!["s:role-db".into()],
                ..tcp(&[(5432, 5432)])
            }],
            vec![],
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        msgs.push(wep(
            &format!("cali{i:x}"),
            &[&format!("10.65.{}.{}/32", i / 200, i % 200 + 2)],
            &[],
            vec![tier("default", "Deny", std::slice::from_ref(id), &[])],
        ));
    }
    let mut st = state(&msgs);
    let cfg = Config::default();
    let before = render(&st, &cfg).expect("render");
    st.apply(&ToDataplane::IpSetDeltaUpdate(IpSetDeltaUpdate {
        id: "s:role-db".into(),
        added_members: vec!["10.65.0.3/32".into()],
        removed_members: vec!["10.65.0.2/32".into()],
    }))
    .expect("delta");
    render(&st, &cfg)
        .expect("render")
        .diff_script(&before)
        .expect("incremental")
}

#[test]
fn label_change_transaction_does_not_grow_with_policies() {
    let small = label_change_script(3);
    let large = label_change_script(300);
    assert_eq!(small, large);
    check_golden("incremental_label_change", &small);
}

#[test]
fn incremental_endpoint_add_and_remove() {
    let cfg = Config::default();
    let base = [
        profile("kns.default", vec![rule("allow")], vec![rule("allow")]),
        wep("cali1a", &["10.65.0.2/32"], &["kns.default"], vec![]),
    ];
    let before = render(&state(&base), &cfg).expect("render");
    let mut more = base.to_vec();
    more.push(wep("cali2b", &["10.65.0.3/32"], &["kns.default"], vec![]));
    let after = render(&state(&more), &cfg).expect("render");
    let add = after.diff_script(&before).expect("incremental");
    let remove = before.diff_script(&after).expect("incremental");
    check_golden("incremental_endpoint_add", &add);
    check_golden("incremental_endpoint_remove", &remove);
    // Applying add then remove lands where we started.
    assert_eq!(before.diff_script(&before).as_deref(), Some(""));
}

// ---- nft -c checks in a lab namespace ----

mod lab {
    use super::*;
    use calico_linux::testlab::{LabNs, binary_in_path, lab_available};

    fn nft_ready(test: &str) -> bool {
        if !lab_available(test) {
            return false;
        }
        if !binary_in_path("nft") {
            eprintln!("SKIP {test}: `nft` not installed");
            return false;
        }
        true
    }

    /// `nft -c -f` (check mode: parse and validate against the kernel, commit nothing).
    fn nft_check(ns: &LabNs, name: &str, script: &str) {
        let path =
            std::env::temp_dir().join(format!("felix-nft-check-{}-{name}.nft", std::process::id()));
        std::fs::write(&path, script).expect("write");
        let out = ns
            .exec(&["nft", "-c", "-f", path.to_str().expect("utf8 path")])
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft -c rejected {name}:\n{}\n--- script ---\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn every_golden_passes_nft_check() {
        if !nft_ready("every_golden_passes_nft_check") {
            return;
        }
        let ns = LabNs::new("fnchk").expect("lab ns");
        for (name, st, cfg) in scenarios() {
            nft_check(&ns, name, &full(&st, &cfg));
        }
        // Incremental scripts are checked on top of the table they apply to.
        let cfg = Config::default();
        let base = [wep("cali1a", &["10.65.0.2/32"], &[], vec![])];
        let before = render(&state(&base), &cfg).expect("render");
        let mut more = base.to_vec();
        more.push(wep("cali2b", &["10.65.0.3/32"], &[], vec![]));
        let after = render(&state(&more), &cfg).expect("render");
        let script = format!(
            "{}{}",
            before.full_script(),
            after.diff_script(&before).expect("incremental")
        );
        nft_check(&ns, "incremental", &script);
    }

    /// A tiny deterministic generator (xorshift) of rule combinations.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self) -> bool {
            self.pick(3) == 0
        }
    }

    fn random_rule(g: &mut Gen) -> Rule {
        let actions = ["allow", "deny", "log", "next-tier"];
        let protos = ["tcp", "udp", "sctp", "icmp", "icmpv6", "udplite"];
        let mut r = rule(actions[g.pick(4) as usize]);
        let proto = if g.pick(4) != 0 {
            Some(protos[g.pick(protos.len() as u64) as usize])
        } else {
            None
        };
        r.protocol = proto.map(|p| Protocol::Name(p.into()));
        let has_ports = matches!(proto, Some("tcp" | "udp" | "sctp" | "udplite"));
        let ports = |g: &mut Gen| {
            (0..1 + g.pick(3))
                .map(|_| {
                    let a = 1 + g.pick(60000) as u16;
                    PortRange {
                        first: a,
                        last: if g.chance() { a + 10 } else { a },
                    }
                })
                .collect::<Vec<_>>()
        };
        if has_ports {
            if g.chance() {
                r.dst_ports = ports(g);
            }
            if g.chance() {
                r.src_ports = ports(g);
            }
            if g.chance() {
                r.not_dst_ports = ports(g);
            }
            if g.chance() {
                r.dst_named_port_ip_set_ids = vec!["n:np1".into()];
            }
            if g.chance() {
                r.not_src_named_port_ip_set_ids = vec!["n:np1".into()];
            }
        }
        if matches!(proto, Some("icmp" | "icmpv6")) && g.chance() {
            let m = IcmpMatch {
                icmp_type: g.pick(200) as u8,
                code: if g.chance() {
                    Some(g.pick(16) as u8)
                } else {
                    None
                },
            };
            if g.chance() {
                r.not_icmp = Some(m);
            } else {
                r.icmp = Some(m);
            }
        }
        if proto.is_none() && g.chance() {
            r.not_protocol = Some(Protocol::Number(g.pick(250) as u8));
        }
        let nets = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.168.1.1/32",
            "fd00::/8",
            "2001:db8::1/128",
        ];
        if g.chance() {
            r.src_net = (0..1 + g.pick(3))
                .map(|_| nets[g.pick(5) as usize].to_string())
                .collect();
        }
        if g.chance() {
            r.not_dst_net = (0..1 + g.pick(3))
                .map(|_| nets[g.pick(5) as usize].to_string())
                .collect();
        }
        if g.chance() {
            r.src_ip_set_ids = vec!["s:sel1".into()];
        }
        if g.chance() {
            r.not_dst_ip_set_ids = vec!["s:sel2".into()];
        }
        if g.chance() {
            r.ip_version = Some(if g.chance() { 6 } else { 4 });
        }
        r
    }

    #[test]
    fn random_rule_combinations_pass_nft_check() {
        if !nft_ready("random_rule_combinations_pass_nft_check") {
            return;
        }
        let ns = LabNs::new("fnrnd").expect("lab ns");
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for round in 0..8 {
            let mut msgs = vec![
                ipset(
                    "s:sel1",
                    IpSetType::Net,
                    &["10.65.0.0/26", "10.65.0.9/32", "fd00::1"],
                ),
                ipset("s:sel2", IpSetType::Ip, &["10.65.0.4"]),
                ipset(
                    "n:np1",
                    IpSetType::IpAndPort,
                    &["10.65.0.2,tcp:80", "fd00::2,udp:53"],
                ),
            ];
            let mut ids = Vec::new();
            for p in 0..6 {
                let id = pid("default", &format!("default.r{round}-{p}"), "");
                let inbound = (0..1 + g.pick(6)).map(|_| random_rule(&mut g)).collect();
                let outbound = (0..g.pick(4)).map(|_| random_rule(&mut g)).collect();
                msgs.push(policy(&id, inbound, outbound));
                ids.push(id);
            }
            msgs.push(wep(
                "cali1a",
                &["10.65.0.2/32"],
                &[],
                vec![
                    tier("t1", "Pass", &ids[..3], &ids[..2]),
                    tier("default", "Deny", &ids[3..], &ids[2..]),
                ],
            ));
            let st = state(&msgs);
            nft_check(
                &ns,
                &format!("random{round}"),
                &full(&st, &Config::default()),
            );
        }
    }
}

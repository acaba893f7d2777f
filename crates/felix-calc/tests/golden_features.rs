//! Feature goldens: one case per policy feature, v3 resources in, the calculation graph's
//! `ToDataplane` messages out.
//!
//! Each `tests/golden_features/<case>.in.yaml` is a multi-document v3 YAML file. The resources
//! are applied in file order on node `node1`, then `InSync`, then the graph is flushed once. The
//! flushed messages (IP set IDs replaced by readable descriptions, as in `tests/golden.rs`) must
//! equal `<case>.calc.yaml`. `UPDATE_GOLDEN=1 cargo test -p felix-calc --test golden_features`
//! rewrites the expectations; review the diff before committing.
//!
//! The same inputs feed `crates/felix-nft/tests/golden_features.rs` (rendered nft text), so one
//! input file covers a feature end to end. Besides the golden comparison, every case asserts a
//! few facts a reader would check by hand (see `feature_facts`), so a golden regenerated over a
//! regression still fails.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use calico_model::AnyResource;
use felix_calc::{CalcGraph, ToDataplane, Update};
use serde_json::Value;

fn case_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden_features")
}

fn cases() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(case_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    files.sort();
    files
}

fn case_name(p: &Path) -> String {
    let f = p.file_name().unwrap().to_string_lossy();
    f.trim_end_matches(".in.yaml").to_string()
}

/// Apply every resource of the case and flush once.
fn run(path: &Path) -> (CalcGraph, Vec<ToDataplane>) {
    let text = std::fs::read_to_string(path).unwrap();
    let docs = calico_model::load::parse_documents(&text, &path.display().to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut graph = CalcGraph::new("node1");
    for doc in docs {
        let res = AnyResource::from_value(doc)
            .unwrap_or_else(|e| panic!("{}: bad resource: {e}", path.display()));
        graph
            .apply(Update::upsert(res))
            .unwrap_or_else(|e| panic!("{}: apply: {e}", path.display()));
    }
    graph.apply(Update::InSync).unwrap();
    let msgs = graph.flush();
    (graph, msgs)
}

fn readable(graph: &CalcGraph, msgs: &[ToDataplane]) -> Value {
    let mut names = HashMap::new();
    for m in msgs {
        if let ToDataplane::IpSetUpdate(u) = m {
            names.insert(u.id.clone(), graph.ip_set_description(&u.id).unwrap());
        }
    }
    let mut v = serde_json::to_value(msgs).unwrap();
    substitute(&mut v, &names);
    v
}

fn substitute(v: &mut Value, names: &HashMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(d) = names.get(s.as_str()) {
                *s = d.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, names)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, names)),
        _ => {}
    }
}

/// The messages of one kind, as JSON (`kind` is the enum variant name).
fn of_kind<'a>(v: &'a Value, kind: &str) -> Vec<&'a Value> {
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.get(kind))
        .collect()
}

fn policy<'a>(v: &'a Value, name: &str) -> &'a Value {
    of_kind(v, "ActivePolicyUpdate")
        .into_iter()
        .find(|p| p["id"]["name"] == name)
        .unwrap_or_else(|| panic!("policy {name} not active"))
}

fn wep<'a>(v: &'a Value, iface: &str) -> &'a Value {
    of_kind(v, "WorkloadEndpointUpdate")
        .into_iter()
        .find(|w| w["endpoint"]["name"] == iface)
        .unwrap_or_else(|| panic!("endpoint {iface} not sent"))
}

fn ipset_members(v: &Value, description: &str) -> Vec<String> {
    of_kind(v, "IpSetUpdate")
        .into_iter()
        .find(|s| s["id"] == description)
        .unwrap_or_else(|| panic!("ip set {description} not sent; sets: {:?}", sets(v)))["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

fn sets(v: &Value) -> Vec<String> {
    of_kind(v, "IpSetUpdate")
        .into_iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn tier_names(w: &Value) -> Vec<String> {
    w["endpoint"]["tiers"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn names_in(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Hand-checkable facts per feature, independent of the golden text.
fn feature_facts(case: &str, v: &Value) {
    match case {
        "01-protocols" => {
            let p = policy(v, "protocols");
            let r = &p["policy"]["inbound_rules"];
            assert_eq!(r[2]["protocol"], "sctp");
            assert_eq!(r[2]["dst_ports"][0]["first"], 3868);
            assert_eq!(r[4]["icmp"]["type"], 3);
            assert_eq!(r[4]["icmp"]["code"], 4);
            assert_eq!(r[6]["protocol"], 47);
            assert_eq!(r[7]["not_icmp"]["type"], 0);
            assert_eq!(p["policy"]["outbound_rules"][0]["not_protocol"], "udplite");
        }
        "02-ports" => {
            let r = &policy(v, "ports")["policy"]["inbound_rules"];
            assert_eq!(r[0]["dst_ports"].as_array().unwrap().len(), 3);
            assert_eq!(r[0]["dst_ports"][2]["last"], 8080);
            assert_eq!(r[0]["not_dst_ports"][0]["first"], 8005);
            assert_eq!(r[1]["src_ports"][0]["last"], 65535);
            assert_eq!(r[1]["not_src_ports"][0]["first"], 5353);
        }
        "03-named-ports" => {
            // http: db1 (local, 8080) and web2 (remote, 80) - every endpoint with the port.
            let http = sets(v)
                .into_iter()
                .find(|s| s.contains("tcp:http"))
                .expect("a named-port set for tcp:http");
            let m = ipset_members(v, &http);
            assert!(m.contains(&"10.0.0.1,tcp:8080".to_string()), "{m:?}");
            assert!(m.contains(&"10.0.1.2,tcp:80".to_string()), "{m:?}");
            let dia = sets(v)
                .into_iter()
                .find(|s| s.contains("sctp:diameter"))
                .expect("a named-port set for sctp:diameter");
            assert_eq!(ipset_members(v, &dia), vec!["10.0.1.2,sctp:3868"]);
        }
        "05-selectors" => {
            let sel = sets(v)
                .into_iter()
                .find(|s| s.contains("frontend") && s.contains("canary"))
                .expect("combined selector/notSelector set");
            // fe2 is a canary, fe3 is in another namespace.
            assert_eq!(ipset_members(v, &sel), vec!["10.0.1.2/32"]);
        }
        "06-namespace-selector" => {
            let np = policy(v, "nssel");
            let src = np["policy"]["inbound_rules"][0]["src_ip_set_ids"][0]
                .as_str()
                .unwrap();
            assert_eq!(ipset_members(v, src), vec!["10.0.2.2/32"]);
            // The GNP's own namespaceSelector picks w1 (ns1 is red).
            let w = wep(v, "cali0001");
            let all: Vec<String> = w["endpoint"]["tiers"][0]["egress_policies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(all, vec!["gnp-nssel"]);
        }
        "07-service-accounts" => {
            let p = policy(v, "sa");
            let src = p["policy"]["inbound_rules"][0]["src_ip_set_ids"][0]
                .as_str()
                .unwrap();
            assert_eq!(ipset_members(v, src), vec!["10.0.1.2/32"]);
            let dst = p["policy"]["outbound_rules"][0]["dst_ip_set_ids"][0]
                .as_str()
                .unwrap();
            assert_eq!(ipset_members(v, dst), vec!["10.0.1.3/32"]);
        }
        "08-tiers-pass-order" => {
            let w = wep(v, "cali0001");
            assert_eq!(tier_names(w), vec!["security", "platform", "default"]);
            let t = &w["endpoint"]["tiers"];
            assert_eq!(t[0]["default_action"], "Pass");
            assert_eq!(t[2]["default_action"], "Deny");
            assert_eq!(
                names_in(&t[0]["ingress_policies"]),
                vec!["security.a-first", "security.block-bad"]
            );
            // order 5 before no order, whatever the names.
            assert_eq!(
                names_in(&t[2]["ingress_policies"]),
                vec!["z-ordered", "a-unordered"]
            );
            let r = &policy(v, "security.block-bad")["policy"]["inbound_rules"];
            assert_eq!(r[0]["action"], "log");
            assert_eq!(r[2]["action"], "next-tier");
        }
        "09-types" => {
            let t = &wep(v, "cali0001")["endpoint"]["tiers"][0];
            assert_eq!(
                names_in(&t["ingress_policies"]),
                vec![
                    "only-ingress",
                    "no-types-ingress-rules",
                    "no-types-egress-rules"
                ]
            );
            assert_eq!(
                names_in(&t["egress_policies"]),
                vec![
                    "only-egress",
                    "no-types-ingress-rules",
                    "no-types-egress-rules"
                ]
            );
        }
        "10-profiles" => {
            let w = wep(v, "cali0001");
            assert_eq!(w["endpoint"]["profile_ids"][0], "kns.ns1");
            assert_eq!(w["endpoint"]["profile_ids"][1], "ksa.ns1.default");
            let missing = wep(v, "cali0002");
            assert_eq!(missing["endpoint"]["profile_ids"][0], "missing-profile");
            // A referenced profile that does not exist is sent as an explicit deny-all.
            let sent = of_kind(v, "ActiveProfileUpdate")
                .into_iter()
                .find(|p| p["id"]["name"] == "missing-profile")
                .expect("missing profile sent as deny-all");
            let deny = serde_json::json!([{"action": "deny"}]);
            assert_eq!(sent["profile"]["inbound_rules"], deny, "{sent}");
            assert_eq!(sent["profile"]["outbound_rules"], deny, "{sent}");
        }
        "11-network-sets" => {
            let partner = policy(v, "partners")["policy"]["inbound_rules"][0]["src_ip_set_ids"][0]
                .as_str()
                .unwrap();
            assert_eq!(
                ipset_members(v, partner),
                vec!["198.51.100.0/24", "2001:db8:1::/48"]
            );
            let bad = policy(v, "blocklist")["policy"]["inbound_rules"][0]["src_ip_set_ids"][0]
                .as_str()
                .unwrap();
            assert_eq!(
                ipset_members(v, bad),
                vec!["192.0.2.10/32", "203.0.113.0/24"]
            );
        }
        "12-host-endpoints" => {
            let h = of_kind(v, "HostEndpointUpdate")[0];
            let e = &h["endpoint"];
            assert_eq!(
                names_in(&e["untracked_tiers"][0]["ingress_policies"]),
                vec!["untracked"]
            );
            assert_eq!(
                names_in(&e["pre_dnat_tiers"][0]["ingress_policies"]),
                vec!["prednat"]
            );
            assert_eq!(
                names_in(&e["forward_tiers"][0]["ingress_policies"]),
                vec!["forward"]
            );
            assert_eq!(
                names_in(&e["tiers"][0]["ingress_policies"]),
                vec!["forward", "normal"]
            );
            assert!(policy(v, "untracked")["policy"]["untracked"] == true);
            assert!(policy(v, "prednat")["policy"]["pre_dnat"] == true);
        }
        "13-anti-spoofing" => {
            let w = wep(v, "cali0001");
            assert_eq!(
                w["endpoint"]["allow_spoofed_source_prefixes"][0],
                "192.0.2.0/24"
            );
            assert_eq!(w["endpoint"]["ipv6_nets"][0], "fd00:1::1/128");
        }
        _ => {}
    }
}

#[test]
fn feature_goldens() {
    let files = cases();
    assert!(
        files.len() >= 14,
        "feature cases missing in {}",
        case_dir().display()
    );
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for f in &files {
        let name = case_name(f);
        let (graph, msgs) = run(f);
        assert!(
            matches!(msgs.first(), Some(ToDataplane::InSync)),
            "{name}: flush starts with InSync"
        );
        let got = readable(&graph, &msgs);
        feature_facts(&name, &got);
        let golden = case_dir().join(format!("{name}.calc.yaml"));
        if update {
            let header = format!(
                "# Generated by `UPDATE_GOLDEN=1 cargo test -p felix-calc --test golden_features` \
                 from {name}.in.yaml; reviewed.\n"
            );
            std::fs::write(&golden, header + &serde_saphyr::to_string(&got).unwrap()).unwrap();
            continue;
        }
        let want: Value = match std::fs::read_to_string(&golden) {
            Ok(t) => serde_saphyr::from_str(&t).unwrap(),
            Err(e) => {
                failures.push(format!(
                    "{}: {e} (run with UPDATE_GOLDEN=1)",
                    golden.display()
                ));
                continue;
            }
        };
        if got != want {
            failures.push(format!(
                "{name}: messages differ from {}\n--- got\n{}",
                golden.display(),
                serde_saphyr::to_string(&got).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

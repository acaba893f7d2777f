//! Property tests for the YAML/JSON resource loader: no input makes it panic. Inputs are random
//! text, random JSON trees shaped like resources of every kind, and corpus manifests with random
//! edits (when `../shared` is present). Every decoded resource is also defaulted and validated,
//! which must not panic either.

use std::path::PathBuf;

use calico_model::load::parse_documents;
use calico_model::{AnyResource, KINDS};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn load_all(text: &str) {
    if let Ok(docs) = parse_documents(text, "prop") {
        for d in docs {
            if let Ok(mut r) = AnyResource::from_value(d) {
                r.apply_defaults();
                let _ = r.validate();
                let v = r.to_value();
                let _ = AnyResource::from_value(v);
            }
        }
    }
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[ -~]{0,12}".prop_map(serde_json::Value::String),
        prop::sample::select(vec![
            "10.0.0.0/8",
            "::/0",
            "all()",
            "has(a)",
            "a == 'b'",
            "TCP",
            "ICMP",
            "Allow",
            "Deny",
            "Pass",
            "Log",
            "80",
            "1:2",
            "http",
            "Ingress",
            "Egress",
            "Always",
            "CrossSubnet",
            "Never",
            "default",
            "1m30s",
            "192.168.1.1",
            "fd00::/64",
            "64512",
        ])
        .prop_map(|s| serde_json::Value::String(s.to_string())),
    ]
}

fn json_tree() -> impl Strategy<Value = serde_json::Value> {
    let keys = prop::sample::select(vec![
        "selector",
        "ingress",
        "egress",
        "action",
        "protocol",
        "source",
        "destination",
        "nets",
        "notNets",
        "ports",
        "notPorts",
        "icmp",
        "type",
        "code",
        "order",
        "types",
        "tier",
        "cidr",
        "blockSize",
        "ipipMode",
        "vxlanMode",
        "peerIP",
        "asNumber",
        "node",
        "interfaceName",
        "expectedIPs",
        "namespaceSelector",
        "serviceAccounts",
        "http",
        "names",
        "labels",
        "doNotTrack",
        "preDNAT",
        "applyOnForward",
        "reservedCIDRs",
        "defaultAction",
        "bgp",
        "ipv4Address",
        "logSeverityScreen",
        "controllers",
        "exportV4",
        "matchOperator",
    ]);
    json_leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        load_all(&text);
    }

    #[test]
    fn random_yamlish_text_never_panics(
        lines in prop::collection::vec("( {0,4})[a-zA-Z]{1,8}: ?(\\[|\\{|-|[a-z0-9./:]{0,10})", 0..12)
    ) {
        let text = format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n{}", lines.join("\n"));
        load_all(&text);
    }

    #[test]
    fn random_resource_shaped_json_never_panics(
        kind in prop::sample::select(KINDS.iter().map(|k| k.kind).collect::<Vec<_>>()),
        spec in json_tree(),
        name in "[a-zA-Z0-9.-]{0,20}",
    ) {
        let v = serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": kind,
            "metadata": {"name": name, "namespace": "ns1"},
            "spec": spec,
        });
        let _ = AnyResource::from_value(v.clone()).map(|mut r| {
            r.apply_defaults();
            let _ = r.validate();
        });
        load_all(&v.to_string());
    }
}

fn corpus_dir() -> Option<PathBuf> {
    let d =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/calico-manifests");
    d.is_dir().then_some(d)
}

#[test]
fn mutated_corpus_manifests_never_panic() {
    let Some(dir) = corpus_dir() else {
        eprintln!(
            "SKIP mutated_corpus_manifests_never_panic: ../shared/corpus not found (CI always has it)"
        );
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus dir has no manifests");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read manifest");
        let bytes: Vec<char> = text.chars().collect();
        let strat = prop::collection::vec((0..bytes.len().max(1), any::<char>(), 0u8..3), 1..8);
        for _ in 0..64 {
            let edits = strat.new_tree(&mut runner).expect("strategy").current();
            let mut t = bytes.clone();
            for (pos, ch, op) in edits {
                let pos = pos.min(t.len().saturating_sub(1));
                match op {
                    0 if !t.is_empty() => {
                        t.remove(pos);
                    }
                    1 => t.insert(pos, ch),
                    _ if !t.is_empty() => t[pos] = ch,
                    _ => {}
                }
            }
            let s: String = t.into_iter().collect();
            load_all(&s);
        }
    }
}

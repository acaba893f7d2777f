//! The CNI spec's own examples (../shared/corpus/cni/spec-examples) against our protocol layer:
//! results read and re-written in each version's shape come back identical; VERSION and error
//! results have the spec's keys.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::PathBuf;

use calico_cni::spec::{CniError, CniResult, ErrorCode, NetConf, SUPPORTED_VERSIONS, SpecVersion};
use serde_json::Value;

fn examples() -> Option<PathBuf> {
    let d =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/cni/spec-examples");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!(
            "SKIP: ../shared/corpus/cni not found (CI always has it); spec corpus not checked"
        );
        None
    }
}

fn read(dir: &std::path::Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn results_round_trip_in_their_version_shape() {
    let Some(dir) = examples() else { return };
    let cases = [
        ("result-add-bridge-1.0.0.json", "1.0.0"),
        ("result-add-bridge-1.1.0.json", "1.1.0"),
        ("ipam-result-host-local-1.0.0.json", "1.0.0"),
        ("ipam-result-host-local-1.1.0.json", "1.1.0"),
    ];
    for (file, version) in cases {
        let mut expected = read(&dir, file);
        let r = CniResult::from_json(&expected).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got = r.to_json(SpecVersion::parse(version).unwrap());
        // The spec examples omit cniVersion; a plugin always writes it.
        expected["cniVersion"] = Value::String(version.to_string());
        if expected.get("dns").is_none() {
            expected["dns"] = serde_json::json!({});
        }
        assert_eq!(got, expected, "{file}");
    }
}

#[test]
fn prev_result_0_4_0_keeps_ips_version() {
    let Some(dir) = examples() else { return };
    let req = read(&dir, "request-add-tuning-with-prevresult-0.4.0.json");
    let conf = NetConf::parse(req.to_string().as_bytes()).unwrap();
    let prev = conf.prev_result.clone().expect("prevResult");
    let r = CniResult::from_json(&prev).unwrap();
    let mut expected = prev.clone();
    expected["cniVersion"] = Value::String("0.4.0".into());
    assert_eq!(r.to_json(conf.version()), expected);
    // The same result in 1.0.0 shape has no ips[].version.
    let v1 = r.to_json(SpecVersion::V100);
    assert!(v1["ips"][0].get("version").is_none());
}

#[test]
fn every_example_netconf_parses_with_its_version() {
    let Some(dir) = examples() else { return };
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("netconf-") || name.starts_with("request-")) {
            continue;
        }
        let v = read(&dir, &name);
        let confs: Vec<Value> = match v.get("plugins").and_then(Value::as_array) {
            Some(plugins) => plugins
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p["cniVersion"] = v["cniVersion"].clone();
                    p["name"] = v["name"].clone();
                    p
                })
                .collect(),
            None => vec![v.clone()],
        };
        for c in confs {
            let conf =
                NetConf::parse(c.to_string().as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                conf.version().as_str(),
                v["cniVersion"].as_str().unwrap(),
                "{name}"
            );
            n += 1;
        }
    }
    assert!(n >= 10, "expected the spec's netconf examples, found {n}");
}

#[test]
fn version_results_list_every_version() {
    let Some(dir) = examples() else { return };
    for file in [
        "version-result-1.1.0-reports-1.1.0.json",
        "version-result-1.0.0-reports-1.0.0.json",
    ] {
        let ex = read(&dir, file);
        let ours = calico_cni::spec::version::version_result(ex["cniVersion"].as_str().unwrap());
        assert_eq!(ours["cniVersion"], ex["cniVersion"]);
        for v in ex["supportedVersions"].as_array().unwrap() {
            if v.as_str().unwrap() <= "1.1.0" {
                assert!(
                    SUPPORTED_VERSIONS.contains(&v.as_str().unwrap()),
                    "{file}: {v}"
                );
            }
        }
    }
}

#[test]
fn error_result_has_the_spec_keys() {
    let Some(dir) = examples() else { return };
    for file in ["error-result-1.0.0.json", "error-result-1.1.0.json"] {
        let ex = read(&dir, file);
        let e = CniError::new(
            ErrorCode::InvalidConfig,
            ex["msg"].as_str().unwrap(),
            ex["details"].as_str().unwrap(),
        );
        assert_eq!(e.to_json(ex["cniVersion"].as_str().unwrap()), ex, "{file}");
    }
}

#[test]
fn legacy_result_shape() {
    let r = CniResult::from_json(&serde_json::json!({
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.0.0.5/32"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    }))
    .unwrap();
    let legacy = r.to_json(SpecVersion::V020);
    assert_eq!(legacy["ip4"]["ip"], "10.0.0.5/32");
    assert_eq!(legacy["ip4"]["routes"][0]["gw"], "169.254.1.1");
    assert!(legacy.get("ips").is_none());
    assert_eq!(CniResult::from_json(&legacy).unwrap(), r);
}

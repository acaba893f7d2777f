//! Shared by the corpus tests: loads `/work/shared/corpus/bird` scenarios (input.yaml plus the
//! harness inputs of scenarios.yaml) into `BgpInputs`, one per step.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use calico_bird::{AffinityState, BgpInputs, BlockAffinity};
use calico_model::AnyResource;
use serde_json::Value;

/// The corpus directory, or `None` (with a loud SKIP line) when /work/shared is absent.
pub fn corpus_dir(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/bird");
    if dir.join("scenarios.yaml").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: BIRD corpus not found at {} (needs /work/shared/corpus/bird)",
            dir.display()
        );
        None
    }
}

/// One rendering case: a scenario, or one step of it.
pub struct Case {
    /// `01-full-mesh-ipip` or `05-bgppeer-passwords/step3`.
    pub id: String,
    /// Directory holding upstream's expected files for this case.
    pub expected_dir: PathBuf,
    /// Directory holding the scenario's files (bird_aggr.cfg, bird_ipam.cfg when present).
    pub scenario_dir: PathBuf,
    pub inputs: BgpInputs,
}

fn state_of(s: &str) -> AffinityState {
    let s = s.to_ascii_lowercase();
    if s.contains("implicit") || s.contains("empty") {
        AffinityState::Implicit
    } else if s.contains("deletion") {
        AffinityState::PendingDeletion
    } else if s.contains("pending") {
        AffinityState::Pending
    } else if s == "confirmed" {
        AffinityState::Confirmed
    } else {
        panic!("scenarios.yaml: unknown affinity state {s:?}")
    }
}

/// Loads input.yaml into typed resources. Each document that fails to load is reported with
/// its index, kind/name and the loader's reason.
pub fn load_inputs(path: &Path) -> Result<BgpInputs, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let docs = calico_model::load::parse_documents(&text, &path.display().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut inputs = BgpInputs::default();
    let mut errors = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let what = format!(
            "{} document {} ({} {})",
            path.display(),
            i + 1,
            doc.get("kind").and_then(Value::as_str).unwrap_or("?"),
            doc.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
        match AnyResource::from_value(doc) {
            Ok(AnyResource::BGPConfiguration(r)) => inputs.bgp_configurations.push(r),
            Ok(AnyResource::BGPPeer(r)) => inputs.peers.push(r),
            Ok(AnyResource::BGPFilter(r)) => inputs.filters.push(r),
            Ok(AnyResource::Node(r)) => inputs.nodes.push(r),
            Ok(AnyResource::IPPool(r)) => inputs.ip_pools.push(r),
            Ok(other) => errors.push(format!("{what}: unexpected kind {}", other.kind())),
            Err(e) => errors.push(format!("{what}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors.join("\n"))
    }
}

fn secrets_of(v: Option<&Value>) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(secrets)) = v {
        for (name, keys) in secrets {
            if let Value::Object(keys) = keys {
                for (k, val) in keys {
                    let val = val
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| val.to_string());
                    out.insert((name.clone(), k.clone()), val);
                }
            }
        }
    }
    out
}

/// Every case of the corpus, sorted by id. Panics (naming the fixture and reason) when an
/// input cannot be loaded.
pub fn cases(dir: &Path) -> Vec<Case> {
    let raw = std::fs::read_to_string(dir.join("scenarios.yaml")).expect("read scenarios.yaml");
    let meta: Value = serde_saphyr::from_str(&raw).expect("parse scenarios.yaml");
    let common = &meta["common_harness"];
    let default_node = common["local_node"]
        .as_str()
        .expect("common_harness.local_node");
    let affinities: Vec<BlockAffinity> = common["ipam_block_affinities_for_local_node"]
        .as_array()
        .expect("affinity list")
        .iter()
        .map(|a| BlockAffinity {
            cidr: a["cidr"]
                .as_str()
                .expect("cidr")
                .parse()
                .expect("affinity cidr"),
            state: state_of(a["state"].as_str().expect("state")),
        })
        .collect();
    let scenarios = meta["scenarios"].as_object().expect("scenarios map");
    let mut out = Vec::new();
    let mut load_errors = Vec::new();
    for (name, sc) in scenarios {
        let sdir = dir.join(name);
        let base = match load_inputs(&sdir.join("input.yaml")) {
            Ok(b) => b,
            Err(e) => {
                load_errors.push(e);
                continue;
            }
        };
        let mut base = base;
        base.node_name = sc["local_node"]
            .as_str()
            .unwrap_or(default_node)
            .to_string();
        // The harness's withoutBlockAffinities() is only recorded as a comment next to the
        // scenario's local_node; read it from the raw text of this scenario's section.
        let section = raw
            .split(&format!("\n  {name}:"))
            .nth(1)
            .and_then(|s| s.split("\n  0").next())
            .unwrap_or("");
        if !section.contains("withoutBlockAffinities") {
            base.block_affinities = affinities.clone();
        }
        match sc.get("steps").and_then(Value::as_object) {
            Some(steps) => {
                for (step, s) in steps {
                    let edir = sdir.join(step);
                    if !edir.is_dir() {
                        continue;
                    }
                    let mut inputs = base.clone();
                    inputs.secrets = secrets_of(s.get("secrets"));
                    out.push(Case {
                        id: format!("{name}/{step}"),
                        expected_dir: edir,
                        scenario_dir: sdir.clone(),
                        inputs,
                    });
                }
            }
            None => out.push(Case {
                id: name.clone(),
                expected_dir: sdir.clone(),
                scenario_dir: sdir.clone(),
                inputs: base,
            }),
        }
    }
    assert!(
        load_errors.is_empty(),
        "corpus fixtures failed to load:\n{}",
        load_errors.join("\n")
    );
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

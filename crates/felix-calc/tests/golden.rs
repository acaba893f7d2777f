//! Golden "updates in, changes out" tests.
//!
//! Each `tests/golden/*.yaml` file is one case:
//!
//! ```yaml
//! node: node1                 # the local node
//! steps:
//!   - updates:                # applied in order, then the graph is flushed
//!       - apply: {<v3 resource>}
//!       - delete: {kind: NetworkPolicy, namespace: ns1, name: p1}
//!       - in_sync
//!     expect:                 # the flushed messages, in order
//!       - IpSetUpdate: {...}
//! ```
//!
//! IP set IDs in the output are replaced by readable descriptions (`sel(<canonical selector>)`,
//! `port(<proto>:<name>, <selector>)`) so expectations can be checked by reading them; the
//! hashing itself is covered by unit tests against upstream vectors.

use std::collections::HashMap;
use std::path::Path;

use calico_model::AnyResource;
use felix_calc::{CalcGraph, ResourceId, ToDataplane, Update};
use serde_json::Value;

fn render(graph: &CalcGraph, msgs: &[ToDataplane], names: &mut HashMap<String, String>) -> Value {
    for m in msgs {
        if let ToDataplane::IpSetUpdate(u) = m {
            let d = graph
                .ip_set_description(&u.id)
                .expect("ip set sent in an update is active");
            names.insert(u.id.clone(), d);
        }
    }
    let mut v = serde_json::to_value(msgs).expect("messages serialise");
    substitute(&mut v, names);
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

fn to_update(v: &Value, file: &str) -> Update {
    if v.as_str() == Some("in_sync") {
        return Update::InSync;
    }
    if let Some(res) = v.get("apply") {
        let r = AnyResource::from_value(res.clone())
            .unwrap_or_else(|e| panic!("{file}: bad resource: {e}"));
        return Update::upsert(r);
    }
    if let Some(d) = v.get("delete") {
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Update::Delete(ResourceId {
            kind: s("kind"),
            namespace: s("namespace"),
            name: s("name"),
        });
    }
    panic!("{file}: unknown update {v}");
}

fn run_case(path: &Path) -> Result<(), String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let case: Value = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let node = case.get("node").and_then(Value::as_str).unwrap_or("node1");
    let mut graph = CalcGraph::new(node);
    let mut names = HashMap::new();
    let steps = case
        .get("steps")
        .and_then(Value::as_array)
        .ok_or(format!("{file}: no steps"))?;
    for (i, step) in steps.iter().enumerate() {
        for u in step
            .get("updates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let expect_error = u.get("expect_error").and_then(Value::as_str);
            let res = graph.apply(to_update(u, &file));
            match (res, expect_error) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) if e.to_string().contains(want) => {}
                (r, want) => {
                    return Err(format!(
                        "{file} step {i}: apply gave {r:?}, expected error {want:?}"
                    ));
                }
            }
        }
        let msgs = graph.flush();
        let got = render(&graph, &msgs, &mut names);
        let want = step.get("expect").cloned().unwrap_or(Value::Array(vec![]));
        let want = if want.is_null() {
            Value::Array(vec![])
        } else {
            want
        };
        if got != want {
            let g = serde_saphyr::to_string(&got).unwrap_or_default();
            let w = serde_saphyr::to_string(&want).unwrap_or_default();
            return Err(format!(
                "{file} step {i}: output differs\n--- expected\n{w}\n--- got\n{g}"
            ));
        }
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden cases in {}", dir.display());
    let only = std::env::var("GOLDEN_ONLY").ok();
    let mut failures = Vec::new();
    for f in &files {
        if only
            .as_deref()
            .is_some_and(|o| !f.to_string_lossy().contains(o))
        {
            continue;
        }
        if let Err(e) = run_case(f) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

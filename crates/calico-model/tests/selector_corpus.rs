//! The selector against the outside-truth corpus (`shared/corpus/selectors*.tsv`).
//!
//! Every match row is also re-checked after canonicalisation (parse → print → parse), and every
//! parse-error row must fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use calico_model::selector::{Selector, parse};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: selector corpus directory {} is missing; corpus tests did not run",
            dir.display()
        );
        None
    }
}

/// Rows of a TSV file with a header line, as column-name → raw cell maps.
fn read_tsv(path: &PathBuf) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split('\t')
        .map(str::to_string)
        .collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                cells.len(),
                header.len(),
                "bad row in {}: {l}",
                path.display()
            );
            header
                .iter()
                .cloned()
                .zip(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

fn json_str(cell: &str) -> String {
    serde_json::from_str::<String>(cell).unwrap_or_else(|e| panic!("bad JSON string {cell}: {e}"))
}

#[test]
fn selector_match_table() {
    let Some(dir) = corpus_dir() else { return };
    let rows = read_tsv(&dir.join("selectors.tsv"));
    assert!(rows.len() >= 50, "only {} rows", rows.len());
    let mut failures = Vec::new();
    let (mut matches, mut errors) = (0, 0);
    for row in &rows {
        let id = &row["id"];
        let sel_text = json_str(&row["selector_json"]);
        let expected = row["expected"].as_str();
        let parsed = parse(&sel_text);
        match expected {
            "parse-error" => {
                errors += 1;
                if let Ok(s) = parsed {
                    failures.push(format!("{id}: {sel_text:?} parsed as {s} but must fail"));
                }
            }
            "true" | "false" => {
                matches += 1;
                let want = expected == "true";
                let labels: BTreeMap<String, String> =
                    serde_json::from_str(&row["labels_json"]).unwrap();
                let sel = match parsed {
                    Ok(s) => s,
                    Err(e) => {
                        failures.push(format!("{id}: {e}"));
                        continue;
                    }
                };
                if sel.evaluate(&labels) != want {
                    failures.push(format!("{id}: {sel_text:?} on {labels:?}: expected {want}"));
                }
                // Canonical form must parse back to the same selector and the same answer.
                let canon = sel.to_string();
                let again: Selector = canon.parse().unwrap_or_else(|e| panic!("{id}: {e}"));
                if again.to_string() != canon || again.unique_id() != sel.unique_id() {
                    failures.push(format!("{id}: canonical form {canon:?} is not stable"));
                }
                if again.evaluate(&labels) != want {
                    failures.push(format!(
                        "{id}: canonical {canon:?} on {labels:?}: expected {want}"
                    ));
                }
            }
            other => panic!("{id}: unknown expectation {other:?}"),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("selectors.tsv: {matches} match rows and {errors} parse-error rows passed");
}

#[test]
fn selector_canonical_table() {
    let Some(dir) = corpus_dir() else { return };
    let rows = read_tsv(&dir.join("selectors_canonical.tsv"));
    assert!(rows.len() >= 10, "only {} rows", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let id = &row["id"];
        let input = json_str(&row["input_json"]);
        let want = json_str(&row["canonical_json"]);
        let sel = match parse(&input) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{id}: {e}"));
                continue;
            }
        };
        if sel.to_string() != want {
            failures.push(format!("{id}: {input:?} printed {sel} but expected {want}"));
        }
        let uid = row["unique_id"].as_str();
        if uid != "-" && sel.unique_id() != uid {
            failures.push(format!(
                "{id}: unique id {} but expected {uid}",
                sel.unique_id()
            ));
        }
        let again = parse(&sel.to_string()).unwrap();
        if again.to_string() != want {
            failures.push(format!("{id}: canonical form not stable: {again}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

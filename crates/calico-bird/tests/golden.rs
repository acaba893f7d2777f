//! Golden files of our rendered BIRD 2 text for every corpus case
//! (`tests/golden/<case>.bird.cfg`, `.bird6.cfg`, compared byte for byte; `UPDATE_GOLDEN=1`
//! rewrites them), and BIRD 2's own parser (`bird -p -c`) on every rendered file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn rendered() -> Option<Vec<(String, String)>> {
    let dir = common::corpus_dir("calico-bird golden")?;
    let mut out = Vec::new();
    for case in common::cases(&dir) {
        let r = calico_bird::render(&case.inputs)
            .unwrap_or_else(|e| panic!("{}: render failed: {e}", case.id));
        let stem = case.id.replace('/', "-");
        out.push((format!("{stem}.bird.cfg"), r.bird_cfg));
        out.push((format!("{stem}.bird6.cfg"), r.bird6_cfg));
    }
    Some(out)
}

#[test]
fn rendered_text_matches_golden_files() {
    let Some(files) = rendered() else { return };
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = golden_dir();
    let mut failures = Vec::new();
    for (name, text) in &files {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).expect("create golden dir");
            std::fs::write(&path, text).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if &expected == text => {}
            Ok(expected) => {
                let line = expected
                    .lines()
                    .zip(text.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| expected.lines().count().min(text.lines().count()))
                    + 1;
                failures.push(format!(
                    "{name}: differs from line {line} (UPDATE_GOLDEN=1 rewrites)"
                ));
            }
            Err(e) => failures.push(format!(
                "{}: {e} (UPDATE_GOLDEN=1 writes it)",
                path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn rendering_is_deterministic() {
    let Some(dir) = common::corpus_dir("rendering_is_deterministic") else {
        return;
    };
    for case in common::cases(&dir) {
        let a = calico_bird::render(&case.inputs).expect("render");
        let mut shuffled = case.inputs.clone();
        shuffled.nodes.reverse();
        shuffled.peers.reverse();
        shuffled.filters.reverse();
        shuffled.ip_pools.reverse();
        shuffled.block_affinities.reverse();
        let b = calico_bird::render(&shuffled).expect("render");
        assert_eq!(a, b, "{}: output depends on input order", case.id);
    }
}

#[test]
fn bird2_parser_accepts_every_rendered_file() {
    let bird = Path::new("/usr/sbin/bird");
    if !bird.exists() {
        eprintln!(
            "SKIP bird2_parser_accepts_every_rendered_file: /usr/sbin/bird (Debian bird2) not installed"
        );
        return;
    }
    let Some(files) = rendered() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for (name, text) in &files {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).expect("write config");
        let out = Command::new(bird)
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run bird -p");
        if !out.status.success() {
            failures.push(format!(
                "{name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    eprintln!("bird -p checked {} files", files.len());
    assert!(
        failures.is_empty(),
        "bird -p rejected:\n{}",
        failures.join("\n")
    );
}

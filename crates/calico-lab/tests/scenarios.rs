//! The scenario runner against the shared corpus and examples, and its report format.
//!
//! The corpus runs on one configuration by default (1 node, embedded store, the fastest);
//! `CALICO_LAB_CORPUS="<nodes>:<embedded|etcd>[:<routing>]"` picks another, e.g.
//! `CALICO_LAB_CORPUS=3:etcd cargo test -p calico-lab --test scenarios`.

mod common;

use std::time::Duration;

use calico_lab::scenario::{self, RunOptions};

fn corpus_options() -> RunOptions {
    let spec = std::env::var("CALICO_LAB_CORPUS").unwrap_or_else(|_| "1:embedded".into());
    let mut parts = spec.split(':');
    let nodes = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("CALICO_LAB_CORPUS={spec:?}: first field is a node count"));
    let datastore = parts.next().map(|d| {
        d.parse()
            .unwrap_or_else(|e| panic!("CALICO_LAB_CORPUS: {e}"))
    });
    let routing = parts.next().map(|r| {
        r.parse()
            .unwrap_or_else(|e| panic!("CALICO_LAB_CORPUS: {e}"))
    });
    RunOptions {
        nodes: Some(nodes),
        datastore,
        routing,
        // Probes mostly wait (a blocked cell costs the probe timeout), so more labs than
        // cores at once pays: 24 s with 2 jobs, 18 s with 4 on 2 cores.
        jobs: 4,
        ..RunOptions::default()
    }
}

fn run_and_report(files: &[std::path::PathBuf], opts: &RunOptions) -> (usize, String) {
    let results = scenario::run_files(files, opts, |r| eprint!("{}", scenario::render_case(r)));
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    let report: String = failed.iter().map(|r| scenario::render_case(r)).collect();
    eprintln!(
        "{} passed, {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    (results.len(), report)
}

#[test]
fn k8s_netpol_corpus() {
    if !common::lab_available("k8s_netpol_corpus") {
        return;
    }
    let Some(shared) = common::shared_dir("k8s_netpol_corpus") else {
        return;
    };
    common::build_binaries();
    let files = scenario::collect_files(&[shared.join("corpus/k8s-netpol")]).expect("corpus");
    assert!(files.len() >= 20, "corpus has only {} files", files.len());
    let opts = corpus_options();
    eprintln!("corpus on {opts:?}");
    let (n, failures) = run_and_report(&files, &opts);
    assert_eq!(n, files.len());
    assert!(failures.is_empty(), "corpus failures:\n{failures}");
}

#[test]
fn scenario_examples() {
    if !common::lab_available("scenario_examples") {
        return;
    }
    let Some(shared) = common::shared_dir("scenario_examples") else {
        return;
    };
    common::build_binaries();
    let files = scenario::collect_files(&[shared.join("scenarios/examples")]).expect("examples");
    assert!(!files.is_empty());
    let (_, failures) = run_and_report(&files, &RunOptions::default());
    assert!(failures.is_empty(), "example failures:\n{failures}");
}

/// A scenario whose expectations are wrong on purpose: the CLI must name every differing cell,
/// end with `0 passed, 1 failed` and exit non-zero.
#[test]
fn cli_reports_mismatching_cells_and_fails() {
    if !common::lab_available("cli_reports_mismatching_cells_and_fails") {
        return;
    }
    common::build_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wrong.yaml");
    std::fs::write(
        &file,
        r#"
id: wrong-on-purpose
setup:
  namespaces:
  - {name: x, labels: {ns: x}}
  pods:
  - {name: x/a, namespace: x, pod: a, labels: {pod: a}}
  - {name: x/b, namespace: x, pod: b, labels: {pod: b}}
  server_ports:
  - {port: 80, protocol: TCP, name: serve-80-tcp}
steps:
- create:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: b}}
      policyTypes: [Ingress]
  expect:
  - port: 80
    protocol: TCP
    reachability:
      x/a: {x/a: ignored, x/b: allowed}
      x/b: {x/a: blocked, x/b: ignored}
"#,
    )
    .expect("write scenario");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calico-lab"))
        .args(["scenario", "--probe-timeout-ms", "500"])
        .arg(&file)
        .output()
        .expect("run calico-lab scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("x/a -> x/b: expected allowed, observed blocked"),
        "{stdout}"
    );
    assert!(
        stdout.contains("x/b -> x/a: expected blocked, observed allowed"),
        "{stdout}"
    );
    assert_eq!(stdout.trim_end().lines().last(), Some("0 passed, 1 failed"));
}

#[test]
fn bad_scenario_names_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "id: bad\nsetup:\n  pods:\n  - {name: x/a}\nsteps:\n- expect:\n  - {port: 80, protocol: GRE, reachability: {}}\n",
    )
    .expect("write");
    let r = scenario::run_file(&file, &RunOptions::default());
    let err = r.error.expect("an error");
    assert!(err.contains("steps[0].expect[0].protocol"), "{err}");
    assert!(err.contains("GRE"), "{err}");
    let _ = Duration::ZERO;
}

/// Runs a scenario given inline (written to a temporary file, as the runner reads files);
/// `None` (a loud SKIP) without the lab.
fn run_inline(test: &str, yaml: &str) -> Option<scenario::CaseResult> {
    if !common::lab_available(test) {
        return None;
    }
    common::build_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{test}.yaml"));
    std::fs::write(&file, yaml).expect("write scenario");
    Some(scenario::run_file(&file, &RunOptions::default()))
}

/// The format's extensions and the label/delete steps: a host outside the cluster, explicit
/// node placement on two nodes, add_pod_labels, add_namespace_labels, delete_all_policies, and
/// placeholders.
#[test]
fn runner_extensions_and_label_steps() {
    let Some(r) = run_inline(
        "runner_extensions_and_label_steps",
        r#"
id: extensions
topology: {nodes: [node-1, node-2], routing: bgp-mesh}
setup:
  namespaces:
  - {name: x, labels: {ns: x}}
  - {name: y, labels: {ns: y}}
  pods:
  - {name: x/a, namespace: x, pod: a, labels: {pod: a}, node: node-1}
  - {name: x/b, namespace: x, pod: b, labels: {pod: b}, node: node-2, serviceAccount: robot}
  - {name: y/c, namespace: y, pod: c, labels: {pod: c}, node: node-2}
  server_ports:
  - {port: 80, name: http}
  hosts:
  - {name: ext-1, address: 203.0.113.10}
steps:
- expect:
  - port: 80
    protocol: TCP
    reachability:
      x/a: {x/b: allowed, ext-1: allowed}
      ext-1: {x/a: allowed, y/c: allowed}
- create:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: a-egress-only-external, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      policyTypes: [Egress]
      egress:
      - to: [{ipBlock: {cidr: 203.0.113.0/24}}]
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: c-from-friends, namespace: y}
    spec:
      podSelector: {}
      policyTypes: [Ingress]
      ingress:
      - from: [{namespaceSelector: {matchLabels: {friend: "yes"}}, podSelector: {matchLabels: {pod: b}}}]
  expect:
  - port: 80
    protocol: TCP
    reachability:
      x/a: {x/b: blocked, ext-1: allowed, y/c: blocked}
      x/b: {x/a: allowed, y/c: blocked}
      ext-1: {x/a: allowed, y/c: blocked}
- add_namespace_labels: {namespace: x, labels: {friend: "yes"}}
  expect:
  - port: 80
    protocol: TCP
    reachability:
      x/b: {y/c: allowed}
      x/a: {y/c: blocked}
- add_pod_labels: {pod: x/a, labels: {pod: b}}
  update:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: a-egress-only-external, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      policyTypes: [Egress]
      egress:
      - to: [{ipBlock: {cidr: "$(POD_IP y/c)/$(HOST_MASK)"}}]
  expect:
  - port: 80
    protocol: TCP
    reachability:
      x/a: {y/c: allowed, x/b: allowed, ext-1: allowed}
- delete_all_policies: true
  expect:
  - port: 80
    protocol: TCP
    reachability:
      ext-1: {y/c: allowed}
      y/c: {ext-1: allowed}
  - protocol: ICMP
    reachability:
      x/a: {y/c: allowed}
"#,
    ) else {
        return;
    };
    assert!(r.passed(), "{}", scenario::render_case(&r));
    assert_eq!(r.convergence.len(), 5);
}

/// SCTP through Felix's rules on real packets (raw-socket INIT / INIT-ACK; this kernel has no
/// SCTP sockets): a Calico policy allowing SCTP to a named port from one pod, so the named-port
/// set carries protocol 132; the other SCTP port, and TCP, stay blocked.
#[test]
fn sctp_rule_with_named_port_allows_and_denies_real_sctp() {
    let Some(r) = run_inline(
        "sctp_rule_with_named_port_allows_and_denies_real_sctp",
        r#"
id: sctp-named-port
topology: {nodes: 1}
setup:
  namespaces:
  - {name: x, labels: {ns: x}}
  pods:
  - {name: x/a, namespace: x, pod: a, labels: {pod: a}}
  - {name: x/b, namespace: x, pod: b, labels: {pod: b}}
  - {name: x/c, namespace: x, pod: c, labels: {pod: c}}
  server_ports:
  - {port: 3868, protocol: SCTP, name: diameter}
  - {port: 3869, protocol: SCTP, name: other}
  - {port: 80, protocol: TCP, name: http}
steps:
- expect:
  - port: 3868
    protocol: SCTP
    reachability:
      x/a: {x/b: allowed}
      x/c: {x/b: allowed}
- create:
  - apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: diameter-from-a, namespace: x}
    spec:
      selector: pod == 'b'
      types: [Ingress]
      ingress:
      - action: Allow
        protocol: SCTP
        source: {selector: pod == 'a'}
        destination: {ports: [diameter]}
  expect:
  - port: 3868
    protocol: SCTP
    reachability:
      x/a: {x/b: allowed}
      x/c: {x/b: blocked}
  - port: 3869
    protocol: SCTP
    reachability:
      x/a: {x/b: blocked}
  - port: 80
    protocol: TCP
    reachability:
      x/a: {x/b: blocked}
"#,
    ) else {
        return;
    };
    assert!(r.passed(), "{}", scenario::render_case(&r));
}

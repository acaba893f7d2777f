//! Connectivity matrices for people, and the benchmarks (`calico-lab bench`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::LabError;
use crate::lab::{DatastoreKind, Lab, LabSpec};
use crate::names;
use crate::probe::Proto;
use crate::scenario::{self, RunOptions};

/// Probe every ordered pair of the lab's pods on `port/proto` and render a table
/// (`.` allowed, `X` blocked, `-` self).
pub fn render_matrix(
    lab: &Lab,
    port: u16,
    proto: Proto,
    timeout: Duration,
) -> Result<String, LabError> {
    let pods: Vec<(&String, &crate::state::PodState)> = lab.state.pods.iter().collect();
    let mut probes = Vec::new();
    for (_, from) in &pods {
        for (_, to) in &pods {
            if from.netns != to.netns {
                let ip: Ipv4Addr = to.ip.parse().map_err(|_| {
                    LabError::lab(lab.name(), format!("pod {}: bad address {}", to.pod, to.ip))
                })?;
                probes.push((from.netns.clone(), ip, port, proto));
            }
        }
    }
    let results = scenario::probe_many(&probes, timeout)?;
    let mut it = results.into_iter();
    let width = pods.iter().map(|(k, _)| k.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{port}/{} from (row) to (column): . allowed  X blocked",
        proto.as_str()
    );
    let _ = write!(out, "{:width$} ", "");
    for (k, _) in &pods {
        let _ = write!(out, " {k:>width$}");
    }
    out.push('\n');
    for (kf, from) in &pods {
        let _ = write!(out, "{kf:width$} ");
        for (_, to) in &pods {
            let cell = if from.netns == to.netns {
                "-"
            } else if it.next().unwrap_or(false) {
                "."
            } else {
                "X"
            };
            let _ = write!(out, " {cell:>width$}");
        }
        out.push('\n');
    }
    Ok(out)
}

/// Probe every ordered pair of the lab's pods (different namespaces) on each of `checks`
/// (`(port, proto)`; the port is ignored for ICMP) at once; the pairs that failed, as
/// `x/a -> x/b (10.244.0.5) 80/TCP`.
pub fn unreachable_pairs(
    lab: &Lab,
    checks: &[(u16, Proto)],
    timeout: Duration,
) -> Result<Vec<String>, LabError> {
    let mut probes = Vec::new();
    let mut labels = Vec::new();
    for (kf, from) in &lab.state.pods {
        for (kt, to) in &lab.state.pods {
            if from.netns == to.netns {
                continue;
            }
            let ip: Ipv4Addr = to.ip.parse().map_err(|_| {
                LabError::lab(lab.name(), format!("pod {kt}: bad address {:?}", to.ip))
            })?;
            for &(port, proto) in checks {
                probes.push((from.netns.clone(), ip, port, proto));
                labels.push(format!("{kf} -> {kt} ({ip}) {port}/{}", proto.as_str()));
            }
        }
    }
    let results = scenario::probe_many(&probes, timeout)?;
    Ok(labels
        .into_iter()
        .zip(results)
        .filter(|(_, ok)| !ok)
        .map(|(l, _)| l)
        .collect())
}

/// Re-probe the whole pod mesh until every pair answers on every check, or `deadline` passes
/// (an error naming the pairs still failing). Returns the time it took.
pub fn wait_pod_mesh(
    lab: &Lab,
    checks: &[(u16, Proto)],
    probe_timeout: Duration,
    deadline: Duration,
) -> Result<Duration, LabError> {
    let t0 = Instant::now();
    loop {
        let failing = unreachable_pairs(lab, checks, probe_timeout)?;
        if failing.is_empty() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= deadline {
            return Err(LabError::Timeout {
                what: "full pod mesh reachability".into(),
                secs: deadline.as_secs_f64(),
                detail: format!("unreachable: {}", failing.join(", ")),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `up` of `up_nodes` nodes, then the corpus (when given): convergence p50/p99 over every
/// step, and the whole corpus' time. Returns the report text.
pub fn run(
    corpus: Option<&Path>,
    up_nodes: usize,
    datastore: DatastoreKind,
    jobs: usize,
) -> Result<String, LabError> {
    let mut out = String::new();
    let mut spec = LabSpec::new(&names::ephemeral_lab_name(), up_nodes);
    spec.datastore = datastore;
    let t0 = Instant::now();
    let lab = Lab::up(&spec)?;
    let up = t0.elapsed();
    let t1 = Instant::now();
    lab.down()?;
    let down = t1.elapsed();
    let _ = writeln!(
        out,
        "up of {up_nodes} nodes ({} datastore, agents ready): {:.2}s (target <= 10 s); down {:.2}s",
        datastore.as_str(),
        up.as_secs_f64(),
        down.as_secs_f64()
    );
    if let Some(dir) = corpus {
        let files = scenario::collect_files(&[dir.to_path_buf()])?;
        let opts = RunOptions {
            datastore: Some(datastore),
            jobs,
            ..RunOptions::default()
        };
        let t2 = Instant::now();
        let results = scenario::run_files(&files, &opts, |_| {});
        let total = t2.elapsed();
        let mut conv: Vec<Duration> = results
            .iter()
            .flat_map(|r| r.convergence.iter().copied())
            .collect();
        conv.sort();
        let mut apply: Vec<Duration> = results
            .iter()
            .flat_map(|r| r.apply.iter().copied())
            .collect();
        apply.sort();
        let failed = results.iter().filter(|r| !r.passed()).count();
        let _ = writeln!(
            out,
            "corpus {}: {} files in {:.1}s ({} jobs), {} passed, {} failed",
            dir.display(),
            results.len(),
            total.as_secs_f64(),
            jobs,
            results.len() - failed,
            failed
        );
        let _ = writeln!(
            out,
            "policy in the datastore -> every node's Felix applied it (matrix converged): p50 {:.0} ms, p99 {:.0} ms over {} steps",
            percentile(&conv, 0.5).as_secs_f64() * 1000.0,
            percentile(&conv, 0.99).as_secs_f64() * 1000.0,
            conv.len()
        );
        let first: usize = results.iter().map(|r| r.first_round_ok).sum();
        let _ = writeln!(
            out,
            "steps whose first probe round after convergence matched the expected matrix: {first}/{}",
            conv.len()
        );
        let _ = writeln!(
            out,
            "calicoctl apply of a step: p50 {:.0} ms, p99 {:.0} ms",
            percentile(&apply, 0.5).as_secs_f64() * 1000.0,
            percentile(&apply, 0.99).as_secs_f64() * 1000.0,
        );
    }
    Ok(out)
}

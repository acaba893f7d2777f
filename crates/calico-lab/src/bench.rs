//! Connectivity matrices for people, and the benchmarks (`calico-lab bench`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::bins;
use crate::error::LabError;
use crate::lab::{DatastoreKind, Lab, LabSpec, Routing};
use crate::names;
use crate::probe::Proto;
use crate::procs::{self, InNs};
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

/// The network figures of `bench`.
#[derive(Debug, Clone)]
pub struct NetBench {
    /// Node counts for "up started -> full pod mesh reachable" (one lab each).
    pub mesh_sizes: Vec<usize>,
    /// iperf3 run length; 0 skips the throughput figures.
    pub iperf_secs: u64,
}

/// `up` of `nodes` nodes, one pod per node, then every pod probes every other (80/TCP) until
/// all answer. Returns (up alone, up started -> mesh reachable).
pub fn up_to_mesh(
    nodes: usize,
    datastore: DatastoreKind,
) -> Result<(Duration, Duration), LabError> {
    let mut spec = LabSpec::new(&names::ephemeral_lab_name(), nodes);
    spec.datastore = datastore;
    let t0 = Instant::now();
    let mut lab = Lab::up(&spec)?;
    let up = t0.elapsed();
    let no_labels = std::collections::BTreeMap::new();
    for i in 0..nodes {
        let node = lab.state.nodes[i].name.clone();
        lab.add_pod_k8s("bench", &format!("p{}", i + 1), Some(&node), &no_labels)?;
    }
    wait_pod_mesh(
        &lab,
        &[(80, Proto::Tcp)],
        Duration::from_millis(200),
        Duration::from_secs(60),
    )?;
    let mesh = t0.elapsed();
    lab.down()?;
    Ok((up, mesh))
}

/// iperf3 TCP for `secs` from pod `client` to pod `server` of `lab`: bits per second received.
pub fn iperf(lab: &Lab, client: &str, server: &str, secs: u64) -> Result<f64, LabError> {
    let bin = bins::require("iperf3")?.display().to_string();
    let pod = |k: &str| {
        lab.state
            .pods
            .get(k)
            .cloned()
            .ok_or_else(|| LabError::lab(lab.name(), format!("no pod {k}")))
    };
    let (c, s) = (pod(client)?, pod(server)?);
    let log = lab.state.dir().join(format!("iperf3-{}.log", s.pod));
    let mut srv = InNs {
        lab: lab.name(),
        netns: &s.netns,
        argv: procs::argv([
            bin.clone(),
            "-s".into(),
            "-1".into(),
            "-p".into(),
            "5201".into(),
        ]),
        env: vec![],
    }
    .spawn(&log)?;
    let what = format!("iperf3 {client} -> {server}");
    let mut last = String::new();
    let mut result = None;
    // The server needs a moment to listen; a refused client is retried.
    for _ in 0..20 {
        let out = InNs {
            lab: lab.name(),
            netns: &c.netns,
            argv: procs::argv([
                bin.clone(),
                "-c".into(),
                s.ip.clone(),
                "-p".into(),
                "5201".into(),
                "-t".into(),
                secs.to_string(),
                "-J".into(),
            ]),
            env: vec![],
        }
        .output(None, Duration::from_secs(secs + 20))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            result = Some(bps);
            break;
        }
        last = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    result.ok_or_else(|| LabError::command(what, last))
}

/// Cross-node iperf3 TCP with native BGP routing and with VXLAN, beside two pods on one node.
fn throughput(datastore: DatastoreKind, secs: u64) -> Result<String, LabError> {
    let mut out = String::new();
    let mut same_node = None;
    for routing in [Routing::BgpMesh, Routing::Vxlan] {
        let mut spec = LabSpec::new(&names::ephemeral_lab_name(), 2);
        spec.datastore = datastore;
        spec.routing = routing;
        let mut lab = Lab::up(&spec)?;
        let no_labels = std::collections::BTreeMap::new();
        lab.add_pod_k8s("bench", "a", Some("node-1"), &no_labels)?;
        lab.add_pod_k8s("bench", "b", Some("node-2"), &no_labels)?;
        if same_node.is_none() {
            lab.add_pod_k8s("bench", "c", Some("node-1"), &no_labels)?;
        }
        wait_pod_mesh(
            &lab,
            &[(80, Proto::Tcp)],
            Duration::from_millis(300),
            Duration::from_secs(30),
        )?;
        if same_node.is_none() {
            let bps = iperf(&lab, "bench/a", "bench/c", secs)?;
            same_node = Some(bps);
            let _ = writeln!(
                out,
                "iperf3 TCP {secs}s, two pods on one node (baseline): {:.2} Gbit/s",
                bps / 1e9
            );
        }
        let bps = iperf(&lab, "bench/a", "bench/b", secs)?;
        let base = same_node.unwrap_or(bps);
        let _ = writeln!(
            out,
            "iperf3 TCP {secs}s, pods on different nodes, {}: {:.2} Gbit/s ({:.0}% of the same-node baseline)",
            if routing == Routing::Vxlan {
                "VXLAN"
            } else {
                "native BGP routing"
            },
            bps / 1e9,
            bps / base * 100.0
        );
        lab.down()?;
    }
    Ok(out)
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
    net: &NetBench,
) -> Result<String, LabError> {
    let mut out = String::new();
    for &n in &net.mesh_sizes {
        let (up, mesh) = up_to_mesh(n, datastore)?;
        let target = if n <= 3 { 3.0 } else { 10.0 };
        let _ = writeln!(
            out,
            "up started -> full pod mesh reachable ({n} nodes, one pod per node, every pod -> every other 80/TCP): {:.2}s (target <= {target:.0} s; up {:.2}s of it)",
            mesh.as_secs_f64(),
            up.as_secs_f64()
        );
    }
    if net.iperf_secs > 0 {
        out.push_str(&throughput(datastore, net.iperf_secs)?);
    }
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

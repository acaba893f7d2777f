//! Sequential CNI ADD+DEL latency of `calico` + `calico-ipam` (embedded datastore) beside the
//! reference `bridge` + `host-local` plugins from Debian's containernetworking-plugins, driven the
//! same way (exec'd directly in the node's network namespace, as a runtime on that node would,
//! with the CNI environment and stdin) inside the same kind of lab namespace.
//! Prints p50/p99 per plugin pair and the ratio. Targets (issue 3): p50 ≤ 25 ms, p99 ≤ 60 ms.
//!
//! `CNI_BENCH_N` sets the number of ADD+DEL cycles (default 100). Needs root (network
//! namespaces); prints SKIP otherwise. With `CALICO_CNI_TIMING=1` the plugin's phase timings
//! (see `calico_cni::plugin::timing`) are collected and their medians printed per command.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calico_linux::testlab::{LabNs, lab_available};
use serde_json::{Value, json};

const CALICO: &str = env!("CARGO_BIN_EXE_calico");
const REF_DIR: &str = "/usr/lib/cni";

/// Per command, each phase (in the plugin's order) with its durations in ms, from the plugin's
/// timing lines.
type Phases = BTreeMap<String, Vec<(String, Vec<f64>)>>;

fn timing_env() -> Option<String> {
    std::env::var("CALICO_CNI_TIMING")
        .ok()
        .filter(|v| !v.is_empty())
}

fn collect_phases(stderr: &[u8], phases: &mut Phases) {
    for line in String::from_utf8_lossy(stderr).lines() {
        let Some(rest) = line.strip_prefix("calico-cni timing: ") else {
            continue;
        };
        let mut fields = rest.split(' ').filter_map(|f| f.split_once('='));
        let Some(("cmd", cmd)) = fields.next() else {
            continue;
        };
        let per_cmd = phases.entry(cmd.to_string()).or_default();
        for (k, v) in fields {
            let Ok(ms) = v.trim_end_matches("ms").parse::<f64>() else {
                continue;
            };
            match per_cmd.iter_mut().find(|(name, _)| name == k) {
                Some((_, samples)) => samples.push(ms),
                None => per_cmd.push((k.to_string(), vec![ms])),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn exec(
    node: &LabNs,
    bin: &str,
    cmd: &str,
    conf: &Value,
    id: &str,
    netns: &str,
    cni_path: &str,
    phases: &mut Phases,
) -> Duration {
    let t = Instant::now();
    // A runtime on the node execs the plugin directly in the node's network namespace; fork from
    // a thread that has entered the namespace does the same (no `ip netns exec`, whose mount
    // namespace and sysfs remount cost more than the plugins themselves).
    let mut command = Command::new(bin);
    command
        .env_clear()
        .envs(timing_env().map(|v| ("CALICO_CNI_TIMING", v)))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = node
        .netns()
        .run(|| command.spawn())
        .expect("enter the node namespace")
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let d = t.elapsed();
    collect_phases(&out.stderr, phases);
    assert!(
        out.status.success(),
        "{bin} {cmd} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    d
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn run(
    node: &LabNs,
    bin: &str,
    conf: &Value,
    cni_path: &str,
    n: usize,
    phases: &mut Phases,
) -> Vec<Duration> {
    let wls: Vec<LabNs> = (0..n).map(|_| LabNs::new("bw").unwrap()).collect();
    let mut v = Vec::with_capacity(n);
    for (i, wl) in wls.iter().enumerate() {
        let netns = format!("/var/run/netns/{}", wl.name());
        let id = format!("bench{i:04}");
        let add = exec(node, bin, "ADD", conf, &id, &netns, cni_path, phases);
        let del = exec(node, bin, "DEL", conf, &id, &netns, cni_path, phases);
        v.push(add + del);
    }
    v.sort();
    v
}

fn print_phases(phases: &Phases) {
    for (cmd, per_phase) in phases {
        let runs = per_phase.first().map_or(0, |(_, v)| v.len());
        let mut line = format!("calico {cmd} phases, median ms of {runs}:");
        if let Some((_, total)) = per_phase.iter().find(|(name, _)| name == "total") {
            let mut v = total.clone();
            v.sort_by(f64::total_cmp);
            let p99 = v[((v.len() as f64 - 1.0) * 0.99).round() as usize];
            line = format!(
                "calico {cmd} in-process total: p99 {p99:.2} ms, max {:.2} ms\n{line}",
                v[v.len() - 1]
            );
        }
        for (name, samples) in per_phase {
            let mut v = samples.clone();
            v.sort_by(f64::total_cmp);
            line.push_str(&format!(" {name}={:.2}", v[v.len() / 2]));
        }
        println!("{line}");
    }
}

fn main() {
    if !lab_available("cni bench") {
        return;
    }
    let n: usize = std::env::var("CNI_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let node = LabNs::new("bnode").unwrap();
    node.ip(&["route", "add", "169.254.1.1/32", "dev", "lo"])
        .unwrap();
    let db = dir.path().join("calico.db").display().to_string();

    // The pool, written the way calicoctl would.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kv = calico_datastore::config::connect(
            &calico_datastore::config::DatastoreConfig::embedded(&db),
        )
        .await
        .unwrap();
        let client = calico_datastore::client::Client::new(kv);
        let pool = calico_model::AnyResource::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "bench"}, "spec": {"cidr": "10.90.0.0/16"}
        }))
        .unwrap();
        client.apply(pool).await.unwrap();
    });

    let calico_conf = json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
        "nodename": "bench-node", "datastore_type": "embedded", "datastore_path": db,
        "mtu": 1450, "ipam": {"type": "calico-ipam"}
    });
    let mut phases = Phases::new();
    let calico = run(&node, CALICO, &calico_conf, "/nonexistent", n, &mut phases);

    let bridge = format!("{REF_DIR}/bridge");
    let reference = if std::path::Path::new(&bridge).exists() {
        let ref_conf = json!({
            "cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": "cnibr0",
            "isGateway": true, "ipMasq": false, "mtu": 1450,
            "ipam": {"type": "host-local", "subnet": "10.91.0.0/16",
                     "dataDir": dir.path().join("host-local").display().to_string()}
        });
        Some(run(
            &node,
            &bridge,
            &ref_conf,
            REF_DIR,
            n,
            &mut Phases::new(),
        ))
    } else {
        println!(
            "SKIP reference: {bridge} not installed (apt install containernetworking-plugins)"
        );
        None
    };

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("CNI ADD+DEL latency, {n} sequential cycles, embedded datastore");
    println!(
        "{:<28} {:>9} {:>9} {:>9}",
        "plugins", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "{:<28} {:>9.2} {:>9.2} {:>9.2}   (target p50 <= 25, p99 <= 60)",
        "calico + calico-ipam",
        ms(pct(&calico, 0.5)),
        ms(pct(&calico, 0.99)),
        ms(*calico.last().unwrap())
    );
    if let Some(r) = reference {
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>9.2}",
            "bridge + host-local (ref)",
            ms(pct(&r, 0.5)),
            ms(pct(&r, 0.99)),
            ms(*r.last().unwrap())
        );
        println!(
            "ratio calico/reference: p50 {:.2}, p99 {:.2}",
            ms(pct(&calico, 0.5)) / ms(pct(&r, 0.5)),
            ms(pct(&calico, 0.99)) / ms(pct(&r, 0.99))
        );
    }
    print_phases(&phases);
}

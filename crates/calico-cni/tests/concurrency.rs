//! 32 `calico` plugin processes at once on one host: 32 concurrent ADDs (each workload in its own
//! namespace, one embedded datastore) all succeed with distinct addresses, every
//! WorkloadEndpoint exists, and `ipam check` with the endpoints as the live workloads finds
//! nothing wrong; 32 concurrent DELs then leave no handle, no endpoint and no host veth.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use calico_linux::testlab::{LabNs, lab_available};
use common::*;

const N: usize = 32;

#[test]
fn thirty_two_concurrent_adds_then_dels() {
    if !lab_available("thirty_two_concurrent_adds_then_dels") {
        return;
    }
    // /24 in /28 blocks: 32 addresses need at least two blocks, so claims race as well.
    let lab = Lab::new("10.79.0.0/24", 28);
    let wls: Vec<LabNs> = (0..N).map(|_| LabNs::new("wl").unwrap()).collect();
    let pods: Vec<(String, String, String)> = (0..N)
        .map(|i| {
            let container = format!("conc{i:02}0123456789abcdef");
            let args = k8s_args(&format!("pod-{i}"), &container);
            (container, args, netns_path(&wls[i]))
        })
        .collect();

    let started = Instant::now();
    let running: Vec<Running> = pods
        .iter()
        .map(|(c, a, ns)| lab.spawn("ADD", c, ns, a))
        .collect();
    let outs: Vec<Outcome> = running.into_iter().map(Running::finish).collect();
    let add_time = started.elapsed();

    let mut addrs = Vec::new();
    for (i, o) in outs.iter().enumerate() {
        assert!(o.ok, "ADD pod-{i}: {} {}", o.stdout, o.stderr);
        let ip = o.stdout["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.79.0.") && ip.ends_with("/32"), "{ip}");
        // The kernel agrees with the result.
        let inside = wls[i].ip(&["-o", "addr", "show", "dev", "eth0"]).unwrap();
        assert!(inside.contains(&ip), "pod-{i}: {inside}");
        addrs.push(ip);
    }
    let distinct: BTreeSet<&String> = addrs.iter().collect();
    assert_eq!(
        distinct.len(),
        N,
        "an address was handed out twice: {addrs:?}"
    );
    assert_eq!(lab.host_veths().len(), N, "{:?}", lab.host_veths());

    let weps = lab.weps();
    assert_eq!(weps.len(), N);
    let wep_ips: BTreeSet<String> = weps
        .iter()
        .flat_map(|w| w.spec.ip_networks.clone())
        .collect();
    let want: BTreeSet<String> = addrs.iter().cloned().collect();
    assert_eq!(wep_ips, want, "endpoint addresses vs ADD results");
    let wep_containers: BTreeSet<&str> =
        weps.iter().map(|w| w.spec.container_id.as_str()).collect();
    for (c, _, _) in &pods {
        assert!(wep_containers.contains(c.as_str()), "no endpoint for {c}");
    }
    assert_eq!(lab.handles().len(), N);
    let report = lab.rt.block_on(lab.ipam().check(&lab.live())).unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
    assert_eq!(report.summary.allocations, N);

    // Two workloads reach each other through the host.
    let (a, b) = (0, N - 1);
    let b_ip = addrs[b].trim_end_matches("/32");
    assert!(wls[a].ping(b_ip, 2).unwrap(), "ping pod-{a} -> {b_ip}");

    let started = Instant::now();
    let running: Vec<Running> = pods
        .iter()
        .map(|(c, a, ns)| lab.spawn("DEL", c, ns, a))
        .collect();
    let outs: Vec<Outcome> = running.into_iter().map(Running::finish).collect();
    let del_time = started.elapsed();
    for (i, o) in outs.iter().enumerate() {
        assert!(o.ok, "DEL pod-{i}: {} {}", o.stdout, o.stderr);
    }
    assert!(
        lab.handles().is_empty(),
        "handles left: {:?}",
        lab.handles()
    );
    assert!(
        lab.host_veths().is_empty(),
        "host veths left: {:?}",
        lab.host_veths()
    );
    assert!(lab.weps().is_empty(), "endpoints left");
    for (i, wl) in wls.iter().enumerate() {
        let links = wl.ip(&["-o", "link"]).unwrap();
        assert!(!links.contains("eth0"), "pod-{i}: eth0 left: {links}");
    }
    let report = lab.rt.block_on(lab.ipam().check(&lab.live())).unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
    eprintln!("{N} concurrent ADDs: {add_time:.2?}; {N} concurrent DELs: {del_time:.2?}");
}

//! `cargo bench -p calico-node --bench mesh`: BGP route propagation with real calico-node + BIRD
//! in namespace clusters (needs root and bird). Prints
//! * all nodes started → full route mesh, for 3 and 10 nodes (`MESH_BENCH_SIZES=3,10,...`);
//! * a new block on one node → its route installed on every other node (target ≤ 1 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use calico_linux::{Netlink, RouteFilter, RtNetlink, proto};
use common::{Cluster, wait_for, wait_full_mesh};

/// Milliseconds since midnight UTC (BIRD's `show route` times are local time; the lab host runs
/// in UTC).
fn ms_of_day(t: std::time::SystemTime) -> i64 {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() % 86_400_000) as i64
}

/// The `[<proto>… hh:mm:ss.mmm]` time of the route from protocol `proto…` in `birdc show route
/// all` output, as milliseconds of the day.
fn bird_time(shown: &str, proto: &str) -> Option<i64> {
    let line = shown.lines().find(|l| l.contains(&format!("[{proto}")))?;
    let t = line.split('[').nth(1)?.split_whitespace().nth(1)?;
    let t = t.trim_end_matches(']');
    let (hms, ms) = t.split_once('.')?;
    let mut parts = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().ok()?)
}

fn main() {
    if !calico_linux::testlab::lab_available("calico-node mesh bench")
        || !calico_linux::testlab::binary_in_path("bird")
    {
        eprintln!("SKIP mesh bench: needs root and bird");
        return;
    }
    let sizes: Vec<usize> = std::env::var("MESH_BENCH_SIZES")
        .unwrap_or_else(|_| "3,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for n in sizes {
        let mut c = Cluster::new(n);
        c.create_pool();
        // Blocks exist before the nodes start (as after a reboot of the whole cluster).
        let blocks: Vec<String> = (0..n)
            .map(|i| {
                let b = format!("10.65.{i}.0/26");
                c.claim_block(i, &b);
                b
            })
            .collect();
        let t0 = Instant::now();
        c.start_all(&[]);
        for i in 0..n {
            c.nodes[i].pid.expect("started");
        }
        let _ = wait_full_mesh(&c, &blocks, Duration::from_secs(120));
        println!(
            "{n:>3} nodes: all nodes started -> full route mesh: {:?}",
            t0.elapsed()
        );

        let nl: Vec<RtNetlink> = c
            .nodes
            .iter()
            .map(|node| {
                c.rt.block_on(async { RtNetlink::connect_in(node.ns.netns()) })
                    .unwrap()
            })
            .collect();
        let log = std::env::var_os("MESH_BENCH_LOG").is_some();
        let mut samples = Vec::new();
        let mut kernel = Vec::new();
        let mut learned = Vec::new();
        let mut statics = Vec::new();
        let mut imported_all = Vec::new();
        let want_gw: std::net::IpAddr = c.nodes[0].ip.parse().unwrap();
        for k in 0..5 {
            let cidr = format!("10.65.{}.64/26", 100 + k);
            let want_dst: ipnet::IpNet = cidr.parse().unwrap();
            let t0 = Instant::now();
            let wall0 = ms_of_day(std::time::SystemTime::now());
            c.claim_block(0, &cidr);
            // One netlink poll loop (no process spawned per poll, nothing serial in between):
            // felix-routes' blackhole (proto 80) in node-1's kernel, and the BIRD route on every
            // other node, each timed when first seen.
            let mut blackhole_at = None;
            let mut missing: Vec<usize> = (1..n).collect();
            let mut seen_at = vec![Duration::ZERO; n];
            wait_for("new block everywhere", Duration::from_secs(30), || {
                if blackhole_at.is_none()
                    && c.rt
                        .block_on(nl[0].list_routes(&RouteFilter::v4().protocol(proto::FELIX)))
                        .unwrap_or_default()
                        .iter()
                        .any(|r| r.dst == want_dst)
                {
                    blackhole_at = Some(t0.elapsed());
                }
                missing.retain(|&j| {
                    let routes =
                        c.rt.block_on(nl[j].list_routes(&RouteFilter::v4().protocol(proto::BIRD)))
                            .unwrap_or_default();
                    let seen = routes
                        .iter()
                        .any(|r| r.dst == want_dst && r.gateway == Some(want_gw));
                    if seen {
                        seen_at[j] = t0.elapsed();
                    }
                    !seen
                });
                (missing.is_empty() && blackhole_at.is_some()).then_some(())
            });
            samples.push(t0.elapsed());
            kernel.extend(blackhole_at);
            // When node-1's BIRD got the route, by BIRD's own clock (no polling delay): learned
            // from the kernel (proto 80 blackhole) and/or the static route of bird.cfg.
            let shown = c.birdc(0, &["show", "route", "for", &cidr, "all"]);
            let at = |proto: &str| {
                bird_time(&shown, proto).map(|t| Duration::from_millis((t - wall0).max(0) as u64))
            };
            learned.extend(at("kernel"));
            // Each peer's BIRD import time (it programs the kernel in the same step), by BIRD's
            // clock: free of the poll loop's granularity when the machine is loaded.
            let imported: Vec<Duration> = (1..n)
                .filter_map(|j| {
                    let shown = c.birdc(j, &["show", "route", "for", &cidr, "all"]);
                    bird_time(&shown, "Mesh")
                        .map(|t| Duration::from_millis((t - wall0).max(0) as u64))
                })
                .collect();
            if imported.len() == n - 1 {
                imported_all.extend(imported.iter().max().copied());
            }
            statics.extend(at("calico_blocks"));
            if log {
                println!(
                    "  {cidr}: everywhere {:?}; node-1 blackhole {blackhole_at:?}, learned by BIRD {:?}, static {:?}",
                    t0.elapsed(),
                    at("kernel"),
                    at("calico_blocks")
                );
                println!(
                    "    seen by the poll on nodes 2..{n} at (ms): {:?}; imported by their BIRD at (ms): {:?}",
                    seen_at[1..]
                        .iter()
                        .map(|d| d.as_millis())
                        .collect::<Vec<_>>(),
                    imported.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
                );
            }
        }
        if std::env::var_os("MESH_BENCH_LOG").is_some() {
            let log =
                std::fs::read_to_string(c.nodes[0].run_dir.join("node.log")).unwrap_or_default();
            for l in log
                .lines()
                .filter(|l| l.contains("bird.cfg changed") || l.contains("reconfigured"))
                .rev()
                .take(12)
            {
                println!("  node-1: {l}");
            }
        }
        samples.sort();
        for (what, v) in [
            ("blackhole in node-1's kernel (felix-routes)", &mut kernel),
            ("learned by node-1's BIRD from the kernel", &mut learned),
            (
                "static route in node-1's BIRD (render + reload)",
                &mut statics,
            ),
        ] {
            v.sort();
            if let (Some(m), Some(x)) = (v.get(v.len() / 2), v.last()) {
                println!(
                    "{n:>3} nodes: block on node-1 -> {what}: median {m:?}, max {x:?} ({} samples)",
                    v.len()
                );
            }
        }
        println!(
            "{n:>3} nodes: block on node-1 -> route on all others: median {:?}, max {:?} (5 samples)",
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    }
}

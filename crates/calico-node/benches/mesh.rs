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
        let mut samples = Vec::new();
        let mut local = Vec::new();
        for k in 0..5 {
            let cidr = format!("10.65.{}.64/26", 100 + k);
            let t0 = Instant::now();
            c.claim_block(0, &cidr);
            // Stage 1: node-1's BIRD has the new static route (render + birdc configure).
            wait_for("block in node-1's bird", Duration::from_secs(30), || {
                c.birdc(0, &["show", "route", "for", &cidr])
                    .contains(&cidr)
                    .then_some(())
            });
            local.push(t0.elapsed());
            // Poll over netlink (no `ip` process per poll), only nodes still missing it.
            let want_dst: ipnet::IpNet = cidr.parse().unwrap();
            let want_gw: std::net::IpAddr = c.nodes[0].ip.parse().unwrap();
            let mut missing: Vec<usize> = (1..n).collect();
            wait_for("new block everywhere", Duration::from_secs(30), || {
                missing.retain(|&j| {
                    let routes =
                        c.rt.block_on(nl[j].list_routes(&RouteFilter::v4().protocol(proto::BIRD)))
                            .unwrap_or_default();
                    !routes
                        .iter()
                        .any(|r| r.dst == want_dst && r.gateway == Some(want_gw))
                });
                missing.is_empty().then_some(())
            });
            samples.push(t0.elapsed());
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
        local.sort();
        println!(
            "{n:>3} nodes: block on node-1 -> in node-1's BIRD (render + reload): median {:?}",
            local[local.len() / 2]
        );
        println!(
            "{n:>3} nodes: block on node-1 -> route on all others: median {:?}, max {:?} (5 samples)",
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    }
}

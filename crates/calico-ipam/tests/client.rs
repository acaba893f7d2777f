//! IpamClient against the real SQLite backend: upstream's acceptance seeds (§1.11).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use calico_ipam::block::Affinity;
use calico_ipam::check::LiveWorkloads;
use calico_ipam::{
    AffinityState, AllowedUse, AssignIpArgs, AutoAssignArgs, BlockError, IpamConfig, IpamError,
    PoolConfig, ReleaseOptions, keys,
};
use common::*;
use time::OffsetDateTime;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn first_allocation_claims_one_block_and_returns_its_first_ordinal() {
    let dir = tempdir();
    let kv = sqlite(dir.path());
    let c = client(kv.clone(), vec![pool("p", "10.244.0.0/16", 26)]);
    let r = c.auto_assign(v4("node-1", "h1", 1)).await.unwrap();
    assert_eq!(r.v4.ips.len(), 1);
    let a = r.v4.ips[0];
    assert_eq!(a.ip.prefix_len(), 26, "returned with the block mask");
    assert_eq!(
        a.addr(),
        a.block.network(),
        "fresh block hands out ordinal 0"
    );
    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.blocks.len(), 1);
    assert_eq!(snap.blocks[0].affinity.as_deref(), Some("host:node-1"));
    assert!(snap.blocks[0].affinity_claim_time.is_some());
    assert_eq!(snap.affinities.len(), 1);
    assert_eq!(snap.affinities[0].state, AffinityState::Confirmed);
    assert_eq!(snap.handles["h1"].block[&a.block.to_string()], 1);
    let key = format!(
        "/calico/ipam/v2/host/node-1/ipv4/block/{}-26",
        a.block.network()
    );
    assert!(
        kv.get(&key).await.unwrap().is_some(),
        "affinity at upstream key {key}"
    );
    let attrs = c
        .get_assignment_attributes(a.addr())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attrs.0["node"], "node-1");
    assert_eq!(attrs.1.as_deref(), Some("h1"));
}

#[tokio::test]
async fn sixty_four_fill_a_block_and_the_sixty_fifth_claims_another() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.244.0.0/16", 26)]);
    let mut blocks = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for i in 0..64 {
        let r = c.auto_assign(v4("n", &format!("h{i}"), 1)).await.unwrap();
        blocks.insert(r.v4.ips[0].block);
        assert!(ips.insert(r.v4.ips[0].addr()));
    }
    assert_eq!(blocks.len(), 1);
    let r = c.auto_assign(v4("n", "h64", 1)).await.unwrap();
    assert!(
        !blocks.contains(&r.v4.ips[0].block),
        "65th address comes from a new block"
    );
    assert_eq!(c.snapshot().await.unwrap().blocks.len(), 2);
    // A multi-address request spanning blocks.
    let r = c.auto_assign(v4("n", "multi", 70)).await.unwrap();
    assert_eq!(r.v4.ips.len(), 70);
    let report = c
        .check(&LiveWorkloads::from_handles(
            (0..65)
                .map(|i| format!("h{i}"))
                .chain(["multi".to_string()]),
        ))
        .await
        .unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
}

#[tokio::test]
async fn block_limit_with_strict_affinity_and_rollback() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/24", 26)]);
    c.set_config(IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: true,
        max_blocks_per_host: 2,
    })
    .await
    .unwrap();
    let r = c.auto_assign(v4("n", "a", 128)).await.unwrap();
    assert_eq!(r.v4.ips.len(), 128);
    let err = c.auto_assign(v4("n", "b", 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::BlockLimit { limit: 2 }), "{err}");
    assert!(
        err.to_string()
            .contains("cannot allocate new block due to per host block limit")
    );
    // A request that partly fits is rolled back entirely.
    c.release_ips(vec![ReleaseOptions::ip(r.v4.ips[0].addr())])
        .await
        .unwrap();
    let err = c.auto_assign(v4("n", "c", 2)).await.unwrap_err();
    assert!(matches!(err, IpamError::BlockLimit { .. }));
    let snap = c.snapshot().await.unwrap();
    assert!(!snap.handles.contains_key("c"), "no handle left behind");
    assert_eq!(
        snap.blocks.iter().map(|b| b.in_use_count()).sum::<usize>(),
        127
    );
    // Per-request cap is also honoured (more restrictive wins).
    let mut args = v4("m", "d", 65);
    args.max_blocks_per_host = 1;
    assert!(matches!(
        c.auto_assign(args).await,
        Err(IpamError::BlockLimit { limit: 1 })
    ));
}

#[tokio::test]
async fn borrows_from_other_hosts_unless_strict() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/26", 26)]);
    let a = c.auto_assign(v4("host-a", "a1", 1)).await.unwrap();
    let b = c.auto_assign(v4("host-b", "b1", 1)).await.unwrap();
    assert_eq!(b.v4.ips.len(), 1, "{:?}", b.v4.msgs);
    assert_eq!(
        b.v4.ips[0].block, a.v4.ips[0].block,
        "borrowed from host-a's block"
    );
    let snap = c.snapshot().await.unwrap();
    assert_eq!(
        snap.blocks[0].affinity.as_deref(),
        Some("host:host-a"),
        "ownership unchanged"
    );

    c.set_config(IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: true,
        max_blocks_per_host: 0,
    })
    .await
    .unwrap();
    let s = c.auto_assign(v4("host-b", "b2", 1)).await.unwrap();
    assert!(s.v4.ips.is_empty());
    assert!(
        s.v4.partial_fulfillment_error(calico_ipam::IpVersion::V4)
            .unwrap()
            .contains("strict affinity")
    );
    // AssignIP into another host's block is refused with strict affinity.
    let err = c
        .assign_ip(AssignIpArgs {
            ip: Some(ip("10.0.0.40")),
            hostname: "host-b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::Block(BlockError::AffinityMismatch { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn release_then_allocate_is_fifo() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/24", 26)]);
    let r = c.auto_assign(v4("n", "a", 3)).await.unwrap();
    let first = r.v4.ips[0].addr();
    let rel = c
        .release_ips(vec![ReleaseOptions::ip(first)])
        .await
        .unwrap();
    assert_eq!(rel.released, vec![first]);
    let again = c.auto_assign(v4("n", "b", 1)).await.unwrap();
    assert_ne!(
        again.v4.ips[0].addr(),
        first,
        "a never-used address comes first"
    );
    assert_eq!(
        again.v4.ips[0].addr(),
        ip(&format!("{}", r.v4.ips[0].block.hosts().nth(2).unwrap()))
    );
    // Releasing an unallocated address reports it, and is not an error.
    let rel = c
        .release_ips(vec![
            ReleaseOptions::ip(first),
            ReleaseOptions::ip(ip("192.168.9.9")),
        ])
        .await
        .unwrap();
    assert_eq!(rel.not_allocated.len(), 2);
}

#[tokio::test]
async fn release_by_handle_is_idempotent() {
    let dir = tempdir();
    let kv = sqlite(dir.path());
    let c = client(kv.clone(), vec![pool("p", "10.0.0.0/24", 26)]);
    let r = c
        .auto_assign(v4("n", "k8s-pod-network.abc", 2))
        .await
        .unwrap();
    assert_eq!(
        c.ips_by_handle("k8s-pod-network.abc").await.unwrap().len(),
        2
    );
    let released = c.release_by_handle("k8s-pod-network.abc").await.unwrap();
    assert_eq!(released.len(), 2);
    assert!(
        kv.get(&keys::handle_key("k8s-pod-network.abc"))
            .await
            .unwrap()
            .is_none()
    );
    let err = c
        .release_by_handle("k8s-pod-network.abc")
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::HandleNotFound(_)));
    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.blocks.len(), 1, "affine block kept");
    assert!(snap.blocks[0].is_empty());
    assert_eq!(
        snap.blocks[0].unallocated[62..],
        [0, 1],
        "released ordinals at the tail"
    );
    assert_eq!(r.v4.ips[0].addr(), snap.blocks[0].ip_at(0));
}

#[tokio::test]
async fn assign_specific_ip() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/24", 26)]);
    let args = AssignIpArgs {
        ip: Some(ip("10.0.0.77")),
        handle_id: Some("static".into()),
        hostname: "n".into(),
        ..Default::default()
    };
    let a = c.assign_ip(args.clone()).await.unwrap();
    assert_eq!(a.ip.to_string(), "10.0.0.77/26");
    let snap = c.snapshot().await.unwrap();
    assert_eq!(
        snap.blocks[0].affinity.as_deref(),
        Some("host:n"),
        "block claimed on demand"
    );
    let err = c.assign_ip(args).await.unwrap_err();
    assert!(
        err.to_string().contains("already assigned in block"),
        "{err}"
    );
    let err = c
        .assign_ip(AssignIpArgs {
            ip: Some(ip("10.9.0.1")),
            hostname: "n".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NotInPool(_)));
    let mut lb = PoolConfig::new("lb", net("10.1.0.0/24"));
    lb.allowed_uses = vec![AllowedUse::LoadBalancer];
    c.set_pools(vec![pool("p", "10.0.0.0/24", 26), lb]);
    let err = c
        .assign_ip(AssignIpArgs {
            ip: Some(ip("10.1.0.1")),
            hostname: "n".into(),
            intended_use: Some(AllowedUse::Workload),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::UseNotAllowed { .. }));
    // The next auto-assign on the host continues in the same block, FIFO from ordinal 0.
    let r = c.auto_assign(v4("n", "x", 1)).await.unwrap();
    assert_eq!(r.v4.ips[0].addr(), ip("10.0.0.64"));
}

#[tokio::test]
async fn stale_release_with_wrong_sequence_number_is_rejected() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/24", 26)]);
    let r = c.auto_assign(v4("n", "a", 1)).await.unwrap();
    let addr = r.v4.ips[0].addr();
    let snap = c.snapshot().await.unwrap();
    let b = &snap.blocks[0];
    let seq = b.sequence_number_for(b.ordinal_of(addr).unwrap());
    let bad = ReleaseOptions {
        address: addr,
        handle: None,
        sequence_number: Some(seq + 1),
    };
    let res = c.release_ips(vec![bad]).await.unwrap();
    assert!(res.released.is_empty());
    assert!(matches!(
        res.failed[0].1,
        IpamError::Block(BlockError::BadSequenceNumber { .. })
    ));
    let good = ReleaseOptions {
        address: addr,
        handle: Some("a".into()),
        sequence_number: Some(seq),
    };
    assert_eq!(
        c.release_ips(vec![good]).await.unwrap().released,
        vec![addr]
    );
}

#[tokio::test]
async fn hosts_racing_for_the_last_block_produce_one_owner() {
    for strict in [false, true] {
        let dir = tempdir();
        let kv = sqlite(dir.path());
        let c = client(kv.clone(), vec![pool("p", "10.0.0.0/26", 26)]);
        c.set_config(IpamConfig {
            strict_affinity: strict,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        })
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for h in 0..8 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                c.auto_assign(v4(&format!("host-{h}"), &format!("w{h}"), 1))
                    .await
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.extend(t.await.unwrap().unwrap().v4.ips);
        }
        let snap = c.snapshot().await.unwrap();
        assert_eq!(snap.blocks.len(), 1);
        assert_eq!(
            snap.affinities.len(),
            1,
            "strict={strict}: {:?}",
            snap.affinities
        );
        let owner = snap.blocks[0].host().unwrap().to_string();
        assert_eq!(snap.affinities[0].owner, Affinity::host(&owner));
        let distinct: BTreeSet<IpAddr> = got.iter().map(|a| a.addr()).collect();
        assert_eq!(distinct.len(), got.len());
        if strict {
            assert_eq!(got.len(), 1, "only the owner allocates");
        } else {
            assert_eq!(got.len(), 8, "everyone else borrows");
        }
    }
}

#[tokio::test]
async fn empty_blocks_of_others_are_reclaimed_only_after_a_minute() {
    let dir = tempdir();
    let now = Arc::new(Mutex::new(OffsetDateTime::now_utc()));
    let clock = {
        let now = now.clone();
        move || *now.lock().unwrap()
    };
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/26", 26)]).with_clock(clock);
    c.set_config(IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: true,
        max_blocks_per_host: 0,
    })
    .await
    .unwrap();
    c.auto_assign(v4("host-a", "a", 1)).await.unwrap();
    c.release_by_handle("a").await.unwrap();
    *now.lock().unwrap() += time::Duration::seconds(30);
    let r = c.auto_assign(v4("host-b", "b", 1)).await.unwrap();
    assert!(r.v4.ips.is_empty(), "claim is too young to reclaim");
    *now.lock().unwrap() += time::Duration::minutes(2);
    let r = c.auto_assign(v4("host-b", "b", 1)).await.unwrap();
    assert_eq!(r.v4.ips.len(), 1);
    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.blocks[0].affinity.as_deref(), Some("host:host-b"));
    assert_eq!(snap.affinities.len(), 1);
    assert_eq!(snap.affinities[0].owner, Affinity::host("host-b"));
}

#[tokio::test]
async fn upstream_written_states_are_repaired() {
    let dir = tempdir();
    let kv = sqlite(dir.path());
    let c = client(kv.clone(), vec![pool("p", "10.0.0.0/24", 26)]);
    let me = Affinity::host("n");
    let b0 = net("10.0.0.0/26");
    // 1. A pending affinity whose block carries our affinity: used and confirmed.
    let mut blk = calico_ipam::AllocationBlock::new(b0, OffsetDateTime::now_utc()).unwrap();
    blk.set_affinity(&me, OffsetDateTime::now_utc());
    kv.create(&keys::block_key(&b0), blk.to_json(), None)
        .await
        .unwrap();
    kv.create(
        &keys::affinity_key(&me, &b0),
        br#"{"state":"pending","deleted":false}"#.to_vec(),
        None,
    )
    .await
    .unwrap();
    let r = c.auto_assign(v4("n", "a", 1)).await.unwrap();
    assert_eq!(r.v4.ips[0].block, b0);
    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.affinities[0].state, AffinityState::Confirmed);
    // 2. An affinity without its block (crash upstream): the block is recreated.
    let b1 = net("10.0.0.64/26");
    kv.create(
        &keys::affinity_key(&Affinity::host("m"), &b1),
        Vec::new(),
        None,
    )
    .await
    .unwrap();
    let r = c.auto_assign(v4("m", "b", 1)).await.unwrap();
    assert_eq!(r.v4.ips[0].block, b1);
    // 3. A stale affinity (block owned by someone else): deleted, another block claimed.
    let b2 = net("10.0.0.128/26");
    let mut other = calico_ipam::AllocationBlock::new(b2, OffsetDateTime::now_utc()).unwrap();
    other.set_affinity(&Affinity::host("other"), OffsetDateTime::now_utc());
    kv.create(&keys::block_key(&b2), other.to_json(), None)
        .await
        .unwrap();
    kv.create(
        &keys::affinity_key(&Affinity::host("other"), &b2),
        br#"{"state":"confirmed"}"#.to_vec(),
        None,
    )
    .await
    .unwrap();
    kv.create(
        &keys::affinity_key(&Affinity::host("z"), &b2),
        br#"{"state":"confirmed"}"#.to_vec(),
        None,
    )
    .await
    .unwrap();
    let r = c.auto_assign(v4("z", "c", 1)).await.unwrap();
    assert_ne!(r.v4.ips[0].block, b2);
    assert!(
        kv.get(&keys::affinity_key(&Affinity::host("z"), &b2))
            .await
            .unwrap()
            .is_none()
    );
    let report = c
        .check(&LiveWorkloads::from_handles(["a", "b", "c"]))
        .await
        .unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
}

#[tokio::test]
async fn check_finds_leaks_and_release_from_report_fixes_them() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/24", 26)]);
    for h in ["w1", "w2", "w3"] {
        c.auto_assign(v4("n", h, 1)).await.unwrap();
    }
    let live = LiveWorkloads::from_handles(["w1", "w2"]);
    let report = c.check(&live).await.unwrap();
    assert_eq!(report.leaked_ips.len(), 1);
    assert_eq!(report.orphaned_handles, vec!["w3".to_string()]);
    let text = report.to_json_pretty();
    let reread = calico_ipam::CheckReport::from_json(&text).unwrap();
    let res = c.release_from_reports(&[report, reread]).await.unwrap();
    assert_eq!(res.ips.released.len(), 1);
    let after = c.check(&live).await.unwrap();
    assert_eq!(after.problem_count(), 0, "{}", after.to_json_pretty());
}

#[tokio::test]
async fn non_affine_blocks_are_deleted_when_emptied() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), vec![pool("p", "10.0.0.0/24", 26)]);
    let r = c.auto_assign(v4("n", "a", 2)).await.unwrap();
    // Node removed: affinities released, allocations stay.
    let released = c.release_host_affinities("n", false).await.unwrap();
    assert_eq!(released, vec![r.v4.ips[0].block]);
    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.blocks[0].affinity, None);
    assert!(snap.affinities.is_empty());
    c.release_ips(vec![ReleaseOptions::ip(r.v4.ips[0].addr())])
        .await
        .unwrap();
    assert_eq!(c.snapshot().await.unwrap().blocks.len(), 1);
    c.release_by_handle("a").await.unwrap();
    assert!(
        c.snapshot().await.unwrap().blocks.is_empty(),
        "empty unaffine block deleted"
    );
}

#[tokio::test]
async fn empty_affine_block_in_a_pool_that_no_longer_selects_the_node_is_released() {
    let dir = tempdir();
    let c = client(
        sqlite(dir.path()),
        vec![pool("p1", "10.0.0.0/24", 26), pool("p2", "10.1.0.0/24", 26)],
    );
    let mut args = v4("n", "a", 1);
    args.ipv4_pools = vec![net("10.0.0.0/24")];
    c.auto_assign(args).await.unwrap();
    c.release_by_handle("a").await.unwrap();
    let mut args = v4("n", "b", 1);
    args.pool_filter = Some(Arc::new(|p: &PoolConfig| p.name == "p2"));
    let r = c.auto_assign(args).await.unwrap();
    assert!(net("10.1.0.0/24").contains(&r.v4.ips[0].addr()));
    let snap = c.snapshot().await.unwrap();
    assert_eq!(snap.blocks.len(), 1, "the empty p1 block was given back");
    assert_eq!(snap.affinities.len(), 1);
}

#[tokio::test]
async fn ipv6_and_dual_stack() {
    let dir = tempdir();
    let c = client(
        sqlite(dir.path()),
        vec![
            pool("v4", "10.0.0.0/24", 26),
            pool("v6", "fd00:10::/120", 122),
        ],
    );
    let args = AutoAssignArgs {
        num6: 2,
        ..v4("n", "dual", 1)
    };
    let r = c.auto_assign(args).await.unwrap();
    assert_eq!(r.v4.ips.len(), 1);
    assert_eq!(r.v6.ips.len(), 2);
    assert_eq!(r.v6.ips[0].ip.prefix_len(), 122);
    assert_eq!(c.release_by_handle("dual").await.unwrap().len(), 3);
    // Asking for a family with no pool is an error, and rolls back the other family.
    let c4 = client(c.store().clone(), vec![pool("v4", "10.0.0.0/24", 26)]);
    let err = c4
        .auto_assign(AutoAssignArgs {
            num6: 1,
            ..v4("n", "x", 1)
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ipv6"), "{err}");
    assert!(c4.snapshot().await.unwrap().handles.is_empty());
}

#[tokio::test]
async fn config_is_stored_as_upstream_v1_json() {
    let dir = tempdir();
    let kv = sqlite(dir.path());
    let c = client(kv.clone(), vec![]);
    assert_eq!(c.get_config().await.unwrap(), IpamConfig::default());
    let cfg = IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: true,
        max_blocks_per_host: 7,
    };
    c.set_config(cfg).await.unwrap();
    let raw = kv.get("/calico/ipam/v2/config").await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(raw.value).unwrap(),
        r#"{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":7}"#
    );
    assert_eq!(c.get_config().await.unwrap(), cfg);
    let bad = IpamConfig {
        strict_affinity: false,
        auto_allocate_blocks: false,
        max_blocks_per_host: 0,
    };
    assert!(c.set_config(bad).await.is_err());
}

#[tokio::test]
async fn reservations_are_never_handed_out() {
    let dir = tempdir();
    let kv = sqlite(dir.path());
    let c = client(kv.clone(), vec![pool("p", "10.0.0.0/25", 26)]);
    let res = br#"{"kind":"IPReservation","metadata":{"name":"r"},
        "spec":{"reservedCIDRs":["10.0.0.0/30","10.0.0.64/26"]}}"#;
    kv.create(
        &format!("{}r", keys::IPRESERVATION_PREFIX),
        res.to_vec(),
        None,
    )
    .await
    .unwrap();
    let r = c.auto_assign(v4("n", "a", 70)).await.unwrap();
    assert_eq!(
        r.v4.ips.len(),
        60,
        "only 64 - 4 usable, the second block is reserved"
    );
    assert!(
        r.v4.ips
            .iter()
            .all(|a| a.addr() >= ip("10.0.0.4") && a.addr() < ip("10.0.0.64"))
    );
    let snap = c.snapshot().await.unwrap();
    assert_eq!(
        snap.blocks.len(),
        1,
        "the wholly reserved block is never claimed"
    );
}

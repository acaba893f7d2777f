//! Property tests of the pure core against a simple model: a FIFO queue of free ordinals and a
//! map from ordinal to handle.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use calico_ipam::Reservations;
use calico_ipam::block::{Affinity, AllocationBlock, ReleaseOptions};
use calico_ipam::pool::{BlockChoice, BlockIndex, ExistingBlock, PoolConfig, find_usable_block};
use ipnet::IpNet;
use proptest::prelude::*;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
enum Op {
    Assign { n: usize, handle: u8 },
    AssignSpecific { ordinal: usize, handle: u8 },
    Release { ordinal: usize },
    ReleaseByHandle { handle: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6, 0u8..4).prop_map(|(n, handle)| Op::Assign { n, handle }),
        1 => (0usize..16, 0u8..4).prop_map(|(ordinal, handle)| Op::AssignSpecific { ordinal, handle }),
        3 => (0usize..16).prop_map(|ordinal| Op::Release { ordinal }),
        1 => (0u8..4).prop_map(|handle| Op::ReleaseByHandle { handle }),
    ]
}

fn handle(h: u8) -> String {
    format!("h{h}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No double allocation, released addresses come back, hand-out order is the FIFO queue
    /// (fresh block: lowest first; released addresses at the back), attributes stay consistent,
    /// and the JSON form round-trips.
    #[test]
    fn block_matches_fifo_model(ops in prop::collection::vec(op(), 1..60)) {
        let cidr: IpNet = "10.1.2.0/28".parse().unwrap();
        let me = Affinity::host("n");
        let none = Reservations::default();
        let mut b = AllocationBlock::new(cidr, OffsetDateTime::UNIX_EPOCH).unwrap();
        b.set_affinity(&me, OffsetDateTime::UNIX_EPOCH);
        let mut free: VecDeque<usize> = (0..16).collect();
        let mut owner: BTreeMap<usize, u8> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Assign { n, handle: h } => {
                    let got = b.auto_assign(n, Some(&handle(h)), None, &me, true, &none).unwrap();
                    let want: Vec<IpAddr> = (0..n.min(free.len()))
                        .map(|_| free.pop_front().unwrap())
                        .inspect(|o| { owner.insert(*o, h); })
                        .map(|o| b.ip_at(o))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::AssignSpecific { ordinal, handle: h } => {
                    let ip = b.ip_at(ordinal);
                    let res = b.assign(ip, Some(&handle(h)), None, &me, true);
                    match owner.entry(ordinal) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert!(res.is_err(), "double allocation of {}", ip);
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            res.unwrap();
                            free.retain(|o| *o != ordinal);
                            slot.insert(h);
                        }
                    }
                }
                Op::Release { ordinal } => {
                    let ip = b.ip_at(ordinal);
                    let out = b.release(&[ReleaseOptions::ip(ip)]).unwrap();
                    if owner.remove(&ordinal).is_some() {
                        prop_assert_eq!(out.released, vec![ip]);
                        free.push_back(ordinal);
                    } else {
                        prop_assert_eq!(out.not_allocated, vec![ip]);
                    }
                }
                Op::ReleaseByHandle { handle: h } => {
                    let released = b.release_by_handle(&handle(h), None);
                    let want: Vec<usize> =
                        owner.iter().filter(|(_, v)| **v == h).map(|(o, _)| *o).collect();
                    prop_assert_eq!(released, want.iter().map(|o| b.ip_at(*o)).collect::<Vec<_>>());
                    for o in want {
                        owner.remove(&o);
                        free.push_back(o);
                    }
                }
            }
            b.validate().unwrap();
            prop_assert_eq!(b.unallocated.iter().copied().collect::<VecDeque<_>>(), free.clone());
            let allocated: BTreeSet<usize> = b.allocated().map(|(o, _, _)| o).collect();
            prop_assert_eq!(allocated, owner.keys().copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(b.num_free(&none) + b.in_use_count(), 16);
            for h in 0..4u8 {
                let want: Vec<IpAddr> =
                    owner.iter().filter(|(_, v)| **v == h).map(|(o, _)| b.ip_at(*o)).collect();
                prop_assert_eq!(b.ips_by_handle(&handle(h)), want);
            }
            // One attribute entry per distinct handle in use, none unreferenced.
            let handles: BTreeSet<u8> = owner.values().copied().collect();
            prop_assert_eq!(b.attributes.len(), handles.len());
            prop_assert_eq!(AllocationBlock::from_json(&b.to_json()).unwrap(), b.clone());
        }
    }

    /// Reserved addresses are never handed out, however many are asked for.
    #[test]
    fn reserved_addresses_never_assigned(
        reserved in prop::collection::btree_set(0u8..64, 0..40),
        asks in prop::collection::vec(1usize..20, 1..10),
    ) {
        let cidr: IpNet = "10.0.0.0/26".parse().unwrap();
        let res = Reservations::new(
            reserved.iter().map(|o| IpNet::from(IpAddr::from([10, 0, 0, *o]))),
        );
        let me = Affinity::host("n");
        let mut b = AllocationBlock::new(cidr, OffsetDateTime::UNIX_EPOCH).unwrap();
        let mut total = 0;
        for n in asks {
            for ip in b.auto_assign(n, Some("h"), None, &me, false, &res).unwrap() {
                prop_assert!(!res.matches_ip(ip));
                total += 1;
            }
        }
        prop_assert!(total <= 64 - reserved.len());
        prop_assert_eq!(b.num_free(&res), 64 - reserved.len() - total);
    }

    /// A host's block order visits every block of the pool exactly once.
    #[test]
    fn host_block_order_is_a_permutation(prefix in 20u8..=26, extra in 0u8..=6, host in "[a-z]{1,12}") {
        let block_size = (prefix + extra).min(32);
        let pool = PoolConfig::new("p", format!("10.64.0.0/{prefix}").parse::<IpNet>().unwrap().trunc())
            .with_block_size(block_size);
        let order: Vec<IpNet> = pool.blocks_for_host(&host, 0).collect();
        prop_assert_eq!(order.len() as u128, pool.num_blocks());
        let set: BTreeSet<IpNet> = order.iter().copied().collect();
        prop_assert_eq!(set.len(), order.len());
        prop_assert!(order.iter().all(|b| pool.cidr.contains(b) && b.prefix_len() == block_size));
    }

    /// The chooser never picks a block that exists and belongs to someone else, nor one that
    /// overlaps an existing block.
    #[test]
    fn chooser_never_picks_a_taken_block(
        taken in prop::collection::btree_map(0u8..16, (any::<bool>(), 0usize..3), 0..16),
        host in "[a-z]{1,8}",
    ) {
        let pool = PoolConfig::new("p", "10.0.0.0/24".parse().unwrap()).with_block_size(28);
        let blocks: Vec<IpNet> = pool.blocks().collect();
        let me = Affinity::host(&host);
        let existing: Vec<ExistingBlock> = taken
            .iter()
            .map(|(i, (mine, free))| ExistingBlock {
                cidr: blocks[*i as usize],
                affinity: Some(if *mine { me.to_string() } else { "host:someone-else".into() }),
                num_free: *free,
                empty: false,
                claim_time: None,
                sequence_number: 0,
            })
            .collect();
        let idx = BlockIndex::new(existing.clone());
        let s = find_usable_block(std::slice::from_ref(&pool), &idx, &me, &Reservations::default(),
            OffsetDateTime::UNIX_EPOCH, 0);
        match s.choice {
            Some(BlockChoice::Unclaimed(c)) => prop_assert!(idx.get(&c).is_none() && !idx.overlaps(&c)),
            Some(BlockChoice::OwnWithSpace(c)) => {
                let e = idx.get(&c).unwrap();
                prop_assert_eq!(e.affinity.clone(), Some(me.to_string()));
                prop_assert!(e.num_free > 0);
            }
            None => prop_assert!(existing.len() == 16
                && existing.iter().all(|e| e.affinity != Some(me.to_string()) || e.num_free == 0)),
        }
    }
}

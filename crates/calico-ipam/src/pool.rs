//! Pools as the allocator sees them, pool selection, block enumeration and the choice of the next
//! block to claim. Pure: existing blocks come in as a snapshot, time as a parameter.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::addr::{IpVersion, containing_net, ip_to_u128, make_net, net_size};
use crate::block::Affinity;
use crate::reservation::Reservations;

/// Minimum age of another host's claim on an empty block before we take the block over (stops two
/// hosts ping-ponging a block without either allocating from it).
pub const EMPTY_BLOCK_MIN_RECLAIM_AGE: time::Duration = time::Duration::minutes(1);

/// What a pool's addresses may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// Whether a pool is chosen automatically or only when asked for by CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AssignmentMode {
    #[default]
    Automatic,
    Manual,
}

/// The part of an IPPool the allocator needs. Deliberately independent of the resource model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub name: String,
    pub cidr: IpNet,
    /// Prefix length of the pool's blocks (26 / 122 by default).
    pub block_size: u8,
    /// The pool's nodeSelector text; the caller evaluates it (see [`PoolFilter`]).
    pub node_selector: String,
    pub disabled: bool,
    /// Empty means `[Workload, Tunnel]`, as upstream defaults it.
    pub allowed_uses: Vec<AllowedUse>,
    pub assignment_mode: AssignmentMode,
}

/// Decides whether a pool selects the requesting node (and namespace). Upstream evaluates the
/// pool's `nodeSelector` against the Node's labels; the selector engine lives elsewhere, so the
/// caller supplies the verdict.
pub type PoolFilter = Arc<dyn Fn(&PoolConfig) -> bool + Send + Sync>;

/// Why a pool is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("ip pool {name}: cidr {cidr:?} is not a valid cidr")]
    InvalidCidr { name: String, cidr: String },
    #[error("ip pool {name}: block size {block_size} is not a prefix length")]
    InvalidBlockSize { name: String, block_size: i64 },
    #[error("ip pool {name}: cidr {cidr}: block size {block_size} out of range {min}..={max}")]
    BlockSizeOutOfRange {
        name: String,
        cidr: IpNet,
        block_size: u8,
        min: u8,
        max: u8,
    },
    #[error("ip pool {name}: cidr {cidr} is smaller than its block size {block_size}")]
    PoolSmallerThanBlock {
        name: String,
        cidr: IpNet,
        block_size: u8,
    },
    #[error("ip pool {name}: cidr {cidr} is not a network address (host bits set)")]
    NotMasked { name: String, cidr: IpNet },
}

/// Why no pool could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolSelectionError {
    #[error("cannot find a qualified ippool (no enabled ipv{0} pools)")]
    NoQualifiedPool(u8),
    #[error("the given pool ({0}) does not exist, or is not enabled")]
    RequestedPoolUnusable(IpNet),
    #[error("no configured calico pools for node {0}")]
    NoPoolsForNode(String),
    #[error("cannot find a qualified ippool, no pools match the required use ({0:?})")]
    NoPoolForUse(AllowedUse),
}

impl PoolConfig {
    /// A pool with upstream's defaults: block size 26 (v4) / 122 (v6), selector `all()`,
    /// enabled, automatic, uses Workload+Tunnel.
    pub fn new(name: impl Into<String>, cidr: IpNet) -> Self {
        let block_size = match cidr {
            IpNet::V4(_) => 26,
            IpNet::V6(_) => 122,
        };
        Self {
            name: name.into(),
            cidr,
            block_size,
            node_selector: "all()".to_string(),
            disabled: false,
            allowed_uses: Vec::new(),
            assignment_mode: AssignmentMode::Automatic,
        }
    }

    pub fn with_block_size(mut self, block_size: u8) -> Self {
        self.block_size = block_size;
        self
    }

    pub fn version(&self) -> IpVersion {
        IpVersion::of_net(&self.cidr)
    }

    /// Upstream's IPPool rules that matter to the allocator.
    pub fn validate(&self) -> Result<(), PoolError> {
        let (min, max) = match self.cidr {
            IpNet::V4(_) => (20, 32),
            IpNet::V6(_) => (116, 128),
        };
        if self.cidr.trunc() != self.cidr {
            return Err(PoolError::NotMasked {
                name: self.name.clone(),
                cidr: self.cidr,
            });
        }
        if self.block_size < min || self.block_size > max {
            return Err(PoolError::BlockSizeOutOfRange {
                name: self.name.clone(),
                cidr: self.cidr,
                block_size: self.block_size,
                min,
                max,
            });
        }
        if self.cidr.prefix_len() > self.block_size && !self.disabled {
            return Err(PoolError::PoolSmallerThanBlock {
                name: self.name.clone(),
                cidr: self.cidr,
                block_size: self.block_size,
            });
        }
        Ok(())
    }

    /// Whether the pool may be used for `use_` (empty list = Workload and Tunnel).
    pub fn allows(&self, use_: AllowedUse) -> bool {
        if self.allowed_uses.is_empty() {
            matches!(use_, AllowedUse::Workload | AllowedUse::Tunnel)
        } else {
            self.allowed_uses.contains(&use_)
        }
    }

    /// Whether the selector selects every node, so no caller verdict is needed.
    pub fn selects_all_nodes(&self) -> bool {
        let s = self.node_selector.trim();
        s.is_empty() || s == "all()"
    }

    /// The block CIDR containing `ip` (which must be inside the pool).
    pub fn block_for(&self, ip: IpAddr) -> Option<IpNet> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        containing_net(ip, self.block_size)
    }

    /// Number of blocks in the pool (saturating).
    pub fn num_blocks(&self) -> u128 {
        let shift = u32::from(self.block_size.saturating_sub(self.cidr.prefix_len()));
        1u128.checked_shl(shift).unwrap_or(u128::MAX)
    }

    /// Every block of the pool in address order.
    pub fn blocks(&self) -> BlockOrder {
        BlockOrder::new(self, 0)
    }

    /// The pool's blocks in upstream's per-host order: start at a pseudo-random index seeded by
    /// the FNV-1 32-bit hash of the host name (so one host keeps retrying the same blocks and
    /// different hosts spread out), walk upwards and wrap around. Single-address blocks use
    /// `time_seed` instead, as upstream does. The permutation differs from upstream's (which
    /// depends on Go's math/rand), the properties are the same.
    pub fn blocks_for_host(&self, host: &str, time_seed: u64) -> BlockOrder {
        let seed = if self.block_size == self.version().bits() {
            time_seed
        } else {
            u64::from(fnv1_32(host.as_bytes()))
        };
        let n = self.num_blocks();
        let mut state = seed;
        let r = (u128::from(splitmix64(&mut state)) << 64) | u128::from(splitmix64(&mut state));
        let start = if n == 0 { 0 } else { r % n };
        BlockOrder::new(self, start)
    }

    /// The index of `block` within this pool's address-ordered block list.
    fn block_index(&self, block: &IpNet) -> u128 {
        let len = 1u128 << u32::from(self.version().bits() - self.block_size);
        (ip_to_u128(block.network()) - ip_to_u128(self.cidr.network())) / len
    }
}

/// Iterator over a pool's blocks from a starting index, wrapping, each block once.
#[derive(Debug, Clone)]
pub struct BlockOrder {
    base: u128,
    block_len: u128,
    num_blocks: u128,
    next: u128,
    returned: u128,
    prefix: u8,
    version: IpVersion,
}

impl BlockOrder {
    fn new(pool: &PoolConfig, start: u128) -> Self {
        let version = pool.version();
        let host_bits = u32::from(version.bits().saturating_sub(pool.block_size));
        Self {
            base: ip_to_u128(pool.cidr.network()),
            block_len: 1u128.checked_shl(host_bits).unwrap_or(0),
            num_blocks: if pool.cidr.prefix_len() > pool.block_size {
                0
            } else {
                pool.num_blocks()
            },
            next: start,
            returned: 0,
            prefix: pool.block_size,
            version,
        }
    }
}

impl Iterator for BlockOrder {
    type Item = IpNet;
    fn next(&mut self) -> Option<IpNet> {
        if self.returned >= self.num_blocks {
            return None;
        }
        let idx = self.next;
        self.next = if idx + 1 >= self.num_blocks {
            0
        } else {
            idx + 1
        };
        self.returned += 1;
        make_net(self.base + idx * self.block_len, self.prefix, self.version)
    }
}

/// FNV-1 (not 1a), 32 bits: the hash upstream seeds the block order with.
pub fn fnv1_32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(*b);
    }
    h
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The outcome of pool selection for one request.
#[derive(Debug, Clone, Default)]
pub struct PoolSelection {
    /// Pools the request may allocate from, in configuration order.
    pub usable: Vec<PoolConfig>,
    /// Pools that select the node regardless of use (blocks in other pools that are affine to
    /// this node and empty get released).
    pub selecting_node: Vec<PoolConfig>,
    /// Every enabled, valid pool of the family.
    pub enabled: Vec<PoolConfig>,
}

/// Upstream's pool resolution: enabled valid pools of the family; explicitly requested CIDRs must
/// each name such a pool and are then used regardless of selectors; otherwise automatic pools
/// the filter accepts; finally the allowed-use filter.
pub fn select_pools(
    pools: &[PoolConfig],
    version: IpVersion,
    requested: &[IpNet],
    use_: AllowedUse,
    host: &str,
    filter: Option<&PoolFilter>,
) -> Result<PoolSelection, PoolSelectionError> {
    let enabled: Vec<PoolConfig> = pools
        .iter()
        .filter(|p| p.version() == version && !p.disabled)
        .filter(|p| match p.validate() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "skipping invalid ip pool");
                false
            }
        })
        .cloned()
        .collect();
    if enabled.is_empty() {
        return Err(PoolSelectionError::NoQualifiedPool(version.number()));
    }
    let selecting_node: Vec<PoolConfig> = if requested.is_empty() {
        enabled
            .iter()
            .filter(|p| p.assignment_mode == AssignmentMode::Automatic)
            .filter(|p| match filter {
                Some(f) => f(p),
                None => {
                    if !p.selects_all_nodes() {
                        tracing::warn!(pool = %p.name, selector = %p.node_selector,
                            "pool has a node selector but no pool filter was given; not selecting it");
                    }
                    p.selects_all_nodes()
                }
            })
            .cloned()
            .collect()
    } else {
        let mut chosen = Vec::new();
        for r in requested {
            let r = r.trunc();
            let p = enabled
                .iter()
                .find(|p| p.cidr == r)
                .ok_or(PoolSelectionError::RequestedPoolUnusable(r))?;
            chosen.push(p.clone());
        }
        chosen
    };
    if selecting_node.is_empty() {
        return Err(PoolSelectionError::NoPoolsForNode(host.to_string()));
    }
    let usable: Vec<PoolConfig> = selecting_node
        .iter()
        .filter(|p| p.allows(use_))
        .cloned()
        .collect();
    if usable.is_empty() {
        return Err(PoolSelectionError::NoPoolForUse(use_));
    }
    Ok(PoolSelection {
        usable,
        selecting_node,
        enabled,
    })
}

/// The pool containing `ip`, if any.
pub fn pool_for_ip(pools: &[PoolConfig], ip: IpAddr) -> Option<&PoolConfig> {
    pools.iter().find(|p| p.cidr.contains(&ip))
}

/// What the block chooser needs to know about an existing block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingBlock {
    pub cidr: IpNet,
    pub affinity: Option<String>,
    /// Free addresses not covered by reservations.
    pub num_free: usize,
    /// No address in use.
    pub empty: bool,
    pub claim_time: Option<OffsetDateTime>,
    pub sequence_number: u64,
}

/// The existing blocks of one address family, indexed for exact and overlap lookups.
#[derive(Debug, Clone, Default)]
pub struct BlockIndex {
    by_cidr: BTreeMap<IpNet, ExistingBlock>,
    /// (first, last) address of every block, sorted by first.
    ranges: Vec<(u128, u128)>,
    /// `max_end[i]` = the largest last address among `ranges[..=i]`.
    max_end: Vec<u128>,
}

impl BlockIndex {
    pub fn new(blocks: impl IntoIterator<Item = ExistingBlock>) -> Self {
        let by_cidr: BTreeMap<IpNet, ExistingBlock> =
            blocks.into_iter().map(|b| (b.cidr, b)).collect();
        let mut ranges: Vec<(u128, u128)> = by_cidr
            .keys()
            .map(|c| {
                let s = ip_to_u128(c.network());
                (s, s + (net_size(c) - 1))
            })
            .collect();
        ranges.sort();
        let max_end = ranges
            .iter()
            .scan(0u128, |m, (_, e)| {
                *m = (*m).max(*e);
                Some(*m)
            })
            .collect();
        Self {
            by_cidr,
            ranges,
            max_end,
        }
    }

    pub fn get(&self, cidr: &IpNet) -> Option<&ExistingBlock> {
        self.by_cidr.get(cidr)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ExistingBlock> {
        self.by_cidr.values()
    }

    /// Whether some existing block overlaps `net` (a block of a different size, e.g. after a
    /// pool's block size was changed, would otherwise be double-covered).
    pub fn overlaps(&self, net: &IpNet) -> bool {
        // The index holds one address family (the client builds one per family).
        let s = ip_to_u128(net.network());
        let e = s + (net_size(net) - 1);
        // Ranges starting at or before `e` overlap iff one of them ends at or after `s`.
        let idx = self.ranges.partition_point(|(rs, _)| *rs <= e);
        idx > 0 && self.max_end[idx - 1] >= s
    }
}

/// The block the allocator should claim next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockChoice {
    /// No block exists for this CIDR yet: claim it.
    Unclaimed(IpNet),
    /// Already ours and has space (another process on this host claimed it meanwhile).
    OwnWithSpace(IpNet),
}

/// The result of a search: a block to claim, and (when none) empty blocks owned by others that
/// are old enough to reclaim, in search order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSearch {
    pub choice: Option<BlockChoice>,
    pub reclaimable: Vec<ExistingBlock>,
}

/// Upstream's `findUsableBlock`: walk each pool's blocks in the host's order; the first block CIDR
/// with no block object wins, as does a block already affine to us with free space; wholly
/// reserved blocks are skipped. Empty blocks of others whose claim is at least a minute old are
/// collected for reclaim.
pub fn find_usable_block(
    pools: &[PoolConfig],
    existing: &BlockIndex,
    affinity: &Affinity,
    reservations: &Reservations,
    now: OffsetDateTime,
    time_seed: u64,
) -> BlockSearch {
    let mine = affinity.to_string();
    let mut reclaimable = Vec::new();
    for pool in pools {
        for subnet in pool.blocks_for_host(&affinity.name, time_seed) {
            if !reservations.is_empty() && reservations.matches_whole(&subnet) {
                continue;
            }
            match existing.get(&subnet) {
                None if !existing.overlaps(&subnet) => {
                    return BlockSearch {
                        choice: Some(BlockChoice::Unclaimed(subnet)),
                        reclaimable: Vec::new(),
                    };
                }
                None => {}
                Some(info) if info.affinity.as_deref() == Some(&mine) && info.num_free > 0 => {
                    return BlockSearch {
                        choice: Some(BlockChoice::OwnWithSpace(subnet)),
                        reclaimable: Vec::new(),
                    };
                }
                Some(info) if info.empty && info.num_free > 0 => {
                    let old_enough = info
                        .claim_time
                        .is_none_or(|t| now - t >= EMPTY_BLOCK_MIN_RECLAIM_AGE);
                    if old_enough {
                        reclaimable.push(info.clone());
                    }
                }
                Some(_) => {}
            }
        }
    }
    BlockSearch {
        choice: None,
        reclaimable,
    }
}

/// Existing blocks to borrow from (strictAffinity off), pool by pool, each pool's blocks in the
/// host's order, skipping full ones.
pub fn borrow_candidates(
    pools: &[PoolConfig],
    existing: &BlockIndex,
    host: &str,
    time_seed: u64,
) -> Vec<IpNet> {
    let mut out = Vec::new();
    for pool in pools {
        let n = pool.num_blocks();
        let mut order = pool.blocks_for_host(host, time_seed);
        let Some(first) = order.next() else { continue };
        let start = pool.block_index(&first);
        let mut in_pool: Vec<(u128, IpNet)> = existing
            .iter()
            .filter(|b| b.num_free > 0 && pool.cidr.contains(&b.cidr))
            .map(|b| {
                let idx = pool.block_index(&b.cidr.supernet_or_self(pool.block_size));
                ((idx + n - start) % n.max(1), b.cidr)
            })
            .collect();
        in_pool.sort();
        out.extend(in_pool.into_iter().map(|(_, c)| c));
    }
    out
}

trait SupernetOrSelf {
    fn supernet_or_self(&self, prefix: u8) -> IpNet;
}

impl SupernetOrSelf for IpNet {
    /// The `prefix`-sized network containing this one (itself if it is larger).
    fn supernet_or_self(&self, prefix: u8) -> IpNet {
        if self.prefix_len() <= prefix {
            *self
        } else {
            IpNet::new(self.network(), prefix)
                .map(|n| n.trunc())
                .unwrap_or(*self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn existing(cidr: &str, aff: Option<&str>, free: usize, empty: bool) -> ExistingBlock {
        ExistingBlock {
            cidr: n(cidr),
            affinity: aff.map(str::to_string),
            num_free: free,
            empty,
            claim_time: Some(OffsetDateTime::UNIX_EPOCH),
            sequence_number: 1,
        }
    }

    #[test]
    fn fnv1_matches_reference_vectors() {
        // FNV-1 32-bit test vectors (empty string and "a").
        assert_eq!(fnv1_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
    }

    #[test]
    fn host_order_is_a_deterministic_rotation_covering_every_block() {
        let p = PoolConfig::new("p", n("10.0.0.0/24"));
        let a: Vec<IpNet> = p.blocks_for_host("node-a", 0).collect();
        assert_eq!(a.len(), 4);
        assert_eq!(
            a,
            p.blocks_for_host("node-a", 99).collect::<Vec<_>>(),
            "time seed unused"
        );
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, p.blocks().collect::<Vec<_>>());
        // Consecutive, wrapping.
        let start = p.block_index(&a[0]);
        for (i, b) in a.iter().enumerate() {
            assert_eq!(p.block_index(b), (start + i as u128) % 4);
        }
        let big = PoolConfig::new("big", n("10.0.0.0/16"));
        let firsts: std::collections::BTreeSet<IpNet> = (0..20)
            .map(|i| big.blocks_for_host(&format!("node-{i}"), 0).next().unwrap())
            .collect();
        assert!(firsts.len() > 15, "hosts spread over the pool: {firsts:?}");
    }

    #[test]
    fn selection_rules() {
        let mut sel = PoolConfig::new("sel", n("10.1.0.0/16"));
        sel.node_selector = "rack == 'a'".into();
        let mut lb = PoolConfig::new("lb", n("10.2.0.0/16"));
        lb.allowed_uses = vec![AllowedUse::LoadBalancer];
        let mut off = PoolConfig::new("off", n("10.3.0.0/16"));
        off.disabled = true;
        let v6 = PoolConfig::new("v6", n("fd00::/64"));
        let pools = vec![sel.clone(), lb.clone(), off, v6];
        let f: PoolFilter = Arc::new(|p: &PoolConfig| p.name != "nope");
        let s = select_pools(
            &pools,
            IpVersion::V4,
            &[],
            AllowedUse::Workload,
            "h",
            Some(&f),
        )
        .unwrap();
        assert_eq!(
            s.usable.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["sel"]
        );
        assert_eq!(s.selecting_node.len(), 2);
        // Without a filter a non-trivial selector does not select.
        let e = select_pools(
            &pools[..1],
            IpVersion::V4,
            &[],
            AllowedUse::Workload,
            "h",
            None,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "no configured calico pools for node h"
        );
        let e = select_pools(
            &pools,
            IpVersion::V4,
            &[n("10.3.0.0/16")],
            AllowedUse::Workload,
            "h",
            None,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "the given pool (10.3.0.0/16) does not exist, or is not enabled"
        );
        // Requested pools ignore selectors.
        let s = select_pools(
            &pools,
            IpVersion::V4,
            &[n("10.1.0.0/16")],
            AllowedUse::Tunnel,
            "h",
            None,
        )
        .unwrap();
        assert_eq!(s.usable[0].name, "sel");
        let e = select_pools(
            &pools,
            IpVersion::V4,
            &[n("10.2.0.0/16")],
            AllowedUse::Workload,
            "h",
            None,
        );
        assert!(matches!(
            e,
            Err(PoolSelectionError::NoPoolForUse(AllowedUse::Workload))
        ));
        let e = select_pools(&[], IpVersion::V6, &[], AllowedUse::Workload, "h", None);
        assert!(matches!(e, Err(PoolSelectionError::NoQualifiedPool(6))));
    }

    #[test]
    fn validation() {
        assert!(PoolConfig::new("p", n("10.0.0.0/16")).validate().is_ok());
        assert!(
            PoolConfig::new("p", n("10.0.0.0/16"))
                .with_block_size(19)
                .validate()
                .is_err()
        );
        assert!(PoolConfig::new("p", n("10.0.0.0/28")).validate().is_err());
        let unmasked = PoolConfig {
            cidr: n("10.0.0.1/16"),
            ..PoolConfig::new("p", n("10.0.0.0/16"))
        };
        assert!(matches!(
            unmasked.validate(),
            Err(PoolError::NotMasked { .. })
        ));
    }

    #[test]
    fn find_usable_block_prefers_unclaimed_then_reclaims_old_empty_ones() {
        let p = PoolConfig::new("p", n("10.0.0.0/25")); // two /26 blocks
        let me = Affinity::host("me");
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::hours(1);
        let none = Reservations::default();
        let order: Vec<IpNet> = p.blocks_for_host("me", 0).collect();
        // Nothing exists: the first in host order.
        let s = find_usable_block(
            std::slice::from_ref(&p),
            &BlockIndex::default(),
            &me,
            &none,
            now,
            0,
        );
        assert_eq!(s.choice, Some(BlockChoice::Unclaimed(order[0])));
        // First taken by another host (full): the second.
        let idx = BlockIndex::new([existing(&order[0].to_string(), Some("host:x"), 0, false)]);
        let s = find_usable_block(std::slice::from_ref(&p), &idx, &me, &none, now, 0);
        assert_eq!(s.choice, Some(BlockChoice::Unclaimed(order[1])));
        // Second is ours with space.
        let idx = BlockIndex::new([
            existing(&order[0].to_string(), Some("host:x"), 0, false),
            existing(&order[1].to_string(), Some("host:me"), 3, false),
        ]);
        let s = find_usable_block(std::slice::from_ref(&p), &idx, &me, &none, now, 0);
        assert_eq!(s.choice, Some(BlockChoice::OwnWithSpace(order[1])));
        // Both held by others, one empty and old: reclaim candidate.
        let idx = BlockIndex::new([
            existing(&order[0].to_string(), Some("host:x"), 64, true),
            existing(&order[1].to_string(), Some("host:y"), 0, false),
        ]);
        let s = find_usable_block(std::slice::from_ref(&p), &idx, &me, &none, now, 0);
        assert_eq!(s.choice, None);
        assert_eq!(s.reclaimable.len(), 1);
        // Too young to reclaim.
        let young = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(30);
        let s = find_usable_block(std::slice::from_ref(&p), &idx, &me, &none, young, 0);
        assert!(s.reclaimable.is_empty());
        // Wholly reserved blocks are skipped; overlapping blocks of another size count as taken.
        let r = Reservations::new([order[0]]);
        let s = find_usable_block(
            std::slice::from_ref(&p),
            &BlockIndex::default(),
            &me,
            &r,
            now,
            0,
        );
        assert_eq!(s.choice, Some(BlockChoice::Unclaimed(order[1])));
        let idx = BlockIndex::new([existing("10.0.0.0/25", Some("host:z"), 0, false)]);
        let s = find_usable_block(std::slice::from_ref(&p), &idx, &me, &none, now, 0);
        assert_eq!(s.choice, None);
    }

    #[test]
    fn borrow_order_follows_host_order() {
        let p = PoolConfig::new("p", n("10.0.0.0/24"));
        let order: Vec<IpNet> = p.blocks_for_host("me", 0).collect();
        let idx = BlockIndex::new(
            order
                .iter()
                .map(|c| existing(&c.to_string(), Some("host:x"), 1, false)),
        );
        assert_eq!(
            borrow_candidates(std::slice::from_ref(&p), &idx, "me", 0),
            order
        );
    }
}

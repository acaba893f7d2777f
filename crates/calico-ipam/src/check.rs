//! The `ipam check` engine: a pure function from a snapshot of the IPAM objects plus the set of
//! live workloads to a report of problems, the JSON report format, and the release plan derived
//! from one or more reports (`calicoctl ipam release --from-report`). Also per-pool utilization
//! for `ipam show`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addr::nets_overlap;
use crate::affinity::AffinityState;
use crate::block::{
    Affinity, AllocationBlock, ReleaseOptions, WINDOWS_RESERVED_HANDLE, sanitize_handle,
};
use crate::handle::IpamHandle;
use crate::pool::PoolConfig;
use crate::reservation::Reservations;

/// Version of the report JSON layout.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// One affinity object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityRecord {
    pub owner: Affinity,
    pub cidr: IpNet,
    pub state: AffinityState,
}

/// A stored block that could not be decoded or is internally inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvalidBlock {
    pub key: String,
    pub reason: String,
}

/// Everything under `/calico/ipam/v2/`, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct IpamSnapshot {
    pub revision: i64,
    pub blocks: Vec<AllocationBlock>,
    pub invalid_blocks: Vec<InvalidBlock>,
    pub handles: BTreeMap<String, IpamHandle>,
    pub affinities: Vec<AffinityRecord>,
}

/// What is known to be alive: the handles of live workloads (pods, tunnel addresses, …) and,
/// optionally, the addresses each live workload reports using.
#[derive(Debug, Clone, Default)]
pub struct LiveWorkloads {
    pub handles: BTreeSet<String>,
    /// Address -> handles of live workloads that claim it.
    pub ips: BTreeMap<IpAddr, BTreeSet<String>>,
}

impl LiveWorkloads {
    pub fn from_handles<I: IntoIterator<Item = S>, S: Into<String>>(handles: I) -> Self {
        Self {
            handles: handles.into_iter().map(Into::into).collect(),
            ips: BTreeMap::new(),
        }
    }
    pub fn add_ip(&mut self, ip: IpAddr, handle: &str) {
        self.handles.insert(handle.to_string());
        self.ips.entry(ip).or_default().insert(handle.to_string());
    }
}

/// An allocation whose handle has no live workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeakedIp {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle: Option<String>,
    /// The allocation's sequence number: releasing with it refuses if the address was
    /// re-allocated since the report.
    pub sequence_number: u64,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandleCountMismatch {
    pub handle: String,
    pub block: String,
    pub recorded: u64,
    pub actual: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRef {
    pub ip: IpAddr,
    pub block: Option<IpNet>,
    pub handle: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultipleOwners {
    pub ip: IpAddr,
    /// `block:<cidr>` for each block allocating it, `workload:<handle>` for each live workload
    /// reporting it.
    pub owners: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultiplyClaimedBlock {
    pub block: IpNet,
    /// Every owner with a confirmed affinity, plus the block's own `affinity` field.
    pub claimants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityMismatch {
    pub block: IpNet,
    /// The owner named by the affinity object (`None`: the block claims an owner with no
    /// affinity object).
    pub affinity_object: Option<String>,
    /// The block's `affinity` field (`None`: no block object, or unaffine block).
    pub block_affinity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlappingBlocks {
    pub a: IpNet,
    pub b: IpNet,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckSummary {
    pub blocks: usize,
    pub affinities: usize,
    pub handles: usize,
    pub allocations: usize,
    pub problems: usize,
}

/// The `ipam check` report. Every list is sorted; `summary.problems` is the sum of their lengths.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub format_version: u32,
    pub datastore_revision: i64,
    pub summary: CheckSummary,
    /// Allocations whose handle belongs to no live workload.
    pub leaked_ips: Vec<LeakedIp>,
    /// Handle objects whose handle belongs to no live workload.
    pub orphaned_handles: Vec<String>,
    /// Handle objects that no allocation refers to.
    pub handles_without_ips: Vec<String>,
    /// Handle objects whose per-block count disagrees with the blocks.
    pub handle_count_mismatches: Vec<HandleCountMismatch>,
    /// Allocations naming a handle for which no handle object exists.
    pub allocations_without_handle_object: Vec<IpRef>,
    /// Addresses owned more than once (overlapping blocks, or several live workloads).
    pub multiple_owners: Vec<MultipleOwners>,
    /// Addresses live workloads use that no block allocates to them.
    pub in_use_without_allocation: Vec<IpRef>,
    /// Blocks with confirmed affinities from more than one owner.
    pub blocks_claimed_by_multiple_hosts: Vec<MultiplyClaimedBlock>,
    /// Affinity objects and block `affinity` fields that disagree (stale or dangling claims).
    pub affinity_mismatches: Vec<AffinityMismatch>,
    pub overlapping_blocks: Vec<OverlappingBlocks>,
    pub invalid_blocks: Vec<InvalidBlock>,
}

impl CheckReport {
    pub fn problem_count(&self) -> usize {
        self.leaked_ips.len()
            + self.orphaned_handles.len()
            + self.handles_without_ips.len()
            + self.handle_count_mismatches.len()
            + self.allocations_without_handle_object.len()
            + self.multiple_owners.len()
            + self.in_use_without_allocation.len()
            + self.blocks_claimed_by_multiple_hosts.len()
            + self.affinity_mismatches.len()
            + self.overlapping_blocks.len()
            + self.invalid_blocks.len()
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Runs every check over `snapshot`.
pub fn check(snapshot: &IpamSnapshot, live: &LiveWorkloads) -> CheckReport {
    let mut r = CheckReport {
        format_version: REPORT_FORMAT_VERSION,
        datastore_revision: snapshot.revision,
        invalid_blocks: snapshot.invalid_blocks.clone(),
        ..Default::default()
    };
    let live_handles: BTreeSet<&str> = live.handles.iter().map(|h| sanitize_handle(h)).collect();

    // Per handle: block -> actual count; per ip: owners.
    let mut actual: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut owners: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    let mut allocated_to: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    let mut allocations = 0;
    for b in &snapshot.blocks {
        if b.deleted {
            continue;
        }
        for (ordinal, ip, attr) in b.allocated() {
            allocations += 1;
            owners
                .entry(ip)
                .or_default()
                .push(format!("block:{}", b.cidr));
            let handle = attr
                .handle_id
                .as_deref()
                .map(sanitize_handle)
                .map(str::to_string);
            if let Some(h) = &handle {
                allocated_to.entry(ip).or_default().insert(h.clone());
                *actual
                    .entry(h.clone())
                    .or_default()
                    .entry(b.cidr.to_string())
                    .or_default() += 1;
                if !snapshot.handles.contains_key(h) && h != WINDOWS_RESERVED_HANDLE {
                    r.allocations_without_handle_object.push(IpRef {
                        ip,
                        block: Some(b.cidr),
                        handle: Some(h.clone()),
                    });
                }
            }
            let is_live = handle.as_deref().is_some_and(|h| {
                h.eq_ignore_ascii_case(WINDOWS_RESERVED_HANDLE) || live_handles.contains(h)
            });
            if !is_live {
                r.leaked_ips.push(LeakedIp {
                    ip,
                    block: b.cidr,
                    handle,
                    sequence_number: b.sequence_number_for(ordinal),
                    attributes: attr.secondary.clone().unwrap_or_default(),
                });
            }
        }
    }

    for (id, h) in &snapshot.handles {
        let sid = sanitize_handle(id);
        if !live_handles.contains(sid) && sid != WINDOWS_RESERVED_HANDLE {
            r.orphaned_handles.push(id.clone());
        }
        let real = actual.get(sid);
        if real.is_none_or(|m| m.is_empty()) {
            r.handles_without_ips.push(id.clone());
        }
        let empty = BTreeMap::new();
        let real = real.unwrap_or(&empty);
        let blocks: BTreeSet<&String> = h.block.keys().chain(real.keys()).collect();
        for block in blocks {
            let recorded = h.block.get(block).copied().unwrap_or(0);
            let got = real.get(block).copied().unwrap_or(0);
            if recorded != got {
                r.handle_count_mismatches.push(HandleCountMismatch {
                    handle: id.clone(),
                    block: block.clone(),
                    recorded,
                    actual: got,
                });
            }
        }
    }

    for (ip, users) in &live.ips {
        let mut all = owners.get(ip).cloned().unwrap_or_default();
        all.extend(users.iter().map(|u| format!("workload:{u}")));
        let block_owners = owners.get(ip).map_or(0, Vec::len);
        if block_owners > 1 || users.len() > 1 {
            owners.remove(ip);
            r.multiple_owners.push(MultipleOwners {
                ip: *ip,
                owners: all,
            });
        }
        for u in users {
            let held = allocated_to
                .get(ip)
                .is_some_and(|s| s.contains(sanitize_handle(u)));
            if !held {
                let block = snapshot
                    .blocks
                    .iter()
                    .find(|b| b.cidr.contains(ip))
                    .map(|b| b.cidr);
                r.in_use_without_allocation.push(IpRef {
                    ip: *ip,
                    block,
                    handle: Some(u.clone()),
                });
            }
        }
    }
    for (ip, o) in owners {
        if o.len() > 1 {
            r.multiple_owners.push(MultipleOwners { ip, owners: o });
        }
    }

    check_affinities(snapshot, &mut r);
    check_overlaps(snapshot, &mut r);

    r.leaked_ips.sort();
    r.orphaned_handles.sort();
    r.handles_without_ips.sort();
    r.handle_count_mismatches.sort();
    r.allocations_without_handle_object.sort();
    r.multiple_owners.sort();
    r.in_use_without_allocation.sort();
    r.blocks_claimed_by_multiple_hosts.sort();
    r.affinity_mismatches.sort();
    r.overlapping_blocks.sort();
    r.invalid_blocks.sort();
    r.summary = CheckSummary {
        blocks: snapshot.blocks.len() + snapshot.invalid_blocks.len(),
        affinities: snapshot.affinities.len(),
        handles: snapshot.handles.len(),
        allocations,
        problems: 0,
    };
    r.summary.problems = r.problem_count();
    r
}

fn check_affinities(snapshot: &IpamSnapshot, r: &mut CheckReport) {
    let blocks: BTreeMap<IpNet, &AllocationBlock> = snapshot
        .blocks
        .iter()
        .filter(|b| !b.deleted)
        .map(|b| (b.cidr, b))
        .collect();
    let mut confirmed: BTreeMap<IpNet, BTreeSet<String>> = BTreeMap::new();
    for a in &snapshot.affinities {
        if !a.state.is_confirmed() {
            continue; // pending claims count as absent
        }
        confirmed
            .entry(a.cidr)
            .or_default()
            .insert(a.owner.to_string());
    }
    for (cidr, owners) in &confirmed {
        let block_aff = blocks.get(cidr).and_then(|b| b.affinity.clone());
        let mut claimants = owners.clone();
        if let Some(a) = &block_aff {
            claimants.insert(a.clone());
        }
        if claimants.len() > 1 {
            r.blocks_claimed_by_multiple_hosts
                .push(MultiplyClaimedBlock {
                    block: *cidr,
                    claimants: claimants.into_iter().collect(),
                });
            continue;
        }
        for owner in owners {
            if block_aff.as_deref() != Some(owner.as_str()) {
                r.affinity_mismatches.push(AffinityMismatch {
                    block: *cidr,
                    affinity_object: Some(owner.clone()),
                    block_affinity: block_aff.clone(),
                });
            }
        }
    }
    // A block naming an owner that holds no affinity object for it.
    for (cidr, b) in &blocks {
        let Some(aff) = &b.affinity else { continue };
        let has_object = snapshot
            .affinities
            .iter()
            .any(|a| a.cidr == *cidr && a.owner.to_string() == *aff);
        if !has_object {
            r.affinity_mismatches.push(AffinityMismatch {
                block: *cidr,
                affinity_object: None,
                block_affinity: Some(aff.clone()),
            });
        }
    }
}

fn check_overlaps(snapshot: &IpamSnapshot, r: &mut CheckReport) {
    let mut cidrs: Vec<IpNet> = snapshot
        .blocks
        .iter()
        .filter(|b| !b.deleted)
        .map(|b| b.cidr)
        .collect();
    cidrs.sort();
    // Sorted by (family, network, prefix): an overlap shows up with a neighbour or a containing
    // block earlier in the list; compare each with the ones before it while they can still reach.
    for i in 0..cidrs.len() {
        for j in (0..i).rev() {
            if nets_overlap(&cidrs[j], &cidrs[i]) {
                r.overlapping_blocks.push(OverlappingBlocks {
                    a: cidrs[j],
                    b: cidrs[i],
                });
            } else if cidrs[j].prefix_len() >= cidrs[i].prefix_len() {
                // Blocks are mostly one size; stop once a same-or-smaller block does not reach.
                break;
            }
        }
    }
}

/// What `release --from-report` will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleasePlan {
    /// Addresses leaked in every report (with handle and sequence number, so a re-allocated
    /// address is not released).
    pub ips: Vec<ReleaseOptions>,
    /// Handle objects without addresses in every report.
    pub empty_handles: Vec<String>,
}

/// Only what every report agrees on is released: an address must be leaked, with the same handle
/// and sequence number, in all of them.
pub fn release_plan(reports: &[CheckReport]) -> ReleasePlan {
    let Some((first, rest)) = reports.split_first() else {
        return ReleasePlan::default();
    };
    let key = |l: &LeakedIp| (l.ip, l.handle.clone(), l.sequence_number);
    let mut ips: Vec<ReleaseOptions> = first
        .leaked_ips
        .iter()
        .filter(|l| {
            rest.iter()
                .all(|r| r.leaked_ips.iter().any(|o| key(o) == key(l)))
        })
        .map(|l| ReleaseOptions {
            address: l.ip,
            handle: l.handle.clone(),
            sequence_number: Some(l.sequence_number),
        })
        .collect();
    ips.sort_by_key(|o| o.address);
    let empty_handles = first
        .handles_without_ips
        .iter()
        .filter(|h| rest.iter().all(|r| r.handles_without_ips.contains(h)))
        .cloned()
        .collect();
    ReleasePlan { ips, empty_handles }
}

/// Utilization of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: IpNet,
    pub affinity: Option<String>,
    pub total: u128,
    pub in_use: u128,
    pub reserved: u128,
    pub free: u128,
}

/// Utilization of one pool (`ipam show`): IPS TOTAL / IN USE / RESERVED / FREE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub total: u128,
    pub in_use: u128,
    pub reserved: u128,
    pub free: u128,
    pub blocks: Vec<BlockUsage>,
}

/// Per-pool and per-block utilization. Blocks outside every pool are grouped under a pseudo-pool
/// named `orphaned allocation blocks`.
pub fn utilization(
    snapshot: &IpamSnapshot,
    pools: &[PoolConfig],
    reservations: &Reservations,
) -> Vec<PoolUsage> {
    let mut out: Vec<PoolUsage> = pools
        .iter()
        .map(|p| {
            let total = crate::addr::net_size(&p.cidr);
            let reserved = reserved_in(&p.cidr, reservations);
            PoolUsage {
                name: p.name.clone(),
                cidr: p.cidr,
                total,
                in_use: 0,
                reserved,
                free: total.saturating_sub(reserved),
                blocks: Vec::new(),
            }
        })
        .collect();
    let mut orphans: Vec<BlockUsage> = Vec::new();
    for b in snapshot.blocks.iter().filter(|b| !b.deleted) {
        let total = b.num_addresses() as u128;
        let in_use = b.in_use_count() as u128;
        let reserved = reserved_in(&b.cidr, reservations);
        let usage = BlockUsage {
            cidr: b.cidr,
            affinity: b.affinity.clone(),
            total,
            in_use,
            reserved,
            free: total.saturating_sub(in_use).saturating_sub(reserved),
        };
        match out.iter_mut().find(|p| p.cidr.contains(&b.cidr)) {
            Some(p) => {
                p.in_use += in_use;
                p.free = p.free.saturating_sub(in_use);
                p.blocks.push(usage);
            }
            None => orphans.push(usage),
        }
    }
    if !orphans.is_empty() {
        let in_use = orphans.iter().map(|b| b.in_use).sum();
        let total = orphans.iter().map(|b| b.total).sum();
        out.push(PoolUsage {
            name: "orphaned allocation blocks".to_string(),
            cidr: "0.0.0.0/0".parse().unwrap_or(orphans[0].cidr),
            total,
            in_use,
            reserved: 0,
            free: total - in_use,
            blocks: orphans,
        });
    }
    for p in &mut out {
        p.blocks.sort_by_key(|b| b.cidr);
    }
    out
}

/// Reserved addresses inside `net`, counting overlapping reservations once.
fn reserved_in(net: &IpNet, reservations: &Reservations) -> u128 {
    let start = crate::addr::ip_to_u128(net.network());
    let end = start + (crate::addr::net_size(net) - 1);
    let mut ranges: Vec<(u128, u128)> = reservations
        .cidrs()
        .iter()
        .filter(|c| nets_overlap(c, net))
        .map(|c| {
            let s = crate::addr::ip_to_u128(c.network());
            let e = s + (crate::addr::net_size(c) - 1);
            (s.max(start), e.min(end))
        })
        .collect();
    ranges.sort();
    let mut total = 0u128;
    let mut cur: Option<(u128, u128)> = None;
    for (s, e) in ranges {
        match cur {
            Some((cs, ce)) if s <= ce.saturating_add(1) => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs + 1;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs + 1;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::Affinity;
    use time::OffsetDateTime;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A consistent world: one block on node-a with two workloads' addresses.
    fn world() -> IpamSnapshot {
        let mut b = AllocationBlock::new(n("10.0.0.0/26"), OffsetDateTime::UNIX_EPOCH).unwrap();
        let a = Affinity::host("node-a");
        b.set_affinity(&a, OffsetDateTime::UNIX_EPOCH);
        let none = Reservations::default();
        b.auto_assign(1, Some("pod-1"), None, &a, true, &none)
            .unwrap();
        b.auto_assign(1, Some("pod-2"), None, &a, true, &none)
            .unwrap();
        let mut handles = BTreeMap::new();
        for h in ["pod-1", "pod-2"] {
            let mut o = IpamHandle::default();
            o.increment("10.0.0.0/26", 1);
            handles.insert(h.to_string(), o);
        }
        IpamSnapshot {
            revision: 7,
            blocks: vec![b],
            invalid_blocks: vec![],
            handles,
            affinities: vec![AffinityRecord {
                owner: a,
                cidr: n("10.0.0.0/26"),
                state: AffinityState::Confirmed,
            }],
        }
    }

    #[test]
    fn consistent_world_has_no_problems() {
        let r = check(&world(), &LiveWorkloads::from_handles(["pod-1", "pod-2"]));
        assert_eq!(r.problem_count(), 0, "{}", r.to_json_pretty());
        assert_eq!(r.summary.allocations, 2);
    }

    #[test]
    fn leak_and_orphaned_handle_and_release_plan() {
        let s = world();
        let r = check(&s, &LiveWorkloads::from_handles(["pod-1"]));
        assert_eq!(r.leaked_ips.len(), 1);
        assert_eq!(r.leaked_ips[0].ip, ip("10.0.0.1"));
        assert_eq!(r.orphaned_handles, vec!["pod-2".to_string()]);
        assert_eq!(r.summary.problems, 2);
        let back = CheckReport::from_json(&r.to_json_pretty()).unwrap();
        assert_eq!(back, r);
        let plan = release_plan(&[r.clone(), back]);
        assert_eq!(plan.ips.len(), 1);
        assert_eq!(plan.ips[0].handle.as_deref(), Some("pod-2"));
        // A report where the address is not leaked vetoes it.
        let clean = check(&s, &LiveWorkloads::from_handles(["pod-1", "pod-2"]));
        assert!(release_plan(&[r, clean]).ips.is_empty());
    }

    #[test]
    fn handle_problems() {
        let mut s = world();
        s.handles.insert("ghost".into(), IpamHandle::default());
        s.handles
            .get_mut("pod-1")
            .unwrap()
            .increment("10.0.0.0/26", 1);
        s.handles.remove("pod-2");
        let r = check(
            &s,
            &LiveWorkloads::from_handles(["pod-1", "pod-2", "ghost"]),
        );
        assert_eq!(r.handles_without_ips, vec!["ghost".to_string()]);
        assert_eq!(r.handle_count_mismatches.len(), 1);
        assert_eq!(r.handle_count_mismatches[0].recorded, 2);
        assert_eq!(r.allocations_without_handle_object.len(), 1);
        assert_eq!(r.problem_count(), 3);
    }

    #[test]
    fn multiple_owners_and_claims() {
        let mut s = world();
        // Overlapping block of another size holding the same first address.
        let mut big = AllocationBlock::new(n("10.0.0.0/25"), OffsetDateTime::UNIX_EPOCH).unwrap();
        let b = Affinity::host("node-b");
        big.set_affinity(&b, OffsetDateTime::UNIX_EPOCH);
        big.assign(ip("10.0.0.0"), Some("pod-1"), None, &b, true)
            .unwrap();
        s.blocks.push(big);
        s.handles
            .get_mut("pod-1")
            .unwrap()
            .increment("10.0.0.0/25", 1);
        s.affinities.push(AffinityRecord {
            owner: b.clone(),
            cidr: n("10.0.0.0/25"),
            state: AffinityState::Confirmed,
        });
        // A second host also claims the /26.
        s.affinities.push(AffinityRecord {
            owner: b,
            cidr: n("10.0.0.0/26"),
            state: AffinityState::Confirmed,
        });
        let mut live = LiveWorkloads::from_handles(["pod-1", "pod-2"]);
        live.add_ip(ip("10.0.0.9"), "pod-3");
        let r = check(&s, &live);
        assert_eq!(r.multiple_owners.len(), 1, "{:?}", r.multiple_owners);
        assert_eq!(r.multiple_owners[0].ip, ip("10.0.0.0"));
        assert_eq!(r.overlapping_blocks.len(), 1);
        assert_eq!(r.blocks_claimed_by_multiple_hosts.len(), 1);
        assert_eq!(r.in_use_without_allocation.len(), 1);
        // Pending claims do not count.
        s.affinities.last_mut().unwrap().state = AffinityState::Pending;
        let r = check(&s, &LiveWorkloads::from_handles(["pod-1", "pod-2"]));
        assert!(r.blocks_claimed_by_multiple_hosts.is_empty());
    }

    #[test]
    fn dangling_affinities() {
        let mut s = world();
        s.affinities.clear();
        s.affinities.push(AffinityRecord {
            owner: Affinity::host("node-z"),
            cidr: n("10.0.1.0/26"),
            state: AffinityState::Confirmed,
        });
        let r = check(&s, &LiveWorkloads::from_handles(["pod-1", "pod-2"]));
        assert_eq!(
            r.affinity_mismatches.len(),
            2,
            "{:?}",
            r.affinity_mismatches
        );
    }

    #[test]
    fn utilization_counts() {
        let s = world();
        let pools = [PoolConfig::new("p", n("10.0.0.0/24"))];
        let r = Reservations::new([n("10.0.0.60/30"), n("10.0.0.62/31")]);
        let u = utilization(&s, &pools, &r);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].total, u[0].in_use, u[0].reserved, u[0].free),
            (256, 2, 4, 250)
        );
        assert_eq!(u[0].blocks[0].free, 64 - 2 - 4);
    }
}

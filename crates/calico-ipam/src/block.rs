//! The allocation block: the unit of compare-and-swap. Pure data plus the operations on it; no I/O.
//!
//! The JSON form matches libcalico-go's etcd `model.AllocationBlock` so that blocks written by
//! either implementation can be read by the other.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::addr::{IpVersion, ip_to_u128, net_size, u128_to_ip};
use crate::reservation::Reservations;

/// Handle that upstream uses to pre-reserve Windows block addresses; such allocations do not make a
/// block "in use".
pub const WINDOWS_RESERVED_HANDLE: &str = "windows-reserved-ipam-handle";

/// The largest block we accept (2^16 addresses): bounds memory for a decoded block. Pool
/// validation already restricts block sizes to 20..32 (v4) and 116..128 (v6), i.e. 4096.
pub const MAX_BLOCK_ADDRESSES: u128 = 1 << 16;

/// Errors of block operations. Each names the block and the address involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {block}: ip {ip} is not in the block")]
    NotInBlock { block: IpNet, ip: IpAddr },
    #[error("block {block}: address {ip} already assigned in block")]
    AlreadyAssigned { block: IpNet, ip: IpAddr },
    #[error("block {block}: affinity {actual} does not match {wanted}")]
    AffinityMismatch {
        block: IpNet,
        actual: String,
        wanted: String,
    },
    #[error("block {block}: has no affinity and strict affinity is enabled")]
    NoAffinity { block: IpNet },
    #[error(
        "block {block}: ip {ip}: bad sequence number (requested {requested}, stored {expected})"
    )]
    BadSequenceNumber {
        block: IpNet,
        ip: IpAddr,
        requested: u64,
        expected: u64,
    },
    #[error("block {block}: ip {ip}: handle mismatch (requested {requested}, stored {expected})")]
    BadHandle {
        block: IpNet,
        ip: IpAddr,
        requested: String,
        expected: String,
    },
    #[error("block {block}: invalid: {reason}")]
    Invalid { block: IpNet, reason: String },
}

/// Whose block this is: `host:<node>` or `virtual:<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Affinity {
    pub kind: AffinityKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AffinityKind {
    Host,
    Virtual,
}

impl AffinityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityKind::Host => "host",
            AffinityKind::Virtual => "virtual",
        }
    }
}

impl Affinity {
    pub fn host(name: impl Into<String>) -> Self {
        Self {
            kind: AffinityKind::Host,
            name: name.into(),
        }
    }
    pub fn virtual_(name: impl Into<String>) -> Self {
        Self {
            kind: AffinityKind::Virtual,
            name: name.into(),
        }
    }
    /// Parses `host:<name>` / `virtual:<name>`.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(n) = s.strip_prefix("host:") {
            Some(Self::host(n))
        } else {
            s.strip_prefix("virtual:").map(Self::virtual_)
        }
    }
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// Metadata attached to one or more allocations (deduplicated: identical handle + attributes share
/// one entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    #[serde(rename = "handle_id", default)]
    pub handle_id: Option<String>,
    /// The owner attributes (`node`, `pod`, `namespace`, `timestamp`, `type`, …).
    #[serde(rename = "secondary", default)]
    pub secondary: Option<BTreeMap<String, String>>,
}

/// Asks to release one address, optionally only if it still belongs to `handle` and still has
/// the allocation `sequence_number` seen by the caller (protects against releasing an address that
/// was released and re-allocated in between).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOptions {
    pub address: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
}

impl ReleaseOptions {
    pub fn ip(address: IpAddr) -> Self {
        Self {
            address,
            handle: None,
            sequence_number: None,
        }
    }
}

/// What a release did to one block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// Addresses that were asked for but were not allocated.
    pub not_allocated: Vec<IpAddr>,
    /// Addresses released.
    pub released: Vec<IpAddr>,
    /// Released addresses per handle (for decrementing the handle objects).
    pub released_by_handle: BTreeMap<String, u64>,
}

/// One IPAM block, as stored at `/calico/ipam/v2/assignment/ipv4/block/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationBlock {
    pub cidr: IpNet,
    #[serde(default)]
    pub affinity: Option<String>,
    /// RFC 3339 time of the affinity claim (empty-block reclaim waits a minute after it).
    #[serde(
        rename = "affinity_claim_time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub affinity_claim_time: Option<String>,
    /// Entry `i` is the index into `attributes` of ordinal `i`'s allocation, `None` if free.
    #[serde(default, deserialize_with = "null_default")]
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals in hand-out order: allocation pops from the head, release appends.
    #[serde(default, deserialize_with = "null_default")]
    pub unallocated: Vec<usize>,
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Vec<AllocationAttribute>,
    /// Bumped on every write of the block.
    #[serde(rename = "sequenceNumber", default)]
    pub sequence_number: u64,
    /// Ordinal (as a decimal string) -> block sequence number when it was allocated.
    #[serde(
        rename = "sequenceNumberForAllocation",
        default,
        deserialize_with = "null_default"
    )]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
    /// Deprecated form of `affinity` (`<node>` only); read for compatibility, never written.
    #[serde(
        rename = "hostAffinity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_affinity: Option<String>,
    /// Deprecated and ignored upstream; kept so a round trip does not lose it.
    #[serde(rename = "strictAffinity", default, skip_serializing_if = "is_false")]
    pub strict_affinity: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Go writes nil slices and maps as `null`; treat that as empty.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Formats a time the way Kubernetes `metav1.Time` does (RFC 3339, whole seconds, UTC).
pub fn format_claim_time(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

impl AllocationBlock {
    /// A fresh block: every ordinal free, in order `0..n`. The sequence number starts at `now` in
    /// Unix nanoseconds so that a deleted and recreated block never reuses sequence numbers.
    pub fn new(cidr: IpNet, now: OffsetDateTime) -> Result<Self, BlockError> {
        let cidr = cidr.trunc();
        let size = net_size(&cidr);
        if size > MAX_BLOCK_ADDRESSES {
            return Err(BlockError::Invalid {
                block: cidr,
                reason: format!("block of {size} addresses exceeds {MAX_BLOCK_ADDRESSES}"),
            });
        }
        // Bounded by MAX_BLOCK_ADDRESSES above.
        let n = size as usize;
        let nanos = now.unix_timestamp_nanos();
        Ok(Self {
            cidr,
            affinity: None,
            affinity_claim_time: None,
            allocations: vec![None; n],
            unallocated: (0..n).collect(),
            attributes: Vec::new(),
            sequence_number: u64::try_from(nanos.max(0)).unwrap_or(u64::MAX),
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
            host_affinity: None,
            strict_affinity: false,
        })
    }

    /// Decodes a stored block, folding the legacy `hostAffinity` into `affinity`, and checks its
    /// internal consistency.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let mut b: AllocationBlock = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        b.cidr = b.cidr.trunc();
        if b.affinity.is_none()
            && let Some(h) = b.host_affinity.take()
        {
            b.affinity = Some(format!("host:{h}"));
        }
        b.validate().map_err(|e| e.to_string())?;
        Ok(b)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the invariants every operation relies on.
    pub fn validate(&self) -> Result<(), BlockError> {
        let invalid = |reason: String| BlockError::Invalid {
            block: self.cidr,
            reason,
        };
        let size = net_size(&self.cidr);
        if size > MAX_BLOCK_ADDRESSES {
            return Err(invalid(format!("block of {size} addresses is too large")));
        }
        let n = size as usize;
        if self.allocations.len() != n {
            return Err(invalid(format!(
                "allocations has {} entries, the block has {n} addresses",
                self.allocations.len()
            )));
        }
        for (ord, a) in self.allocations.iter().enumerate() {
            if let Some(idx) = a
                && *idx >= self.attributes.len()
            {
                return Err(invalid(format!(
                    "ordinal {ord} references attribute {idx} of {}",
                    self.attributes.len()
                )));
            }
        }
        let mut seen = vec![false; n];
        for &ord in &self.unallocated {
            if ord >= n {
                return Err(invalid(format!("unallocated ordinal {ord} out of range")));
            }
            if seen[ord] {
                return Err(invalid(format!("unallocated ordinal {ord} listed twice")));
            }
            if self.allocations[ord].is_some() {
                return Err(invalid(format!("ordinal {ord} is both allocated and free")));
            }
            seen[ord] = true;
        }
        // Every free ordinal should be queued; a missing one is only a leak of space, which
        // `ipam check` reports, so it does not make the block unusable.
        Ok(())
    }

    pub fn version(&self) -> IpVersion {
        IpVersion::of_net(&self.cidr)
    }

    pub fn num_addresses(&self) -> usize {
        self.allocations.len()
    }

    /// The ordinal of `ip` in this block.
    pub fn ordinal_of(&self, ip: IpAddr) -> Result<usize, BlockError> {
        if !self.cidr.contains(&ip) {
            return Err(BlockError::NotInBlock {
                block: self.cidr,
                ip,
            });
        }
        let ord = ip_to_u128(ip) - ip_to_u128(self.cidr.network());
        usize::try_from(ord)
            .ok()
            .filter(|o| *o < self.allocations.len())
            .ok_or(BlockError::NotInBlock {
                block: self.cidr,
                ip,
            })
    }

    /// The address at `ordinal`.
    pub fn ip_at(&self, ordinal: usize) -> IpAddr {
        u128_to_ip(
            ip_to_u128(self.cidr.network()) + ordinal as u128,
            self.version(),
        )
    }

    /// `ip` with this block's mask, as upstream returns assigned addresses.
    pub fn with_block_mask(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.cidr.prefix_len()).unwrap_or(self.cidr)
    }

    /// Parsed affinity (`None` when unaffine or unparsable).
    pub fn affinity(&self) -> Option<Affinity> {
        self.affinity.as_deref().and_then(Affinity::parse)
    }

    /// The node this block is affine to, if host-affine.
    pub fn host(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
    }

    pub fn claim_time(&self) -> Option<OffsetDateTime> {
        self.affinity_claim_time
            .as_deref()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
    }

    /// Sets the affinity and claim time.
    pub fn set_affinity(&mut self, affinity: &Affinity, now: OffsetDateTime) {
        self.affinity = Some(affinity.to_string());
        self.affinity_claim_time = Some(format_claim_time(now));
    }

    pub fn clear_affinity(&mut self) {
        self.affinity = None;
        self.affinity_claim_time = None;
    }

    /// Every write bumps the sequence number (done by the writer just before the CAS).
    pub fn bump_sequence(&mut self) {
        self.sequence_number = self.sequence_number.wrapping_add(1);
    }

    pub fn sequence_number_for(&self, ordinal: usize) -> u64 {
        self.sequence_number_for_allocation
            .get(&ordinal.to_string())
            .copied()
            .unwrap_or(0)
    }

    fn check_affinity(&self, affinity: &Affinity, affinity_check: bool) -> Result<(), BlockError> {
        match self.affinity.as_deref() {
            Some(actual) if affinity_check && actual != affinity.to_string() => {
                Err(BlockError::AffinityMismatch {
                    block: self.cidr,
                    actual: actual.to_string(),
                    wanted: affinity.to_string(),
                })
            }
            None if affinity_check => Err(BlockError::NoAffinity { block: self.cidr }),
            _ => Ok(()),
        }
    }

    fn find_or_add_attribute(
        &mut self,
        handle: Option<&str>,
        attrs: Option<&BTreeMap<String, String>>,
    ) -> usize {
        let wanted = AllocationAttribute {
            handle_id: handle.map(str::to_string),
            secondary: attrs.cloned(),
        };
        if let Some(i) = self.attributes.iter().position(|a| *a == wanted) {
            return i;
        }
        self.attributes.push(wanted);
        self.attributes.len() - 1
    }

    /// Assigns up to `num` addresses from the head of the free queue, skipping reserved ones
    /// (they stay queued, in order). With `affinity_check`, the block must be affine to
    /// `affinity`. Returns the addresses assigned (possibly fewer than `num`, possibly none).
    pub fn auto_assign(
        &mut self,
        num: usize,
        handle: Option<&str>,
        attrs: Option<&BTreeMap<String, String>>,
        affinity: &Affinity,
        affinity_check: bool,
        reservations: &Reservations,
    ) -> Result<Vec<IpAddr>, BlockError> {
        self.check_affinity(affinity, affinity_check)?;
        let mut ips = Vec::new();
        if num == 0 {
            return Ok(ips);
        }
        let mut kept = Vec::with_capacity(self.unallocated.len());
        let mut attr_index = None;
        let queue = std::mem::take(&mut self.unallocated);
        let mut rest = queue.into_iter();
        for ordinal in rest.by_ref() {
            let ip = self.ip_at(ordinal);
            if !reservations.is_empty() && reservations.matches_ip(ip) {
                kept.push(ordinal);
                continue;
            }
            let idx = *attr_index.get_or_insert_with(|| self.find_or_add_attribute(handle, attrs));
            self.allocations[ordinal] = Some(idx);
            self.sequence_number_for_allocation
                .insert(ordinal.to_string(), self.sequence_number);
            ips.push(ip);
            if ips.len() >= num {
                break;
            }
        }
        kept.extend(rest);
        self.unallocated = kept;
        Ok(ips)
    }

    /// Assigns one specific address.
    pub fn assign(
        &mut self,
        ip: IpAddr,
        handle: Option<&str>,
        attrs: Option<&BTreeMap<String, String>>,
        affinity: &Affinity,
        affinity_check: bool,
    ) -> Result<(), BlockError> {
        self.check_affinity(affinity, affinity_check)?;
        let ordinal = self.ordinal_of(ip)?;
        if self.allocations[ordinal].is_some() {
            return Err(BlockError::AlreadyAssigned {
                block: self.cidr,
                ip,
            });
        }
        let idx = self.find_or_add_attribute(handle, attrs);
        self.allocations[ordinal] = Some(idx);
        self.sequence_number_for_allocation
            .insert(ordinal.to_string(), self.sequence_number);
        self.unallocated.retain(|o| *o != ordinal);
        Ok(())
    }

    /// Releases the addresses in `opts` (all of which must be in this block). If any option's
    /// handle or sequence number does not match the stored allocation, nothing is released.
    /// Released ordinals go to the tail of the free queue in request order.
    pub fn release(&mut self, opts: &[ReleaseOptions]) -> Result<ReleaseOutcome, BlockError> {
        let mut out = ReleaseOutcome::default();
        let mut ordinals: Vec<usize> = Vec::new();
        for opt in opts {
            let ordinal = self.ordinal_of(opt.address)?;
            if ordinals.contains(&ordinal) || out.not_allocated.contains(&opt.address) {
                continue; // duplicate request
            }
            if let Some(requested) = opt.sequence_number {
                let expected = self.sequence_number_for(ordinal);
                if requested != expected {
                    return Err(BlockError::BadSequenceNumber {
                        block: self.cidr,
                        ip: opt.address,
                        requested,
                        expected,
                    });
                }
            }
            let Some(idx) = self.allocations[ordinal] else {
                out.not_allocated.push(opt.address);
                continue;
            };
            let stored = self.attributes[idx]
                .handle_id
                .as_deref()
                .map(sanitize_handle);
            if let Some(requested) = opt.handle.as_deref().map(sanitize_handle)
                && !requested.is_empty()
                && stored != Some(requested)
            {
                return Err(BlockError::BadHandle {
                    block: self.cidr,
                    ip: opt.address,
                    requested: requested.to_string(),
                    expected: stored.unwrap_or_default().to_string(),
                });
            }
            if let Some(h) = stored.filter(|h| !h.is_empty()) {
                *out.released_by_handle.entry(h.to_string()).or_default() += 1;
            }
            ordinals.push(ordinal);
        }
        for &ordinal in &ordinals {
            self.free_ordinal(ordinal);
            out.released.push(self.ip_at(ordinal));
        }
        self.compact_attributes();
        Ok(out)
    }

    /// Releases every address held by `handle` (only those whose allocation sequence number is
    /// `sequence_number`, when given). Returns the addresses released, in ordinal order.
    pub fn release_by_handle(&mut self, handle: &str, sequence_number: Option<u64>) -> Vec<IpAddr> {
        let handle = sanitize_handle(handle);
        let indexes = self.attribute_indexes_for_handle(handle);
        if indexes.is_empty() {
            return Vec::new();
        }
        let mut released = Vec::new();
        for ordinal in 0..self.allocations.len() {
            let Some(idx) = self.allocations[ordinal] else {
                continue;
            };
            if !indexes.contains(&idx) {
                continue;
            }
            if let Some(seq) = sequence_number
                && seq != self.sequence_number_for(ordinal)
            {
                tracing::warn!(block = %self.cidr, ordinal, "skipping release of ip with mismatched sequence number");
                continue;
            }
            self.free_ordinal(ordinal);
            released.push(self.ip_at(ordinal));
        }
        self.compact_attributes();
        released
    }

    fn free_ordinal(&mut self, ordinal: usize) {
        self.allocations[ordinal] = None;
        self.unallocated.push(ordinal);
        self.sequence_number_for_allocation
            .remove(&ordinal.to_string());
    }

    fn attribute_indexes_for_handle(&self, handle: &str) -> Vec<usize> {
        self.attributes
            .iter()
            .enumerate()
            .filter(|(_, a)| a.handle_id.as_deref().map(sanitize_handle) == Some(handle))
            .map(|(i, _)| i)
            .collect()
    }

    /// Drops attributes no allocation refers to and renumbers the rest (keeping their order).
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for idx in self.allocations.iter().flatten() {
            used[*idx] = true;
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut remap = vec![usize::MAX; self.attributes.len()];
        let mut next = 0;
        for (i, u) in used.iter().enumerate() {
            if *u {
                remap[i] = next;
                next += 1;
            }
        }
        let mut i = 0;
        self.attributes.retain(|_| {
            let keep = used[i];
            i += 1;
            keep
        });
        for a in self.allocations.iter_mut().flatten() {
            *a = remap[*a];
        }
    }

    /// Free, non-reserved addresses.
    pub fn num_free(&self, reservations: &Reservations) -> usize {
        if reservations.is_empty() || !reservations.matches_some(&self.cidr) {
            return self.unallocated.len();
        }
        if reservations.matches_whole(&self.cidr) {
            return 0;
        }
        self.unallocated
            .iter()
            .filter(|o| !reservations.matches_ip(self.ip_at(**o)))
            .count()
    }

    /// Whether no address is in use (Windows-reserved addresses do not count).
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().flatten().all(|idx| {
            self.attributes[*idx]
                .handle_id
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(WINDOWS_RESERVED_HANDLE))
        })
    }

    /// Allocated addresses with their attribute, in ordinal order.
    pub fn allocated(&self) -> impl Iterator<Item = (usize, IpAddr, &AllocationAttribute)> + '_ {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(|(o, a)| a.map(|idx| (o, self.ip_at(o), &self.attributes[idx])))
    }

    pub fn in_use_count(&self) -> usize {
        self.allocations.iter().flatten().count()
    }

    pub fn ips_by_handle(&self, handle: &str) -> Vec<IpAddr> {
        let handle = sanitize_handle(handle);
        self.allocated()
            .filter(|(_, _, a)| a.handle_id.as_deref().map(sanitize_handle) == Some(handle))
            .map(|(_, ip, _)| ip)
            .collect()
    }

    /// The attribute of the allocation holding `ip` (`None` when `ip` is free).
    pub fn attribute_for(&self, ip: IpAddr) -> Result<Option<&AllocationAttribute>, BlockError> {
        let ordinal = self.ordinal_of(ip)?;
        Ok(self.allocations[ordinal].map(|idx| &self.attributes[idx]))
    }
}

/// Handles written by an old host-local migration could carry a trailing `\r...`; upstream
/// compares only the part before it.
pub fn sanitize_handle(handle: &str) -> &str {
    handle.split('\r').next().unwrap_or(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str) -> AllocationBlock {
        AllocationBlock::new(cidr.parse().unwrap(), OffsetDateTime::UNIX_EPOCH).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn host(n: &str) -> Affinity {
        Affinity::host(n)
    }
    const NONE: &Reservations = &Reservations::empty();

    #[test]
    fn fresh_block_hands_out_in_order_from_ordinal_zero() {
        let mut b = block("10.0.0.0/30");
        let got = b
            .auto_assign(3, Some("h"), None, &host("n"), false, NONE)
            .unwrap();
        assert_eq!(got, vec![ip("10.0.0.0"), ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(b.unallocated, vec![3]);
        assert_eq!(b.attributes.len(), 1, "one shared attribute entry");
        assert_eq!(b.num_free(NONE), 1);
        let more = b
            .auto_assign(5, Some("h"), None, &host("n"), false, NONE)
            .unwrap();
        assert_eq!(more, vec![ip("10.0.0.3")]);
        assert!(
            b.auto_assign(1, Some("h"), None, &host("n"), false, NONE)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn released_address_goes_to_the_back_of_the_queue() {
        let mut b = block("10.0.0.0/29");
        b.auto_assign(2, Some("a"), None, &host("n"), false, NONE)
            .unwrap();
        let out = b.release(&[ReleaseOptions::ip(ip("10.0.0.0"))]).unwrap();
        assert_eq!(out.released, vec![ip("10.0.0.0")]);
        assert_eq!(out.released_by_handle.get("a"), Some(&1));
        assert_eq!(*b.unallocated.last().unwrap(), 0);
        let next = b
            .auto_assign(1, Some("b"), None, &host("n"), false, NONE)
            .unwrap();
        assert_eq!(
            next,
            vec![ip("10.0.0.2")],
            "FIFO: a never-used ordinal comes first"
        );
    }

    #[test]
    fn reserved_ips_are_skipped_but_stay_queued() {
        let mut b = block("10.0.0.0/29");
        let r = Reservations::new(["10.0.0.0/31".parse().unwrap()]);
        assert_eq!(b.num_free(&r), 6);
        let got = b.auto_assign(2, None, None, &host("n"), false, &r).unwrap();
        assert_eq!(got, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        assert_eq!(&b.unallocated[..2], &[0, 1]);
    }

    #[test]
    fn affinity_check() {
        let mut b = block("10.0.0.0/29");
        let err = b
            .auto_assign(1, None, None, &host("n"), true, NONE)
            .unwrap_err();
        assert!(matches!(err, BlockError::NoAffinity { .. }));
        b.set_affinity(&host("other"), OffsetDateTime::UNIX_EPOCH);
        let err = b
            .auto_assign(1, None, None, &host("n"), true, NONE)
            .unwrap_err();
        assert!(matches!(err, BlockError::AffinityMismatch { .. }), "{err}");
        assert_eq!(
            b.auto_assign(1, None, None, &host("n"), false, NONE)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn assign_specific_and_double_assign() {
        let mut b = block("10.0.0.0/29");
        b.assign(ip("10.0.0.5"), Some("h"), None, &host("n"), false)
            .unwrap();
        assert!(!b.unallocated.contains(&5));
        let err = b
            .assign(ip("10.0.0.5"), Some("h"), None, &host("n"), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "block 10.0.0.0/29: address 10.0.0.5 already assigned in block"
        );
        assert!(matches!(
            b.assign(ip("10.0.1.5"), None, None, &host("n"), false),
            Err(BlockError::NotInBlock { .. })
        ));
    }

    #[test]
    fn release_checks_sequence_and_handle() {
        let mut b = block("10.0.0.0/29");
        b.sequence_number = 7;
        b.auto_assign(1, Some("h1"), None, &host("n"), false, NONE)
            .unwrap();
        b.bump_sequence();
        let a = ip("10.0.0.0");
        let bad = ReleaseOptions {
            address: a,
            handle: None,
            sequence_number: Some(8),
        };
        assert!(matches!(
            b.release(&[bad]),
            Err(BlockError::BadSequenceNumber { .. })
        ));
        let bad = ReleaseOptions {
            address: a,
            handle: Some("h2".into()),
            sequence_number: None,
        };
        assert!(matches!(
            b.release(&[bad]),
            Err(BlockError::BadHandle { .. })
        ));
        assert_eq!(b.in_use_count(), 1, "failed releases change nothing");
        let good = ReleaseOptions {
            address: a,
            handle: Some("h1".into()),
            sequence_number: Some(7),
        };
        assert_eq!(b.release(&[good]).unwrap().released, vec![a]);
        assert!(b.is_empty());
        assert!(b.attributes.is_empty());
        let again = b.release(&[ReleaseOptions::ip(a)]).unwrap();
        assert_eq!(again.not_allocated, vec![a]);
    }

    #[test]
    fn release_by_handle_renumbers_attributes() {
        let mut b = block("10.0.0.0/28");
        b.auto_assign(2, Some("a"), None, &host("n"), false, NONE)
            .unwrap();
        b.auto_assign(2, Some("b"), None, &host("n"), false, NONE)
            .unwrap();
        b.auto_assign(1, Some("c"), None, &host("n"), false, NONE)
            .unwrap();
        let released = b.release_by_handle("b", None);
        assert_eq!(released, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        assert_eq!(b.attributes.len(), 2);
        assert_eq!(b.ips_by_handle("c"), vec![ip("10.0.0.4")]);
        assert_eq!(b.ips_by_handle("a"), vec![ip("10.0.0.0"), ip("10.0.0.1")]);
        assert!(b.release_by_handle("b", None).is_empty());
        b.validate().unwrap();
    }

    #[test]
    fn json_matches_upstream_shape() {
        let mut b = block("10.244.1.0/30");
        b.set_affinity(&host("node-1"), OffsetDateTime::UNIX_EPOCH);
        let attrs: BTreeMap<String, String> = [("node".to_string(), "node-1".to_string())]
            .into_iter()
            .collect();
        b.auto_assign(
            1,
            Some("k8s-pod-network.abc"),
            Some(&attrs),
            &host("node-1"),
            true,
            NONE,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b.to_json()).unwrap();
        assert_eq!(v["cidr"], "10.244.1.0/30");
        assert_eq!(v["affinity"], "host:node-1");
        assert_eq!(v["affinity_claim_time"], "1970-01-01T00:00:00Z");
        assert_eq!(v["allocations"], serde_json::json!([0, null, null, null]));
        assert_eq!(v["unallocated"], serde_json::json!([1, 2, 3]));
        assert_eq!(v["attributes"][0]["handle_id"], "k8s-pod-network.abc");
        assert_eq!(v["attributes"][0]["secondary"]["node"], "node-1");
        assert_eq!(v["sequenceNumberForAllocation"]["0"], 0);
        assert_eq!(v["deleted"], false);
        let back = AllocationBlock::from_json(&b.to_json()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn decodes_go_written_block_with_nulls_and_legacy_host_affinity() {
        let raw = br#"{"cidr":"10.0.0.0/31","affinity":null,"hostAffinity":"old",
            "allocations":[null,null],"unallocated":[1,0],"attributes":null,
            "sequenceNumber":5,"sequenceNumberForAllocation":null,"deleted":false}"#;
        let b = AllocationBlock::from_json(raw).unwrap();
        assert_eq!(b.host(), Some("old"));
        assert_eq!(b.unallocated, vec![1, 0]);
        let bad =
            br#"{"cidr":"10.0.0.0/31","allocations":[0,null],"unallocated":[1],"attributes":[]}"#;
        let err = AllocationBlock::from_json(bad).unwrap_err();
        assert!(err.contains("references attribute"), "{err}");
    }

    #[test]
    fn ipv6_ordinals() {
        let b = block("fd00::/122");
        assert_eq!(b.num_addresses(), 64);
        assert_eq!(b.ip_at(63), ip("fd00::3f"));
        assert_eq!(b.ordinal_of(ip("fd00::3f")).unwrap(), 63);
    }
}

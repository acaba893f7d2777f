//! The handle object: a secondary index from a handle ID to the blocks holding its addresses and
//! how many in each, so release-by-handle need not scan every block.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Stored at `/calico/ipam/v2/handle/<handleID>`: `{"block": {"<blockCIDR>": <count>}, "deleted"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamHandle {
    #[serde(default, deserialize_with = "null_map")]
    pub block: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
}

fn null_map<'de, D>(d: D) -> Result<BTreeMap<String, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<BTreeMap<String, u64>>::deserialize(d)?.unwrap_or_default())
}

impl IpamHandle {
    /// Adds `num` addresses in `block` (a CIDR string such as `10.244.1.0/26`).
    pub fn increment(&mut self, block: &str, num: u64) {
        *self.block.entry(block.to_string()).or_default() += num;
    }

    /// Removes `num` addresses in `block`, dropping the entry at zero. Returns how many were
    /// actually removed: a handle that under-counts (written by an older client, or by a crash
    /// between block and handle writes upstream) is clamped instead of failing the release.
    pub fn decrement(&mut self, block: &str, num: u64) -> u64 {
        let Some(count) = self.block.get_mut(block) else {
            return 0;
        };
        let removed = num.min(*count);
        *count -= removed;
        if *count == 0 {
            self.block.remove(block);
        }
        removed
    }

    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    pub fn total(&self) -> u64 {
        self.block.values().sum()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        // Upstream etcd handles could historically be empty values.
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_decrement_and_json() {
        let mut h = IpamHandle::default();
        h.increment("10.0.0.0/26", 2);
        h.increment("10.0.1.0/26", 1);
        assert_eq!(h.total(), 3);
        assert_eq!(h.decrement("10.0.0.0/26", 1), 1);
        assert_eq!(h.decrement("10.0.0.0/26", 5), 1, "clamped");
        assert_eq!(h.decrement("10.9.9.0/26", 1), 0);
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"block":{"10.0.1.0/26":1},"deleted":false}"#
        );
        h.decrement("10.0.1.0/26", 1);
        assert!(h.is_empty());
        assert_eq!(
            IpamHandle::from_json(br#"{"block":null}"#).unwrap(),
            IpamHandle::default()
        );
    }
}

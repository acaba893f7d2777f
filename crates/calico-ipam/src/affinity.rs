//! The block affinity object: which host claims which block, and how far the claim has got.

use serde::{Deserialize, Serialize};

/// `pending` -> `confirmed` -> `pendingDeletion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AffinityState {
    #[serde(rename = "confirmed")]
    Confirmed,
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "pendingDeletion")]
    PendingDeletion,
    /// Old etcd data carried an empty value; upstream treats it as confirmed.
    #[default]
    #[serde(rename = "")]
    Unset,
}

impl AffinityState {
    /// Whether the claim counts for ownership (pending claims are treated as absent).
    pub fn is_confirmed(self) -> bool {
        matches!(self, AffinityState::Confirmed | AffinityState::Unset)
    }
}

/// Stored at `/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`: `{"state": ..., "deleted": ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlockAffinity {
    #[serde(default)]
    pub state: AffinityState,
    #[serde(default)]
    pub deleted: bool,
}

impl BlockAffinity {
    pub fn confirmed() -> Self {
        Self {
            state: AffinityState::Confirmed,
            deleted: false,
        }
    }

    /// An empty value parses as `{}` (upstream's old etcd format).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
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
    fn json() {
        assert_eq!(
            String::from_utf8(BlockAffinity::confirmed().to_json()).unwrap(),
            r#"{"state":"confirmed","deleted":false}"#
        );
        assert_eq!(
            BlockAffinity::from_json(b"").unwrap().state,
            AffinityState::Unset
        );
        assert!(BlockAffinity::from_json(b"").unwrap().state.is_confirmed());
        let p = BlockAffinity::from_json(br#"{"state":"pending"}"#).unwrap();
        assert!(!p.state.is_confirmed());
    }
}

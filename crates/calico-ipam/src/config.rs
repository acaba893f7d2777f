//! Global IPAM configuration, stored at `/calico/ipam/v2/config` in upstream's v1 JSON.

use serde::{Deserialize, Serialize};

/// The block cap the allocator applies when neither the configuration nor the request sets one.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

/// IPAM configuration. `Default` is what applies when no configuration object exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// Never borrow addresses from blocks affine to other hosts.
    #[serde(rename = "strict_affinity", default, skip_serializing_if = "is_false")]
    pub strict_affinity: bool,
    /// Claim new blocks when the host's blocks are full. Note upstream's JSON omits `false`, so an
    /// existing object without this field means `false`.
    #[serde(
        rename = "auto_allocate_blocks",
        default,
        skip_serializing_if = "is_false"
    )]
    pub auto_allocate_blocks: bool,
    /// Blocks one host may own; `0` means the default of 20.
    #[serde(rename = "maxBlocksPerHost", default, skip_serializing_if = "is_zero")]
    pub max_blocks_per_host: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        }
    }
}

/// A configuration the library refuses to write (or to run with).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("ipam config: cannot disable both strictAffinity and autoAllocateBlocks")]
    NoWayToAllocate,
    #[error("ipam config: maxBlocksPerHost {0} requires strictAffinity to be enabled")]
    MaxBlocksWithoutStrictAffinity(u32),
    #[error("ipam config: maxBlocksPerHost {0} exceeds 1000000")]
    MaxBlocksTooLarge(u32),
    #[error("ipam config: invalid json: {0}")]
    Json(String),
}

impl IpamConfig {
    /// The cross-field rules upstream applies when setting the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.strict_affinity && !self.auto_allocate_blocks {
            return Err(ConfigError::NoWayToAllocate);
        }
        if self.max_blocks_per_host > 1_000_000 {
            return Err(ConfigError::MaxBlocksTooLarge(self.max_blocks_per_host));
        }
        if self.max_blocks_per_host > 0 && !self.strict_affinity {
            return Err(ConfigError::MaxBlocksWithoutStrictAffinity(
                self.max_blocks_per_host,
            ));
        }
        Ok(())
    }

    /// The cap on blocks per host for one request: the more restrictive of the global value and
    /// the per-request value (`0` = unset on either side), defaulting to 20.
    pub fn effective_max_blocks(&self, per_request: u32) -> u32 {
        let global = self.max_blocks_per_host;
        let cap = match (global, per_request) {
            (0, 0) => 0,
            (0, r) => r,
            (g, 0) => g,
            (g, r) => g.min(r),
        };
        if cap == 0 {
            DEFAULT_MAX_BLOCKS_PER_HOST
        } else {
            cap
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_json_and_defaults() {
        let c = IpamConfig::default();
        assert_eq!(
            String::from_utf8(c.to_json()).unwrap(),
            r#"{"auto_allocate_blocks":true}"#
        );
        let parsed =
            IpamConfig::from_json(br#"{"strict_affinity":true,"maxBlocksPerHost":4}"#).unwrap();
        assert!(parsed.strict_affinity);
        assert!(
            !parsed.auto_allocate_blocks,
            "omitted means false in an existing object"
        );
        assert_eq!(parsed.max_blocks_per_host, 4);
        assert_eq!(
            IpamConfig::from_json(b"{}").unwrap().validate(),
            Err(ConfigError::NoWayToAllocate)
        );
    }

    #[test]
    fn validation_and_caps() {
        let c = IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 3,
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::MaxBlocksWithoutStrictAffinity(3))
        );
        assert_eq!(IpamConfig::default().effective_max_blocks(0), 20);
        assert_eq!(IpamConfig::default().effective_max_blocks(5), 5);
        assert_eq!(c.effective_max_blocks(0), 3);
        assert_eq!(c.effective_max_blocks(10), 3);
        assert_eq!(c.effective_max_blocks(2), 2);
    }
}

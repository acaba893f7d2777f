//! CNI spec versions and the result shape each one uses.

use std::fmt;

use super::error::{CniError, ErrorCode};

/// Every version this plugin speaks, oldest first (the VERSION command lists them).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A supported spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    V010,
    V020,
    V030,
    V031,
    V040,
    V100,
    V110,
}

impl SpecVersion {
    /// Parses a `cniVersion`; an empty one means 0.2.0 (as libcni does). Unknown versions are
    /// error code 1 (incompatible CNI version) naming the value.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "" | "0.2.0" => Self::V020,
            "0.1.0" => Self::V010,
            "0.3.0" => Self::V030,
            "0.3.1" => Self::V031,
            "0.4.0" => Self::V040,
            "1.0.0" => Self::V100,
            "1.1.0" => Self::V110,
            other => {
                return Err(CniError::new(
                    ErrorCode::IncompatibleVersion,
                    format!("unsupported CNI version {other:?}"),
                    format!("supported versions: {}", SUPPORTED_VERSIONS.join(", ")),
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V010 => "0.1.0",
            Self::V020 => "0.2.0",
            Self::V030 => "0.3.0",
            Self::V031 => "0.3.1",
            Self::V040 => "0.4.0",
            Self::V100 => "1.0.0",
            Self::V110 => "1.1.0",
        }
    }

    /// 0.1.0 and 0.2.0 use the legacy `ip4`/`ip6` result.
    pub fn legacy_result(self) -> bool {
        self <= Self::V020
    }

    /// 0.3.x and 0.4.0 carry `ips[].version`.
    pub fn ips_have_version(self) -> bool {
        matches!(self, Self::V030 | Self::V031 | Self::V040)
    }

    pub fn has_check(self) -> bool {
        self >= Self::V040
    }

    pub fn has_gc_and_status(self) -> bool {
        self >= Self::V110
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VERSION command's output.
pub fn version_result(requested: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": if requested.is_empty() { "1.1.0" } else { requested },
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

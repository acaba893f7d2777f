//! CNI error results: `{"cniVersion", "code", "msg", "details"}` on stdout, non-zero exit.

use std::fmt;

/// Well-known error codes (spec 1.1.0 numbering) and ours (100+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion,
    UnsupportedField,
    UnknownContainer,
    InvalidEnvironment,
    Io,
    Decode,
    InvalidConfig,
    TryAgainLater,
    NotAvailable,
    NotAvailableLimited,
    /// Plugin-specific: datastore, IPAM or kernel failure (upstream Calico uses 100).
    Plugin,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::UnsupportedField => 2,
            Self::UnknownContainer => 3,
            Self::InvalidEnvironment => 4,
            Self::Io => 5,
            Self::Decode => 6,
            Self::InvalidConfig => 7,
            Self::TryAgainLater => 11,
            Self::NotAvailable => 50,
            Self::NotAvailableLimited => 51,
            Self::Plugin => 100,
        }
    }
}

/// An error as the CNI spec reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details)
        }
    }
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn plugin(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(ErrorCode::Plugin, msg, details)
    }

    /// The JSON error result for `cni_version` (the request's version, or the newest if unknown).
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": if cni_version.is_empty() { "1.1.0" } else { cni_version },
            "code": self.code.code(),
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = serde_json::Value::String(self.details.clone());
        }
        v
    }
}

//! The Calico selector language: tokenizer, recursive-descent parser, evaluator, canonical form
//! and unique ID (identical to upstream libcalico-go).
//!
//! IN PROGRESS: the signatures below are the contract other modules use; the bodies are being
//! written.

use std::collections::BTreeMap;
use std::fmt;

/// A parse error with the 0-based character column where it was detected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {input:?}: {message} at column {column}")]
pub struct ParseError {
    pub input: String,
    pub message: String,
    pub column: usize,
}

/// Anything labels can be read from.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    _private: (),
}

/// Parses a selector. Empty or blank input is `all()`.
pub fn parse(input: &str) -> Result<Selector, ParseError> {
    Err(ParseError { input: input.to_string(), message: "not implemented yet".into(), column: 0 })
}

impl Selector {
    /// Whether the selector matches the labels.
    pub fn evaluate(&self, _labels: &dyn Labels) -> bool {
        false
    }

    /// `"s:" + base64url_nopad(sha224("s:" + canonical))`, as upstream.
    pub fn unique_id(&self) -> String {
        String::new()
    }
}

/// The canonical form (upstream's `String()`).
impl fmt::Display for Selector {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

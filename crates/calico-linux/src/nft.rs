//! nftables: apply a transaction, list one of our tables as JSON, delete a table.
//!
//! The real implementation runs the `nft` binary (`nft -f -` with the script on stdin; the
//! kernel applies a file atomically). With [`NftCli::in_netns`] the process is spawned from a
//! thread inside the namespace, so it lives in that namespace from its first instruction — no
//! `ip netns exec` or `nsenter` needed.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use async_trait::async_trait;

use crate::netns::{NetNs, NetnsError};
pub use crate::nftnl::{ElementChange, element_script};

/// nftables table family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TableFamily {
    #[default]
    Inet,
    Ip,
    Ip6,
    Bridge,
    Netdev,
    Arp,
}

impl fmt::Display for TableFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableFamily::Inet => "inet",
            TableFamily::Ip => "ip",
            TableFamily::Ip6 => "ip6",
            TableFamily::Bridge => "bridge",
            TableFamily::Netdev => "netdev",
            TableFamily::Arp => "arp",
        })
    }
}

/// nft errors.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft -f -` rejected the transaction; nothing was applied.
    #[error("nft: apply transaction failed{}: {stderr}", failing_line_suffix(.line, .text))]
    Apply {
        /// 1-based line of the script nft complained about, if it said.
        line: Option<usize>,
        /// That line of the script.
        text: Option<String>,
        /// nft's complete stderr.
        stderr: String,
    },
    #[error("nft: table {family} {name}: {action}: {stderr}")]
    Table {
        family: TableFamily,
        name: String,
        action: &'static str,
        stderr: String,
    },
    #[error("nft: table {family} {name}: invalid name: want [A-Za-z][A-Za-z0-9_.-]*")]
    InvalidTableName { family: TableFamily, name: String },
    #[error("nft: table {family} {name}: output is not JSON: {source}")]
    Json {
        family: TableFamily,
        name: String,
        source: serde_json::Error,
    },
    #[error("nft: run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("nft: worker task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

fn failing_line_suffix(line: &Option<usize>, text: &Option<String>) -> String {
    match (line, text) {
        (Some(l), Some(t)) => format!(" at line {l} ({:?})", t.trim()),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// The nftables operations calico-rs needs.
#[async_trait]
pub trait Nft: Send + Sync {
    /// Apply `script` as one atomic transaction (`nft -f -`).
    async fn apply(&self, script: &str) -> Result<(), NftError>;
    /// `nft -j list table <family> <name>`; `None` when the table does not exist.
    async fn list_table(
        &self,
        family: TableFamily,
        name: &str,
    ) -> Result<Option<serde_json::Value>, NftError>;
    /// Delete a table; returns whether it existed.
    async fn delete_table(&self, family: TableFamily, name: &str) -> Result<bool, NftError>;
    /// Add or remove elements of existing sets, in the given order, as one atomic
    /// transaction. The default runs the equivalent `nft -f` script through [`Nft::apply`].
    async fn apply_elements(
        &self,
        family: TableFamily,
        table: &str,
        changes: &[ElementChange],
    ) -> Result<(), NftError> {
        validate_table_name(family, table)?;
        self.apply(&element_script(family, table, changes)).await
    }
}

/// The real implementation: runs the `nft` binary.
#[derive(Clone, Debug)]
pub struct NftCli {
    binary: PathBuf,
    netns: Option<NetNs>,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli::new()
    }
}

impl NftCli {
    /// `nft` from PATH, in the caller's namespace.
    pub fn new() -> Self {
        NftCli {
            binary: PathBuf::from("nft"),
            netns: None,
        }
    }

    /// `nft` from PATH, run inside `netns`.
    pub fn in_netns(netns: NetNs) -> Self {
        NftCli {
            binary: PathBuf::from("nft"),
            netns: Some(netns),
        }
    }

    /// Use another binary (tests, or a fixed path like /usr/sbin/nft).
    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = binary.into();
        self
    }

    async fn run(&self, args: Vec<String>, stdin: Option<String>) -> Result<Output, NftError> {
        let binary = self.binary.clone();
        let netns = self.netns.clone();
        tokio::task::spawn_blocking(move || {
            let spawn = || run_blocking(&binary, &args, stdin.as_deref());
            match netns {
                None => spawn(),
                Some(ns) => ns.run(spawn)?,
            }
        })
        .await
        .map_err(|e| NftError::Join(e.to_string()))?
    }
}

fn run_blocking(
    binary: &PathBuf,
    args: &[String],
    stdin: Option<&str>,
) -> Result<Output, NftError> {
    let spawn_err = |source| NftError::Spawn {
        binary: binary.clone(),
        source,
    };
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // nft reads the whole file before parsing, so writing everything first cannot
        // deadlock against a full stdout pipe. A write error (nft exited early) shows in its
        // stderr and exit status, which are reported below.
        let _ = pipe.write_all(text.as_bytes());
    }
    child.wait_with_output().map_err(spawn_err)
}

/// Parse the first `<file>:<line>:<col>...: Error:` location from nft's stderr.
pub fn parse_error_line(stderr: &str) -> Option<usize> {
    stderr.lines().find_map(|l| {
        let idx = l.find(": Error:")?;
        let loc = &l[..idx];
        let mut parts = loc.rsplitn(3, ':');
        let _col = parts.next()?;
        let line = parts.next()?;
        line.trim().parse().ok()
    })
}

fn validate_table_name(family: TableFamily, name: &str) -> Result<(), NftError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(NftError::InvalidTableName {
            family,
            name: name.to_string(),
        })
    }
}

fn is_no_such_table(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

#[async_trait]
impl Nft for NftCli {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        tracing::debug!(lines = script.lines().count(), "nft apply");
        let out = self
            .run(vec!["-f".into(), "-".into()], Some(script.to_string()))
            .await?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        let line = parse_error_line(&stderr);
        let text = line.and_then(|l| script.lines().nth(l.checked_sub(1)?).map(str::to_string));
        Err(NftError::Apply { line, text, stderr })
    }

    async fn list_table(
        &self,
        family: TableFamily,
        name: &str,
    ) -> Result<Option<serde_json::Value>, NftError> {
        validate_table_name(family, name)?;
        let args = ["-j", "list", "table", &family.to_string(), name]
            .map(str::to_string)
            .to_vec();
        let out = self.run(args, None).await?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if !out.status.success() {
            if is_no_such_table(&stderr) {
                return Ok(None);
            }
            return Err(NftError::Table {
                family,
                name: name.to_string(),
                action: "list",
                stderr,
            });
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|source| NftError::Json {
                family,
                name: name.to_string(),
                source,
            })
    }

    /// Sent as one nfnetlink batch when every set and element is of a shape
    /// [`crate::nftnl`] encodes (the `nft` binary would first dump the whole ruleset); else,
    /// or if the kernel rejects the batch (then nothing was applied), through `nft -f`.
    async fn apply_elements(
        &self,
        family: TableFamily,
        table: &str,
        changes: &[ElementChange],
    ) -> Result<(), NftError> {
        validate_table_name(family, table)?;
        if let Some(batch) = crate::nftnl::encode(family, table, changes) {
            let netns = self.netns.clone();
            let sent = tokio::task::spawn_blocking(move || match netns {
                None => crate::nftnl::send(&batch),
                Some(ns) => ns
                    .run(|| crate::nftnl::send(&batch))
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            })
            .await
            .map_err(|e| NftError::Join(e.to_string()))?;
            match sent {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(%table, error = %e, "nfnetlink element batch rejected; retrying with nft -f");
                }
            }
        }
        self.apply(&element_script(family, table, changes)).await
    }

    async fn delete_table(&self, family: TableFamily, name: &str) -> Result<bool, NftError> {
        validate_table_name(family, name)?;
        let args = ["delete", "table", &family.to_string(), name]
            .map(str::to_string)
            .to_vec();
        let out = self.run(args, None).await?;
        if out.status.success() {
            return Ok(true);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if is_no_such_table(&stderr) {
            return Ok(false);
        }
        Err(NftError::Table {
            family,
            name: name.to_string(),
            action: "delete",
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_failing_line() {
        let stderr = "/dev/stdin:3:3-5: Error: No symbol type information\n  foo bar\n  ^^^";
        assert_eq!(parse_error_line(stderr), Some(3));
        assert_eq!(parse_error_line("Error: No such file or directory"), None);
    }

    #[test]
    fn apply_error_message_carries_line_and_stderr() {
        let err = NftError::Apply {
            line: Some(3),
            text: Some("  foo bar".into()),
            stderr: "/dev/stdin:3:3-5: Error: No symbol type information".into(),
        };
        assert_eq!(
            err.to_string(),
            "nft: apply transaction failed at line 3 (\"foo bar\"): \
             /dev/stdin:3:3-5: Error: No symbol type information"
        );
    }

    #[test]
    fn table_names_are_validated() {
        validate_table_name(TableFamily::Inet, "calico").unwrap();
        validate_table_name(TableFamily::Inet, "cali-filter_1.x").unwrap();
        for bad in ["", "1abc", "a b", "a;flush ruleset", "a}"] {
            let err = validate_table_name(TableFamily::Inet, bad).unwrap_err();
            assert!(err.to_string().contains("invalid name"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn missing_binary_is_a_spawn_error_naming_it() {
        let nft = NftCli::new().with_binary("/nonexistent/nft");
        let err = nft.apply("flush ruleset\n").await.unwrap_err();
        assert!(
            err.to_string().starts_with("nft: run /nonexistent/nft:"),
            "{err}"
        );
    }
}

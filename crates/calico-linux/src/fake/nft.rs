use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::nft::{Nft, NftError, TableFamily};

#[derive(Debug, Default)]
struct Inner {
    transactions: Vec<String>,
    /// (family, name) → every script that mentioned the table since it was created.
    tables: BTreeMap<(TableFamily, String), Vec<String>>,
    apply_failures: VecDeque<NftError>,
}

/// In-memory [`Nft`]. It does not parse nft's language; it records each applied script and
/// tracks which tables exist from the table-level statements (`table <fam> <name>`,
/// `add table`, `delete table`, `destroy table`, `flush ruleset`). `list_table` returns a JSON
/// document with the nft metainfo and table objects only.
#[derive(Debug, Default)]
pub struct FakeNft {
    inner: Mutex<Inner>,
}

fn parse_family(s: &str) -> Option<TableFamily> {
    Some(match s {
        "inet" => TableFamily::Inet,
        "ip" => TableFamily::Ip,
        "ip6" => TableFamily::Ip6,
        "bridge" => TableFamily::Bridge,
        "netdev" => TableFamily::Netdev,
        "arp" => TableFamily::Arp,
        _ => return None,
    })
}

fn table_name(word: &str) -> String {
    word.trim_end_matches(['{', ';']).to_string()
}

impl FakeNft {
    pub fn new() -> Self {
        FakeNft::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every successfully applied script, in order.
    pub fn transactions(&self) -> Vec<String> {
        self.lock().transactions.clone()
    }

    /// Tables that currently exist, sorted.
    pub fn tables(&self) -> Vec<(TableFamily, String)> {
        self.lock().tables.keys().cloned().collect()
    }

    /// Scripts applied since table `family name` was (re)created.
    pub fn table_scripts(&self, family: TableFamily, name: &str) -> Vec<String> {
        self.lock()
            .tables
            .get(&(family, name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Make the next `apply` fail like nft would, with this stderr; the failing line is parsed
    /// from it as the real implementation does.
    pub fn fail_next_apply(&self, stderr: &str) {
        let line = crate::nft::parse_error_line(stderr);
        self.lock().apply_failures.push_back(NftError::Apply {
            line,
            text: None,
            stderr: stderr.to_string(),
        });
    }
}

#[async_trait]
impl Nft for FakeNft {
    async fn apply(&self, script: &str) -> Result<(), NftError> {
        let mut inner = self.lock();
        if let Some(err) = inner.apply_failures.pop_front() {
            return Err(match err {
                NftError::Apply { line, stderr, .. } => NftError::Apply {
                    line,
                    text: line
                        .and_then(|l| script.lines().nth(l.checked_sub(1)?).map(str::to_string)),
                    stderr,
                },
                other => other,
            });
        }
        // The kernel applies the whole file or nothing; so does the fake.
        let mut tables = inner.tables.clone();
        let mut touched: Vec<(TableFamily, String)> = Vec::new();
        for line in script.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["flush", "ruleset", ..] => tables.clear(),
                ["table", fam, name, ..] | ["add", "table", fam, name, ..] => {
                    if let Some(f) = parse_family(fam) {
                        let key = (f, table_name(name));
                        tables.entry(key.clone()).or_default();
                        touched.push(key);
                    }
                }
                ["delete", "table", fam, name, ..] | ["destroy", "table", fam, name, ..] => {
                    if let Some(f) = parse_family(fam) {
                        let key = (f, table_name(name));
                        if tables.remove(&key).is_none() && words[0] == "delete" {
                            return Err(NftError::Apply {
                                line: None,
                                text: Some(line.to_string()),
                                stderr: "Error: Could not process rule: No such file or directory"
                                    .to_string(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        touched.dedup();
        for key in touched {
            if let Some(scripts) = tables.get_mut(&key) {
                scripts.push(script.to_string());
            }
        }
        inner.tables = tables;
        inner.transactions.push(script.to_string());
        Ok(())
    }

    async fn list_table(
        &self,
        family: TableFamily,
        name: &str,
    ) -> Result<Option<serde_json::Value>, NftError> {
        let inner = self.lock();
        Ok(inner
            .tables
            .contains_key(&(family, name.to_string()))
            .then(|| {
                serde_json::json!({"nftables": [
                    {"metainfo": {"json_schema_version": 1}},
                    {"table": {"family": family.to_string(), "name": name}}
                ]})
            }))
    }

    async fn delete_table(&self, family: TableFamily, name: &str) -> Result<bool, NftError> {
        Ok(self
            .lock()
            .tables
            .remove(&(family, name.to_string()))
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tracks_tables_and_transactions() {
        let nft = FakeNft::new();
        nft.apply("table inet calico {\n chain c { }\n}\n")
            .await
            .unwrap();
        assert_eq!(
            nft.tables(),
            vec![(TableFamily::Inet, "calico".to_string())]
        );
        let json = nft
            .list_table(TableFamily::Inet, "calico")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(json["nftables"][1]["table"]["name"], "calico");
        assert!(
            nft.list_table(TableFamily::Ip, "calico")
                .await
                .unwrap()
                .is_none()
        );
        assert!(nft.delete_table(TableFamily::Inet, "calico").await.unwrap());
        assert!(!nft.delete_table(TableFamily::Inet, "calico").await.unwrap());
        assert_eq!(nft.transactions().len(), 1);
    }

    #[tokio::test]
    async fn injected_failure_names_the_line_and_applies_nothing() {
        let nft = FakeNft::new();
        nft.fail_next_apply("/dev/stdin:2:1-3: Error: syntax error");
        let err = nft.apply("table inet t {\nfoo\n}\n").await.unwrap_err();
        assert!(err.to_string().contains("at line 2 (\"foo\")"), "{err}");
        assert!(nft.tables().is_empty());
        assert!(nft.transactions().is_empty());
        let err = nft.apply("delete table inet nope\n").await.unwrap_err();
        assert!(
            err.to_string().contains("No such file or directory"),
            "{err}"
        );
    }
}

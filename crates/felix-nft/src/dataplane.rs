//! The thin applier: desired state → transactions through the [`Nft`] trait, plus the
//! periodic resync that compares the kernel's table with what we rendered and repairs drift.

use std::collections::BTreeMap;

use calico_linux::nft::{Nft, NftError, TableFamily};
use felix_calc::msg::ToDataplane;

use crate::render::{Config, RenderError, render};
use crate::ruleset::{Ruleset, rule_tag};
use crate::state::{DesiredState, StateError};

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("render table inet {table}: {source}")]
    Render { table: String, source: RenderError },
    #[error("table inet {table}: {source}")]
    Nft { table: String, source: NftError },
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyKind {
    /// Nothing to change.
    Noop,
    /// The whole table was replaced atomically (start of day, after a failure, on drift, or
    /// when a set or chain changed its type).
    Full,
    /// A minimal incremental transaction.
    Incremental,
}

/// The shape of a table as the kernel lists it: chains with their hook and the ordered tags of
/// their rules (see [`rule_tag`]), sets and maps with their element counts. A rule deleted,
/// added, edited or moved by hand changes the tags; an element added or removed changes a
/// count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSummary {
    pub chains: BTreeMap<String, (Option<String>, Vec<String>)>,
    pub sets: BTreeMap<String, usize>,
    pub maps: BTreeMap<String, usize>,
}

impl TableSummary {
    /// Summary of a rendering.
    pub fn of_ruleset(r: &Ruleset) -> Self {
        let hook = |base: &Option<String>| {
            base.as_ref().and_then(|b| {
                let mut words = b.split_whitespace();
                words.find(|w| *w == "hook")?;
                words.next().map(|w| w.trim_end_matches(';').to_string())
            })
        };
        TableSummary {
            chains: r
                .chains
                .iter()
                .map(|(n, c)| {
                    let tags = c.rules.iter().map(|r| rule_tag(n, r)).collect();
                    (n.clone(), (hook(&c.base), tags))
                })
                .collect(),
            sets: r
                .sets
                .iter()
                .map(|(n, s)| (n.clone(), s.elements.len()))
                .collect(),
            maps: r
                .maps
                .iter()
                .map(|(n, m)| (n.clone(), m.elements.len()))
                .collect(),
        }
    }

    /// Summary of `nft -j list table` output.
    pub fn of_json(v: &serde_json::Value) -> Self {
        let mut s = TableSummary::default();
        let items = v
            .get("nftables")
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default();
        let str_of =
            |o: &serde_json::Value, k: &str| o.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let elems =
            |o: &serde_json::Value| o.get("elem").and_then(|e| e.as_array()).map_or(0, Vec::len);
        for item in &items {
            if let Some(c) = item.get("chain") {
                if let Some(name) = str_of(c, "name") {
                    s.chains.entry(name).or_default().0 = str_of(c, "hook");
                }
            } else if let Some(r) = item.get("rule") {
                if let Some(name) = str_of(r, "chain") {
                    let tag = str_of(r, "comment")
                        .and_then(|c| c.split_whitespace().next().map(str::to_string))
                        .filter(|t| t.starts_with("h:"))
                        .unwrap_or_else(|| "untagged".to_string());
                    s.chains.entry(name).or_default().1.push(tag);
                }
            } else if let Some(set) = item.get("set") {
                if let Some(name) = str_of(set, "name") {
                    s.sets.insert(name, elems(set));
                }
            } else if let Some(m) = item.get("map")
                && let Some(name) = str_of(m, "name")
            {
                s.maps.insert(name, elems(m));
            }
        }
        s
    }
}

/// Felix's nftables dataplane over any [`Nft`] implementation.
pub struct NftDataplane<N: Nft> {
    nft: N,
    cfg: Config,
    state: DesiredState,
    /// What the kernel has, as far as we know; `None` forces a full replacement.
    applied: Option<Ruleset>,
}

impl<N: Nft> NftDataplane<N> {
    pub fn new(nft: N, cfg: Config) -> Self {
        NftDataplane {
            nft,
            cfg,
            state: DesiredState::new(),
            applied: None,
        }
    }

    pub fn nft(&self) -> &N {
        &self.nft
    }

    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// The last rendering that was applied successfully.
    pub fn applied(&self) -> Option<&Ruleset> {
        self.applied.as_ref()
    }

    /// The renderer configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Replace the renderer configuration (e.g. a live FelixConfiguration change); the next
    /// [`apply`](Self::apply) brings the kernel to it. Changing the table name forces a full
    /// replacement of the new table (the old one is left alone).
    pub fn set_config(&mut self, cfg: Config) {
        if cfg.table != self.cfg.table {
            self.applied = None;
        }
        self.cfg = cfg;
    }

    /// Replace the IP pools used for natOutgoing (no kernel I/O).
    pub fn set_ip_pools(&mut self, pools: BTreeMap<String, crate::state::PoolNat>) {
        self.state.ip_pools = pools;
    }

    /// Feed one calculation-graph message (no kernel I/O).
    pub fn on_message(&mut self, msg: &ToDataplane) -> Result<(), DataplaneError> {
        self.state.apply(msg)?;
        Ok(())
    }

    fn render(&self) -> Result<Ruleset, DataplaneError> {
        render(&self.state, &self.cfg).map_err(|source| DataplaneError::Render {
            table: self.cfg.table.clone(),
            source,
        })
    }

    /// The script the next [`apply`](Self::apply) would run (empty when nothing changed).
    pub fn pending_script(&self) -> Result<(String, ApplyKind), DataplaneError> {
        let desired = self.render()?;
        Ok(
            match self
                .applied
                .as_ref()
                .and_then(|old| desired.diff_script(old))
            {
                Some(s) if s.is_empty() => (s, ApplyKind::Noop),
                Some(s) => (s, ApplyKind::Incremental),
                None => (desired.full_script(), ApplyKind::Full),
            },
        )
    }

    /// Bring the kernel to the desired state in one transaction. The first apply replaces the
    /// table atomically (reconciling whatever a previous run left). On failure the kernel is
    /// unchanged and the next apply does a full replacement.
    pub async fn apply(&mut self) -> Result<ApplyKind, DataplaneError> {
        let desired = self.render()?;
        let (script, kind) = match self
            .applied
            .as_ref()
            .and_then(|old| desired.diff_script(old))
        {
            Some(s) if s.is_empty() => return Ok(ApplyKind::Noop),
            Some(s) => (s, ApplyKind::Incremental),
            None => (desired.full_script(), ApplyKind::Full),
        };
        tracing::debug!(table = %self.cfg.table, ?kind, lines = script.lines().count(), "nft apply");
        match self.nft.apply(&script).await {
            Ok(()) => {
                self.applied = Some(desired);
                Ok(kind)
            }
            Err(source) => {
                self.applied = None;
                Err(DataplaneError::Nft {
                    table: self.cfg.table.clone(),
                    source,
                })
            }
        }
    }

    /// Compare the kernel's table with what we last applied; replace the table atomically when
    /// they differ (a chain, rule, set element or map entry added, removed or edited behind
    /// our back, or the table deleted), otherwise apply pending changes incrementally. Returns
    /// whether drift was found and repaired.
    pub async fn resync(&mut self) -> Result<bool, DataplaneError> {
        let listed = self
            .nft
            .list_table(TableFamily::Inet, &self.cfg.table)
            .await
            .map_err(|source| DataplaneError::Nft {
                table: self.cfg.table.clone(),
                source,
            })?;
        let kernel = listed.as_ref().map(TableSummary::of_json);
        let expected = match &self.applied {
            Some(a) => TableSummary::of_ruleset(a),
            None => TableSummary::of_ruleset(&self.render()?),
        };
        let drifted = kernel.as_ref() != Some(&expected);
        if drifted {
            tracing::warn!(table = %self.cfg.table, "nft table drifted from the desired state; replacing it");
            self.applied = None;
        }
        self.apply().await?;
        Ok(drifted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calico_linux::fake::FakeNft;
    use felix_calc::msg::{
        IpSetDeltaUpdate, IpSetType, IpSetUpdate, WorkloadEndpoint, WorkloadEndpointId,
        WorkloadEndpointUpdate,
    };

    fn wep(iface: &str, ip: &str) -> ToDataplane {
        ToDataplane::WorkloadEndpointUpdate(WorkloadEndpointUpdate {
            id: WorkloadEndpointId {
                orchestrator_id: "k8s".into(),
                workload_id: format!("default/{iface}"),
                endpoint_id: "eth0".into(),
            },
            endpoint: WorkloadEndpoint {
                state: "active".into(),
                name: iface.into(),
                mac: String::new(),
                profile_ids: vec![],
                ipv4_nets: vec![format!("{ip}/32")],
                ipv6_nets: vec![],
                tiers: vec![],
                ipv4_nat: vec![],
                ipv6_nat: vec![],
                allow_spoofed_source_prefixes: vec![],
            },
        })
    }

    #[tokio::test]
    async fn first_apply_is_full_then_incremental_then_noop() {
        let mut dp = NftDataplane::new(FakeNft::new(), Config::default());
        dp.on_message(&wep("cali1", "10.0.0.1")).unwrap();
        assert_eq!(dp.apply().await.unwrap(), ApplyKind::Full);
        let t = dp.nft().transactions();
        assert!(t[0].starts_with("table inet calico\ndelete table inet calico\n"));
        assert_eq!(dp.apply().await.unwrap(), ApplyKind::Noop);
        dp.on_message(&ToDataplane::IpSetUpdate(IpSetUpdate {
            id: "s:x".into(),
            set_type: IpSetType::Net,
            members: vec!["10.0.0.1/32".into()],
        }))
        .unwrap();
        assert_eq!(dp.apply().await.unwrap(), ApplyKind::Incremental);
        dp.on_message(&ToDataplane::IpSetDeltaUpdate(IpSetDeltaUpdate {
            id: "s:x".into(),
            added_members: vec!["10.0.0.2/32".into()],
            removed_members: vec!["10.0.0.1/32".into()],
        }))
        .unwrap();
        assert_eq!(dp.apply().await.unwrap(), ApplyKind::Incremental);
        let last = dp.nft().transactions().pop().unwrap();
        assert_eq!(
            last,
            "delete element inet calico s4-s-x { 10.0.0.1 }\nadd element inet calico s4-s-x { 10.0.0.2 }\n"
        );
    }

    #[tokio::test]
    async fn failed_apply_forces_full_replacement() {
        let mut dp = NftDataplane::new(FakeNft::new(), Config::default());
        dp.apply().await.unwrap();
        dp.on_message(&wep("cali1", "10.0.0.1")).unwrap();
        dp.nft().fail_next_apply("/dev/stdin:1:1: Error: boom");
        let err = dp.apply().await.unwrap_err();
        assert!(err.to_string().contains("table inet calico"), "{err}");
        assert!(dp.applied().is_none());
        assert_eq!(dp.apply().await.unwrap(), ApplyKind::Full);
    }

    #[tokio::test]
    async fn resync_repairs_a_deleted_table() {
        let mut dp = NftDataplane::new(FakeNft::new(), Config::default());
        dp.on_message(&wep("cali1", "10.0.0.1")).unwrap();
        dp.apply().await.unwrap();
        assert!(
            dp.nft()
                .delete_table(TableFamily::Inet, "calico")
                .await
                .unwrap()
        );
        assert!(dp.resync().await.unwrap());
        assert_eq!(dp.nft().tables().len(), 1);
        let last = dp.nft().transactions().pop().unwrap();
        assert!(last.contains("\"cali1\" : goto fw-cali1"), "{last}");
    }

    #[test]
    fn summary_from_json_counts_rules_and_elements() {
        let json = serde_json::json!({"nftables": [
            {"metainfo": {}},
            {"table": {"family": "inet", "name": "calico"}},
            {"set": {"name": "s4-a", "elem": ["10.0.0.1", "10.0.0.2"]}},
            {"map": {"name": "from-wl", "elem": [["cali1", {"goto": {"target": "fw-cali1"}}]]}},
            {"chain": {"name": "filter-INPUT", "hook": "input"}},
            {"chain": {"name": "fw-cali1"}},
            {"rule": {"chain": "fw-cali1", "expr": [], "comment": "h:0123456789ab spoofed"}},
            {"rule": {"chain": "fw-cali1", "expr": []}}
        ]});
        let s = TableSummary::of_json(&json);
        assert_eq!(s.sets["s4-a"], 2);
        assert_eq!(s.maps["from-wl"], 1);
        assert_eq!(
            s.chains["filter-INPUT"],
            (Some("input".to_string()), vec![])
        );
        assert_eq!(
            s.chains["fw-cali1"],
            (
                None,
                vec!["h:0123456789ab".to_string(), "untagged".to_string()]
            )
        );
    }
}

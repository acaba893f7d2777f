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

    /// Compare the kernel's table with what we last applied and repair what differs: only the
    /// chains, sets and maps that were changed behind our back are rewritten (flushed and
    /// refilled, re-created, or deleted when they are not ours); the table is replaced
    /// atomically only when it is missing or a base chain's hook changed. Pending changes are
    /// then applied incrementally. Before the first successful apply there is nothing to compare
    /// with: the (full) apply alone reconciles the table, without listing it. Returns whether
    /// drift was found and repaired.
    pub async fn resync(&mut self) -> Result<bool, DataplaneError> {
        let Some(applied) = &self.applied else {
            self.apply().await?;
            return Ok(false);
        };
        let listed = self
            .nft
            .list_table(TableFamily::Inet, &self.cfg.table)
            .await
            .map_err(|source| DataplaneError::Nft {
                table: self.cfg.table.clone(),
                source,
            })?;
        let expected = TableSummary::of_ruleset(applied);
        let repair = match listed.as_ref().map(TableSummary::of_json) {
            None => None,
            Some(kernel) if kernel == expected => Some(String::new()),
            Some(kernel) => repair_script(applied, &expected, &kernel),
        };
        let drifted = repair.as_ref().is_none_or(|s| !s.is_empty());
        match repair {
            None => {
                tracing::warn!(table = %self.cfg.table, "nft table missing or a base chain changed; replacing it");
                self.applied = None;
            }
            Some(script) if !script.is_empty() => {
                tracing::warn!(
                    table = %self.cfg.table,
                    lines = script.lines().count(),
                    "nft table drifted from the desired state; rewriting the objects that differ"
                );
                if let Err(source) = self.nft.apply(&script).await {
                    self.applied = None;
                    return Err(DataplaneError::Nft {
                        table: self.cfg.table.clone(),
                        source,
                    });
                }
            }
            Some(_) => {}
        }
        self.apply().await?;
        Ok(drifted)
    }
}

/// The transaction that brings the kernel's objects that differ from `applied` back to it, or
/// `None` when only a full replacement can (a base chain's hook differs).
fn repair_script(applied: &Ruleset, want: &TableSummary, kernel: &TableSummary) -> Option<String> {
    use std::fmt::Write;
    for (name, (hook, _)) in &want.chains {
        if kernel.chains.get(name).is_some_and(|(h, _)| h != hook) {
            return None;
        }
    }
    let t = applied.table_ref();
    let mut out = String::new();
    let join = |items: Vec<String>| items.join(", ");
    for (name, set) in &applied.sets {
        match kernel.sets.get(name) {
            Some(n) if *n == set.elements.len() => continue,
            Some(_) => _ = writeln!(out, "flush set {t} {name}"),
            None => _ = writeln!(out, "add set {t} {name} {{ {} }}", set.decl),
        }
        if !set.elements.is_empty() {
            let elems = join(set.elements.iter().cloned().collect());
            _ = writeln!(out, "add element {t} {name} {{ {elems} }}");
        }
    }
    // Chains missing from the kernel are declared before map elements and rules name them.
    for (name, chain) in &applied.chains {
        if !kernel.chains.contains_key(name) {
            match &chain.base {
                Some(base) => _ = writeln!(out, "add chain {t} {name} {{ {base} }}"),
                None => _ = writeln!(out, "add chain {t} {name}"),
            }
        }
    }
    for (name, map) in &applied.maps {
        match kernel.maps.get(name) {
            Some(n) if *n == map.elements.len() => continue,
            Some(_) => _ = writeln!(out, "flush map {t} {name}"),
            None => _ = writeln!(out, "add map {t} {name} {{ {} }}", map.decl),
        }
        if !map.elements.is_empty() {
            let elems = join(
                map.elements
                    .iter()
                    .map(|(k, v)| format!("{k} : {v}"))
                    .collect(),
            );
            _ = writeln!(out, "add element {t} {name} {{ {elems} }}");
        }
    }
    for (name, chain) in &applied.chains {
        if kernel.chains.get(name) == want.chains.get(name) {
            continue;
        }
        if kernel.chains.contains_key(name) {
            _ = writeln!(out, "flush chain {t} {name}");
        }
        for rule in &chain.rules {
            _ = writeln!(
                out,
                "add rule {t} {name} {}",
                crate::ruleset::tagged_rule(name, rule)
            );
        }
    }
    // Objects that are not ours: chains flushed before any is deleted (they may jump to each
    // other), then maps and sets, which nothing of ours references.
    let extra: Vec<_> = kernel
        .chains
        .keys()
        .filter(|n| !applied.chains.contains_key(*n))
        .collect();
    for name in &extra {
        _ = writeln!(out, "flush chain {t} {name}");
    }
    for name in &extra {
        _ = writeln!(out, "delete chain {t} {name}");
    }
    for name in kernel
        .maps
        .keys()
        .filter(|n| !applied.maps.contains_key(*n))
    {
        _ = writeln!(out, "delete map {t} {name}");
    }
    for name in kernel
        .sets
        .keys()
        .filter(|n| !applied.sets.contains_key(*n))
    {
        _ = writeln!(out, "delete set {t} {name}");
    }
    Some(out)
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

    #[tokio::test]
    async fn resync_before_the_first_apply_does_not_list_and_applies_fully() {
        let mut dp = NftDataplane::new(FakeNft::new(), Config::default());
        dp.on_message(&wep("cali1", "10.0.0.1")).unwrap();
        assert!(
            !dp.resync().await.unwrap(),
            "nothing applied yet: no drift to report"
        );
        let t = dp.nft().transactions();
        assert_eq!(t.len(), 1);
        assert!(t[0].starts_with("table inet calico\ndelete table inet calico\n"));
    }

    #[test]
    fn repair_rewrites_only_what_drifted() {
        let mut st = DesiredState::new();
        st.apply(&wep("cali1", "10.0.0.1")).unwrap();
        st.apply(&wep("cali2", "10.0.0.2")).unwrap();
        let applied = crate::render(&st, &Config::default()).unwrap();
        let want = TableSummary::of_ruleset(&applied);
        let mut kernel = want.clone();
        assert_eq!(repair_script(&applied, &want, &kernel).unwrap(), "");
        // A rule deleted by hand, a foreign chain added, a map element removed.
        kernel.chains.get_mut("as-cali1").unwrap().1.pop();
        kernel.chains.insert("junk".into(), (None, vec![]));
        *kernel.maps.get_mut("to-wl").unwrap() -= 1;
        let s = repair_script(&applied, &want, &kernel).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "flush map inet calico to-wl");
        assert_eq!(
            lines[1],
            "add element inet calico to-wl { \"cali1\" : goto tw-cali1, \"cali2\" : goto tw-cali2 }"
        );
        assert_eq!(lines[2], "flush chain inet calico as-cali1");
        assert!(
            lines[3..lines.len() - 2]
                .iter()
                .all(|l| l.starts_with("add rule inet calico as-cali1 ")),
            "{s}"
        );
        assert_eq!(
            &lines[lines.len() - 2..],
            [
                "flush chain inet calico junk",
                "delete chain inet calico junk"
            ]
        );
        // A base chain whose hook changed needs the full replacement.
        kernel.chains.get_mut("filter-FORWARD").unwrap().0 = Some("input".into());
        assert!(repair_script(&applied, &want, &kernel).is_none());
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

//! The thin applier: desired state → transactions through the [`Nft`] trait, plus the
//! periodic resync that compares the kernel's table with what we rendered and repairs drift.

use std::collections::{BTreeMap, BTreeSet};

use calico_linux::nft::{Nft, NftError, TableFamily};
use felix_calc::msg::{PolicyId, ToDataplane, WorkloadEndpointId};

use crate::names;
use crate::render::{self, Config, RenderError, maps, render};
use crate::rules::Family;
use crate::ruleset::{MapDef, Ruleset, rule_tag};
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
    /// What the messages since the last successful apply touched.
    dirty: Dirty,
    /// Per rendered workload: its interface and the shared dispatch chains it uses.
    ep_index: BTreeMap<WorkloadEndpointId, EpIndex>,
    /// Users of each shared dispatch chain.
    shared_refs: BTreeMap<String, usize>,
    /// Bumped by every transaction sent to the kernel (successful or not), so that a listing
    /// taken elsewhere can tell whether it still describes the table we expect.
    generation: u64,
    /// Whether the applied table has IPv6 sets ([`Config::set_families`]); when that changes,
    /// every rule that matches on a set changes with it.
    applied_v6_sets: bool,
}

/// Objects whose rendering may have changed since the last apply.
#[derive(Debug, Default)]
struct Dirty {
    /// Re-render everything (configuration, pools, host endpoints).
    all: bool,
    sets: BTreeSet<String>,
    policies: BTreeSet<PolicyId>,
    profiles: BTreeSet<String>,
    workloads: BTreeSet<WorkloadEndpointId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct EpIndex {
    iface: String,
    shared: Vec<String>,
}

/// The next transaction and what the applied table becomes when it succeeds.
enum Plan {
    Full(Ruleset),
    Patch {
        old: Ruleset,
        new: Ruleset,
        index: Vec<(WorkloadEndpointId, Option<EpIndex>)>,
        refs: BTreeMap<String, usize>,
    },
}

impl<N: Nft> NftDataplane<N> {
    pub fn new(nft: N, cfg: Config) -> Self {
        NftDataplane {
            nft,
            cfg,
            state: DesiredState::new(),
            applied: None,
            dirty: Dirty {
                all: true,
                ..Dirty::default()
            },
            ep_index: BTreeMap::new(),
            shared_refs: BTreeMap::new(),
            generation: 0,
            applied_v6_sets: false,
        }
    }

    /// Changes whenever a transaction is sent to the kernel (see [`Self::resync_with`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The table's family and name, for listing it outside this object.
    pub fn table(&self) -> (TableFamily, &str) {
        (TableFamily::Inet, &self.cfg.table)
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
        self.dirty.all = true;
        self.cfg = cfg;
    }

    /// Replace the IP pools used for natOutgoing (no kernel I/O).
    pub fn set_ip_pools(&mut self, pools: BTreeMap<String, crate::state::PoolNat>) {
        self.state.ip_pools = pools;
        self.dirty.all = true;
    }

    /// Feed one calculation-graph message (no kernel I/O).
    pub fn on_message(&mut self, msg: &ToDataplane) -> Result<(), DataplaneError> {
        self.mark_dirty(msg);
        let set = match msg {
            ToDataplane::IpSetUpdate(u) => Some(&u.id),
            ToDataplane::IpSetDeltaUpdate(u) => Some(&u.id),
            ToDataplane::IpSetRemove(u) => Some(&u.id),
            _ => None,
        };
        let kind = |st: &DesiredState, id: &str| Family::BOTH.map(|f| st.has_prefixes(id, f));
        let before = set.map(|id| kind(&self.state, id));
        self.state.apply(msg)?;
        if let (Some(id), Some(before)) = (set, before)
            && kind(&self.state, id) != before
        {
            self.mark_set_users(id);
        }
        self.mark_dirty(msg);
        Ok(())
    }

    /// An IP set moved between a hash set and an interval set (its first prefix came or its
    /// last went): the set's name changes, so every rule that matches on it is re-rendered.
    fn mark_set_users(&mut self, id: &str) {
        let uses = |rules: &[felix_calc::msg::Rule]| {
            rules.iter().any(|r| {
                [
                    &r.src_ip_set_ids,
                    &r.dst_ip_set_ids,
                    &r.not_src_ip_set_ids,
                    &r.not_dst_ip_set_ids,
                ]
                .iter()
                .any(|ids| ids.iter().any(|s| s == id))
            })
        };
        for (pid, p) in &self.state.policies {
            if uses(&p.inbound_rules) || uses(&p.outbound_rules) {
                self.dirty.policies.insert(pid.clone());
            }
        }
        for (name, p) in &self.state.profiles {
            if uses(&p.inbound_rules) || uses(&p.outbound_rules) {
                self.dirty.profiles.insert(name.clone());
            }
        }
    }

    /// Record what `msg` may change; called before and after applying it, so that both the old
    /// and the new rules' sets are re-rendered.
    fn mark_dirty(&mut self, msg: &ToDataplane) {
        let d = &mut self.dirty;
        let mut refs = BTreeSet::new();
        match msg {
            ToDataplane::InSync => {}
            ToDataplane::IpSetUpdate(u) => _ = d.sets.insert(u.id.clone()),
            ToDataplane::IpSetDeltaUpdate(u) => _ = d.sets.insert(u.id.clone()),
            ToDataplane::IpSetRemove(u) => _ = d.sets.insert(u.id.clone()),
            ToDataplane::ActivePolicyUpdate(_) | ToDataplane::ActivePolicyRemove(_) => {
                let id = match msg {
                    ToDataplane::ActivePolicyUpdate(u) => &u.id,
                    ToDataplane::ActivePolicyRemove(r) => &r.id,
                    _ => return,
                };
                d.policies.insert(id.clone());
                let present = self.state.policies.get(id);
                if let Some(p) = present {
                    render::rule_set_refs(
                        p.inbound_rules.iter().chain(&p.outbound_rules),
                        &mut refs,
                    );
                }
                // Endpoints name a policy whether or not it is active (unknown = drop): its
                // activation (absent before) or removal (absent after) changes their dispatch.
                if present.is_none() {
                    if !self.state.host_endpoints.is_empty() {
                        d.all = true;
                    }
                    for (wid, ep) in &self.state.workloads {
                        let uses = ep.tiers.iter().any(|t| {
                            t.ingress_policies.contains(id) || t.egress_policies.contains(id)
                        });
                        if uses {
                            d.workloads.insert(wid.clone());
                        }
                    }
                }
            }
            ToDataplane::ActiveProfileUpdate(_) | ToDataplane::ActiveProfileRemove(_) => {
                let name = match msg {
                    ToDataplane::ActiveProfileUpdate(u) => &u.id.name,
                    ToDataplane::ActiveProfileRemove(r) => &r.id.name,
                    _ => return,
                };
                d.profiles.insert(name.clone());
                let present = self.state.profiles.get(name);
                if let Some(p) = present {
                    render::rule_set_refs(
                        p.inbound_rules.iter().chain(&p.outbound_rules),
                        &mut refs,
                    );
                }
                if present.is_none() {
                    if !self.state.host_endpoints.is_empty() {
                        d.all = true;
                    }
                    for (wid, ep) in &self.state.workloads {
                        if ep.profile_ids.contains(name) {
                            d.workloads.insert(wid.clone());
                        }
                    }
                }
            }
            ToDataplane::WorkloadEndpointUpdate(u) => _ = d.workloads.insert(u.id.clone()),
            ToDataplane::WorkloadEndpointRemove(r) => _ = d.workloads.insert(r.id.clone()),
            ToDataplane::HostEndpointUpdate(_) | ToDataplane::HostEndpointRemove(_) => {
                d.all = true;
            }
        }
        d.sets.extend(refs.into_iter().map(|(id, _)| id));
    }

    fn render(&self) -> Result<Ruleset, DataplaneError> {
        render(&self.state, &self.cfg).map_err(|source| DataplaneError::Render {
            table: self.cfg.table.clone(),
            source,
        })
    }

    /// The transaction for the objects touched since the last apply: only they are
    /// re-rendered and compared. Falls back to a full rendering when nothing was applied yet,
    /// when something global changed, or when two workloads claim one interface.
    fn plan(&self) -> Result<Plan, DataplaneError> {
        let v6_sets = self.cfg.set_families(&self.state).contains(&Family::V6);
        let Some(applied) = self
            .applied
            .as_ref()
            .filter(|_| !self.dirty.all && v6_sets == self.applied_v6_sets)
        else {
            return Ok(Plan::Full(self.render()?));
        };
        let err = |source| DataplaneError::Render {
            table: self.cfg.table.clone(),
            source,
        };
        let st = &self.state;
        let mut new = Ruleset {
            family: applied.family.clone(),
            table: applied.table.clone(),
            ..Default::default()
        };
        for m in [maps::TO_WL, maps::FROM_WL, maps::WL_ANTISPOOF] {
            let decl = applied
                .maps
                .get(m)
                .map(|d| d.decl.clone())
                .unwrap_or_default();
            new.maps.insert(
                m.to_string(),
                MapDef {
                    decl,
                    elements: BTreeMap::new(),
                },
            );
        }
        let mut chains: BTreeSet<String> = BTreeSet::new();
        let mut sets: BTreeSet<String> = BTreeSet::new();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        // IP sets, with whether any rule still references them.
        if !self.dirty.sets.is_empty() {
            let mut referenced = BTreeSet::new();
            let rules = st
                .policies
                .values()
                .flat_map(|p| p.inbound_rules.iter().chain(&p.outbound_rules))
                .chain(
                    st.profiles
                        .values()
                        .flat_map(|p| p.inbound_rules.iter().chain(&p.outbound_rules)),
                );
            render::rule_set_refs(rules, &mut referenced);
            for id in &self.dirty.sets {
                let refd = (
                    referenced.contains(&(id.clone(), false)),
                    referenced.contains(&(id.clone(), true)),
                );
                render::render_set(st, &self.cfg, id, refd, &mut new).map_err(err)?;
                sets.extend(render::set_names(id));
            }
        }
        for id in &self.dirty.policies {
            render::render_policy(st, &self.cfg, id, &mut new).map_err(err)?;
            chains.insert(names::policy_chain(id, true));
            chains.insert(names::policy_chain(id, false));
        }
        for name in &self.dirty.profiles {
            render::render_profile(st, &self.cfg, name, &mut new).map_err(err)?;
            chains.insert(names::profile_chain(name, true));
            chains.insert(names::profile_chain(name, false));
        }
        let mut index = Vec::new();
        let mut deltas: BTreeMap<String, i64> = BTreeMap::new();
        for id in &self.dirty.workloads {
            let old = self.ep_index.get(id);
            if let Some(o) = old {
                chains.insert(names::endpoint_chain("as-", &o.iface));
                keys.insert(render::ifname_key(&o.iface));
                for c in &o.shared {
                    *deltas.entry(c.clone()).or_default() -= 1;
                }
            }
            let claimed = |iface: &str| {
                st.workloads
                    .iter()
                    .any(|(other, e)| other != id && e.name == iface)
            };
            let mine = st.workloads.get(id);
            if mine.is_some_and(|ep| claimed(&ep.name)) || old.is_some_and(|o| claimed(&o.iface)) {
                return Ok(Plan::Full(self.render()?));
            }
            let now = match mine {
                Some(ep) => {
                    let mut one = Ruleset::default();
                    for m in [maps::TO_WL, maps::FROM_WL, maps::WL_ANTISPOOF] {
                        one.maps.insert(m.to_string(), MapDef::default());
                    }
                    render::render_workload(st, &self.cfg, ep, &mut one, None);
                    let entry = ep_index_of(&one, &ep.name);
                    for (name, c) in one.chains {
                        chains.insert(name.clone());
                        new.chains.insert(name, c);
                    }
                    for (m, def) in one.maps {
                        for (k, v) in def.elements {
                            keys.insert(k.clone());
                            if let Some(nm) = new.maps.get_mut(&m) {
                                nm.elements.insert(k, v);
                            }
                        }
                    }
                    if let Some(e) = &entry {
                        for c in &e.shared {
                            *deltas.entry(c.clone()).or_default() += 1;
                        }
                    }
                    entry
                }
                None => None,
            };
            index.push((id.clone(), now));
        }
        let mut refs = BTreeMap::new();
        for (name, delta) in deltas {
            let have = i64::try_from(self.shared_refs.get(&name).copied().unwrap_or(0))
                .unwrap_or(i64::MAX);
            let users = usize::try_from(have + delta).unwrap_or(0);
            chains.insert(name.clone());
            if users == 0 {
                new.chains.remove(&name);
            } else if !new.chains.contains_key(&name) {
                // Still used by endpoints that were not re-rendered: unchanged.
                if let Some(c) = applied.chains.get(&name) {
                    new.chains.insert(name.clone(), c.clone());
                }
            }
            refs.insert(name, users);
        }
        // The same names as the kernel has them now.
        let mut old = Ruleset {
            family: applied.family.clone(),
            table: applied.table.clone(),
            ..Default::default()
        };
        for name in &chains {
            if let Some(c) = applied.chains.get(name) {
                old.chains.insert(name.clone(), c.clone());
            }
        }
        for name in &sets {
            if let Some(c) = applied.sets.get(name) {
                old.sets.insert(name.clone(), c.clone());
            }
        }
        for (m, def) in &new.maps {
            let mut o = MapDef {
                decl: def.decl.clone(),
                elements: BTreeMap::new(),
            };
            if let Some(a) = applied.maps.get(m) {
                for k in &keys {
                    if let Some(v) = a.elements.get(k) {
                        o.elements.insert(k.clone(), v.clone());
                    }
                }
            }
            old.maps.insert(m.clone(), o);
        }
        Ok(Plan::Patch {
            old,
            new,
            index,
            refs,
        })
    }

    /// The script and kind of a plan (`None`: the patch needs a full replacement).
    fn script_of(&self, plan: &Plan) -> Option<(String, ApplyKind)> {
        let diff = match plan {
            Plan::Full(desired) => match self.applied.as_ref() {
                Some(old) => desired.diff_script(old),
                None => None,
            },
            Plan::Patch { old, new, .. } => Some(new.diff_script(old)?),
        };
        match (diff, plan) {
            (Some(s), _) if s.is_empty() => Some((s, ApplyKind::Noop)),
            (Some(s), _) => Some((s, ApplyKind::Incremental)),
            (None, Plan::Full(desired)) => Some((desired.full_script(), ApplyKind::Full)),
            (None, Plan::Patch { .. }) => None,
        }
    }

    /// Plan and script, falling back to a full rendering when a patch cannot be expressed.
    fn next(&self) -> Result<(Plan, String, ApplyKind), DataplaneError> {
        let plan = self.plan()?;
        if let Some((s, k)) = self.script_of(&plan) {
            return Ok((plan, s, k));
        }
        let plan = Plan::Full(self.render()?);
        let (s, k) = self
            .script_of(&plan)
            .unwrap_or_else(|| (String::new(), ApplyKind::Noop));
        Ok((plan, s, k))
    }

    /// The applied table becomes the plan's result.
    fn commit(&mut self, plan: Plan) {
        match plan {
            Plan::Full(desired) => {
                self.rebuild_index(&desired);
                self.applied = Some(desired);
                self.applied_v6_sets = self.cfg.set_families(&self.state).contains(&Family::V6);
            }
            Plan::Patch {
                old,
                new,
                index,
                refs,
            } => {
                if let Some(a) = self.applied.as_mut() {
                    for name in old.chains.keys() {
                        a.chains.remove(name);
                    }
                    a.chains.extend(new.chains);
                    for name in old.sets.keys() {
                        a.sets.remove(name);
                    }
                    a.sets.extend(new.sets);
                    for (m, def) in old.maps {
                        if let Some(am) = a.maps.get_mut(&m) {
                            for k in def.elements.keys() {
                                am.elements.remove(k);
                            }
                        }
                    }
                    for (m, def) in new.maps {
                        if let Some(am) = a.maps.get_mut(&m) {
                            am.elements.extend(def.elements);
                        }
                    }
                }
                for (id, e) in index {
                    match e {
                        Some(e) => _ = self.ep_index.insert(id, e),
                        None => _ = self.ep_index.remove(&id),
                    }
                }
                for (name, n) in refs {
                    if n == 0 {
                        self.shared_refs.remove(&name);
                    } else {
                        self.shared_refs.insert(name, n);
                    }
                }
            }
        }
        self.dirty = Dirty::default();
    }

    fn rebuild_index(&mut self, r: &Ruleset) {
        self.ep_index.clear();
        self.shared_refs.clear();
        for (id, ep) in &self.state.workloads {
            if let Some(e) = ep_index_of(r, &ep.name) {
                for c in &e.shared {
                    *self.shared_refs.entry(c.clone()).or_default() += 1;
                }
                self.ep_index.insert(id.clone(), e);
            }
        }
    }

    /// The script the next [`apply`](Self::apply) would run (empty when nothing changed).
    pub fn pending_script(&self) -> Result<(String, ApplyKind), DataplaneError> {
        let (_, script, kind) = self.next()?;
        Ok((script, kind))
    }

    /// Bring the kernel to the desired state in one transaction. The first apply replaces the
    /// table atomically (reconciling whatever a previous run left); later ones re-render only
    /// what the messages since the last apply touched. On failure the kernel is unchanged and
    /// the next apply does a full replacement.
    pub async fn apply(&mut self) -> Result<ApplyKind, DataplaneError> {
        let (plan, script, kind) = self.next()?;
        if kind == ApplyKind::Noop {
            self.commit(plan);
            return Ok(kind);
        }
        // Element-only transactions (label and remote endpoint churn) skip `nft`, whose
        // ruleset dump alone takes longer than the change with a large table.
        let elements = match (&plan, &kind) {
            (Plan::Patch { old, new, .. }, ApplyKind::Incremental) => new.element_changes(old),
            (Plan::Full(desired), ApplyKind::Incremental) => self
                .applied
                .as_ref()
                .and_then(|a| desired.element_changes(a)),
            _ => None,
        };
        let family = match self.applied.as_ref().map(|a| a.family.as_str()) {
            Some("inet") => Some(TableFamily::Inet),
            _ => None,
        };
        self.generation += 1;
        let result = match (elements, family) {
            (Some(changes), Some(family)) => {
                tracing::debug!(table = %self.cfg.table, sets = changes.len(), "set element transaction");
                self.nft
                    .apply_elements(family, &self.cfg.table, &changes)
                    .await
            }
            _ => {
                tracing::debug!(table = %self.cfg.table, ?kind, lines = script.lines().count(), "nft apply");
                self.nft.apply(&script).await
            }
        };
        match result {
            Ok(()) => {
                self.commit(plan);
                Ok(kind)
            }
            Err(source) => {
                self.applied = None;
                self.dirty.all = true;
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
        if self.applied.is_none() {
            self.apply().await?;
            return Ok(false);
        }
        let generation = self.generation;
        let listed = self
            .nft
            .list_table(TableFamily::Inet, &self.cfg.table)
            .await
            .map_err(|source| DataplaneError::Nft {
                table: self.cfg.table.clone(),
                source,
            })?;
        Ok(self.resync_with(listed, generation).await?.unwrap_or(false))
    }

    /// The second half of [`Self::resync`], for a listing taken elsewhere (so that listing a
    /// large table does not hold up changes): `generation` is [`Self::generation`] when the
    /// listing started. `Ok(None)` when a transaction went to the kernel since, making the
    /// listing stale (nothing is compared; list again).
    pub async fn resync_with(
        &mut self,
        listed: Option<serde_json::Value>,
        generation: u64,
    ) -> Result<Option<bool>, DataplaneError> {
        if generation != self.generation {
            return Ok(None);
        }
        let Some(applied) = &self.applied else {
            self.apply().await?;
            return Ok(Some(false));
        };
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
                self.dirty.all = true;
            }
            Some(script) if !script.is_empty() => {
                tracing::warn!(
                    table = %self.cfg.table,
                    lines = script.lines().count(),
                    "nft table drifted from the desired state; rewriting the objects that differ"
                );
                self.generation += 1;
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
        Ok(Some(drifted))
    }
}

/// A rendered workload's interface and the shared dispatch chains its map elements go to
/// (`None` when it was not rendered, e.g. an invalid interface name).
fn ep_index_of(r: &Ruleset, iface: &str) -> Option<EpIndex> {
    let key = render::ifname_key(iface);
    let to = r.maps.get(maps::TO_WL)?.elements.get(&key)?;
    let from = r.maps.get(maps::FROM_WL).and_then(|m| m.elements.get(&key));
    let shared = [Some(to), from]
        .into_iter()
        .flatten()
        .filter_map(|v| v.strip_prefix("goto ").map(str::to_string))
        .collect();
    Some(EpIndex {
        iface: iface.to_string(),
        shared,
    })
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
        assert!(last.contains("\"cali1\" : goto fp-"), "{last}");
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
        let tp = applied.maps["to-wl"].elements["\"cali1\""].clone();
        assert!(tp.starts_with("goto tp-"), "{tp}");
        assert_eq!(
            lines[1],
            format!("add element inet calico to-wl {{ \"cali1\" : {tp}, \"cali2\" : {tp} }}")
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

//! The calculation graph proper: active-rules calculation, rule scanning with IP set reference
//! counts, policy resolution for local endpoints, and the event sequencer that coalesces and
//! orders the output (§3.2–§3.4).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;

use tracing::{debug, trace};

use crate::backend::{self, EndpointData, EndpointDetails, Item, ItemKey, PolicyKey};
use crate::convert::{self, CalcError, Update};
use crate::index::{LabelIndex, MatchEvent};
use crate::ipsets::{IpSetCalc, MemberEvent};
use crate::msg::{self, PolicyId, ProfileId, ToDataplane};
use crate::rules::{self, IpSetData};

/// A graph input in backend form (after conversion from v3 resources).
#[derive(Debug, Clone)]
pub(crate) enum BackendUpdate {
    Tier(String, Option<backend::Tier>),
    Policy(PolicyKey, Option<backend::Policy>),
    Profile(String, Option<backend::Profile>),
    Endpoint(ItemKey, Option<EndpointData>),
    NetworkSet(ItemKey, Option<Item>),
    InSync,
}

/// Who owns a set of rules (and therefore references IP sets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RulesOwner {
    Policy(PolicyKey),
    Profile(String),
}

#[derive(Debug)]
struct PolicyState {
    policy: Arc<backend::Policy>,
    /// The rendered policy while active.
    active: Option<Arc<msg::Policy>>,
}

#[derive(Debug)]
struct ProfileState {
    profile: Option<Arc<backend::Profile>>,
    /// Number of local endpoints referencing the profile.
    refs: u32,
    /// The rendered profile while active (referenced).
    active: Option<Arc<msg::Profile>>,
}

/// What was last sent for an endpoint.
#[derive(Debug, Clone, PartialEq)]
enum SentEndpoint {
    Workload(msg::WorkloadEndpointId, msg::WorkloadEndpoint),
    Host(msg::HostEndpointId, msg::HostEndpoint),
}

/// The name of the tier that exists even when no Tier resource does (upstream creates it).
const DEFAULT_TIER: &str = "default";
const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// The calculation graph for one node.
#[derive(Debug)]
pub struct CalcGraph {
    node: String,
    tiers: HashMap<String, backend::Tier>,
    policies: HashMap<PolicyKey, PolicyState>,
    profiles: HashMap<String, ProfileState>,
    local_endpoints: HashMap<ItemKey, EndpointData>,
    /// Policy selectors against local endpoints.
    policy_index: LabelIndex<PolicyKey, ItemKey>,
    ipsets: IpSetCalc,
    /// IP sets referenced by each active rules owner.
    owner_sets: HashMap<RulesOwner, BTreeSet<String>>,
    /// Number of owners referencing each active IP set.
    set_refs: HashMap<String, u32>,

    // Event-sequencer state.
    pending_in_sync: bool,
    dirty_policies: BTreeSet<PolicyId>,
    dirty_profiles: BTreeSet<String>,
    dirty_endpoints: BTreeSet<ItemKey>,
    /// Sets whose existence changed since the last flush.
    dirty_sets: BTreeSet<String>,
    /// Sets that must be (re)sent in full at the next flush.
    full_sets: HashSet<String>,
    pending_added: BTreeMap<String, BTreeSet<String>>,
    pending_removed: BTreeMap<String, BTreeSet<String>>,
    sent_sets: HashSet<String>,
    sent_policies: HashMap<PolicyId, Arc<msg::Policy>>,
    sent_profiles: HashMap<String, Arc<msg::Profile>>,
    sent_endpoints: HashMap<ItemKey, SentEndpoint>,
}

impl CalcGraph {
    /// A graph for the node called `node` (endpoints whose `node` equals it are local).
    pub fn new(node: impl Into<String>) -> Self {
        CalcGraph {
            node: node.into(),
            tiers: HashMap::new(),
            policies: HashMap::new(),
            profiles: HashMap::new(),
            local_endpoints: HashMap::new(),
            policy_index: LabelIndex::default(),
            ipsets: IpSetCalc::default(),
            owner_sets: HashMap::new(),
            set_refs: HashMap::new(),
            pending_in_sync: false,
            dirty_policies: BTreeSet::new(),
            dirty_profiles: BTreeSet::new(),
            dirty_endpoints: BTreeSet::new(),
            dirty_sets: BTreeSet::new(),
            full_sets: HashSet::new(),
            pending_added: BTreeMap::new(),
            pending_removed: BTreeMap::new(),
            sent_sets: HashSet::new(),
            sent_policies: HashMap::new(),
            sent_profiles: HashMap::new(),
            sent_endpoints: HashMap::new(),
        }
    }

    /// A readable description of an active IP set (`sel(<selector>)` or
    /// `port(<proto>:<name>, <selector>)`), for logs and tests.
    pub fn ip_set_description(&self, id: &str) -> Option<String> {
        self.ipsets.set_data(id).map(IpSetData::describe)
    }

    /// The local node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Applies one datastore update. A resource the graph cannot use is treated as deleted (fail
    /// closed, like upstream's validation filter) and reported as the error.
    pub fn apply(&mut self, update: Update) -> Result<(), CalcError> {
        let (backend, err) = convert::to_backend(update);
        if let Some(u) = backend {
            self.apply_backend(u);
        }
        err.map_or(Ok(()), Err)
    }

    pub(crate) fn apply_backend(&mut self, update: BackendUpdate) {
        match update {
            BackendUpdate::Tier(name, tier) => self.on_tier(name, tier),
            BackendUpdate::Policy(key, pol) => self.on_policy(key, pol),
            BackendUpdate::Profile(name, prof) => self.on_profile(name, prof),
            BackendUpdate::Endpoint(key, ep) => self.on_endpoint(key, ep),
            BackendUpdate::NetworkSet(key, item) => {
                let mut ev = Vec::new();
                match item {
                    Some(item) => self.ipsets.update_item(key, item, &mut ev),
                    None => self.ipsets.remove_item(&key, &mut ev),
                }
                self.on_member_events(ev);
            }
            BackendUpdate::InSync => self.pending_in_sync = true,
        }
    }

    fn on_tier(&mut self, name: String, tier: Option<backend::Tier>) {
        let changed = match tier {
            Some(t) => self.tiers.insert(name, t.clone()) != Some(t),
            None => self.tiers.remove(&name).is_some(),
        };
        if changed {
            // Tier order / default action affect every endpoint with a policy in the tier; the
            // flush only emits endpoints whose output really changed.
            self.dirty_endpoints
                .extend(self.local_endpoints.keys().cloned());
        }
    }

    fn on_policy(&mut self, key: PolicyKey, pol: Option<backend::Policy>) {
        let old_id = self
            .policies
            .get(&key)
            .map(|st| policy_id(&key, &st.policy));
        if let Some(old) = self.policies.get(&key)
            && pol.as_ref() == Some(old.policy.as_ref())
        {
            return;
        }
        // Endpoints matched before the change must be recomputed (order, types, tier...).
        self.dirty_endpoints
            .extend(self.policy_index.items_matching(&key).cloned());
        let mut ev = Vec::new();
        match pol {
            Some(p) => {
                let selector = p.selector.clone();
                let new_id = policy_id(&key, &p);
                if let Some(old_id) = &old_id
                    && *old_id != new_id
                {
                    // Tier changed: the old identity goes away.
                    self.deactivate_policy(&key);
                    self.dirty_policies.insert(old_id.clone());
                }
                let p = Arc::new(p);
                match self.policies.get_mut(&key) {
                    Some(st) => st.policy = p,
                    None => {
                        self.policies.insert(
                            key.clone(),
                            PolicyState {
                                policy: p,
                                active: None,
                            },
                        );
                    }
                }
                self.policy_index
                    .update_selector(key.clone(), selector, &mut ev);
                self.dirty_policies.insert(new_id);
            }
            None => {
                self.policy_index.remove_selector(&key, &mut ev);
                self.deactivate_policy(&key);
                self.policies.remove(&key);
                if let Some(old_id) = old_id {
                    self.dirty_policies.insert(old_id);
                }
            }
        }
        self.dirty_endpoints
            .extend(self.policy_index.items_matching(&key).cloned());
        self.on_policy_match_events(ev);
        // Content may have changed even if activity did not.
        self.refresh_policy(&key);
    }

    fn on_profile(&mut self, name: String, prof: Option<backend::Profile>) {
        let labels = prof.as_ref().map(|p| p.labels.clone());
        if prof.is_none() && !self.profiles.contains_key(&name) {
            return;
        }
        let entry = self.profiles.entry(name.clone()).or_insert(ProfileState {
            profile: None,
            refs: 0,
            active: None,
        });
        if entry.profile.as_deref() == prof.as_ref() {
            return;
        }
        entry.profile = prof.map(Arc::new);
        if entry.profile.is_none() && entry.refs == 0 {
            self.profiles.remove(&name);
        }
        let mut ev = Vec::new();
        self.policy_index
            .update_parent(&name, labels.clone(), &mut ev);
        self.on_policy_match_events(ev);
        let mut mev = Vec::new();
        self.ipsets.update_profile_labels(&name, labels, &mut mev);
        self.on_member_events(mev);
        self.refresh_profile(&name);
    }

    fn on_endpoint(&mut self, key: ItemKey, ep: Option<EndpointData>) {
        // Cluster-wide IP set membership.
        let mut mev = Vec::new();
        match &ep {
            Some(ep) => self
                .ipsets
                .update_item(key.clone(), ep.item.clone(), &mut mev),
            None => self.ipsets.remove_item(&key, &mut mev),
        }
        self.on_member_events(mev);

        // Local endpoint policy resolution.
        let old_profiles: Vec<String> = self
            .local_endpoints
            .get(&key)
            .map(|e| e.item.profiles.clone())
            .unwrap_or_default();
        let mut ev = Vec::new();
        let new_profiles = match ep {
            Some(ep) if ep.node == self.node => {
                if self.local_endpoints.get(&key) == Some(&ep) {
                    return;
                }
                self.policy_index.update_item(
                    key.clone(),
                    ep.item.labels.clone(),
                    ep.item.profiles.clone(),
                    &mut ev,
                );
                let profiles = ep.item.profiles.clone();
                self.local_endpoints.insert(key.clone(), ep);
                profiles
            }
            _ => {
                if self.local_endpoints.remove(&key).is_none() {
                    return;
                }
                self.policy_index.remove_item(&key, &mut ev);
                Vec::new()
            }
        };
        self.dirty_endpoints.insert(key);
        self.on_policy_match_events(ev);
        for p in &new_profiles {
            self.ref_profile(p, true);
        }
        for p in &old_profiles {
            self.ref_profile(p, false);
        }
    }

    fn ref_profile(&mut self, name: &str, add: bool) {
        let entry = self
            .profiles
            .entry(name.to_string())
            .or_insert(ProfileState {
                profile: None,
                refs: 0,
                active: None,
            });
        if add {
            entry.refs += 1;
            if entry.refs > 1 {
                return;
            }
        } else {
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs > 0 {
                return;
            }
        }
        self.refresh_profile(name);
    }

    /// Re-renders a profile (or removes it when unreferenced).
    fn refresh_profile(&mut self, name: &str) {
        let Some(st) = self.profiles.get(name) else {
            return;
        };
        let owner = RulesOwner::Profile(name.to_string());
        if st.refs == 0 {
            if st.active.is_some() {
                self.set_owner_sets(&owner, BTreeSet::new(), BTreeMap::new());
                if let Some(st) = self.profiles.get_mut(name) {
                    st.active = None;
                    if st.profile.is_none() {
                        self.profiles.remove(name);
                    }
                }
                self.dirty_profiles.insert(name.to_string());
            } else if st.profile.is_none() {
                self.profiles.remove(name);
            }
            return;
        }
        let mut sets = BTreeMap::new();
        let rendered = match &st.profile {
            Some(p) => msg::Profile {
                inbound_rules: rules::scan_rules(&p.inbound, &mut sets),
                outbound_rules: rules::scan_rules(&p.outbound, &mut sets),
            },
            // A referenced but missing profile fails closed (upstream's DummyDropRules).
            None => msg::Profile {
                inbound_rules: vec![deny_rule()],
                outbound_rules: vec![deny_rule()],
            },
        };
        self.set_owner_sets(&owner, sets.keys().cloned().collect(), sets);
        if let Some(st) = self.profiles.get_mut(name) {
            st.active = Some(Arc::new(rendered));
        }
        self.dirty_profiles.insert(name.to_string());
    }

    fn on_policy_match_events(&mut self, ev: Vec<MatchEvent<PolicyKey, ItemKey>>) {
        let mut touched = BTreeSet::new();
        for e in ev {
            let (MatchEvent::Started(p, i) | MatchEvent::Stopped(p, i)) = e;
            self.dirty_endpoints.insert(i);
            touched.insert(p);
        }
        for p in touched {
            // Only activity can have changed here; the rendering is reused while active.
            let Some(st) = self.policies.get(&p) else {
                continue;
            };
            let should_be_active = st.policy.assume_needed_on_every_node
                || self.policy_index.items_matching(&p).next().is_some();
            if should_be_active != st.active.is_some() {
                self.refresh_policy(&p);
            }
        }
    }

    /// Brings a policy's active state and rendering up to date.
    fn refresh_policy(&mut self, key: &PolicyKey) {
        let Some(st) = self.policies.get(key) else {
            return;
        };
        let should_be_active = st.policy.assume_needed_on_every_node
            || self.policy_index.items_matching(key).next().is_some();
        let id = policy_id(key, &st.policy);
        if !should_be_active {
            if st.active.is_some() {
                self.deactivate_policy(key);
                self.dirty_policies.insert(id);
            }
            return;
        }
        let p = st.policy.clone();
        let mut sets = BTreeMap::new();
        let rendered = msg::Policy {
            namespace: p.namespace.clone(),
            tier: p.tier.clone(),
            inbound_rules: rules::scan_rules(&p.inbound, &mut sets),
            outbound_rules: rules::scan_rules(&p.outbound, &mut sets),
            untracked: p.do_not_track,
            pre_dnat: p.pre_dnat,
            original_selector: p.selector.to_string(),
            perf_hints: if p.assume_needed_on_every_node {
                vec!["AssumeNeededOnEveryNode".to_string()]
            } else {
                Vec::new()
            },
        };
        if st.active.as_deref() == Some(&rendered) {
            return;
        }
        self.set_owner_sets(
            &RulesOwner::Policy(key.clone()),
            sets.keys().cloned().collect(),
            sets,
        );
        if let Some(st) = self.policies.get_mut(key) {
            st.active = Some(Arc::new(rendered));
        }
        self.dirty_policies.insert(id);
    }

    fn deactivate_policy(&mut self, key: &PolicyKey) {
        if let Some(st) = self.policies.get_mut(key)
            && st.active.take().is_some()
        {
            self.set_owner_sets(
                &RulesOwner::Policy(key.clone()),
                BTreeSet::new(),
                BTreeMap::new(),
            );
        }
    }

    /// Replaces the IP sets an owner references, activating / deactivating sets whose
    /// reference count crosses zero.
    fn set_owner_sets(
        &mut self,
        owner: &RulesOwner,
        new: BTreeSet<String>,
        mut data: BTreeMap<String, IpSetData>,
    ) {
        let old = self.owner_sets.remove(owner).unwrap_or_default();
        let mut mev = Vec::new();
        for id in new.difference(&old) {
            let c = self.set_refs.entry(id.clone()).or_insert(0);
            *c += 1;
            if *c == 1
                && let Some(d) = data.remove(id)
            {
                debug!(set = %id, what = %d.describe(), "ip set active");
                self.ipsets.add_set(id, d, &mut mev);
                self.full_sets.insert(id.clone());
                self.pending_added.remove(id);
                self.pending_removed.remove(id);
                self.dirty_sets.insert(id.clone());
            }
        }
        for id in old.difference(&new) {
            let Some(c) = self.set_refs.get_mut(id) else {
                continue;
            };
            *c -= 1;
            if *c == 0 {
                debug!(set = %id, "ip set inactive");
                self.set_refs.remove(id);
                self.ipsets.remove_set(id);
                self.full_sets.remove(id);
                self.pending_added.remove(id);
                self.pending_removed.remove(id);
                self.dirty_sets.insert(id.clone());
            }
        }
        if !new.is_empty() {
            self.owner_sets.insert(owner.clone(), new);
        }
        self.on_member_events(mev);
    }

    fn on_member_events(&mut self, ev: Vec<MemberEvent>) {
        for e in ev {
            let (set, member, added) = match e {
                MemberEvent::Added(s, m) => (s, m, true),
                MemberEvent::Removed(s, m) => (s, m, false),
            };
            // New sets are sent in full; unsent sets need no deltas.
            if self.full_sets.contains(&set) || !self.sent_sets.contains(&set) {
                continue;
            }
            trace!(set = %set, member = %member, added, "ip set member");
            let (this, other) = if added {
                (&mut self.pending_added, &mut self.pending_removed)
            } else {
                (&mut self.pending_removed, &mut self.pending_added)
            };
            let cancelled = other.get_mut(&set).is_some_and(|s| s.remove(&member));
            if cancelled {
                if other.get(&set).is_some_and(BTreeSet::is_empty) {
                    other.remove(&set);
                }
            } else {
                this.entry(set).or_default().insert(member);
            }
        }
    }

    /// Emits everything that changed since the last flush, coalesced per object and ordered as
    /// upstream's EventSequencer: in-sync; IP set adds and deltas; policy, profile and endpoint
    /// updates; then endpoint, profile, policy and IP set removals.
    pub fn flush(&mut self) -> Vec<ToDataplane> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.pending_in_sync) {
            out.push(ToDataplane::InSync);
        }

        // IP set creations (full membership).
        let mut set_removes = Vec::new();
        for id in std::mem::take(&mut self.dirty_sets) {
            let active = self.set_refs.contains_key(&id);
            if active {
                if self.full_sets.remove(&id) {
                    let set_type = self
                        .ipsets
                        .set_data(&id)
                        .map_or(msg::IpSetType::Net, IpSetData::set_type);
                    out.push(ToDataplane::IpSetUpdate(msg::IpSetUpdate {
                        members: self.ipsets.members(&id),
                        id: id.clone(),
                        set_type,
                    }));
                    self.sent_sets.insert(id);
                }
            } else if self.sent_sets.remove(&id) {
                set_removes.push(id);
            }
        }
        self.full_sets.clear();
        // Deltas for sets already known to the dataplane.
        let added = std::mem::take(&mut self.pending_added);
        let mut removed = std::mem::take(&mut self.pending_removed);
        let mut delta_ids: BTreeSet<String> = added.keys().cloned().collect();
        delta_ids.extend(removed.keys().cloned());
        let mut added = added;
        for id in delta_ids {
            let a = added.remove(&id).unwrap_or_default();
            let r = removed.remove(&id).unwrap_or_default();
            if a.is_empty() && r.is_empty() {
                continue;
            }
            out.push(ToDataplane::IpSetDeltaUpdate(msg::IpSetDeltaUpdate {
                id,
                added_members: a.into_iter().collect(),
                removed_members: r.into_iter().collect(),
            }));
        }

        // Policies.
        let mut policy_removes = Vec::new();
        let active_by_id: HashMap<PolicyId, Arc<msg::Policy>> = self
            .dirty_policies
            .iter()
            .filter_map(|id| self.find_active_policy(id).map(|p| (id.clone(), p)))
            .collect();
        for id in std::mem::take(&mut self.dirty_policies) {
            match active_by_id.get(&id) {
                Some(p) => {
                    if self.sent_policies.get(&id) != Some(p) {
                        self.sent_policies.insert(id.clone(), p.clone());
                        out.push(ToDataplane::ActivePolicyUpdate(msg::ActivePolicyUpdate {
                            id,
                            policy: p.as_ref().clone(),
                        }));
                    }
                }
                None => {
                    if self.sent_policies.remove(&id).is_some() {
                        policy_removes.push(id);
                    }
                }
            }
        }

        // Profiles.
        let mut profile_removes = Vec::new();
        for name in std::mem::take(&mut self.dirty_profiles) {
            match self.profiles.get(&name).and_then(|st| st.active.clone()) {
                Some(p) => {
                    if self.sent_profiles.get(&name) != Some(&p) {
                        self.sent_profiles.insert(name.clone(), p.clone());
                        out.push(ToDataplane::ActiveProfileUpdate(msg::ActiveProfileUpdate {
                            id: ProfileId { name },
                            profile: p.as_ref().clone(),
                        }));
                    }
                }
                None => {
                    if self.sent_profiles.remove(&name).is_some() {
                        profile_removes.push(name);
                    }
                }
            }
        }

        // Endpoints.
        let mut endpoint_removes = Vec::new();
        for key in std::mem::take(&mut self.dirty_endpoints) {
            let desired = self.render_endpoint(&key);
            let sent = self.sent_endpoints.get(&key);
            match desired {
                Some(d) => {
                    if sent == Some(&d) {
                        continue;
                    }
                    // An identity change (rare) removes the old one first.
                    if let Some(old) = sent
                        && !same_endpoint_id(old, &d)
                    {
                        endpoint_removes.push(old.clone());
                    }
                    out.push(match &d {
                        SentEndpoint::Workload(id, ep) => {
                            ToDataplane::WorkloadEndpointUpdate(msg::WorkloadEndpointUpdate {
                                id: id.clone(),
                                endpoint: ep.clone(),
                            })
                        }
                        SentEndpoint::Host(id, ep) => {
                            ToDataplane::HostEndpointUpdate(msg::HostEndpointUpdate {
                                id: id.clone(),
                                endpoint: ep.clone(),
                            })
                        }
                    });
                    self.sent_endpoints.insert(key, d);
                }
                None => {
                    if let Some(old) = self.sent_endpoints.remove(&key) {
                        endpoint_removes.push(old);
                    }
                }
            }
        }
        for old in endpoint_removes {
            out.push(match old {
                SentEndpoint::Workload(id, _) => {
                    ToDataplane::WorkloadEndpointRemove(msg::WorkloadEndpointRemove { id })
                }
                SentEndpoint::Host(id, _) => {
                    ToDataplane::HostEndpointRemove(msg::HostEndpointRemove { id })
                }
            });
        }
        for name in profile_removes {
            out.push(ToDataplane::ActiveProfileRemove(msg::ActiveProfileRemove {
                id: ProfileId { name },
            }));
        }
        for id in policy_removes {
            out.push(ToDataplane::ActivePolicyRemove(msg::ActivePolicyRemove {
                id,
            }));
        }
        for id in set_removes {
            out.push(ToDataplane::IpSetRemove(msg::IpSetRemove { id }));
        }
        out
    }

    fn find_active_policy(&self, id: &PolicyId) -> Option<Arc<msg::Policy>> {
        let kind = match id.kind.as_str() {
            "NetworkPolicy" => backend::PolicyKind::NetworkPolicy,
            _ => backend::PolicyKind::GlobalNetworkPolicy,
        };
        let key = PolicyKey {
            kind,
            namespace: id.namespace.clone(),
            name: id.name.clone(),
        };
        let st = self.policies.get(&key)?;
        if st.policy.tier != id.tier {
            return None;
        }
        st.active.clone()
    }

    /// Computes the message for a local endpoint, or `None` if it is not (or no longer) local.
    fn render_endpoint(&self, key: &ItemKey) -> Option<SentEndpoint> {
        let ep = self.local_endpoints.get(key)?;
        let tiers = self.resolve_tiers(key);
        let profile_ids = ep.item.profiles.clone();
        Some(match &ep.details {
            EndpointDetails::Workload(w) => {
                let (normal, _, _, _) = split_tiers(&tiers);
                SentEndpoint::Workload(
                    msg::WorkloadEndpointId {
                        orchestrator_id: w.orchestrator_id.clone(),
                        workload_id: w.workload_id.clone(),
                        endpoint_id: w.endpoint_id.clone(),
                    },
                    msg::WorkloadEndpoint {
                        state: "active".to_string(),
                        name: w.interface_name.clone(),
                        mac: w.mac.clone(),
                        profile_ids,
                        ipv4_nets: w.ipv4_nets.clone(),
                        ipv6_nets: w.ipv6_nets.clone(),
                        tiers: normal,
                        ipv4_nat: nat_info(&w.ipv4_nat),
                        ipv6_nat: nat_info(&w.ipv6_nat),
                        allow_spoofed_source_prefixes: w.allow_spoofed_source_prefixes.clone(),
                    },
                )
            }
            EndpointDetails::Host(h) => {
                let (normal, untracked, pre_dnat, forward) = split_tiers(&tiers);
                let name = match key {
                    ItemKey::Host(n) => n.clone(),
                    other => format!("{other:?}"),
                };
                SentEndpoint::Host(
                    msg::HostEndpointId { endpoint_id: name },
                    msg::HostEndpoint {
                        name: h.interface_name.clone(),
                        profile_ids,
                        tiers: normal,
                        untracked_tiers: untracked,
                        pre_dnat_tiers: pre_dnat,
                        forward_tiers: forward,
                        expected_ipv4_addrs: h.expected_ipv4_addrs.clone(),
                        expected_ipv6_addrs: h.expected_ipv6_addrs.clone(),
                    },
                )
            }
        })
    }

    /// The policies matching a local endpoint, grouped by tier, tiers and policies sorted
    /// (§1.6).
    fn resolve_tiers(&self, key: &ItemKey) -> Vec<ResolvedTier> {
        let mut by_tier: BTreeMap<&str, Vec<(&PolicyKey, &backend::Policy)>> = BTreeMap::new();
        for pk in self.policy_index.selectors_matching(key) {
            if let Some(st) = self.policies.get(pk) {
                by_tier
                    .entry(st.policy.tier.as_str())
                    .or_default()
                    .push((pk, &st.policy));
            }
        }
        let mut tiers: Vec<ResolvedTier> = by_tier
            .into_iter()
            .map(|(name, mut pols)| {
                pols.sort_by(|a, b| policy_cmp(a.0, a.1, b.0, b.1));
                let (valid, order, default_action) = match self.tiers.get(name) {
                    Some(t) => (true, t.order, t.default_action.clone()),
                    None if name == DEFAULT_TIER => (true, Some(DEFAULT_TIER_ORDER), "Deny".into()),
                    None => (false, None, "Deny".to_string()),
                };
                ResolvedTier {
                    name: name.to_string(),
                    valid,
                    order,
                    default_action,
                    policies: pols
                        .into_iter()
                        .map(|(k, p)| (policy_id(k, p), PolicyFlags::of(p)))
                        .collect(),
                }
            })
            .collect();
        tiers.sort_by(|a, b| {
            b.valid
                .cmp(&a.valid)
                .then_with(|| order_cmp(a.order, b.order))
                .then_with(|| a.name.cmp(&b.name))
        });
        tiers
    }
}

/// Sort/flag facts of one policy for endpoint rendering.
#[derive(Debug, Clone, Copy)]
struct PolicyFlags {
    ingress: bool,
    egress: bool,
    do_not_track: bool,
    pre_dnat: bool,
    apply_on_forward: bool,
}

impl PolicyFlags {
    fn of(p: &backend::Policy) -> Self {
        PolicyFlags {
            ingress: p.ingress,
            egress: p.egress,
            do_not_track: p.do_not_track,
            pre_dnat: p.pre_dnat,
            apply_on_forward: p.apply_on_forward,
        }
    }
}

#[derive(Debug)]
struct ResolvedTier {
    name: String,
    valid: bool,
    order: Option<f64>,
    default_action: String,
    policies: Vec<(PolicyId, PolicyFlags)>,
}

type TierLists = (
    Vec<msg::TierInfo>,
    Vec<msg::TierInfo>,
    Vec<msg::TierInfo>,
    Vec<msg::TierInfo>,
);

/// Splits resolved tiers into normal, untracked, pre-DNAT and forward lists, as upstream's
/// `tierInfoToProtoTierInfo`: untracked and pre-DNAT tiers end with Pass; pre-DNAT policies
/// never govern egress; a tier appears in a list only if it has a policy there.
fn split_tiers(tiers: &[ResolvedTier]) -> TierLists {
    let mut lists: TierLists = Default::default();
    for t in tiers {
        let mk = |action: &str| msg::TierInfo {
            name: t.name.clone(),
            default_action: action.to_string(),
            ingress_policies: Vec::new(),
            egress_policies: Vec::new(),
        };
        let mut normal = mk(&t.default_action);
        let mut untracked = mk("Pass");
        let mut pre_dnat = mk("Pass");
        let mut forward = mk(&t.default_action);
        for (id, f) in &t.policies {
            let add = |ti: &mut msg::TierInfo, egress_allowed: bool| {
                if f.ingress {
                    ti.ingress_policies.push(id.clone());
                }
                if egress_allowed && f.egress {
                    ti.egress_policies.push(id.clone());
                }
            };
            if f.do_not_track {
                add(&mut untracked, true);
            } else if f.pre_dnat {
                add(&mut pre_dnat, false);
            } else {
                if f.apply_on_forward {
                    add(&mut forward, true);
                }
                add(&mut normal, true);
            }
        }
        for (ti, list) in [
            (normal, &mut lists.0),
            (untracked, &mut lists.1),
            (pre_dnat, &mut lists.2),
            (forward, &mut lists.3),
        ] {
            if !ti.ingress_policies.is_empty() || !ti.egress_policies.is_empty() {
                list.push(ti);
            }
        }
    }
    lists
}

/// `None` (no order) sorts after every number.
fn order_cmp(a: Option<f64>, b: Option<f64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Within a tier: order ascending (none last), then `name/namespace/kind`.
fn policy_cmp(
    ka: &PolicyKey,
    a: &backend::Policy,
    kb: &PolicyKey,
    b: &backend::Policy,
) -> Ordering {
    order_cmp(a.order, b.order).then_with(|| {
        let sa = format!("{}/{}/{}", ka.name, ka.namespace, ka.kind.as_str());
        let sb = format!("{}/{}/{}", kb.name, kb.namespace, kb.kind.as_str());
        sa.cmp(&sb)
    })
}

fn policy_id(key: &PolicyKey, p: &backend::Policy) -> PolicyId {
    PolicyId {
        tier: p.tier.clone(),
        name: key.name.clone(),
        namespace: key.namespace.clone(),
        kind: key.kind.as_str().to_string(),
    }
}

fn same_endpoint_id(a: &SentEndpoint, b: &SentEndpoint) -> bool {
    match (a, b) {
        (SentEndpoint::Workload(x, _), SentEndpoint::Workload(y, _)) => x == y,
        (SentEndpoint::Host(x, _), SentEndpoint::Host(y, _)) => x == y,
        _ => false,
    }
}

fn nat_info(nats: &[(String, String)]) -> Vec<msg::NatInfo> {
    nats.iter()
        .map(|(int, ext)| msg::NatInfo {
            ext_ip: ext.clone(),
            int_ip: int.clone(),
        })
        .collect()
}

fn deny_rule() -> msg::Rule {
    msg::Rule {
        action: "deny".to_string(),
        ..Default::default()
    }
}

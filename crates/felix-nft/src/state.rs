//! The desired dataplane state, fed by the calculation graph's messages.

use std::collections::{BTreeMap, BTreeSet};

use crate::rules::{Family, prefix_member_family};
use felix_calc::msg::{
    HostEndpoint, HostEndpointId, IpSetType, Policy, PolicyId, Profile, ToDataplane,
    WorkloadEndpoint, WorkloadEndpointId,
};

/// Errors applying a calculation-graph message.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("ip set {id}: delta update for an unknown set")]
    UnknownIpSet { id: String },
}

/// An IP set as the calculation graph describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub set_type: IpSetType,
    pub members: BTreeSet<String>,
    /// Members that are prefixes (not single addresses), IPv4 and IPv6.
    prefixes: [usize; 2],
}

impl IpSet {
    fn new(set_type: IpSetType, members: BTreeSet<String>) -> Self {
        let mut prefixes = [0; 2];
        for m in &members {
            if let Some(f) = prefix_member_family(m) {
                prefixes[fam_index(f)] += 1;
            }
        }
        IpSet {
            set_type,
            members,
            prefixes,
        }
    }

    /// Whether any member of family `fam` is a prefix (the set must be an interval set).
    pub fn has_prefixes(&self, fam: Family) -> bool {
        self.prefixes[fam_index(fam)] > 0
    }

    fn insert(&mut self, m: &str) -> bool {
        let added = self.members.insert(m.to_string());
        if added && let Some(f) = prefix_member_family(m) {
            self.prefixes[fam_index(f)] += 1;
        }
        added
    }

    fn remove(&mut self, m: &str) -> bool {
        let removed = self.members.remove(m);
        if removed && let Some(f) = prefix_member_family(m) {
            self.prefixes[fam_index(f)] -= 1;
        }
        removed
    }
}

fn fam_index(f: Family) -> usize {
    usize::from(f == Family::V6)
}

/// Everything the renderer needs; updated message by message (change `ip_sets` only through
/// [`DesiredState::apply`], which keeps the IPv6 member count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub ip_sets: BTreeMap<String, IpSet>,
    /// IPv6 members over all IP sets: while there are none, no IPv6 sets are rendered.
    ipv6_members: usize,
    pub policies: BTreeMap<PolicyId, Policy>,
    pub profiles: BTreeMap<String, Profile>,
    pub workloads: BTreeMap<WorkloadEndpointId, WorkloadEndpoint>,
    pub host_endpoints: BTreeMap<HostEndpointId, HostEndpoint>,
    /// The calculation graph reported `InSync` at least once.
    pub in_sync: bool,
    /// IP pools by name, for natOutgoing (not part of the calculation graph's messages; the
    /// agent sets them with [`crate::NftDataplane::set_ip_pools`]).
    pub ip_pools: BTreeMap<String, PoolNat>,
}

/// What natOutgoing needs to know about one IP pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolNat {
    pub cidr: ipnet::IpNet,
    pub nat_outgoing: bool,
    pub disabled: bool,
}

impl DesiredState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether any IP set has an IPv6 member. Until one does, every IPv6 set would be empty:
    /// the renderer leaves them out and renders the rules that use them as if empty.
    pub fn has_ipv6_members(&self) -> bool {
        self.ipv6_members > 0
    }

    /// Whether IP set `id` has prefixes in family `fam` (see [`IpSet::has_prefixes`]).
    pub fn has_prefixes(&self, id: &str, fam: Family) -> bool {
        self.ip_sets.get(id).is_some_and(|s| s.has_prefixes(fam))
    }

    /// Apply one message. A delta for an unknown set is an error (the graph sends the full
    /// set first); everything else is an idempotent upsert or remove.
    pub fn apply(&mut self, msg: &ToDataplane) -> Result<(), StateError> {
        match msg {
            ToDataplane::InSync => self.in_sync = true,
            ToDataplane::IpSetUpdate(u) => {
                let members: BTreeSet<String> = u.members.iter().cloned().collect();
                self.ipv6_members += count_v6(&members);
                let old = self
                    .ip_sets
                    .insert(u.id.clone(), IpSet::new(u.set_type, members));
                if let Some(old) = old {
                    self.ipv6_members -= count_v6(&old.members);
                }
            }
            ToDataplane::IpSetDeltaUpdate(d) => {
                let set = self
                    .ip_sets
                    .get_mut(&d.id)
                    .ok_or_else(|| StateError::UnknownIpSet { id: d.id.clone() })?;
                for m in &d.removed_members {
                    if set.remove(m) && is_v6_member(m) {
                        self.ipv6_members -= 1;
                    }
                }
                for m in &d.added_members {
                    if set.insert(m) && is_v6_member(m) {
                        self.ipv6_members += 1;
                    }
                }
            }
            ToDataplane::IpSetRemove(r) => {
                if let Some(old) = self.ip_sets.remove(&r.id) {
                    self.ipv6_members -= count_v6(&old.members);
                }
            }
            ToDataplane::ActivePolicyUpdate(u) => {
                self.policies.insert(u.id.clone(), u.policy.clone());
            }
            ToDataplane::ActivePolicyRemove(r) => {
                self.policies.remove(&r.id);
            }
            ToDataplane::ActiveProfileUpdate(u) => {
                self.profiles.insert(u.id.name.clone(), u.profile.clone());
            }
            ToDataplane::ActiveProfileRemove(r) => {
                self.profiles.remove(&r.id.name);
            }
            ToDataplane::WorkloadEndpointUpdate(u) => {
                self.workloads.insert(u.id.clone(), u.endpoint.clone());
            }
            ToDataplane::WorkloadEndpointRemove(r) => {
                self.workloads.remove(&r.id);
            }
            ToDataplane::HostEndpointUpdate(u) => {
                self.host_endpoints.insert(u.id.clone(), u.endpoint.clone());
            }
            ToDataplane::HostEndpointRemove(r) => {
                self.host_endpoints.remove(&r.id);
            }
        }
        Ok(())
    }
}

/// An IPv6 member: an address or CIDR (`fd00::1/128`), or a named-port member
/// (`fd00::1,tcp:8080`), whose address part has a colon.
fn is_v6_member(m: &str) -> bool {
    m.split(',').next().is_some_and(|a| a.contains(':'))
}

fn count_v6(members: &BTreeSet<String>) -> usize {
    members.iter().filter(|m| is_v6_member(m)).count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use felix_calc::msg::{IpSetDeltaUpdate, IpSetRemove, IpSetUpdate};

    fn update(id: &str, members: &[&str]) -> ToDataplane {
        ToDataplane::IpSetUpdate(IpSetUpdate {
            id: id.into(),
            set_type: IpSetType::Ip,
            members: members.iter().map(|m| m.to_string()).collect(),
        })
    }

    #[test]
    fn ipv6_members_are_counted_through_updates_deltas_and_removals() {
        let mut st = DesiredState::new();
        st.apply(&update("a", &["10.0.0.1/32", "10.0.0.2/32"]))
            .unwrap();
        assert!(!st.has_ipv6_members());
        st.apply(&update("b", &["fd00::1/128", "fd00::1,tcp:80"]))
            .unwrap();
        assert_eq!(st.ipv6_members, 2);
        // A replacement counts the new members only.
        st.apply(&update("b", &["fd00::2/128"])).unwrap();
        assert_eq!(st.ipv6_members, 1);
        let delta = |add: &[&str], rem: &[&str]| {
            ToDataplane::IpSetDeltaUpdate(IpSetDeltaUpdate {
                id: "a".into(),
                added_members: add.iter().map(|m| m.to_string()).collect(),
                removed_members: rem.iter().map(|m| m.to_string()).collect(),
            })
        };
        // Re-adding a present member or removing an absent one changes nothing.
        st.apply(&delta(&["fd00::3/128", "fd00::3/128"], &["fd00::9/128"]))
            .unwrap();
        assert_eq!(st.ipv6_members, 2);
        st.apply(&delta(&[], &["fd00::3/128", "10.0.0.1/32"]))
            .unwrap();
        assert_eq!(st.ipv6_members, 1);
        st.apply(&ToDataplane::IpSetRemove(IpSetRemove { id: "b".into() }))
            .unwrap();
        assert!(!st.has_ipv6_members());
        st.apply(&ToDataplane::IpSetRemove(IpSetRemove { id: "b".into() }))
            .unwrap();
        assert!(!st.has_ipv6_members());
    }
}

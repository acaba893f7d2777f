//! The desired dataplane state, fed by the calculation graph's messages.

use std::collections::{BTreeMap, BTreeSet};

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
}

/// Everything the renderer needs; updated message by message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub ip_sets: BTreeMap<String, IpSet>,
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

    /// Apply one message. A delta for an unknown set is an error (the graph sends the full
    /// set first); everything else is an idempotent upsert or remove.
    pub fn apply(&mut self, msg: &ToDataplane) -> Result<(), StateError> {
        match msg {
            ToDataplane::InSync => self.in_sync = true,
            ToDataplane::IpSetUpdate(u) => {
                self.ip_sets.insert(
                    u.id.clone(),
                    IpSet {
                        set_type: u.set_type,
                        members: u.members.iter().cloned().collect(),
                    },
                );
            }
            ToDataplane::IpSetDeltaUpdate(d) => {
                let set = self
                    .ip_sets
                    .get_mut(&d.id)
                    .ok_or_else(|| StateError::UnknownIpSet { id: d.id.clone() })?;
                for m in &d.removed_members {
                    set.members.remove(m);
                }
                set.members.extend(d.added_members.iter().cloned());
            }
            ToDataplane::IpSetRemove(r) => {
                self.ip_sets.remove(&r.id);
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

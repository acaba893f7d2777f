//! One module per group of kinds. Each spec type implements [`crate::Spec`].

pub mod bgp;
pub mod clusterinfo;
pub mod common;
pub mod endpoint;
pub mod felix;
pub mod ipam;
pub mod kcc;
pub mod netset;
pub mod node;
pub mod policy;
pub mod profile;
pub mod tier;

pub use bgp::{BGPConfigurationSpec, BGPFilterSpec, BGPPeerSpec};
pub use clusterinfo::ClusterInformationSpec;
pub use endpoint::{HostEndpointSpec, WorkloadEndpointSpec};
pub use felix::FelixConfigurationSpec;
pub use ipam::{IPAMConfigurationSpec, IPPoolSpec, IPReservationSpec};
pub use kcc::KubeControllersConfigurationSpec;
pub use netset::{GlobalNetworkSetSpec, NetworkSetSpec};
pub use node::NodeSpec;
pub use policy::{
    GlobalNetworkPolicySpec, NetworkPolicySpec, StagedGlobalNetworkPolicySpec,
    StagedNetworkPolicySpec,
};
pub use profile::ProfileSpec;
pub use tier::TierSpec;

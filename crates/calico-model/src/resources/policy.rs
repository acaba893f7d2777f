//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedGlobalNetworkPolicySpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StagedNetworkPolicySpec {}

impl Spec for GlobalNetworkPolicySpec {
    const KIND: &'static str = "GlobalNetworkPolicy";
    const PLURAL: &'static str = "globalnetworkpolicies";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["globalnetworkpolicy", "gnp", "gnps"];
}

impl Spec for NetworkPolicySpec {
    const KIND: &'static str = "NetworkPolicy";
    const PLURAL: &'static str = "networkpolicies";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &["networkpolicy", "policy", "policies", "pol", "pols", "np", "nps"];
}

impl Spec for StagedGlobalNetworkPolicySpec {
    const KIND: &'static str = "StagedGlobalNetworkPolicy";
    const PLURAL: &'static str = "stagedglobalnetworkpolicies";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["stagedglobalnetworkpolicy", "sgnp", "sgnps"];
}

impl Spec for StagedNetworkPolicySpec {
    const KIND: &'static str = "StagedNetworkPolicy";
    const PLURAL: &'static str = "stagednetworkpolicies";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &["stagednetworkpolicy", "snp", "snps"];
}

//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEndpointSpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {}

impl Spec for HostEndpointSpec {
    const KIND: &'static str = "HostEndpoint";
    const PLURAL: &'static str = "hostendpoints";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["hostendpoint", "hep", "heps"];
}

impl Spec for WorkloadEndpointSpec {
    const KIND: &'static str = "WorkloadEndpoint";
    const PLURAL: &'static str = "workloadendpoints";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &["workloadendpoint", "wep", "weps"];
}

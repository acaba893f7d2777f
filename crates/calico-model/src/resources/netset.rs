//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkSetSpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSetSpec {}

impl Spec for GlobalNetworkSetSpec {
    const KIND: &'static str = "GlobalNetworkSet";
    const PLURAL: &'static str = "globalnetworksets";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["globalnetworkset", "gns"];
}

impl Spec for NetworkSetSpec {
    const KIND: &'static str = "NetworkSet";
    const PLURAL: &'static str = "networksets";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &["networkset", "netsets", "netset"];
}

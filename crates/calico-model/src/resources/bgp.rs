//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPConfigurationSpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterSpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {}

impl Spec for BGPConfigurationSpec {
    const KIND: &'static str = "BGPConfiguration";
    const PLURAL: &'static str = "bgpconfigurations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["bgpconfiguration", "bgpconfig", "bgpconfigs"];
}

impl Spec for BGPFilterSpec {
    const KIND: &'static str = "BGPFilter";
    const PLURAL: &'static str = "bgpfilters";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["bgpfilter"];
}

impl Spec for BGPPeerSpec {
    const KIND: &'static str = "BGPPeer";
    const PLURAL: &'static str = "bgppeers";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["bgppeer", "bgpp", "bgpps", "bp", "bps"];
}

//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigurationSpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPReservationSpec {}

impl Spec for IPAMConfigurationSpec {
    const KIND: &'static str = "IPAMConfiguration";
    const PLURAL: &'static str = "ipamconfigurations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["ipamconfiguration", "ipamconfig", "ipamconfigs"];
}

impl Spec for IPPoolSpec {
    const KIND: &'static str = "IPPool";
    const PLURAL: &'static str = "ippools";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["ippool", "ipp", "ipps", "pool", "pools"];
}

impl Spec for IPReservationSpec {
    const KIND: &'static str = "IPReservation";
    const PLURAL: &'static str = "ipreservations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["ipreservation"];
}

//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FelixConfigurationSpec {}

impl Spec for FelixConfigurationSpec {
    const KIND: &'static str = "FelixConfiguration";
    const PLURAL: &'static str = "felixconfigurations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["felixconfiguration", "felixconfig", "felixconfigs"];
}

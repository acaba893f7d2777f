//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeControllersConfigurationSpec {}

impl Spec for KubeControllersConfigurationSpec {
    const KIND: &'static str = "KubeControllersConfiguration";
    const PLURAL: &'static str = "kubecontrollersconfigurations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["kubecontrollersconfiguration", "kcc"];
}

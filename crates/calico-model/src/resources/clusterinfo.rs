//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInformationSpec {}

impl Spec for ClusterInformationSpec {
    const KIND: &'static str = "ClusterInformation";
    const PLURAL: &'static str = "clusterinformations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["clusterinformation", "clusterinfo", "clusterinfos"];
}

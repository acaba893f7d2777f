//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {}

impl Spec for TierSpec {
    const KIND: &'static str = "Tier";
    const PLURAL: &'static str = "tiers";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["tier"];
}

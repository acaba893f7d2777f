//! PLACEHOLDER: to be written (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::resource::Spec;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {}

impl Spec for ProfileSpec {
    const KIND: &'static str = "Profile";
    const PLURAL: &'static str = "profiles";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["profile", "pro", "pros"];
}

//! `Profile`: rules and labels inherited by the endpoints that reference it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::common::{validate_label_map, validate_meta_labels_annotations};
use crate::resources::policy::{Rule, validate_resource_name, validate_rule_lists};

/// `Profile.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// Labels every endpoint referencing the profile inherits (its own labels win).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::load::string_map"
    )]
    pub labels_to_apply: BTreeMap<String, String>,
}

impl Spec for ProfileSpec {
    const KIND: &'static str = "Profile";
    const PLURAL: &'static str = "profiles";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["profile", "pro", "pros"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn apply_defaults(_meta: &mut ObjectMeta, spec: &mut Self) {
        for r in spec.ingress.iter_mut().chain(spec.egress.iter_mut()) {
            r.apply_defaults();
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        validate_label_map("spec.labelsToApply", &spec.labels_to_apply, errs);
        validate_rule_lists("spec", &spec.ingress, &spec.egress, false, errs);
    }
}

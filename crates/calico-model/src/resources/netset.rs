//! `NetworkSet` (namespaced) and `GlobalNetworkSet`: labelled lists of CIDRs that rule
//! selectors can match.

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::common::{parse_cidr_or_ip_net, validate_meta_labels_annotations};
use crate::resources::policy::validate_resource_name;

/// The label Calico itself puts on namespaced objects; users may not set it on network sets.
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";

/// `GlobalNetworkSet.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkSetSpec {
    /// CIDRs (a bare address is a /32 or /128).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
}

/// `NetworkSet.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSetSpec {
    /// CIDRs (a bare address is a /32 or /128).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
}

fn validate_netset(meta: &ObjectMeta, nets: &[String], errs: &mut Errors) {
    validate_meta_labels_annotations(meta, errs);
    if meta.labels.contains_key(LABEL_NAMESPACE) {
        errs.push(
            format!("metadata.labels[{LABEL_NAMESPACE:?}]"),
            "projectcalico.org/namespace is not a valid label name (it is reserved for Calico)",
        );
    }
    for (i, n) in nets.iter().enumerate() {
        if parse_cidr_or_ip_net(n).is_none() {
            errs.push(
                format!("spec.nets[{i}]"),
                format!("invalid CIDR or IP address {n:?}"),
            );
        } else if nets[..i].contains(n) {
            errs.push(format!("spec.nets[{i}]"), format!("duplicate entry {n:?}"));
        }
    }
}

impl Spec for GlobalNetworkSetSpec {
    const KIND: &'static str = "GlobalNetworkSet";
    const PLURAL: &'static str = "globalnetworksets";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["globalnetworkset", "gns"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_netset(meta, &spec.nets, errs);
    }
}

impl Spec for NetworkSetSpec {
    const KIND: &'static str = "NetworkSet";
    const PLURAL: &'static str = "networksets";
    const NAMESPACED: bool = true;
    const ALIASES: &'static [&'static str] = &["networkset", "netsets", "netset"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_netset(meta, &spec.nets, errs);
    }
}

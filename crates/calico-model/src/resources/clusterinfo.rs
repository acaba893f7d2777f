//! `ClusterInformation`: the cluster-wide singleton (`default`) that calico-node writes at start-up
//! (cluster GUID, type, version, datastore readiness).

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::common::null_as_default;
use crate::resources::common::validate_meta_labels_annotations;

/// `spec` of the `ClusterInformation` singleton.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInformationSpec {
    /// Unique identifier of the cluster.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "clusterGUID",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_guid: String,
    /// Free-form comma-separated list, e.g. `k8s,bgp`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_type: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub calico_version: String,
    /// False stops CNI and Felix from acting (e.g. during a datastore migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore_ready: Option<bool>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub variant: String,
}

impl Spec for ClusterInformationSpec {
    const KIND: &'static str = "ClusterInformation";
    const PLURAL: &'static str = "clusterinformations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["clusterinformation", "clusterinfo", "clusterinfos"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if meta.name != "default" {
            errs.push(
                "metadata.name",
                format!(
                    "{:?}: ClusterInformation is a singleton and must be named \"default\"",
                    meta.name
                ),
            );
        }
    }

    fn validate(meta: &ObjectMeta, _spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
    }
}

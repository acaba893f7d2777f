//! Calico's Kubernetes API translation, as upstream's libcalico-go `k8s/conversion` does it:
//! Namespace → Profile `kns.<ns>`, ServiceAccount → Profile `ksa.<ns>.<sa>`, Pod → the
//! pod-derived fields of its WorkloadEndpoint, and `networking.k8s.io/v1` NetworkPolicy →
//! Calico NetworkPolicy `knp.default.<name>`. Pure: no I/O.

pub mod convert;
pub mod error;
pub mod eval;
pub mod store;
pub mod types;

pub use convert::{
    Translated, k8s_network_policy_to_calico, merge_pod_into_workload_endpoint,
    namespace_to_profile, pod_endpoint_fields, service_account_to_profile, translate,
};
pub use error::K8sError;
pub use store::K8sObject;
pub use types::K8sResource;

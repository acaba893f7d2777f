//! The Kubernetes part of ADD, as upstream's k8s path does it: the Pod (stored by calicoctl in
//! the Kubernetes object store, `calico_k8s::store`) supplies the endpoint's labels
//! (`projectcalico.org/{namespace,orchestrator,serviceaccount}` added), its profiles
//! (`kns.<ns>`, `ksa.<ns>.<sa>`), service account and named ports. The merge is
//! `calico_k8s::merge_pod_into_workload_endpoint`, the same one calicoctl applies to an
//! existing endpoint, so a Pod applied before or after ADD gives the same endpoint.
//!
//! Cost: one datastore get. Namespace labels need no lookup: they reach the endpoint through the
//! `kns.<ns>` profile's `labelsToApply`, service-account labels through `ksa.<ns>.<sa>`.
//! Without a stored Pod the endpoint keeps what the plugin derived from `CNI_ARGS` alone.

use calico_k8s::K8sObject;
use calico_k8s::K8sResource;
use calico_k8s::store::pod_key;
use calico_model::Resource;
use calico_model::resources::WorkloadEndpointSpec;

use super::context::Context;
use crate::spec::{CniError, ErrorCode, Request};

/// Merges the stored Pod of a Kubernetes request into the endpoint ADD is about to write.
pub(super) async fn apply_stored_pod(
    ctx: &Context,
    req: &Request,
    wep: Resource<WorkloadEndpointSpec>,
) -> Result<Resource<WorkloadEndpointSpec>, CniError> {
    if !req.args.is_k8s() {
        return Ok(wep);
    }
    let key = pod_key(&req.args.k8s_pod_namespace, &req.args.k8s_pod_name);
    let stored = ctx.client.kv().get(&key).await.map_err(|e| {
        CniError::new(
            ErrorCode::TryAgainLater,
            format!(
                "pod {}/{}: read",
                req.args.k8s_pod_namespace, req.args.k8s_pod_name
            ),
            e.to_string(),
        )
    })?;
    let Some(stored) = stored else {
        tracing::debug!(%key, "no stored pod; endpoint from CNI_ARGS only");
        return Ok(wep);
    };
    let obj = K8sObject::from_stored(&key, &stored.value)
        .map_err(|e| CniError::plugin(format!("pod at {key}: cannot decode"), e.to_string()))?;
    let K8sResource::Pod(pod) = obj.resource else {
        return Err(CniError::plugin(
            format!(
                "{key}: stored object is a {}, not a Pod",
                obj.resource.kind()
            ),
            "",
        ));
    };
    if pod.spec.host_network {
        tracing::warn!(%key, "pod is host-networked; endpoint from CNI_ARGS only");
        return Ok(wep);
    }
    calico_k8s::merge_pod_into_workload_endpoint(&pod, Some(&wep), "").map_err(|e| {
        CniError::plugin(
            format!(
                "pod {}/{}: cannot apply to the endpoint",
                req.args.k8s_pod_namespace, req.args.k8s_pod_name
            ),
            e.to_string(),
        )
    })
}

//! Kubernetes objects in `create|apply|replace|delete -f`: with an etcd-style datastore there is
//! no API server and no kube-controllers, so calicoctl does their part (upstream's
//! kube-controllers and `k8s/conversion`):
//!
//! - `v1` Namespace → Profile `kns.<ns>`; ServiceAccount → Profile `ksa.<ns>.<sa>`;
//!   `networking.k8s.io/v1` NetworkPolicy → NetworkPolicy `knp.default.<name>` in its namespace.
//!   Deleting the object deletes its translation.
//! - Pod → kept in the Kubernetes object store (`calico_k8s::store`, where the CNI plugin reads
//!   it on ADD) and merged into the pod's WorkloadEndpoints that already exist (orchestrator
//!   `k8s`, any node): labels, profiles, service account and named ports. Deleting a Pod deletes
//!   only the stored object; the endpoint is CNI DEL's.
//!
//! Every object is also stored under `/calico/k8s/v1/...`; that record decides whether `create`
//! finds it existing and `replace` finds it missing, as the API server would.

use calico_datastore::client::{Client, ClientError};
use calico_datastore::kv::KvError;
use calico_k8s::convert::{self, merge_pod_into_workload_endpoint};
use calico_k8s::{K8sObject, K8sResource};
use calico_model::resources::WorkloadEndpointSpec;
use calico_model::{AnyResource, KindInfo, Resource};

/// The service account every namespace has.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// How often a WorkloadEndpoint update is retried when another writer got in between.
const CONFLICT_RETRIES: usize = 5;

/// Which write `-f` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Apply,
    Replace,
}

/// A failed operation on one object; `NotFound` is told apart for `delete --skip-not-exists`.
#[derive(Debug)]
pub enum OpError {
    NotFound(String),
    AlreadyExists(String),
    Failed(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::NotFound(m) | OpError::AlreadyExists(m) | OpError::Failed(m) => f.write_str(m),
        }
    }
}

/// Upstream calicoctl's namespace rules, for Kubernetes objects: a namespaced object without a
/// namespace gets `-n` or `default`; one with a different namespace than `-n` is refused; a
/// Namespace takes no `-n`. Then the name and namespace are checked.
pub fn handle_namespace(obj: &mut K8sObject, cli_ns: Option<&str>) -> Result<(), String> {
    let cli_ns = cli_ns.unwrap_or_default();
    if obj.namespaced() {
        let res_ns = obj.namespace().to_string();
        if res_ns.is_empty() {
            let ns = if cli_ns.is_empty() {
                calico_k8s::store::DEFAULT_NAMESPACE
            } else {
                cli_ns
            };
            obj.set_namespace(ns);
        } else if !cli_ns.is_empty() && res_ns != cli_ns {
            return Err(format!(
                "resource namespace does not match client namespace. {res_ns} != {cli_ns}"
            ));
        }
    } else if !cli_ns.is_empty() {
        return Err(format!("{} is not namespaced", obj.kind()));
    }
    obj.validate_identity().map_err(|e| e.to_string())
}

/// The Calico resource an object translates to (none for a Pod).
fn translation(obj: &K8sObject) -> Result<Option<AnyResource>, String> {
    let mut r: AnyResource = match &obj.resource {
        K8sResource::Namespace(ns) => convert::namespace_to_profile(ns)
            .map_err(|e| e.to_string())?
            .into(),
        K8sResource::ServiceAccount(sa) => convert::service_account_to_profile(sa)
            .map_err(|e| e.to_string())?
            .into(),
        K8sResource::NetworkPolicy(np) => convert::k8s_network_policy_to_calico(np)
            .map_err(|e| e.to_string())?
            .into(),
        K8sResource::Pod(_) => return Ok(None),
    };
    // The Kubernetes object's resourceVersion means nothing to the Calico resource.
    r.metadata_mut().resource_version.clear();
    Ok(Some(r))
}

/// Identity of the Calico resource an object translates to, for deletion.
fn translation_id(obj: &K8sObject) -> Option<(&'static str, String, String)> {
    let (ns, name) = (obj.namespace(), obj.name());
    match &obj.resource {
        K8sResource::Namespace(_) => Some((
            "Profile",
            String::new(),
            convert::namespace_profile_name(name),
        )),
        K8sResource::ServiceAccount(_) => Some((
            "Profile",
            String::new(),
            convert::service_account_profile_name(ns, name),
        )),
        K8sResource::NetworkPolicy(_) => Some((
            "NetworkPolicy",
            ns.to_string(),
            format!("{}{name}", convert::K8S_NETWORK_POLICY_PREFIX),
        )),
        K8sResource::Pod(_) => None,
    }
}

fn kv_err(id: &str, e: KvError) -> OpError {
    OpError::Failed(format!("{id}: {e}"))
}

/// Creates, applies or replaces one object (namespace already handled).
///
/// A Namespace also gets its `default` ServiceAccount (stored, with profile
/// `ksa.<ns>.default`) unless one is stored already, as Kubernetes' service-account controller
/// creates it in every namespace: pods name it by default.
pub async fn write(client: &Client, obj: &K8sObject, op: Write) -> Result<(), OpError> {
    write_one(client, obj, op).await?;
    if let K8sResource::Namespace(_) = &obj.resource {
        let sa = K8sObject::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": obj.name()},
        }))
        .map_err(|e| OpError::Failed(format!("{}: {e}", obj.id())))?;
        match write_one(client, &sa, Write::Create).await {
            Ok(()) | Err(OpError::AlreadyExists(_)) => {}
            Err(e) => return Err(OpError::Failed(format!("{}: {e}", obj.id()))),
        }
    }
    Ok(())
}

async fn write_one(client: &Client, obj: &K8sObject, op: Write) -> Result<(), OpError> {
    let id = obj.id();
    let key = obj.key();
    let kv = client.kv();
    let existing = kv.get(&key).await.map_err(|e| kv_err(&id, e))?;
    match (op, &existing) {
        (Write::Create, Some(_)) => {
            return Err(OpError::AlreadyExists(format!(
                "{id}: resource already exists"
            )));
        }
        (Write::Replace, None) => {
            return Err(OpError::NotFound(format!("{id}: resource does not exist")));
        }
        _ => {}
    }
    // Validate everything before writing anything.
    let translated = translation(obj).map_err(OpError::Failed)?;
    if let K8sResource::Pod(pod) = &obj.resource
        && !pod.spec.host_network
    {
        convert::pod_endpoint_fields(pod).map_err(|e| OpError::Failed(e.to_string()))?;
    }
    if let Some(r) = translated {
        client
            .apply(r)
            .await
            .map_err(|e| OpError::Failed(format!("{id}: {e}")))?;
    }
    let value = obj.stored_bytes();
    match op {
        Write::Create => match kv.create(&key, value, None).await {
            Ok(_) => {}
            Err(KvError::AlreadyExists { .. }) => {
                return Err(OpError::AlreadyExists(format!(
                    "{id}: resource already exists"
                )));
            }
            Err(e) => return Err(kv_err(&id, e)),
        },
        Write::Apply | Write::Replace => {
            kv.put(&key, value, None)
                .await
                .map_err(|e| kv_err(&id, e))?;
        }
    }
    if let K8sResource::Pod(pod) = &obj.resource
        && !pod.spec.host_network
    {
        update_pod_endpoints(client, pod, &id).await?;
    }
    Ok(())
}

/// Merges the Pod into every existing WorkloadEndpoint of it (orchestrator `k8s`, same
/// namespace and pod name, any node). A concurrent writer makes the merge start again.
async fn update_pod_endpoints(
    client: &Client,
    pod: &calico_k8s::types::Pod,
    id: &str,
) -> Result<(), OpError> {
    let Some(kind) = KindInfo::lookup("WorkloadEndpoint") else {
        return Err(OpError::Failed(format!(
            "{id}: internal error: no WorkloadEndpoint kind"
        )));
    };
    let ns = &pod.metadata.namespace;
    let list = client
        .list(kind, Some(ns))
        .await
        .map_err(|e| OpError::Failed(format!("{id}: list workload endpoints: {e}")))?;
    for item in list.items {
        let mut current: Resource<WorkloadEndpointSpec> = match item.try_into() {
            Ok(w) => w,
            Err(_) => continue,
        };
        if current.spec.orchestrator != convert::ORCHESTRATOR_K8S
            || current.spec.pod != pod.metadata.name
        {
            continue;
        }
        let wep_id = format!(
            "WorkloadEndpoint({}/{})",
            current.metadata.namespace, current.metadata.name
        );
        let mut attempt = 0;
        loop {
            let merged = merge_pod_into_workload_endpoint(pod, Some(&current), "")
                .map_err(|e| OpError::Failed(e.to_string()))?;
            if merged.spec == current.spec && merged.metadata.labels == current.metadata.labels {
                break;
            }
            match client.update(AnyResource::from(merged)).await {
                Ok(_) => {
                    tracing::info!(endpoint = %wep_id, "pod applied to workload endpoint");
                    break;
                }
                // CNI DEL removed it meanwhile: nothing to update.
                Err(e) if e.is_not_found() => break,
                Err(ClientError::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    let fresh = client
                        .get(kind, &current.metadata.namespace, &current.metadata.name)
                        .await;
                    match fresh {
                        Ok(r) => match r.try_into() {
                            Ok(w) => current = w,
                            Err(_) => break,
                        },
                        Err(e) if e.is_not_found() => break,
                        Err(e) => return Err(OpError::Failed(format!("{id}: {wep_id}: {e}"))),
                    }
                }
                Err(e) => return Err(OpError::Failed(format!("{id}: {wep_id}: {e}"))),
            }
        }
    }
    Ok(())
}

/// Deletes one object: its stored record and its translation. Not found only when neither
/// existed. Deleting a Namespace also deletes the ServiceAccounts, Pods and NetworkPolicies
/// stored in it (with their translations), as the Kubernetes namespace controller does;
/// WorkloadEndpoints stay for CNI DEL.
pub async fn delete(client: &Client, obj: &K8sObject) -> Result<(), OpError> {
    delete_one(client, obj).await?;
    if let K8sResource::Namespace(_) = obj.resource {
        for kind in ["ServiceAccount", "Pod", "NetworkPolicy"] {
            let Some(prefix) = calico_k8s::store::list_prefix(kind, Some(obj.name())) else {
                continue;
            };
            let listed = client
                .kv()
                .list(&prefix)
                .await
                .map_err(|e| kv_err(&obj.id(), e))?;
            for kv in listed.kvs {
                let member = match K8sObject::from_stored(&kv.key, &kv.value) {
                    Ok(m) => m,
                    Err(e) => {
                        // Unreadable: remove the record itself.
                        tracing::warn!(key = %kv.key, error = %e, "deleting undecodable object");
                        let _ = client.kv().delete(&kv.key, None).await;
                        continue;
                    }
                };
                match delete_one(client, &member).await {
                    Ok(()) | Err(OpError::NotFound(_)) => {}
                    Err(e) => return Err(OpError::Failed(format!("{}: {e}", obj.id()))),
                }
            }
        }
    }
    Ok(())
}

async fn delete_one(client: &Client, obj: &K8sObject) -> Result<(), OpError> {
    let id = obj.id();
    let mut found = false;
    match client.kv().delete(&obj.key(), None).await {
        Ok(_) => found = true,
        Err(KvError::NotFound { .. }) => {}
        Err(e) => return Err(kv_err(&id, e)),
    }
    if let Some((kind, ns, name)) = translation_id(obj) {
        let info = KindInfo::lookup(kind)
            .ok_or_else(|| OpError::Failed(format!("{id}: internal error: no {kind} kind")))?;
        match client.delete(info, &ns, &name, None).await {
            Ok(_) => found = true,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(OpError::Failed(format!("{id}: {e}"))),
        }
    }
    if found {
        Ok(())
    } else {
        Err(OpError::NotFound(format!("{id}: resource does not exist")))
    }
}

/// Offline check for `calicoctl validate`: the object decodes, its name is valid and its
/// translation passes Calico validation.
pub fn validate(obj: &mut K8sObject) -> Result<(), String> {
    handle_namespace(obj, None)?;
    if let K8sResource::Pod(pod) = &obj.resource
        && !pod.spec.host_network
    {
        convert::pod_endpoint_fields(pod).map_err(|e| e.to_string())?;
    }
    if let Some(mut r) = translation(obj)? {
        r.apply_defaults();
        r.validate()
            .map_err(|e| format!("{}: translated {}: {e}", obj.id(), r.id()))?;
    }
    Ok(())
}

//! Minimal, strict serde types for the Kubernetes kinds Calico translates, and the loader
//! [`K8sResource::from_value`].
//!
//! Unknown fields are rejected in `spec` and at the top level (the error names the path); the
//! usual Kubernetes metadata fields and the `status` the cluster writes are tolerated. Pod and
//! container specs list every upstream field: the ones Calico reads are typed, the rest are
//! accepted and ignored, so a real pod manifest loads while a misspelt field does not.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::K8sError;

/// A YAML `key:` with no value (null) reads as the empty/default value, as Go's decoding does.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Kubernetes `ObjectMeta`: the fields Calico reads plus the usual ones it ignores.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub uid: String,
    #[serde(default, deserialize_with = "null_default")]
    pub resource_version: String,
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub generate_name: String,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    #[serde(default)]
    generation: Option<IgnoredAny>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<IgnoredAny>,
    #[serde(default)]
    finalizers: Option<IgnoredAny>,
    #[serde(default)]
    owner_references: Option<IgnoredAny>,
    #[serde(default)]
    managed_fields: Option<IgnoredAny>,
    #[serde(default)]
    self_link: Option<IgnoredAny>,
}

/// `v1` Namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: NamespaceSpec,
    #[serde(default)]
    status: Option<IgnoredAny>,
}

/// `v1` NamespaceSpec (only finalizers exist upstream).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default)]
    finalizers: Option<IgnoredAny>,
}

/// `v1` ServiceAccount.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccount {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    secrets: Option<IgnoredAny>,
    #[serde(default)]
    image_pull_secrets: Option<IgnoredAny>,
    #[serde(default)]
    automount_service_account_token: Option<IgnoredAny>,
}

/// `v1` Pod.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: PodSpec,
    #[serde(default, deserialize_with = "null_default")]
    pub status: PodStatus,
}

/// `v1` PodSpec: typed where Calico reads it, every other upstream field accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    #[serde(default, deserialize_with = "null_default")]
    pub containers: Vec<Container>,
    /// Their ports count too (sidecars), as in current upstream.
    #[serde(default, deserialize_with = "null_default")]
    pub init_containers: Vec<Container>,
    #[serde(default, deserialize_with = "null_default")]
    pub node_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub service_account_name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub host_network: bool,
    #[serde(default)]
    active_deadline_seconds: Option<IgnoredAny>,
    #[serde(default)]
    affinity: Option<IgnoredAny>,
    #[serde(default)]
    automount_service_account_token: Option<IgnoredAny>,
    #[serde(default)]
    dns_config: Option<IgnoredAny>,
    #[serde(default)]
    dns_policy: Option<IgnoredAny>,
    #[serde(default)]
    enable_service_links: Option<IgnoredAny>,
    #[serde(default)]
    ephemeral_containers: Option<IgnoredAny>,
    #[serde(default)]
    host_aliases: Option<IgnoredAny>,
    #[serde(default, rename = "hostIPC")]
    host_ipc: Option<IgnoredAny>,
    #[serde(default, rename = "hostPID")]
    host_pid: Option<IgnoredAny>,
    #[serde(default)]
    host_users: Option<IgnoredAny>,
    #[serde(default)]
    hostname: Option<IgnoredAny>,
    #[serde(default)]
    image_pull_secrets: Option<IgnoredAny>,
    #[serde(default)]
    node_selector: Option<IgnoredAny>,
    #[serde(default)]
    os: Option<IgnoredAny>,
    #[serde(default)]
    overhead: Option<IgnoredAny>,
    #[serde(default)]
    preemption_policy: Option<IgnoredAny>,
    #[serde(default)]
    priority: Option<IgnoredAny>,
    #[serde(default)]
    priority_class_name: Option<IgnoredAny>,
    #[serde(default)]
    readiness_gates: Option<IgnoredAny>,
    #[serde(default)]
    resource_claims: Option<IgnoredAny>,
    #[serde(default)]
    resources: Option<IgnoredAny>,
    #[serde(default)]
    restart_policy: Option<IgnoredAny>,
    #[serde(default)]
    runtime_class_name: Option<IgnoredAny>,
    #[serde(default)]
    scheduler_name: Option<IgnoredAny>,
    #[serde(default)]
    scheduling_gates: Option<IgnoredAny>,
    #[serde(default)]
    security_context: Option<IgnoredAny>,
    #[serde(default)]
    service_account: Option<IgnoredAny>,
    #[serde(default, rename = "setHostnameAsFQDN")]
    set_hostname_as_fqdn: Option<IgnoredAny>,
    #[serde(default)]
    share_process_namespace: Option<IgnoredAny>,
    #[serde(default)]
    subdomain: Option<IgnoredAny>,
    #[serde(default)]
    termination_grace_period_seconds: Option<IgnoredAny>,
    #[serde(default)]
    tolerations: Option<IgnoredAny>,
    #[serde(default)]
    topology_spread_constraints: Option<IgnoredAny>,
    #[serde(default)]
    volumes: Option<IgnoredAny>,
}

/// `v1` Container: its ports typed, the rest accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    args: Option<IgnoredAny>,
    #[serde(default)]
    command: Option<IgnoredAny>,
    #[serde(default)]
    env: Option<IgnoredAny>,
    #[serde(default)]
    env_from: Option<IgnoredAny>,
    #[serde(default)]
    image: Option<IgnoredAny>,
    #[serde(default)]
    image_pull_policy: Option<IgnoredAny>,
    #[serde(default)]
    lifecycle: Option<IgnoredAny>,
    #[serde(default)]
    liveness_probe: Option<IgnoredAny>,
    #[serde(default)]
    readiness_probe: Option<IgnoredAny>,
    #[serde(default)]
    resize_policy: Option<IgnoredAny>,
    #[serde(default)]
    resources: Option<IgnoredAny>,
    #[serde(default)]
    restart_policy: Option<IgnoredAny>,
    #[serde(default)]
    security_context: Option<IgnoredAny>,
    #[serde(default)]
    startup_probe: Option<IgnoredAny>,
    #[serde(default)]
    stdin: Option<IgnoredAny>,
    #[serde(default)]
    stdin_once: Option<IgnoredAny>,
    #[serde(default)]
    termination_message_path: Option<IgnoredAny>,
    #[serde(default)]
    termination_message_policy: Option<IgnoredAny>,
    #[serde(default)]
    tty: Option<IgnoredAny>,
    #[serde(default)]
    volume_devices: Option<IgnoredAny>,
    #[serde(default)]
    volume_mounts: Option<IgnoredAny>,
    #[serde(default)]
    working_dir: Option<IgnoredAny>,
}

/// `v1` ContainerPort.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default)]
    pub container_port: i32,
    /// Empty means TCP (the Kubernetes default).
    #[serde(default, deserialize_with = "null_default")]
    pub protocol: String,
    #[serde(default)]
    pub host_port: i32,
    #[serde(default, rename = "hostIP", deserialize_with = "null_default")]
    pub host_ip: String,
}

/// `v1` PodStatus: the addresses; the rest of what the cluster writes is tolerated.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP", deserialize_with = "null_default")]
    pub pod_ip: String,
    #[serde(default, rename = "podIPs", deserialize_with = "null_default")]
    pub pod_ips: Vec<PodIp>,
    #[serde(default, deserialize_with = "null_default")]
    pub phase: String,
}

/// One entry of `status.podIPs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodIp {
    pub ip: String,
}

/// `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: NetworkPolicySpec,
    #[serde(default)]
    status: Option<IgnoredAny>,
}

/// `NetworkPolicySpec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    #[serde(default, deserialize_with = "null_default")]
    pub pod_selector: LabelSelector,
    #[serde(default, deserialize_with = "null_default")]
    pub policy_types: Vec<PolicyType>,
    #[serde(default, deserialize_with = "null_default")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, deserialize_with = "null_default")]
    pub egress: Vec<EgressRule>,
}

/// `Ingress` / `Egress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// `NetworkPolicyIngressRule`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    #[serde(default, deserialize_with = "null_default")]
    pub from: Vec<Peer>,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// `NetworkPolicyEgressRule`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    #[serde(default, deserialize_with = "null_default")]
    pub to: Vec<Peer>,
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// `NetworkPolicyPeer`. Absent and empty selectors differ: an empty `namespaceSelector` is every
/// namespace, an absent one the policy's own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    #[serde(default)]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default)]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

/// `IPBlock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, deserialize_with = "null_default")]
    pub except: Vec<String>,
}

/// `NetworkPolicyPort`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    /// Absent means TCP.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port: Option<IntOrString>,
    #[serde(default)]
    pub end_port: Option<i32>,
}

/// Kubernetes `intstr.IntOrString`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

/// `metav1.LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, deserialize_with = "null_default")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, deserialize_with = "null_default")]
    pub values: Vec<String>,
}

/// `matchExpressions` operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Any of the Kubernetes kinds this crate translates.
#[derive(Debug, Clone, PartialEq)]
pub enum K8sResource {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Pod(Pod),
    NetworkPolicy(NetworkPolicy),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl K8sResource {
    /// Decodes one object, dispatching on `apiVersion`/`kind`: `v1` Namespace, ServiceAccount and
    /// Pod, `networking.k8s.io/v1` NetworkPolicy. Errors name the offending field path.
    pub fn from_value(value: serde_json::Value) -> Result<K8sResource, K8sError> {
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let name = value
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => decode(&value, &kind, &name).map(K8sResource::Namespace),
            ("v1", "ServiceAccount") => {
                decode(&value, &kind, &name).map(K8sResource::ServiceAccount)
            }
            ("v1", "Pod") => decode(&value, &kind, &name).map(K8sResource::Pod),
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                decode(&value, &kind, &name).map(K8sResource::NetworkPolicy)
            }
            _ => Err(K8sError::Unsupported { api_version, kind }),
        }
    }

    /// Whether `apiVersion`/`kind` name one of the kinds [`K8sResource::from_value`] reads.
    pub fn is_supported(value: &serde_json::Value) -> bool {
        let s = |k: &str| value.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        matches!(
            (s("apiVersion"), s("kind")),
            ("v1", "Namespace" | "ServiceAccount" | "Pod")
                | ("networking.k8s.io/v1", "NetworkPolicy")
        )
    }
}

/// Splits YAML text (documents separated by `---`; `kind: List` expanded) into one JSON value
/// per document. Only YAML 1.2 booleans are booleans, so `ns: y` or `on: off` are strings, as
/// kubectl reads string fields (sigs.k8s.io/yaml keeps the scalar's text for string targets).
pub fn parse_yaml_documents(
    text: &str,
    source_name: &str,
) -> Result<Vec<serde_json::Value>, K8sError> {
    let opts = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple_with_options(text, opts)
        .map_err(|e| K8sError::Syntax {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for d in docs {
        if d.is_null() {
            continue;
        }
        let is_list = d
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.ends_with("List"));
        match (is_list, d.get("items")) {
            (true, Some(serde_json::Value::Array(items))) => out.extend(items.iter().cloned()),
            _ => out.push(d),
        }
    }
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    kind: &str,
    name: &str,
) -> Result<T, K8sError> {
    serde_path_to_error::deserialize(value).map_err(|e| K8sError::Decode {
        kind: kind.to_string(),
        name: name.to_string(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

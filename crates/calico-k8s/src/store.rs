//! The Kubernetes object store inside the Calico datastore, and its key layout (pure: keys and
//! values only; the I/O is the caller's).
//!
//! With an etcd datastore there is no Kubernetes API server, so `calicoctl` (playing
//! kube-controllers) keeps the Kubernetes objects it was given next to the Calico resources, and
//! the CNI plugin reads the Pod from there on ADD:
//!
//! ```text
//! /calico/k8s/v1/namespaces/<name>
//! /calico/k8s/v1/serviceaccounts/<namespace>/<name>
//! /calico/k8s/v1/pods/<namespace>/<name>
//! /calico/k8s/v1/networkpolicies/<namespace>/<name>
//! ```
//!
//! The value is the object's JSON as given (with `metadata.namespace` filled in for namespaced
//! kinds and without `metadata.resourceVersion`; the key's revision is the version).

use serde_json::Value;

use crate::error::K8sError;
use crate::types::K8sResource;

/// Prefix of every stored Kubernetes object.
pub const K8S_PREFIX: &str = "/calico/k8s/v1/";

/// The namespace objects without one are put in, as the Kubernetes API server does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Path segment (plural) of a kind in the key layout.
pub fn plural(kind: &str) -> Option<&'static str> {
    match kind {
        "Namespace" => Some("namespaces"),
        "ServiceAccount" => Some("serviceaccounts"),
        "Pod" => Some("pods"),
        "NetworkPolicy" => Some("networkpolicies"),
        _ => None,
    }
}

/// `/calico/k8s/v1/pods/<namespace>/<name>`.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{K8S_PREFIX}pods/{namespace}/{name}")
}

/// `/calico/k8s/v1/namespaces/<name>`.
pub fn namespace_key(name: &str) -> String {
    format!("{K8S_PREFIX}namespaces/{name}")
}

/// `/calico/k8s/v1/serviceaccounts/<namespace>/<name>`.
pub fn service_account_key(namespace: &str, name: &str) -> String {
    format!("{K8S_PREFIX}serviceaccounts/{namespace}/{name}")
}

/// `/calico/k8s/v1/networkpolicies/<namespace>/<name>`.
pub fn network_policy_key(namespace: &str, name: &str) -> String {
    format!("{K8S_PREFIX}networkpolicies/{namespace}/{name}")
}

/// Prefix listing every stored object of `kind` in `namespace` (or in all, with `None`).
pub fn list_prefix(kind: &str, namespace: Option<&str>) -> Option<String> {
    let p = plural(kind)?;
    Some(match namespace {
        Some(ns) if kind != "Namespace" => format!("{K8S_PREFIX}{p}/{ns}/"),
        _ => format!("{K8S_PREFIX}{p}/"),
    })
}

/// A decoded Kubernetes object together with the JSON it came from (what is stored).
#[derive(Debug, Clone, PartialEq)]
pub struct K8sObject {
    pub raw: Value,
    pub resource: K8sResource,
}

impl K8sObject {
    /// Decodes one object ([`K8sResource::from_value`]); errors name the field.
    pub fn from_value(raw: Value) -> Result<K8sObject, K8sError> {
        let resource = K8sResource::from_value(raw.clone())?;
        Ok(K8sObject { raw, resource })
    }

    /// Decodes a stored value; `key` names it in errors.
    pub fn from_stored(key: &str, bytes: &[u8]) -> Result<K8sObject, K8sError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| K8sError::Syntax {
            source_name: key.to_string(),
            message: e.to_string(),
        })?;
        K8sObject::from_value(raw)
    }

    /// `Namespace`, `ServiceAccount`, `Pod` or `NetworkPolicy`.
    pub fn kind(&self) -> &'static str {
        self.resource.kind()
    }

    pub fn name(&self) -> &str {
        self.resource.name()
    }

    /// The namespace (`""` for a Namespace).
    pub fn namespace(&self) -> &str {
        self.resource.namespace()
    }

    /// Whether the kind lives in a namespace (all but Namespace).
    pub fn namespaced(&self) -> bool {
        !matches!(self.resource, K8sResource::Namespace(_))
    }

    /// `Kind(ns/name)` or `Kind(name)`, as the Calico client names resources in messages.
    pub fn id(&self) -> String {
        if self.namespaced() {
            format!("{}({}/{})", self.kind(), self.namespace(), self.name())
        } else {
            format!("{}({})", self.kind(), self.name())
        }
    }

    /// Sets the namespace of a namespaced object, in the decoded form and in the stored JSON.
    pub fn set_namespace(&mut self, namespace: &str) {
        if !self.namespaced() {
            return;
        }
        let meta = match &mut self.resource {
            K8sResource::Namespace(_) => return,
            K8sResource::ServiceAccount(x) => &mut x.metadata,
            K8sResource::Pod(x) => &mut x.metadata,
            K8sResource::NetworkPolicy(x) => &mut x.metadata,
        };
        meta.namespace = namespace.to_string();
        if let Some(obj) = self.raw.as_object_mut() {
            let m = obj
                .entry("metadata")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Some(m) = m.as_object_mut() {
                m.insert("namespace".into(), Value::String(namespace.to_string()));
            }
        }
    }

    /// Checks the name (and namespace) as the Kubernetes API server does, so that keys and the
    /// translated names are well-formed: a namespace name is a DNS label (at most 63
    /// lower-case alphanumerics or `-`), other names DNS subdomains (at most 253, dots allowed).
    pub fn validate_identity(&self) -> Result<(), K8sError> {
        let fail = |path: &str, message: String| K8sError::Invalid {
            kind: self.kind().to_string(),
            name: self.name().to_string(),
            path: path.to_string(),
            message,
        };
        let is_namespace = !self.namespaced();
        check_dns_name(self.name(), !is_namespace).map_err(|m| fail("metadata.name", m))?;
        if self.namespaced() && !self.namespace().is_empty() {
            check_dns_name(self.namespace(), false).map_err(|m| fail("metadata.namespace", m))?;
        }
        Ok(())
    }

    /// The object's key in the store.
    pub fn key(&self) -> String {
        let (ns, name) = (self.namespace(), self.name());
        match &self.resource {
            K8sResource::Namespace(_) => namespace_key(name),
            K8sResource::ServiceAccount(_) => service_account_key(ns, name),
            K8sResource::Pod(_) => pod_key(ns, name),
            K8sResource::NetworkPolicy(_) => network_policy_key(ns, name),
        }
    }

    /// The stored value: the JSON without `metadata.resourceVersion`.
    pub fn stored_bytes(&self) -> Vec<u8> {
        let mut v = self.raw.clone();
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("resourceVersion");
        }
        v.to_string().into_bytes()
    }
}

/// A DNS-1123 label (`subdomain` false) or subdomain (true).
fn check_dns_name(name: &str, subdomain: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is required".to_string());
    }
    let max = if subdomain { 253 } else { 63 };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = name.len() <= max
        && if subdomain {
            name.split('.').all(label_ok)
        } else {
            label_ok(name)
        };
    if ok {
        Ok(())
    } else if subdomain {
        Err(format!(
            "{name:?} must be a DNS subdomain: at most 253 lower-case alphanumerics, '-' or '.', \
             starting and ending alphanumeric"
        ))
    } else {
        Err(format!(
            "{name:?} must be a DNS label: at most 63 lower-case alphanumerics or '-', \
             starting and ending alphanumeric"
        ))
    }
}

impl K8sResource {
    /// `Namespace`, `ServiceAccount`, `Pod` or `NetworkPolicy`.
    pub fn kind(&self) -> &'static str {
        match self {
            K8sResource::Namespace(_) => "Namespace",
            K8sResource::ServiceAccount(_) => "ServiceAccount",
            K8sResource::Pod(_) => "Pod",
            K8sResource::NetworkPolicy(_) => "NetworkPolicy",
        }
    }

    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// The namespace as written (empty when not given; `""` always for a Namespace).
    pub fn namespace(&self) -> &str {
        match self {
            K8sResource::Namespace(_) => "",
            _ => &self.meta().namespace,
        }
    }

    fn meta(&self) -> &crate::types::ObjectMeta {
        match self {
            K8sResource::Namespace(x) => &x.metadata,
            K8sResource::ServiceAccount(x) => &x.metadata,
            K8sResource::Pod(x) => &x.metadata,
            K8sResource::NetworkPolicy(x) => &x.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_and_namespace_defaulting() {
        let mut o = K8sObject::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "resourceVersion": "7"},
        }))
        .unwrap();
        assert_eq!(o.namespace(), "");
        o.set_namespace("x");
        assert_eq!(o.key(), "/calico/k8s/v1/pods/x/a");
        assert_eq!(o.id(), "Pod(x/a)");
        let back = K8sObject::from_stored(&o.key(), &o.stored_bytes()).unwrap();
        assert_eq!(back.namespace(), "x");
        assert!(back.raw["metadata"].get("resourceVersion").is_none());

        let ns = K8sObject::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"},
        }))
        .unwrap();
        assert_eq!(ns.key(), "/calico/k8s/v1/namespaces/x");
        assert_eq!(ns.id(), "Namespace(x)");
        assert_eq!(
            list_prefix("Pod", Some("x")).unwrap(),
            "/calico/k8s/v1/pods/x/"
        );
        assert_eq!(
            list_prefix("Namespace", Some("x")).unwrap(),
            "/calico/k8s/v1/namespaces/"
        );
    }

    #[test]
    fn bad_names_are_named() {
        let o = K8sObject::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"},
        }))
        .unwrap();
        let e = o.validate_identity().unwrap_err().to_string();
        assert!(
            e.contains("metadata.name") && e.contains("DNS label"),
            "{e}"
        );
        let o = K8sObject::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web.1", "namespace": "x/y"},
        }))
        .unwrap();
        let e = o.validate_identity().unwrap_err().to_string();
        assert!(e.contains("metadata.namespace"), "{e}");
        let o = K8sObject::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Web"},
        }))
        .unwrap();
        assert!(o.validate_identity().is_err());
        let o = K8sObject::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web.1", "namespace": "x"},
        }))
        .unwrap();
        o.validate_identity().unwrap();
    }

    #[test]
    fn stored_garbage_is_an_error_naming_the_key() {
        let e = K8sObject::from_stored("/calico/k8s/v1/pods/x/a", b"{nope").unwrap_err();
        assert!(e.to_string().contains("/calico/k8s/v1/pods/x/a"), "{e}");
    }
}

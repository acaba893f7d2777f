//! Datastore key layout, as upstream's etcd v3 backend writes it.

/// Prefix of every v3 resource key.
pub const RESOURCES_PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

/// `/calico/resources/v3/projectcalico.org/<plural>/[<ns>/]<name>`.
pub fn resource_key(plural: &str, namespaced: bool, namespace: &str, name: &str) -> String {
    if namespaced {
        format!("{RESOURCES_PREFIX}{plural}/{namespace}/{name}")
    } else {
        format!("{RESOURCES_PREFIX}{plural}/{name}")
    }
}

/// Prefix that lists a kind, in one namespace or (namespace `None`) in all.
pub fn resource_prefix(plural: &str, namespaced: bool, namespace: Option<&str>) -> String {
    match (namespaced, namespace) {
        (true, Some(ns)) => format!("{RESOURCES_PREFIX}{plural}/{ns}/"),
        _ => format!("{RESOURCES_PREFIX}{plural}/"),
    }
}

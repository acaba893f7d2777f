//! Upstream names: the host-side veth name and the WorkloadEndpoint name.

use sha1::{Digest, Sha1};

/// Host-side interface: `cali` + the first 11 hex characters of SHA-1(`"<namespace>.<pod>"`) for
/// Kubernetes pods; for other workloads `cali` + the first 11 characters of the container ID.
pub fn host_veth_name(prefix: &str, k8s: Option<(&str, &str)>, container_id: &str) -> String {
    let suffix = match k8s {
        Some((ns, pod)) => {
            let digest = Sha1::digest(format!("{ns}.{pod}").as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            hex[..11].to_string()
        }
        None => container_id.chars().take(11).collect(),
    };
    format!("{prefix}{suffix}")
}

/// Doubles every `-` so segments joined with `-` stay unambiguous.
fn escape(segment: &str) -> String {
    segment.replace('-', "--")
}

/// `<node>-<orchestrator>-<id>-<endpoint>`, each segment with `-` doubled. `id` is the pod name
/// for `k8s` and the container ID for `cni`.
pub fn wep_name(node: &str, orchestrator: &str, id: &str, endpoint: &str) -> String {
    format!(
        "{}-{}-{}-{}",
        escape(node),
        escape(orchestrator),
        escape(id),
        escape(endpoint)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_veth_vectors() {
        assert_eq!(
            host_veth_name("cali", Some(("namespace", "podname")), ""),
            "cali82111e10a96"
        );
        assert_eq!(
            host_veth_name("cali", Some(("default", "nginx")), ""),
            "calic440f455693"
        );
        assert_eq!(
            host_veth_name("cali", None, "0123456789abcdef"),
            "cali0123456789a"
        );
    }

    #[test]
    fn upstream_wep_vectors() {
        assert_eq!(
            wep_name("node1", "k8s", "mypod-1", "eth0"),
            "node1-k8s-mypod--1-eth0"
        );
        assert_eq!(
            wep_name("ip-10-0-0-1", "k8s", "p", "eth0"),
            "ip--10--0--0--1-k8s-p-eth0"
        );
    }
}

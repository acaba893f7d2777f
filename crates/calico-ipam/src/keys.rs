//! The etcd v3 key layout of IPAM objects (upstream's "default path" encoding: the CIDR's `/`
//! becomes `-`, dots and colons are kept).

use ipnet::IpNet;

use crate::addr::{IpVersion, cidr_from_key_segment, cidr_to_key_segment};
use crate::block::{Affinity, AffinityKind};

pub const IPAM_ROOT: &str = "/calico/ipam/v2/";
pub const BLOCK_PREFIX: &str = "/calico/ipam/v2/assignment/";
pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
pub const HOST_PREFIX: &str = "/calico/ipam/v2/host/";
pub const VIRTUAL_PREFIX: &str = "/calico/ipam/v2/virtual/";
pub const CONFIG_KEY: &str = "/calico/ipam/v2/config";
pub const IPPOOL_PREFIX: &str = "/calico/resources/v3/projectcalico.org/ippools/";
pub const IPRESERVATION_PREFIX: &str = "/calico/resources/v3/projectcalico.org/ipreservations/";

/// `/calico/ipam/v2/assignment/ipv4/block/10.244.1.0-26`
pub fn block_key(cidr: &IpNet) -> String {
    format!(
        "{BLOCK_PREFIX}ipv{}/block/{}",
        IpVersion::of_net(cidr).number(),
        cidr_to_key_segment(cidr)
    )
}

/// Prefix of every block of one family.
pub fn block_prefix(version: IpVersion) -> String {
    format!("{BLOCK_PREFIX}ipv{}/block/", version.number())
}

/// `/calico/ipam/v2/host/<node>/ipv4/block/10.244.1.0-26` (virtual: `/calico/ipam/v2/virtual/...`).
pub fn affinity_key(affinity: &Affinity, cidr: &IpNet) -> String {
    format!(
        "{}{}/ipv{}/block/{}",
        kind_prefix(affinity.kind),
        affinity.name,
        IpVersion::of_net(cidr).number(),
        cidr_to_key_segment(cidr)
    )
}

/// Prefix of one host's (or virtual owner's) affinities of one family.
pub fn affinity_prefix(affinity: &Affinity, version: IpVersion) -> String {
    format!(
        "{}{}/ipv{}/block/",
        kind_prefix(affinity.kind),
        affinity.name,
        version.number()
    )
}

fn kind_prefix(kind: AffinityKind) -> &'static str {
    match kind {
        AffinityKind::Host => HOST_PREFIX,
        AffinityKind::Virtual => VIRTUAL_PREFIX,
    }
}

/// `/calico/ipam/v2/handle/<id>`
pub fn handle_key(handle: &str) -> String {
    format!("{HANDLE_PREFIX}{handle}")
}

/// Parses a block key back to its CIDR.
pub fn parse_block_key(key: &str) -> Option<IpNet> {
    let rest = key.strip_prefix(BLOCK_PREFIX)?;
    let (_ver, seg) = rest.split_once("/block/")?;
    cidr_from_key_segment(seg)
}

/// Parses an affinity key back to (owner, CIDR).
pub fn parse_affinity_key(key: &str) -> Option<(Affinity, IpNet)> {
    let (kind, rest) = if let Some(r) = key.strip_prefix(HOST_PREFIX) {
        (AffinityKind::Host, r)
    } else {
        (AffinityKind::Virtual, key.strip_prefix(VIRTUAL_PREFIX)?)
    };
    let (name, rest) = rest.split_once('/')?;
    let (_ver, seg) = rest.split_once("/block/")?;
    Some((
        Affinity {
            kind,
            name: name.to_string(),
        },
        cidr_from_key_segment(seg)?,
    ))
}

pub fn parse_handle_key(key: &str) -> Option<&str> {
    key.strip_prefix(HANDLE_PREFIX)
        .filter(|h| !h.is_empty() && !h.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_layout() {
        let c: IpNet = "10.244.1.0/26".parse().unwrap();
        assert_eq!(
            block_key(&c),
            "/calico/ipam/v2/assignment/ipv4/block/10.244.1.0-26"
        );
        let a = Affinity::host("node-1");
        assert_eq!(
            affinity_key(&a, &c),
            "/calico/ipam/v2/host/node-1/ipv4/block/10.244.1.0-26"
        );
        assert_eq!(
            handle_key("k8s-pod-network.x"),
            "/calico/ipam/v2/handle/k8s-pod-network.x"
        );
        assert_eq!(parse_block_key(&block_key(&c)), Some(c));
        assert_eq!(
            parse_affinity_key(&affinity_key(&a, &c)),
            Some((a.clone(), c))
        );
        let v6: IpNet = "fd00::40/122".parse().unwrap();
        assert_eq!(
            block_key(&v6),
            "/calico/ipam/v2/assignment/ipv6/block/fd00::40-122"
        );
        let lb = Affinity::virtual_("load-balancer");
        assert_eq!(
            affinity_key(&lb, &v6),
            "/calico/ipam/v2/virtual/load-balancer/ipv6/block/fd00::40-122"
        );
        assert_eq!(parse_affinity_key(&affinity_key(&lb, &v6)), Some((lb, v6)));
        assert_eq!(
            affinity_prefix(&a, IpVersion::V4),
            "/calico/ipam/v2/host/node-1/ipv4/block/"
        );
    }
}

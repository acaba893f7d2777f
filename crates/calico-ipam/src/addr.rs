//! Address arithmetic shared by the core: IPs as `u128`, block CIDRs, ordinals.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Family of an address or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn of_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => IpVersion::V4,
            IpNet::V6(_) => IpVersion::V6,
        }
    }
    pub fn of_addr(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }
    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            IpVersion::V4 => 32,
            IpVersion::V6 => 128,
        }
    }
    /// `4` or `6`, as used in key paths (`ipv4`, `ipv6`).
    pub fn number(self) -> u8 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        }
    }
}

pub(crate) fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Builds an address of `version` from its integer value (truncated to the family's width).
pub(crate) fn u128_to_ip(value: u128, version: IpVersion) -> IpAddr {
    match version {
        // Truncation is intended: callers only pass values inside a v4 network.
        IpVersion::V4 => IpAddr::V4(Ipv4Addr::from((value & 0xffff_ffff) as u32)),
        IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Builds a network from a base address value and prefix length. The prefix must be valid for
/// the family (callers validate it).
pub(crate) fn make_net(base: u128, prefix: u8, version: IpVersion) -> Option<IpNet> {
    match u128_to_ip(base, version) {
        IpAddr::V4(a) => Ipv4Net::new(a, prefix).ok().map(IpNet::V4),
        IpAddr::V6(a) => Ipv6Net::new(a, prefix).ok().map(IpNet::V6),
    }
}

/// Number of addresses in `net` (saturating at `u128::MAX` for `::/0`).
pub(crate) fn net_size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// The `prefix`-sized network containing `ip`.
pub fn containing_net(ip: IpAddr, prefix: u8) -> Option<IpNet> {
    IpNet::new(ip, prefix).ok().map(|n| n.trunc())
}

/// Whether two networks share at least one address.
pub(crate) fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Renders a CIDR the way key paths carry it: `10.244.1.0-26`.
pub fn cidr_to_key_segment(net: &IpNet) -> String {
    format!("{}-{}", net.network(), net.prefix_len())
}

/// Parses a key segment such as `10.244.1.0-26` or `fd00::-122`.
pub fn cidr_from_key_segment(segment: &str) -> Option<IpNet> {
    let (addr, prefix) = segment.rsplit_once('-')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    IpNet::new(addr, prefix).ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_segment_round_trip() {
        let n: IpNet = "10.244.1.0/26".parse().unwrap();
        assert_eq!(cidr_to_key_segment(&n), "10.244.1.0-26");
        assert_eq!(cidr_from_key_segment("10.244.1.0-26"), Some(n));
        let v6: IpNet = "fd00:1::/122".parse().unwrap();
        assert_eq!(cidr_to_key_segment(&v6), "fd00:1::-122");
        assert_eq!(cidr_from_key_segment("fd00:1::-122"), Some(v6));
        assert_eq!(cidr_from_key_segment("nonsense"), None);
    }

    #[test]
    fn overlap_and_size() {
        let a: IpNet = "10.0.0.0/24".parse().unwrap();
        let b: IpNet = "10.0.0.64/26".parse().unwrap();
        let c: IpNet = "10.0.1.0/26".parse().unwrap();
        assert!(nets_overlap(&a, &b));
        assert!(!nets_overlap(&a, &c));
        assert_eq!(net_size(&b), 64);
        assert_eq!(net_size(&"::/0".parse().unwrap()), u128::MAX);
    }
}

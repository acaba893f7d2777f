//! IPReservation exclusion: addresses inside a reserved CIDR are never handed out. Whole reserved
//! blocks are skipped when choosing a block; reserved ordinals inside a block are skipped but stay
//! in the block's `unallocated` queue (as upstream).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::addr::{ip_to_u128, net_size, nets_overlap};

/// The union of every IPReservation's `reservedCIDRs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    cidrs: Vec<IpNet>,
}

impl Reservations {
    /// No reservations.
    pub const fn empty() -> Self {
        Self { cidrs: Vec::new() }
    }

    pub fn new(cidrs: impl IntoIterator<Item = IpNet>) -> Self {
        let mut cidrs: Vec<IpNet> = cidrs.into_iter().map(|c| c.trunc()).collect();
        cidrs.sort();
        cidrs.dedup();
        Self { cidrs }
    }

    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
    }

    pub fn cidrs(&self) -> &[IpNet] {
        &self.cidrs
    }

    /// Whether `ip` is reserved.
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(&ip))
    }

    /// Whether every address of `net` is reserved. Reservations may overlap, so this counts the
    /// union of the reserved parts.
    pub fn matches_whole(&self, net: &IpNet) -> bool {
        if self.cidrs.iter().any(|c| c.contains(net)) {
            return true;
        }
        // Union of the reserved sub-ranges of `net`, as half-open intervals.
        let start = ip_to_u128(net.network());
        let total = net_size(net);
        let mut ranges: Vec<(u128, u128)> = self
            .cidrs
            .iter()
            .filter(|c| net.contains(*c))
            .map(|c| {
                let s = ip_to_u128(c.network()) - start;
                (s, s.saturating_add(net_size(c)))
            })
            .collect();
        if ranges.is_empty() {
            return false;
        }
        ranges.sort();
        let mut covered_to = 0u128;
        for (s, e) in ranges {
            if s > covered_to {
                return false;
            }
            covered_to = covered_to.max(e);
        }
        covered_to >= total
    }

    /// Whether any address of `net` is reserved.
    pub fn matches_some(&self, net: &IpNet) -> bool {
        self.cidrs.iter().any(|c| nets_overlap(c, net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn whole_and_partial() {
        let r = Reservations::new([n("10.0.0.0/27"), n("10.0.0.32/27"), n("10.0.1.5/32")]);
        assert!(
            r.matches_whole(&n("10.0.0.0/26")),
            "two halves cover the block"
        );
        assert!(!r.matches_whole(&n("10.0.1.0/26")));
        assert!(r.matches_some(&n("10.0.1.0/26")));
        assert!(!r.matches_some(&n("10.0.2.0/26")));
        assert!(r.matches_ip("10.0.1.5".parse().unwrap()));
        assert!(!r.matches_ip("10.0.1.6".parse().unwrap()));
        assert!(Reservations::new([n("10.0.0.0/8")]).matches_whole(&n("10.9.0.0/26")));
    }
}

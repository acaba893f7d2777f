//! Conversions from the `projectcalico.org/v3` resource model (`calico-model`) to the allocator's
//! own small input types, so the allocator does not follow every change of the model.

use calico_model::resources::ipam::{
    AllowedUse as ModelUse, AssignmentMode as ModelMode, IPAMConfigurationSpec, IPPoolSpec,
    IPReservationSpec,
};
use ipnet::IpNet;

use crate::config::IpamConfig;
use crate::pool::{AllowedUse, AssignmentMode, PoolConfig, PoolError};
use crate::reservation::Reservations;

impl PoolConfig {
    /// The allocator's view of an IPPool named `name`. A zero block size means the family's
    /// default (26 / 122), as upstream defaults it.
    pub fn from_ippool(name: &str, spec: &IPPoolSpec) -> Result<Self, PoolError> {
        let cidr: IpNet = spec.cidr.parse().map_err(|_| PoolError::InvalidCidr {
            name: name.to_string(),
            cidr: spec.cidr.clone(),
        })?;
        let mut p = PoolConfig::new(name, cidr);
        if spec.block_size != 0 {
            p.block_size =
                u8::try_from(spec.block_size).map_err(|_| PoolError::InvalidBlockSize {
                    name: name.to_string(),
                    block_size: spec.block_size,
                })?;
        }
        if !spec.node_selector.is_empty() {
            p.node_selector = spec.node_selector.clone();
        }
        p.disabled = spec.disabled;
        p.allowed_uses = spec
            .allowed_uses
            .iter()
            .map(|u| match u {
                ModelUse::Workload => AllowedUse::Workload,
                ModelUse::Tunnel => AllowedUse::Tunnel,
                ModelUse::LoadBalancer => AllowedUse::LoadBalancer,
            })
            .collect();
        p.assignment_mode = match spec.assignment_mode {
            Some(ModelMode::Manual) => AssignmentMode::Manual,
            Some(ModelMode::Automatic) | None => AssignmentMode::Automatic,
        };
        p.validate()?;
        Ok(p)
    }
}

impl From<&IPAMConfigurationSpec> for IpamConfig {
    fn from(spec: &IPAMConfigurationSpec) -> Self {
        IpamConfig {
            strict_affinity: spec.strict_affinity,
            auto_allocate_blocks: spec.auto_allocate_blocks,
            max_blocks_per_host: u32::try_from(spec.max_blocks_per_host.max(0)).unwrap_or(u32::MAX),
        }
    }
}

impl Reservations {
    /// The union of the given IPReservations. Entries that are neither a CIDR nor an address are
    /// skipped (model validation rejects them before they are stored).
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = &'a IPReservationSpec>) -> Self {
        Reservations::new(
            specs
                .into_iter()
                .flat_map(|s| s.reserved_cidrs.iter())
                .filter_map(|c| {
                    c.parse::<IpNet>()
                        .map(|n| n.trunc())
                        .ok()
                        .or_else(|| c.parse::<std::net::IpAddr>().ok().map(IpNet::from))
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_ippool() {
        let spec = IPPoolSpec {
            cidr: "10.244.0.0/16".into(),
            block_size: 24,
            node_selector: "rack == 'a'".into(),
            allowed_uses: vec![ModelUse::Tunnel],
            assignment_mode: Some(ModelMode::Manual),
            ..Default::default()
        };
        let p = PoolConfig::from_ippool("p", &spec).unwrap();
        assert_eq!(p.cidr.to_string(), "10.244.0.0/16");
        assert_eq!(p.block_size, 24);
        assert_eq!(p.allowed_uses, vec![AllowedUse::Tunnel]);
        assert_eq!(p.assignment_mode, AssignmentMode::Manual);
        let defaulted = PoolConfig::from_ippool(
            "d",
            &IPPoolSpec {
                cidr: "fd00::/48".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(defaulted.block_size, 122);
        assert!(defaulted.selects_all_nodes());
        let bad = IPPoolSpec {
            cidr: "nope".into(),
            ..Default::default()
        };
        assert!(matches!(
            PoolConfig::from_ippool("b", &bad),
            Err(PoolError::InvalidCidr { .. })
        ));
    }

    #[test]
    fn converts_reservations() {
        let r = Reservations::from_specs([&IPReservationSpec {
            reserved_cidrs: vec!["10.0.0.0/30".into(), "10.0.1.1".into(), "junk".into()],
        }]);
        assert_eq!(r.cidrs().len(), 2);
        assert!(r.matches_ip("10.0.1.1".parse().unwrap()));
    }
}

//! IP address management kinds: `IPPool`, `IPReservation` and the `IPAMConfiguration` singleton.
//!
//! Field names and JSON shape follow upstream `projectcalico.org/v3`; validation follows
//! upstream's Go validator plus the CRD schema and CEL rules; defaulting follows what the client
//! library does on create (block size, encapsulation modes, node selector, allowed uses,
//! assignment mode).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::common::{
    network_of, null_as_default, parse_cidr_or_ip, prefixes_overlap, validate_cidr,
    validate_meta_labels_annotations, validate_resource_name, validate_selector,
};

/// Encapsulation mode of a pool (`ipipMode`, `vxlanMode`). Case-sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncapMode {
    Never,
    Always,
    CrossSubnet,
}

impl EncapMode {
    /// Whether the mode turns encapsulation on (`Always` or `CrossSubnet`).
    pub fn enabled(self) -> bool {
        !matches!(self, EncapMode::Never)
    }
}

/// What addresses from a pool may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// Whether IPAM picks a pool by itself (`Automatic`) or only when asked for it (`Manual`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssignmentMode {
    Automatic,
    Manual,
}

/// Deprecated API v1 IPIP settings (`spec.ipip`); accepted by the parser so the error can name it,
/// refused by validation as upstream does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPIPConfiguration {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub enabled: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mode: String,
}

/// `spec` of an `IPPool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    /// The pool CIDR (required, strictly masked).
    #[serde(default)]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub nat_outgoing: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disabled: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "disableBGPExport",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    /// Prefix length of the blocks carved from the pool; 0 means "default for the family".
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub block_size: i64,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub node_selector: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace_selector: String,
    /// Deprecated (API v1); must not be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip: Option<IPIPConfiguration>,
    /// Deprecated (API v1); must not be true.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "nat-outgoing",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub nat_outgoing_v1: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_uses: Vec<AllowedUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

/// `spec` of an `IPReservation`: addresses IPAM never hands out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPReservationSpec {
    /// CIDRs or bare addresses, either family.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "reservedCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reserved_cidrs: Vec<String>,
}

/// KubeVirt VM address persistence setting of the IPAM configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VMAddressPersistence {
    Enabled,
    Disabled,
}

/// `spec` of the `IPAMConfiguration` singleton (named `default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigurationSpec {
    /// When true, a host never borrows addresses from another host's block.
    #[serde(default)]
    pub strict_affinity: bool,
    /// When false, hosts never claim new blocks. Defaults to true.
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
    /// Maximum number of blocks affine to one host; 0 means the allocator default (20).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub max_blocks_per_host: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_virt_vm_address_persistence: Option<VMAddressPersistence>,
    /// Minimum age in seconds of a released address before it is handed out again.
    #[serde(
        default,
        rename = "minIPReclaimAgeSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_ip_reclaim_age_seconds: Option<i64>,
    /// Cool-down in seconds before a released address is re-used (0..=1200).
    #[serde(
        default,
        rename = "ipCooldownSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_cooldown_seconds: Option<i64>,
}

impl Default for IPAMConfigurationSpec {
    fn default() -> Self {
        Self {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            kube_virt_vm_address_persistence: None,
            min_ip_reclaim_age_seconds: None,
            ip_cooldown_seconds: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Default block prefix length for IPv4 pools.
pub const DEFAULT_BLOCK_SIZE_V4: i64 = 26;
/// Default block prefix length for IPv6 pools.
pub const DEFAULT_BLOCK_SIZE_V6: i64 = 122;

impl IPPoolSpec {
    /// The pool's address family (4 or 6), if the CIDR parses.
    pub fn ip_version(&self) -> Option<u8> {
        parse_cidr_or_ip(&self.cidr).map(|(ip, _)| if ip.is_ipv4() { 4 } else { 6 })
    }

    /// Allowed uses with the upstream default (`[Workload, Tunnel]`) applied when empty.
    pub fn effective_allowed_uses(&self) -> Vec<AllowedUse> {
        if self.allowed_uses.is_empty() {
            vec![AllowedUse::Workload, AllowedUse::Tunnel]
        } else {
            self.allowed_uses.clone()
        }
    }
}

impl Spec for IPAMConfigurationSpec {
    const KIND: &'static str = "IPAMConfiguration";
    const PLURAL: &'static str = "ipamconfigurations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["ipamconfiguration", "ipamconfig", "ipamconfigs"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if meta.name != "default" {
            errs.push(
                "metadata.name",
                format!(
                    "{:?}: IPAMConfiguration is a singleton and must be named \"default\"",
                    meta.name
                ),
            );
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        if !(0..=1_000_000).contains(&spec.max_blocks_per_host) {
            errs.push("spec.maxBlocksPerHost", "must be between 0 and 1000000");
        } else if spec.max_blocks_per_host > 0 && !spec.strict_affinity {
            errs.push(
                "spec.maxBlocksPerHost",
                "may only be set (non-zero) when spec.strictAffinity is true",
            );
        }
        if !spec.strict_affinity && !spec.auto_allocate_blocks {
            errs.push(
                "spec.autoAllocateBlocks",
                "cannot be false while spec.strictAffinity is also false",
            );
        }
        if let Some(v) = spec.min_ip_reclaim_age_seconds
            && !(0..=i64::from(i32::MAX)).contains(&v)
        {
            errs.push("spec.minIPReclaimAgeSeconds", "must not be negative");
        }
        if let Some(v) = spec.ip_cooldown_seconds
            && !(0..=1200).contains(&v)
        {
            errs.push("spec.ipCooldownSeconds", "must be between 0 and 1200");
        }
    }
}

impl Spec for IPPoolSpec {
    const KIND: &'static str = "IPPool";
    const PLURAL: &'static str = "ippools";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["ippool", "ipp", "ipps", "pool", "pools"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn apply_defaults(_meta: &mut ObjectMeta, spec: &mut Self) {
        // Upstream stores the canonical form of a valid, strictly masked CIDR (`FD00::/64` →
        // `fd00::/64`, a bare address → `/32` or `/128`). Anything else is left for validation
        // to report as written.
        if let Some((ip, len)) = parse_cidr_or_ip(&spec.cidr)
            && network_of(ip, len) == ip
        {
            spec.cidr = format!("{ip}/{len}");
        }
        if spec.block_size == 0 {
            match spec.ip_version() {
                Some(4) => spec.block_size = DEFAULT_BLOCK_SIZE_V4,
                Some(_) => spec.block_size = DEFAULT_BLOCK_SIZE_V6,
                None => {}
            }
        }
        if spec.node_selector.is_empty() {
            spec.node_selector = "all()".to_string();
        }
        if spec.ipip_mode.is_none() {
            spec.ipip_mode = Some(EncapMode::Never);
        }
        if spec.vxlan_mode.is_none() {
            spec.vxlan_mode = Some(EncapMode::Never);
        }
        if spec.allowed_uses.is_empty() {
            spec.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
        }
        if spec.assignment_mode.is_none() {
            spec.assignment_mode = Some(AssignmentMode::Automatic);
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        let ipip_on = spec.ipip_mode.is_some_and(EncapMode::enabled);
        let vxlan_on = spec.vxlan_mode.is_some_and(EncapMode::enabled);
        if ipip_on && vxlan_on {
            errs.push(
                "spec.ipipMode",
                "ipipMode and vxlanMode cannot both be enabled (spec.vxlanMode is also enabled)",
            );
        }

        let uses = spec.effective_allowed_uses();
        let is_lb = uses.contains(&AllowedUse::LoadBalancer);
        let mut seen = BTreeSet::new();
        for (i, u) in spec.allowed_uses.iter().enumerate() {
            if !seen.insert(*u) {
                errs.push(
                    format!("spec.allowedUses[{i}]"),
                    format!("duplicate allowed use {u:?}"),
                );
            }
        }
        if is_lb {
            if uses.iter().any(|u| *u != AllowedUse::LoadBalancer) {
                errs.push(
                    "spec.allowedUses",
                    "LoadBalancer cannot be combined with Workload or Tunnel allowed uses",
                );
            }
            if ipip_on || vxlan_on {
                errs.push(
                    if ipip_on {
                        "spec.ipipMode"
                    } else {
                        "spec.vxlanMode"
                    },
                    "LoadBalancer IP pool cannot have IPIP or VXLAN enabled",
                );
            }
            if spec.disable_bgp_export {
                errs.push(
                    "spec.disableBGPExport",
                    "an IP pool with allowed use LoadBalancer must not disable BGP export",
                );
            }
            if !spec.node_selector.is_empty() && spec.node_selector.trim() != "all()" {
                errs.push(
                    "spec.nodeSelector",
                    "an IP pool with allowed use LoadBalancer must have nodeSelector all()",
                );
            }
        }
        if !spec.namespace_selector.is_empty() && uses.contains(&AllowedUse::Tunnel) {
            errs.push(
                "spec.namespaceSelector",
                "namespaceSelector cannot be used on a pool with allowed use Tunnel",
            );
        }

        if spec.ipip.is_some() {
            errs.push(
                "spec.ipip",
                "deprecated API v1 field; must not be set (use spec.ipipMode)",
            );
        }
        if spec.nat_outgoing_v1 {
            errs.push(
                "spec.nat-outgoing",
                "deprecated API v1 field; must not be set (use spec.natOutgoing)",
            );
        }

        for (path, sel) in [
            ("spec.nodeSelector", &spec.node_selector),
            ("spec.namespaceSelector", &spec.namespace_selector),
        ] {
            if sel.is_empty() {
                continue;
            }
            if sel.len() > 1024 {
                errs.push(path, "must be at most 1024 characters");
            }
            if sel.contains("global()") {
                errs.push(path, "global() may not be used in an IP pool selector");
            }
            validate_selector(path, sel, errs);
        }

        // The family-specific blockSize range is checked below once the CIDR's family is known;
        // without a usable CIDR only the schema bound applies.
        if !(0..=128).contains(&spec.block_size) && parse_cidr_or_ip(&spec.cidr).is_none() {
            errs.push("spec.blockSize", "must be between 0 and 128");
        }
        if spec.cidr.is_empty() {
            errs.push("spec.cidr", "IPPool CIDR must be specified");
            return;
        }
        let Some((ip, len)) = parse_cidr_or_ip(&spec.cidr) else {
            errs.push("spec.cidr", format!("{:?} is not a valid CIDR", spec.cidr));
            return;
        };
        let v4 = ip.is_ipv4();
        if network_of(ip, len) != ip {
            errs.push(
                "spec.cidr",
                format!(
                    "IP pool CIDR {:?} is not strictly masked (did you mean {}/{len}?)",
                    spec.cidr,
                    network_of(ip, len)
                ),
            );
        }
        if v4 && prefixes_overlap((ip, len), link_local_v4()) {
            errs.push(
                "spec.cidr",
                "IP pool range overlaps with IPv4 Link Local range 169.254.0.0/16",
            );
        }
        if !v4 && prefixes_overlap((ip, len), link_local_v6()) {
            errs.push(
                "spec.cidr",
                "IP pool range overlaps with IPv6 Link Local range fe80::/10",
            );
        }
        if !v4 && ipip_on {
            errs.push(
                "spec.ipipMode",
                "IPIP is not supported on IPv6 pools (ipipMode must be Never)",
            );
        }
        let block = if spec.block_size == 0 {
            if v4 {
                DEFAULT_BLOCK_SIZE_V4
            } else {
                DEFAULT_BLOCK_SIZE_V6
            }
        } else {
            spec.block_size
        };
        let (lo, hi, fam) = if v4 {
            (20, 32, "IPv4")
        } else {
            (116, 128, "IPv6")
        };
        if !(lo..=hi).contains(&block) {
            errs.push(
                "spec.blockSize",
                format!("must be between {lo} and {hi} for {fam}"),
            );
        } else if !spec.disabled && i64::from(len) > block {
            errs.push(
                "spec.cidr",
                format!(
                    "IP pool /{len} is smaller than one block (spec.blockSize {block}); the pool \
                     prefix length must be at most the block size unless the pool is disabled"
                ),
            );
        }
    }
}

impl Spec for IPReservationSpec {
    const KIND: &'static str = "IPReservation";
    const PLURAL: &'static str = "ipreservations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["ipreservation"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        for (i, c) in spec.reserved_cidrs.iter().enumerate() {
            validate_cidr(&format!("spec.reservedCIDRs[{i}]"), c, errs);
        }
    }
}

fn link_local_v4() -> (std::net::IpAddr, u8) {
    (
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 0, 0)),
        16,
    )
}

fn link_local_v6() -> (std::net::IpAddr, u8) {
    (
        std::net::IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        10,
    )
}

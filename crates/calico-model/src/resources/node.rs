//! The Calico `Node` kind: per-host BGP addresses, tunnel addresses, orchestrator references.
//! `status` (WireGuard public keys, pod CIDRs) is carried by the envelope; [`NodeStatus`] gives
//! it a typed view and its own validation.

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::bgp::AsNumber;
use crate::resources::common::{
    is_dns1123_subdomain, is_valid_mac, null_as_default, parse_cidr_or_ip, validate_cidr,
    validate_ip, validate_meta_labels_annotations, validate_resource_name,
};

/// BGP settings of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBGPSpec {
    /// Per-node AS number; the global default applies when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// `a.b.c.d/len`: the node's IPv4 address and subnet.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "ipv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_address: String,
    /// `x::y/len`: the node's IPv6 address and subnet.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "ipv6Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_address: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_ipip_tunnel_addr: String,
    /// IPv4-formatted cluster ID; makes the node a route reflector.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "routeReflectorClusterID",
        skip_serializing_if = "String::is_empty"
    )]
    pub route_reflector_cluster_id: String,
}

/// Correlates the Calico node with its name in an orchestrator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub node_name: String,
    #[serde(default)]
    pub orchestrator: String,
}

/// WireGuard interface addresses of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeWireguardSpec {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "interfaceIPv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv4_address: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "interfaceIPv6Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv6_address: String,
}

/// An address a client can reach the node at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    #[serde(default)]
    pub address: String,
    /// `CalicoNodeIP`, `InternalIP` or `ExternalIP`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "type",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_type: String,
}

/// A host interface and its addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeInterface {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<String>,
}

/// `spec` of a `Node`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBGPSpec>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_vxlan_tunnel_addr: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_vxlan_tunnel_addr: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr_v6: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub orch_refs: Vec<OrchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireguardSpec>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<NodeAddress>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub interfaces: Vec<NodeInterface>,
}

/// Typed view of a `Node`'s `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub wireguard_public_key: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "wireguardPublicKeyV6",
        skip_serializing_if = "String::is_empty"
    )]
    pub wireguard_public_key_v6: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "podCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub pod_cidrs: Vec<String>,
}

impl NodeStatus {
    /// Decodes and validates a `Node` status value (as carried by the resource envelope).
    pub fn from_value(v: &serde_json::Value) -> Result<NodeStatus, Vec<crate::FieldError>> {
        let status: NodeStatus = serde_json::from_value(v.clone())
            .map_err(|e| vec![crate::FieldError::new("status", e.to_string())])?;
        let mut errs = Errors::default();
        for (path, k) in [
            ("status.wireguardPublicKey", &status.wireguard_public_key),
            (
                "status.wireguardPublicKeyV6",
                &status.wireguard_public_key_v6,
            ),
        ] {
            if !k.is_empty() && !is_wireguard_key(k) {
                errs.push(
                    path,
                    format!("{k:?} is not a valid WireGuard public key (base64 of 32 bytes)"),
                );
            }
        }
        for (i, c) in status.pod_cidrs.iter().enumerate() {
            validate_cidr(&format!("status.podCIDRs[{i}]"), c, &mut errs);
        }
        if errs.is_empty() {
            Ok(status)
        } else {
            Err(errs.0)
        }
    }
}

/// A WireGuard key: standard base64 of exactly 32 bytes.
pub fn is_wireguard_key(k: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(k)
        .is_ok_and(|b| b.len() == 32)
}

/// Address types a `NodeAddress` may carry.
pub const NODE_ADDRESS_TYPES: &[&str] = &["CalicoNodeIP", "InternalIP", "ExternalIP"];

impl Spec for NodeSpec {
    const KIND: &'static str = "Node";
    const PLURAL: &'static str = "nodes";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["node", "no"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        if let Some(bgp) = &spec.bgp {
            if *bgp == NodeBGPSpec::default() {
                errs.push("spec.bgp", "spec.bgp should not be empty when present");
            }
            for (path, s, v4) in [
                ("spec.bgp.ipv4Address", &bgp.ipv4_address, true),
                ("spec.bgp.ipv6Address", &bgp.ipv6_address, false),
            ] {
                if s.is_empty() {
                    continue;
                }
                match parse_cidr_or_ip(s) {
                    Some((ip, _)) if ip.is_ipv4() == v4 => {}
                    _ => errs.push(
                        path,
                        format!(
                            "{s:?} is not a valid {} address/CIDR",
                            if v4 { "IPv4" } else { "IPv6" }
                        ),
                    ),
                }
            }
            if !bgp.ipv4_ipip_tunnel_addr.is_empty() {
                validate_ip(
                    "spec.bgp.ipv4IPIPTunnelAddr",
                    &bgp.ipv4_ipip_tunnel_addr,
                    4,
                    errs,
                );
            }
            if !bgp.route_reflector_cluster_id.is_empty() {
                validate_ip(
                    "spec.bgp.routeReflectorClusterID",
                    &bgp.route_reflector_cluster_id,
                    4,
                    errs,
                );
            }
        }
        if !spec.ipv4_vxlan_tunnel_addr.is_empty() {
            validate_ip(
                "spec.ipv4VXLANTunnelAddr",
                &spec.ipv4_vxlan_tunnel_addr,
                4,
                errs,
            );
        }
        if !spec.ipv6_vxlan_tunnel_addr.is_empty() {
            validate_ip(
                "spec.ipv6VXLANTunnelAddr",
                &spec.ipv6_vxlan_tunnel_addr,
                6,
                errs,
            );
        }
        for (path, mac) in [
            ("spec.vxlanTunnelMACAddr", &spec.vxlan_tunnel_mac_addr),
            ("spec.vxlanTunnelMACAddrV6", &spec.vxlan_tunnel_mac_addr_v6),
        ] {
            if !mac.is_empty() && !is_valid_mac(mac) {
                errs.push(path, format!("{mac:?} is not a valid MAC address"));
            }
        }
        if let Some(wg) = &spec.wireguard {
            if !wg.interface_ipv4_address.is_empty() {
                validate_ip(
                    "spec.wireguard.interfaceIPv4Address",
                    &wg.interface_ipv4_address,
                    4,
                    errs,
                );
            }
            if !wg.interface_ipv6_address.is_empty() {
                validate_ip(
                    "spec.wireguard.interfaceIPv6Address",
                    &wg.interface_ipv6_address,
                    6,
                    errs,
                );
            }
        }
        for (i, o) in spec.orch_refs.iter().enumerate() {
            if o.orchestrator.is_empty() {
                errs.push(format!("spec.orchRefs[{i}].orchestrator"), "is required");
            }
        }
        for (i, a) in spec.addresses.iter().enumerate() {
            validate_cidr(&format!("spec.addresses[{i}].address"), &a.address, errs);
            if !a.address_type.is_empty() && !NODE_ADDRESS_TYPES.contains(&a.address_type.as_str())
            {
                errs.push(
                    format!("spec.addresses[{i}].type"),
                    format!(
                        "{:?} is not one of {}",
                        a.address_type,
                        NODE_ADDRESS_TYPES.join(", ")
                    ),
                );
            }
        }
        for (i, iface) in spec.interfaces.iter().enumerate() {
            if !iface.name.is_empty() && !is_dns1123_subdomain(&iface.name) {
                errs.push(
                    format!("spec.interfaces[{i}].name"),
                    format!("{:?} is not a valid name", iface.name),
                );
            }
            for (j, a) in iface.addresses.iter().enumerate() {
                validate_cidr(&format!("spec.interfaces[{i}].addresses[{j}]"), a, errs);
            }
        }
    }
}

//! Startup against the datastore (reference §3.1): the Node resource, the default IP pool, the
//! cluster-wide default resources and the VXLAN tunnel address.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use calico_datastore::KvStore;
use calico_datastore::client::Client;
use calico_ipam::{AllowedUse, AutoAssignArgs, IpamClient};
use calico_model::resources::bgp::AsNumber;
use calico_model::resources::ipam::EncapMode;
use calico_model::resources::node::NodeBGPSpec;
use calico_model::resources::{
    BGPConfigurationSpec, ClusterInformationSpec, FelixConfigurationSpec, IPPoolSpec, NodeSpec,
};
use calico_model::{AnyResource, KindInfo, Resource};
use ipnet::IpNet;

use crate::config::{Backend, NodeEnv, PoolEnv};

/// Name of the default IPv4 pool.
pub const DEFAULT_POOL: &str = "default-ipv4-ippool";

fn kind(name: &str) -> Result<&'static KindInfo> {
    KindInfo::lookup(name).with_context(|| format!("kind {name} unknown to the model"))
}

/// Reads the Node, if it exists.
pub async fn get_node(client: &Client, name: &str) -> Result<Option<Resource<NodeSpec>>> {
    match client.get(kind("Node")?, "", name).await {
        Ok(r) => Resource::<NodeSpec>::try_from(r)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("node {name}: stored resource is not a Node")),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("node {name}: read")),
    }
}

/// Creates or updates the Node with this node's address and AS, keeping everything else
/// (routeReflectorClusterID, tunnel addresses, labels). `ip` = `None` keeps what is stored.
pub async fn ensure_node(
    client: &Client,
    name: &str,
    ip: Option<IpNet>,
    env: &NodeEnv,
) -> Result<Resource<NodeSpec>> {
    for _ in 0..10 {
        let existing = get_node(client, name).await?;
        let mut node = existing
            .clone()
            .unwrap_or_else(|| Resource::new("", name, NodeSpec::default()));
        if env.backend != Backend::None || ip.is_some() {
            let bgp = node.spec.bgp.get_or_insert_with(NodeBGPSpec::default);
            if let Some(ip) = ip {
                bgp.ipv4_address = ip.to_string();
            }
            if let Some(asn) = env.as_number {
                bgp.as_number = Some(AsNumber(asn));
            }
        }
        let res = match existing {
            None => client.create(AnyResource::from(node)).await,
            Some(old) if old == node => return Ok(node),
            Some(_) => client.update(AnyResource::from(node)).await,
        };
        match res {
            Ok(r) => {
                return Resource::<NodeSpec>::try_from(r)
                    .map_err(|_| anyhow::anyhow!("node {name}: written resource is not a Node"));
            }
            Err(e) if e.is_conflict() || e.is_already_exists() => continue,
            Err(e) => return Err(e).with_context(|| format!("node {name}: write")),
        }
    }
    bail!("node {name}: too many concurrent updates")
}

/// Writes `f(node)` back with compare-and-swap retries.
async fn modify_node(
    client: &Client,
    name: &str,
    f: impl Fn(&mut NodeSpec),
) -> Result<Resource<NodeSpec>> {
    for _ in 0..10 {
        let Some(old) = get_node(client, name).await? else {
            bail!("node {name}: disappeared during startup");
        };
        let mut node = old.clone();
        f(&mut node.spec);
        if node == old {
            return Ok(node);
        }
        match client.update(AnyResource::from(node)).await {
            Ok(r) => {
                return Resource::<NodeSpec>::try_from(r)
                    .map_err(|_| anyhow::anyhow!("node {name}: not a Node"));
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e).with_context(|| format!("node {name}: update")),
        }
    }
    bail!("node {name}: too many concurrent updates")
}

/// The default pool resource for `pool` settings.
pub fn default_pool(pool: &PoolEnv, cidr: IpNet) -> Resource<IPPoolSpec> {
    let spec = IPPoolSpec {
        cidr: cidr.to_string(),
        vxlan_mode: Some(pool.vxlan),
        ipip_mode: Some(pool.ipip),
        nat_outgoing: pool.nat_outgoing,
        block_size: i64::from(pool.block_size),
        node_selector: pool.node_selector.clone(),
        disable_bgp_export: pool.disable_bgp_export,
        ..Default::default()
    };
    Resource::new("", DEFAULT_POOL, spec)
}

/// Creates the default IPv4 pool when no IPv4 pool exists at all. Returns whether it created one.
pub async fn ensure_default_pool(client: &Client, env: &NodeEnv) -> Result<bool> {
    if env.no_default_pools {
        return Ok(false);
    }
    let Some(cidr) = env.pool.cidr else {
        return Ok(false);
    };
    let pools = client
        .list(kind("IPPool")?, None)
        .await
        .context("list ippools")?;
    let has_v4 = pools.items.iter().any(|p| match p {
        AnyResource::IPPool(p) => p
            .spec
            .cidr
            .parse::<IpNet>()
            .is_ok_and(|c| matches!(c, IpNet::V4(_))),
        _ => false,
    });
    if has_v4 {
        return Ok(false);
    }
    match client
        .create(AnyResource::from(default_pool(&env.pool, cidr)))
        .await
    {
        Ok(_) => {
            tracing::info!(pool = DEFAULT_POOL, %cidr, "created default ip pool");
            Ok(true)
        }
        Err(e) if e.is_already_exists() => Ok(false),
        Err(e) => Err(e).context("create default ip pool"),
    }
}

async fn create_if_missing(client: &Client, res: AnyResource) -> Result<()> {
    let id = format!("{} {}", res.kind(), res.metadata().name);
    match client.create(res).await {
        Ok(_) => {
            tracing::info!(resource = %id, "created default");
            Ok(())
        }
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create {id}")),
    }
}

/// ClusterInformation / FelixConfiguration / BGPConfiguration `default` when missing.
pub async fn ensure_defaults(client: &Client, env: &NodeEnv) -> Result<()> {
    let ci = ClusterInformationSpec {
        cluster_guid: uuid::Uuid::new_v4().simple().to_string(),
        cluster_type: env.cluster_type.clone(),
        // The same form as `calicoctl version` (upstream: `v3.x.y`), so its version guard agrees.
        calico_version: format!("v{}", env!("CARGO_PKG_VERSION")),
        datastore_ready: Some(true),
        ..Default::default()
    };
    create_if_missing(client, Resource::new("", "default", ci).into()).await?;
    let fc = FelixConfigurationSpec {
        reporting_interval: Some("0s".into()),
        log_severity_screen: Some("Info".into()),
        ..Default::default()
    };
    create_if_missing(client, Resource::new("", "default", fc).into()).await?;
    create_if_missing(
        client,
        Resource::new("", "default", BGPConfigurationSpec::default()).into(),
    )
    .await?;
    Ok(())
}

/// The IPAM handle of a node's VXLAN tunnel address (upstream's).
pub fn vxlan_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// Which tunnel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// `spec.ipv4VXLANTunnelAddr` (+ `vxlanTunnelMACAddr`), pools with `vxlanMode` on.
    Vxlan,
    /// `spec.bgp.ipv4IPIPTunnelAddr`, pools with `ipipMode` on.
    Ipip,
}

impl Tunnel {
    fn handle(self, node: &str) -> String {
        match self {
            Tunnel::Vxlan => vxlan_handle(node),
            Tunnel::Ipip => format!("ipip-tunnel-addr-{node}"),
        }
    }

    fn attr_type(self) -> &'static str {
        match self {
            Tunnel::Vxlan => calico_ipam::attrs::TYPE_VXLAN,
            Tunnel::Ipip => calico_ipam::attrs::TYPE_IPIP,
        }
    }

    fn wanted_by(self, p: &IPPoolSpec) -> bool {
        let mode = match self {
            Tunnel::Vxlan => p.vxlan_mode,
            Tunnel::Ipip => p.ipip_mode,
        };
        !p.disabled && mode.is_some_and(EncapMode::enabled)
    }

    fn current(self, s: &NodeSpec) -> String {
        match self {
            Tunnel::Vxlan => s.ipv4_vxlan_tunnel_addr.clone(),
            Tunnel::Ipip => s
                .bgp
                .as_ref()
                .map(|b| b.ipv4_ipip_tunnel_addr.clone())
                .unwrap_or_default(),
        }
    }

    fn set(self, s: &mut NodeSpec, v: String) {
        match self {
            Tunnel::Vxlan => s.ipv4_vxlan_tunnel_addr = v,
            Tunnel::Ipip => {
                s.bgp
                    .get_or_insert_with(NodeBGPSpec::default)
                    .ipv4_ipip_tunnel_addr = v
            }
        }
    }
}

/// Allocates (or keeps, or releases) the VXLAN tunnel address and sets the VTEP MAC
/// (reference §1.9). VXLAN is wanted when an enabled pool has `vxlanMode` on.
pub async fn ensure_vxlan_tunnel(
    kv: &Arc<dyn KvStore>,
    client: &Client,
    name: &str,
) -> Result<Resource<NodeSpec>> {
    ensure_tunnel(kv, client, name, Tunnel::Vxlan).await
}

/// Allocates (or keeps, or releases) one tunnel address (reference §1.9): kept while it is
/// still held under the tunnel's handle inside a pool that wants it, else reassigned; released
/// and cleared when no pool wants the tunnel.
pub async fn ensure_tunnel(
    kv: &Arc<dyn KvStore>,
    client: &Client,
    name: &str,
    tunnel: Tunnel,
) -> Result<Resource<NodeSpec>> {
    let pools = client
        .list(kind("IPPool")?, None)
        .await
        .context("list ippools")?;
    let tunnel_pools: Vec<IpNet> = pools
        .items
        .iter()
        .filter_map(|p| match p {
            AnyResource::IPPool(p) if tunnel.wanted_by(&p.spec) => p
                .spec
                .cidr
                .parse::<IpNet>()
                .ok()
                .filter(|c| matches!(c, IpNet::V4(_))),
            _ => None,
        })
        .collect();
    let ipam = IpamClient::new(kv.clone());
    ipam.load_pools_from_store().await.context("load pools")?;
    let handle = tunnel.handle(name);
    let node = get_node(client, name)
        .await?
        .with_context(|| format!("node {name}: missing"))?;
    if tunnel_pools.is_empty() {
        if !tunnel.current(&node.spec).is_empty() {
            let _ = ipam.release_by_handle(&handle).await;
            return modify_node(client, name, |s| tunnel.set(s, String::new())).await;
        }
        return Ok(node);
    }
    let held = ipam.ips_by_handle(&handle).await.unwrap_or_default();
    let current = tunnel.current(&node.spec).parse::<std::net::IpAddr>().ok();
    let keep =
        current.filter(|ip| held.contains(ip) && tunnel_pools.iter().any(|p| p.contains(ip)));
    let addr = match keep {
        Some(ip) => ip,
        None => {
            let _ = ipam.release_by_handle(&handle).await;
            let mut attrs = BTreeMap::new();
            attrs.insert(calico_ipam::attrs::NODE.to_string(), name.to_string());
            attrs.insert(
                calico_ipam::attrs::TYPE.to_string(),
                tunnel.attr_type().to_string(),
            );
            let out = ipam
                .auto_assign(AutoAssignArgs {
                    num4: 1,
                    handle_id: Some(handle.clone()),
                    attrs,
                    hostname: name.to_string(),
                    ipv4_pools: tunnel_pools.clone(),
                    intended_use: AllowedUse::Tunnel,
                    ..AutoAssignArgs::default()
                })
                .await
                .with_context(|| format!("node {name}: allocate {tunnel:?} tunnel address"))?;
            let Some(a) = out.v4.ips.first() else {
                bail!(
                    "node {name}: no {tunnel:?} tunnel address available: {}",
                    out.v4.msgs.join("; ")
                );
            };
            tracing::info!(node = name, addr = %a.addr(), ?tunnel, "allocated tunnel address");
            a.addr()
        }
    };
    let mac = felix_routes::plan::vtep_mac(name).to_string();
    modify_node(client, name, |s| {
        tunnel.set(s, addr.to_string());
        if tunnel == Tunnel::Vxlan && s.vxlan_tunnel_mac_addr.is_empty() {
            s.vxlan_tunnel_mac_addr = mac.clone();
        }
    })
    .await
}

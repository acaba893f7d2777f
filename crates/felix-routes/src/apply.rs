//! Reconciles a [`Plan`] with the kernel: the VXLAN device (created, or recreated when its
//! parameters differ), FDB entries and neighbours on it, the IPIP device's address and MTU, and
//! every protocol-80 route in the main table (desired ones replaced when different, others
//! deleted — protocol 80 routes are ours).

use std::collections::BTreeSet;
use std::net::IpAddr;

use calico_linux::{Family, FdbEntry, Neighbour, Netlink, Route, RouteFilter, VxlanSpec, proto};
use ipnet::{IpNet, Ipv4Net};

use crate::RoutesError;
use crate::plan::{IPIP_DEVICE, Plan, PlannedRoute, RouteDev, VXLAN_DEVICE};

/// Facts about the host the applier needs besides the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// Index of the interface holding the node IP.
    pub parent_index: Option<u32>,
    /// Its MTU.
    pub parent_mtu: Option<u32>,
}

/// What one apply changed (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub routes_added: usize,
    pub routes_removed: usize,
    pub device_changes: usize,
    pub fdb_changes: usize,
    pub neighbour_changes: usize,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        *self != ApplyReport::default()
    }
}

/// Finds the interface that holds `ip` and its MTU.
pub async fn host_facts(nl: &dyn Netlink, ip: Option<IpAddr>) -> Result<HostFacts, RoutesError> {
    let Some(ip) = ip else {
        return Ok(HostFacts::default());
    };
    let addrs = nl.list_addresses(None).await?;
    let Some(a) = addrs.iter().find(|a| a.addr.addr() == ip) else {
        return Ok(HostFacts::default());
    };
    let link = nl.link_by_index(a.index).await?;
    Ok(HostFacts {
        parent_index: Some(a.index),
        parent_mtu: link.map(|l| l.mtu),
    })
}

/// Brings the kernel to `plan`. Errors stop at the first failing kernel call; the next apply
/// retries from scratch (every step compares with what the kernel has).
pub async fn apply(
    nl: &dyn Netlink,
    plan: &Plan,
    host: HostFacts,
) -> Result<ApplyReport, RoutesError> {
    let mut report = ApplyReport::default();
    let vxlan_index = ensure_vxlan(nl, plan, host, &mut report).await?;
    if let Some(idx) = vxlan_index {
        sync_fdb_and_neighbours(nl, plan, idx, &mut report).await?;
    }
    let ipip_index = ensure_ipip(nl, plan, &mut report).await?;
    sync_routes(nl, plan, host, vxlan_index, ipip_index, &mut report).await?;
    Ok(report)
}

async fn ensure_vxlan(
    nl: &dyn Netlink,
    plan: &Plan,
    host: HostFacts,
    report: &mut ApplyReport,
) -> Result<Option<u32>, RoutesError> {
    let existing = nl.link_by_name(VXLAN_DEVICE).await?;
    let Some(want) = &plan.vxlan else {
        if let Some(link) = existing {
            tracing::info!(
                device = VXLAN_DEVICE,
                "removing vxlan device (no longer wanted)"
            );
            nl.delete_link(link.index).await?;
            report.device_changes += 1;
        }
        return Ok(None);
    };
    let mut index = None;
    if let Some(link) = existing {
        let info = nl.vxlan_info(link.index).await?;
        let same = info.as_ref().is_some_and(|i| {
            i.vni == want.vni
                && i.port == want.port
                && i.local == Some(IpAddr::V4(want.local))
                && (host.parent_index.is_none() || i.parent_index == host.parent_index)
        });
        if same {
            index = Some(link.index);
        } else {
            tracing::info!(
                device = VXLAN_DEVICE,
                ?info,
                "vxlan device differs; recreating"
            );
            nl.delete_link(link.index).await?;
            report.device_changes += 1;
        }
    }
    let index = match index {
        Some(i) => i,
        None => {
            let mut spec = VxlanSpec::calico(VXLAN_DEVICE);
            spec.vni = want.vni;
            spec.port = want.port;
            spec.local = Some(IpAddr::V4(want.local));
            spec.parent_index = host.parent_index;
            spec.mtu = Some(want.mtu);
            spec.mac = Some(want.mac);
            nl.create_vxlan(&spec).await?;
            report.device_changes += 1;
            nl.link_by_name(VXLAN_DEVICE)
                .await?
                .ok_or_else(|| calico_linux::NetlinkError::LinkNotFound(VXLAN_DEVICE.into()))?
                .index
        }
    };
    let link = nl
        .link_by_index(index)
        .await?
        .ok_or_else(|| calico_linux::NetlinkError::LinkNotFound(VXLAN_DEVICE.into()))?;
    if link.mtu != want.mtu {
        nl.set_link_mtu(index, want.mtu).await?;
        report.device_changes += 1;
    }
    if link.mac != Some(want.mac) {
        nl.set_link_mac(index, want.mac).await?;
        report.device_changes += 1;
    }
    let addr = IpNet::V4(Ipv4Net::new(want.address, 32).unwrap_or_default());
    sync_addresses(nl, index, addr, report).await?;
    if !link.admin_up {
        nl.set_link_up(index, true).await?;
        report.device_changes += 1;
    }
    Ok(Some(index))
}

/// Leaves exactly `want` as the IPv4 address of link `index`.
async fn sync_addresses(
    nl: &dyn Netlink,
    index: u32,
    want: IpNet,
    report: &mut ApplyReport,
) -> Result<(), RoutesError> {
    let have = nl.list_addresses(Some(index)).await?;
    let mut present = false;
    for a in have.iter().filter(|a| matches!(a.addr, IpNet::V4(_))) {
        if a.addr == want {
            present = true;
        } else {
            nl.del_address(index, a.addr).await?;
            report.device_changes += 1;
        }
    }
    if !present {
        nl.add_address(index, want).await?;
        report.device_changes += 1;
    }
    Ok(())
}

async fn sync_fdb_and_neighbours(
    nl: &dyn Netlink,
    plan: &Plan,
    index: u32,
    report: &mut ApplyReport,
) -> Result<(), RoutesError> {
    let want_fdb: BTreeSet<FdbEntry> = plan
        .vteps
        .iter()
        .map(|v| FdbEntry {
            index,
            mac: v.mac,
            dst: IpAddr::V4(v.node_ip),
        })
        .collect();
    let have_fdb: BTreeSet<FdbEntry> = nl.list_fdb(index).await?.into_iter().collect();
    for e in have_fdb.difference(&want_fdb) {
        nl.del_fdb(e).await?;
        report.fdb_changes += 1;
    }
    for e in want_fdb.difference(&have_fdb) {
        nl.replace_fdb(e).await?;
        report.fdb_changes += 1;
    }
    let want_neigh: BTreeSet<Neighbour> = plan
        .vteps
        .iter()
        .map(|v| Neighbour {
            index,
            ip: IpAddr::V4(v.tunnel_ip),
            mac: v.mac,
        })
        .collect();
    let have_neigh: BTreeSet<Neighbour> = nl
        .list_neighbours(Family::V4, Some(index))
        .await?
        .into_iter()
        .collect();
    for n in have_neigh.difference(&want_neigh) {
        nl.del_neighbour(n).await?;
        report.neighbour_changes += 1;
    }
    for n in want_neigh.difference(&have_neigh) {
        nl.replace_neighbour(n).await?;
        report.neighbour_changes += 1;
    }
    Ok(())
}

async fn ensure_ipip(
    nl: &dyn Netlink,
    plan: &Plan,
    report: &mut ApplyReport,
) -> Result<Option<u32>, RoutesError> {
    let Some(want) = &plan.ipip else {
        return Ok(None);
    };
    let link = nl
        .link_by_name(IPIP_DEVICE)
        .await?
        .ok_or(RoutesError::IpipUnavailable)?;
    if link.mtu != want.mtu {
        nl.set_link_mtu(link.index, want.mtu).await?;
        report.device_changes += 1;
    }
    let addr = IpNet::V4(Ipv4Net::new(want.address, 32).unwrap_or_default());
    sync_addresses(nl, link.index, addr, report).await?;
    if !link.admin_up {
        nl.set_link_up(link.index, true).await?;
        report.device_changes += 1;
    }
    Ok(Some(link.index))
}

/// Upstream's `IPv4NormalRoutePriority`: Felix's routes carry metric 1024, so BIRD exports a
/// learned block route with normal preference (metric 0 would be read as the elevated priority
/// upstream reserves for live migration).
pub const NORMAL_ROUTE_PRIORITY: u32 = 1024;

/// Kernel form of a planned route; `None` when its device is missing.
pub fn to_kernel(
    r: &PlannedRoute,
    host: HostFacts,
    vxlan: Option<u32>,
    ipip: Option<u32>,
) -> Option<Route> {
    Some(match r {
        PlannedRoute::Blackhole { dst } => Route::blackhole(*dst)
            .with_protocol(proto::FELIX)
            .with_metric(NORMAL_ROUTE_PRIORITY),
        PlannedRoute::Via {
            dst,
            gateway,
            dev,
            onlink,
        } => {
            let oif = match dev {
                RouteDev::Vxlan => vxlan?,
                RouteDev::Ipip => ipip?,
                RouteDev::Parent => host.parent_index?,
            };
            let mut route = Route::via(*dst, *gateway, Some(oif))
                .with_protocol(proto::FELIX)
                .with_metric(NORMAL_ROUTE_PRIORITY);
            if *onlink {
                route = route.with_onlink();
            }
            route
        }
    })
}

/// Whether a kernel route already is the wanted one (ignoring what the kernel fills in).
fn same_route(have: &Route, want: &Route) -> bool {
    have.dst == want.dst
        && have.kind == want.kind
        && have.gateway == want.gateway
        && have.oif == want.oif
        && have.onlink == want.onlink
        && have.protocol == want.protocol
        && have.metric.unwrap_or(0) == want.metric.unwrap_or(0)
}

async fn sync_routes(
    nl: &dyn Netlink,
    plan: &Plan,
    host: HostFacts,
    vxlan: Option<u32>,
    ipip: Option<u32>,
    report: &mut ApplyReport,
) -> Result<(), RoutesError> {
    let want: Vec<Route> = plan
        .routes
        .iter()
        .filter_map(|r| {
            let k = to_kernel(r, host, vxlan, ipip);
            if k.is_none() {
                tracing::debug!(route = ?r, "device for route missing; skipped");
            }
            k
        })
        .collect();
    let have = nl
        .list_routes(&RouteFilter::v4().protocol(proto::FELIX))
        .await?;
    for w in &want {
        if have.iter().any(|h| same_route(h, w)) {
            continue;
        }
        // A stale route to the same dst and metric with a different next hop/kind is replaced.
        nl.replace_route(w).await?;
        report.routes_added += 1;
    }
    // Then (no gap) remove what is ours and unwanted, including a wanted dst left at another
    // metric by an older version.
    let want_keys: BTreeSet<(IpNet, u32)> = want
        .iter()
        .map(|r| (r.dst, r.metric.unwrap_or(0)))
        .collect();
    for r in &have {
        if !want_keys.contains(&(r.dst, r.metric.unwrap_or(0))) {
            tracing::debug!(route = %r.dst, metric = ?r.metric, "removing stale route");
            match nl.del_route(r).await {
                Ok(()) => report.routes_removed += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{BlockInfo, FelixSettings, NodeInfo, PlanInput, PoolInfo, plan as make_plan};
    use calico_linux::fake::FakeNetlink;
    use calico_model::resources::ipam::EncapMode;
    use std::collections::BTreeMap;

    fn input(blocks: &[(&str, &str)]) -> PlanInput {
        let mut nodes = BTreeMap::new();
        for (n, ip, vtep) in [
            ("a", "10.0.0.1/24", "192.168.0.1"),
            ("b", "10.0.0.2/24", "192.168.1.1"),
        ] {
            nodes.insert(
                n.to_string(),
                NodeInfo {
                    name: n.into(),
                    ipv4: Some(ip.parse().unwrap()),
                    vxlan_tunnel_addr: Some(vtep.parse().unwrap()),
                    ..Default::default()
                },
            );
        }
        PlanInput {
            local_node: "a".into(),
            nodes,
            pools: vec![PoolInfo {
                name: "p".into(),
                cidr: "192.168.0.0/16".parse().unwrap(),
                vxlan: EncapMode::Always,
                ipip: EncapMode::Never,
                disabled: false,
            }],
            blocks: blocks
                .iter()
                .map(|(c, n)| BlockInfo {
                    cidr: c.parse().unwrap(),
                    node: Some(n.to_string()),
                })
                .collect(),
            felix: FelixSettings::default(),
            host_mtu: 1500,
            ipip_available: false,
        }
    }

    #[tokio::test]
    async fn applies_idempotently_and_removes_stale_routes() {
        let nl = FakeNetlink::new();
        let eth0 = nl.add_existing_link("eth0", None, 1500, true);
        nl.add_address(eth0, "10.0.0.1/24".parse().unwrap())
            .await
            .unwrap();
        // A stale route of ours and a foreign route that must survive.
        nl.add_route(&Route::blackhole("10.250.0.0/24".parse().unwrap()).with_protocol(80))
            .await
            .unwrap();
        // Our own block's blackhole left at metric 0 by an older version: replaced by 1024.
        nl.add_route(&Route::blackhole("192.168.0.0/26".parse().unwrap()).with_protocol(80))
            .await
            .unwrap();
        nl.add_route(&Route::blackhole("10.251.0.0/24".parse().unwrap()).with_protocol(3))
            .await
            .unwrap();
        let host = host_facts(&nl, Some("10.0.0.1".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(host.parent_index, Some(eth0));
        let p = make_plan(&input(&[("192.168.0.0/26", "a"), ("192.168.1.0/26", "b")]));
        let r = apply(&nl, &p, host).await.unwrap();
        assert!(r.changed());
        assert_eq!(r.routes_removed, 2);
        let vx = nl.link_by_name("vxlan.calico").await.unwrap().unwrap();
        assert_eq!(vx.mtu, 1450);
        let routes = nl.list_routes(&RouteFilter::v4()).await.unwrap();
        let dsts: Vec<String> = routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["10.251.0.0/24", "192.168.0.0/26", "192.168.1.0/26"]);
        assert!(
            routes
                .iter()
                .filter(|r| r.protocol == 80)
                .all(|r| r.metric == Some(NORMAL_ROUTE_PRIORITY)),
            "{routes:?}"
        );
        let remote = routes
            .iter()
            .find(|r| r.dst.to_string() == "192.168.1.0/26")
            .unwrap();
        assert_eq!(remote.oif, Some(vx.index));
        assert!(remote.onlink);
        assert_eq!(nl.list_fdb(vx.index).await.unwrap().len(), 1);
        assert_eq!(
            nl.list_neighbours(Family::V4, Some(vx.index))
                .await
                .unwrap()
                .len(),
            1
        );
        // Second apply: nothing to do.
        let again = apply(&nl, &p, host).await.unwrap();
        assert!(!again.changed(), "{again:?}");
        // Node b's block goes away: its route is removed, the VTEP stays.
        let p2 = make_plan(&input(&[("192.168.0.0/26", "a")]));
        let r = apply(&nl, &p2, host).await.unwrap();
        assert_eq!(r.routes_removed, 1);
        assert!(
            nl.list_routes(&RouteFilter::v4().protocol(80))
                .await
                .unwrap()
                .iter()
                .all(|r| r.dst.to_string() != "192.168.1.0/26")
        );
        // VXLAN off everywhere: the device goes.
        let mut i = input(&[("192.168.0.0/26", "a")]);
        i.felix.vxlan_enabled = Some(false);
        apply(&nl, &make_plan(&i), host).await.unwrap();
        assert!(nl.link_by_name("vxlan.calico").await.unwrap().is_none());
    }
}

//! The endpoint manager (upstream `felix/dataplane/linux/endpoint_mgr.go` plus the workload
//! part of `routetable`): for every local workload endpoint whose interface is up, the
//! interface sysctls, a `/32` / `/128` route `dev <iface> scope link` with protocol
//! `DeviceRouteProtocol`, a permanent ARP entry when the endpoint has a MAC, and the endpoint
//! status file. Routes on workload interfaces that no endpoint wants are removed — at once
//! when we programmed them, after a 10 s grace period otherwise (the CNI plugin adds the route
//! before the endpoint reaches Felix).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_linux::{
    Family, IfaceKey, LinkInfo, MacAddr, Neighbour, Netlink, NetlinkError, Route, RouteFilter,
    RouteKind, Sysctl, SysctlError, proto,
};
use felix_calc::msg::{WorkloadEndpoint, WorkloadEndpointId};
use ipnet::IpNet;
use tracing::{debug, info, info_span, warn};

/// How long an unknown route on a workload interface survives.
pub const ROUTE_GRACE: Duration = Duration::from_secs(10);

/// Errors of one endpoint-manager pass; the pass continues past them and the agent retries.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {endpoint}: {source}")]
    Netlink {
        endpoint: String,
        source: NetlinkError,
    },
    #[error("endpoint {endpoint}: {source}")]
    Sysctl {
        endpoint: String,
        source: SysctlError,
    },
    #[error("list routes: {0}")]
    ListRoutes(NetlinkError),
    #[error("endpoint status file {path}: {source}")]
    StatusFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Upstream's `IPv4NormalRoutePriority` (1024). BIRD's export filter (`calico_aggr`) treats a
/// route inside a local block with a lower metric as an elevated (live-migration) route and
/// exports it as a /32; at 1024 only the block is exported.
pub const WORKLOAD_ROUTE_METRIC: u32 = 1024;

/// The configuration the manager uses.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub device_route_protocol: u8,
    pub remove_external_routes: bool,
    pub ipv6: bool,
    /// `<EndpointStatusPathPrefix>/endpoint-status`; `None` disables the files.
    pub status_dir: Option<PathBuf>,
    pub workload_prefixes: Vec<String>,
    /// `InterfaceExclude`.
    pub interface_exclude: Vec<String>,
}

impl EndpointConfig {
    fn is_workload(&self, name: &str) -> bool {
        crate::config::is_workload_iface(&self.workload_prefixes, &self.interface_exclude, name)
    }

    /// Route protocols we own on workload interfaces when `RemoveExternalRoutes` is off.
    fn owns(&self, route: &Route) -> bool {
        self.remove_external_routes
            || route.protocol == self.device_route_protocol
            || route.protocol == proto::BOOT
            || route.protocol == proto::FELIX
    }
}

/// Up/down status of a local endpoint, as upstream reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStatus {
    Up,
    Down,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Up => "up",
            EndpointStatus::Down => "down",
        }
    }
}

/// What one pass achieved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    /// When a route in its grace period expires (the agent runs another pass then).
    pub next_deadline: Option<Instant>,
    /// Workload routes in the kernel after the pass.
    pub num_routes: usize,
}

type RouteKey = (IpNet, u32);

/// The manager. Feed it endpoint and interface changes, then [`apply`](Self::apply).
pub struct EndpointManager {
    netlink: Arc<dyn Netlink>,
    sysctl: Arc<dyn Sysctl>,
    cfg: EndpointConfig,
    weps: BTreeMap<WorkloadEndpointId, WorkloadEndpoint>,
    /// Every link, by index.
    links: BTreeMap<u32, LinkInfo>,
    /// Interfaces whose sysctls are set, with the index they had (a recreated interface
    /// gets them again).
    configured: BTreeMap<String, u32>,
    /// Routes we installed.
    programmed: BTreeSet<RouteKey>,
    /// Unknown routes on workload interfaces, with when we first saw them.
    unknown_since: BTreeMap<RouteKey, Instant>,
    /// Endpoints whose last configuration failed.
    failed: BTreeSet<WorkloadEndpointId>,
    /// Status files written, with their content.
    status_files: BTreeMap<WorkloadEndpointId, String>,
    /// Whether stale status files of an earlier run have been removed.
    swept: bool,
    default_rp_filter: Option<String>,
}

impl EndpointManager {
    pub fn new(netlink: Arc<dyn Netlink>, sysctl: Arc<dyn Sysctl>, cfg: EndpointConfig) -> Self {
        EndpointManager {
            netlink,
            sysctl,
            cfg,
            weps: BTreeMap::new(),
            links: BTreeMap::new(),
            configured: BTreeMap::new(),
            programmed: BTreeSet::new(),
            unknown_since: BTreeMap::new(),
            failed: BTreeSet::new(),
            status_files: BTreeMap::new(),
            swept: false,
            default_rp_filter: None,
        }
    }

    pub fn set_config(&mut self, cfg: EndpointConfig) {
        if cfg != self.cfg {
            // Re-apply sysctls and routes under the new settings.
            self.configured.clear();
            self.cfg = cfg;
        }
    }

    pub fn upsert_endpoint(&mut self, id: WorkloadEndpointId, ep: WorkloadEndpoint) {
        if let Some(old) = self.weps.get(&id)
            && old.name != ep.name
        {
            self.configured.remove(&old.name);
        }
        self.weps.insert(id, ep);
    }

    pub fn remove_endpoint(&mut self, id: &WorkloadEndpointId) {
        self.weps.remove(id);
        self.failed.remove(id);
    }

    pub fn link_state(&mut self, link: LinkInfo) {
        if !link.is_up() {
            self.configured.remove(&link.name);
        }
        if let Some(old) = self.links.get(&link.index)
            && old.name != link.name
        {
            self.configured.remove(&old.name);
        }
        self.links.insert(link.index, link);
    }

    pub fn link_removed(&mut self, link: &LinkInfo) {
        self.links.remove(&link.index);
        self.configured.remove(&link.name);
        self.programmed.retain(|(_, oif)| *oif != link.index);
        self.unknown_since.retain(|(_, oif), _| *oif != link.index);
    }

    pub fn num_endpoints(&self) -> usize {
        self.weps.len()
    }

    fn link_by_name(&self, name: &str) -> Option<&LinkInfo> {
        self.links.values().find(|l| l.name == name)
    }

    /// Status of every local endpoint: up when its interface is up and its last configuration
    /// succeeded.
    pub fn statuses(&self) -> BTreeMap<WorkloadEndpointId, EndpointStatus> {
        self.weps
            .iter()
            .map(|(id, ep)| {
                let up = self.link_by_name(&ep.name).is_some_and(LinkInfo::is_up)
                    && !self.failed.contains(id);
                (
                    id.clone(),
                    if up {
                        EndpointStatus::Up
                    } else {
                        EndpointStatus::Down
                    },
                )
            })
            .collect()
    }

    fn nets(&self, ep: &WorkloadEndpoint) -> Vec<IpNet> {
        let v6 = if self.cfg.ipv6 {
            ep.ipv6_nets.as_slice()
        } else {
            &[]
        };
        ep.ipv4_nets
            .iter()
            .chain(v6)
            .filter_map(|n| {
                n.parse::<IpNet>()
                    .ok()
                    .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect()
    }

    /// One reconciliation pass over sysctls, routes, ARP entries and status files.
    pub async fn apply(&mut self, now: Instant) -> (PassReport, Vec<EndpointError>) {
        let mut errors = Vec::new();
        let mut report = PassReport::default();
        if self.default_rp_filter.is_none() {
            self.default_rp_filter = Some(
                self.sysctl
                    .get("net.ipv4.conf.default.rp_filter")
                    .unwrap_or_else(|_| "1".to_string()),
            );
        }

        // Desired routes, and interface configuration for endpoints whose interface is up.
        let mut desired: BTreeMap<RouteKey, (WorkloadEndpointId, Option<MacAddr>)> =
            BTreeMap::new();
        let weps: Vec<(WorkloadEndpointId, WorkloadEndpoint)> = self
            .weps
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, ep) in &weps {
            let Some(link) = self.link_by_name(&ep.name).cloned() else {
                continue;
            };
            if !link.is_up() {
                continue;
            }
            let _span = info_span!("endpoint", id = %ep_name(id), iface = %ep.name).entered();
            if self.configured.get(&ep.name) != Some(&link.index) {
                match self.configure_iface(ep) {
                    Ok(()) => {
                        self.configured.insert(ep.name.clone(), link.index);
                        self.failed.remove(id);
                    }
                    Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {
                        debug!(error = %e, "interface vanished while configuring it");
                        continue;
                    }
                    Err(source) => {
                        self.failed.insert(id.clone());
                        errors.push(EndpointError::Sysctl {
                            endpoint: ep_name(id),
                            source,
                        });
                        continue;
                    }
                }
            }
            let mac = ep.mac.parse::<MacAddr>().ok();
            for net in self.nets(ep) {
                desired.insert((net, link.index), (id.clone(), mac));
            }
        }

        // What the kernel has on workload interfaces.
        let workload_oifs: BTreeSet<u32> = self
            .links
            .values()
            .filter(|l| self.cfg.is_workload(&l.name))
            .map(|l| l.index)
            .collect();
        let mut present: BTreeMap<RouteKey, Route> = BTreeMap::new();
        // Routes to a wanted (dst, interface) at another metric (the CNI plugin's metric-0 route,
        // or an older Felix's): removed once ours is in place.
        let mut other_metric: Vec<Route> = Vec::new();
        let mut families = vec![RouteFilter::v4()];
        if self.cfg.ipv6 {
            families.push(RouteFilter::v6());
        }
        for filter in families {
            match self.netlink.list_routes(&filter).await {
                Ok(routes) => {
                    for r in routes {
                        if let Some(oif) = r.oif
                            && workload_oifs.contains(&oif)
                            && r.gateway.is_none()
                        {
                            if r.metric.unwrap_or(0) == WORKLOAD_ROUTE_METRIC {
                                present.insert((r.dst, oif), r);
                            } else {
                                present.entry((r.dst, oif)).or_insert_with(|| r.clone());
                                other_metric.push(r);
                            }
                        }
                    }
                }
                Err(e) => {
                    // Without the listing we cannot tell what to delete; add what is missing.
                    if filter.family == Family::V4 {
                        errors.push(EndpointError::ListRoutes(e));
                    }
                }
            }
        }

        // Remove routes nobody wants.
        for (key, route) in &present {
            if desired.contains_key(key) {
                self.unknown_since.remove(key);
                continue;
            }
            let link_local =
                matches!(route.dst, IpNet::V6(n) if n.addr().segments()[0] & 0xffc0 == 0xfe80);
            if route.protocol == proto::KERNEL
                || link_local
                || route.kind != RouteKind::Unicast
                || !self.cfg.owns(route)
            {
                continue;
            }
            let ours = self.programmed.contains(key);
            if !ours {
                let since = *self.unknown_since.entry(*key).or_insert(now);
                let expiry = since + ROUTE_GRACE;
                if now < expiry {
                    report.next_deadline =
                        Some(report.next_deadline.map_or(expiry, |d| d.min(expiry)));
                    continue;
                }
            }
            info!(dst = %route.dst, oif = key.1, grace_expired = !ours, "removing workload route");
            match self.netlink.del_route(route).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(source) => errors.push(EndpointError::Netlink {
                    endpoint: format!("route {}", route.dst),
                    source,
                }),
            }
            self.programmed.remove(key);
            self.unknown_since.remove(key);
        }
        self.unknown_since.retain(|k, _| present.contains_key(k));
        self.programmed.retain(|k| desired.contains_key(k));

        // Add or fix what is missing.
        let mut num_routes = 0;
        for (key, (id, mac)) in &desired {
            let want = Route::device(key.0, key.1)
                .with_protocol(self.cfg.device_route_protocol)
                .with_metric(WORKLOAD_ROUTE_METRIC);
            let ok = present.get(key).is_some_and(|r| {
                r.protocol == want.protocol
                    && r.scope == want.scope
                    && r.kind == want.kind
                    && r.metric.unwrap_or(0) == WORKLOAD_ROUTE_METRIC
            });
            if !ok {
                debug!(dst = %key.0, oif = key.1, "programming workload route");
                if let Err(source) = self.netlink.replace_route(&want).await {
                    self.failed.insert(id.clone());
                    errors.push(EndpointError::Netlink {
                        endpoint: ep_name(id),
                        source,
                    });
                    continue;
                }
                if let (Some(mac), IpNet::V4(v4)) = (mac, key.0)
                    && v4.prefix_len() == 32
                {
                    let n = Neighbour {
                        index: key.1,
                        ip: IpAddr::V4(v4.addr()),
                        mac: *mac,
                    };
                    if let Err(e) = self.netlink.replace_neighbour(&n).await {
                        warn!(endpoint = %ep_name(id), error = %e, "static ARP entry failed");
                    }
                }
            }
            self.programmed.insert(*key);
            num_routes += 1;
            for stale in other_metric.iter().filter(|r| (r.dst, key.1) == *key) {
                debug!(dst = %stale.dst, metric = ?stale.metric, "removing route at another metric");
                match self.netlink.del_route(stale).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(source) => errors.push(EndpointError::Netlink {
                        endpoint: format!("route {}", stale.dst),
                        source,
                    }),
                }
            }
        }
        report.num_routes = num_routes;
        (report, errors)
    }

    fn configure_iface(&self, ep: &WorkloadEndpoint) -> Result<(), SysctlError> {
        let iface = ep.name.as_str();
        let rp = if ep.allow_spoofed_source_prefixes.is_empty() {
            self.default_rp_filter.clone().unwrap_or_else(|| "1".into())
        } else {
            "0".to_string()
        };
        self.sysctl.set_iface_many(
            iface,
            &[
                (IfaceKey::RouteLocalnet, "1"),
                (IfaceKey::ProxyArp, "1"),
                (IfaceKey::Forwarding, "1"),
                (IfaceKey::RpFilter, &rp),
            ],
        )?;
        if let Err(e) = self.sysctl.set_iface(iface, IfaceKey::ProxyDelay, "0") {
            debug!(error = %e, "proxy_delay not set (best effort)");
        }
        // Always attempted, even without IPv6 support (as upstream).
        if let Err(e) = self.sysctl.set_iface(iface, IfaceKey::AcceptRa, "0") {
            debug!(error = %e, "accept_ra not set (IPv6 may be off)");
        }
        if self.cfg.ipv6 && !ep.ipv6_nets.is_empty() {
            self.sysctl.set_iface_many(
                iface,
                &[(IfaceKey::ProxyNdp, "1"), (IfaceKey::Ipv6Forwarding, "1")],
            )?;
        }
        info!("workload interface configured");
        Ok(())
    }

    /// Writes a status file for every endpoint whose policy is now programmed and removes the
    /// files of endpoints that are gone (and, once, stale files of an earlier run).
    pub fn write_status_files(&mut self) -> Vec<EndpointError> {
        let Some(dir) = self.cfg.status_dir.clone() else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        if let Err(source) = std::fs::create_dir_all(&dir) {
            return vec![EndpointError::StatusFile { path: dir, source }];
        }
        let wanted: BTreeMap<String, (WorkloadEndpointId, String)> = self
            .weps
            .iter()
            .map(|(id, ep)| (status_file_name(id), (id.clone(), status_file_content(ep))))
            .collect();
        if !self.swept {
            self.swept = true;
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if !wanted.contains_key(&name) && !name.starts_with('.') {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        for (name, (id, content)) in &wanted {
            let path = dir.join(name);
            // Rewritten when its content changed or someone removed it.
            if self.status_files.get(id) == Some(content) && path.exists() {
                continue;
            }
            match write_atomic(&dir, &path, content) {
                Ok(()) => {
                    self.status_files.insert(id.clone(), content.clone());
                }
                Err(source) => errors.push(EndpointError::StatusFile { path, source }),
            }
        }
        let gone: Vec<WorkloadEndpointId> = self
            .status_files
            .keys()
            .filter(|id| !self.weps.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            let path = dir.join(status_file_name(&id));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    errors.push(EndpointError::StatusFile { path, source });
                    continue;
                }
            }
            self.status_files.remove(&id);
        }
        errors
    }
}

fn write_atomic(dir: &Path, path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(
        ".tmp-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string())
    ));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// `orchestrator/workload/endpoint`, for logs.
pub fn ep_name(id: &WorkloadEndpointId) -> String {
    format!(
        "{}/{}/{}",
        id.orchestrator_id, id.workload_id, id.endpoint_id
    )
}

/// The file name of an endpoint's status file: `<orchestrator>/<workload>/<endpoint>` with
/// `%` and `/` percent-escaped, so the name is one path component.
pub fn status_file_name(id: &WorkloadEndpointId) -> String {
    ep_name(id).replace('%', "%25").replace('/', "%2F")
}

/// The JSON a status file holds.
pub fn status_file_content(ep: &WorkloadEndpoint) -> String {
    serde_json::json!({
        "ifaceName": ep.name,
        "mac": ep.mac,
        "ipv4Nets": ep.ipv4_nets,
        "ipv6Nets": ep.ipv6_nets,
        "bgpPeerName": "",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use calico_linux::fake::{FakeNetlink, FakeSysctl};

    fn wep(iface: &str, ip: &str) -> (WorkloadEndpointId, WorkloadEndpoint) {
        (
            WorkloadEndpointId {
                orchestrator_id: "k8s".into(),
                workload_id: format!("ns/{iface}"),
                endpoint_id: "eth0".into(),
            },
            WorkloadEndpoint {
                state: "active".into(),
                name: iface.into(),
                mac: "02:00:00:00:00:01".into(),
                profile_ids: vec![],
                ipv4_nets: vec![format!("{ip}/32")],
                ipv6_nets: vec![],
                tiers: vec![],
                ipv4_nat: vec![],
                ipv6_nat: vec![],
                allow_spoofed_source_prefixes: vec![],
            },
        )
    }

    fn manager(nl: &FakeNetlink, sc: &Arc<FakeSysctl>, dir: Option<PathBuf>) -> EndpointManager {
        EndpointManager::new(
            Arc::new(nl.clone()),
            Arc::clone(sc) as Arc<dyn Sysctl>,
            EndpointConfig {
                device_route_protocol: 3,
                remove_external_routes: true,
                ipv6: true,
                status_dir: dir,
                workload_prefixes: vec!["cali".into()],
                interface_exclude: vec![],
            },
        )
    }

    fn links(nl: &FakeNetlink, m: &mut EndpointManager) {
        for l in nl.state().links.values() {
            m.link_state(l.clone());
        }
    }

    #[tokio::test]
    async fn route_sysctls_and_arp_when_interface_is_up() {
        let nl = FakeNetlink::new();
        let sc = Arc::new(FakeSysctl::new());
        let dir = tempfile::tempdir().unwrap();
        let mut m = manager(&nl, &sc, Some(dir.path().join("endpoint-status")));
        let (id, ep) = wep("cali1", "10.0.0.1");
        m.upsert_endpoint(id.clone(), ep);
        // No interface yet: nothing to do.
        let (r, errs) = m.apply(Instant::now()).await;
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(r.num_routes, 0);
        let idx = nl.add_existing_link("cali1", None, 1500, true);
        // The CNI plugin's route (metric 0) is there first; Felix's replaces it.
        nl.add_route(&Route::device("10.0.0.1/32".parse().unwrap(), idx).with_protocol(3))
            .await
            .unwrap();
        links(&nl, &mut m);
        let (r, errs) = m.apply(Instant::now()).await;
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(r.num_routes, 1);
        let routes = nl.state().routes;
        let on_iface: Vec<_> = routes.iter().filter(|r| r.oif == Some(idx)).collect();
        assert_eq!(on_iface.len(), 1, "{on_iface:?}");
        let route = on_iface[0];
        assert_eq!(route.metric, Some(WORKLOAD_ROUTE_METRIC));
        assert_eq!(route.dst, "10.0.0.1/32".parse::<IpNet>().unwrap());
        assert_eq!(route.protocol, 3);
        assert_eq!(route.scope, calico_linux::RouteScope::Link);
        assert_eq!(
            sc.iface_value("cali1", IfaceKey::ProxyArp).as_deref(),
            Some("1")
        );
        assert_eq!(
            sc.iface_value("cali1", IfaceKey::RouteLocalnet).as_deref(),
            Some("1")
        );
        assert_eq!(
            sc.iface_value("cali1", IfaceKey::AcceptRa).as_deref(),
            Some("0")
        );
        assert_eq!(nl.state().neighbours.len(), 1);
        assert_eq!(m.statuses()[&id], EndpointStatus::Up);
        assert!(m.write_status_files().is_empty());
        let file = dir
            .path()
            .join("endpoint-status")
            .join("k8s%2Fns%2Fcali1%2Feth0");
        let content = std::fs::read_to_string(&file).unwrap();
        assert!(content.contains("\"ifaceName\":\"cali1\""), "{content}");
        // Removed behind our back: written again on the next pass.
        std::fs::remove_file(&file).unwrap();
        assert!(m.write_status_files().is_empty());
        assert!(file.exists());
        // Endpoint gone: route removed at once, status file removed.
        m.remove_endpoint(&id);
        let (r, errs) = m.apply(Instant::now()).await;
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(r.num_routes, 0);
        assert!(nl.state().routes.iter().all(|r| r.oif != Some(idx)));
        assert!(m.write_status_files().is_empty());
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn unknown_routes_survive_the_grace_period_only() {
        let nl = FakeNetlink::new();
        let sc = Arc::new(FakeSysctl::new());
        let mut m = manager(&nl, &sc, None);
        let idx = nl.add_existing_link("cali9", None, 1500, true);
        let foreign = Route::device("10.9.9.9/32".parse().unwrap(), idx);
        nl.replace_route(&foreign).await.unwrap();
        links(&nl, &mut m);
        let t0 = Instant::now();
        let (r, _) = m.apply(t0).await;
        assert_eq!(r.next_deadline, Some(t0 + ROUTE_GRACE));
        assert_eq!(nl.state().routes.len(), 1);
        let (_, errs) = m.apply(t0 + Duration::from_secs(5)).await;
        assert!(errs.is_empty());
        assert_eq!(nl.state().routes.len(), 1);
        m.apply(t0 + ROUTE_GRACE).await;
        assert!(nl.state().routes.is_empty());
    }

    #[tokio::test]
    async fn down_interface_gets_no_route_and_recreated_one_is_reconfigured() {
        let nl = FakeNetlink::new();
        let sc = Arc::new(FakeSysctl::new());
        let mut m = manager(&nl, &sc, None);
        let (id, ep) = wep("cali2", "10.0.0.2");
        m.upsert_endpoint(id.clone(), ep);
        let idx = nl.add_existing_link("cali2", None, 1500, false);
        links(&nl, &mut m);
        let (r, _) = m.apply(Instant::now()).await;
        assert_eq!(r.num_routes, 0);
        assert_eq!(m.statuses()[&id], EndpointStatus::Down);
        let mut up = nl.state().links[&idx].clone();
        up.admin_up = true;
        up.oper_state = calico_linux::OperState::Up;
        nl.set_link_up(idx, true).await.unwrap();
        m.link_state(up);
        let (r, _) = m.apply(Instant::now()).await;
        assert_eq!(r.num_routes, 1);
        let writes = sc.writes().len();
        m.apply(Instant::now()).await;
        assert_eq!(
            sc.writes().len(),
            writes,
            "sysctls are written once per interface"
        );
    }

    #[tokio::test]
    async fn ipv6_endpoint_gets_a_128_route_and_ndp_sysctls() {
        let nl = FakeNetlink::new();
        let sc = Arc::new(FakeSysctl::new());
        let mut m = manager(&nl, &sc, None);
        let (id, mut ep) = wep("cali6", "10.0.0.6");
        ep.ipv6_nets = vec!["fd00::6/128".into()];
        m.upsert_endpoint(id, ep);
        let idx = nl.add_existing_link("cali6", None, 1500, true);
        links(&nl, &mut m);
        let (r, errs) = m.apply(Instant::now()).await;
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(r.num_routes, 2);
        let v6: IpNet = "fd00::6/128".parse().unwrap();
        assert!(
            nl.state()
                .routes
                .iter()
                .any(|r| r.dst == v6 && r.oif == Some(idx) && r.protocol == 3)
        );
        assert_eq!(
            sc.iface_value("cali6", IfaceKey::ProxyNdp).as_deref(),
            Some("1")
        );
        assert_eq!(
            sc.iface_value("cali6", IfaceKey::Ipv6Forwarding).as_deref(),
            Some("1")
        );
        // With IPv6 support off, only the IPv4 route is programmed.
        let mut cfg = m.cfg.clone();
        cfg.ipv6 = false;
        m.set_config(cfg);
        let (r, _) = m.apply(Instant::now()).await;
        assert_eq!(r.num_routes, 1);
    }
}

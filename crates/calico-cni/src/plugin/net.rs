//! Kernel programming of one workload attachment, as upstream's CNI plugin does it on Linux:
//! a veth whose container end is `CNI_IFNAME` and whose host end is `cali…` with MAC
//! `ee:ee:ee:ee:ee:ee`, host-prefix addresses in the container, routes via `169.254.1.1`
//! (answered by proxy ARP on the host end; IPv6 via the host end's link-local address), and a
//! `<ip>/32 dev cali… scope link` route on the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use calico_linux::types::{Family, LinkInfo, MacAddr, Route, RouteFilter, RouteScope, VethSpec};
use calico_linux::{IfaceKey, NetNs, Netlink, NetlinkError, ProcSysctl, RtNetlink, Sysctl};
use ipnet::IpNet;

use super::timing;
use crate::spec::{CniError, ErrorCode};

/// The gateway every IPv4 workload routes through (never configured on any interface).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The host end's link-local address, fixed by its MAC `ee:ee:ee:ee:ee:ee`.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// First argument that makes the plugin binary the link-deleting helper of [`teardown`]
/// (`<binary> --calico-delete-link <netns path> <ifindex>`); runtimes pass no arguments.
pub const DELETE_LINK_ARG: &str = "--calico-delete-link";

/// How long [`teardown`] lets its helper work before deleting the link itself.
const DELETE_HELPER_TIMEOUT: Duration = Duration::from_secs(2);

/// What to build for one attachment.
#[derive(Debug, Clone)]
pub struct Plan {
    pub host_veth: String,
    pub ifname: String,
    pub netns_path: String,
    pub mtu: u32,
    /// Host-prefix addresses (/32, /128).
    pub addrs: Vec<IpNet>,
    pub allow_ip_forwarding: bool,
}

fn nl_err(what: String, e: NetlinkError) -> CniError {
    CniError::plugin(what, e.to_string())
}

/// Opens the container's namespace; a missing one is "container unknown" (code 3).
pub fn open_netns(path: &str) -> Result<NetNs, CniError> {
    NetNs::open(path).map_err(|e| {
        CniError::new(
            ErrorCode::UnknownContainer,
            format!("netns {path}: cannot open"),
            e.to_string(),
        )
    })
}

fn host_routes(addrs: &[IpNet]) -> impl Iterator<Item = IpNet> + '_ {
    addrs.iter().copied()
}

/// Connects netlink in the container's namespace and, on the same thread (each entry into a
/// namespace costs a thread, and on a busy node a thread hand-off costs more than the work),
/// writes the namespace-wide `forwarding` sysctls. Those are best effort, as upstream's.
fn connect_container(
    netns: &NetNs,
    forwarding: &[(&'static str, &str)],
) -> Result<RtNetlink, NetlinkError> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|e| NetlinkError::NoRuntime(e.to_string()))?;
    netns.run(|| {
        let _guard = rt.enter();
        let sysctl = ProcSysctl::new();
        for (name, value) in forwarding {
            if let Err(e) = sysctl.set(name, value) {
                tracing::debug!(error = %e, "best-effort sysctl failed");
            }
        }
        RtNetlink::connect()
    })?
}

/// Builds everything. On error the caller runs [`teardown`].
pub async fn setup(plan: &Plan) -> Result<MacAddr, CniError> {
    let netns = open_netns(&plan.netns_path)?;
    let host_ns = NetNs::process()
        .map_err(|e| CniError::plugin("cannot open the host netns", e.to_string()))?;
    let host = RtNetlink::connect().map_err(|e| nl_err("netlink (host)".into(), e))?;
    let has_v4 = plan.addrs.iter().any(|a| a.addr().is_ipv4());
    let has_v6 = plan.addrs.iter().any(|a| a.addr().is_ipv6());
    let fwd = if plan.allow_ip_forwarding { "1" } else { "0" };
    let mut forwarding = Vec::new();
    if has_v4 {
        forwarding.push(("net.ipv4.ip_forward", fwd));
    }
    if has_v6 {
        forwarding.push(("net.ipv6.conf.all.forwarding", fwd));
    }
    let cont = connect_container(&netns, &forwarding)
        .map_err(|e| nl_err(format!("netlink in {}", plan.netns_path), e))?;
    timing::mark("net.connect");

    // As upstream: a host end with this attachment's name is a leftover (a killed or repeated
    // ADD); deleting it removes its peer in the container too.
    if let Some(old) = host
        .link_by_name(&plan.host_veth)
        .await
        .map_err(|e| nl_err(format!("link {}", plan.host_veth), e))?
    {
        tracing::info!(veth = %plan.host_veth, "removing the leftover host end of an earlier ADD");
        match host.delete_link(old.index).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(nl_err(format!("link {}: delete stale", plan.host_veth), e)),
        }
    }
    // Whatever still has the requested name is not ours: the spec requires an error.
    if cont
        .link_by_name(&plan.ifname)
        .await
        .map_err(|e| nl_err(format!("link {}", plan.ifname), e))?
        .is_some()
    {
        return Err(CniError::plugin(
            format!(
                "interface {} already exists in netns {}",
                plan.ifname, plan.netns_path
            ),
            "it does not belong to this attachment; the runtime must DEL before ADDing again",
        ));
    }
    timing::mark("net.precheck");

    let mtu = (plan.mtu > 0).then_some(plan.mtu);
    cont.create_veth(&VethSpec {
        name: plan.ifname.clone(),
        peer_name: plan.host_veth.clone(),
        peer_netns: Some(host_ns),
        mtu,
        mac: None,
        peer_mac: Some(MacAddr::CALICO_HOST),
    })
    .await
    .map_err(|e| {
        nl_err(
            format!("veth {}/{}: create", plan.host_veth, plan.ifname),
            e,
        )
    })?;
    timing::mark("net.veth_create");

    let host_link = host
        .link_by_name(&plan.host_veth)
        .await
        .map_err(|e| nl_err(format!("link {}", plan.host_veth), e))?
        .ok_or_else(|| {
            CniError::plugin(
                format!("link {}: missing after creation", plan.host_veth),
                "",
            )
        })?;
    if host_link.mac != Some(MacAddr::CALICO_HOST) {
        host.set_link_mac(host_link.index, MacAddr::CALICO_HOST)
            .await
            .map_err(|e| nl_err(format!("link {}: set mac", plan.host_veth), e))?;
    }

    timing::mark("net.host_link");
    let sysctl = ProcSysctl::new();
    let set = |key: IfaceKey, v: &str, required: bool| -> Result<(), CniError> {
        match sysctl.set_iface(&plan.host_veth, key, v) {
            Ok(()) => Ok(()),
            Err(e) if required => Err(CniError::plugin(
                format!("interface {}", plan.host_veth),
                e.to_string(),
            )),
            Err(e) => {
                tracing::debug!(error = %e, "best-effort sysctl failed");
                Ok(())
            }
        }
    };
    if has_v4 {
        set(IfaceKey::RouteLocalnet, "1", true)?;
        set(IfaceKey::ProxyDelay, "0", false)?;
        set(IfaceKey::ProxyArp, "1", true)?;
        set(IfaceKey::Forwarding, "1", true)?;
    }
    if has_v6 {
        set(IfaceKey::ProxyNdp, "1", true)?;
        set(IfaceKey::Ipv6Forwarding, "1", true)?;
    }
    set(IfaceKey::AcceptRa, "0", false)?;
    timing::mark("net.host_sysctls");
    host.set_link_up(host_link.index, true)
        .await
        .map_err(|e| nl_err(format!("link {}: up", plan.host_veth), e))?;
    timing::mark("net.host_up");

    // Container side.
    let cont_link = cont
        .link_by_name(&plan.ifname)
        .await
        .map_err(|e| nl_err(format!("link {}", plan.ifname), e))?
        .ok_or_else(|| {
            CniError::plugin(format!("link {}: missing after creation", plan.ifname), "")
        })?;
    if has_v6 {
        let csys = ProcSysctl::in_netns(netns.clone());
        // Best effort: a kernel booted without IPv6 has no such keys, and ADD then fails later
        // with a clearer error when the address is added.
        let _ = csys.set_iface(&plan.ifname, IfaceKey::AcceptDad, "0");
        let _ = csys.set_iface(&plan.ifname, IfaceKey::DisableIpv6, "0");
    }
    timing::mark("net.cont_link");
    cont.set_link_up(cont_link.index, true)
        .await
        .map_err(|e| nl_err(format!("link {}: up", plan.ifname), e))?;
    timing::mark("net.cont_up");
    for a in &plan.addrs {
        cont.add_address(cont_link.index, *a)
            .await
            .map_err(|e| nl_err(format!("link {}: add address {a}", plan.ifname), e))?;
    }
    if has_v4 {
        let gw = IpNet::from(IpAddr::V4(GATEWAY_V4));
        cont.add_route(&Route::device(gw, cont_link.index))
            .await
            .map_err(|e| nl_err(format!("netns {}: route {gw}", plan.netns_path), e))?;
        let dflt: IpNet = IpNet::V4(ipnet::Ipv4Net::default());
        cont.add_route(&Route::via(
            dflt,
            IpAddr::V4(GATEWAY_V4),
            Some(cont_link.index),
        ))
        .await
        .map_err(|e| nl_err(format!("netns {}: default route", plan.netns_path), e))?;
    }
    if has_v6 {
        let dflt: IpNet = IpNet::V6(ipnet::Ipv6Net::default());
        cont.add_route(&Route::via(
            dflt,
            IpAddr::V6(GATEWAY_V6),
            Some(cont_link.index),
        ))
        .await
        .map_err(|e| nl_err(format!("netns {}: default v6 route", plan.netns_path), e))?;
    }
    timing::mark("net.cont_addr_routes");

    // Host routes; one already there on our interface is fine (Felix may have added it).
    for dst in host_routes(&plan.addrs) {
        let route = Route::device(dst, host_link.index).with_scope(RouteScope::Link);
        if let Err(e) = host.add_route(&route).await {
            if !e.is_exists() {
                return Err(nl_err(format!("route {dst} dev {}", plan.host_veth), e));
            }
            let family = if dst.addr().is_ipv4() {
                Family::V4
            } else {
                Family::V6
            };
            let existing = host
                .list_routes(&RouteFilter {
                    family,
                    ..RouteFilter::default()
                })
                .await
                .map_err(|e| nl_err("list routes".into(), e))?;
            if let Some(other) = existing
                .iter()
                .find(|r| r.dst == dst && r.oif != Some(host_link.index))
            {
                let name = match other.oif {
                    Some(i) => host
                        .link_by_index(i)
                        .await
                        .ok()
                        .flatten()
                        .map(|l| l.name)
                        .unwrap_or_else(|| format!("index {i}")),
                    None => "none".into(),
                };
                return Err(CniError::plugin(
                    format!(
                        "route ({dst}) already exists for an interface other than '{}': '{name}'",
                        plan.host_veth
                    ),
                    "another workload or process owns this address",
                ));
            }
        }
    }
    timing::mark("net.host_routes");
    Ok(cont_link.mac.unwrap_or(MacAddr([0; 6])))
}

/// Removes the attachment's interfaces. Missing netns or links are success (DEL is idempotent).
///
/// The usual case, both veth ends present, goes through [`delete_pair_via_helper`]; otherwise
/// (an ADD that stopped half-way, a namespace already gone) each end is deleted here.
pub async fn teardown(ifname: &str, netns_path: &str, host_veth: &str) -> Result<(), CniError> {
    let host = RtNetlink::connect().map_err(|e| nl_err("netlink (host)".into(), e))?;
    let host_link = host
        .link_by_name(host_veth)
        .await
        .map_err(|e| nl_err(format!("link {host_veth}"), e))?;
    let netns = if netns_path.is_empty() {
        None
    } else {
        NetNs::open(netns_path).ok()
    };
    timing::mark("net.lookup");
    if let (Some(_), Some(hl)) = (&netns, &host_link)
        && delete_pair_via_helper(&host, netns_path, ifname, hl).await?
    {
        timing::mark("net.veth_delete");
        return Ok(());
    }
    if let Some(netns) = &netns {
        let cont = RtNetlink::connect_in(netns)
            .map_err(|e| nl_err(format!("netlink in {netns_path}"), e))?;
        if let Some(l) = cont
            .link_by_name(ifname)
            .await
            .map_err(|e| nl_err(format!("link {ifname}"), e))?
        {
            delete_inline(&cont, l.index, ifname).await?;
        }
    }
    if let Some(l) = host
        .link_by_name(host_veth)
        .await
        .map_err(|e| nl_err(format!("link {host_veth}"), e))?
    {
        delete_inline(&host, l.index, host_veth).await?;
    }
    timing::mark("net.veth_delete");
    Ok(())
}

/// Deletes `ifname` in the container namespace, as upstream does, and returns true once the
/// host end `host_link` has gone with it: the kernel unregisters both ends of a veth together
/// (names, routes and all), so the attachment is gone. Returns false when the host end is
/// still there after the helper finished (the container interface was not its peer), for the
/// caller to delete the ends one by one.
///
/// Why a helper: the request that deletes a network device returns only after the kernel's
/// `netdev_run_todo` has run `rcu_barrier()` (an RCU grace period, 15-25 ms on a busy node),
/// which comes after the device is unregistered and the rtnl lock released. So a helper
/// process (this binary with [`DELETE_LINK_ARG`]) makes the request and sits out that wait,
/// while we watch the host end disappear and go on; the helper then ends on its own and holds
/// no descriptor of ours, so nobody waits for it. If it cannot start, or has not made the
/// request within [`DELETE_HELPER_TIMEOUT`], the caller's inline deletion takes over.
async fn delete_pair_via_helper(
    host: &RtNetlink,
    netns_path: &str,
    ifname: &str,
    host_link: &LinkInfo,
) -> Result<bool, CniError> {
    let spawned = std::process::Command::new("/proc/self/exe")
        .arg(DELETE_LINK_ARG)
        .arg(netns_path)
        .arg(ifname)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut helper = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::debug!(error = %e, "link delete helper did not start; deleting inline");
            return Ok(false);
        }
    };
    timing::mark("net.helper_spawn");
    let deadline = Instant::now() + DELETE_HELPER_TIMEOUT;
    loop {
        // Checked before looking: a helper that finished has made its request, so the look
        // that follows sees its outcome.
        let helper_done = !matches!(helper.try_wait(), Ok(None));
        let present = host
            .link_by_index(host_link.index)
            .await
            .map_err(|e| nl_err(format!("link {}", host_link.name), e))?;
        if present.is_none() {
            return Ok(true);
        }
        if helper_done || Instant::now() >= deadline {
            tracing::debug!(helper_done, "link delete helper did not remove the veth");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn delete_inline<N: Netlink>(nl: &N, index: u32, name: &str) -> Result<(), CniError> {
    match nl.delete_link(index).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(nl_err(format!("link {name}: delete"), e)),
    }
}

/// The helper of [`delete_pair_via_helper`]: `args` are the netns path and the interface
/// name. Exit status 0 when the interface is deleted or already gone. The process does
/// nothing else, so it enters the namespace on its only thread.
pub fn delete_link_helper(args: &[String]) -> ExitCode {
    let [path, ifname] = args else {
        return ExitCode::FAILURE;
    };
    let deleted = NetNs::open(path)
        .and_then(|netns| netns.enter_for_good())
        .map_err(NetlinkError::from)
        .and_then(|()| RtNetlink::delete_link_by_name_blocking(ifname));
    match deleted {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_not_found() => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Verifies what [`setup`] built is still there.
pub async fn check(plan: &Plan) -> Result<(), CniError> {
    let netns = open_netns(&plan.netns_path)?;
    let host = RtNetlink::connect().map_err(|e| nl_err("netlink (host)".into(), e))?;
    let cont = RtNetlink::connect_in(&netns)
        .map_err(|e| nl_err(format!("netlink in {}", plan.netns_path), e))?;
    let fail = |what: String| CniError::plugin(what, "");
    let cl = cont
        .link_by_name(&plan.ifname)
        .await
        .map_err(|e| nl_err(format!("link {}", plan.ifname), e))?
        .ok_or_else(|| {
            fail(format!(
                "interface {} missing in netns {}",
                plan.ifname, plan.netns_path
            ))
        })?;
    let addrs = cont
        .list_addresses(Some(cl.index))
        .await
        .map_err(|e| nl_err("list addresses".into(), e))?;
    for a in &plan.addrs {
        if !addrs.iter().any(|x| x.addr == *a) {
            return Err(fail(format!(
                "interface {}: address {a} missing",
                plan.ifname
            )));
        }
    }
    if plan.addrs.iter().any(|a| a.addr().is_ipv4()) {
        let routes = cont
            .list_routes(&RouteFilter {
                family: Family::V4,
                ..RouteFilter::default()
            })
            .await
            .map_err(|e| nl_err("list routes".into(), e))?;
        let has_default = routes
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(IpAddr::V4(GATEWAY_V4)));
        if !has_default {
            return Err(fail(format!(
                "netns {}: default route via {GATEWAY_V4} missing",
                plan.netns_path
            )));
        }
    }
    let hl = host
        .link_by_name(&plan.host_veth)
        .await
        .map_err(|e| nl_err(format!("link {}", plan.host_veth), e))?
        .ok_or_else(|| fail(format!("host interface {} missing", plan.host_veth)))?;
    if hl.mac != Some(MacAddr::CALICO_HOST) {
        return Err(fail(format!(
            "host interface {}: mac is not {}",
            plan.host_veth,
            MacAddr::CALICO_HOST
        )));
    }
    for dst in host_routes(&plan.addrs) {
        let family = if dst.addr().is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let routes = host
            .list_routes(&RouteFilter {
                family,
                oif: Some(hl.index),
                ..RouteFilter::default()
            })
            .await
            .map_err(|e| nl_err("list routes".into(), e))?;
        if !routes.iter().any(|r| r.dst == dst) {
            return Err(fail(format!(
                "host route {dst} dev {} missing",
                plan.host_veth
            )));
        }
    }
    Ok(())
}

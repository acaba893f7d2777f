//! The `calico-ipam` plugin: addresses from Calico's block/affinity IPAM, recorded under the
//! handle `<network name>.<container ID>`. The `calico` plugin calls [`add`] and [`del`]
//! in-process when its `ipam.type` is `calico-ipam`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use calico_ipam::{
    AllowedUse, AssignIpArgs, AutoAssignArgs, IpVersion, IpamClient, IpamError, PoolConfig,
    PoolFilter, attrs,
};
use calico_model::KindInfo;
use calico_model::selector;
use calico_model::selector::Labels;
use ipnet::IpNet;

use super::context::Context;
use crate::spec::{CniError, CniResult, Command, ErrorCode, IpConfig, NetConf, Request, Route};

/// The IPAM handle of an attachment, as upstream names it.
pub fn handle_id(conf: &NetConf, container_id: &str) -> String {
    format!("{}.{}", conf.name, container_id)
}

pub async fn run(
    req: &Request,
    conf: &NetConf,
    env: &BTreeMap<String, String>,
) -> Result<Option<serde_json::Value>, CniError> {
    let ctx = Context::new(conf, env).await?;
    match req.command {
        Command::Add => {
            ctx.check_ready().await?;
            let result = add(&ctx, req, conf).await?;
            Ok(Some(result.to_json(conf.version())))
        }
        Command::Del => {
            ctx.check_ready().await?;
            del(&ctx, req, conf).await?;
            Ok(None)
        }
        Command::Check => {
            check(&ctx, req, conf).await?;
            Ok(None)
        }
        Command::Gc => {
            gc(&ctx, conf).await?;
            Ok(None)
        }
        Command::Status => {
            status(&ctx).await?;
            Ok(None)
        }
        Command::Version => unreachable_version(),
    }
}

fn unreachable_version() -> Result<Option<serde_json::Value>, CniError> {
    Err(CniError::plugin(
        "internal error",
        "VERSION is answered before dispatch",
    ))
}

fn ipam_error(msg: &str, e: IpamError) -> CniError {
    let code = match e {
        IpamError::Kv(ref kv) if kv.is_transient() => ErrorCode::TryAgainLater,
        IpamError::MaxRetries { .. } => ErrorCode::TryAgainLater,
        _ => ErrorCode::Plugin,
    };
    CniError::new(code, msg, e.to_string())
}

/// The node's labels, for pools' nodeSelectors (none when the Node resource does not exist).
async fn node_labels(ctx: &Context) -> BTreeMap<String, String> {
    let Some(kind) = KindInfo::lookup("Node") else {
        return BTreeMap::new();
    };
    match ctx.client.get(kind, "", &ctx.node).await {
        Ok(node) => node.metadata().labels.clone(),
        Err(_) => BTreeMap::new(),
    }
}

/// Resolves `ipv4_pools` / `ipv6_pools` entries (pool names or CIDRs) to pool CIDRs.
fn resolve_pools(
    entries: &[String],
    pools: &[PoolConfig],
    field: &str,
) -> Result<Vec<IpNet>, CniError> {
    let mut out = Vec::new();
    for e in entries {
        if let Some(p) = pools.iter().find(|p| &p.name == e) {
            out.push(p.cidr);
            continue;
        }
        match e.parse::<IpNet>() {
            Ok(cidr) if pools.iter().any(|p| p.cidr == cidr.trunc()) => out.push(cidr.trunc()),
            _ => {
                return Err(CniError::new(
                    ErrorCode::InvalidConfig,
                    format!("ipam.{field}: the given pool {e:?} does not exist"),
                    "name an existing IPPool or its CIDR",
                ));
            }
        }
    }
    Ok(out)
}

fn attributes(ctx: &Context, req: &Request) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(attrs::NODE.to_string(), ctx.node.clone());
    if req.args.is_k8s() {
        a.insert(
            attrs::NAMESPACE.to_string(),
            req.args.k8s_pod_namespace.clone(),
        );
        a.insert(attrs::POD.to_string(), req.args.k8s_pod_name.clone());
    }
    let now = time::OffsetDateTime::now_utc();
    if let Ok(ts) = now.format(&time::format_description::well_known::Rfc3339) {
        a.insert(attrs::TIMESTAMP.to_string(), ts);
    }
    a
}

/// Assigns the request's addresses. On a partial assignment everything assigned is released
/// and the error says how many of how many were found.
pub async fn add(ctx: &Context, req: &Request, conf: &NetConf) -> Result<CniResult, CniError> {
    let ipam = IpamClient::new(ctx.kv.clone());
    let pools = ipam
        .load_pools_from_store()
        .await
        .map_err(|e| ipam_error("failed to read IP pools", e))?;
    let handle = handle_id(conf, &req.container_id);
    let attrs = attributes(ctx, req);
    let mut result = CniResult::default();

    if !req.args.ip.is_empty() {
        let ip: IpAddr = req.args.ip.parse().map_err(|_| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("invalid IP {:?} in CNI_ARGS", req.args.ip),
                "expected an IPv4 or IPv6 address",
            )
        })?;
        ipam.assign_ip(AssignIpArgs {
            ip: Some(ip),
            handle_id: Some(handle.clone()),
            attrs,
            hostname: ctx.node.clone(),
            intended_use: Some(AllowedUse::Workload),
        })
        .await
        .map_err(|e| ipam_error(&format!("failed to assign requested IP {ip}"), e))?;
        let address = IpNet::from(ip);
        result.ips.push(IpConfig {
            address,
            gateway: None,
            interface: None,
        });
        result.routes.push(Route {
            dst: address,
            gw: None,
        });
        return Ok(result);
    }

    let num4 = usize::from(conf.assign_ipv4());
    let num6 = usize::from(conf.assign_ipv6());
    if num4 + num6 == 0 {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "ipam: assign_ipv4 and assign_ipv6 are both false",
            "request at least one address family",
        ));
    }
    let ipv4_pools = resolve_pools(&conf.ipam.ipv4_pools, &pools, "ipv4_pools")?;
    let ipv6_pools = resolve_pools(&conf.ipam.ipv6_pools, &pools, "ipv6_pools")?;
    let labels = node_labels(ctx).await;
    let filter: PoolFilter = Arc::new(move |p: &PoolConfig| {
        let sel = if p.node_selector.trim().is_empty() {
            "all()"
        } else {
            p.node_selector.as_str()
        };
        selector::parse(sel).is_ok_and(|s| s.evaluate(&labels as &dyn Labels))
    });
    let out = ipam
        .auto_assign(AutoAssignArgs {
            num4,
            num6,
            handle_id: Some(handle.clone()),
            attrs,
            hostname: ctx.node.clone(),
            ipv4_pools,
            ipv6_pools,
            intended_use: AllowedUse::Workload,
            pool_filter: Some(filter),
            ..AutoAssignArgs::default()
        })
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = ipam.release_by_handle(&handle).await;
            return Err(ipam_error("failed to assign addresses", e));
        }
    };
    let short = out
        .v4
        .partial_fulfillment_error(IpVersion::V4)
        .or_else(|| out.v6.partial_fulfillment_error(IpVersion::V6));
    if let Some(why) = short {
        let _ = ipam.release_by_handle(&handle).await;
        let (n, fam, got) = if out.v4.ips.len() < num4 {
            (num4, "IPv4", out.v4.ips.len())
        } else {
            (num6, "IPv6", out.v6.ips.len())
        };
        return Err(CniError::plugin(
            format!("failed to request {n} {fam} addresses. IPAM allocated only {got}"),
            why,
        ));
    }
    for a in out.v4.ips.iter().chain(out.v6.ips.iter()) {
        result.ips.push(IpConfig {
            address: a.ip,
            gateway: None,
            interface: None,
        });
        result.routes.push(Route {
            dst: a.ip,
            gw: None,
        });
    }
    Ok(result)
}

/// Releases the attachment's addresses. Releasing nothing is success (DEL is idempotent).
pub async fn del(ctx: &Context, req: &Request, conf: &NetConf) -> Result<(), CniError> {
    let ipam = IpamClient::new(ctx.kv.clone());
    let handle = handle_id(conf, &req.container_id);
    match ipam.release_by_handle(&handle).await {
        Ok(ips) => {
            tracing::info!(%handle, released = ips.len(), "released addresses");
            Ok(())
        }
        Err(IpamError::HandleNotFound(_)) => Ok(()),
        Err(e) => Err(ipam_error(
            &format!("failed to release addresses of handle {handle}"),
            e,
        )),
    }
}

/// The handle must still own exactly the addresses of the previous result.
pub async fn check(ctx: &Context, req: &Request, conf: &NetConf) -> Result<(), CniError> {
    let ipam = IpamClient::new(ctx.kv.clone());
    let handle = handle_id(conf, &req.container_id);
    let have: BTreeSet<IpAddr> = ipam
        .ips_by_handle(&handle)
        .await
        .map_err(|e| ipam_error(&format!("handle {handle}"), e))?
        .into_iter()
        .collect();
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            "CHECK needs prevResult",
            "the runtime must pass the ADD result",
        ));
    };
    let prev = CniResult::from_json(prev)?;
    let want: BTreeSet<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
    if have != want {
        return Err(CniError::plugin(
            format!("handle {handle}: addresses differ from prevResult"),
            format!("allocated {have:?}, expected {want:?}"),
        ));
    }
    Ok(())
}

/// Releases every handle of this network whose attachment is not in `cni.dev/attachments`.
pub async fn gc(ctx: &Context, conf: &NetConf) -> Result<(), CniError> {
    let valid: BTreeSet<String> = conf
        .other
        .get("cni.dev/attachments")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("containerID").and_then(|c| c.as_str()))
        .map(|c| handle_id(conf, c))
        .collect();
    let ipam = IpamClient::new(ctx.kv.clone());
    let snap = ipam
        .snapshot()
        .await
        .map_err(|e| ipam_error("failed to read IPAM state", e))?;
    let prefix = format!("{}.", conf.name);
    let mut errors = Vec::new();
    for handle in snap
        .handles
        .keys()
        .filter(|h| h.starts_with(&prefix) && !valid.contains(*h))
    {
        match ipam.release_by_handle(handle).await {
            Ok(_) | Err(IpamError::HandleNotFound(_)) => {}
            Err(e) => errors.push(format!("{handle}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::plugin(
            "garbage collection left handles behind",
            errors.join("; "),
        ))
    }
}

/// Ready when the datastore answers and is not gated.
pub async fn status(ctx: &Context) -> Result<(), CniError> {
    ctx.check_ready()
        .await
        .map_err(|e| CniError::new(ErrorCode::NotAvailable, e.msg, e.details))?;
    ctx.kv.current_revision().await.map(|_| ()).map_err(|e| {
        CniError::new(
            ErrorCode::NotAvailable,
            "datastore not reachable",
            e.to_string(),
        )
    })
}

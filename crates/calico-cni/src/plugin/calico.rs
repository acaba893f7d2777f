//! The `calico` plugin: addresses from IPAM (in-process for `calico-ipam`, otherwise the
//! delegated plugin from `CNI_PATH`), the veth and routes, and the WorkloadEndpoint Felix
//! programs. Everything ADD did is undone when a later step fails.

use std::collections::BTreeMap;
use std::path::Path;

use calico_model::resources::WorkloadEndpointSpec;
use calico_model::{AnyResource, KindInfo, Resource};
use ipnet::IpNet;

use super::context::Context;
use super::{ipam, net, timing};
use crate::naming::{host_veth_name, wep_name};
use crate::spec::{
    CniError, CniResult, Command, ErrorCode, Interface, IpConfig, NetConf, Request, Route,
};

/// Where calico-node writes the MTU it computed for workloads.
const MTU_FILE: &str = "/var/lib/calico/mtu";

/// The attachment's identity, as upstream derives it.
struct Identity {
    orchestrator: &'static str,
    namespace: String,
    wep_name: String,
    host_veth: String,
}

fn identity(ctx: &Context, req: &Request, env: &BTreeMap<String, String>) -> Identity {
    let prefix = env
        .get("FELIX_INTERFACEPREFIX")
        .and_then(|p| p.split(',').next())
        .filter(|p| !p.is_empty())
        .unwrap_or("cali")
        .to_string();
    if req.args.is_k8s() {
        let (ns, pod) = (&req.args.k8s_pod_namespace, &req.args.k8s_pod_name);
        Identity {
            orchestrator: "k8s",
            namespace: ns.clone(),
            wep_name: wep_name(&ctx.node, "k8s", pod, &req.ifname),
            host_veth: host_veth_name(&prefix, Some((ns, pod)), &req.container_id),
        }
    } else {
        Identity {
            orchestrator: "cni",
            namespace: "default".into(),
            wep_name: wep_name(&ctx.node, "cni", &req.container_id, &req.ifname),
            host_veth: host_veth_name(&prefix, None, &req.container_id),
        }
    }
}

pub async fn run(
    req: &Request,
    conf: &NetConf,
    env: &BTreeMap<String, String>,
) -> Result<Option<serde_json::Value>, CniError> {
    let ctx = Context::new(conf, env).await?;
    let id = identity(&ctx, req, env);
    let span = tracing::info_span!("endpoint", name = %id.wep_name);
    let _e = span.enter();
    match req.command {
        Command::Add => {
            ctx.check_ready().await?;
            timing::mark("ready_check");
            Ok(Some(
                add(&ctx, req, conf, env, &id)
                    .await?
                    .to_json(conf.version()),
            ))
        }
        Command::Del => {
            ctx.check_ready().await?;
            timing::mark("ready_check");
            del(&ctx, req, conf, env, &id).await.map(|()| None)
        }
        Command::Check => check(&ctx, req, conf, env, &id).await.map(|()| None),
        Command::Gc => {
            if conf.ipam.ipam_type == "calico-ipam" {
                ipam::gc(&ctx, conf).await?;
            }
            Ok(None)
        }
        Command::Status => ipam::status(&ctx).await.map(|()| None),
        Command::Version => Err(CniError::plugin(
            "internal error",
            "VERSION is answered before dispatch",
        )),
    }
}

fn mtu(conf: &NetConf) -> Result<u32, CniError> {
    if conf.mtu > 0 {
        return Ok(conf.mtu);
    }
    match std::fs::read_to_string(MTU_FILE) {
        Ok(s) => s.trim().parse().map_err(|_| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("{MTU_FILE}: invalid MTU {:?}", s.trim()),
                "",
            )
        }),
        Err(_) if conf.require_mtu_file => Err(CniError::new(
            ErrorCode::InvalidConfig,
            format!("{MTU_FILE} is missing and require_mtu_file is set"),
            "calico-node writes it once it has computed the MTU",
        )),
        Err(_) => Ok(0),
    }
}

/// Runs the delegated IPAM plugin (`ipam.type` from `CNI_PATH`) with the same request.
async fn delegate(
    req: &Request,
    conf: &NetConf,
    env: &BTreeMap<String, String>,
    command: &str,
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    let ty = &conf.ipam.ipam_type;
    if ty.is_empty() || ty.contains('/') {
        return Err(CniError::new(
            ErrorCode::InvalidConfig,
            format!("invalid ipam.type {ty:?}"),
            "name an IPAM plugin",
        ));
    }
    let bin = req
        .path
        .split(':')
        .map(|d| Path::new(d).join(ty))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("ipam plugin {ty:?} not found in CNI_PATH"),
                req.path.clone(),
            )
        })?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.env_clear().envs(env).env("CNI_COMMAND", command);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = cmd.spawn().map_err(|e| {
        CniError::plugin(
            format!("ipam plugin {}: cannot run", bin.display()),
            e.to_string(),
        )
    })?;
    if let Some(mut sin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        sin.write_all(stdin)
            .await
            .map_err(|e| CniError::new(ErrorCode::Io, "ipam plugin: write stdin", e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| CniError::plugin("ipam plugin: wait", e.to_string()))?;
    if !out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        return Err(CniError::plugin(
            format!("ipam plugin {ty} failed"),
            v.get("msg")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stdout).into_owned()),
        ));
    }
    if command != "ADD" {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            format!("ipam plugin {ty}: bad result"),
            e.to_string(),
        )
    })?;
    Ok(Some(CniResult::from_json(&v)?))
}

async fn ipam_add(
    ctx: &Context,
    req: &Request,
    conf: &NetConf,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
) -> Result<CniResult, CniError> {
    if conf.ipam.ipam_type == "calico-ipam" {
        ipam::add(ctx, req, conf).await
    } else {
        delegate(req, conf, env, "ADD", stdin)
            .await?
            .ok_or_else(|| CniError::plugin("ipam plugin returned no result", ""))
    }
}

async fn ipam_del(
    ctx: &Context,
    req: &Request,
    conf: &NetConf,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
) -> Result<(), CniError> {
    if conf.ipam.ipam_type == "calico-ipam" {
        ipam::del(ctx, req, conf).await
    } else {
        delegate(req, conf, env, "DEL", stdin).await.map(|_| ())
    }
}

fn host_prefix(a: IpNet) -> IpNet {
    IpNet::from(a.addr())
}

/// For a non-Kubernetes network without policy configuration, upstream creates (never updates)
/// a Profile named after the network: egress allow-all, ingress from members of the network.
async fn ensure_network_profile(ctx: &Context, conf: &NetConf) -> Result<(), CniError> {
    let Some(kind) = KindInfo::lookup("Profile") else {
        return Ok(());
    };
    if ctx.client.get(kind, "", &conf.name).await.is_ok() {
        return Ok(());
    }
    let v = serde_json::json!({
        "apiVersion": calico_model::API_VERSION,
        "kind": "Profile",
        "metadata": {"name": conf.name},
        "spec": {
            "ingress": [{"action": "Allow", "source": {"selector": format!("has({})", conf.name)}}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {conf.name.clone(): ""},
        }
    });
    let profile = AnyResource::from_value(v)
        .map_err(|e| CniError::plugin(format!("profile {}", conf.name), e.to_string()))?;
    match ctx.client.create(profile).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(CniError::plugin(
            format!("profile {}: create", conf.name),
            e.to_string(),
        )),
    }
}

fn build_wep(
    ctx: &Context,
    req: &Request,
    conf: &NetConf,
    id: &Identity,
    addrs: &[IpNet],
    mac: &str,
) -> Resource<WorkloadEndpointSpec> {
    let k8s = req.args.is_k8s();
    let mut spec = WorkloadEndpointSpec {
        orchestrator: id.orchestrator.to_string(),
        node: ctx.node.clone(),
        container_id: req.container_id.clone(),
        endpoint: req.ifname.clone(),
        ip_networks: addrs.iter().map(|a| a.to_string()).collect(),
        interface_name: id.host_veth.clone(),
        mac: mac.to_string(),
        ..WorkloadEndpointSpec::default()
    };
    if k8s {
        spec.pod = req.args.k8s_pod_name.clone();
        spec.profiles = vec![format!("kns.{}", id.namespace)];
    } else {
        spec.workload = req.container_id.clone();
        spec.profiles = vec![conf.name.clone()];
    }
    let mut wep = Resource::new(&id.namespace, &id.wep_name, spec);
    wep.metadata
        .labels
        .insert("projectcalico.org/namespace".into(), id.namespace.clone());
    wep.metadata.labels.insert(
        "projectcalico.org/orchestrator".into(),
        id.orchestrator.into(),
    );
    wep
}

async fn add(
    ctx: &Context,
    req: &Request,
    conf: &NetConf,
    env: &BTreeMap<String, String>,
    id: &Identity,
) -> Result<CniResult, CniError> {
    let stdin = serde_json::to_vec(&conf_json(conf)).unwrap_or_default();
    let mtu = mtu(conf)?;
    // The netns must exist before anything is allocated.
    net::open_netns(&req.netns)?;
    timing::mark("netns_open");
    let ipam_result = ipam_add(ctx, req, conf, env, &stdin).await?;
    timing::mark("ipam");
    let addrs: Vec<IpNet> = ipam_result
        .ips
        .iter()
        .map(|i| host_prefix(i.address))
        .collect();
    if addrs.is_empty() {
        let _ = ipam_del(ctx, req, conf, env, &stdin).await;
        return Err(CniError::plugin(
            "IPAM returned no addresses",
            format!("ipam type {}", conf.ipam.ipam_type),
        ));
    }
    let plan = net::Plan {
        host_veth: id.host_veth.clone(),
        ifname: req.ifname.clone(),
        netns_path: req.netns.clone(),
        mtu,
        addrs: addrs.clone(),
        allow_ip_forwarding: conf.container_settings.allow_ip_forwarding,
    };
    let rollback = |stage: &'static str, err: CniError| async move {
        tracing::warn!(stage, error = %err, "ADD failed; rolling back");
        if let Err(e) = net::teardown(&req.ifname, &req.netns, &id.host_veth).await {
            tracing::warn!(error = %e, "rollback: interface cleanup failed");
        }
        if let Err(e) = ipam_del(ctx, req, conf, env, &stdin).await {
            tracing::warn!(error = %e, "rollback: address release failed");
        }
        err
    };
    let mac = match net::setup(&plan).await {
        Ok(m) => m,
        Err(e) => return Err(rollback("network", e).await),
    };
    timing::mark("net");
    if !req.args.is_k8s()
        && conf.policy.policy_type.is_empty()
        && let Err(e) = ensure_network_profile(ctx, conf).await
    {
        return Err(rollback("profile", e).await);
    }
    timing::mark("profile");
    let wep = build_wep(ctx, req, conf, id, &addrs, &mac.to_string());
    let wep = match super::k8s::apply_stored_pod(ctx, req, wep).await {
        Ok(w) => w,
        Err(e) => return Err(rollback("pod", e).await),
    };
    if let Err(e) = ctx.client.apply(AnyResource::from(wep)).await {
        let err = CniError::plugin(
            format!("WorkloadEndpoint {}: write", id.wep_name),
            e.to_string(),
        );
        return Err(rollback("endpoint", err).await);
    }
    timing::mark("wep");
    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: id.host_veth.clone(),
                ..Interface::default()
            },
            Interface {
                name: req.ifname.clone(),
                mac: mac.to_string(),
                mtu: (mtu > 0).then_some(mtu),
                sandbox: req.netns.clone(),
            },
        ],
        ips: addrs
            .iter()
            .map(|a| IpConfig {
                address: *a,
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        routes: Vec::new(),
        dns: ipam_result.dns,
    };
    if addrs.iter().any(|a| a.addr().is_ipv4()) {
        result.routes.push(Route {
            dst: IpNet::V4(ipnet::Ipv4Net::default()),
            gw: Some(net::GATEWAY_V4.into()),
        });
    }
    if addrs.iter().any(|a| a.addr().is_ipv6()) {
        result.routes.push(Route {
            dst: IpNet::V6(ipnet::Ipv6Net::default()),
            gw: Some(net::GATEWAY_V6.into()),
        });
    }
    tracing::info!(ips = ?addrs, veth = %id.host_veth, "workload networked");
    Ok(result)
}

/// The configuration as the delegated IPAM plugin should see it.
fn conf_json(conf: &NetConf) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    v.insert("cniVersion".into(), conf.cni_version.clone().into());
    v.insert("name".into(), conf.name.clone().into());
    v.insert("type".into(), conf.plugin_type.clone().into());
    let mut ipam = serde_json::Map::new();
    ipam.insert("type".into(), conf.ipam.ipam_type.clone().into());
    for (k, val) in &conf.ipam.other {
        ipam.insert(k.clone(), val.clone());
    }
    if !conf.ipam.subnet.is_empty() {
        ipam.insert("subnet".into(), conf.ipam.subnet.clone().into());
    }
    v.insert("ipam".into(), serde_json::Value::Object(ipam));
    serde_json::Value::Object(v)
}

async fn del(
    ctx: &Context,
    req: &Request,
    conf: &NetConf,
    env: &BTreeMap<String, String>,
    id: &Identity,
) -> Result<(), CniError> {
    let stdin = serde_json::to_vec(&conf_json(conf)).unwrap_or_default();
    let kind = KindInfo::lookup("WorkloadEndpoint")
        .ok_or_else(|| CniError::plugin("internal error", "no WorkloadEndpoint kind"))?;
    // A datastore error other than not-found aborts without touching anything (no false
    // deletes); a WEP owned by another container (a stale sandbox's DEL) is kept.
    match ctx.client.get(kind, &id.namespace, &id.wep_name).await {
        Ok(existing) => {
            let owner: Option<Resource<WorkloadEndpointSpec>> = existing.clone().try_into().ok();
            let other_owner = owner.as_ref().is_some_and(|w| {
                !w.spec.container_id.is_empty() && w.spec.container_id != req.container_id
            });
            if other_owner {
                tracing::info!("endpoint belongs to another container; keeping it");
            } else {
                let rv = existing.metadata().resource_version.clone();
                match ctx
                    .client
                    .delete(kind, &id.namespace, &id.wep_name, Some(rv.as_str()))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        return Err(CniError::new(
                            ErrorCode::TryAgainLater,
                            format!("WorkloadEndpoint {}: delete", id.wep_name),
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            return Err(CniError::new(
                ErrorCode::TryAgainLater,
                format!("WorkloadEndpoint {}: read", id.wep_name),
                e.to_string(),
            ));
        }
    }
    timing::mark("wep");
    net::teardown(&req.ifname, &req.netns, &id.host_veth).await?;
    timing::mark("net");
    ipam_del(ctx, req, conf, env, &stdin).await?;
    timing::mark("ipam");
    Ok(())
}

async fn check(
    ctx: &Context,
    req: &Request,
    conf: &NetConf,
    _env: &BTreeMap<String, String>,
    id: &Identity,
) -> Result<(), CniError> {
    let kind = KindInfo::lookup("WorkloadEndpoint")
        .ok_or_else(|| CniError::plugin("internal error", "no WorkloadEndpoint kind"))?;
    let wep: Resource<WorkloadEndpointSpec> = ctx
        .client
        .get(kind, &id.namespace, &id.wep_name)
        .await
        .map_err(|e| CniError::plugin(format!("WorkloadEndpoint {}", id.wep_name), e.to_string()))?
        .try_into()
        .map_err(|_| CniError::plugin("internal error", "unexpected kind"))?;
    let addrs: Vec<IpNet> = wep
        .spec
        .ip_networks
        .iter()
        .map(|s| {
            s.parse::<IpNet>().map_err(|_| {
                CniError::plugin(
                    format!(
                        "WorkloadEndpoint {}: bad ipNetworks entry {s:?}",
                        id.wep_name
                    ),
                    "",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    if let Some(prev) = &conf.prev_result {
        let prev = CniResult::from_json(prev)?;
        for ip in &prev.ips {
            if !addrs.contains(&host_prefix(ip.address)) {
                return Err(CniError::plugin(
                    format!(
                        "address {} of prevResult is not on the endpoint",
                        ip.address
                    ),
                    "",
                ));
            }
        }
    }
    net::check(&net::Plan {
        host_veth: id.host_veth.clone(),
        ifname: req.ifname.clone(),
        netns_path: req.netns.clone(),
        mtu: 0,
        addrs,
        allow_ip_forwarding: false,
    })
    .await?;
    if conf.ipam.ipam_type == "calico-ipam" {
        ipam::check(ctx, req, conf).await?;
    }
    Ok(())
}

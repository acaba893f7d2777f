//! The whole agent: startup, then supervision until SIGTERM/SIGINT.
//!
//! Felix: `calico-felix` (next to this executable, else on PATH; `CALICO_FELIX_BINARY`
//! overrides) runs as a child and programs routes itself. When `CALICO_DISABLE_FELIX=true`,
//! calico-node runs the `felix-routes` route programming in-process instead, so VXLAN and
//! local blackholes work without a Felix (the lab tests use this).

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use calico_datastore::KvStore;
use calico_datastore::client::Client;
use calico_datastore::config::DatastoreConfig;
use calico_linux::{Netlink, RtNetlink};
use ipnet::IpNet;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::bird::{BirdPaths, render_loop, render_once};
use crate::config::{
    AutodetectMethod, Backend, Iface, IpSetting, NodeEnv, autodetect_v4, resolve_node_name,
    with_local_prefix,
};
use crate::startup;
use crate::supervise::{ChildSpec, ChildStatus, sibling_or_path, supervise};

/// Interfaces and their addresses in this namespace.
async fn list_ifaces() -> Result<Vec<Iface>> {
    let nl = RtNetlink::connect().context("netlink")?;
    let links = nl.list_links().await.context("list links")?;
    let addrs = nl.list_addresses(None).await.context("list addresses")?;
    Ok(links
        .into_iter()
        .map(|l| Iface {
            addrs: addrs
                .iter()
                .filter(|a| a.index == l.index)
                .map(|a| a.addr)
                .collect(),
            name: l.name,
        })
        .collect())
}

/// `can-reach=`: the source address the kernel picks towards the destination.
fn can_reach(dest: &str, ifaces: &[Iface]) -> Result<Option<IpNet>> {
    let target = format!("{dest}:80");
    let sock = UdpSocket::bind("0.0.0.0:0").context("can-reach: bind")?;
    sock.connect(&target)
        .with_context(|| format!("can-reach: no route to {dest}"))?;
    let local = sock.local_addr().context("can-reach: local address")?.ip();
    Ok(with_local_prefix(local, ifaces))
}

/// The node's IPv4 address per `IP` / `IP_AUTODETECTION_METHOD` (reference §3.2).
pub async fn determine_ip(env: &NodeEnv, existing: Option<&str>) -> Result<Option<IpNet>> {
    let autodetect = match &env.ip {
        IpSetting::None => return Ok(None),
        IpSetting::Explicit(ip, Some(len)) => {
            return Ok(Some(IpNet::new(*ip, *len).context("IP: bad prefix")?));
        }
        IpSetting::Explicit(ip, None) => {
            let ifaces = list_ifaces().await?;
            return Ok(Some(
                with_local_prefix(*ip, &ifaces).unwrap_or_else(|| IpNet::from(*ip)),
            ));
        }
        IpSetting::Unset => existing.is_none_or(str::is_empty),
        IpSetting::Autodetect => true,
    };
    if !autodetect {
        return Ok(None);
    }
    let ifaces = list_ifaces().await?;
    let found = match &env.method {
        AutodetectMethod::CanReach(dest) => can_reach(dest, &ifaces)?,
        m => autodetect_v4(m, &ifaces),
    };
    match found {
        Some(ip) => {
            tracing::info!(%ip, method = ?env.method, "autodetected IPv4 address");
            Ok(Some(ip))
        }
        None => bail!(
            "Couldn't autodetect an IPv4 address. If auto-detecting, choose a different autodetection method. Otherwise provide an explicit address."
        ),
    }
}

fn os_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run() -> Result<()> {
    let envmap: BTreeMap<String, String> = std::env::vars().collect();
    let env = NodeEnv::from_env(&envmap)?;
    let run_dir_set = envmap.contains_key("CALICO_RUN_DIR");
    let file_name = std::fs::read_to_string(&env.nodename_file).ok();
    let node = resolve_node_name(
        env.nodename.as_deref(),
        file_name.as_deref(),
        envmap.get("HOSTNAME").map(String::as_str),
        &os_hostname(),
    );
    std::fs::create_dir_all(&env.run_dir)
        .with_context(|| format!("create {}", env.run_dir.display()))?;

    let ds = DatastoreConfig::from_env(&envmap).context("datastore configuration")?;
    let kv: Arc<dyn KvStore> = calico_datastore::config::connect(&ds)
        .await
        .context("connect to the datastore")?;
    let client = Client::new(kv.clone());
    let _ = client.ensure_initialized().await;

    // Node, pools, defaults, tunnel address.
    let existing = startup::get_node(&client, &node).await?;
    let existing_ip = existing
        .as_ref()
        .and_then(|n| n.spec.bgp.as_ref())
        .map(|b| b.ipv4_address.clone());
    let ip = determine_ip(&env, existing_ip.as_deref()).await?;
    startup::ensure_node(&client, &node, ip, &env).await?;
    startup::ensure_default_pool(&client, &env).await?;
    startup::ensure_defaults(&client, &env).await?;
    if env.backend != Backend::None {
        startup::ensure_vxlan_tunnel(&kv, &client, &node).await?;
    }
    if env.backend == Backend::Bird {
        startup::ensure_tunnel(&kv, &client, &node, startup::Tunnel::Ipip).await?;
    }
    std::fs::write(env.run_dir.join("nodename"), &node).context("write nodename file")?;
    if !run_dir_set || envmap.contains_key("CALICO_NODENAME_FILE") {
        if let Some(dir) = env.nodename_file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&env.nodename_file, &node)
            .with_context(|| format!("write {}", env.nodename_file.display()))?;
    }
    tracing::info!(node = %node, "startup complete");

    // Supervision.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();

    // Tunnel addresses follow later pool changes too (upstream's continuous
    // allocate-tunnel-addrs).
    if env.backend != Backend::None {
        let tunnels = if env.backend == Backend::Bird {
            vec![startup::Tunnel::Vxlan, startup::Tunnel::Ipip]
        } else {
            vec![startup::Tunnel::Vxlan]
        };
        let (kv2, client2, node2, rx) = (kv.clone(), client.clone(), node.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(tunnel_allocator(
            kv2, client2, node2, tunnels, rx,
        )));
    }

    if env.disable_felix {
        let mtu_file = if run_dir_set {
            env.run_dir.join("mtu")
        } else {
            felix_routes::mtu::DEFAULT_MTU_FILE.into()
        };
        let cfg = felix_routes::RoutesConfig {
            mtu_file: Some(mtu_file),
            ..Default::default()
        };
        let sync = felix_routes::RouteSync::new(kv.clone(), node.clone(), cfg);
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = sync.run(rx).await {
                tracing::error!(error = %e, "in-process route programming stopped");
            }
        }));
    } else {
        let program = envmap
            .get("CALICO_FELIX_BINARY")
            .map(Into::into)
            .unwrap_or_else(|| sibling_or_path("calico-felix"));
        let mut spec = ChildSpec::new("felix", program, Vec::new());
        spec.env.push(("FELIX_FELIXHOSTNAME".into(), node.clone()));
        if run_dir_set && !envmap.contains_key("FELIX_ENDPOINTSTATUSPATHPREFIX") {
            spec.env.push((
                "FELIX_ENDPOINTSTATUSPATHPREFIX".into(),
                env.run_dir.display().to_string(),
            ));
        }
        spec.log_file = Some(env.run_dir.join("felix.log"));
        let status = Arc::new(ChildStatus::default());
        tasks.push(tokio::spawn(supervise(spec, status, stop_rx.clone())));
    }

    if env.backend == Backend::Bird {
        let paths = BirdPaths::in_run_dir(&env.run_dir);
        // The first config must exist before BIRD starts.
        let mut first = render_once(&kv, &node, env.router_id, &paths).await;
        for _ in 0..50 {
            if first.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            first = render_once(&kv, &node, env.router_id, &paths).await;
        }
        first.context("first bird.cfg")?;
        let bird_args = vec![
            "-f".to_string(),
            "-c".into(),
            paths.config.display().to_string(),
            "-s".into(),
            paths.ctl.display().to_string(),
        ];
        let mut spec = ChildSpec::new("bird", "bird", bird_args);
        spec.log_file = Some(env.run_dir.join("bird.log"));
        spec.restart_delay = Duration::from_millis(200);
        let status = Arc::new(ChildStatus::default());
        tasks.push(tokio::spawn(supervise(spec, status, stop_rx.clone())));
        let kv2 = kv.clone();
        let node2 = node.clone();
        let rid = env.router_id;
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = render_loop(kv2, node2, rid, paths, rx).await {
                tracing::error!(error = format!("{e:#}"), "bird config renderer stopped");
            }
        }));
    }

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    if env.backend == Backend::Bird {
        let _ = std::fs::remove_file(env.run_dir.join("bird.ctl"));
    }
    Ok(())
}

/// Re-runs tunnel address allocation whenever an IP pool changes, until `stop`.
async fn tunnel_allocator(
    kv: Arc<dyn KvStore>,
    client: Client,
    node: String,
    tunnels: Vec<startup::Tunnel>,
    mut stop: watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let prefix = calico_model::keys::resource_prefix("ippools", false, None);
    loop {
        let stream = match kv.current_revision().await {
            Ok(rev) => kv.watch(&prefix, rev).await,
            Err(e) => Err(e),
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel allocator: watch ippools failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                ev = stream.next() => {
                    match ev {
                        Some(Ok(calico_datastore::WatchEvent::Compacted { .. })) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {
                            for t in &tunnels {
                                if let Err(e) = startup::ensure_tunnel(&kv, &client, &node, *t).await {
                                    tracing::warn!(error = format!("{e:#}"), tunnel = ?t, "tunnel address not updated");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

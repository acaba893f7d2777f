//! The BIRD side of calico-node (upstream confd): gathers the BGP inputs from the datastore,
//! renders `bird.cfg` with `calico-bird`, writes it atomically under `$CALICO_RUN_DIR` and asks
//! the running BIRD to reload it (`birdc configure`, never a restart). Re-renders on every change
//! of Nodes, BGP resources, IP pools or this node's block affinities.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use calico_bird::{AffinityState, BgpInputs, BlockAffinity};
use calico_datastore::client::Client;
use calico_datastore::{KvStore, WatchEvent};
use calico_model::keys::resource_prefix;
use calico_model::{AnyResource, KindInfo};
use futures::StreamExt;
use tokio::sync::watch;

/// Paths of one node's BIRD.
#[derive(Debug, Clone)]
pub struct BirdPaths {
    pub config: PathBuf,
    pub ctl: PathBuf,
}

impl BirdPaths {
    pub fn in_run_dir(run_dir: &Path) -> Self {
        BirdPaths {
            config: run_dir.join("bird.cfg"),
            ctl: run_dir.join("bird.ctl"),
        }
    }
}

fn items(list: calico_datastore::client::ResourceList) -> Vec<AnyResource> {
    list.items
}

/// Reads everything the renderer needs.
pub async fn gather(
    kv: &Arc<dyn KvStore>,
    node: &str,
    router_id: Option<std::net::Ipv4Addr>,
) -> Result<BgpInputs> {
    let client = Client::new(kv.clone());
    let list = |k: &'static str| {
        let client = client.clone();
        async move {
            let kind = KindInfo::lookup(k).with_context(|| format!("kind {k}"))?;
            client
                .list(kind, None)
                .await
                .map(items)
                .with_context(|| format!("list {k}"))
        }
    };
    let mut inputs = BgpInputs {
        node_name: node.to_string(),
        router_id,
        ..Default::default()
    };
    for r in list("BGPConfiguration").await? {
        if let AnyResource::BGPConfiguration(r) = r {
            inputs.bgp_configurations.push(r);
        }
    }
    for r in list("Node").await? {
        if let AnyResource::Node(r) = r {
            inputs.nodes.push(r);
        }
    }
    for r in list("BGPPeer").await? {
        if let AnyResource::BGPPeer(r) = r {
            inputs.peers.push(r);
        }
    }
    for r in list("BGPFilter").await? {
        if let AnyResource::BGPFilter(r) = r {
            inputs.filters.push(r);
        }
    }
    for r in list("IPPool").await? {
        if let AnyResource::IPPool(r) = r {
            inputs.ip_pools.push(r);
        }
    }
    let prefix = format!("{}{node}/", calico_ipam::keys::HOST_PREFIX);
    for kv in kv.list(&prefix).await.context("list block affinities")?.kvs {
        let Some((_, cidr)) = calico_ipam::keys::parse_affinity_key(&kv.key) else {
            continue;
        };
        let Ok(a) = calico_ipam::BlockAffinity::from_json(&kv.value) else {
            continue;
        };
        if a.deleted {
            continue;
        }
        let state = match a.state {
            calico_ipam::AffinityState::Confirmed => AffinityState::Confirmed,
            calico_ipam::AffinityState::Unset => AffinityState::Implicit,
            calico_ipam::AffinityState::Pending => AffinityState::Pending,
            calico_ipam::AffinityState::PendingDeletion => AffinityState::PendingDeletion,
        };
        inputs.block_affinities.push(BlockAffinity { cidr, state });
    }
    Ok(inputs)
}

/// Writes `text` to `path` atomically when it differs. Returns whether it changed.
pub fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|s| s == text) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(".bird.cfg.tmp{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(true)
}

/// Renders and writes the config. Returns whether the file changed.
pub async fn render_once(
    kv: &Arc<dyn KvStore>,
    node: &str,
    router_id: Option<std::net::Ipv4Addr>,
    paths: &BirdPaths,
) -> Result<bool> {
    let inputs = gather(kv, node, router_id).await?;
    let rendered =
        calico_bird::render(&inputs).with_context(|| format!("render bird.cfg for {node}"))?;
    write_if_changed(&paths.config, &rendered.bird_cfg)
}

/// `birdc -s <ctl> configure`.
pub async fn reload(ctl: &Path) -> Result<()> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("birdc")
            .arg("-s")
            .arg(ctl)
            .arg("configure")
            .output(),
    )
    .await
    .context("birdc configure: timed out")?
    .context("birdc configure")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !(text.contains("Reconfigur") || text.contains("configured")) {
        anyhow::bail!(
            "birdc -s {} configure: {}{}",
            ctl.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    tracing::info!(ctl = %ctl.display(), "bird reconfigured");
    Ok(())
}

/// Watches the datastore and re-renders/reloads until `stop`.
pub async fn render_loop(
    kv: Arc<dyn KvStore>,
    node: String,
    router_id: Option<std::net::Ipv4Addr>,
    paths: BirdPaths,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let prefixes = [
        resource_prefix("nodes", false, None),
        resource_prefix("bgpconfigurations", false, None),
        resource_prefix("bgppeers", false, None),
        resource_prefix("bgpfilters", false, None),
        resource_prefix("ippools", false, None),
        format!("{}{node}/", calico_ipam::keys::HOST_PREFIX),
    ];
    loop {
        let rev = kv.current_revision().await.context("datastore revision")?;
        let mut streams = Vec::new();
        for p in &prefixes {
            streams.push(
                kv.watch(p, rev)
                    .await
                    .with_context(|| format!("watch {p}"))?,
            );
        }
        let mut events = futures::stream::select_all(streams);
        // Render after the watch is set up, so nothing between the two is missed.
        refresh(&kv, &node, router_id, &paths).await;
        loop {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return Ok(());
                    }
                }
                ev = events.next() => {
                    match ev {
                        Some(Ok(WatchEvent::Compacted { .. })) | None => break,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "watch failed; restarting it");
                            break;
                        }
                        Some(Ok(_)) => {
                            // Batch a burst of changes.
                            while let Ok(Some(_)) =
                                tokio::time::timeout(Duration::from_millis(10), events.next()).await
                            {}
                            refresh(&kv, &node, router_id, &paths).await;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn refresh(
    kv: &Arc<dyn KvStore>,
    node: &str,
    router_id: Option<std::net::Ipv4Addr>,
    paths: &BirdPaths,
) {
    let t0 = std::time::Instant::now();
    match render_once(kv, node, router_id, paths).await {
        Ok(true) => {
            let rendered = t0.elapsed();
            if paths.ctl.exists()
                && let Err(e) = reload(&paths.ctl).await
            {
                tracing::warn!(error = format!("{e:#}"), "bird reload failed");
            }
            tracing::info!(
                render_ms = rendered.as_millis() as u64,
                total_ms = t0.elapsed().as_millis() as u64,
                "bird.cfg changed"
            );
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = format!("{e:#}"), "bird config not rendered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bird.cfg");
        assert!(write_if_changed(&p, "a").unwrap());
        assert!(!write_if_changed(&p, "a").unwrap());
        assert!(write_if_changed(&p, "b").unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}

//! The BIRD side of calico-node (upstream confd): gathers the BGP inputs from the datastore,
//! renders `bird.cfg` with `calico-bird`, writes it atomically under `$CALICO_RUN_DIR` and asks
//! the running BIRD to reload it (`birdc configure`, never a restart). Re-renders on every change
//! of Nodes, BGP resources, IP pools or this node's block affinities.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use calico_bird::{AffinityState, BgpInputs, BlockAffinity};
use calico_datastore::{KvStore, WatchEvent};
use calico_model::keys::resource_prefix;
use calico_model::resources::{
    BGPConfigurationSpec, BGPFilterSpec, BGPPeerSpec, IPPoolSpec, NodeSpec,
};
use calico_model::{AnyResource, Resource};
use futures::StreamExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
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

/// The renderer's inputs, kept current from one listing and then the watch (upstream confd's
/// syncer cache): a datastore change costs one decode and a render, not a re-list of every
/// kind. Keyed by datastore key, so puts and deletes apply directly.
#[derive(Debug, Clone, Default)]
pub struct InputCache {
    node: String,
    router_id: Option<Ipv4Addr>,
    bgp_configurations: BTreeMap<String, Resource<BGPConfigurationSpec>>,
    nodes: BTreeMap<String, Resource<NodeSpec>>,
    peers: BTreeMap<String, Resource<BGPPeerSpec>>,
    filters: BTreeMap<String, Resource<BGPFilterSpec>>,
    ip_pools: BTreeMap<String, Resource<IPPoolSpec>>,
    affinities: BTreeMap<String, BlockAffinity>,
}

impl InputCache {
    pub fn new(node: &str, router_id: Option<Ipv4Addr>) -> Self {
        InputCache {
            node: node.to_string(),
            router_id,
            ..Default::default()
        }
    }

    /// The datastore prefixes the renderer reads: Nodes, BGP resources, IP pools and this
    /// node's block affinities.
    pub fn prefixes(&self) -> Vec<String> {
        vec![
            resource_prefix("nodes", false, None),
            resource_prefix("bgpconfigurations", false, None),
            resource_prefix("bgppeers", false, None),
            resource_prefix("bgpfilters", false, None),
            resource_prefix("ippools", false, None),
            format!("{}{}/", calico_ipam::keys::HOST_PREFIX, self.node),
        ]
    }

    /// Lists every prefix into a new cache.
    pub async fn load(
        kv: &Arc<dyn KvStore>,
        node: &str,
        router_id: Option<Ipv4Addr>,
    ) -> Result<Self> {
        let mut cache = InputCache::new(node, router_id);
        for p in cache.prefixes() {
            let listed = kv.list(&p).await.with_context(|| format!("list {p}"))?;
            for item in listed.kvs {
                cache.put(&item.key, &item.value);
            }
        }
        Ok(cache)
    }

    /// Applies one stored value. Values that do not decode are dropped with a warning (as
    /// upstream's syncer drops them), so one bad object does not stop every later render.
    pub fn put(&mut self, key: &str, value: &[u8]) {
        if key.starts_with(calico_ipam::keys::HOST_PREFIX) {
            match affinity(key, value) {
                Some(a) => {
                    self.affinities.insert(key.to_string(), a);
                }
                None => {
                    self.affinities.remove(key);
                }
            }
            return;
        }
        let decoded = serde_json::from_slice(value)
            .map_err(|e| e.to_string())
            .and_then(|v| AnyResource::from_value(v).map_err(|e| e.to_string()));
        let k = key.to_string();
        match decoded {
            Ok(AnyResource::Node(r)) => {
                self.nodes.insert(k, r);
            }
            Ok(AnyResource::BGPConfiguration(r)) => {
                self.bgp_configurations.insert(k, r);
            }
            Ok(AnyResource::BGPPeer(r)) => {
                self.peers.insert(k, r);
            }
            Ok(AnyResource::BGPFilter(r)) => {
                self.filters.insert(k, r);
            }
            Ok(AnyResource::IPPool(r)) => {
                self.ip_pools.insert(k, r);
            }
            Ok(other) => {
                tracing::warn!(
                    key,
                    kind = other.kind(),
                    "unexpected kind under a BGP prefix"
                );
                self.delete(key);
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot decode; ignored");
                self.delete(key);
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.nodes.remove(key);
        self.bgp_configurations.remove(key);
        self.peers.remove(key);
        self.filters.remove(key);
        self.ip_pools.remove(key);
        self.affinities.remove(key);
    }

    /// Applies a watch event. `false` for `Compacted` (the cache must be reloaded).
    pub fn apply(&mut self, ev: &WatchEvent) -> bool {
        match ev {
            WatchEvent::Put { kv, .. } => self.put(&kv.key, &kv.value),
            WatchEvent::Delete { key, .. } => self.delete(key),
            WatchEvent::Compacted { .. } => return false,
        }
        true
    }

    /// The renderer's snapshot.
    pub fn inputs(&self) -> BgpInputs {
        BgpInputs {
            node_name: self.node.clone(),
            router_id: self.router_id,
            bgp_configurations: self.bgp_configurations.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
            peers: self.peers.values().cloned().collect(),
            filters: self.filters.values().cloned().collect(),
            ip_pools: self.ip_pools.values().cloned().collect(),
            block_affinities: self.affinities.values().cloned().collect(),
            ..Default::default()
        }
    }
}

/// A block affinity of this node, `None` when it is not one (or is marked deleted).
fn affinity(key: &str, value: &[u8]) -> Option<BlockAffinity> {
    let (_, cidr) = calico_ipam::keys::parse_affinity_key(key)?;
    let a = calico_ipam::BlockAffinity::from_json(value).ok()?;
    if a.deleted {
        return None;
    }
    let state = match a.state {
        calico_ipam::AffinityState::Confirmed => AffinityState::Confirmed,
        calico_ipam::AffinityState::Unset => AffinityState::Implicit,
        calico_ipam::AffinityState::Pending => AffinityState::Pending,
        calico_ipam::AffinityState::PendingDeletion => AffinityState::PendingDeletion,
    };
    Some(BlockAffinity { cidr, state })
}

/// Reads everything the renderer needs.
pub async fn gather(
    kv: &Arc<dyn KvStore>,
    node: &str,
    router_id: Option<Ipv4Addr>,
) -> Result<BgpInputs> {
    Ok(InputCache::load(kv, node, router_id).await?.inputs())
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
    router_id: Option<Ipv4Addr>,
    paths: &BirdPaths,
) -> Result<bool> {
    let inputs = gather(kv, node, router_id).await?;
    let rendered =
        calico_bird::render(&inputs).with_context(|| format!("render bird.cfg for {node}"))?;
    write_if_changed(&paths.config, &rendered.bird_cfg)
}

/// `configure` over BIRD's control socket (as `birdc -s <ctl> configure`, without a process per
/// reload).
pub async fn reload(ctl: &Path) -> Result<()> {
    let reply = tokio::time::timeout(Duration::from_secs(10), bird_command(ctl, "configure"))
        .await
        .with_context(|| format!("bird {}: configure: timed out", ctl.display()))??;
    // The last line's code: 0xxx success (0003 Reconfigured, 0004 in progress, 0005 queued),
    // 8xxx/9xxx errors (e.g. a config BIRD rejects).
    if !reply.lines().last().is_some_and(|l| l.starts_with('0')) {
        anyhow::bail!("bird {}: configure: {}", ctl.display(), reply.trim());
    }
    tracing::info!(ctl = %ctl.display(), "bird reconfigured");
    Ok(())
}

/// Sends one CLI command on BIRD's control socket and returns its reply.
pub async fn bird_command(ctl: &Path, cmd: &str) -> Result<String> {
    let stream = tokio::net::UnixStream::connect(ctl)
        .await
        .with_context(|| format!("connect to {}", ctl.display()))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    read_reply(&mut r)
        .await
        .with_context(|| format!("bird {}: greeting", ctl.display()))?;
    w.write_all(format!("{cmd}\n").as_bytes())
        .await
        .with_context(|| format!("bird {}: send {cmd}", ctl.display()))?;
    read_reply(&mut r)
        .await
        .with_context(|| format!("bird {}: reply to {cmd}", ctl.display()))
}

/// One reply of BIRD's CLI protocol: `dddd-text` and ` text` lines continue it, the first
/// `dddd text` line ends it.
async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<String> {
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            anyhow::bail!("connection closed after {:?}", out.trim());
        }
        out.push_str(&line);
        let b = line.as_bytes();
        if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b' ' {
            return Ok(out);
        }
    }
}

/// Watches the datastore and re-renders/reloads until `stop`.
pub async fn render_loop(
    kv: Arc<dyn KvStore>,
    node: String,
    router_id: Option<Ipv4Addr>,
    paths: BirdPaths,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut state = RenderState::default();
    loop {
        match watch_and_render(&kv, &node, router_id, &paths, &mut stop, &mut state).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "bird config watch failed; restarting it"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Lists into a fresh cache, watches every prefix from its listing, renders on each batch of
/// changes. `Ok(true)` on stop, `Ok(false)` when the watch must be restarted.
async fn watch_and_render(
    kv: &Arc<dyn KvStore>,
    node: &str,
    router_id: Option<Ipv4Addr>,
    paths: &BirdPaths,
    stop: &mut watch::Receiver<bool>,
    state: &mut RenderState,
) -> Result<bool> {
    let mut cache = InputCache::new(node, router_id);
    let mut streams = Vec::new();
    for p in cache.prefixes() {
        let listed = kv.list(&p).await.with_context(|| format!("list {p}"))?;
        for item in &listed.kvs {
            cache.put(&item.key, &item.value);
        }
        streams.push(
            kv.watch(&p, listed.revision)
                .await
                .with_context(|| format!("watch {p}"))?,
        );
    }
    let mut events = futures::stream::select_all(streams);
    refresh(&cache, paths, state).await;
    loop {
        let ev = tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return Ok(true);
                }
                continue;
            }
            ev = events.next() => ev,
        };
        let Some(ev) = ev else { return Ok(false) };
        if !cache.apply(&ev.context("watch")?) {
            return Ok(false);
        }
        // Batch what arrives within the window after the first change.
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.next()).await {
            if !cache.apply(&ev.context("watch")?) {
                return Ok(false);
            }
        }
        refresh(&cache, paths, state).await;
    }
}

/// Changes arriving within this window after the first are rendered (and BIRD reloaded)
/// together. Not shorter: a reload whose `calico_aggr` changed re-feeds every BGP channel, and
/// when it lands before BIRD has learned Felix's blackhole for a new block from the kernel it
/// holds that route back (measured on 10 nodes: peers imported it after 450–800 ms instead of
/// 40–75 ms). The kernel-learned blackhole is what advertises a new block first; the static
/// route and the aggregation rules follow with this reload.
const BATCH_WINDOW: Duration = Duration::from_millis(150);

/// What the render loop remembers between renders.
#[derive(Debug, Default)]
struct RenderState {
    /// The last text written (skips the file comparison when nothing changed).
    last: Option<String>,
    /// The last reload failed: retry on the next render even if the text is unchanged.
    reload_failed: bool,
}

/// Renders from the cache; writes and reloads only when the text changed (or the previous
/// reload failed).
async fn refresh(cache: &InputCache, paths: &BirdPaths, state: &mut RenderState) {
    let t0 = std::time::Instant::now();
    let rendered = match calico_bird::render(&cache.inputs()) {
        Ok(r) => r.bird_cfg,
        Err(e) => {
            tracing::warn!(error = %e, "bird config not rendered");
            return;
        }
    };
    if state.last.as_deref() == Some(rendered.as_str()) && !state.reload_failed {
        return;
    }
    let changed = match write_if_changed(&paths.config, &rendered) {
        Ok(changed) => changed,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "bird.cfg not written");
            return;
        }
    };
    let render_us = t0.elapsed().as_micros() as u64;
    state.last = Some(rendered);
    if !changed && !state.reload_failed {
        return;
    }
    // No socket yet: BIRD is (re)starting and reads the file itself.
    state.reload_failed = false;
    if paths.ctl.exists()
        && let Err(e) = reload(&paths.ctl).await
    {
        tracing::warn!(error = format!("{e:#}"), "bird reload failed");
        state.reload_failed = true;
    }
    tracing::info!(
        render_us,
        total_ms = t0.elapsed().as_millis() as u64,
        "bird.cfg changed"
    );
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

    fn node_json(name: &str, ip: &str, label: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": name, "labels": {"l": label}},
            "spec": {"bgp": {"ipv4Address": ip}}
        }))
        .unwrap()
    }

    fn pool_json() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.65.0.0/16", "blockSize": 26}
        }))
        .unwrap()
    }

    fn node_key(name: &str) -> String {
        calico_model::keys::resource_key("nodes", false, "", name)
    }

    fn affinity_key(node: &str, cidr: &str) -> String {
        calico_ipam::keys::affinity_key(&calico_ipam::Affinity::host(node), &cidr.parse().unwrap())
    }

    #[test]
    fn cache_follows_puts_and_deletes() {
        let mut c = InputCache::new("node-1", None);
        c.put(
            &node_key("node-1"),
            &node_json("node-1", "10.99.0.1/24", "a"),
        );
        c.put(
            &node_key("node-2"),
            &node_json("node-2", "10.99.0.2/24", "a"),
        );
        c.put(
            &format!("{}p", resource_prefix("ippools", false, None)),
            &pool_json(),
        );
        let ak = affinity_key("node-1", "10.65.1.0/26");
        c.put(&ak, &calico_ipam::BlockAffinity::confirmed().to_json());
        let text = calico_bird::render(&c.inputs()).unwrap().bird_cfg;
        assert!(text.contains("route 10.65.1.0/26 blackhole;"), "{text}");
        assert!(text.contains("Mesh_10_99_0_2"), "{text}");

        // A marked-deleted affinity, then a deleted key, drop the block; garbage drops a node.
        let mut deleted = calico_ipam::BlockAffinity::confirmed();
        deleted.deleted = true;
        c.put(&ak, &deleted.to_json());
        assert!(c.inputs().block_affinities.is_empty());
        c.put(&ak, &calico_ipam::BlockAffinity::confirmed().to_json());
        assert!(c.apply(&WatchEvent::Delete {
            key: ak.clone(),
            revision: 9,
            prev: None
        }));
        assert!(c.inputs().block_affinities.is_empty());
        c.put(&node_key("node-2"), b"{not json");
        assert_eq!(c.inputs().nodes.len(), 1);
        assert!(!c.apply(&WatchEvent::Compacted {
            compact_revision: 3
        }));
    }

    /// A fake BIRD control socket: greets, answers `configure` with `answer`, counts commands.
    fn fake_bird(ctl: &Path, answer: &'static str) -> Arc<std::sync::atomic::AtomicUsize> {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::UnixListener::bind(ctl).unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                s.write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"configure\n");
                c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        count
    }

    #[tokio::test]
    async fn reload_speaks_the_cli_protocol_and_reports_errors() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok.ctl");
        let n = fake_bird(
            &ok,
            "0002-Reading configuration from x\n0003 Reconfigured\n",
        );
        reload(&ok).await.unwrap();
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        let bad = d.path().join("bad.ctl");
        fake_bird(
            &bad,
            "0002-Reading configuration from x\n8002 x:3:1 syntax error\n",
        );
        let e = format!("{:#}", reload(&bad).await.unwrap_err());
        assert!(e.contains("syntax error"), "{e}");
        let e = format!(
            "{:#}",
            reload(&d.path().join("none.ctl")).await.unwrap_err()
        );
        assert!(e.contains("none.ctl"), "{e}");
    }

    /// The loop reloads BIRD only when this node's text changes: its own new block does, another
    /// node's block or a label change does not.
    #[tokio::test]
    async fn render_loop_reloads_only_on_text_changes() {
        use std::sync::atomic::Ordering::SeqCst;
        let d = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> =
            Arc::new(calico_datastore::sqlite::SqliteStore::open(d.path().join("ds.db")).unwrap());
        kv.put(
            &node_key("node-1"),
            node_json("node-1", "10.99.0.1/24", "a"),
            None,
        )
        .await
        .unwrap();
        kv.put(
            &node_key("node-2"),
            node_json("node-2", "10.99.0.2/24", "a"),
            None,
        )
        .await
        .unwrap();
        kv.put(
            &format!("{}p", resource_prefix("ippools", false, None)),
            pool_json(),
            None,
        )
        .await
        .unwrap();
        let paths = BirdPaths::in_run_dir(d.path());
        render_once(&kv, "node-1", None, &paths).await.unwrap();
        let reloads = fake_bird(&paths.ctl, "0003 Reconfigured\n");
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(render_loop(
            kv.clone(),
            "node-1".into(),
            None,
            paths.clone(),
            stop_rx,
        ));
        let confirmed = calico_ipam::BlockAffinity::confirmed().to_json();
        let wait_reloads = |want: usize| {
            let reloads = reloads.clone();
            async move {
                for _ in 0..300 {
                    if reloads.load(SeqCst) >= want {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                reloads.load(SeqCst)
            }
        };
        // Give the loop time to list and watch; the unchanged first render reloads nothing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(reloads.load(SeqCst), 0);
        kv.put(
            &affinity_key("node-2", "10.65.2.0/26"),
            confirmed.clone(),
            None,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        kv.put(
            &node_key("node-2"),
            node_json("node-2", "10.99.0.2/24", "b"),
            None,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(reloads.load(SeqCst), 0);
        kv.put(&affinity_key("node-1", "10.65.1.0/26"), confirmed, None)
            .await
            .unwrap();
        assert_eq!(wait_reloads(1).await, 1);
        let text = std::fs::read_to_string(&paths.config).unwrap();
        assert!(text.contains("route 10.65.1.0/26 blackhole;"), "{text}");
        assert!(!text.contains("10.65.2.0/26"), "{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(reloads.load(SeqCst), 1);
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }
}

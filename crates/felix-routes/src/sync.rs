//! The I/O shell: lists and watches Nodes, IP pools, FelixConfigurations and IPAM blocks,
//! replans on every change (changes arriving within [`RoutesConfig::debounce`] are batched) and
//! applies; a periodic resync repairs kernel drift.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use calico_datastore::{KvStore, Revision, WatchEvent};
use calico_ipam::AllocationBlock;
use calico_linux::{NetNs, Netlink, RtNetlink};
use calico_model::Resource;
use calico_model::keys::resource_prefix;
use calico_model::resources::ipam::EncapMode;
use calico_model::resources::{FelixConfigurationSpec, IPPoolSpec, NodeSpec};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument;

use crate::RoutesError;
use crate::apply::{HostFacts, apply, host_facts};
use crate::mtu::write_mtu_file;
use crate::plan::{BlockInfo, FelixSettings, NodeInfo, PlanInput, PoolInfo, plan};

/// Settings of a [`RouteSync`].
#[derive(Debug, Clone)]
pub struct RoutesConfig {
    /// Namespace to program; `None` = the namespace of the thread that calls `run`.
    pub netns: Option<NetNs>,
    /// Where to write the pod MTU for the CNI plugin; `None` = do not write.
    pub mtu_file: Option<PathBuf>,
    /// Full re-apply period (repairs routes removed behind our back).
    pub resync_interval: Duration,
    /// Datastore changes arriving within this window are applied together.
    pub debounce: Duration,
    /// Overrides from the environment (`FELIX_VXLANENABLED`, ...), applied over the
    /// FelixConfiguration values.
    pub overrides: SettingsOverrides,
}

/// Felix settings given outside the datastore; `Some` wins over FelixConfiguration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsOverrides {
    pub vxlan_enabled: Option<bool>,
    pub ipip_enabled: Option<bool>,
    pub vxlan_vni: Option<u32>,
    pub vxlan_port: Option<u16>,
    pub vxlan_mtu: Option<u32>,
    pub ipip_mtu: Option<u32>,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        RoutesConfig {
            netns: None,
            mtu_file: None,
            resync_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(10),
            overrides: SettingsOverrides::default(),
        }
    }
}

/// Watches the datastore and keeps this node's routes programmed.
pub struct RouteSync {
    kv: Arc<dyn KvStore>,
    node: String,
    cfg: RoutesConfig,
    ready_tx: watch::Sender<bool>,
    rev_tx: watch::Sender<Revision>,
    problems_tx: watch::Sender<Vec<String>>,
}

const BLOCKS: &str = calico_ipam::keys::BLOCK_PREFIX;

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, Vec<u8>>,
    pools: BTreeMap<String, Vec<u8>>,
    felix: BTreeMap<String, Vec<u8>>,
    blocks: BTreeMap<String, Vec<u8>>,
}

impl State {
    fn map_for(&mut self, key: &str) -> Option<&mut BTreeMap<String, Vec<u8>>> {
        if key.starts_with(&prefix("nodes")) {
            Some(&mut self.nodes)
        } else if key.starts_with(&prefix("ippools")) {
            Some(&mut self.pools)
        } else if key.starts_with(&prefix("felixconfigurations")) {
            Some(&mut self.felix)
        } else if key.starts_with(BLOCKS) {
            Some(&mut self.blocks)
        } else {
            None
        }
    }
}

fn prefix(plural: &str) -> String {
    resource_prefix(plural, false, None)
}

fn prefixes() -> [String; 4] {
    [
        prefix("nodes"),
        prefix("ippools"),
        prefix("felixconfigurations"),
        BLOCKS.to_string(),
    ]
}

impl RouteSync {
    pub fn new(kv: Arc<dyn KvStore>, node: String, cfg: RoutesConfig) -> Self {
        RouteSync {
            kv,
            node,
            cfg,
            ready_tx: watch::channel(false).0,
            rev_tx: watch::channel(0).0,
            problems_tx: watch::channel(Vec::new()).0,
        }
    }

    /// True once the first full program has been applied.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready_tx.subscribe()
    }

    /// The highest datastore revision (among the keys this sync watches) whose effects are in
    /// the kernel.
    pub fn applied_revision(&self) -> watch::Receiver<Revision> {
        self.rev_tx.subscribe()
    }

    /// Problems of the last plan (e.g. "IP-in-IP mode unavailable: kernel has no ipip module"),
    /// for health reporting.
    pub fn problems(&self) -> watch::Receiver<Vec<String>> {
        self.problems_tx.subscribe()
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped). Leaves the kernel state
    /// programmed on exit.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), RoutesError> {
        let span = tracing::info_span!("felix_routes", node = %self.node);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(self, mut shutdown: watch::Receiver<bool>) -> Result<(), RoutesError> {
        let nl: RtNetlink = match &self.cfg.netns {
            Some(ns) => RtNetlink::connect_in(ns)?,
            None => RtNetlink::connect()?,
        };
        loop {
            // (Re)list everything, then watch from the listing.
            let (mut state, streams, rev) = match self.list_and_watch().await {
                Ok(v) => v,
                Err(e) => {
                    // The datastore may come back: keep the kernel as it is and retry.
                    tracing::warn!(error = %e, "datastore list/watch failed; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        changed = shutdown.changed() => {
                            if changed.is_err() || *shutdown.borrow() {
                                return Ok(());
                            }
                            continue;
                        }
                    }
                }
            };
            let mut events = futures::stream::select_all(streams);
            if let Err(e) = self.program(&nl, &state, rev).await {
                tracing::warn!(error = %e, "route programming failed; retrying on next change or resync");
            }
            let mut resync = tokio::time::interval(self.cfg.resync_interval);
            resync.tick().await;
            let mut pending_rev = rev;
            let relist = loop {
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            tracing::info!("felix-routes stopping");
                            return Ok(());
                        }
                    }
                    _ = resync.tick() => {
                        if let Err(e) = self.program(&nl, &state, pending_rev).await {
                            tracing::warn!(error = %e, "resync failed");
                        }
                    }
                    ev = events.next() => {
                        let mut ev = ev;
                        let mut compacted = false;
                        loop {
                            match ev {
                                None => { compacted = true; break; }
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "watch error; re-listing");
                                    compacted = true;
                                    break;
                                }
                                Some(Ok(WatchEvent::Compacted { .. })) => { compacted = true; break; }
                                Some(Ok(e)) => {
                                    pending_rev = pending_rev.max(e.revision());
                                    apply_event(&mut state, e);
                                }
                            }
                            // Batch what arrives within the debounce window.
                            match tokio::time::timeout(self.cfg.debounce, events.next()).await {
                                Ok(next) => ev = next,
                                Err(_) => break,
                            }
                        }
                        if compacted {
                            break true;
                        }
                        if let Err(e) = self.program(&nl, &state, pending_rev).await {
                            tracing::warn!(error = %e, "route programming failed; retrying on next change or resync");
                        }
                    }
                }
            };
            if relist {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn list_and_watch(
        &self,
    ) -> Result<(State, Vec<calico_datastore::WatchStream>, Revision), RoutesError> {
        let mut state = State::default();
        let mut streams = Vec::new();
        let mut rev = 0;
        for p in prefixes() {
            let listed = self.kv.list(&p).await?;
            if let Some(map) = state.map_for(&p) {
                for kv in listed.kvs {
                    map.insert(kv.key, kv.value);
                }
            }
            rev = rev.max(listed.revision);
            streams.push(self.kv.watch(&p, listed.revision).await?);
        }
        Ok((state, streams, rev))
    }

    async fn program(
        &self,
        nl: &dyn Netlink,
        state: &State,
        rev: Revision,
    ) -> Result<(), RoutesError> {
        let mut input = plan_input(&self.node, state, &self.cfg.overrides);
        let local_ip = input
            .nodes
            .get(&self.node)
            .and_then(|n| n.ipv4)
            .map(|n| IpAddr::V4(n.addr()));
        let host: HostFacts = host_facts(nl, local_ip).await?;
        input.host_mtu = host.parent_mtu.unwrap_or(1500);
        input.ipip_available = nl.link_by_name(crate::plan::IPIP_DEVICE).await?.is_some();
        let p = plan(&input);
        let problems: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
        for pr in &problems {
            tracing::warn!(problem = %pr, "route plan");
        }
        self.problems_tx.send_replace(problems);
        let report = apply(nl, &p, host).await?;
        if report.changed() {
            tracing::info!(?report, routes = p.routes.len(), "routes programmed");
        }
        if let Some(path) = &self.cfg.mtu_file {
            write_mtu_file(path, p.pod_mtu)?;
        }
        self.rev_tx.send_replace(rev);
        self.ready_tx.send_replace(true);
        Ok(())
    }
}

fn apply_event(state: &mut State, ev: WatchEvent) {
    match ev {
        WatchEvent::Put { kv, .. } => {
            if let Some(map) = state.map_for(&kv.key) {
                map.insert(kv.key, kv.value);
            }
        }
        WatchEvent::Delete { key, .. } => {
            if let Some(map) = state.map_for(&key) {
                map.remove(&key);
            }
        }
        WatchEvent::Compacted { .. } => {}
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key, error = %e, "undecodable value ignored");
            None
        }
    }
}

/// Builds the planner's input from the raw datastore values.
fn plan_input(local: &str, state: &State, ov: &SettingsOverrides) -> PlanInput {
    let mut nodes = BTreeMap::new();
    for (k, v) in &state.nodes {
        let Some(n) = decode::<Resource<NodeSpec>>(k, v) else {
            continue;
        };
        let bgp = n.spec.bgp.as_ref();
        let info = NodeInfo {
            name: n.metadata.name.clone(),
            ipv4: bgp.and_then(|b| {
                b.ipv4_address.parse().ok().or_else(|| {
                    b.ipv4_address
                        .parse::<std::net::Ipv4Addr>()
                        .ok()
                        .and_then(|a| ipnet::Ipv4Net::new(a, 32).ok())
                })
            }),
            vxlan_tunnel_addr: n.spec.ipv4_vxlan_tunnel_addr.parse().ok(),
            vxlan_mac: n.spec.vxlan_tunnel_mac_addr.parse().ok(),
            ipip_tunnel_addr: bgp.and_then(|b| b.ipv4_ipip_tunnel_addr.parse().ok()),
        };
        nodes.insert(info.name.clone(), info);
    }
    let mut pools = Vec::new();
    for (k, v) in &state.pools {
        let Some(p) = decode::<Resource<IPPoolSpec>>(k, v) else {
            continue;
        };
        let Ok(cidr) = p.spec.cidr.parse() else {
            tracing::warn!(pool = %p.metadata.name, cidr = %p.spec.cidr, "bad pool cidr ignored");
            continue;
        };
        pools.push(PoolInfo {
            name: p.metadata.name.clone(),
            cidr,
            vxlan: p.spec.vxlan_mode.unwrap_or(EncapMode::Never),
            ipip: p.spec.ipip_mode.unwrap_or(EncapMode::Never),
            disabled: p.spec.disabled,
        });
    }
    let mut blocks = Vec::new();
    for (k, v) in &state.blocks {
        let Some(b) = decode::<AllocationBlock>(k, v) else {
            continue;
        };
        if b.deleted {
            continue;
        }
        blocks.push(BlockInfo {
            cidr: b.cidr,
            node: b
                .affinity
                .as_deref()
                .and_then(|a| a.strip_prefix("host:"))
                .map(str::to_string),
        });
    }
    // `default` first, then `node.<name>` over it, then the environment.
    let mut felix = FelixSettings::default();
    let mut layer = |name: &str| {
        let key = format!("{}{name}", prefix("felixconfigurations"));
        let Some(fc) = state
            .felix
            .get(&key)
            .and_then(|v| decode::<Resource<FelixConfigurationSpec>>(&key, v))
        else {
            return;
        };
        let s = &fc.spec;
        if let Some(v) = s.vxlan_enabled {
            felix.vxlan_enabled = Some(v);
        }
        if let Some(v) = s.ipip_enabled {
            felix.ipip_enabled = Some(v);
        }
        if let Some(v) = s.vxlan_vni.and_then(|v| u32::try_from(v).ok()) {
            felix.vxlan_vni = v;
        }
        if let Some(v) = s.vxlan_port.and_then(|v| u16::try_from(v).ok()) {
            felix.vxlan_port = v;
        }
        if let Some(v) = s.vxlan_mtu.and_then(|v| u32::try_from(v).ok()) {
            felix.vxlan_mtu = Some(v);
        }
        if let Some(v) = s.ipip_mtu.and_then(|v| u32::try_from(v).ok()) {
            felix.ipip_mtu = Some(v);
        }
    };
    layer("default");
    layer(&format!("node.{local}"));
    if ov.vxlan_enabled.is_some() {
        felix.vxlan_enabled = ov.vxlan_enabled;
    }
    if ov.ipip_enabled.is_some() {
        felix.ipip_enabled = ov.ipip_enabled;
    }
    if let Some(v) = ov.vxlan_vni {
        felix.vxlan_vni = v;
    }
    if let Some(v) = ov.vxlan_port {
        felix.vxlan_port = v;
    }
    if ov.vxlan_mtu.is_some() {
        felix.vxlan_mtu = ov.vxlan_mtu;
    }
    if ov.ipip_mtu.is_some() {
        felix.ipip_mtu = ov.ipip_mtu;
    }
    PlanInput {
        local_node: local.to_string(),
        nodes,
        pools,
        blocks,
        felix,
        host_mtu: 1500,
        ipip_available: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn run_future_is_send() {
        let kv: Arc<dyn KvStore> = Arc::new(
            calico_datastore::sqlite::SqliteStore::open(
                tempfile::tempdir().unwrap().path().join("x.db"),
            )
            .unwrap(),
        );
        let sync = RouteSync::new(kv, "n".into(), RoutesConfig::default());
        let (_tx, rx) = watch::channel(false);
        let fut = sync.run(rx);
        assert_send(&fut);
    }

    #[test]
    fn plan_input_layers_felix_configuration() {
        let mut st = State::default();
        let key = |n: &str| format!("{}{n}", prefix("felixconfigurations"));
        st.felix.insert(
            key("default"),
            br#"{"apiVersion":"projectcalico.org/v3","kind":"FelixConfiguration","metadata":{"name":"default"},"spec":{"vxlanMTU":1400,"vxlanVNI":5000}}"#.to_vec(),
        );
        st.felix.insert(
            key("node.n1"),
            br#"{"apiVersion":"projectcalico.org/v3","kind":"FelixConfiguration","metadata":{"name":"node.n1"},"spec":{"vxlanMTU":1300}}"#.to_vec(),
        );
        st.nodes.insert(
            format!("{}n1", prefix("nodes")),
            br#"{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n1"},"spec":{"bgp":{"ipv4Address":"10.0.0.1/24"},"ipv4VXLANTunnelAddr":"192.168.0.1","vxlanTunnelMACAddr":"66:00:00:00:00:01"}}"#.to_vec(),
        );
        let ov = SettingsOverrides {
            vxlan_port: Some(4790),
            ..Default::default()
        };
        let i = plan_input("n1", &st, &ov);
        assert_eq!(i.felix.vxlan_mtu, Some(1300));
        assert_eq!(i.felix.vxlan_vni, 5000);
        assert_eq!(i.felix.vxlan_port, 4790);
        let n = &i.nodes["n1"];
        assert_eq!(n.ipv4.unwrap().to_string(), "10.0.0.1/24");
        assert_eq!(n.vxlan_mac.unwrap().to_string(), "66:00:00:00:00:01");
    }
}

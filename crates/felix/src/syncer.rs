//! The datastore syncer (upstream's Felix syncer over the etcd v3 backend): one listing of every
//! v3 resource Felix needs at a single revision, then one watch from that revision.
//!
//! - After the listing: an upsert per resource, then [`SyncEvent::InSync`].
//! - A watch that errors is resumed from the last delivered revision; when that history has
//!   been compacted the syncer lists again and sends the *difference* to what it had sent
//!   (upserts for changed or new resources, deletes for vanished ones), then `InSync` again —
//!   consumers never have to drop their state.
//! - Progress: when the watch is idle and the store's revision is ahead of the last event
//!   (writes to keys Felix does not watch), the syncer confirms it is caught up by comparing a
//!   listing with what it has sent and reports [`SyncEvent::Progress`], so "applied revision"
//!   can reach the store's current revision.
//! - [`SyncEvent::Connection`] reports datastore trouble and recovery for readiness.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use calico_datastore::{KeyValue, KvError, KvStore, Revision, WatchEvent};
use calico_model::keys::RESOURCES_PREFIX;
use calico_model::{AnyResource, KindInfo};
use felix_calc::{ResourceId, Update};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Kinds Felix consumes (staged policies are skipped, as the calculation graph ignores them).
pub const WATCHED_PLURALS: &[&str] = &[
    "workloadendpoints",
    "hostendpoints",
    "globalnetworkpolicies",
    "networkpolicies",
    "tiers",
    "profiles",
    "networksets",
    "globalnetworksets",
    "ippools",
    "felixconfigurations",
    "nodes",
];

/// How long the idle-time datastore probe may take before the connection counts as failing.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the syncer reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEvent {
    /// A resource changed at `revision`.
    Update { update: Update, revision: Revision },
    /// Everything up to `revision` has been sent (after each listing).
    InSync { revision: Revision },
    /// No event is pending up to `revision` (the store moved on for keys Felix does not watch).
    Progress { revision: Revision },
    /// The datastore is reachable (`true`) or failing (`false`).
    Connection(bool),
}

/// Identity of a watched resource key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyId {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

/// Parses `/calico/resources/v3/projectcalico.org/<plural>/[<ns>/]<name>` for watched kinds.
pub fn parse_key(key: &str) -> Option<KeyId> {
    let rest = key.strip_prefix(RESOURCES_PREFIX)?;
    let (plural, rest) = rest.split_once('/')?;
    if !WATCHED_PLURALS.contains(&plural) {
        return None;
    }
    let info = calico_model::KINDS.iter().find(|k| k.plural == plural)?;
    let (namespace, name) = if info.namespaced {
        let (ns, name) = rest.split_once('/')?;
        (ns.to_string(), name.to_string())
    } else {
        (String::new(), rest.to_string())
    };
    (!name.is_empty() && !name.contains('/')).then_some(KeyId {
        kind: info.kind,
        namespace,
        name,
    })
}

fn decode(kv: &KeyValue) -> Result<AnyResource, String> {
    let value: serde_json::Value = serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
    let mut res = AnyResource::from_value(value).map_err(|e| e.to_string())?;
    res.metadata_mut().resource_version = kv.mod_revision.to_string();
    Ok(res)
}

fn info_of(kind: &str) -> Option<&'static KindInfo> {
    calico_model::KINDS.iter().find(|k| k.kind == kind)
}

/// The syncer task. Holds the mod revision of every key it has sent.
pub struct Syncer {
    kv: Arc<dyn KvStore>,
    tx: mpsc::Sender<SyncEvent>,
    /// Key → mod revision of everything sent (the resource identity is parsed back from the
    /// key when it goes: this map has one entry per resource in the cluster).
    sent: BTreeMap<Box<str>, Revision>,
    /// Last revision delivered to the consumer (events, listings or progress).
    revision: Revision,
    connected: Option<bool>,
    retry: Duration,
}

/// Why one watch ended.
enum WatchEnd {
    /// History gone: list again.
    Relist,
    /// Transient error: resume from `self.revision`.
    Resume,
    /// The consumer went away or shutdown was asked.
    Stop,
}

impl Syncer {
    pub fn new(kv: Arc<dyn KvStore>, tx: mpsc::Sender<SyncEvent>) -> Self {
        Syncer {
            kv,
            tx,
            sent: BTreeMap::new(),
            revision: 0,
            connected: None,
            retry: Duration::from_millis(200),
        }
    }

    async fn send(&self, ev: SyncEvent) -> bool {
        self.tx.send(ev).await.is_ok()
    }

    async fn set_connected(&mut self, ok: bool) -> bool {
        if self.connected == Some(ok) {
            return true;
        }
        self.connected = Some(ok);
        if ok {
            info!("datastore connection healthy");
        } else {
            warn!("datastore connection failing");
        }
        self.send(SyncEvent::Connection(ok)).await
    }

    /// Runs until `shutdown` becomes true or the consumer goes away.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut need_list = true;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if need_list {
                match self.list_and_send().await {
                    Ok(true) => need_list = false,
                    Ok(false) => return,
                    Err(e) => {
                        warn!(error = %e, "datastore listing failed; retrying");
                        if !self.set_connected(false).await || !self.backoff(&mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            match self.watch_once(&mut shutdown).await {
                WatchEnd::Stop => return,
                WatchEnd::Relist => need_list = true,
                WatchEnd::Resume => {
                    if !self.set_connected(false).await || !self.backoff(&mut shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    async fn backoff(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let d = self.retry;
        self.retry = (self.retry * 2).min(Duration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = shutdown.changed() => false,
        }
    }

    /// Lists every watched kind at one revision and sends the difference to what was sent.
    async fn list_and_send(&mut self) -> Result<bool, KvError> {
        let listed = self.kv.list(RESOURCES_PREFIX).await?;
        if !self.set_connected(true).await {
            return Ok(false);
        }
        self.retry = Duration::from_millis(200);
        let mut seen = std::collections::HashSet::new();
        for kv in &listed.kvs {
            let Some(id) = parse_key(&kv.key) else {
                continue;
            };
            seen.insert(kv.key.as_str());
            if self
                .sent
                .get(kv.key.as_str())
                .is_some_and(|r| *r == kv.mod_revision)
            {
                continue;
            }
            if !self.send_put(kv, id, listed.revision).await {
                return Ok(false);
            }
        }
        let gone: Vec<Box<str>> = self
            .sent
            .keys()
            .filter(|k| !seen.contains(&***k))
            .cloned()
            .collect();
        for key in gone {
            if !self.send_delete(&key, listed.revision).await {
                return Ok(false);
            }
        }
        self.revision = listed.revision;
        info!(
            revision = listed.revision,
            resources = self.sent.len(),
            "datastore in sync"
        );
        Ok(self
            .send(SyncEvent::InSync {
                revision: listed.revision,
            })
            .await)
    }

    async fn send_put(&mut self, kv: &KeyValue, id: KeyId, revision: Revision) -> bool {
        let update = match decode(kv) {
            Ok(res) => Update::upsert(res),
            Err(e) => {
                // Fail closed like upstream's validation filter: an unreadable resource is
                // treated as deleted.
                warn!(key = %kv.key, error = %e, "undecodable resource treated as deleted");
                Update::Delete(ResourceId::new(id.kind, &id.namespace, &id.name))
            }
        };
        self.sent.insert(kv.key.as_str().into(), kv.mod_revision);
        self.send(SyncEvent::Update { update, revision }).await
    }

    async fn send_delete(&mut self, key: &str, revision: Revision) -> bool {
        if self.sent.remove(key).is_none() {
            return true;
        }
        let Some(id) = parse_key(key) else {
            return true;
        };
        let update = Update::Delete(ResourceId::new(id.kind, &id.namespace, &id.name));
        self.send(SyncEvent::Update { update, revision }).await
    }

    async fn watch_once(&mut self, shutdown: &mut watch::Receiver<bool>) -> WatchEnd {
        let mut stream = match self.kv.watch(RESOURCES_PREFIX, self.revision).await {
            Ok(s) => s,
            Err(KvError::Compacted { .. }) => return WatchEnd::Relist,
            Err(e) => {
                warn!(error = %e, from = self.revision, "datastore watch failed");
                return WatchEnd::Resume;
            }
        };
        if !self.set_connected(true).await {
            return WatchEnd::Stop;
        }
        self.retry = Duration::from_millis(200);
        let mut idle = tokio::time::interval(Duration::from_millis(50));
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_progress_check = tokio::time::Instant::now();
        let mut events_since_tick = true;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return WatchEnd::Stop,
                item = stream.next() => {
                    events_since_tick = true;
                    match item {
                        None => {
                            warn!(from = self.revision, "datastore watch ended; resuming");
                            return WatchEnd::Resume;
                        }
                        Some(Err(KvError::Compacted { .. })) | Some(Ok(WatchEvent::Compacted { .. })) => {
                            warn!(from = self.revision, "watch history compacted; listing again");
                            return WatchEnd::Relist;
                        }
                        Some(Err(e)) => {
                            warn!(error = %e, from = self.revision, "datastore watch error; resuming");
                            return WatchEnd::Resume;
                        }
                        Some(Ok(ev)) => {
                            if !self.on_event(ev).await {
                                return WatchEnd::Stop;
                            }
                        }
                    }
                }
                _ = idle.tick() => {
                    if events_since_tick {
                        events_since_tick = false;
                        continue;
                    }
                    // Idle: confirm progress at most every 200 ms (a cheap revision read; a listing only when the store is ahead).
                    if last_progress_check.elapsed() < Duration::from_millis(200) {
                        continue;
                    }
                    last_progress_check = tokio::time::Instant::now();
                    // The check doubles as a connection probe: backends retry broken watches
                    // internally, so a silent watch alone says nothing about the datastore.
                    let probe = tokio::time::timeout(PROBE_TIMEOUT, self.check_progress()).await;
                    let ok = match probe {
                        Ok(Ok(true)) => true,
                        Ok(Ok(false)) => return WatchEnd::Stop,
                        Ok(Err(e)) => {
                            debug!(error = %e, "progress check failed");
                            false
                        }
                        Err(_) => {
                            debug!("progress check timed out");
                            false
                        }
                    };
                    if !self.set_connected(ok).await {
                        return WatchEnd::Stop;
                    }
                }
            }
        }
    }

    async fn on_event(&mut self, ev: WatchEvent) -> bool {
        let revision = ev.revision();
        let ok = match ev {
            WatchEvent::Put { kv, .. } => match parse_key(&kv.key) {
                Some(id) => self.send_put(&kv, id, revision).await,
                None => true,
            },
            WatchEvent::Delete { key, .. } => self.send_delete(&key, revision).await,
            WatchEvent::Compacted { .. } => true,
        };
        self.revision = self.revision.max(revision);
        ok
    }

    /// When the store is ahead of the watch, list and confirm that nothing Felix watches
    /// changed; then everything up to the listing's revision has been delivered.
    async fn check_progress(&mut self) -> Result<bool, KvError> {
        let current = self.kv.current_revision().await?;
        if current <= self.revision {
            return Ok(true);
        }
        let listed = self.kv.list(RESOURCES_PREFIX).await?;
        let mut count = 0usize;
        for kv in &listed.kvs {
            if parse_key(&kv.key).is_none() {
                continue;
            }
            count += 1;
            if self.sent.get(kv.key.as_str()).copied() != Some(kv.mod_revision) {
                // The watch has not delivered this yet; it will.
                return Ok(true);
            }
        }
        if count != self.sent.len() {
            return Ok(true);
        }
        self.revision = self.revision.max(listed.revision);
        Ok(self
            .send(SyncEvent::Progress {
                revision: listed.revision,
            })
            .await)
    }
}

/// Name of the kind of an update, for metrics and logs.
pub fn update_kind(u: &Update) -> &str {
    match u {
        Update::Upsert(r) => r.kind(),
        Update::Delete(id) => info_of(&id.kind).map_or(id.kind.as_str(), |i| i.kind),
        Update::InSync => "InSync",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use calico_datastore::sqlite::SqliteStore;

    #[test]
    fn keys_of_watched_kinds_parse() {
        let k = parse_key("/calico/resources/v3/projectcalico.org/workloadendpoints/ns1/wep-a")
            .unwrap();
        assert_eq!(
            (k.kind, k.namespace.as_str(), k.name.as_str()),
            ("WorkloadEndpoint", "ns1", "wep-a")
        );
        let k = parse_key("/calico/resources/v3/projectcalico.org/globalnetworkpolicies/default.p")
            .unwrap();
        assert_eq!(
            (k.kind, k.name.as_str()),
            ("GlobalNetworkPolicy", "default.p")
        );
        assert!(parse_key("/calico/resources/v3/projectcalico.org/bgppeers/x").is_none());
        assert!(parse_key("/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26").is_none());
    }

    async fn put(kv: &Arc<dyn KvStore>, yaml: &str) -> Revision {
        let doc = calico_model::load::parse_documents(yaml, "t")
            .unwrap()
            .remove(0);
        let res = AnyResource::from_value(doc).unwrap();
        kv.put(
            &res.key(),
            serde_json::to_vec(&res.to_value()).unwrap(),
            None,
        )
        .await
        .unwrap()
    }

    async fn next(rx: &mut mpsc::Receiver<SyncEvent>) -> SyncEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn lists_then_watches_then_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(dir.path().join("db")).unwrap());
        put(&kv, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t1}\nspec: {order: 10}\n").await;
        let (tx, mut rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(Syncer::new(Arc::clone(&kv), tx).run(stop_rx));
        assert_eq!(next(&mut rx).await, SyncEvent::Connection(true));
        assert!(
            matches!(next(&mut rx).await, SyncEvent::Update { update: Update::Upsert(r), .. } if r.metadata().name == "t1")
        );
        let SyncEvent::InSync { revision: r0 } = next(&mut rx).await else {
            panic!()
        };
        let r1 = put(&kv, "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t2}\nspec: {order: 20}\n").await;
        assert!(r1 > r0);
        match next(&mut rx).await {
            SyncEvent::Update {
                update: Update::Upsert(r),
                revision,
            } => {
                assert_eq!(r.metadata().name, "t2");
                assert_eq!(revision, r1);
            }
            other => panic!("{other:?}"),
        }
        kv.delete("/calico/resources/v3/projectcalico.org/tiers/t1", None)
            .await
            .unwrap();
        assert!(
            matches!(next(&mut rx).await, SyncEvent::Update { update: Update::Delete(id), .. } if id.name == "t1")
        );
        // A write Felix does not watch: progress catches up with it.
        let r3 = kv
            .put("/calico/ipam/v2/host/x", b"{}".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(next(&mut rx).await, SyncEvent::Progress { revision: r3 });
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn relisting_sends_only_the_difference() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(dir.path().join("db")).unwrap());
        let tier = |name: &str, order: u32| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {name}}}\nspec: {{order: {order}}}\n"
            )
        };
        put(&kv, &tier("t1", 1)).await;
        put(&kv, &tier("t2", 2)).await;
        put(&kv, &tier("t3", 3)).await;
        let (tx, mut rx) = mpsc::channel(64);
        let mut s = Syncer::new(Arc::clone(&kv), tx);
        assert!(s.list_and_send().await.unwrap());
        let mut first = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            first.push(ev);
        }
        assert_eq!(first.len(), 5, "{first:?}"); // connection, 3 upserts, in-sync
        // Changes while "disconnected": t1 deleted, t2 modified, t4 added, t3 untouched.
        kv.delete("/calico/resources/v3/projectcalico.org/tiers/t1", None)
            .await
            .unwrap();
        put(&kv, &tier("t2", 20)).await;
        put(&kv, &tier("t4", 4)).await;
        assert!(s.list_and_send().await.unwrap());
        let mut names = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            match ev {
                SyncEvent::Update {
                    update: Update::Upsert(r),
                    ..
                } => names.push(format!("+{}", r.metadata().name)),
                SyncEvent::Update {
                    update: Update::Delete(id),
                    ..
                } => names.push(format!("-{}", id.name)),
                SyncEvent::InSync { .. } => names.push("in-sync".into()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(names, vec!["+t2", "+t4", "-t1", "in-sync"]);
    }

    #[tokio::test]
    async fn compacted_history_means_relist() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db")).unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(store.clone());
        for n in ["a", "b", "c"] {
            put(&kv, &format!("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {{name: {n}}}\nspec: {{order: 1}}\n")).await;
        }
        let rev = kv.current_revision().await.unwrap();
        store.compact(rev).await.unwrap();
        let (tx, _rx) = mpsc::channel(64);
        let mut s = Syncer::new(Arc::clone(&kv), tx);
        s.revision = 1; // as if the syncer had been disconnected since revision 1
        let (_stop_tx, mut stop_rx) = watch::channel(false);
        let end = tokio::time::timeout(Duration::from_secs(5), s.watch_once(&mut stop_rx))
            .await
            .unwrap();
        assert!(matches!(end, WatchEnd::Relist));
    }

    /// A store whose reads fail while `down` is set (the watch itself stays open, as a
    /// backend that retries internally would keep it).
    struct Flaky {
        inner: SqliteStore,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), KvError> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                Err(KvError::Unavailable("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait::async_trait]
    impl KvStore for Flaky {
        fn backend_name(&self) -> &'static str {
            "flaky"
        }
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
            self.check()?;
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<calico_datastore::ListResult, KvError> {
            self.check()?;
            self.inner.list(prefix).await
        }
        async fn create(&self, k: &str, v: Vec<u8>, l: Option<i64>) -> Result<Revision, KvError> {
            self.inner.create(k, v, l).await
        }
        async fn update(
            &self,
            k: &str,
            v: Vec<u8>,
            r: Revision,
            l: Option<i64>,
        ) -> Result<Revision, KvError> {
            self.inner.update(k, v, r, l).await
        }
        async fn put(&self, k: &str, v: Vec<u8>, l: Option<i64>) -> Result<Revision, KvError> {
            self.inner.put(k, v, l).await
        }
        async fn delete(&self, k: &str, r: Option<Revision>) -> Result<KeyValue, KvError> {
            self.inner.delete(k, r).await
        }
        async fn txn(&self, ops: Vec<calico_datastore::TxnOp>) -> Result<Revision, KvError> {
            self.inner.txn(ops).await
        }
        async fn grant_lease(&self, ttl: Duration) -> Result<i64, KvError> {
            self.inner.grant_lease(ttl).await
        }
        async fn keep_alive(&self, lease: i64) -> Result<(), KvError> {
            self.inner.keep_alive(lease).await
        }
        async fn revoke_lease(&self, lease: i64) -> Result<(), KvError> {
            self.inner.revoke_lease(lease).await
        }
        async fn watch(
            &self,
            prefix: &str,
            after: Revision,
        ) -> Result<calico_datastore::WatchStream, KvError> {
            self.inner.watch(prefix, after).await
        }
        async fn current_revision(&self) -> Result<Revision, KvError> {
            self.check()?;
            self.inner.current_revision().await
        }
    }

    #[tokio::test]
    async fn a_failing_datastore_is_reported_and_recovery_too() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            inner: SqliteStore::open(dir.path().join("db")).unwrap(),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let kv: Arc<dyn KvStore> = flaky.clone();
        let (tx, mut rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(Syncer::new(Arc::clone(&kv), tx).run(stop_rx));
        assert_eq!(next(&mut rx).await, SyncEvent::Connection(true));
        assert!(matches!(next(&mut rx).await, SyncEvent::InSync { .. }));
        flaky.down.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(next(&mut rx).await, SyncEvent::Connection(false));
        flaky
            .down
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(next(&mut rx).await, SyncEvent::Connection(true));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}

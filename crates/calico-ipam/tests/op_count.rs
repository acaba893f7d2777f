//! How many datastore round trips one allocation costs (a regression guard for latency: every
//! round trip is ~0.1 ms on SQLite and ~0.5 ms on etcd).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use calico_datastore::{
    KeyValue, KvError, KvStore, LeaseId, ListResult, Revision, TxnOp, WatchStream,
};
use common::*;

#[derive(Default)]
struct Counts {
    get: AtomicUsize,
    list: AtomicUsize,
    write: AtomicUsize,
}

struct Counting {
    inner: Arc<dyn KvStore>,
    counts: Arc<Counts>,
}

#[async_trait::async_trait]
impl KvStore for Counting {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResult, KvError> {
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }
    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        self.counts.write.fetch_add(1, Ordering::Relaxed);
        self.inner.create(key, value, lease).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        self.counts.write.fetch_add(1, Ordering::Relaxed);
        self.inner
            .update(key, value, expected_revision, lease)
            .await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        self.counts.write.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, value, lease).await
    }
    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<KeyValue, KvError> {
        self.counts.write.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key, expected_revision).await
    }
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<Revision, KvError> {
        self.counts.write.fetch_add(1, Ordering::Relaxed);
        self.inner.txn(ops).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.inner.revoke_lease(lease).await
    }
    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream, KvError> {
        self.inner.watch(prefix, after_revision).await
    }
    async fn current_revision(&self) -> Result<Revision, KvError> {
        self.inner.current_revision().await
    }
}

#[tokio::test]
async fn steady_state_allocation_round_trips() {
    let dir = tempdir();
    let counts = Arc::new(Counts::default());
    let kv: Arc<dyn KvStore> = Arc::new(Counting {
        inner: sqlite(dir.path()),
        counts: counts.clone(),
    });
    let c = client(kv, vec![pool("p", "10.0.0.0/16", 26)]);
    c.auto_assign(v4("n", "first", 1)).await.unwrap(); // claims the block
    let before = (
        counts.get.load(Ordering::Relaxed),
        counts.list.load(Ordering::Relaxed),
        counts.write.load(Ordering::Relaxed),
    );
    let n = 20;
    for i in 0..n {
        c.auto_assign(v4("n", &format!("h{i}"), 1)).await.unwrap();
    }
    let gets = (counts.get.load(Ordering::Relaxed) - before.0) / n;
    let lists = (counts.list.load(Ordering::Relaxed) - before.1) / n;
    let writes = (counts.write.load(Ordering::Relaxed) - before.2) / n;
    println!("per allocation: {gets} gets, {lists} lists, {writes} writes");
    assert_eq!(writes, 1, "one transaction per allocation");
    assert!(
        gets + lists <= 6,
        "{gets} gets + {lists} lists per allocation"
    );
}

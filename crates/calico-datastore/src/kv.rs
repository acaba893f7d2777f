//! The revisioned key/value contract both backends implement, and that the conformance suite
//! (`tests/conformance.rs`) checks for each.
//!
//! Semantics follow etcd v3: one store-wide revision counter, incremented by every write; each key
//! carries the revision that created it and the one that last modified it; compare-and-swap is on
//! the key's `mod_revision`; a watch replays every change after a given revision, in revision
//! order, then streams new ones.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

/// Store-wide revision. Strictly increasing; `0` means "none".
pub type Revision = i64;

/// A lease id; keys attached to a lease are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// Result of a prefix listing: the keys, sorted by key, and the store revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or updated. `prev` is the value before, when the backend knows it.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A key was deleted (explicitly or by lease expiry) at `revision`.
    Delete {
        key: String,
        revision: Revision,
        prev: Option<KeyValue>,
    },
    /// The watch cannot continue from where it was: history before `compact_revision` is gone.
    /// The consumer must list again and watch from the listing's revision. Always the last
    /// item of its stream.
    Compacted { compact_revision: Revision },
}

impl WatchEvent {
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Compacted { compact_revision } => *compact_revision,
        }
    }
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Put { kv, .. } => Some(&kv.key),
            WatchEvent::Delete { key, .. } => Some(key),
            WatchEvent::Compacted { .. } => None,
        }
    }
}

/// A stream of watch events. It ends only when dropped or on a fatal error; transient
/// disconnects are retried inside the backend and resumed from the last revision delivered.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, KvError>> + Send>>;

/// One operation of an atomic multi-key transaction ([`KvStore::txn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Create; the transaction fails with [`KvError::AlreadyExists`] if the key exists.
    Create {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Compare-and-swap update on the key's `mod_revision`.
    Update {
        key: String,
        value: Vec<u8>,
        expected_revision: Revision,
        lease: Option<LeaseId>,
    },
    /// Unconditional write.
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Delete, optionally conditional on the key's `mod_revision`; the key must exist.
    Delete {
        key: String,
        expected_revision: Option<Revision>,
    },
}

/// Errors of the key/value layer. Every variant names the key it concerns where there is one.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("key {key}: already exists")]
    AlreadyExists { key: String },
    #[error("key {key}: not found")]
    NotFound { key: String },
    /// Compare-and-swap failed: the key's revision is not the one expected.
    #[error("key {key}: revision conflict (expected {expected}, found {actual})")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("lease {0}: not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("revision {requested} has been compacted (oldest available {compact_revision})")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    #[error("datastore: {0}")]
    Backend(String),
}

impl KvError {
    /// Whether retrying the same operation later may succeed (connection problems, busy store).
    pub fn is_transient(&self) -> bool {
        matches!(self, KvError::Unavailable(_))
    }
}

/// The revisioned key/value store.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Which backend this is: `embedded` or `etcdv3`.
    fn backend_name(&self) -> &'static str;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError>;

    /// Every key starting with `prefix`, sorted by key, and the revision of the read.
    async fn list(&self, prefix: &str) -> Result<ListResult, KvError>;

    /// Creates `key`; fails with [`KvError::AlreadyExists`] if it exists. Returns the new
    /// revision.
    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError>;

    /// Compare-and-swap update: succeeds only if the key's `mod_revision` equals
    /// `expected_revision` ([`KvError::Conflict`] otherwise, [`KvError::NotFound`] if absent).
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError>;

    /// Unconditional write (create or overwrite).
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError>;

    /// Deletes `key`, only if its `mod_revision` equals `expected_revision` when one is given.
    /// Returns the deleted key/value. [`KvError::NotFound`] if absent.
    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<KeyValue, KvError>;

    /// Applies every operation atomically at one new revision, or none of them: the first failed
    /// condition is returned as the error (`AlreadyExists`, `NotFound` or `Conflict` naming its
    /// key). Keys must be distinct.
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<Revision, KvError>;

    /// Grants a lease that expires `ttl` after the last keep-alive. etcd counts whole seconds
    /// (a shorter or fractional `ttl` is rounded up); the embedded store keeps milliseconds.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError>;

    /// Refreshes a lease. [`KvError::LeaseNotFound`] once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError>;

    /// Revokes a lease, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError>;

    /// Watches keys under `prefix`, delivering every change with revision > `after_revision`
    /// in revision order (use the revision of a [`KvStore::list`] to continue from it). The
    /// changes of one revision (one [`KvStore::txn`]) arrive together, in op order.
    ///
    /// When the history after `after_revision` is no longer kept (it was compacted), the
    /// stream yields one [`WatchEvent::Compacted`] and ends; a watch from
    /// `compact_revision - 1` or later is accepted. Lease expiry and revocation appear as
    /// [`WatchEvent::Delete`]s.
    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream, KvError>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision, KvError>;
}

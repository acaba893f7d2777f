//! The embedded backend: one SQLite file (WAL mode), shared by every Calico process of a host.
//!
//! The design follows k3s's kine. Three tables hold the state:
//! - `kv`: the current keys with their create/mod revisions and lease;
//! - `history`: one row per change (put or delete, with the previous value), keyed by
//!   `(revision, seq)`, which watches replay;
//! - `meta`: the store revision, the compaction revision and the lease id counter;
//! - `lease`: granted leases with their TTL and wall-clock deadline.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction that first reaps expired leases (each reaped
//! lease deletes its keys at a revision of its own, like etcd's lease revoke), then checks every
//! condition of the requested operations before changing anything, then applies them at one new
//! revision. Because the conditions are checked before any mutation, a failed condition still
//! commits the reaping and nothing else.
//!
//! Several processes may open the same file: SQLite's file locks serialise writers (callers wait
//! up to the busy timeout), WAL readers never block. Watches learn about commits of other
//! processes by polling the revision row every few milliseconds on one thread per store, which
//! also reaps expired leases while anyone watches. Commits of this process wake watchers at once.
//!
//! History is trimmed to the last [`SqliteOptions::history_revisions`] revisions; a watch that
//! asks for an older revision gets [`WatchEvent::Compacted`].
//!
//! Short-lived processes (one CNI request each) open and close the file all the time, so
//! closing does not checkpoint: SQLite's default would, when the closer is the last process
//! with the file open, copy the WAL into the database, fsync both and delete the WAL, which the
//! next opener then recreates. Instead the WAL is checkpointed by whichever commit takes it past
//! [`SqliteOptions::wal_autocheckpoint_pages`]; that bound also caps what the next opener has to
//! read back (SQLite rebuilds the WAL index from the WAL when no other process has the file
//! open).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::config::DbConfig;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::kv::{
    KeyValue, KvError, KvStore, LeaseId, ListResult, Revision, TxnOp, WatchEvent, WatchStream,
};

/// Where the agent, the CNI plugin and calicoctl find the store unless configured otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/calico/calico.db";

/// Tuning knobs of the embedded store. [`Default`] suits production.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a writer waits for another process's write transaction before giving up with
    /// [`KvError::Unavailable`].
    pub busy_timeout: Duration,
    /// Revisions of history kept for watches; older ones are compacted away in batches.
    /// `0` disables automatic compaction.
    pub history_revisions: i64,
    /// How often watchers look for commits of other processes (and reap expired leases).
    pub poll_interval: Duration,
    /// `synchronous=FULL` (fsync on every commit) when true, `NORMAL` otherwise. `NORMAL` in WAL
    /// mode survives process crashes but may lose the last commits on power loss (the file
    /// stays consistent: it comes back at an earlier revision). The setting is per process: a
    /// later commit of a `FULL` process makes the earlier commits durable too.
    pub fsync_every_commit: bool,
    /// WAL size (in pages of 4 KiB) past which a commit checkpoints it into the database.
    pub wal_autocheckpoint_pages: u32,
    /// Run every query on the calling thread instead of tokio's blocking pool, with reads on the
    /// writer's connection. For processes that do one thing at a time on a current-thread
    /// runtime (the CNI plugin), where the thread hand-offs cost more than the queries; a query
    /// that waits for another process's write lock then blocks the whole runtime, so a
    /// long-running agent must not set it.
    pub run_inline: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(10),
            history_revisions: 10_000,
            poll_interval: Duration::from_millis(5),
            fsync_every_commit: true,
            wal_autocheckpoint_pages: 256,
            run_inline: false,
        }
    }
}

/// The embedded SQLite store. Cheap to clone; clones share connections and the watch poller.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

/// What a consistency check of the file found ([`SqliteStore::check_consistency`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyReport {
    pub revision: Revision,
    pub compact_revision: Revision,
    pub keys: usize,
    pub history_rows: usize,
    /// Every problem found; empty when the store is consistent.
    pub problems: Vec<String>,
}

struct Inner {
    path: PathBuf,
    opts: SqliteOptions,
    /// In-process writers queue here instead of in SQLite's sleeping busy handler.
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Latest revision known to this process; watchers wait on it.
    revision_tx: watch::Sender<Revision>,
    poller_started: std::sync::Once,
}

/// Outcome of a write closure: `Err` is a SQL failure (roll back), `Ok(Err)` a failed
/// condition (commit what was reaped, nothing else).
type WriteResult<T> = Result<Result<T, KvError>, rusqlite::Error>;

enum WatchBatch {
    Compacted(Revision),
    /// Changes in `(after, upto]`; `more` when the store is already past `upto`.
    Events {
        events: Vec<WatchEvent>,
        upto: Revision,
        more: bool,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES
    ('schema_version', 1), ('revision', 0), ('compact_revision', 0), ('next_lease', 1);
CREATE TABLE IF NOT EXISTS kv (
    key             BLOB PRIMARY KEY,
    value           BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision    INTEGER NOT NULL,
    lease           INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    revision             INTEGER NOT NULL,
    seq                  INTEGER NOT NULL,
    key                  BLOB NOT NULL,
    deleted              INTEGER NOT NULL,
    value                BLOB,
    create_revision      INTEGER,
    lease                INTEGER,
    prev_value           BLOB,
    prev_create_revision INTEGER,
    prev_mod_revision    INTEGER,
    prev_lease           INTEGER,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lease (
    id          INTEGER PRIMARY KEY,
    ttl_ms      INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS lease_by_deadline ON lease (deadline_ms);
";

/// The layout [`SCHEMA`] creates; a file with another version is refused.
const SCHEMA_VERSION: i64 = 1;

/// Revisions read per watch catch-up step, so a far-behind watcher does not load everything.
const WATCH_BATCH_REVISIONS: i64 = 512;
const WATCH_CHANNEL: usize = 1024;

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with default options. The parent
    /// directory is created.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens the store at [`DEFAULT_PATH`].
    pub fn open_default() -> Result<Self, KvError> {
        Self::open(DEFAULT_PATH)
    }

    pub fn open_with(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self, KvError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                KvError::Backend(format!(
                    "sqlite store {}: create directory: {e}",
                    path.display()
                ))
            })?;
        }
        let mut writer = open_connection(&path, &opts)?;
        init_schema(&mut writer, &path)?;
        let version: i64 = writer
            .query_row(
                "SELECT value FROM meta WHERE name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&path, e))?;
        if version != SCHEMA_VERSION {
            return Err(KvError::Backend(format!(
                "sqlite store {}: schema version {version} is not the supported {SCHEMA_VERSION}",
                path.display()
            )));
        }
        let revision = writer
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(|e| sql_err(&path, e))?;
        let (revision_tx, _) = watch::channel(revision);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                opts,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                revision_tx,
                poller_started: std::sync::Once::new(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Drops history before `revision`: later watches from an older revision get
    /// [`WatchEvent::Compacted`]. Compacting to a revision not yet written is an error.
    pub async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let current = meta_get(tx, "revision")?;
                if revision > current {
                    return Ok(Err(KvError::Backend(format!(
                        "compact to revision {revision}: store is only at revision {current}"
                    ))));
                }
                compact_to(tx, revision)?;
                Ok(Ok(()))
            })
        })
        .await
    }

    /// Checks the file: SQLite's integrity check, and that the revision counter, the history
    /// and the current keys agree (every key's revisions match its last history row, no
    /// history beyond the revision counter, no key attached to a missing lease).
    pub async fn check_consistency(&self) -> Result<ConsistencyReport, KvError> {
        self.blocking(|inner| inner.read(check_consistency)).await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, KvError> + Send + 'static,
    {
        if self.inner.opts.run_inline {
            return f(&self.inner);
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| KvError::Backend(format!("sqlite store: blocking task failed: {e}")))?
    }

    async fn write_ops(&self, ops: Vec<TxnOp>) -> Result<(Revision, Vec<KeyValue>), KvError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| apply_ops(tx, &ops, inner.opts.history_revisions))
        })
        .await
    }

    /// Reaps expired leases first when any exist, so reads never show keys whose lease is over.
    async fn read_fresh<T, F>(&self, f: F) -> Result<T, KvError>
    where
        T: Send + 'static,
        F: Fn(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.blocking(move |inner| {
            let now = now_ms();
            let fresh = inner.read(|tx| {
                if has_expired_lease(tx, now)? {
                    Ok(None)
                } else {
                    f(tx).map(Some)
                }
            })?;
            match fresh {
                Some(v) => Ok(v),
                None => {
                    inner.write(|_, _| Ok(Ok(())))?;
                    inner.read(&f)
                }
            }
        })
        .await
    }

    fn start_poller(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.poller_started.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("calico-kv-poll".into())
                .spawn(move || poll_loop(weak));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "sqlite store: cannot start the watch poller thread");
            }
        });
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Runs `f` in one IMMEDIATE transaction after reaping expired leases, commits unless `f`
    /// reports a SQL failure, and wakes this process's watchers.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>, i64) -> WriteResult<T>,
    ) -> Result<T, KvError> {
        // A panic while the lock was held dropped (rolled back) its transaction, so the
        // connection is still usable: ignore the poison.
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (result, revision) = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now_ms();
            reap_expired(&tx, now, self.opts.history_revisions)?;
            let result = f(&tx, now)?;
            let revision = meta_get(&tx, "revision")?;
            tx.commit()?;
            Ok((result, revision))
        })()
        .map_err(|e| sql_err(&self.path, e))?;
        drop(conn);
        self.publish(revision);
        result
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, KvError> {
        if self.opts.run_inline {
            let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            return (|| {
                let tx = conn.transaction()?;
                let v = f(&tx)?;
                tx.commit()?;
                Ok(v)
            })()
            .map_err(|e| sql_err(&self.path, e));
        }
        let pooled = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path, &self.opts)?,
        };
        let result = (|| {
            let tx = conn.transaction()?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })()
        .map_err(|e| sql_err(&self.path, e));
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 8
        {
            pool.push(conn);
        }
        result
    }

    fn publish(&self, revision: Revision) {
        self.revision_tx.send_if_modified(|cur| {
            if revision > *cur {
                *cur = revision;
                true
            } else {
                false
            }
        });
    }
}

#[async_trait::async_trait]
impl KvStore for SqliteStore {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let key = key.to_owned();
        self.read_fresh(move |tx| get_kv(tx, &key)).await
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, KvError> {
        let prefix = prefix.to_owned();
        self.read_fresh(move |tx| {
            let revision = meta_get(tx, "revision")?;
            let (lo, hi) = prefix_range(&prefix);
            let mut stmt = tx.prepare_cached(
                "SELECT key, value, create_revision, mod_revision, lease FROM kv
                 WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key",
            )?;
            let kvs = stmt
                .query_map(params![lo, hi], row_to_kv)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ListResult { kvs, revision })
        })
        .await
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        let op = TxnOp::Create {
            key: key.to_owned(),
            value,
            lease,
        };
        Ok(self.write_ops(vec![op]).await?.0)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Revision,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        let op = TxnOp::Update {
            key: key.to_owned(),
            value,
            expected_revision,
            lease,
        };
        Ok(self.write_ops(vec![op]).await?.0)
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        let op = TxnOp::Put {
            key: key.to_owned(),
            value,
            lease,
        };
        Ok(self.write_ops(vec![op]).await?.0)
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<KeyValue, KvError> {
        let op = TxnOp::Delete {
            key: key.to_owned(),
            expected_revision,
        };
        let (_, mut deleted) = self.write_ops(vec![op]).await?;
        deleted.pop().ok_or_else(|| {
            KvError::Backend(format!("key {key}: delete returned no previous value"))
        })
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<Revision, KvError> {
        check_distinct_keys(&ops)?;
        Ok(self.write_ops(ops).await?.0)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self.blocking(move |inner| {
            inner.write(|tx, now| {
                let id = meta_get(tx, "next_lease")?;
                meta_set(tx, "next_lease", id + 1)?;
                tx.execute(
                    "INSERT INTO lease (id, ttl_ms, deadline_ms) VALUES (?1, ?2, ?3)",
                    params![id, ttl_ms, now.saturating_add(ttl_ms)],
                )?;
                Ok(Ok(id))
            })
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        self.blocking(move |inner| {
            // Expired leases were reaped by `write` before this runs.
            inner.write(|tx, now| {
                let n = tx.execute(
                    "UPDATE lease SET deadline_ms = ?2 + ttl_ms WHERE id = ?1",
                    params![lease, now],
                )?;
                Ok(if n == 0 {
                    Err(KvError::LeaseNotFound(lease))
                } else {
                    Ok(())
                })
            })
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                if !lease_exists(tx, lease)? {
                    return Ok(Err(KvError::LeaseNotFound(lease)));
                }
                drop_lease(tx, lease, inner.opts.history_revisions)?;
                Ok(Ok(()))
            })
        })
        .await
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream, KvError> {
        self.start_poller();
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let store = self.clone();
        let prefix = prefix.to_owned();
        let revisions = self.inner.revision_tx.subscribe();
        tokio::spawn(async move {
            if let Err(e) = store
                .watch_loop(prefix, after_revision, revisions, &tx)
                .await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, KvError> {
        self.read_fresh(|tx| meta_get(tx, "revision")).await
    }
}

impl SqliteStore {
    async fn watch_loop(
        &self,
        prefix: String,
        after_revision: Revision,
        mut revisions: watch::Receiver<Revision>,
        out: &mpsc::Sender<Result<WatchEvent, KvError>>,
    ) -> Result<(), KvError> {
        let mut last = after_revision;
        loop {
            let p = prefix.clone();
            let batch = match self
                .blocking(move |inner| inner.read(|tx| read_watch_batch(tx, &p, last)))
                .await
            {
                Ok(batch) => batch,
                // A locked file (e.g. another process recovering the WAL) passes: retry.
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, last, "sqlite store: watch read failed, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(self.inner.opts.poll_interval * 4) => continue,
                        () = out.closed() => return Ok(()),
                    }
                }
                Err(e) => return Err(e),
            };
            match batch {
                WatchBatch::Compacted(compact_revision) => {
                    let _ = out
                        .send(Ok(WatchEvent::Compacted { compact_revision }))
                        .await;
                    return Ok(());
                }
                WatchBatch::Events { events, upto, more } => {
                    for ev in events {
                        if out.send(Ok(ev)).await.is_err() {
                            return Ok(());
                        }
                    }
                    last = last.max(upto);
                    if more {
                        continue;
                    }
                }
            }
            loop {
                if *revisions.borrow_and_update() > last {
                    break;
                }
                tokio::select! {
                    changed = revisions.changed() => {
                        if changed.is_err() {
                            return Ok(());
                        }
                    }
                    () = out.closed() => return Ok(()),
                }
            }
        }
    }
}

fn open_connection(path: &Path, opts: &SqliteOptions) -> Result<Connection, KvError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| sql_err(path, e))?;
    conn.busy_timeout(opts.busy_timeout)
        .map_err(|e| sql_err(path, e))?;
    // See the module documentation: the WAL outlives the connection.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| sql_err(path, e))?;
    conn.pragma_update(None, "wal_autocheckpoint", opts.wal_autocheckpoint_pages)
        .map_err(|e| sql_err(path, e))?;
    let sync = if opts.fsync_every_commit {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(|e| sql_err(path, e))?;
    Ok(conn)
}

fn init_schema(conn: &mut Connection, path: &Path) -> Result<(), KvError> {
    // Switching to WAL needs a moment of exclusive access; a concurrent opener may hold the
    // file, so retry briefly (the busy handler does not cover every path of this pragma).
    let mut attempt = 0;
    loop {
        let res = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .and_then(|mode| {
                // Every process opens the file; only the first needs the write lock for this.
                if schema_present(conn)? {
                    return Ok(mode);
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute_batch(SCHEMA)?;
                tx.commit()?;
                Ok(mode)
            });
        match res {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(KvError::Backend(format!(
                    "sqlite store {}: cannot enable WAL journal (got {mode})",
                    path.display()
                )));
            }
            Err(e) if is_busy(&e) && attempt < 50 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(sql_err(path, e)),
        }
    }
}

/// Every table and index of [`SCHEMA`] exists (then the meta rows do too: they were inserted
/// in the transaction that created the tables).
fn schema_present(conn: &Connection) -> rusqlite::Result<bool> {
    const OBJECTS: [&str; 6] = [
        "meta",
        "kv",
        "kv_by_lease",
        "history",
        "lease",
        "lease_by_deadline",
    ];
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name IN (?1, ?2, ?3, ?4, ?5, ?6)",
        OBJECTS,
        |r| r.get(0),
    )?;
    Ok(n == OBJECTS.len() as i64)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn sql_err(path: &Path, e: rusqlite::Error) -> KvError {
    if is_busy(&e) {
        KvError::Unavailable(format!("sqlite store {}: {e}", path.display()))
    } else {
        KvError::Backend(format!("sqlite store {}: {e}", path.display()))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `[lo, hi)` of the byte strings starting with `prefix`; `hi` is `None` when unbounded.
fn prefix_range(prefix: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let lo = prefix.as_bytes().to_vec();
    let mut hi = lo.clone();
    while let Some(last) = hi.pop() {
        if last < 0xff {
            hi.push(last + 1);
            return (lo, Some(hi));
        }
    }
    (lo, None)
}

fn check_distinct_keys(ops: &[TxnOp]) -> Result<(), KvError> {
    let mut seen = std::collections::BTreeSet::new();
    for op in ops {
        let key = op_key(op);
        if !seen.insert(key) {
            return Err(KvError::Backend(format!(
                "txn: key {key} appears more than once"
            )));
        }
    }
    Ok(())
}

pub(crate) fn op_key(op: &TxnOp) -> &str {
    match op {
        TxnOp::Create { key, .. }
        | TxnOp::Update { key, .. }
        | TxnOp::Put { key, .. }
        | TxnOp::Delete { key, .. } => key,
    }
}

fn key_from_bytes(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn row_to_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: key_from_bytes(r.get(0)?)?,
        value: r.get(1)?,
        create_revision: r.get(2)?,
        mod_revision: r.get(3)?,
        lease: r.get(4)?,
    })
}

fn meta_get(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
}

fn meta_set(tx: &Transaction<'_>, name: &str, value: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
        .execute(params![name, value])?;
    Ok(())
}

fn get_kv(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    tx.prepare_cached(
        "SELECT key, value, create_revision, mod_revision, lease FROM kv WHERE key = ?1",
    )?
    .query_row([key.as_bytes()], row_to_kv)
    .optional()
}

fn lease_exists(tx: &Transaction<'_>, lease: LeaseId) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM lease WHERE id = ?1")?
        .query_row([lease], |_| Ok(()))
        .optional()?
        .is_some())
}

fn has_expired_lease(tx: &Transaction<'_>, now: i64) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM lease WHERE deadline_ms <= ?1 LIMIT 1")?
        .query_row([now], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Takes the next revision and trims history when it has grown past the retention batch.
fn next_revision(tx: &Transaction<'_>, keep: i64) -> rusqlite::Result<Revision> {
    let rev = meta_get(tx, "revision")? + 1;
    meta_set(tx, "revision", rev)?;
    if keep > 0 {
        let compact = meta_get(tx, "compact_revision")?;
        let batch = (keep / 10).max(1);
        if rev - compact.max(1) >= keep + batch {
            compact_to(tx, rev - keep + 1)?;
        }
    }
    Ok(rev)
}

fn compact_to(tx: &Transaction<'_>, revision: Revision) -> rusqlite::Result<()> {
    if revision <= meta_get(tx, "compact_revision")? {
        return Ok(());
    }
    tx.prepare_cached("DELETE FROM history WHERE revision < ?1")?
        .execute([revision])?;
    meta_set(tx, "compact_revision", revision)
}

fn record_put(
    tx: &Transaction<'_>,
    revision: Revision,
    seq: i64,
    kv: &KeyValue,
    prev: Option<&KeyValue>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO kv (key, value, create_revision, mod_revision, lease)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value,
             create_revision = excluded.create_revision, mod_revision = excluded.mod_revision,
             lease = excluded.lease",
    )?
    .execute(params![
        kv.key.as_bytes(),
        kv.value,
        kv.create_revision,
        kv.mod_revision,
        kv.lease
    ])?;
    record_history(tx, revision, seq, &kv.key, Some(kv), prev)
}

fn record_delete(
    tx: &Transaction<'_>,
    revision: Revision,
    seq: i64,
    prev: &KeyValue,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?
        .execute([prev.key.as_bytes()])?;
    record_history(tx, revision, seq, &prev.key, None, Some(prev))
}

fn record_history(
    tx: &Transaction<'_>,
    revision: Revision,
    seq: i64,
    key: &str,
    kv: Option<&KeyValue>,
    prev: Option<&KeyValue>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO history (revision, seq, key, deleted, value, create_revision, lease,
             prev_value, prev_create_revision, prev_mod_revision, prev_lease)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        revision,
        seq,
        key.as_bytes(),
        kv.is_none(),
        kv.map(|k| &k.value),
        kv.map(|k| k.create_revision),
        kv.and_then(|k| k.lease),
        prev.map(|p| &p.value),
        prev.map(|p| p.create_revision),
        prev.map(|p| p.mod_revision),
        prev.and_then(|p| p.lease),
    ])?;
    Ok(())
}

/// Deletes a lease and its keys; the deletions share one new revision.
fn drop_lease(tx: &Transaction<'_>, lease: LeaseId, keep: i64) -> rusqlite::Result<()> {
    let doomed = tx
        .prepare_cached(
            "SELECT key, value, create_revision, mod_revision, lease FROM kv
             WHERE lease = ?1 ORDER BY key",
        )?
        .query_map([lease], row_to_kv)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !doomed.is_empty() {
        let rev = next_revision(tx, keep)?;
        for (seq, kv) in (0_i64..).zip(&doomed) {
            record_delete(tx, rev, seq, kv)?;
        }
    }
    tx.prepare_cached("DELETE FROM lease WHERE id = ?1")?
        .execute([lease])?;
    Ok(())
}

fn reap_expired(tx: &Transaction<'_>, now: i64, keep: i64) -> rusqlite::Result<usize> {
    let expired = tx
        .prepare_cached("SELECT id FROM lease WHERE deadline_ms <= ?1 ORDER BY deadline_ms, id")?
        .query_map([now], |r| r.get::<_, LeaseId>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for &lease in &expired {
        tracing::debug!(lease, "sqlite store: lease expired, deleting its keys");
        drop_lease(tx, lease, keep)?;
    }
    Ok(expired.len())
}

/// Checks every condition, then applies every op at one new revision. Returns the revision
/// (the current one when `ops` is empty) and the deleted key/values, in op order.
fn apply_ops(
    tx: &Transaction<'_>,
    ops: &[TxnOp],
    keep: i64,
) -> WriteResult<(Revision, Vec<KeyValue>)> {
    let mut current = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op_key(op);
        let existing = get_kv(tx, key)?;
        let lease = match op {
            TxnOp::Create { lease, .. }
            | TxnOp::Update { lease, .. }
            | TxnOp::Put { lease, .. } => *lease,
            TxnOp::Delete { .. } => None,
        };
        let failed = match (op, &existing) {
            (TxnOp::Create { .. }, Some(_)) => Some(KvError::AlreadyExists {
                key: key.to_owned(),
            }),
            (TxnOp::Update { .. } | TxnOp::Delete { .. }, None) => Some(KvError::NotFound {
                key: key.to_owned(),
            }),
            (
                TxnOp::Update {
                    expected_revision, ..
                },
                Some(kv),
            )
            | (
                TxnOp::Delete {
                    expected_revision: Some(expected_revision),
                    ..
                },
                Some(kv),
            ) if kv.mod_revision != *expected_revision => Some(KvError::Conflict {
                key: key.to_owned(),
                expected: *expected_revision,
                actual: kv.mod_revision,
            }),
            _ => None,
        };
        if let Some(e) = failed {
            return Ok(Err(e));
        }
        if let Some(lease) = lease
            && !lease_exists(tx, lease)?
        {
            return Ok(Err(KvError::LeaseNotFound(lease)));
        }
        current.push(existing);
    }
    if ops.is_empty() {
        return Ok(Ok((meta_get(tx, "revision")?, Vec::new())));
    }
    let rev = next_revision(tx, keep)?;
    let mut deleted = Vec::new();
    for ((seq, op), existing) in (0_i64..).zip(ops).zip(current) {
        match op {
            TxnOp::Create { key, value, lease }
            | TxnOp::Update {
                key, value, lease, ..
            }
            | TxnOp::Put { key, value, lease } => {
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: existing.as_ref().map_or(rev, |e| e.create_revision),
                    mod_revision: rev,
                    lease: *lease,
                };
                record_put(tx, rev, seq, &kv, existing.as_ref())?;
            }
            TxnOp::Delete { .. } => {
                if let Some(prev) = existing {
                    record_delete(tx, rev, seq, &prev)?;
                    deleted.push(prev);
                }
            }
        }
    }
    Ok(Ok((rev, deleted)))
}

fn read_watch_batch(
    tx: &Transaction<'_>,
    prefix: &str,
    after: Revision,
) -> rusqlite::Result<WatchBatch> {
    let compact = meta_get(tx, "compact_revision")?;
    if after < compact - 1 {
        return Ok(WatchBatch::Compacted(compact));
    }
    let revision = meta_get(tx, "revision")?;
    let upto = revision.min(after.saturating_add(WATCH_BATCH_REVISIONS));
    if upto <= after {
        return Ok(WatchBatch::Events {
            events: Vec::new(),
            upto: revision,
            more: false,
        });
    }
    let (lo, hi) = prefix_range(prefix);
    let mut stmt = tx.prepare_cached(
        "SELECT revision, key, deleted, value, create_revision, lease,
                prev_value, prev_create_revision, prev_mod_revision, prev_lease
         FROM history
         WHERE revision > ?1 AND revision <= ?2 AND key >= ?3 AND (?4 IS NULL OR key < ?4)
         ORDER BY revision, seq",
    )?;
    let events = stmt
        .query_map(params![after, upto, lo, hi], |r| {
            let revision: Revision = r.get(0)?;
            let key = key_from_bytes(r.get(1)?)?;
            let deleted: bool = r.get(2)?;
            let prev = match r.get::<_, Option<Vec<u8>>>(6)? {
                Some(value) => Some(KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: r.get(7)?,
                    mod_revision: r.get(8)?,
                    lease: r.get(9)?,
                }),
                None => None,
            };
            Ok(if deleted {
                WatchEvent::Delete {
                    key,
                    revision,
                    prev,
                }
            } else {
                WatchEvent::Put {
                    kv: KeyValue {
                        key,
                        value: r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
                        create_revision: r.get(4)?,
                        mod_revision: revision,
                        lease: r.get(5)?,
                    },
                    prev,
                }
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(WatchBatch::Events {
        events,
        upto,
        more: upto < revision,
    })
}

fn check_consistency(tx: &Transaction<'_>) -> rusqlite::Result<ConsistencyReport> {
    let mut problems = Vec::new();
    let integrity: Vec<String> = tx
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if integrity != ["ok"] {
        problems.extend(
            integrity
                .into_iter()
                .map(|p| format!("integrity_check: {p}")),
        );
    }
    let revision = meta_get(tx, "revision")?;
    let compact_revision = meta_get(tx, "compact_revision")?;
    let keys: i64 = tx.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))?;
    let history_rows: i64 = tx.query_row("SELECT count(*) FROM history", [], |r| r.get(0))?;
    let max_history: Option<i64> =
        tx.query_row("SELECT max(revision) FROM history", [], |r| r.get(0))?;
    if let Some(max) = max_history
        && max != revision
    {
        problems.push(format!(
            "history ends at revision {max} but the store is at {revision}"
        ));
    }
    let max_kv: Option<i64> = tx.query_row("SELECT max(mod_revision) FROM kv", [], |r| r.get(0))?;
    if max_kv.is_some_and(|m| m > revision) {
        problems.push(format!(
            "a key has mod revision {max_kv:?} beyond the store revision {revision}"
        ));
    }
    // Each key's last history row (when not compacted) must be a put with the same revisions
    // and value.
    let mut stmt = tx.prepare(
        "SELECT kv.key, kv.mod_revision, kv.create_revision, kv.value,
                h.revision, h.deleted, h.create_revision, h.value
         FROM kv LEFT JOIN history h ON h.key = kv.key AND h.revision =
             (SELECT max(revision) FROM history WHERE key = kv.key)",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let key = String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)?).into_owned();
        let mod_rev: i64 = r.get(1)?;
        let h_rev: Option<i64> = r.get(4)?;
        match h_rev {
            None if mod_rev >= compact_revision => {
                problems.push(format!(
                    "key {key}: mod revision {mod_rev} has no history row"
                ));
            }
            None => {}
            Some(h) => {
                let deleted: bool = r.get(5)?;
                let ok = h == mod_rev
                    && !deleted
                    && r.get::<_, Option<i64>>(6)? == Some(r.get(2)?)
                    && r.get::<_, Option<Vec<u8>>>(7)? == Some(r.get(3)?);
                if !ok {
                    problems.push(format!(
                        "key {key}: current row (mod revision {mod_rev}) disagrees with its last history row (revision {h})"
                    ));
                }
            }
        }
    }
    // Keys whose last history row is a put must exist.
    let missing: Vec<Vec<u8>> = tx
        .prepare(
            "SELECT h.key FROM history h
             WHERE h.deleted = 0 AND h.revision = (SELECT max(revision) FROM history WHERE key = h.key)
               AND NOT EXISTS (SELECT 1 FROM kv WHERE kv.key = h.key)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for k in missing {
        problems.push(format!(
            "key {}: history says it exists but it is missing",
            String::from_utf8_lossy(&k)
        ));
    }
    let orphans: i64 = tx.query_row(
        "SELECT count(*) FROM kv WHERE lease IS NOT NULL AND lease NOT IN (SELECT id FROM lease)",
        [],
        |r| r.get(0),
    )?;
    if orphans > 0 {
        problems.push(format!(
            "{orphans} keys are attached to leases that do not exist"
        ));
    }
    Ok(ConsistencyReport {
        revision,
        compact_revision,
        keys: usize::try_from(keys).unwrap_or(0),
        history_rows: usize::try_from(history_rows).unwrap_or(0),
        problems,
    })
}

/// The per-store poller: notices commits of other processes and reaps expired leases while
/// anyone watches. Ends when the store is dropped.
fn poll_loop(inner: Weak<Inner>) {
    let mut conn: Option<Connection> = None;
    loop {
        let Some(store) = inner.upgrade() else { return };
        let interval = store.opts.poll_interval;
        if store.revision_tx.receiver_count() > 0
            && let Err(e) = poll_once(&store, &mut conn)
        {
            conn = None;
            tracing::warn!(error = %e, path = %store.path.display(), "sqlite store: watch poll failed");
        }
        drop(store);
        std::thread::sleep(interval);
    }
}

fn poll_once(store: &Inner, conn: &mut Option<Connection>) -> Result<(), KvError> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(open_connection(&store.path, &store.opts)?),
    };
    let now = now_ms();
    let (revision, expired) = (|| {
        let tx = c.transaction()?;
        let revision = meta_get(&tx, "revision")?;
        let expired = has_expired_lease(&tx, now)?;
        tx.commit()?;
        Ok((revision, expired))
    })()
    .map_err(|e| sql_err(&store.path, e))?;
    store.publish(revision);
    if expired {
        store.write(|_, _| Ok(Ok(())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_bounds() {
        assert_eq!(
            prefix_range("/a/"),
            (b"/a/".to_vec(), Some(b"/a0".to_vec()))
        );
        assert_eq!(prefix_range(""), (Vec::new(), None));
    }

    /// The CNI plugin's mode: queries on the calling thread, no fsync per commit. It must see
    /// another process's commits, and its commits must be there for the next opener although
    /// closing no longer checkpoints the WAL.
    #[tokio::test(flavor = "current_thread")]
    async fn inline_store_shares_the_file_and_its_commits_outlive_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let pooled = SqliteStore::open(&path).unwrap();
        pooled.put("/k/a", b"1".to_vec(), None).await.unwrap();
        let inline = SqliteStore::open_with(
            &path,
            SqliteOptions {
                run_inline: true,
                fsync_every_commit: false,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        assert_eq!(inline.get("/k/a").await.unwrap().unwrap().value, b"1");
        let rev = inline.create("/k/b", b"2".to_vec(), None).await.unwrap();
        assert!(matches!(
            inline.create("/k/b", b"x".to_vec(), None).await,
            Err(KvError::AlreadyExists { .. })
        ));
        inline
            .txn(vec![
                TxnOp::Update {
                    key: "/k/b".into(),
                    value: b"3".to_vec(),
                    expected_revision: rev,
                    lease: None,
                },
                TxnOp::Delete {
                    key: "/k/a".into(),
                    expected_revision: None,
                },
            ])
            .await
            .unwrap();
        assert_eq!(pooled.get("/k/b").await.unwrap().unwrap().value, b"3");
        drop(inline);
        drop(pooled);
        assert!(
            path.with_extension("db-wal").exists(),
            "closing keeps the WAL"
        );
        let again = SqliteStore::open(&path).unwrap();
        let list = again.list("/k/").await.unwrap();
        let keys: Vec<&str> = list.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/k/b"]);
        assert!(again.check_consistency().await.unwrap().problems.is_empty());
    }
}

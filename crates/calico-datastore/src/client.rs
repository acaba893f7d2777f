//! The typed resource client: create/get/list/update/apply/delete/watch of any
//! `projectcalico.org/v3` resource over a [`KvStore`].
//!
//! Storage follows upstream's etcd v3 backend: the value at
//! `/calico/resources/v3/projectcalico.org/<plural>/[<ns>/]<name>` is the JSON of the full v3
//! object without `resourceVersion`; the resourceVersion users see is the key's `mod_revision`
//! as a decimal string.
//!
//! Server-side behaviour mirrored from upstream's client library / API server:
//! - create defaults and validates; sets `uid` (UUID v4), `creationTimestamp` (RFC 3339, UTC,
//!   second precision) and `generation` 1;
//! - update keeps `uid`/`creationTimestamp`, bumps `generation` when the spec changes, and
//!   compares `resourceVersion` when one is given;
//! - policies (`NetworkPolicy`, `GlobalNetworkPolicy` and the staged kinds) must name an existing
//!   tier; the `default` tier is created on demand (upstream's datastore initialisation creates
//!   it); `default.<name>` finds a default-tier policy stored as `<name>` (the model's
//!   defaulting strips that old prefix).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use calico_model::keys;
use calico_model::{AnyResource, KINDS, KindInfo, ModelError, ValidationError};
use futures::{Stream, StreamExt};
use tracing::{debug, warn};

use crate::kv::{KeyValue, KvError, KvStore, Revision, TxnOp, WatchEvent};

/// Name of the tier policies belong to when `spec.tier` is empty.
pub const DEFAULT_TIER: &str = "default";
/// Label upstream puts on every policy naming its tier.
pub const TIER_LABEL: &str = "projectcalico.org/tier";
/// Order of the default tier (upstream `DefaultTierOrder`).
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// Largest number of operations sent in one transaction (etcd's default `--max-txn-ops` is 128).
const MAX_TXN_OPS: usize = 100;
/// From this many resources of one kind in a batch, the current state is read by one listing
/// instead of one get per resource.
const LIST_THRESHOLD: usize = 8;

/// Errors of the resource client. Each names the resource, e.g.
/// `GlobalNetworkPolicy(foo): resource already exists`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{id}: resource already exists")]
    AlreadyExists { id: String },
    #[error("{id}: resource does not exist")]
    NotFound { id: String },
    #[error(
        "{id}: update conflict: resourceVersion {expected} does not match the current {actual}"
    )]
    Conflict {
        id: String,
        expected: String,
        actual: String,
    },
    #[error("{id}: invalid resourceVersion {value:?}: must be a decimal revision")]
    BadResourceVersion { id: String, value: String },
    #[error("{id}: tier {tier:?} does not exist; create the Tier before its policies")]
    TierNotFound { id: String, tier: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("{id}: stored value at {key} is not a valid resource: {message}")]
    Corrupt {
        id: String,
        key: String,
        message: String,
    },
    #[error("{id}: {source}")]
    Datastore { id: String, source: KvError },
    #[error("watch {prefix}: {source}")]
    Watch { prefix: String, source: KvError },
}

impl ClientError {
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ClientError::AlreadyExists { .. })
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::NotFound { .. })
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Conflict { .. })
    }
}

/// The result of a listing: the items sorted by key and the revision of the read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceList {
    pub items: Vec<AnyResource>,
    pub revision: Revision,
}

/// What [`Client::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Updated,
    /// The stored resource already matched; nothing was written.
    Unchanged,
}

/// One event of [`Client::watch`].
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceEvent {
    Added(AnyResource),
    Modified(AnyResource),
    /// The resource as it was before deletion (or with only its identity, when the backend did
    /// not report the previous value).
    Deleted(AnyResource),
    /// The watch lost history (compaction) and re-listed: discard all state. `Added` events for
    /// every current resource follow; the watch then continues from `revision`.
    Resync {
        revision: Revision,
    },
}

/// The typed resource client.
#[derive(Clone)]
pub struct Client {
    kv: Arc<dyn KvStore>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.kv.backend_name())
            .finish()
    }
}

impl Client {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv }
    }

    /// The underlying store.
    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// Creates what a fresh datastore needs (upstream's `EnsureInitialized`): the `default` tier.
    /// Returns whether anything was created.
    pub async fn ensure_initialized(&self) -> Result<bool, ClientError> {
        let mut known = HashSet::new();
        self.ensure_default_tier(&mut known).await
    }

    /// Creates `res`: defaults, validates, stamps uid/creationTimestamp/generation.
    pub async fn create(&self, res: AnyResource) -> Result<AnyResource, ClientError> {
        let mut known_tiers = HashSet::new();
        let mut res = self.prepare(res, &mut known_tiers).await?;
        stamp_new(&mut res);
        let key = res.key();
        let value = encode(&res);
        match self.kv.create(&key, value, None).await {
            Ok(rev) => {
                res.metadata_mut().resource_version = rev.to_string();
                Ok(res)
            }
            Err(KvError::AlreadyExists { .. }) => Err(ClientError::AlreadyExists { id: res.id() }),
            Err(source) => Err(ClientError::Datastore {
                id: res.id(),
                source,
            }),
        }
    }

    /// Creates many resources, batching writes into transactions. Results are in input order;
    /// a resource that already exists (or is invalid) fails alone.
    pub async fn create_many(
        &self,
        resources: Vec<AnyResource>,
    ) -> Vec<Result<AnyResource, ClientError>> {
        let mut results: Vec<Option<Result<AnyResource, ClientError>>> =
            (0..resources.len()).map(|_| None).collect();
        let mut known_tiers = HashSet::new();
        let mut seen = HashSet::new();
        let mut pending: Vec<(usize, AnyResource)> = Vec::new();
        let mut slow: Vec<(usize, AnyResource)> = Vec::new();
        for (i, r) in resources.into_iter().enumerate() {
            match self.prepare(r, &mut known_tiers).await {
                Ok(mut r) => {
                    note_tier(&r, &mut known_tiers);
                    if seen.insert(r.key()) {
                        stamp_new(&mut r);
                        pending.push((i, r));
                    } else {
                        slow.push((i, r));
                    }
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut iter = pending.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<(usize, AnyResource)> = iter.by_ref().take(MAX_TXN_OPS).collect();
            let ops = chunk
                .iter()
                .map(|(_, r)| TxnOp::Create {
                    key: r.key(),
                    value: encode(r),
                    lease: None,
                })
                .collect();
            match self.kv.txn(ops).await {
                Ok(rev) => {
                    for (i, mut r) in chunk {
                        r.metadata_mut().resource_version = rev.to_string();
                        results[i] = Some(Ok(r));
                    }
                }
                // Some already exist (or the store is busy): one by one tells which.
                Err(_) => {
                    for (i, r) in chunk {
                        results[i] = Some(self.create_prepared(r).await);
                    }
                }
            }
        }
        for (i, mut r) in slow {
            stamp_new(&mut r);
            results[i] = Some(self.create_prepared(r).await);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ClientError::Datastore {
                        id: String::new(),
                        source: KvError::Backend("internal: result missing".into()),
                    })
                })
            })
            .collect()
    }

    async fn create_prepared(&self, mut res: AnyResource) -> Result<AnyResource, ClientError> {
        match self.kv.create(&res.key(), encode(&res), None).await {
            Ok(rev) => {
                res.metadata_mut().resource_version = rev.to_string();
                Ok(res)
            }
            Err(KvError::AlreadyExists { .. }) => Err(ClientError::AlreadyExists { id: res.id() }),
            Err(source) => Err(ClientError::Datastore {
                id: res.id(),
                source,
            }),
        }
    }

    /// Reads one resource.
    pub async fn get(
        &self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
    ) -> Result<AnyResource, ClientError> {
        let name = lookup_name(kind, name);
        let id = resource_id(kind, namespace, name);
        let key = key_of(kind, namespace, name);
        match self.kv.get(&key).await {
            Ok(Some(kv)) => decode(&kv, &id),
            Ok(None) => Err(ClientError::NotFound { id }),
            Err(source) => Err(ClientError::Datastore { id, source }),
        }
    }

    /// Lists a kind, in one namespace or (`None`, or a cluster-scoped kind) in all.
    pub async fn list(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
    ) -> Result<ResourceList, ClientError> {
        let prefix = keys::resource_prefix(kind.plural, kind.namespaced, namespace);
        let listed = self
            .kv
            .list(&prefix)
            .await
            .map_err(|source| ClientError::Datastore {
                id: format!("{}List", kind.kind),
                source,
            })?;
        let mut items = Vec::with_capacity(listed.kvs.len());
        for kv in &listed.kvs {
            let (ns, name) = identity_from_key(kind, &kv.key);
            items.push(decode(kv, &resource_id(kind, &ns, &name))?);
        }
        Ok(ResourceList {
            items,
            revision: listed.revision,
        })
    }

    /// Replaces an existing resource. When `metadata.resourceVersion` is set it must equal the
    /// current one ([`ClientError::Conflict`] otherwise).
    pub async fn update(&self, res: AnyResource) -> Result<AnyResource, ClientError> {
        let mut known_tiers = HashSet::new();
        let res = self.prepare(res, &mut known_tiers).await?;
        let id = res.id();
        let wanted = parse_revision(&id, &res.metadata().resource_version)?;
        let key = res.key();
        let current = match self.kv.get(&key).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return Err(ClientError::NotFound { id }),
            Err(source) => return Err(ClientError::Datastore { id, source }),
        };
        if let Some(w) = wanted
            && w != current.mod_revision
        {
            return Err(conflict(&id, w, current.mod_revision));
        }
        let old = decode(&current, &id)?;
        self.write_update(res, &old, current.mod_revision).await
    }

    /// Creates the resource, or updates it when it exists; writes nothing when the stored
    /// resource already has the same spec, labels and annotations.
    pub async fn apply(
        &self,
        res: AnyResource,
    ) -> Result<(AnyResource, ApplyOutcome), ClientError> {
        let mut known_tiers = HashSet::new();
        let res = self.prepare(res, &mut known_tiers).await?;
        self.apply_prepared(res).await
    }

    /// Applies many resources, batching writes into transactions. Results are in input order;
    /// a failure of one resource does not affect the others.
    pub async fn apply_many(
        &self,
        resources: Vec<AnyResource>,
    ) -> Vec<Result<(AnyResource, ApplyOutcome), ClientError>> {
        let n = resources.len();
        let mut results: Vec<Option<Result<(AnyResource, ApplyOutcome), ClientError>>> =
            (0..n).map(|_| None).collect();

        // 1. Default and validate each; duplicates within the batch go the slow path so that
        //    the later one sees the earlier one's write.
        let mut known_tiers = HashSet::new();
        let mut prepared: Vec<(usize, AnyResource)> = Vec::with_capacity(n);
        let mut seen_keys = HashSet::new();
        let mut slow: Vec<(usize, AnyResource)> = Vec::new();
        for (i, r) in resources.into_iter().enumerate() {
            match self.prepare(r, &mut known_tiers).await {
                Ok(r) => {
                    note_tier(&r, &mut known_tiers);
                    if seen_keys.insert(r.key()) {
                        prepared.push((i, r));
                    } else {
                        slow.push((i, r));
                    }
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }

        // 2. Current state: one listing per kind with many members, else single gets.
        let mut per_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (_, r) in &prepared {
            *per_kind.entry(r.kind()).or_default() += 1;
        }
        let mut current: HashMap<String, KeyValue> = HashMap::new();
        let mut listed_kinds = HashSet::new();
        for (kind, count) in &per_kind {
            if *count >= LIST_THRESHOLD
                && let Some(info) = KINDS.iter().find(|k| k.kind == *kind)
            {
                let prefix = keys::resource_prefix(info.plural, info.namespaced, None);
                match self.kv.list(&prefix).await {
                    Ok(l) => {
                        for kv in l.kvs {
                            current.insert(kv.key.clone(), kv);
                        }
                        listed_kinds.insert(*kind);
                    }
                    Err(e) => {
                        debug!(kind, error = %e, "listing for batch apply failed; using gets")
                    }
                }
            }
        }

        // 3. Work out each write.
        struct Pending {
            index: usize,
            res: AnyResource,
            outcome: ApplyOutcome,
            op: TxnOp,
        }
        let mut pending: Vec<Pending> = Vec::new();
        for (i, mut res) in prepared {
            let id = res.id();
            let key = res.key();
            let cur = if listed_kinds.contains(res.kind()) {
                current.remove(&key)
            } else {
                match self.kv.get(&key).await {
                    Ok(v) => v,
                    Err(source) => {
                        results[i] = Some(Err(ClientError::Datastore { id, source }));
                        continue;
                    }
                }
            };
            let wanted = match parse_revision(&id, &res.metadata().resource_version) {
                Ok(w) => w,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            match cur {
                None => {
                    if wanted.is_some() {
                        results[i] = Some(Err(ClientError::NotFound { id }));
                        continue;
                    }
                    stamp_new(&mut res);
                    let op = TxnOp::Create {
                        key,
                        value: encode(&res),
                        lease: None,
                    };
                    pending.push(Pending {
                        index: i,
                        res,
                        outcome: ApplyOutcome::Created,
                        op,
                    });
                }
                Some(kv) => {
                    if let Some(w) = wanted
                        && w != kv.mod_revision
                    {
                        results[i] = Some(Err(conflict(&id, w, kv.mod_revision)));
                        continue;
                    }
                    let old = match decode(&kv, &id) {
                        Ok(o) => o,
                        Err(e) => {
                            results[i] = Some(Err(e));
                            continue;
                        }
                    };
                    if unchanged(&res, &old) {
                        results[i] = Some(Ok((old, ApplyOutcome::Unchanged)));
                        continue;
                    }
                    carry_over(&mut res, &old);
                    let op = TxnOp::Update {
                        key,
                        value: encode(&res),
                        expected_revision: kv.mod_revision,
                        lease: None,
                    };
                    pending.push(Pending {
                        index: i,
                        res,
                        outcome: ApplyOutcome::Updated,
                        op,
                    });
                }
            }
        }

        // 4. Write in chunks; a failed chunk (a concurrent writer) is redone one by one.
        let mut iter = pending.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<Pending> = iter.by_ref().take(MAX_TXN_OPS).collect();
            let ops: Vec<TxnOp> = chunk.iter().map(|p| p.op.clone()).collect();
            match self.kv.txn(ops).await {
                Ok(rev) => {
                    for mut p in chunk {
                        p.res.metadata_mut().resource_version = rev.to_string();
                        results[p.index] = Some(Ok((p.res, p.outcome)));
                    }
                }
                Err(e) => {
                    debug!(error = %e, "batch transaction failed; applying one by one");
                    for p in chunk {
                        let mut r = p.res;
                        r.metadata_mut().resource_version.clear();
                        results[p.index] = Some(self.apply_prepared(r).await);
                    }
                }
            }
        }
        for (i, r) in slow {
            results[i] = Some(self.apply_prepared(r).await);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ClientError::Datastore {
                        id: String::new(),
                        source: KvError::Backend("internal: result missing".into()),
                    })
                })
            })
            .collect()
    }

    /// Deletes a resource, only if its resourceVersion matches when one is given.
    pub async fn delete(
        &self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<AnyResource, ClientError> {
        let name = lookup_name(kind, name);
        let id = resource_id(kind, namespace, name);
        let key = key_of(kind, namespace, name);
        let expected = match resource_version {
            Some(rv) => parse_revision(&id, rv)?,
            None => None,
        };
        match self.kv.delete(&key, expected).await {
            Ok(kv) => decode(&kv, &id),
            Err(KvError::NotFound { .. }) => Err(ClientError::NotFound { id }),
            Err(KvError::Conflict {
                expected, actual, ..
            }) => Err(conflict(&id, expected, actual)),
            Err(source) => Err(ClientError::Datastore { id, source }),
        }
    }

    /// Deletes many resources, batching into transactions. Each target is
    /// `(kind, namespace, name, resourceVersion precondition)`; results are in input order and
    /// one failure does not affect the others.
    pub async fn delete_many(
        &self,
        targets: Vec<(&'static KindInfo, String, String, Option<String>)>,
    ) -> Vec<Result<AnyResource, ClientError>> {
        let n = targets.len();
        let mut results: Vec<Option<Result<AnyResource, ClientError>>> =
            (0..n).map(|_| None).collect();
        // Current values: one listing per kind with many targets, else single gets.
        let mut per_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (k, ..) in &targets {
            *per_kind.entry(k.kind).or_default() += 1;
        }
        let mut current: HashMap<String, KeyValue> = HashMap::new();
        let mut listed = HashSet::new();
        for (kind, count) in &per_kind {
            if *count >= LIST_THRESHOLD
                && let Some(info) = KINDS.iter().find(|k| k.kind == *kind)
                && let Ok(l) = self
                    .kv
                    .list(&keys::resource_prefix(info.plural, info.namespaced, None))
                    .await
            {
                current.extend(l.kvs.into_iter().map(|kv| (kv.key.clone(), kv)));
                listed.insert(*kind);
            }
        }
        let mut pending: Vec<(usize, AnyResource, TxnOp)> = Vec::new();
        let mut seen = HashSet::new();
        let mut slow = Vec::new();
        for (i, (kind, ns, name, rv)) in targets.into_iter().enumerate() {
            let name = lookup_name(kind, &name).to_string();
            let id = resource_id(kind, &ns, &name);
            let key = key_of(kind, &ns, &name);
            if !seen.insert(key.clone()) {
                slow.push((i, kind, ns, name, rv));
                continue;
            }
            let expected = match rv.as_deref().map(|v| parse_revision(&id, v)) {
                Some(Ok(e)) => e,
                Some(Err(e)) => {
                    results[i] = Some(Err(e));
                    continue;
                }
                None => None,
            };
            let cur = if listed.contains(kind.kind) {
                current.remove(&key)
            } else {
                match self.kv.get(&key).await {
                    Ok(v) => v,
                    Err(source) => {
                        results[i] = Some(Err(ClientError::Datastore { id, source }));
                        continue;
                    }
                }
            };
            let Some(kv) = cur else {
                results[i] = Some(Err(ClientError::NotFound { id }));
                continue;
            };
            if let Some(e) = expected
                && e != kv.mod_revision
            {
                results[i] = Some(Err(conflict(&id, e, kv.mod_revision)));
                continue;
            }
            match decode(&kv, &id) {
                Ok(old) => pending.push((
                    i,
                    old,
                    TxnOp::Delete {
                        key,
                        expected_revision: Some(kv.mod_revision),
                    },
                )),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let mut iter = pending.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<(usize, AnyResource, TxnOp)> = iter.by_ref().take(MAX_TXN_OPS).collect();
            let ops = chunk.iter().map(|(_, _, op)| op.clone()).collect();
            match self.kv.txn(ops).await {
                Ok(_) => {
                    for (i, old, _) in chunk {
                        results[i] = Some(Ok(old));
                    }
                }
                Err(e) => {
                    debug!(error = %e, "batch delete failed; deleting one by one");
                    for (i, old, _) in chunk {
                        let m = old.metadata();
                        results[i] =
                            Some(self.delete(old.info(), &m.namespace, &m.name, None).await);
                    }
                }
            }
        }
        for (i, kind, ns, name, rv) in slow {
            results[i] = Some(self.delete(kind, &ns, &name, rv.as_deref()).await);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ClientError::Datastore {
                        id: String::new(),
                        source: KvError::Backend("internal: result missing".into()),
                    })
                })
            })
            .collect()
    }

    /// Watches a kind (in one namespace or all) for changes after `from_revision` (use a
    /// listing's revision to continue from it). On compaction the watch re-lists and emits
    /// [`ResourceEvent::Resync`] followed by the current set as `Added`.
    pub async fn watch(
        &self,
        kind: &'static KindInfo,
        namespace: Option<&str>,
        from_revision: Revision,
    ) -> Result<impl Stream<Item = Result<ResourceEvent, ClientError>> + Send + 'static, ClientError>
    {
        let prefix = keys::resource_prefix(kind.plural, kind.namespaced, namespace);
        let first = self
            .kv
            .watch(&prefix, from_revision)
            .await
            .map_err(|source| ClientError::Watch {
                prefix: prefix.clone(),
                source,
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let kv = Arc::clone(&self.kv);
        tokio::spawn(async move {
            let mut stream = first;
            loop {
                let Some(item) = stream.next().await else {
                    return;
                };
                let out = match item {
                    Ok(WatchEvent::Put { kv: entry, .. }) => {
                        let (ns, name) = identity_from_key(kind, &entry.key);
                        decode(&entry, &resource_id(kind, &ns, &name)).map(|r| {
                            if entry.create_revision == entry.mod_revision {
                                ResourceEvent::Added(r)
                            } else {
                                ResourceEvent::Modified(r)
                            }
                        })
                    }
                    Ok(WatchEvent::Delete {
                        key,
                        revision,
                        prev,
                    }) => {
                        let (ns, name) = identity_from_key(kind, &key);
                        let id = resource_id(kind, &ns, &name);
                        let res = match prev {
                            Some(p) => decode(&p, &id),
                            None => identity_only(kind, &ns, &name),
                        };
                        res.map(|mut r| {
                            r.metadata_mut().resource_version = revision.to_string();
                            ResourceEvent::Deleted(r)
                        })
                    }
                    Ok(WatchEvent::Compacted { compact_revision }) => {
                        warn!(%prefix, compact_revision, "watch history compacted; re-listing");
                        match resync(&kv, kind, &prefix, &tx).await {
                            Ok(Some(s)) => {
                                stream = s;
                                continue;
                            }
                            Ok(None) => return,
                            Err(e) => Err(e),
                        }
                    }
                    Err(source) => Err(ClientError::Watch {
                        prefix: prefix.clone(),
                        source,
                    }),
                };
                let fatal = out
                    .as_ref()
                    .is_err_and(|e| matches!(e, ClientError::Watch { .. }));
                if tx.send(out).await.is_err() || fatal {
                    return;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    // ---- internals ----

    /// Defaults and validates; for policies checks the tier and sets the tier label.
    async fn prepare(
        &self,
        mut res: AnyResource,
        known_tiers: &mut HashSet<String>,
    ) -> Result<AnyResource, ClientError> {
        res.apply_defaults();
        res.validate()?;
        if is_policy(res.kind()) {
            // The model's defaulting sets the tier and its label; the tier must exist.
            let tier = policy_tier(&res);
            if !known_tiers.contains(&tier) {
                self.check_tier(&res, &tier, known_tiers).await?;
            }
        }
        Ok(res)
    }

    async fn check_tier(
        &self,
        res: &AnyResource,
        tier: &str,
        known_tiers: &mut HashSet<String>,
    ) -> Result<(), ClientError> {
        let key = keys::resource_key("tiers", false, "", tier);
        match self.kv.get(&key).await {
            Ok(Some(_)) => {
                known_tiers.insert(tier.to_string());
                Ok(())
            }
            Ok(None) if tier == DEFAULT_TIER => {
                self.ensure_default_tier(known_tiers).await?;
                Ok(())
            }
            Ok(None) => Err(ClientError::TierNotFound {
                id: res.id(),
                tier: tier.to_string(),
            }),
            Err(source) => Err(ClientError::Datastore {
                id: format!("Tier({tier})"),
                source,
            }),
        }
    }

    async fn ensure_default_tier(
        &self,
        known_tiers: &mut HashSet<String>,
    ) -> Result<bool, ClientError> {
        let key = keys::resource_key("tiers", false, "", DEFAULT_TIER);
        let id = format!("Tier({DEFAULT_TIER})");
        match self.kv.get(&key).await {
            Ok(Some(_)) => {
                known_tiers.insert(DEFAULT_TIER.to_string());
                return Ok(false);
            }
            Ok(None) => {}
            Err(source) => return Err(ClientError::Datastore { id, source }),
        }
        let mut tier = default_tier_resource()?;
        tier.apply_defaults();
        tier.validate()?;
        stamp_new(&mut tier);
        let created = match self.kv.create(&key, encode(&tier), None).await {
            Ok(_) => true,
            // Another writer created it first: fine.
            Err(KvError::AlreadyExists { .. }) => false,
            Err(source) => return Err(ClientError::Datastore { id, source }),
        };
        known_tiers.insert(DEFAULT_TIER.to_string());
        Ok(created)
    }

    async fn apply_prepared(
        &self,
        mut res: AnyResource,
    ) -> Result<(AnyResource, ApplyOutcome), ClientError> {
        let id = res.id();
        let key = res.key();
        let wanted = parse_revision(&id, &res.metadata().resource_version)?;
        // Retry on a race with another writer (create vs create, update vs update).
        for _ in 0..5 {
            let current = self
                .kv
                .get(&key)
                .await
                .map_err(|source| ClientError::Datastore {
                    id: id.clone(),
                    source,
                })?;
            match current {
                None => {
                    if wanted.is_some() {
                        return Err(ClientError::NotFound { id });
                    }
                    let mut new = res.clone();
                    stamp_new(&mut new);
                    match self.kv.create(&key, encode(&new), None).await {
                        Ok(rev) => {
                            new.metadata_mut().resource_version = rev.to_string();
                            return Ok((new, ApplyOutcome::Created));
                        }
                        Err(KvError::AlreadyExists { .. }) => continue,
                        Err(source) => return Err(ClientError::Datastore { id, source }),
                    }
                }
                Some(kv) => {
                    if let Some(w) = wanted
                        && w != kv.mod_revision
                    {
                        return Err(conflict(&id, w, kv.mod_revision));
                    }
                    let old = decode(&kv, &id)?;
                    if unchanged(&res, &old) {
                        return Ok((old, ApplyOutcome::Unchanged));
                    }
                    match self.write_update(res.clone(), &old, kv.mod_revision).await {
                        Ok(r) => return Ok((r, ApplyOutcome::Updated)),
                        Err(ClientError::Conflict { .. }) if wanted.is_none() => continue,
                        Err(ClientError::NotFound { .. }) if wanted.is_none() => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        res.metadata_mut().resource_version.clear();
        Err(ClientError::Conflict {
            id,
            expected: "any".to_string(),
            actual: "changing concurrently".to_string(),
        })
    }

    async fn write_update(
        &self,
        mut res: AnyResource,
        old: &AnyResource,
        revision: Revision,
    ) -> Result<AnyResource, ClientError> {
        let id = res.id();
        carry_over(&mut res, old);
        match self
            .kv
            .update(&res.key(), encode(&res), revision, None)
            .await
        {
            Ok(rev) => {
                res.metadata_mut().resource_version = rev.to_string();
                Ok(res)
            }
            Err(KvError::NotFound { .. }) => Err(ClientError::NotFound { id }),
            Err(KvError::Conflict {
                expected, actual, ..
            }) => Err(conflict(&id, expected, actual)),
            Err(source) => Err(ClientError::Datastore { id, source }),
        }
    }
}

/// A Tier earlier in a batch counts as existing for the policies after it (upstream applies a
/// file in order, so `Tier` then its policies in one file works). The batch writes it in the
/// same or an earlier transaction.
fn note_tier(res: &AnyResource, known_tiers: &mut HashSet<String>) {
    if res.kind() == "Tier" {
        known_tiers.insert(res.metadata().name.clone());
    }
}

/// Re-lists after compaction: sends the marker and the current set, returns the new watch.
async fn resync(
    kv: &Arc<dyn KvStore>,
    kind: &'static KindInfo,
    prefix: &str,
    tx: &tokio::sync::mpsc::Sender<Result<ResourceEvent, ClientError>>,
) -> Result<Option<crate::kv::WatchStream>, ClientError> {
    let listed = kv.list(prefix).await.map_err(|source| ClientError::Watch {
        prefix: prefix.to_string(),
        source,
    })?;
    if tx
        .send(Ok(ResourceEvent::Resync {
            revision: listed.revision,
        }))
        .await
        .is_err()
    {
        return Ok(None);
    }
    for entry in &listed.kvs {
        let (ns, name) = identity_from_key(kind, &entry.key);
        let ev = decode(entry, &resource_id(kind, &ns, &name)).map(ResourceEvent::Added);
        if tx.send(ev).await.is_err() {
            return Ok(None);
        }
    }
    let stream = kv
        .watch(prefix, listed.revision)
        .await
        .map_err(|source| ClientError::Watch {
            prefix: prefix.to_string(),
            source,
        })?;
    Ok(Some(stream))
}

/// Default-tier policies are stored without upstream's old `default.` name prefix (the model's
/// defaulting strips it); accept the prefixed name on reads and deletes as upstream does.
fn lookup_name<'a>(kind: &KindInfo, name: &'a str) -> &'a str {
    match name.strip_prefix("default.") {
        Some(rest) if is_policy(kind.kind) && !rest.is_empty() => rest,
        _ => name,
    }
}

fn is_policy(kind: &str) -> bool {
    matches!(
        kind,
        "NetworkPolicy"
            | "GlobalNetworkPolicy"
            | "StagedNetworkPolicy"
            | "StagedGlobalNetworkPolicy"
    )
}

/// `spec.tier`, or `default`.
fn policy_tier(res: &AnyResource) -> String {
    let v = res.to_value();
    match v
        .get("spec")
        .and_then(|s| s.get("tier"))
        .and_then(|t| t.as_str())
    {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => DEFAULT_TIER.to_string(),
    }
}

fn default_tier_resource() -> Result<AnyResource, ClientError> {
    let full = serde_json::json!({
        "apiVersion": calico_model::API_VERSION,
        "kind": "Tier",
        "metadata": {"name": DEFAULT_TIER},
        "spec": {"order": DEFAULT_TIER_ORDER, "defaultAction": "Deny"},
    });
    match AnyResource::from_value(full) {
        Ok(r) => Ok(r),
        Err(e) => {
            // The Tier spec may not know these fields (yet); fall back to its own defaults.
            debug!(error = %e, "default tier with explicit spec rejected; using defaults");
            let minimal = serde_json::json!({
                "apiVersion": calico_model::API_VERSION,
                "kind": "Tier",
                "metadata": {"name": DEFAULT_TIER},
            });
            Ok(AnyResource::from_value(minimal)?)
        }
    }
}

/// `Kind(name)` / `Kind(ns/name)`.
pub fn resource_id(kind: &KindInfo, namespace: &str, name: &str) -> String {
    if kind.namespaced && !namespace.is_empty() {
        format!("{}({}/{})", kind.kind, namespace, name)
    } else {
        format!("{}({})", kind.kind, name)
    }
}

fn key_of(kind: &KindInfo, namespace: &str, name: &str) -> String {
    let ns = if kind.namespaced && namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    keys::resource_key(kind.plural, kind.namespaced, ns, name)
}

/// (namespace, name) from a resource key.
fn identity_from_key(kind: &KindInfo, key: &str) -> (String, String) {
    let prefix = keys::resource_prefix(kind.plural, kind.namespaced, None);
    let rest = key.strip_prefix(&prefix).unwrap_or(key);
    if kind.namespaced {
        match rest.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), rest.to_string()),
        }
    } else {
        (String::new(), rest.to_string())
    }
}

fn identity_only(kind: &KindInfo, namespace: &str, name: &str) -> Result<AnyResource, ClientError> {
    let mut meta = serde_json::json!({"name": name});
    if kind.namespaced {
        meta["namespace"] = serde_json::Value::String(namespace.to_string());
    }
    Ok(AnyResource::from_value(serde_json::json!({
        "apiVersion": calico_model::API_VERSION,
        "kind": kind.kind,
        "metadata": meta,
    }))?)
}

fn parse_revision(id: &str, rv: &str) -> Result<Option<Revision>, ClientError> {
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<Revision>()
        .map(Some)
        .map_err(|_| ClientError::BadResourceVersion {
            id: id.to_string(),
            value: rv.to_string(),
        })
}

fn conflict(id: &str, expected: Revision, actual: Revision) -> ClientError {
    ClientError::Conflict {
        id: id.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// The stored form: the object without resourceVersion.
fn encode(res: &AnyResource) -> Vec<u8> {
    let mut v = res.to_value();
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn decode(kv: &KeyValue, id: &str) -> Result<AnyResource, ClientError> {
    let corrupt = |message: String| ClientError::Corrupt {
        id: id.to_string(),
        key: kv.key.clone(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))?;
    let mut res = AnyResource::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    res.metadata_mut().resource_version = kv.mod_revision.to_string();
    Ok(res)
}

/// Server-managed metadata of a new resource.
fn stamp_new(res: &mut AnyResource) {
    let m = res.metadata_mut();
    m.uid = uuid::Uuid::new_v4().to_string();
    m.creation_timestamp = Some(now_rfc3339());
    m.generation = Some(1);
    m.resource_version.clear();
}

/// Keeps the server-managed metadata of `old` and bumps the generation when the spec changed.
fn carry_over(res: &mut AnyResource, old: &AnyResource) {
    let spec_changed = !res.spec_eq(old);
    let om = old.metadata();
    let (uid, ts, generation) = (om.uid.clone(), om.creation_timestamp.clone(), om.generation);
    let m = res.metadata_mut();
    m.uid = uid;
    m.creation_timestamp = ts;
    let g = generation.unwrap_or(1);
    m.generation = Some(if spec_changed { g + 1 } else { g });
    m.resource_version.clear();
}

/// Whether applying `new` over `old` would change nothing users can set.
fn unchanged(new: &AnyResource, old: &AnyResource) -> bool {
    let (n, o) = (new.metadata(), old.metadata());
    new.spec_eq(old)
        && n.labels == o.labels
        && n.annotations == o.annotations
        && n.finalizers == o.finalizers
        && n.owner_references == o.owner_references
        && (new.status().is_none() || new.status() == old.status())
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys() {
        let gnp = KindInfo::lookup("gnp").unwrap();
        assert_eq!(resource_id(gnp, "", "foo"), "GlobalNetworkPolicy(foo)");
        let np = KindInfo::lookup("networkpolicy").unwrap();
        assert_eq!(resource_id(np, "ns1", "bar"), "NetworkPolicy(ns1/bar)");
        let key = key_of(np, "ns1", "bar");
        assert_eq!(
            key,
            "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/bar"
        );
        assert_eq!(
            identity_from_key(np, &key),
            ("ns1".to_string(), "bar".to_string())
        );
        let key = key_of(gnp, "", "foo");
        assert_eq!(
            identity_from_key(gnp, &key),
            (String::new(), "foo".to_string())
        );
    }

    #[test]
    fn timestamp_is_rfc3339_utc_seconds() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
        assert!(
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).is_ok()
        );
    }

    #[test]
    fn revision_parse() {
        assert_eq!(parse_revision("X(a)", "").unwrap(), None);
        assert_eq!(parse_revision("X(a)", "42").unwrap(), Some(42));
        let e = parse_revision("X(a)", "abc").unwrap_err();
        assert!(e.to_string().contains("X(a)") && e.to_string().contains("abc"));
    }
}

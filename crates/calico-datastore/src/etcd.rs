//! The etcd v3 backend. This module is the only place that touches `etcd-client`, so an upgrade
//! of that crate changes one file.
//!
//! Mapping: create is a txn comparing `create_revision == 0`; update and conditional delete
//! compare `mod_revision` (plus `create_revision > 0`, because etcd treats a missing key as
//! `mod_revision == 0`); a failed txn reads the keys back in its else-branch, atomically, to
//! name the first failed condition. Watches ask for `prev_kv` and progress notifications, and
//! are re-created from the last delivered revision after any stream failure (etcd-client does
//! not resume watches itself).

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::kv::{
    KeyValue, KvError, KvStore, LeaseId, ListResult, Revision, TxnOp, WatchEvent, WatchStream,
};

/// A PEM document given either as a file path or inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Inline(String),
}

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdOptions {
    /// `http://host:port` or `https://host:port`; a bare `host:port` uses TLS when any TLS
    /// material is given.
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA bundle that signs the etcd server certificates.
    pub ca: Option<PemSource>,
    /// Client certificate and key, for etcd's client-certificate authentication.
    pub cert: Option<PemSource>,
    pub key: Option<PemSource>,
    /// Limit for establishing a connection (and for the probe [`EtcdStore::connect`] makes).
    pub dial_timeout: Duration,
    /// Limit for each unary request; watches are not limited.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            username: None,
            password: None,
            ca: None,
            cert: None,
            key: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

// Hand-written so the password and an inline key never reach a log.
impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.key.as_ref().map(|k| match k {
            PemSource::File(p) => format!("file {}", p.display()),
            PemSource::Inline(_) => "<inline, redacted>".to_owned(),
        });
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &key)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The etcd v3 store. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Endpoints joined with `,`, for error messages.
    endpoints: String,
}

/// gRPC status codes that mean "try again later" (tonic's `Code` is not re-exported).
const GRPC_CANCELLED: i32 = 1;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_UNAVAILABLE: i32 = 14;

const WATCH_CHANNEL: usize = 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const LIST_PAGE: i64 = 1000;
const MAX_RESPONSE: usize = 256 << 20;

impl EtcdStore {
    /// Connects and checks that an endpoint answers within the dial timeout; failures are
    /// [`KvError::Unavailable`] naming the endpoints.
    pub async fn connect(opts: EtcdOptions) -> Result<Self, KvError> {
        if opts.endpoints.is_empty() {
            return Err(KvError::Backend("etcd: no endpoints configured".into()));
        }
        let endpoints = opts.endpoints.join(",");
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(opts.dial_timeout)
            .with_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        match (&opts.username, &opts.password) {
            (Some(user), Some(password)) => connect = connect.with_user(user, password),
            (None, None) => {}
            _ => {
                return Err(KvError::Backend(
                    "etcd: username and password must be given together".into(),
                ));
            }
        }
        if opts.ca.is_some() || opts.cert.is_some() || opts.key.is_some() {
            connect = connect.with_tls(tls_options(&opts)?);
        }
        let unavailable = |e: String| KvError::Unavailable(format!("etcd {endpoints}: {e}"));
        let client = tokio::time::timeout(
            opts.dial_timeout,
            Client::connect(opts.endpoints.clone(), Some(connect)),
        )
        .await
        .map_err(|_| unavailable(format!("no answer within {:?}", opts.dial_timeout)))?
        .map_err(|e| classify(&endpoints, e))?;
        let store = EtcdStore {
            client,
            endpoints: endpoints.clone(),
        };
        // The client dials lazily; probe so a wrong address fails here, not at first use.
        // Status needs no key permission, so a user limited to a prefix passes too.
        tokio::time::timeout(opts.dial_timeout, store.status_revision())
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", opts.dial_timeout)))??;
        Ok(store)
    }

    /// The revision the answering member has applied.
    async fn status_revision(&self) -> Result<Revision, KvError> {
        let resp = self
            .client
            .maintenance_client()
            .status()
            .await
            .map_err(|e| self.err(e))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Compacts etcd's history up to `revision`: watches from older revisions then get
    /// [`WatchEvent::Compacted`].
    pub async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.kv()
            .compact(revision, None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// gRPC's default 4 MiB response limit is too small for a page of big resources or the
    /// events of a large txn, which etcd sends in one watch response.
    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE)
    }

    fn watcher(&self) -> etcd_client::WatchClient {
        self.client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE)
    }

    fn err(&self, e: etcd_client::Error) -> KvError {
        classify(&self.endpoints, e)
    }

    async fn run_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, KvError> {
        self.kv().txn(txn).await.map_err(|e| self.err(e))
    }

    /// The compares and the operation for one op.
    ///
    /// etcd treats a missing key as `mod_revision == 0`, so "exists" needs a compare of its own
    /// only where no positive `mod_revision` is expected. Keeping one compare per op matters:
    /// etcd limits compares, like ops, to `--max-txn-ops` (default 128) per txn.
    fn txn_parts(op: &TxnOp) -> (Vec<Compare>, etcd_client::TxnOp) {
        let put = |key: &str, value: &[u8], lease: Option<LeaseId>| {
            let opts = lease.map(|l| PutOptions::new().with_lease(l));
            etcd_client::TxnOp::put(key, value, opts)
        };
        let exists = |key: &str| Compare::create_revision(key, CompareOp::Greater, 0);
        let at = |key: &str, rev: Revision| {
            if rev > 0 {
                vec![Compare::mod_revision(key, CompareOp::Equal, rev)]
            } else {
                // Never true for an existing key: the failure names the real revision.
                vec![
                    exists(key),
                    Compare::mod_revision(key, CompareOp::Equal, rev),
                ]
            }
        };
        match op {
            TxnOp::Create { key, value, lease } => (
                vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)],
                put(key, value, *lease),
            ),
            TxnOp::Update {
                key,
                value,
                expected_revision,
                lease,
            } => (at(key, *expected_revision), put(key, value, *lease)),
            TxnOp::Put { key, value, lease } => (Vec::new(), put(key, value, *lease)),
            TxnOp::Delete {
                key,
                expected_revision,
            } => {
                let compares = match expected_revision {
                    Some(rev) => at(key, *rev),
                    None => vec![exists(key)],
                };
                let delete = DeleteOptions::new().with_prev_key();
                (
                    compares,
                    etcd_client::TxnOp::delete(key.as_str(), Some(delete)),
                )
            }
        }
    }

    /// Runs `ops` as one etcd txn. On success returns the revision and the deleted key/values
    /// (in op order); on failure the first failed condition, read in the same txn.
    async fn apply(&self, ops: &[TxnOp]) -> Result<(Revision, Vec<KeyValue>), KvError> {
        if ops.is_empty() {
            return Ok((self.current_revision().await?, Vec::new()));
        }
        let mut compares = Vec::new();
        let mut then = Vec::new();
        let mut reads = Vec::new();
        for op in ops {
            let (c, t) = Self::txn_parts(op);
            compares.extend(c);
            then.push(t);
            reads.push(etcd_client::TxnOp::get(crate::sqlite::op_key(op), None));
        }
        let resp = self
            .run_txn(Txn::new().when(compares).and_then(then).or_else(reads))
            .await
            .map_err(|e| lease_error(e, ops))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            let mut deleted = Vec::new();
            for r in resp.op_responses() {
                if let TxnOpResponse::Delete(d) = r {
                    for kv in d.prev_kvs() {
                        deleted.push(convert_kv(kv)?);
                    }
                }
            }
            return Ok((revision, deleted));
        }
        for (op, r) in ops.iter().zip(resp.op_responses()) {
            let TxnOpResponse::Get(get) = r else { continue };
            let current = get.kvs().first().map(convert_kv).transpose()?;
            if let Some(e) = failed_condition(op, current.as_ref()) {
                return Err(e);
            }
        }
        Err(KvError::Backend(format!(
            "etcd {}: txn failed but no condition is violated (concurrent change?)",
            self.endpoints
        )))
    }

    async fn open_watch(
        &self,
        prefix: &str,
        start: Revision,
    ) -> Result<etcd_client::WatchStream, KvError> {
        let mut opts = WatchOptions::new()
            .with_start_revision(start)
            .with_prev_key()
            .with_progress_notify();
        opts = if prefix.is_empty() {
            opts.with_all_keys()
        } else {
            opts.with_prefix()
        };
        self.watcher()
            .watch(prefix, Some(opts))
            .await
            .map_err(|e| self.err(e))
    }

    async fn watch_loop(
        self,
        prefix: String,
        mut stream: etcd_client::WatchStream,
        after_revision: Revision,
        out: mpsc::Sender<Result<WatchEvent, KvError>>,
    ) {
        let mut last = after_revision;
        // Grows while re-created watches fail or are cancelled without delivering anything,
        // so a persistent cause (e.g. lost permission) does not become a reconnect storm.
        let mut backoff = MIN_BACKOFF;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                () = out.closed() => return,
            };
            let failure = match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            let ev = WatchEvent::Compacted {
                                compact_revision: resp.compact_revision(),
                            };
                            let _ = out.send(Ok(ev)).await;
                            return;
                        }
                        // Cancelled for another reason (e.g. the server is shutting down):
                        // re-create it like after a disconnect.
                        format!("watch cancelled: {}", resp.cancel_reason())
                    } else {
                        let events = resp.events();
                        if !resp.created() {
                            backoff = MIN_BACKOFF;
                        }
                        if events.is_empty() {
                            // A progress notification: etcd has sent everything up to the
                            // header revision. The "created" reply does not promise that.
                            if !resp.created() {
                                last = last.max(resp.header().map_or(0, |h| h.revision()));
                            }
                        }
                        for ev in events {
                            match convert_event(ev) {
                                Ok(ev) => {
                                    last = last.max(ev.revision());
                                    if out.send(Ok(ev)).await.is_err() {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    let _ = out.send(Err(e)).await;
                                    return;
                                }
                            }
                        }
                        continue;
                    }
                }
                Ok(None) => "watch stream ended".to_owned(),
                Err(e) => self.err(e).to_string(),
            };
            tracing::warn!(endpoints = %self.endpoints, prefix, last, reason = %failure, "etcd watch lost, resuming");
            stream = loop {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = out.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                match self.open_watch(&prefix, last + 1).await {
                    Ok(s) => break s,
                    Err(e) => {
                        tracing::debug!(endpoints = %self.endpoints, error = %e, "etcd watch: reconnect failed");
                    }
                }
            };
        }
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl KvStore for EtcdStore {
    fn backend_name(&self) -> &'static str {
        "etcdv3"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let resp = self.kv().get(key, None).await.map_err(|e| self.err(e))?;
        resp.kvs().first().map(convert_kv).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, KvError> {
        let mut kv = self.kv();
        let range_end = etcd_range_end(prefix);
        let mut start = if prefix.is_empty() {
            vec![0_u8]
        } else {
            prefix.as_bytes().to_vec()
        };
        let mut revision = 0;
        let mut kvs = Vec::new();
        // Paged, every page read at the revision of the first so the listing is one snapshot.
        loop {
            let mut opts = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = kv
                .get(start.clone(), Some(opts))
                .await
                .map_err(|e| self.err(e))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            for item in resp.kvs() {
                kvs.push(convert_kv(item)?);
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(ListResult { kvs, revision })
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        Ok(self
            .apply(&[TxnOp::Create {
                key: key.to_owned(),
                value,
                lease,
            }])
            .await?
            .0)
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
        Ok(self.apply(&[op]).await?.0)
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let resp = self.kv().put(key, value, opts).await.map_err(|e| {
            lease_error(
                self.err(e),
                &[TxnOp::Put {
                    key: key.to_owned(),
                    value: Vec::new(),
                    lease,
                }],
            )
        })?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn delete(
        &self,
        key: &str,
        expected_revision: Option<Revision>,
    ) -> Result<KeyValue, KvError> {
        let (_, mut deleted) = self
            .apply(&[TxnOp::Delete {
                key: key.to_owned(),
                expected_revision,
            }])
            .await?;
        deleted.pop().ok_or_else(|| KvError::NotFound {
            key: key.to_owned(),
        })
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<Revision, KvError> {
        let mut seen = std::collections::BTreeSet::new();
        for op in &ops {
            let key = crate::sqlite::op_key(op);
            if !seen.insert(key) {
                return Err(KvError::Backend(format!(
                    "txn: key {key} appears more than once"
                )));
            }
        }
        Ok(self.apply(&ops).await?.0)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        // etcd counts in whole seconds; round up so a lease never lives shorter than asked.
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let secs = if ttl.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        }
        .max(1);
        let resp = self
            .client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), KvError> {
        match self.client.lease_client().keep_alive(lease).await {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Err(KvError::LeaseNotFound(lease)),
            Err(e) => Err(lease_not_found(self.err(e), lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), KvError> {
        self.client
            .lease_client()
            .revoke(lease)
            .await
            .map_err(|e| lease_not_found(self.err(e), lease))?;
        Ok(())
    }

    async fn watch(&self, prefix: &str, after_revision: Revision) -> Result<WatchStream, KvError> {
        let stream = self
            .open_watch(prefix, after_revision.saturating_add(1))
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        tokio::spawn(
            self.clone()
                .watch_loop(prefix.to_owned(), stream, after_revision, tx),
        );
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, KvError> {
        // A linearizable read of any key carries the store revision; a user without read
        // permission on it gets the member's status revision instead.
        match self
            .kv()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
        {
            Ok(resp) => Ok(resp.header().map_or(0, |h| h.revision())),
            Err(e) => match self.err(e) {
                KvError::Backend(m) if m.contains("permission denied") => {
                    self.status_revision().await
                }
                other => Err(other),
            },
        }
    }
}

fn read_pem(what: &str, src: &PemSource) -> Result<Vec<u8>, KvError> {
    match src {
        PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        PemSource::File(p) => std::fs::read(p)
            .map_err(|e| KvError::Backend(format!("etcd {what} file {}: {e}", p.display()))),
    }
}

fn tls_options(opts: &EtcdOptions) -> Result<etcd_client::TlsOptions, KvError> {
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &opts.ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read_pem("ca", ca)?));
    }
    match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read_pem("cert", cert)?,
                read_pem("key", key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(KvError::Backend(
                "etcd: client certificate and key must be given together".into(),
            ));
        }
    }
    Ok(tls)
}

/// etcd's range end for a prefix: the prefix with its last byte incremented.
fn etcd_range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn classify(endpoints: &str, e: etcd_client::Error) -> KvError {
    match &e {
        etcd_client::Error::GRpcStatus(s) => {
            let code = s.code() as i32;
            if matches!(
                code,
                GRPC_CANCELLED
                    | GRPC_DEADLINE_EXCEEDED
                    | GRPC_RESOURCE_EXHAUSTED
                    | GRPC_UNAVAILABLE
            ) {
                KvError::Unavailable(format!("etcd {endpoints}: {}", s.message()))
            } else {
                KvError::Backend(format!("etcd {endpoints}: {}", s.message()))
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            KvError::Unavailable(format!("etcd {endpoints}: {e}"))
        }
        _ => KvError::Backend(format!("etcd {endpoints}: {e}")),
    }
}

fn lease_not_found(e: KvError, lease: LeaseId) -> KvError {
    match &e {
        KvError::Backend(m) if m.contains("lease not found") => KvError::LeaseNotFound(lease),
        _ => e,
    }
}

/// etcd rejects a put naming an unknown lease with an error that does not say which; name the
/// first lease of the request.
fn lease_error(e: KvError, ops: &[TxnOp]) -> KvError {
    let lease = ops.iter().find_map(|op| match op {
        TxnOp::Create { lease, .. } | TxnOp::Update { lease, .. } | TxnOp::Put { lease, .. } => {
            *lease
        }
        TxnOp::Delete { .. } => None,
    });
    match lease {
        Some(l) => lease_not_found(e, l),
        None => e,
    }
}

fn failed_condition(op: &TxnOp, current: Option<&KeyValue>) -> Option<KvError> {
    let key = crate::sqlite::op_key(op).to_owned();
    match (op, current) {
        (TxnOp::Create { .. }, Some(_)) => Some(KvError::AlreadyExists { key }),
        (TxnOp::Update { .. } | TxnOp::Delete { .. }, None) => Some(KvError::NotFound { key }),
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
            key,
            expected: *expected_revision,
            actual: kv.mod_revision,
        }),
        _ => None,
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, KvError> {
    let key = kv
        .key_str()
        .map_err(|e| KvError::Backend(format!("etcd: key {:?} is not UTF-8: {e}", kv.key())))?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn convert_event(ev: &etcd_client::Event) -> Result<WatchEvent, KvError> {
    let Some(kv) = ev.kv() else {
        return Err(KvError::Backend("etcd: watch event without a key".into()));
    };
    let prev = ev.prev_kv().map(convert_kv).transpose()?;
    Ok(match ev.event_type() {
        etcd_client::EventType::Put => WatchEvent::Put {
            kv: convert_kv(kv)?,
            prev,
        },
        etcd_client::EventType::Delete => {
            let KeyValue {
                key, mod_revision, ..
            } = convert_kv(kv)?;
            WatchEvent::Delete {
                key,
                revision: mod_revision,
                prev,
            }
        }
    })
}

//! One conformance suite for the `KvStore` contract, run against both backends.
//!
//! Every case is an async function taking a [`Backend`]; the `conformance!` macro instantiates
//! each for `sqlite` (a temp file) and `etcd` (a real `etcd` started on free loopback ports with
//! a temp data dir on /dev/shm, killed by a Drop guard). When `/usr/bin/etcd` (Debian package
//! `etcd-server`) is missing the etcd instances print a loud SKIP and return.
//!
//! Multi-process cases re-execute this test binary with `CONFORMANCE_CHILD` set; the
//! `child_process_entry` test then plays the child role (see [`child_main`]) and is a no-op
//! in a normal run.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use calico_datastore::etcd::{EtcdOptions, EtcdStore, PemSource};
use calico_datastore::sqlite::{SqliteOptions, SqliteStore};
use calico_datastore::{KeyValue, KvError, KvStore, Revision, TxnOp, WatchEvent, WatchStream};
use futures::StreamExt;

const ETCD_BIN: &str = "/usr/bin/etcd";
const CHILD_ENV: &str = "CONFORMANCE_CHILD";
const STORE_ENV: &str = "CONFORMANCE_STORE";

// ---------------------------------------------------------------------------------------------
// Backends

// One value per test; the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Sqlite { path: PathBuf, store: SqliteStore },
    Etcd { etcd: EtcdProcess, store: EtcdStore },
}

struct Backend {
    store: Arc<dyn KvStore>,
    kind: Kind,
    _dir: tempfile::TempDir,
}

impl Backend {
    fn sqlite() -> Backend {
        Self::sqlite_with(SqliteOptions::default())
    }

    fn sqlite_with(opts: SqliteOptions) -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/calico.db");
        let store = SqliteStore::open_with(&path, opts).expect("open sqlite store");
        Backend {
            store: Arc::new(store.clone()),
            kind: Kind::Sqlite { path, store },
            _dir: dir,
        }
    }

    async fn etcd() -> Option<Backend> {
        if !Path::new(ETCD_BIN).exists() {
            eprintln!(
                "\n*** SKIP: {ETCD_BIN} not found (install Debian package etcd-server); \
                 etcd conformance not run ***\n"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("calico-kv-etcd-")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .expect("temp dir");
        let etcd = EtcdProcess::start(dir.path(), None).await;
        let store = etcd.connect().await.expect("connect to etcd");
        Some(Backend {
            store: Arc::new(store.clone()),
            kind: Kind::Etcd { etcd, store },
            _dir: dir,
        })
    }

    fn name(&self) -> &'static str {
        self.store.backend_name()
    }

    /// How a child process opens the same store.
    fn child_spec(&self) -> String {
        match &self.kind {
            Kind::Sqlite { path, .. } => format!("sqlite:{}", path.display()),
            Kind::Etcd { etcd, .. } => format!("etcd:{}", etcd.client_url),
        }
    }

    async fn compact(&self, revision: Revision) {
        match &self.kind {
            Kind::Sqlite { store, .. } => store.compact(revision).await.expect("compact"),
            Kind::Etcd { store, .. } => store.compact(revision).await.expect("compact"),
        }
    }
}

async fn open_spec(spec: &str) -> Arc<dyn KvStore> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        Arc::new(SqliteStore::open(path).expect("child: open sqlite"))
    } else if let Some(url) = spec.strip_prefix("etcd:") {
        let opts = EtcdOptions {
            endpoints: vec![url.to_owned()],
            ..Default::default()
        };
        Arc::new(EtcdStore::connect(opts).await.expect("child: connect etcd"))
    } else {
        panic!("bad {STORE_ENV} {spec:?}")
    }
}

/// A real etcd on free loopback ports; killed (SIGKILL) on drop, also when a test panics.
struct EtcdProcess {
    child: Option<std::process::Child>,
    data_dir: PathBuf,
    log: PathBuf,
    client_url: String,
    peer_url: String,
    tls: Option<TlsFiles>,
}

/// Throw-away PKI made with the openssl CLI: a CA, an etcd server cert for 127.0.0.1 and a
/// client cert.
#[derive(Clone)]
struct TlsFiles {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TlsFiles {
    fn generate(dir: &Path) -> TlsFiles {
        let script = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=calico-test-ca 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl req $ec -keyout $who.key -out $who.csr -subj /CN=calico-$who 2>/dev/null
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile $who.ext -out $who.pem 2>/dev/null
done
"#;
        let status = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .status()
            .expect("run openssl");
        assert!(status.success(), "generating test certificates failed");
        TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    fn options(&self, endpoint: &str) -> EtcdOptions {
        EtcdOptions {
            endpoints: vec![endpoint.to_owned()],
            ca: Some(PemSource::File(self.ca.clone())),
            cert: Some(PemSource::File(self.client_cert.clone())),
            key: Some(PemSource::File(self.client_key.clone())),
            dial_timeout: Duration::from_secs(1),
            ..Default::default()
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

impl EtcdProcess {
    async fn start(dir: &Path, tls: Option<TlsFiles>) -> EtcdProcess {
        let mut last_err = String::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        for _attempt in 0..3 {
            let mut p = EtcdProcess {
                child: None,
                data_dir: dir.join("data"),
                log: dir.join("etcd.log"),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                tls: tls.clone(),
            };
            match p.spawn_and_wait().await {
                Ok(()) => return p,
                Err(e) => last_err = e,
            }
        }
        panic!("etcd did not start: {last_err}");
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(ETCD_BIN);
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name=conformance")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={}", self.client_url))
            .arg(format!("--advertise-client-urls={}", self.client_url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster=conformance={}", self.peer_url))
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {ETCD_BIN}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
                return Err(format!("etcd exited with {status}: {tail}"));
            }
            if self.connect().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("etcd not healthy after 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn connect(&self) -> Result<EtcdStore, KvError> {
        EtcdStore::connect(self.options()).await
    }

    fn options(&self) -> EtcdOptions {
        match &self.tls {
            Some(tls) => tls.options(&self.client_url),
            None => EtcdOptions {
                endpoints: vec![self.client_url.clone()],
                dial_timeout: Duration::from_secs(1),
                ..Default::default()
            },
        }
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn prefix(b: &Backend, case: &str) -> String {
    format!("/conformance/{}/{case}/", b.name())
}

async fn next_event(w: &mut WatchStream, within: Duration) -> WatchEvent {
    match tokio::time::timeout(within, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch error: {e}"),
        Ok(None) => panic!("watch stream ended"),
        Err(_) => panic!("no watch event within {within:?}"),
    }
}

async fn next_events(w: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(w, Duration::from_secs(10)).await);
    }
    out
}

async fn assert_quiet(w: &mut WatchStream, for_: Duration) {
    if let Ok(item) = tokio::time::timeout(for_, w.next()).await {
        panic!("expected no more watch events, got {item:?}");
    }
}

/// `(kind, key, revision)` of an event, for compact comparisons.
fn sig(ev: &WatchEvent) -> (&'static str, String, Revision) {
    match ev {
        WatchEvent::Put { kv, .. } => ("put", kv.key.clone(), kv.mod_revision),
        WatchEvent::Delete { key, revision, .. } => ("delete", key.clone(), *revision),
        WatchEvent::Compacted { compact_revision } => {
            ("compacted", String::new(), *compact_revision)
        }
    }
}

fn value_of(ev: &WatchEvent) -> Option<&[u8]> {
    match ev {
        WatchEvent::Put { kv, .. } => Some(&kv.value),
        _ => None,
    }
}

/// Replays `events` onto `state` (key -> (value, create, mod)).
fn replay(state: &mut State, events: &[WatchEvent]) {
    for ev in events {
        match ev {
            WatchEvent::Put { kv, .. } => {
                state.insert(
                    kv.key.clone(),
                    (kv.value.clone(), kv.create_revision, kv.mod_revision),
                );
            }
            WatchEvent::Delete { key, .. } => {
                state.remove(key);
            }
            WatchEvent::Compacted { .. } => panic!("unexpected compaction during replay"),
        }
    }
}

fn state_of(kvs: &[KeyValue]) -> State {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                (kv.value.clone(), kv.create_revision, kv.mod_revision),
            )
        })
        .collect()
}

type State = BTreeMap<String, (Vec<u8>, Revision, Revision)>;

/// Compares two states, reporting differing keys (not whole values, which may be large).
fn assert_same_state(got: &State, want: &State, what: &str) {
    let mut diffs = Vec::new();
    for key in got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let summary = |v: Option<&(Vec<u8>, Revision, Revision)>| {
            v.map(|(val, c, m)| format!("{} bytes create {c} mod {m}", val.len()))
        };
        if got.get(key) != want.get(key) {
            diffs.push(format!(
                "{key}: {:?} vs {:?}",
                summary(got.get(key)),
                summary(want.get(key))
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} keys differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// Reads every event after `after` up to the store's revision at call time (all events of that
/// last revision included), when nothing else is being written.
async fn drain_history(store: &dyn KvStore, prefix: &str, after: Revision) -> Vec<WatchEvent> {
    let until = store.current_revision().await.expect("revision");
    let mut w = store.watch(prefix, after).await.expect("watch");
    let mut out = Vec::new();
    let mut last = after;
    loop {
        // Until `until` is reached events are due; after it, wait briefly for the rest of the
        // last revision's events. (Keys outside `prefix` may hold the last revisions.)
        let wait = if last >= until {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        };
        match tokio::time::timeout(wait, w.next()).await {
            Ok(Some(Ok(ev))) => {
                last = ev.revision();
                assert!(
                    last <= until,
                    "event beyond the drained revision: {:?}",
                    sig(&ev)
                );
                out.push(ev);
            }
            Ok(Some(Err(e))) => panic!("watch error: {e}"),
            Ok(None) => panic!("watch ended"),
            Err(_) => break,
        }
    }
    out
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

async fn run_child(b: &Backend, mode: &str) -> tokio::process::Child {
    run_child_on(&b.child_spec(), mode)
}

/// Re-executes this test binary in child mode `mode` on the store `spec`.
fn run_child_on(spec: &str, mode: &str) -> tokio::process::Child {
    let exe = std::env::current_exe().expect("current exe");
    tokio::process::Command::new(exe)
        .args([
            "child_process_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env(STORE_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn child process")
}

/// Waits for a child and checks it succeeded; returns its stdout.
async fn wait_child_ok(child: tokio::process::Child, what: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what}: child did not finish within 120 s"))
        .expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "{what}: child failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.into_owned()
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn create_get_list(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "cgl");
    let r0 = s.current_revision().await.unwrap();
    let r1 = s
        .create(&format!("{p}b"), b"two".to_vec(), None)
        .await
        .unwrap();
    assert!(r1 > r0, "create must advance the revision ({r0} -> {r1})");
    let r2 = s
        .create(&format!("{p}a"), b"one".to_vec(), None)
        .await
        .unwrap();
    assert!(r2 > r1);
    // A sibling that shares the textual prefix without the trailing slash must not be listed.
    s.create(
        &format!("{}x", p.trim_end_matches('/')),
        b"out".to_vec(),
        None,
    )
    .await
    .unwrap();

    let got = s.get(&format!("{p}b")).await.unwrap().expect("key b");
    assert_eq!(
        got,
        KeyValue {
            key: format!("{p}b"),
            value: b"two".to_vec(),
            create_revision: r1,
            mod_revision: r1,
            lease: None
        }
    );
    assert_eq!(s.get(&format!("{p}missing")).await.unwrap(), None);

    match s.create(&format!("{p}a"), b"again".to_vec(), None).await {
        Err(KvError::AlreadyExists { key }) => assert_eq!(key, format!("{p}a")),
        other => panic!("create of existing key: expected AlreadyExists, got {other:?}"),
    }
    let before = s.current_revision().await.unwrap();
    assert_eq!(
        s.get(&format!("{p}a")).await.unwrap().unwrap().value,
        b"one"
    );

    let list = s.list(&p).await.unwrap();
    let keys: Vec<_> = list.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![format!("{p}a"), format!("{p}b")],
        "sorted, prefix only"
    );
    assert_eq!(
        list.revision, before,
        "failed create must not advance the revision"
    );
    assert_eq!(list.revision, s.current_revision().await.unwrap());
    assert!(s.list(&format!("{p}zzz/")).await.unwrap().kvs.is_empty());
    let all = s.list("").await.unwrap();
    assert!(all.kvs.len() >= 3, "empty prefix lists every key");
    assert!(
        all.kvs.windows(2).all(|w| w[0].key < w[1].key),
        "sorted by key"
    );
}

async fn update_put_delete(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "upd");
    let k = format!("{p}k");
    let c = s.create(&k, b"v1".to_vec(), None).await.unwrap();
    let u = s.update(&k, b"v2".to_vec(), c, None).await.unwrap();
    assert!(u > c);
    let kv = s.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"v2"[..], c, u)
    );

    match s.update(&k, b"stale".to_vec(), c, None).await {
        Err(KvError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!((key.as_str(), expected, actual), (k.as_str(), c, u));
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    match s
        .update(&format!("{p}absent"), b"x".to_vec(), 0, None)
        .await
    {
        Err(KvError::NotFound { key }) => assert_eq!(key, format!("{p}absent")),
        other => panic!("update of absent key with revision 0: expected NotFound, got {other:?}"),
    }
    match s
        .update(&format!("{p}absent"), b"x".to_vec(), u, None)
        .await
    {
        Err(KvError::NotFound { .. }) => {}
        other => panic!("update of absent key: expected NotFound, got {other:?}"),
    }
    assert_eq!(
        s.get(&k).await.unwrap().unwrap().value,
        b"v2",
        "failed update changed nothing"
    );

    // put: unconditional create and overwrite.
    let p1 = s.put(&format!("{p}p"), b"a".to_vec(), None).await.unwrap();
    let p2 = s.put(&format!("{p}p"), b"b".to_vec(), None).await.unwrap();
    let kv = s.get(&format!("{p}p")).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"b"[..], p1, p2)
    );

    match s.delete(&k, Some(c)).await {
        Err(KvError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!((key.as_str(), expected, actual), (k.as_str(), c, u));
        }
        other => panic!("conditional delete with stale revision: expected Conflict, got {other:?}"),
    }
    let deleted = s.delete(&k, Some(u)).await.unwrap();
    assert_eq!(
        (
            deleted.key.as_str(),
            deleted.value.as_slice(),
            deleted.mod_revision
        ),
        (k.as_str(), &b"v2"[..], u)
    );
    assert_eq!(s.get(&k).await.unwrap(), None);
    match s.delete(&k, None).await {
        Err(KvError::NotFound { key }) => assert_eq!(key, k),
        other => panic!("delete of absent key: expected NotFound, got {other:?}"),
    }
    let deleted = s.delete(&format!("{p}p"), None).await.unwrap();
    assert_eq!(deleted.value, b"b");
    // Re-creating after a delete starts a new life: new create revision.
    let c2 = s.create(&k, b"v3".to_vec(), None).await.unwrap();
    let kv = s.get(&k).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (c2, c2));
    assert!(c2 > u);
}

async fn txn_all_or_nothing(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "txn");
    let a = format!("{p}a");
    let bk = format!("{p}b");
    let ra = s.create(&a, b"a0".to_vec(), None).await.unwrap();
    let rb = s.create(&bk, b"b0".to_vec(), None).await.unwrap();
    let start = s.current_revision().await.unwrap();

    // Second op fails: nothing of the first or third is applied, revision unchanged.
    let err = s
        .txn(vec![
            TxnOp::Create {
                key: format!("{p}new"),
                value: b"n".to_vec(),
                lease: None,
            },
            TxnOp::Update {
                key: a.clone(),
                value: b"a1".to_vec(),
                expected_revision: ra - 1,
                lease: None,
            },
            TxnOp::Delete {
                key: bk.clone(),
                expected_revision: None,
            },
        ])
        .await;
    match err {
        Err(KvError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!((key.as_str(), expected, actual), (a.as_str(), ra - 1, ra));
        }
        other => panic!("txn with stale update: expected Conflict on {a}, got {other:?}"),
    }
    assert_eq!(
        s.current_revision().await.unwrap(),
        start,
        "failed txn must not write"
    );
    assert_eq!(s.get(&format!("{p}new")).await.unwrap(), None);
    assert_eq!(s.get(&bk).await.unwrap().unwrap().mod_revision, rb);

    // The first failed condition in op order is reported.
    match s
        .txn(vec![
            TxnOp::Put {
                key: format!("{p}c"),
                value: b"c".to_vec(),
                lease: None,
            },
            TxnOp::Create {
                key: bk.clone(),
                value: b"dup".to_vec(),
                lease: None,
            },
            TxnOp::Delete {
                key: format!("{p}absent"),
                expected_revision: None,
            },
        ])
        .await
    {
        Err(KvError::AlreadyExists { key }) => assert_eq!(key, bk),
        other => panic!("expected AlreadyExists on {bk}, got {other:?}"),
    }
    match s
        .txn(vec![TxnOp::Delete {
            key: format!("{p}absent"),
            expected_revision: None,
        }])
        .await
    {
        Err(KvError::NotFound { key }) => assert_eq!(key, format!("{p}absent")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(s.get(&format!("{p}c")).await.unwrap(), None);

    // Duplicate keys are rejected.
    assert!(
        s.txn(vec![
            TxnOp::Put {
                key: a.clone(),
                value: b"1".to_vec(),
                lease: None
            },
            TxnOp::Put {
                key: a.clone(),
                value: b"2".to_vec(),
                lease: None
            },
        ])
        .await
        .is_err(),
        "txn with a key twice must fail"
    );

    // Success: every op at one new revision, seen by a watch as one batch.
    let mut w = s.watch(&p, start).await.unwrap();
    let rev = s
        .txn(vec![
            TxnOp::Create {
                key: format!("{p}new"),
                value: b"n".to_vec(),
                lease: None,
            },
            TxnOp::Update {
                key: a.clone(),
                value: b"a1".to_vec(),
                expected_revision: ra,
                lease: None,
            },
            TxnOp::Delete {
                key: bk.clone(),
                expected_revision: Some(rb),
            },
        ])
        .await
        .unwrap();
    assert!(rev > start);
    assert_eq!(s.current_revision().await.unwrap(), rev);
    let evs = next_events(&mut w, 3).await;
    let mut sigs: Vec<_> = evs.iter().map(sig).collect();
    sigs.sort();
    assert_eq!(
        sigs,
        vec![
            ("delete", bk.clone(), rev),
            ("put", a.clone(), rev),
            ("put", format!("{p}new"), rev)
        ]
    );
    assert_eq!(s.get(&a).await.unwrap().unwrap().mod_revision, rev);
    assert_eq!(
        s.get(&format!("{p}new"))
            .await
            .unwrap()
            .unwrap()
            .create_revision,
        rev
    );
    assert_eq!(s.get(&bk).await.unwrap(), None);
    assert_eq!(
        s.txn(vec![]).await.unwrap(),
        rev,
        "empty txn writes nothing"
    );
}

async fn list_then_watch_sees_exactly_later_changes(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "lw");
    let other = prefix(b, "lw-other");
    for i in 0..5 {
        s.put(&format!("{p}k{i}"), format!("v{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let listing = s.list(&p).await.unwrap();
    assert_eq!(listing.kvs.len(), 5);

    // Changes after the listing, interleaved with changes outside the prefix.
    let mut expected = Vec::new();
    let r = s
        .put(&format!("{p}k1"), b"v1b".to_vec(), None)
        .await
        .unwrap();
    expected.push(("put", format!("{p}k1"), r));
    s.put(&format!("{other}x"), b"x".to_vec(), None)
        .await
        .unwrap();
    let kv = s.delete(&format!("{p}k2"), None).await.unwrap();
    let r = s.current_revision().await.unwrap();
    expected.push(("delete", format!("{p}k2"), r));
    let r = s
        .create(&format!("{p}k9"), b"v9".to_vec(), None)
        .await
        .unwrap();
    expected.push(("put", format!("{p}k9"), r));

    let mut w = s.watch(&p, listing.revision).await.unwrap();
    let evs = next_events(&mut w, expected.len()).await;
    assert_eq!(evs.iter().map(sig).collect::<Vec<_>>(), expected);
    // prev values are carried.
    match &evs[0] {
        WatchEvent::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!(
                (kv.value.as_slice(), prev.value.as_slice()),
                (&b"v1b"[..], &b"v1"[..])
            );
            assert_eq!(kv.create_revision, prev.create_revision);
        }
        other => panic!("expected a put with prev, got {other:?}"),
    }
    match &evs[1] {
        WatchEvent::Delete {
            prev: Some(prev), ..
        } => assert_eq!(prev, &kv),
        other => panic!("expected a delete with prev, got {other:?}"),
    }
    match &evs[2] {
        WatchEvent::Put { kv, prev } => {
            assert_eq!(prev, &None, "a create has no prev");
            assert_eq!(kv.create_revision, kv.mod_revision);
        }
        other => panic!("expected a put, got {other:?}"),
    }
    // Live changes keep coming, and nothing else does.
    let r = s
        .put(&format!("{p}k0"), b"live".to_vec(), None)
        .await
        .unwrap();
    let ev = next_event(&mut w, Duration::from_secs(5)).await;
    assert_eq!(sig(&ev), ("put", format!("{p}k0"), r));
    assert_eq!(value_of(&ev), Some(&b"live"[..]));
    s.put(&format!("{other}y"), b"y".to_vec(), None)
        .await
        .unwrap();
    assert_quiet(&mut w, Duration::from_millis(300)).await;

    // Replaying the listing plus the watched events gives the current state.
    let mut state = state_of(&listing.kvs);
    replay(&mut state, &evs);
    replay(&mut state, &[ev]);
    assert_same_state(
        &state,
        &state_of(&s.list(&p).await.unwrap().kvs),
        "replay vs listing",
    );
}

async fn watch_resumes_from_any_revision(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "resume");
    let base = s.current_revision().await.unwrap();
    let mut log = Vec::new();
    for i in 0..20 {
        let key = format!("{p}k{}", i % 4);
        let rev = if i % 7 == 6 {
            s.delete(&key, None).await.unwrap();
            let r = s.current_revision().await.unwrap();
            log.push(("delete", key, r));
            continue;
        } else {
            s.put(&key, format!("{i}").into_bytes(), None)
                .await
                .unwrap()
        };
        log.push(("put", key, rev));
    }
    for after in [
        base,
        log[0].2,
        log[6].2,
        log[13].2 - 1,
        log[19].2 - 1,
        log[19].2,
    ] {
        let expected: Vec<_> = log.iter().filter(|e| e.2 > after).cloned().collect();
        let mut w = s.watch(&p, after).await.unwrap();
        let got = next_events(&mut w, expected.len()).await;
        assert_eq!(
            got.iter().map(sig).collect::<Vec<_>>(),
            expected,
            "watch after {after}"
        );
        assert_quiet(&mut w, Duration::from_millis(150)).await;
    }
}

async fn watch_sees_other_process_writes(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "xproc");
    let count = 100;
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch(&p, start).await.unwrap();
    let child = run_child(b, &format!("writer:{p}:{count}")).await;
    let mut latencies = Vec::new();
    let mut last_rev = start;
    for i in 0..count {
        let ev = next_event(&mut w, Duration::from_secs(20)).await;
        let received = now_nanos();
        let (kind, key, rev) = sig(&ev);
        assert_eq!(
            (kind, key.as_str()),
            ("put", format!("{p}k{i}").as_str()),
            "order"
        );
        assert!(rev > last_rev);
        last_rev = rev;
        let sent: u128 = std::str::from_utf8(value_of(&ev).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        latencies.push(received.saturating_sub(sent) as f64 / 1e6);
    }
    let out = wait_child_ok(child, "writer").await;
    // libtest prints "test child_process_entry ... " on the same line as the child's output.
    let put_p50 = out
        .split_once("PUT-P50-MS=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?");
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    // Measured from just before the writer's put (so including its commit and fsync) to
    // delivery in this process.
    eprintln!(
        "[{}] cross-process write-to-watch latency over {count} writes: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (writer's put itself: p50 {put_p50} ms)",
        b.name(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    // Generous bound for a noisy 2-core VM; the target (< 20 ms) is reported above.
    assert!(
        pct(0.5) < 100.0,
        "median cross-process watch latency {:.1} ms",
        pct(0.5)
    );
}

async fn ttl_expiry_deletes_keys(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "ttl");
    // The lease cannot end before 1 s after the grant request was sent.
    let granted = Instant::now();
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    let start = s.current_revision().await.unwrap();
    s.create(&format!("{p}a"), b"a".to_vec(), Some(lease))
        .await
        .unwrap();
    s.put(&format!("{p}b"), b"b".to_vec(), Some(lease))
        .await
        .unwrap();
    s.put(&format!("{p}keep"), b"k".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(
        s.get(&format!("{p}a")).await.unwrap().unwrap().lease,
        Some(lease)
    );
    let mut w = s.watch(&p, start).await.unwrap();
    let evs = next_events(&mut w, 3).await;
    assert!(evs.iter().all(|e| matches!(e, WatchEvent::Put { .. })));
    let mut deleted = Vec::new();
    for _ in 0..2 {
        let ev = next_event(&mut w, Duration::from_secs(8)).await;
        match &ev {
            WatchEvent::Delete {
                key,
                prev: Some(prev),
                ..
            } => {
                assert_eq!(prev.lease, Some(lease));
                deleted.push(key.clone());
            }
            other => panic!("expected a delete by lease expiry, got {other:?}"),
        }
    }
    let elapsed = granted.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950),
        "deleted too early: {elapsed:?}"
    );
    deleted.sort();
    assert_eq!(deleted, vec![format!("{p}a"), format!("{p}b")]);
    assert_eq!(s.get(&format!("{p}a")).await.unwrap(), None);
    assert!(s.get(&format!("{p}keep")).await.unwrap().is_some());
    match s.keep_alive(lease).await {
        Err(KvError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("keep-alive of an expired lease: expected LeaseNotFound, got {other:?}"),
    }
    match s.create(&format!("{p}c"), b"c".to_vec(), Some(lease)).await {
        Err(KvError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("create with an expired lease: expected LeaseNotFound, got {other:?}"),
    }
    assert_eq!(s.get(&format!("{p}c")).await.unwrap(), None);
}

async fn keep_alive_extends(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "ka");
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    s.create(&format!("{p}a"), b"a".to_vec(), Some(lease))
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut last_keep_alive = t0;
    while t0.elapsed() < Duration::from_millis(4500) {
        last_keep_alive = Instant::now();
        s.keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        s.get(&format!("{p}a")).await.unwrap().is_some(),
        "key of a kept-alive lease vanished after {:?}",
        t0.elapsed()
    );
    loop {
        if s.get(&format!("{p}a")).await.unwrap().is_none() {
            break;
        }
        assert!(
            last_keep_alive.elapsed() < Duration::from_secs(10),
            "key not deleted after keep-alives stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last keep-alive reached the store after `last_keep_alive`, so the 2 s TTL counts
    // from then at the earliest.
    assert!(
        last_keep_alive.elapsed() >= Duration::from_millis(1900),
        "expired {:?} after the last keep-alive, before its TTL",
        last_keep_alive.elapsed()
    );
}

async fn revoke_deletes_keys(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "revoke");
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.create(&format!("{p}a"), b"a".to_vec(), Some(lease))
        .await
        .unwrap();
    s.create(&format!("{p}b"), b"b".to_vec(), Some(lease))
        .await
        .unwrap();
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch(&p, start).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let evs = next_events(&mut w, 2).await;
    let rev = s.current_revision().await.unwrap();
    let mut sigs: Vec<_> = evs.iter().map(sig).collect();
    sigs.sort();
    assert_eq!(
        sigs,
        vec![
            ("delete", format!("{p}a"), rev),
            ("delete", format!("{p}b"), rev)
        ]
    );
    assert!(s.list(&p).await.unwrap().kvs.is_empty());
    match s.revoke_lease(lease).await {
        Err(KvError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("second revoke: expected LeaseNotFound, got {other:?}"),
    }
    match s.keep_alive(lease).await {
        Err(KvError::LeaseNotFound(_)) => {}
        other => panic!("keep-alive of a revoked lease: expected LeaseNotFound, got {other:?}"),
    }
}

async fn compaction_reports_compacted(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "compact");
    for i in 0..10 {
        s.put(&format!("{p}k"), format!("{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let r = s.current_revision().await.unwrap();
    b.compact(r - 2).await;
    // Too old: one Compacted event, then the stream ends.
    let mut w = s.watch(&p, r - 5).await.unwrap();
    match next_event(&mut w, Duration::from_secs(5)).await {
        WatchEvent::Compacted { compact_revision } => assert_eq!(compact_revision, r - 2),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("stream ends");
    assert!(
        end.is_none(),
        "stream must end after Compacted, got {end:?}"
    );
    // From the compaction revision on, history is still there.
    let mut w = s.watch(&p, r - 3).await.unwrap();
    let evs = next_events(&mut w, 3).await;
    assert_eq!(
        evs.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        vec![r - 2, r - 1, r]
    );
    assert_eq!(value_of(&evs[2]), Some(&b"9"[..]));
    // The listing is unaffected and a list+watch recovers.
    let listing = s.list(&p).await.unwrap();
    assert_eq!(listing.kvs[0].value, b"9");
    let mut w = s.watch(&p, listing.revision).await.unwrap();
    let r2 = s
        .put(&format!("{p}k"), b"after".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut w, Duration::from_secs(5)).await.revision(),
        r2
    );
}

async fn concurrent_cas_increments_8_processes(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "cas");
    let key = format!("{p}counter");
    let (procs, per) = (8, 40);
    let start = s.create(&key, b"0".to_vec(), None).await.unwrap();
    let t0 = Instant::now();
    let mut children = Vec::new();
    for _ in 0..procs {
        children.push(run_child(b, &format!("incr:{key}:{per}")).await);
    }
    for (i, c) in children.into_iter().enumerate() {
        wait_child_ok(c, &format!("incrementer {i}")).await;
    }
    let kv = s.get(&key).await.unwrap().unwrap();
    let total: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
    eprintln!(
        "[{}] {procs} processes x {per} CAS increments: {total} in {:?}",
        b.name(),
        t0.elapsed()
    );
    assert_eq!(total, procs * per, "lost updates");
    // The history shows every value exactly once, in order.
    let evs = drain_history(s, &p, start).await;
    let values: Vec<u64> = evs
        .iter()
        .map(|e| {
            std::str::from_utf8(value_of(e).unwrap())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(values, (1..=procs * per).collect::<Vec<_>>());
}

async fn killed_writer_leaves_consistent_store(b: &Backend) {
    let s = &*b.store;
    let p = prefix(b, "kill");
    let start = s.current_revision().await.unwrap();
    let read_counter = |kvs: &[KeyValue]| -> u64 {
        kvs.iter()
            .find(|kv| kv.key == format!("{p}counter"))
            .map_or(0, |kv| {
                std::str::from_utf8(&kv.value).unwrap().parse().unwrap()
            })
    };
    let mut counter = 0;
    let mut fresh: Option<Arc<dyn KvStore>> = None;
    // Three writers in a row, each resuming from the counter and SIGKILLed at a different
    // point of its stream of transactions.
    for (cycle, progress) in [150_u64, 37, 61].into_iter().enumerate() {
        let mut child = run_child(b, &format!("txn-writer:{p}")).await;
        let t0 = Instant::now();
        loop {
            let n = read_counter(
                &s.get(&format!("{p}counter"))
                    .await
                    .unwrap()
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
            if n >= counter + progress {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("txn writer {cycle} exited early: {status}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "txn writer {cycle} made no progress"
            );
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        child.start_kill().expect("SIGKILL the writer");
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "writer {cycle} should have been killed");

        // A fresh handle (a new process would do the same) sees a consistent store.
        let handle = match &b.kind {
            Kind::Sqlite { path, .. } => {
                let fresh = SqliteStore::open(path).unwrap();
                let report = fresh.check_consistency().await.unwrap();
                assert!(
                    report.problems.is_empty(),
                    "inconsistent after SIGKILL {cycle}: {report:?}"
                );
                Arc::new(fresh) as Arc<dyn KvStore>
            }
            Kind::Etcd { etcd, .. } => Arc::new(etcd.connect().await.unwrap()) as Arc<dyn KvStore>,
        };
        let listing = handle.list(&p).await.unwrap();
        counter = read_counter(&listing.kvs);
        let logs = listing
            .kvs
            .iter()
            .filter(|kv| kv.key.starts_with(&format!("{p}log/")))
            .count();
        assert_eq!(
            logs as u64, counter,
            "every committed txn wrote both its keys"
        );
        let evs = drain_history(&*handle, &p, start).await;
        let mut state = BTreeMap::new();
        replay(&mut state, &evs);
        assert_same_state(&state, &state_of(&listing.kvs), "history replay vs listing");
        assert_eq!(evs.last().map(|e| e.revision()), Some(listing.revision));
        fresh = Some(handle);
    }
    let fresh = fresh.expect("at least one cycle");

    // A subsequent writer works.
    let before = fresh.current_revision().await.unwrap();
    let next = counter + 1;
    let rev = fresh
        .txn(vec![
            TxnOp::Put {
                key: format!("{p}counter"),
                value: next.to_string().into_bytes(),
                lease: None,
            },
            TxnOp::Create {
                key: format!("{p}log/{next:06}"),
                value: b"x".to_vec(),
                lease: None,
            },
        ])
        .await
        .unwrap();
    assert!(rev > before);
    assert_eq!(
        fresh
            .get(&format!("{p}counter"))
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        rev
    );
    eprintln!(
        "[{}] 3 writers SIGKILLed, {counter} txns committed; store consistent after each",
        b.name()
    );
}

async fn watch_catches_up_across_many_revisions(b: &Backend) {
    // More revisions than one catch-up batch and than the stream's buffer, two events per
    // revision: nothing lost, duplicated or split, in order.
    let s = &*b.store;
    let p = prefix(b, "many");
    let start = s.current_revision().await.unwrap();
    let n = 700;
    for i in 0..n {
        s.txn(vec![
            TxnOp::Put {
                key: format!("{p}a"),
                value: format!("{i}").into_bytes(),
                lease: None,
            },
            TxnOp::Put {
                key: format!("{p}b"),
                value: format!("{i}").into_bytes(),
                lease: None,
            },
        ])
        .await
        .unwrap();
    }
    let mut w = s.watch(&p, start).await.unwrap();
    let evs = next_events(&mut w, 2 * n).await;
    for (i, pair) in evs.chunks(2).enumerate() {
        let want = format!("{i}").into_bytes();
        assert_eq!(
            pair[0].revision(),
            pair[1].revision(),
            "a txn's events share a revision"
        );
        assert_eq!(sig(&pair[0]).1, format!("{p}a"));
        assert_eq!(
            sig(&pair[1]).1,
            format!("{p}b"),
            "op order within a revision"
        );
        assert_eq!(
            (value_of(&pair[0]), value_of(&pair[1])),
            (Some(&want[..]), Some(&want[..]))
        );
    }
    assert!(evs.windows(2).all(|w| w[0].revision() <= w[1].revision()));
    assert_quiet(&mut w, Duration::from_millis(200)).await;
}

async fn watch_with_empty_prefix_sees_every_key(b: &Backend) {
    let s = &*b.store;
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch("", start).await.unwrap();
    let r1 = s
        .put(&format!("{}x", prefix(b, "all-a")), b"1".to_vec(), None)
        .await
        .unwrap();
    let r2 = s.put("/elsewhere/y", b"2".to_vec(), None).await.unwrap();
    let evs = next_events(&mut w, 2).await;
    assert_eq!(
        evs.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        vec![r1, r2]
    );
}

async fn txn_with_many_ops(b: &Backend) {
    // 100 ops in one txn (etcd's default limit is 128 per txn).
    let s = &*b.store;
    let p = prefix(b, "bigtxn");
    let ops = (0..100)
        .map(|i| TxnOp::Create {
            key: format!("{p}k{i:03}"),
            value: vec![b'v'; 100],
            lease: None,
        })
        .collect();
    let rev = s.txn(ops).await.unwrap();
    let listing = s.list(&p).await.unwrap();
    assert_eq!(listing.kvs.len(), 100);
    assert!(
        listing
            .kvs
            .iter()
            .all(|kv| kv.mod_revision == rev && kv.create_revision == rev)
    );
    let ops = (0..100)
        .map(|i| TxnOp::Delete {
            key: format!("{p}k{i:03}"),
            expected_revision: Some(rev),
        })
        .collect();
    let rev2 = s.txn(ops).await.unwrap();
    assert!(rev2 > rev);
    assert!(s.list(&p).await.unwrap().kvs.is_empty());
}

async fn list_and_watch_large_data(b: &Backend) {
    // 6 MB of values: beyond gRPC's default 4 MiB response limit for one list page.
    let s = &*b.store;
    let p = prefix(b, "large");
    let start = s.current_revision().await.unwrap();
    let n = 300;
    for i in 0..n {
        let value = vec![b'a' + (i % 26) as u8; 20_000];
        s.put(&format!("{p}k{i:04}"), value, None).await.unwrap();
    }
    let listing = s.list(&p).await.unwrap();
    assert_eq!(listing.kvs.len(), n);
    assert!(
        listing
            .kvs
            .iter()
            .enumerate()
            .all(|(i, kv)| kv.value.len() == 20_000 && kv.value[0] == b'a' + (i % 26) as u8)
    );
    let mut w = s.watch(&p, start).await.unwrap();
    let evs = next_events(&mut w, n).await;
    assert_eq!(evs.last().unwrap().revision(), listing.revision);
}

// ---------------------------------------------------------------------------------------------
// Backend-specific cases

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_auto_compaction_keeps_recent_history() {
    let b = Backend::sqlite_with(SqliteOptions {
        history_revisions: 50,
        ..Default::default()
    });
    let s = &*b.store;
    for i in 0..200 {
        s.put("/auto/k", format!("{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let r = s.current_revision().await.unwrap();
    let mut w = s.watch("/auto/", 1).await.unwrap();
    match next_event(&mut w, Duration::from_secs(5)).await {
        WatchEvent::Compacted { compact_revision } => {
            assert!(
                compact_revision > 1 && compact_revision <= r - 49,
                "compacted to {compact_revision} at {r}"
            );
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut w = s.watch("/auto/", r - 50).await.unwrap();
    let evs = next_events(&mut w, 50).await;
    assert_eq!(evs.last().unwrap().revision(), r);
    let Kind::Sqlite { store, .. } = &b.kind else {
        unreachable!()
    };
    let report = store.check_consistency().await.unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(
        report.history_rows <= 55 + 5,
        "history not trimmed: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_lease_reaped_by_another_process_handle() {
    // A lease granted by one handle and left to expire is reaped by the watcher of another
    // handle of the same file (as the agent reaps what a dead CNI plugin left behind).
    let b = Backend::sqlite();
    let Kind::Sqlite { path, .. } = &b.kind else {
        unreachable!()
    };
    let granter = SqliteStore::open(path).unwrap();
    let lease = granter
        .grant_lease(Duration::from_millis(300))
        .await
        .unwrap();
    granter
        .create("/reap/a", b"a".to_vec(), Some(lease))
        .await
        .unwrap();
    drop(granter);
    let start = b.store.current_revision().await.unwrap();
    let mut w = b.store.watch("/reap/", start).await.unwrap();
    let ev = next_event(&mut w, Duration::from_secs(5)).await;
    assert_eq!(sig(&ev).0, "delete");
    assert_eq!(b.store.get("/reap/a").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fresh_file_opened_by_8_processes_at_once() {
    // Creating the file, switching it to WAL and creating the schema race between openers.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fresh/calico.db");
    let mut children = Vec::new();
    for i in 0..8 {
        children.push(run_child_on(
            &format!("sqlite:{}", path.display()),
            &format!("open-create:/fresh/k{i}"),
        ));
    }
    for (i, c) in children.into_iter().enumerate() {
        wait_child_ok(c, &format!("opener {i}")).await;
    }
    let store = SqliteStore::open(&path).unwrap();
    let listing = store.list("/fresh/").await.unwrap();
    assert_eq!(listing.kvs.len(), 8);
    assert_eq!(listing.revision, 8, "one revision per create");
    let report = store.check_consistency().await.unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_outlives_the_request_timeout() {
    // The per-request timeout must not cut long-lived watch streams.
    let Some(b) = Backend::etcd().await else {
        return;
    };
    let Kind::Etcd { etcd, .. } = &b.kind else {
        unreachable!()
    };
    let store = EtcdStore::connect(EtcdOptions {
        request_timeout: Duration::from_millis(500),
        ..etcd.options()
    })
    .await
    .unwrap();
    let start = store.current_revision().await.unwrap();
    let mut w = store.watch("/long/", start).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = b.store.put("/long/k", b"1".to_vec(), None).await.unwrap();
    assert_eq!(
        next_event(&mut w, Duration::from_secs(5)).await.revision(),
        r
    );
    assert_quiet(&mut w, Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_consistency_check_detects_damage() {
    // The SIGKILL case trusts check_consistency; show that it does flag broken stores.
    let damage = [
        "UPDATE kv SET value = x'00' WHERE key = CAST('/dmg/k1' AS BLOB)",
        "DELETE FROM history WHERE revision = (SELECT max(revision) FROM history)",
        "UPDATE meta SET value = value + 7 WHERE name = 'revision'",
        "DELETE FROM kv WHERE key = CAST('/dmg/k2' AS BLOB)",
        "UPDATE kv SET lease = 999 WHERE key = CAST('/dmg/k3' AS BLOB)",
    ];
    for sql in damage {
        let b = Backend::sqlite();
        let Kind::Sqlite { path, store } = &b.kind else {
            unreachable!()
        };
        for i in 0..5 {
            store
                .put(&format!("/dmg/k{i}"), b"v".to_vec(), None)
                .await
                .unwrap();
        }
        assert!(store.check_consistency().await.unwrap().problems.is_empty());
        let raw = rusqlite::Connection::open(path).unwrap();
        assert_eq!(raw.execute(sql, []).unwrap(), 1, "{sql}");
        let report = store.check_consistency().await.unwrap();
        assert!(
            !report.problems.is_empty(),
            "damage {sql:?} not detected: {report:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_watch_resumes_without_loss() {
    let Some(mut b) = Backend::etcd().await else {
        return;
    };
    let s = Arc::clone(&b.store);
    let p = prefix(&b, "restart");
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch(&p, start).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..5 {
        let r = s
            .put(&format!("{p}k{i}"), b"before".to_vec(), None)
            .await
            .unwrap();
        expected.push(r);
    }
    // Only the first events are consumed before the restart; the rest are in flight or not
    // yet delivered and must not be lost or duplicated.
    let mut got: Vec<Revision> = next_events(&mut w, 2)
        .await
        .iter()
        .map(|e| e.revision())
        .collect();
    let Kind::Etcd { etcd, .. } = &mut b.kind else {
        unreachable!()
    };
    etcd.stop();
    match s.put(&format!("{p}down"), b"x".to_vec(), None).await {
        Err(e) => assert!(e.is_transient(), "write while etcd is down: {e}"),
        Ok(r) => panic!("write succeeded at {r} while etcd was stopped"),
    }
    etcd.spawn_and_wait()
        .await
        .expect("restart etcd on the same data dir");
    for i in 5..10 {
        let r = s
            .put(&format!("{p}k{i}"), b"after".to_vec(), None)
            .await
            .unwrap();
        expected.push(r);
    }
    while got.len() < expected.len() {
        got.push(next_event(&mut w, Duration::from_secs(20)).await.revision());
    }
    assert_eq!(got, expected, "events across the restart");
    assert_quiet(&mut w, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn etcd_unreachable_endpoint_is_unavailable() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let res = EtcdStore::connect(EtcdOptions {
        endpoints: vec![endpoint.clone()],
        dial_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    match res {
        Err(e @ KvError::Unavailable(_)) => {
            assert!(
                e.to_string().contains(&endpoint),
                "error must name the endpoint: {e}"
            );
            assert!(e.is_transient());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "dial timeout not honoured: {:?}",
        t0.elapsed()
    );
}

fn etcd_missing() -> bool {
    if Path::new(ETCD_BIN).exists() {
        return false;
    }
    eprintln!("\n*** SKIP: {ETCD_BIN} not found (install Debian package etcd-server) ***\n");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_tls_client_certificates_from_files_and_inline() {
    if etcd_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = TlsFiles::generate(dir.path());
    let etcd = EtcdProcess::start(dir.path(), Some(tls.clone())).await;
    assert!(etcd.client_url.starts_with("https://"));

    let by_file = EtcdStore::connect(tls.options(&etcd.client_url))
        .await
        .expect("TLS via files");
    let rev = by_file.put("/tls/a", b"1".to_vec(), None).await.unwrap();

    let inline = |p: &Path| PemSource::Inline(std::fs::read_to_string(p).unwrap());
    let by_inline = EtcdStore::connect(EtcdOptions {
        ca: Some(inline(&tls.ca)),
        cert: Some(inline(&tls.client_cert)),
        key: Some(inline(&tls.client_key)),
        ..tls.options(&etcd.client_url)
    })
    .await
    .expect("TLS via inline PEM");
    let kv = by_inline
        .get("/tls/a")
        .await
        .unwrap()
        .expect("key written over TLS");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"1"[..], rev));

    // No client certificate: etcd (with --client-cert-auth) refuses the handshake.
    let no_cert = EtcdStore::connect(EtcdOptions {
        cert: None,
        key: None,
        ..tls.options(&etcd.client_url)
    })
    .await;
    assert!(
        no_cert.is_err(),
        "connect without a client certificate must fail"
    );
    // A CA that did not sign the server: the server is not trusted.
    let wrong_ca = EtcdStore::connect(EtcdOptions {
        ca: Some(inline(&tls.client_cert)),
        ..tls.options(&etcd.client_url)
    })
    .await;
    match wrong_ca {
        Err(e @ KvError::Unavailable(_)) => {
            assert!(e.to_string().contains(&etcd.client_url), "{e}")
        }
        other => panic!("untrusted server: expected Unavailable, got {other:?}"),
    }
    // Half a client identity is a configuration error.
    match EtcdStore::connect(EtcdOptions {
        key: None,
        ..tls.options(&etcd.client_url)
    })
    .await
    {
        Err(KvError::Backend(m)) => assert!(m.contains("certificate and key"), "{m}"),
        other => panic!("cert without key: expected a configuration error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_username_password_auth() {
    let Some(b) = Backend::etcd().await else {
        return;
    };
    let Kind::Etcd { etcd, .. } = &b.kind else {
        unreachable!()
    };
    // Set up auth with the raw client: root user, and a calico user limited to /calico/.
    let mut admin = etcd_client::Client::connect([etcd.client_url.as_str()], None)
        .await
        .unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.user_add("calico", "calicopw", None).await.unwrap();
    admin.role_add("calico").await.unwrap();
    admin
        .role_grant_permission(
            "calico",
            etcd_client::Permission::read_write("/calico/").with_prefix(),
        )
        .await
        .unwrap();
    admin.user_grant_role("calico", "calico").await.unwrap();
    admin.auth_enable().await.unwrap();

    let with_user = |user: &str, pw: &str| EtcdOptions {
        username: Some(user.to_owned()),
        password: Some(pw.to_owned()),
        ..etcd.options()
    };
    let calico = EtcdStore::connect(with_user("calico", "calicopw"))
        .await
        .expect("calico user");
    let rev = calico
        .create("/calico/x", b"1".to_vec(), None)
        .await
        .unwrap();
    assert!(calico.current_revision().await.unwrap() >= rev);
    let mut w = calico.watch("/calico/", rev - 1).await.unwrap();
    assert_eq!(
        next_event(&mut w, Duration::from_secs(5)).await.revision(),
        rev
    );
    assert!(
        calico.put("/elsewhere", b"1".to_vec(), None).await.is_err(),
        "outside its prefix"
    );
    assert!(
        EtcdStore::connect(with_user("calico", "wrong"))
            .await
            .is_err(),
        "a wrong password must be refused"
    );
    // Without credentials, reads are refused once auth is on.
    let anonymous = EtcdStore::connect(etcd.options()).await;
    if let Ok(anon) = anonymous {
        assert!(
            anon.get("/calico/x").await.is_err(),
            "anonymous read with auth enabled"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Instantiation

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = super::Backend::sqlite();
                    super::$case(&b).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(b) = super::Backend::etcd().await else { return };
                    super::$case(&b).await;
                }
            )*
        }
    };
}

conformance!(
    create_get_list,
    update_put_delete,
    txn_all_or_nothing,
    list_then_watch_sees_exactly_later_changes,
    watch_resumes_from_any_revision,
    watch_sees_other_process_writes,
    ttl_expiry_deletes_keys,
    keep_alive_extends,
    revoke_deletes_keys,
    compaction_reports_compacted,
    concurrent_cas_increments_8_processes,
    killed_writer_leaves_consistent_store,
    watch_catches_up_across_many_revisions,
    watch_with_empty_prefix_sees_every_key,
    txn_with_many_ops,
    list_and_watch_large_data,
);

// ---------------------------------------------------------------------------------------------
// Child processes

/// Entry point of the child processes the multi-process cases spawn (this binary re-executed
/// with `CONFORMANCE_CHILD` set). In a normal test run it has nothing to do.
#[test]
fn child_process_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec = std::env::var(STORE_ENV).expect("CONFORMANCE_STORE");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child_main(&mode, &spec));
    println!("CHILD-OK");
}

async fn child_main(mode: &str, spec: &str) {
    let store = open_spec(spec).await;
    let parts: Vec<&str> = mode.split(':').collect();
    match parts.as_slice() {
        // Timestamped puts, 5 ms apart, for the latency measurement.
        ["writer", prefix, count] => {
            let count: usize = count.parse().expect("count");
            let mut put_ms = Vec::with_capacity(count);
            for i in 0..count {
                let t0 = Instant::now();
                let stamp = now_nanos().to_string().into_bytes();
                store
                    .put(&format!("{prefix}k{i}"), stamp, None)
                    .await
                    .expect("put");
                put_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            put_ms.sort_by(f64::total_cmp);
            println!("PUT-P50-MS={:.2}", put_ms[put_ms.len() / 2]);
        }
        // CAS increments with retry on conflict.
        ["incr", key, n] => {
            let n: u64 = n.parse().expect("n");
            let mut conflicts = 0;
            for _ in 0..n {
                loop {
                    let kv = store.get(key).await.expect("get").expect("counter exists");
                    let v: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    match store
                        .update(key, (v + 1).to_string().into_bytes(), kv.mod_revision, None)
                        .await
                    {
                        Ok(_) => break,
                        Err(KvError::Conflict { .. }) => conflicts += 1,
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("update: {e}"),
                    }
                }
            }
            eprintln!("incrementer: {n} increments, {conflicts} conflicts");
        }
        // Open (maybe creating) the store and create one key.
        ["open-create", key] => {
            store
                .create(key, b"x".to_vec(), None)
                .await
                .expect("create");
        }
        // Endless transactions: bump the counter and create one log key, atomically.
        ["txn-writer", prefix] => {
            // Resume after the last committed transaction.
            let mut i: u64 = match store.get(&format!("{prefix}counter")).await.expect("get") {
                Some(kv) => std::str::from_utf8(&kv.value).unwrap().parse().unwrap(),
                None => 0,
            };
            loop {
                i += 1;
                store
                    .txn(vec![
                        TxnOp::Put {
                            key: format!("{prefix}counter"),
                            value: i.to_string().into_bytes(),
                            lease: None,
                        },
                        TxnOp::Create {
                            key: format!("{prefix}log/{i:06}"),
                            value: vec![b'x'; 512],
                            lease: None,
                        },
                    ])
                    .await
                    .expect("txn");
            }
        }
        _ => panic!("unknown child mode {mode:?}"),
    }
}

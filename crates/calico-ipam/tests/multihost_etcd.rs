//! Four hosts allocating at once against ONE real etcd (Debian's `/usr/bin/etcd`, started on free
//! loopback ports with a temp data dir and killed on drop): 4 × 200 single-address
//! `auto_assign`s, each host over its own etcd connection, in a /22 pool of /28 blocks (so hosts
//! race for block claims all the time). Afterwards no address was handed out twice, no block is
//! claimed by two hosts (affinity objects vs the blocks' `affinity` field), and `ipam check`
//! finds nothing wrong; a fifth host limited to one block then has to borrow from the others'
//! blocks; releasing everything leaves no handle, no allocation and a clean check.
//! Without `/usr/bin/etcd` (package `etcd-server`) the test prints a loud SKIP and returns.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_datastore::KvStore;
use calico_datastore::etcd::{EtcdOptions, EtcdStore};
use calico_ipam::check::LiveWorkloads;
use calico_ipam::{AutoAssignArgs, IpamClient, PoolConfig};
use ipnet::IpNet;

const ETCD_BIN: &str = "/usr/bin/etcd";
const HOSTS: usize = 4;
const PER_HOST: usize = 200;
const POOL_CIDR: &str = "10.42.0.0/22";
const BLOCK_SIZE: u8 = 28;

/// A real etcd; SIGKILLed on drop (also when the test panics).
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn scratch() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("calico-ipam-multihost-");
    if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").expect("tempdir")
    } else {
        b.tempdir().expect("tempdir")
    }
}

fn options(url: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints: vec![url.to_string()],
        dial_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

impl Etcd {
    async fn start() -> Etcd {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = scratch();
            let data: PathBuf = dir.path().join("data");
            let log_path = dir.path().join("etcd.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let url = format!("http://127.0.0.1:{}", free_port());
            let peer = format!("http://127.0.0.1:{}", free_port());
            let child = Command::new(ETCD_BIN)
                .arg("--name=multihost")
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls={url}"))
                .arg(format!("--advertise-client-urls={url}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=multihost={peer}"))
                .arg("--heartbeat-interval=10")
                .arg("--election-timeout=100")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            let mut etcd = Etcd {
                child,
                url,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = etcd.child.try_wait() {
                    last = format!(
                        "etcd exited with {status}: {}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                    break;
                }
                if EtcdStore::connect(options(&etcd.url)).await.is_ok() {
                    return etcd;
                }
                if Instant::now() > deadline {
                    last = "etcd not healthy after 30 s".into();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("etcd did not start: {last}");
    }

    async fn store(&self) -> Arc<dyn KvStore> {
        Arc::new(EtcdStore::connect(options(&self.url)).await.unwrap())
    }
}

fn pools() -> Vec<PoolConfig> {
    vec![PoolConfig::new("multihost", POOL_CIDR.parse().unwrap()).with_block_size(BLOCK_SIZE)]
}

fn args(host: &str, handle: &str, max_blocks: u32) -> AutoAssignArgs {
    AutoAssignArgs {
        num4: 1,
        handle_id: Some(handle.to_string()),
        attrs: [
            ("node".to_string(), host.to_string()),
            ("pod".to_string(), handle.to_string()),
            ("namespace".to_string(), "default".to_string()),
        ]
        .into_iter()
        .collect(),
        hostname: host.to_string(),
        max_blocks_per_host: max_blocks,
        ..Default::default()
    }
}

/// One host's allocations: handle -> (address, block).
async fn run_host(
    store: Arc<dyn KvStore>,
    host: String,
    n: usize,
    max_blocks: u32,
) -> BTreeMap<String, (IpAddr, IpNet)> {
    let c = IpamClient::new(store).with_pools(pools());
    let mut got = BTreeMap::new();
    for i in 0..n {
        let handle = format!("{host}.wl-{i}");
        let out = c
            .auto_assign(args(&host, &handle, max_blocks))
            .await
            .unwrap_or_else(|e| panic!("{host}: auto_assign #{i}: {e}"));
        assert_eq!(
            out.v4.ips.len(),
            1,
            "{host} #{i}: {:?}",
            out.v4.partial_fulfillment_error(calico_ipam::IpVersion::V4)
        );
        got.insert(handle, (out.v4.ips[0].addr(), out.v4.ips[0].block));
    }
    got
}

/// The invariants over the whole datastore, given every address handed out so far.
async fn assert_consistent(c: &IpamClient, got: &BTreeMap<String, (IpAddr, IpNet)>) {
    let mut by_ip: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for (h, (ip, _)) in got {
        by_ip.entry(*ip).or_default().push(h);
    }
    let twice: Vec<_> = by_ip.iter().filter(|(_, hs)| hs.len() > 1).collect();
    assert!(twice.is_empty(), "addresses handed out twice: {twice:?}");

    let snap = c.snapshot().await.unwrap();
    // Affinity objects per block: exactly one owner, and the block names the same owner.
    let mut owners: BTreeMap<IpNet, Vec<String>> = BTreeMap::new();
    for a in &snap.affinities {
        owners.entry(a.cidr).or_default().push(a.owner.to_string());
    }
    for (cidr, o) in &owners {
        assert_eq!(o.len(), 1, "block {cidr} claimed by {o:?}");
    }
    for b in &snap.blocks {
        let obj = owners.get(&b.cidr).map(|o| o[0].clone());
        assert_eq!(
            b.affinity, obj,
            "block {} affinity field vs affinity object",
            b.cidr
        );
    }
    // The blocks hold exactly the addresses handed out, each under its handle.
    let mut in_blocks: BTreeMap<IpAddr, String> = BTreeMap::new();
    for b in &snap.blocks {
        for (_, ip, attr) in b.allocated() {
            let prev = in_blocks.insert(ip, attr.handle_id.clone().unwrap_or_default());
            assert!(prev.is_none(), "{ip} allocated in two blocks");
        }
    }
    let want: BTreeMap<IpAddr, String> = got.iter().map(|(h, (ip, _))| (*ip, h.clone())).collect();
    assert_eq!(in_blocks, want, "block allocations vs addresses handed out");

    let mut live = LiveWorkloads::default();
    for (h, (ip, _)) in got {
        live.add_ip(*ip, h);
    }
    let report = c.check(&live).await.unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_hosts_against_one_etcd() {
    if !Path::new(ETCD_BIN).exists() {
        eprintln!(
            "\n*** SKIP four_hosts_against_one_etcd: {ETCD_BIN} not found \
             (install Debian package etcd-server) ***\n"
        );
        return;
    }
    let etcd = Etcd::start().await;
    let c = IpamClient::new(etcd.store().await).with_pools(pools());

    let started = Instant::now();
    let mut tasks = Vec::new();
    for h in 0..HOSTS {
        let store = etcd.store().await;
        tasks.push(tokio::spawn(run_host(
            store,
            format!("host-{h}"),
            PER_HOST,
            0,
        )));
    }
    let mut got = BTreeMap::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    assert_eq!(got.len(), HOSTS * PER_HOST);
    assert_consistent(&c, &got).await;

    // Every host claimed blocks of its own; with no block limit nobody had to borrow.
    let snap = c.snapshot().await.unwrap();
    let mut blocks_of: BTreeMap<String, usize> = BTreeMap::new();
    for b in &snap.blocks {
        *blocks_of
            .entry(b.affinity.clone().unwrap_or_default())
            .or_default() += 1;
    }
    for h in 0..HOSTS {
        let n = blocks_of
            .get(&format!("host:host-{h}"))
            .copied()
            .unwrap_or(0);
        assert!(
            n * 16 >= PER_HOST,
            "host-{h} owns {n} blocks for {PER_HOST} addresses: {blocks_of:?}"
        );
    }
    for (handle, (_, block)) in &got {
        let host = handle.split('.').next().unwrap();
        let b = snap.blocks.iter().find(|b| b.cidr == *block).unwrap();
        assert_eq!(
            b.affinity.as_deref(),
            Some(format!("host:{host}").as_str()),
            "{handle} got an address in a block of another host"
        );
    }
    eprintln!(
        "multihost etcd: {} allocations by {HOSTS} hosts in {elapsed:.2?}; blocks per owner {blocks_of:?}",
        got.len()
    );

    // A fifth host takes every unclaimed block and then, the pool being out of free blocks,
    // must borrow addresses from the other hosts' blocks.
    let unclaimed = (1usize << (BLOCK_SIZE - 22)) - snap.blocks.len();
    let free_elsewhere: usize = snap.blocks.iter().map(|b| 16 - b.in_use_count()).sum();
    let to_borrow = free_elsewhere.min(8);
    assert!(to_borrow > 0, "no free address left in the hosts' blocks");
    let extra = unclaimed * 16 + to_borrow;
    let borrower = run_host(etcd.store().await, "host-borrow".into(), extra, 0).await;
    let snap = c.snapshot().await.unwrap();
    let borrowed = borrower
        .values()
        .filter(|(_, block)| {
            snap.blocks
                .iter()
                .find(|b| b.cidr == *block)
                .and_then(|b| b.affinity.as_deref())
                != Some("host:host-borrow")
        })
        .count();
    assert_eq!(borrowed, to_borrow, "borrowed addresses: {borrower:?}");
    got.extend(borrower);
    assert_consistent(&c, &got).await;

    // Release everything, each host over its own connection, concurrently.
    let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in got.keys() {
        by_host
            .entry(h.split('.').next().unwrap().to_string())
            .or_default()
            .push(h.clone());
    }
    let mut tasks = Vec::new();
    for (_, handles) in by_host {
        let rc = IpamClient::new(etcd.store().await).with_pools(pools());
        tasks.push(tokio::spawn(async move {
            for h in handles {
                let ips = rc.release_by_handle(&h).await.unwrap();
                assert_eq!(ips.len(), 1, "release {h}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snap = c.snapshot().await.unwrap();
    assert!(snap.handles.is_empty(), "handles left: {:?}", snap.handles);
    let in_use: usize = snap.blocks.iter().map(|b| b.in_use_count()).sum();
    assert_eq!(in_use, 0, "allocations left after releasing everything");
    let report = c.check(&LiveWorkloads::default()).await.unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
}

//! Allocation throughput: the pure core, and IpamClient on the SQLite backend (on disk and on
//! /dev/shm) and on etcd (a real /usr/bin/etcd on a free loopback port; loud skip when absent).
//!
//! `cargo bench -p calico-ipam --bench ipam` prints one line per measurement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_datastore::KvStore;
use calico_datastore::etcd::{EtcdOptions, EtcdStore};
use calico_datastore::sqlite::SqliteStore;
use calico_ipam::block::{Affinity, AllocationBlock};
use calico_ipam::pool::{BlockIndex, ExistingBlock, PoolConfig, find_usable_block};
use calico_ipam::{AutoAssignArgs, IpamClient, Reservations};
use ipnet::IpNet;
use time::OffsetDateTime;

const ETCD_BIN: &str = "/usr/bin/etcd";

fn report(what: &str, n: usize, elapsed: Duration) {
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{what:<58} {n:>7} ops in {:>8.3} s = {rate:>12.0} /s",
        elapsed.as_secs_f64()
    );
}

fn bench_core() {
    let cidr: IpNet = "10.0.0.0/26".parse().unwrap();
    let me = Affinity::host("n");
    let none = Reservations::default();
    let mut b = AllocationBlock::new(cidr, OffsetDateTime::UNIX_EPOCH).unwrap();
    b.set_affinity(&me, OffsetDateTime::UNIX_EPOCH);
    let handles: Vec<String> = (0..64)
        .map(|i| format!("k8s-pod-network.{i:064}"))
        .collect();
    let n = 2_000_000;
    let start = Instant::now();
    for i in 0..n {
        let h = &handles[i % 64];
        if b.num_free(&none) == 0 {
            // Block full: release the handle whose address is next in line.
            b.release_by_handle(&handles[(i + 1) % 64], None);
        }
        let got = b.auto_assign(1, Some(h), None, &me, true, &none).unwrap();
        assert_eq!(got.len(), 1);
    }
    report(
        "core: block auto_assign(1) with release-by-handle churn",
        n,
        start.elapsed(),
    );

    let start = Instant::now();
    let n = 200_000;
    for _ in 0..n {
        let json = b.to_json();
        let back = AllocationBlock::from_json(&json).unwrap();
        assert_eq!(back.cidr, b.cidr);
    }
    report(
        "core: block JSON encode+decode (/26, full)",
        n,
        start.elapsed(),
    );

    // Choosing a new block in a /16 pool where 900 of 1024 blocks exist.
    let pool = PoolConfig::new("p", "10.0.0.0/16".parse().unwrap());
    let existing: Vec<ExistingBlock> = pool
        .blocks()
        .take(900)
        .map(|c| ExistingBlock {
            cidr: c,
            affinity: Some("host:other".into()),
            num_free: 0,
            empty: false,
            claim_time: None,
            sequence_number: 0,
        })
        .collect();
    let idx = BlockIndex::new(existing);
    let n = 20_000;
    let start = Instant::now();
    for i in 0..n {
        let host = Affinity::host(format!("node-{i}"));
        let s = find_usable_block(
            std::slice::from_ref(&pool),
            &idx,
            &host,
            &none,
            OffsetDateTime::UNIX_EPOCH,
            0,
        );
        assert!(s.choice.is_some());
    }
    report(
        "core: find_usable_block (/16 pool, 900/1024 blocks taken)",
        n,
        start.elapsed(),
    );
}

async fn bench_client(label: &str, kv: Arc<dyn KvStore>) {
    // Raw store latency, for reading the figures below: one allocation costs about six reads
    // (config, reservations, affinities, affinity, block, handle) and one transaction.
    let n = 300;
    let start = Instant::now();
    for _ in 0..n {
        kv.get("/calico/ipam/v2/config").await.unwrap();
    }
    report(&format!("{label}: raw kv get"), n, start.elapsed());
    let start = Instant::now();
    for i in 0..n {
        kv.put(&format!("/bench/k{i}"), b"{}".to_vec(), None)
            .await
            .unwrap();
    }
    report(&format!("{label}: raw kv put"), n, start.elapsed());
    let start = Instant::now();
    for _ in 0..n {
        kv.list("/calico/ipam/v2/host/nobody/ipv4/block/")
            .await
            .unwrap();
    }
    report(
        &format!("{label}: raw kv list (empty prefix)"),
        n,
        start.elapsed(),
    );
    let start = Instant::now();
    for i in 0..n {
        let ops = vec![
            calico_datastore::TxnOp::Put {
                key: format!("/bench/t{i}a"),
                value: b"{}".to_vec(),
                lease: None,
            },
            calico_datastore::TxnOp::Put {
                key: format!("/bench/t{i}b"),
                value: b"{}".to_vec(),
                lease: None,
            },
        ];
        kv.txn(ops).await.unwrap();
    }
    report(&format!("{label}: raw kv txn (2 puts)"), n, start.elapsed());
    let c =
        IpamClient::new(kv).with_pools(vec![PoolConfig::new("p", "10.0.0.0/16".parse().unwrap())]);
    let args = |host: &str, h: String| AutoAssignArgs {
        num4: 1,
        handle_id: Some(h),
        hostname: host.to_string(),
        ..Default::default()
    };
    // Sequential, one host.
    let n = 300;
    let start = Instant::now();
    for i in 0..n {
        let r = c
            .auto_assign(args("seq-host", format!("seq-{i}")))
            .await
            .unwrap();
        assert_eq!(r.v4.ips.len(), 1);
    }
    report(
        &format!("{label}: auto_assign(1) sequential, 1 host"),
        n,
        start.elapsed(),
    );
    let start = Instant::now();
    for i in 0..n {
        c.release_by_handle(&format!("seq-{i}")).await.unwrap();
    }
    report(
        &format!("{label}: release_by_handle sequential"),
        n,
        start.elapsed(),
    );

    // 32 concurrent tasks over 8 hosts.
    for (tasks, per) in [(32usize, 20usize)] {
        let start = Instant::now();
        let mut js = Vec::new();
        for t in 0..tasks {
            let c = c.clone();
            js.push(tokio::spawn(async move {
                for i in 0..per {
                    let r = c
                        .auto_assign(AutoAssignArgs {
                            num4: 1,
                            handle_id: Some(format!("par-{t}-{i}")),
                            hostname: format!("host-{}", t % 8),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    assert_eq!(r.v4.ips.len(), 1);
                }
            }));
        }
        for j in js {
            j.await.unwrap();
        }
        report(
            &format!("{label}: auto_assign(1) {tasks} concurrent tasks, 8 hosts"),
            tasks * per,
            start.elapsed(),
        );
    }
    let live = calico_ipam::LiveWorkloads::from_handles(
        (0..32).flat_map(|t| (0..20).map(move |i| format!("par-{t}-{i}"))),
    );
    let r = c.check(&live).await.unwrap();
    assert_eq!(r.problem_count(), 0, "{}", r.to_json_pretty());
}

/// A real etcd, SIGKILLed on drop.
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
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_etcd() -> Option<(Etcd, EtcdStore)> {
    if !Path::new(ETCD_BIN).exists() {
        println!(
            "\n*** SKIP: {ETCD_BIN} not found (install etcd-server); etcd benchmark not run ***\n"
        );
        return None;
    }
    let dir = tempdir("calico-ipam-bench-etcd-");
    let url = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new(ETCD_BIN)
        .arg("--name=bench")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=bench={peer}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    let etcd = Etcd {
        child,
        url: url.clone(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let opts = EtcdOptions {
            endpoints: vec![etcd.url.clone()],
            ..Default::default()
        };
        if let Ok(s) = EtcdStore::connect(opts).await {
            return Some((etcd, s));
        }
        if Instant::now() > deadline {
            println!(
                "\n*** SKIP: etcd did not become healthy in 20 s; etcd benchmark not run ***\n"
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

fn shm_dir(prefix: &str) -> Option<tempfile::TempDir> {
    let shm = PathBuf::from("/dev/shm");
    shm.is_dir().then(|| {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(shm)
            .unwrap()
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a smoke test too.
    bench_core();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let disk = tempdir("calico-ipam-bench-sqlite-");
        let kv = Arc::new(SqliteStore::open(disk.path().join("ipam.db")).unwrap());
        bench_client("sqlite (disk, fsync)", kv).await;
        if let Some(shm) = shm_dir("calico-ipam-bench-sqlite-") {
            let kv = Arc::new(SqliteStore::open(shm.path().join("ipam.db")).unwrap());
            bench_client("sqlite (/dev/shm)", kv).await;
        }
        if let Some((_etcd, store)) = start_etcd().await {
            bench_client("etcd", Arc::new(store)).await;
        }
    });
}

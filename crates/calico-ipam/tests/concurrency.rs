//! Concurrent allocation against one SQLite file: 32 tokio tasks in one process, and 32 separate
//! processes (this test binary re-executed as workers). Afterwards: no address handed out twice,
//! no block claimed twice, and `ipam check` finds nothing wrong.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};

use calico_ipam::check::LiveWorkloads;
use calico_ipam::{IpamClient, ReleaseOptions};
use common::*;

const WORKERS: usize = 32;
const PER_WORKER: usize = 4;
const CHILD_DB: &str = "CALICO_IPAM_TEST_CHILD_DB";
const CHILD_ID: &str = "CALICO_IPAM_TEST_CHILD_ID";

fn pools() -> Vec<calico_ipam::PoolConfig> {
    vec![pool("p", "10.10.0.0/22", 26)]
}

fn host_of(worker: usize) -> String {
    format!("node-{}", worker % 8)
}

/// Asserts the invariants over the final datastore state, given every address each worker got.
async fn assert_consistent(c: &IpamClient, got: &BTreeMap<String, Vec<IpAddr>>) {
    let all: Vec<IpAddr> = got.values().flatten().copied().collect();
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "an address was handed out twice");
    let snap = c.snapshot().await.unwrap();
    let mut claimed: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for a in &snap.affinities {
        claimed.entry(a.cidr).or_default().push(a.owner.to_string());
    }
    for (cidr, owners) in &claimed {
        assert_eq!(owners.len(), 1, "block {cidr} claimed by {owners:?}");
    }
    let in_use: usize = snap.blocks.iter().map(|b| b.in_use_count()).sum();
    assert_eq!(
        in_use,
        all.len(),
        "blocks hold exactly the addresses handed out"
    );
    let mut live = LiveWorkloads::default();
    for (handle, ips) in got {
        live.handles.insert(handle.clone());
        for ip in ips {
            live.add_ip(*ip, handle);
        }
    }
    let report = calico_ipam::check::check(&snap, &live);
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_tasks() {
    let dir = tempdir();
    let c = client(sqlite(dir.path()), pools());
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let handle = format!("task-{w}");
            let r = c
                .auto_assign(v4(&host_of(w), &handle, PER_WORKER))
                .await
                .unwrap();
            (
                handle,
                r.v4.ips.iter().map(|a| a.addr()).collect::<Vec<_>>(),
            )
        }));
    }
    let mut got = BTreeMap::new();
    for t in tasks {
        let (h, ips) = t.await.unwrap();
        assert_eq!(ips.len(), PER_WORKER);
        got.insert(h, ips);
    }
    assert_consistent(&c, &got).await;

    // Concurrent releases and re-allocations keep the invariants too.
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let c = c.clone();
        let old = got[&format!("task-{w}")].clone();
        tasks.push(tokio::spawn(async move {
            if w % 2 == 0 {
                c.release_by_handle(&format!("task-{w}")).await.unwrap();
                let handle = format!("task-{w}-b");
                let r = c.auto_assign(v4(&host_of(w), &handle, 2)).await.unwrap();
                (
                    format!("task-{w}"),
                    handle,
                    r.v4.ips.iter().map(|a| a.addr()).collect(),
                )
            } else {
                let r = c
                    .release_ips(vec![ReleaseOptions::ip(old[0])])
                    .await
                    .unwrap();
                assert_eq!(r.released, vec![old[0]]);
                (format!("task-{w}"), format!("task-{w}"), old[1..].to_vec())
            }
        }));
    }
    let mut got = BTreeMap::new();
    for t in tasks {
        let (_old, handle, ips) = t.await.unwrap();
        got.insert(handle, ips);
    }
    assert_consistent(&c, &got).await;
}

/// Worker body when re-executed as a child; a no-op in a normal test run.
#[tokio::test]
async fn child_worker() {
    let (Ok(db), Ok(id)) = (std::env::var(CHILD_DB), std::env::var(CHILD_ID)) else {
        return;
    };
    let w: usize = id.parse().unwrap();
    let kv: std::sync::Arc<dyn calico_datastore::KvStore> =
        std::sync::Arc::new(calico_datastore::sqlite::SqliteStore::open(&db).unwrap());
    let c = client(kv, pools());
    let handle = format!("proc-{w}");
    let r = c
        .auto_assign(v4(&host_of(w), &handle, PER_WORKER))
        .await
        .unwrap();
    for a in &r.v4.ips {
        println!("ALLOCATED {handle} {}", a.addr());
    }
    for m in &r.v4.msgs {
        println!("MSG {handle} {m}");
    }
}

#[tokio::test]
async fn thirty_two_concurrent_processes() {
    let dir = tempdir();
    let db = dir.path().join("ipam.db");
    // Create the schema once up front so the workers only race on IPAM.
    drop(calico_datastore::sqlite::SqliteStore::open(&db).unwrap());
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|w| {
            Command::new(&exe)
                .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
                .env(CHILD_DB, &db)
                .env(CHILD_ID, w.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut got: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut msgs = String::new();
    for (w, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "worker {w} failed: {}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines() {
            if line.contains("MSG ") {
                msgs.push_str(line);
                msgs.push('\n');
            }
            // The harness may print "test child_worker ... " on the same line first.
            if let Some(rest) = line.split_once("ALLOCATED ").map(|(_, r)| r) {
                let (h, ip) = rest.split_once(' ').unwrap();
                got.entry(h.to_string())
                    .or_default()
                    .push(ip.parse().unwrap());
            }
        }
    }
    assert_eq!(got.len(), WORKERS, "every worker reported");
    assert!(
        got.values().all(|v| v.len() == PER_WORKER),
        "short allocations: {got:?}\n{msgs}"
    );
    let c = client(sqlite(dir.path()), pools());
    assert_consistent(&c, &got).await;
}

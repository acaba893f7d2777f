//! Shared helpers: a real SQLite store in a temp dir (on /dev/shm when available).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use calico_datastore::KvStore;
use calico_datastore::sqlite::SqliteStore;
use calico_ipam::{AutoAssignArgs, IpamClient, PoolConfig};
use ipnet::IpNet;

pub fn tempdir() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("calico-ipam-test-");
    if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").expect("tempdir")
    } else {
        b.tempdir().expect("tempdir")
    }
}

pub fn sqlite(dir: &Path) -> Arc<dyn KvStore> {
    Arc::new(SqliteStore::open(dir.join("ipam.db")).expect("open sqlite store"))
}

pub fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

pub fn pool(name: &str, cidr: &str, block_size: u8) -> PoolConfig {
    PoolConfig::new(name, net(cidr)).with_block_size(block_size)
}

pub fn client(kv: Arc<dyn KvStore>, pools: Vec<PoolConfig>) -> IpamClient {
    IpamClient::new(kv).with_pools(pools)
}

pub fn v4(host: &str, handle: &str, n: usize) -> AutoAssignArgs {
    let attrs: BTreeMap<String, String> = [
        ("node".to_string(), host.to_string()),
        ("pod".to_string(), handle.to_string()),
        ("namespace".to_string(), "default".to_string()),
    ]
    .into_iter()
    .collect();
    AutoAssignArgs {
        num4: n,
        handle_id: Some(handle.to_string()),
        attrs,
        hostname: host.to_string(),
        ..Default::default()
    }
}

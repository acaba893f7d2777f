//! Rough latency numbers for the embedded store: sequential puts, CAS updates, a 10-op txn,
//! and put-to-watch delivery in one process.
//!
//! ```sh
//! cargo run --release -p calico-datastore --example kv_bench -- [/tmp/bench.db] [ops]
//! ```

use std::time::{Duration, Instant};

use calico_datastore::sqlite::SqliteStore;
use calico_datastore::{KvStore, TxnOp};
use futures::StreamExt;

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let pct = |q: f64| ms[((ms.len() - 1) as f64 * q) as usize];
    println!(
        "{what:<22} n={:<6} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        ms.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = tempfile::tempdir()?;
    let path = args
        .next()
        .map_or_else(|| dir.path().join("bench.db"), Into::into);
    let n: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let store = SqliteStore::open(&path)?;
    println!("store {}", path.display());

    let mut put = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        store
            .put(&format!("/bench/put/{i}"), vec![b'x'; 512], None)
            .await?;
        put.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("put (512 B)", put);

    let mut rev = store.create("/bench/cas", b"0".to_vec(), None).await?;
    let mut cas = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        rev = store
            .update("/bench/cas", i.to_string().into_bytes(), rev, None)
            .await?;
        cas.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("cas update", cas);

    let mut txn = Vec::with_capacity(n / 10);
    for i in 0..n / 10 {
        let ops = (0..10)
            .map(|j| TxnOp::Put {
                key: format!("/bench/txn/{i}/{j}"),
                value: vec![b'y'; 512],
                lease: None,
            })
            .collect();
        let t = Instant::now();
        store.txn(ops).await?;
        txn.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report("txn (10 puts)", txn);

    let start = store.current_revision().await?;
    let mut watch = store.watch("/bench/watch/", start).await?;
    let mut deliver = Vec::with_capacity(n / 10);
    for i in 0..n / 10 {
        let t = Instant::now();
        store
            .put(&format!("/bench/watch/{i}"), b"z".to_vec(), None)
            .await?;
        match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
            Ok(Some(Ok(_))) => deliver.push(t.elapsed().as_secs_f64() * 1e3),
            other => return Err(format!("watch: no event: {other:?}").into()),
        }
    }
    report("put -> watch event", deliver);
    Ok(())
}

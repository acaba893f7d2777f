//! `calicoctl apply -f` of one file with 1,000 GlobalNetworkPolicies, timed on the embedded
//! store and (when /usr/bin/etcd is installed) on a throw-away etcd on loopback. Runs the real
//! binary; prints the figures. Target: <= 2 s for the 1,000-policy create on the embedded store.
//!
//! `cargo bench -p calicoctl --bench apply`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark driver, like a test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_calicoctl");
const ETCD: &str = "/usr/bin/etcd";
const COUNT: usize = 1000;

fn calicoctl(cfg: &Path, args: &[&str]) -> (Duration, String) {
    let t = Instant::now();
    let o = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    let took = t.elapsed();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "calicoctl {args:?} failed:\n{out}");
    (took, out.trim().to_string())
}

fn run_suite(label: &str, cfg: &Path, dir: &Path) {
    let first = dir.join("gen0.yaml");
    let second = dir.join("gen1.yaml");
    std::fs::write(&first, calicoctl::bench_policies(COUNT, 0)).unwrap();
    std::fs::write(&second, calicoctl::bench_policies(COUNT, 1)).unwrap();
    let f0 = first.to_str().unwrap();
    let (t_create, out) = calicoctl(cfg, &["apply", "-f", f0]);
    assert!(
        out.contains(&format!(
            "Successfully applied {COUNT} 'GlobalNetworkPolicy'"
        )),
        "{out}"
    );
    let (t_noop, _) = calicoctl(cfg, &["apply", "-f", f0]);
    let (t_update, _) = calicoctl(cfg, &["apply", "-f", second.to_str().unwrap()]);
    let (t_get, _) = calicoctl(cfg, &["get", "gnp", "-o", "yaml"]);
    let (t_delete, _) = calicoctl(cfg, &["delete", "-f", f0]);
    println!(
        "{label:9} apply {COUNT} new: {:>7.3} s | re-apply unchanged: {:>7.3} s | apply {COUNT} updates: {:>7.3} s | get -o yaml: {:>7.3} s | delete {COUNT}: {:>7.3} s",
        t_create.as_secs_f64(),
        t_noop.as_secs_f64(),
        t_update.as_secs_f64(),
        t_get.as_secs_f64(),
        t_delete.as_secs_f64()
    );
    if label == "embedded" && t_create > Duration::from_secs(2) {
        println!("WARNING: embedded apply of {COUNT} took more than the 2 s target");
    }
}

struct EtcdGuard(Child);

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_cfg(path: &Path, spec: &str) -> PathBuf {
    std::fs::write(
        path,
        format!("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nspec:\n{spec}"),
    )
    .unwrap();
    path.to_path_buf()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that quick.
    if std::env::args().all(|a| a != "--bench") {
        println!("apply bench: skipped outside `cargo bench`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emb = write_cfg(
        &dir.path().join("embedded.cfg"),
        &format!(
            "  datastoreType: embedded\n  embeddedPath: {}\n",
            dir.path().join("calico.db").display()
        ),
    );
    run_suite("embedded", &emb, dir.path());

    if !Path::new(ETCD).exists() {
        println!("\n*** SKIP etcd part: {ETCD} is not installed ***\n");
        return;
    }
    let client = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let data = dir.path().join("etcd-data");
    let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
    let child = Command::new(ETCD)
        .arg("--name=bench")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=bench={peer}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn etcd");
    let _guard = EtcdGuard(child);
    let cfg = write_cfg(
        &dir.path().join("etcd.cfg"),
        &format!("  datastoreType: etcdv3\n  etcdEndpoints: {client}\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Command::new(BIN)
            .args(["get", "tiers", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become ready in 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run_suite("etcdv3", &cfg, dir.path());
}

//! `calicoctl ipam` end to end: the real binary against a temporary embedded datastore, with
//! allocations made by `calico_ipam::IpamClient` and pools, nodes and workload endpoints written
//! by `calico_datastore::client::Client`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (clippy.toml)

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use calico_datastore::KvStore;
use calico_datastore::client::Client;
use calico_datastore::sqlite::SqliteStore;
use calico_ipam::{AllowedUse, AutoAssignArgs, IpamClient};
use calico_model::AnyResource;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_calicoctl");

struct Env {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    db: PathBuf,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("calicoctl.cfg");
        let db = dir.path().join("calico.db");
        std::fs::write(
            &cfg,
            format!(
                "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {{}}\nspec:\n  datastoreType: embedded\n  embeddedPath: {}\n",
                db.display()
            ),
        )
        .unwrap();
        Env { dir, cfg, db }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Out {
        let o = Command::new(BIN)
            .args(args)
            .arg("-c")
            .arg(&self.cfg)
            .env_remove("DATASTORE_TYPE")
            .env_remove("ETCD_ENDPOINTS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 0,
            "calicoctl {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            o.stdout, o.stderr
        );
        o.stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_ne!(o.code, 0, "calicoctl {args:?} succeeded:\n{}", o.stdout);
        o.stderr
    }

    /// Runs `f` with a client and an IPAM client on the store (closed again afterwards, so the
    /// binary can open it).
    fn with_store<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Client, IpamClient) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(&self.db).unwrap());
            let ipam = IpamClient::new(kv.clone());
            f(Client::new(kv), ipam).await
        })
    }
}

fn resource(v: Value) -> AnyResource {
    AnyResource::from_value(v).unwrap()
}

fn check_problems(stdout: &str) -> usize {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Check complete; found "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    line.trim_start_matches("Check complete; found ")
        .trim_end_matches(" problems.")
        .parse()
        .unwrap()
}

async fn allocate(
    ipam: &IpamClient,
    node: &str,
    handle: &str,
    attrs: &[(&str, &str)],
    tunnel: bool,
) -> IpAddr {
    ipam.load_pools_from_store().await.unwrap();
    let r = ipam
        .auto_assign(AutoAssignArgs {
            num4: 1,
            handle_id: Some(handle.to_string()),
            hostname: node.to_string(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            intended_use: if tunnel {
                AllowedUse::Tunnel
            } else {
                AllowedUse::Workload
            },
            ..Default::default()
        })
        .await
        .unwrap();
    r.v4.ips[0].addr()
}

async fn create_wep(client: &Client, node: &str, pod: &str, cid: &str, ip: IpAddr) {
    client
        .create(resource(json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": format!("{node}-k8s-{pod}-eth0"), "namespace": "default"},
            "spec": {
                "orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
                "containerID": cid, "interfaceName": format!("cali{}", &cid[..11]),
                "ipNetworks": [format!("{ip}/32")],
            }
        })))
        .await
        .unwrap();
}

/// A pool, node-1 with a VXLAN tunnel address, and two pods with endpoints: all consistent.
/// Returns the pod addresses.
fn healthy_cluster(env: &Env) -> (IpAddr, IpAddr, IpAddr) {
    env.with_store(|client, ipam| async move {
        client
            .create(resource(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                "metadata": {"name": "default-ipv4-ippool"},
                "spec": {"cidr": "10.65.0.0/16", "blockSize": 26, "vxlanMode": "Always",
                         "natOutgoing": true, "nodeSelector": "all()"}
            })))
            .await
            .unwrap();
        let tunnel = allocate(
            &ipam,
            "node-1",
            "vxlan-tunnel-addr-node-1",
            &[("node", "node-1"), ("type", "vxlanTunnelAddress")],
            true,
        )
        .await;
        client
            .create(resource(json!({
                "apiVersion": "projectcalico.org/v3", "kind": "Node",
                "metadata": {"name": "node-1"},
                "spec": {"ipv4VXLANTunnelAddr": tunnel.to_string()}
            })))
            .await
            .unwrap();
        let mut pods = Vec::new();
        for (pod, cid) in [("web", "a1b2c3d4e5f60001"), ("db", "a1b2c3d4e5f60002")] {
            let ip = allocate(
                &ipam,
                "node-1",
                &format!("k8s-pod-network.{cid}"),
                &[("node", "node-1"), ("pod", pod), ("namespace", "default")],
                false,
            )
            .await;
            create_wep(&client, "node-1", pod, cid, ip).await;
            pods.push(ip);
        }
        (tunnel, pods[0], pods[1])
    })
}

#[test]
fn healthy_cluster_checks_clean_and_shows_usage() {
    let env = Env::new();
    let (tunnel, web, _db) = healthy_cluster(&env);

    let out = env.ok(&["ipam", "check"]);
    assert!(
        out.starts_with("Checking IPAM for inconsistencies...\n"),
        "{out}"
    );
    assert!(out.contains("Found 1 node tunnel IPs."), "{out}");
    assert!(out.contains("Found 2 workload IPs."), "{out}");
    assert!(
        out.contains("Workloads and nodes are using 3 IPs."),
        "{out}"
    );
    assert!(
        out.contains("Found 0 IPs that are allocated in IPAM but not actually in use."),
        "{out}"
    );
    assert_eq!(check_problems(&out), 0, "{out}");

    let show = env.ok(&["ipam", "show"]);
    let lines: Vec<&str> = show.lines().collect();
    assert_eq!(
        lines[1], "| GROUPING |     CIDR     | IPS TOTAL | IPS IN USE |   IPS FREE   |",
        "{show}"
    );
    assert_eq!(
        lines[3], "| IP Pool  | 10.65.0.0/16 |     65536 | 3 (0%)     | 65533 (100%) |",
        "{show}"
    );
    assert_eq!(lines.len(), 5, "{show}");

    let blocks = env.ok(&["ipam", "show", "--show-blocks"]);
    let block_row = blocks
        .lines()
        .find(|l| l.starts_with("| Block"))
        .unwrap_or_else(|| panic!("{blocks}"));
    let block: ipnet::IpNet = block_row.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(block.contains(&web) && block.contains(&tunnel), "{blocks}");
    assert!(
        block_row.contains("| 3 (5%)") && block_row.contains("| 61 (95%)"),
        "{blocks}"
    );

    let one = env.ok(&["ipam", "show", "--ip", &web.to_string()]);
    assert!(one.starts_with(&format!("IP {web} is in use\n")), "{one}");
    assert!(
        one.contains("  pod: web\n") && one.contains("  node: node-1\n"),
        "{one}"
    );
    let free = env.ok(&["ipam", "show", "--ip", "10.65.200.1"]);
    assert_eq!(free, "IP 10.65.200.1 is not assigned\n");

    let borrowed = env.ok(&["ipam", "show", "--show-borrowed"]);
    assert!(borrowed.contains("BORROWING-NODE") && borrowed.contains("ALLOCATED-TO"));
    assert_eq!(borrowed.lines().count(), 4, "no rows expected:\n{borrowed}");
}

#[test]
fn leaks_are_reported_and_released_from_report() {
    let env = Env::new();
    let (_, _, _) = healthy_cluster(&env);
    // A pod allocation whose endpoint is gone, made on node-1's block for node-2 (borrowed), and
    // a tunnel address of a node that no longer exists.
    let (leak, ghost_tunnel) = env.with_store(|_client, ipam| async move {
        let leak = allocate(
            &ipam,
            "node-1",
            "k8s-pod-network.deadbeef00000001",
            &[
                ("node", "node-2"),
                ("pod", "ghost"),
                ("namespace", "default"),
            ],
            false,
        )
        .await;
        let t = allocate(
            &ipam,
            "node-9",
            "ipip-tunnel-addr-node-9",
            &[("node", "node-9"), ("type", "ipipTunnelAddress")],
            true,
        )
        .await;
        (leak, t)
    });

    let report = env.path("report.json");
    let out = env.ok(&[
        "ipam",
        "check",
        "--show-problem-ips",
        "-o",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.contains("Found 2 IPs that are allocated in IPAM but not actually in use."),
        "{out}"
    );
    assert!(out.contains(&format!(
        "  {leak} leaked; handle k8s-pod-network.deadbeef00000001"
    )));
    assert!(out.contains(&format!(
        "  {ghost_tunnel} leaked; handle ipip-tunnel-addr-node-9"
    )));
    // 2 leaked IPs + their 2 orphaned handles.
    assert_eq!(check_problems(&out), 4, "{out}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let leaked: Vec<&str> = json["leakedIps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ip"].as_str().unwrap())
        .collect();
    let mut want = vec![leak.to_string(), ghost_tunnel.to_string()];
    want.sort();
    let mut got: Vec<String> = leaked.iter().map(|s| s.to_string()).collect();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(json["summary"]["problems"], 4);
    assert_eq!(
        json["orphanedHandles"],
        json!([
            "ipip-tunnel-addr-node-9",
            "k8s-pod-network.deadbeef00000001"
        ])
    );

    let borrowed = env.ok(&["ipam", "show", "--show-borrowed"]);
    let row = borrowed
        .lines()
        .find(|l| l.starts_with(&format!("| {leak} ")))
        .unwrap_or_else(|| panic!("{borrowed}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[2], "node-2");
    assert_eq!(cells[4], "node-1");
    assert_eq!(cells[5], "pod");
    assert_eq!(cells[6], "default/ghost");

    // A second report taken later agrees; releasing from both fixes everything.
    let report2 = env.path("report2.json");
    env.ok(&["ipam", "check", "-o", report2.to_str().unwrap()]);
    let rel = env.ok(&[
        "ipam",
        "release",
        "--from-report",
        report.to_str().unwrap(),
        "--from-report",
        report2.to_str().unwrap(),
    ]);
    assert!(rel.contains(&format!("Released leaked IP {leak}")), "{rel}");
    assert!(rel.contains("Released 2 IPs"), "{rel}");
    let after = env.ok(&["ipam", "check"]);
    assert_eq!(check_problems(&after), 0, "{after}");
    assert_eq!(
        env.ok(&["ipam", "show", "--ip", &leak.to_string()]),
        format!("IP {leak} is not assigned\n")
    );
}

#[test]
fn stale_report_does_not_release_a_reallocated_address() {
    let env = Env::new();
    healthy_cluster(&env);
    let leak = env.with_store(|_c, ipam| async move {
        allocate(
            &ipam,
            "node-1",
            "k8s-pod-network.0ld",
            &[("node", "node-1")],
            false,
        )
        .await
    });
    let report = env.path("old.json");
    env.ok(&["ipam", "check", "-o", report.to_str().unwrap()]);
    // The address is freed and handed to a live pod before the report is applied.
    env.ok(&["ipam", "release", "--ip", &leak.to_string()]);
    env.with_store(|client, ipam| async move {
        ipam.load_pools_from_store().await.unwrap();
        ipam.assign_ip(calico_ipam::AssignIpArgs {
            ip: Some(leak),
            handle_id: Some("k8s-pod-network.c0ffee0000000001".into()),
            hostname: "node-1".into(),
            attrs: [("node".to_string(), "node-1".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
        create_wep(&client, "node-1", "new", "c0ffee0000000001", leak).await;
    });
    let rel = env.ok(&["ipam", "release", "--from-report", report.to_str().unwrap()]);
    assert!(rel.contains("Released 0 IPs"), "{rel}");
    assert!(
        rel.contains(&format!(
            "Skipped {leak}: re-allocated since the report was taken"
        )),
        "{rel}"
    );
    let one = env.ok(&["ipam", "show", "--ip", &leak.to_string()]);
    assert!(one.starts_with(&format!("IP {leak} is in use")), "{one}");
    assert_eq!(check_problems(&env.ok(&["ipam", "check"])), 0);
}

#[test]
fn release_ip_frees_the_address_and_check_sees_the_workload_without_allocation() {
    let env = Env::new();
    let (_, web, _) = healthy_cluster(&env);
    let out = env.ok(&["ipam", "release", "--ip", &web.to_string()]);
    assert_eq!(out, format!("Successfully released IP address {web}\n"));
    let check = env.ok(&["ipam", "check", "--show-problem-ips"]);
    assert!(
        check.contains(
            "Found 1 in-use IPs that are in active IP pools but have no corresponding IPAM allocation."
        ),
        "{check}"
    );
    assert_eq!(check_problems(&check), 1, "{check}");
    let err = env.fails(&["ipam", "release", "--ip", &web.to_string()]);
    assert!(
        err.contains(&format!("IP address {web} is not assigned")),
        "{err}"
    );
}

#[test]
fn configure_round_trips() {
    let env = Env::new();
    let show = env.ok(&["ipam", "show", "--show-configuration"]);
    assert!(show.contains("| StrictAffinity     | false |"), "{show}");
    assert!(show.contains("| AutoAllocateBlocks | true  |"), "{show}");
    assert!(show.contains("| MaxBlocksPerHost   |     0 |"), "{show}");

    let out = env.ok(&[
        "ipam",
        "configure",
        "--strictaffinity=true",
        "--max-blocks-per-host=5",
    ]);
    assert!(
        out.contains("Successfully set StrictAffinity to: true"),
        "{out}"
    );
    let show = env.ok(&["ipam", "show", "--show-configuration"]);
    assert!(show.contains("| StrictAffinity     | true  |"), "{show}");
    assert!(show.contains("| MaxBlocksPerHost   |     5 |"), "{show}");
    let cfg = env.with_store(|_c, ipam| async move { ipam.get_config().await.unwrap() });
    assert!(cfg.strict_affinity);
    assert_eq!(cfg.max_blocks_per_host, 5);

    env.ok(&[
        "ipam",
        "configure",
        "--strictaffinity=false",
        "--max-blocks-per-host=0",
    ]);
    let show = env.ok(&["ipam", "show", "--show-configuration"]);
    assert!(show.contains("| StrictAffinity     | false |"), "{show}");
}

#[test]
fn bad_input_is_named_and_fails() {
    let env = Env::new();
    let err = env.fails(&["ipam", "show", "--ip", "10.0.0.300"]);
    assert!(err.contains("invalid IP address \"10.0.0.300\""), "{err}");
    let err = env.fails(&["ipam", "release", "--ip", "nope"]);
    assert!(err.contains("invalid IP address \"nope\""), "{err}");
    let err = env.fails(&["ipam", "configure", "--strictaffinity=maybe"]);
    assert!(
        err.contains("--strictaffinity must be true or false"),
        "{err}"
    );
    let err = env.fails(&["ipam", "configure", "--max-blocks-per-host=-3"]);
    assert!(err.contains("--max-blocks-per-host"), "{err}");
    let err = env.fails(&["ipam", "configure"]);
    assert!(err.contains("nothing to set"), "{err}");

    let missing = env.path("missing.json");
    let err = env.fails(&[
        "ipam",
        "release",
        "--from-report",
        missing.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!("read report {}", missing.display())),
        "{err}"
    );
    let garbage = env.path("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let err = env.fails(&[
        "ipam",
        "release",
        "--from-report",
        garbage.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!(
            "report {}: not an ipam check report",
            garbage.display()
        )),
        "{err}"
    );
    let err = env.fails(&["ipam", "release"]);
    assert!(
        err.contains("--ip") || err.contains("--from-report"),
        "{err}"
    );
}

#[test]
fn show_all_ips_lists_users_and_an_address_outside_every_pool_is_a_problem() {
    let env = Env::new();
    let (tunnel, web, _) = healthy_cluster(&env);
    env.with_store(|client, _ipam| async move {
        // An endpoint with an address no pool covers (e.g. ipAddrsNoIpam).
        create_wep(
            &client,
            "node-1",
            "static",
            "5a5a5a5a5a5a0001",
            "192.0.2.7".parse().unwrap(),
        )
        .await;
    });
    let out = env.ok(&["ipam", "check", "--show-all-ips"]);
    assert!(
        out.contains(&format!(
            "  {web} used by k8s-pod-network.a1b2c3d4e5f60001\n"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("  {tunnel} used by vxlan-tunnel-addr-node-1\n")),
        "{out}"
    );
    assert!(
        out.contains("Found 1 in-use IPs that are not in active IP pools."),
        "{out}"
    );
    assert_eq!(check_problems(&out), 1, "{out}");
}

#[test]
fn empty_handles_and_shared_addresses_are_problems_and_empty_handles_are_released() {
    let env = Env::new();
    let (_, web, _) = healthy_cluster(&env);
    env.with_store(|client, _ipam| async move {
        // A handle object left behind with no addresses (upstream's "handle without IPs").
        client
            .kv()
            .create(
                &calico_ipam::keys::handle_key("k8s-pod-network.e0e0e0e0e0e00001"),
                calico_ipam::IpamHandle::default().to_json(),
                None,
            )
            .await
            .unwrap();
        // A second endpoint claiming web's address.
        create_wep(&client, "node-1", "copy", "c0c0c0c0c0c00001", web).await;
    });
    let report = env.path("r.json");
    let out = env.ok(&[
        "ipam",
        "check",
        "--show-problem-ips",
        "-o",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.contains("Found 1 handles with no matching IPs."),
        "{out}"
    );
    assert!(out.contains("Found 1 IPs with multiple owners."), "{out}");
    assert!(out.contains(&format!("  {web} owned by block:")), "{out}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        json["handlesWithoutIps"],
        json!(["k8s-pod-network.e0e0e0e0e0e00001"])
    );
    assert_eq!(json["multipleOwners"][0]["ip"], web.to_string());
    assert_eq!(json["summary"]["problems"], check_problems(&out));

    let rel = env.ok(&["ipam", "release", "--from-report", report.to_str().unwrap()]);
    assert!(
        rel.contains("Deleted handle k8s-pod-network.e0e0e0e0e0e00001 with no IPs"),
        "{rel}"
    );
    // The shared address is a workload conflict, not a leak: it stays allocated.
    let one = env.ok(&["ipam", "show", "--ip", &web.to_string()]);
    assert!(one.starts_with(&format!("IP {web} is in use")), "{one}");
    let after = env.ok(&["ipam", "check"]);
    assert!(
        after.contains("Found 0 handles with no matching IPs."),
        "{after}"
    );
}

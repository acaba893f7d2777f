//! A real container runtime driving our plugins: Debian's podman with its CNI backend, runc,
//! vfs storage and every piece of configuration and state in a scratch directory (see
//! linux-lab-recipes §6). podman itself runs under `nsenter --net=` in a lab "node" namespace
//! (`ip netns exec` would remount /sys and break runc's cgroup lookup), so the `calico` plugin
//! programs the host side there and the root namespace is never touched. The image is built
//! locally from Debian's static busybox (`podman import` of a tarball; there is no registry).
//!
//! Two containers on a `calico` + `calico-ipam` network: each gets an address from the pool
//! (seen by `podman inspect` and inside the container), the first pings the second, and
//! `podman rm -f` releases everything (handle, WorkloadEndpoint, host veth).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use calico_linux::testlab::{binary_in_path, lab_available};
use common::*;

const IMAGE: &str = "localhost/calico-rs-busybox:test";
const BUSYBOX: &str = "/bin/busybox";
const POOL: &str = "10.84.0.0/24";

/// podman with its configuration and state under a scratch dir, run in the node namespace.
/// On drop every container is removed (before the node namespace goes, which would kill conmon
/// and orphan the containers) and the empty cgroups podman made are removed.
struct Podman {
    dir: tempfile::TempDir,
    node_ns: String,
}

impl Podman {
    fn new(node_ns: &str, datastore: &str) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("calico-podman-")
            .tempdir()
            .unwrap();
        let p = dir.path().display().to_string();
        let plugin_dir = Path::new(CALICO).parent().unwrap().display().to_string();
        for d in ["cni-conf", "tmp", "volumes", "run", "storage"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                r#"[network]
network_backend = "cni"
network_config_dir = "{p}/cni-conf"
cni_plugin_dirs = ["{plugin_dir}", "/usr/lib/cni"]
default_network = "{NETWORK}"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "{p}/tmp"
volume_path = "{p}/volumes"
static_dir = "{p}/storage/libpod"
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{p}/run\"\ngraphroot = \"{p}/storage\"\n"
            ),
        )
        .unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [{
                "type": "calico",
                "nodename": NODE,
                "datastore_type": "embedded",
                "datastore_path": datastore,
                "mtu": 1400,
                "log_level": "info",
                "log_file_path": format!("{p}/cni.log"),
                "ipam": {"type": "calico-ipam"},
            }],
        });
        std::fs::write(
            dir.path().join(format!("cni-conf/{NETWORK}.conflist")),
            serde_json::to_string_pretty(&conflist).unwrap(),
        )
        .unwrap();
        Podman {
            dir,
            node_ns: node_ns.to_string(),
        }
    }

    /// `podman <args>` in the node namespace, bounded by a generous timeout.
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("300")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node_ns))
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.dir.path().join("storage.conf"),
            )
            .output()
            .unwrap()
    }

    /// `podman <args>`, which must succeed; returns trimmed stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "podman {}: {}\nstdout: {}\nstderr: {}\nplugin log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.plugin_log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn plugin_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cni.log")).unwrap_or_default()
    }

    /// A busybox image from the static binary: a tarball with /bin/busybox and its applets.
    fn import_busybox(&self) {
        let root = self.dir.path().join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "ip", "ping", "sleep", "cat", "ls", "nc", "true"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tar: PathBuf = self.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar rootfs");
        self.ok(&["import", &tar.display().to_string(), IMAGE]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "--all", "--force", "--time", "0"]);
        // Empty cgroups left by cgroup_manager = "cgroupfs" (rmdir only removes empty ones).
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                remove_empty_dirs(&c.path().join("libpod_parent"));
            }
        }
    }
}

fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

fn missing_tools() -> Option<String> {
    for tool in ["podman", "runc", "nsenter", "tar", "timeout"] {
        if !binary_in_path(tool) && !Path::new("/usr/sbin").join(tool).is_file() {
            return Some(format!(
                "`{tool}` not installed (Debian: podman runc util-linux)"
            ));
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!("{BUSYBOX} missing (Debian: busybox-static)"));
    }
    None
}

#[test]
fn podman_containers_on_a_calico_network() {
    if !lab_available("podman_containers_on_a_calico_network") {
        return;
    }
    if let Some(why) = missing_tools() {
        eprintln!("\n*** SKIP podman_containers_on_a_calico_network: {why} ***\n");
        return;
    }
    let lab = Lab::new(POOL, 26);
    let podman = Podman::new(lab.node.name(), &lab.db_path());
    let info = podman.cmd(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    if !info.status.success() {
        eprintln!(
            "\n*** SKIP podman_containers_on_a_calico_network: `podman info` fails here: {} ***\n",
            String::from_utf8_lossy(&info.stderr).trim()
        );
        return;
    }
    assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), "cni");
    podman.import_busybox();

    let mut ids = Vec::new();
    let mut ips = Vec::new();
    for name in ["calico-c1", "calico-c2"] {
        let id = podman.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            "--cap-add",
            "NET_RAW",
            IMAGE,
            "/bin/sleep",
            "600",
        ]);
        let ip = podman.ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}}",
            name,
        ]);
        // Upstream hands out /32s; podman reports the plain address.
        let prefix = POOL.trim_end_matches("0/24");
        assert!(
            ip.starts_with(prefix),
            "{name}: address {ip:?} not from {POOL}"
        );
        let inside = podman.ok(&["exec", name, "ip", "-o", "addr", "show", "dev", "eth0"]);
        assert!(inside.contains(&format!("{ip}/32")), "{name}: {inside}");
        let routes = podman.ok(&["exec", name, "ip", "route"]);
        assert!(
            routes.contains("default via 169.254.1.1"),
            "{name}: {routes}"
        );
        ids.push(id);
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);

    // Calico's view: one endpoint and one handle per container, host veth `cali` + ID prefix.
    let weps = lab.weps();
    let mut wep_ids: Vec<&str> = weps.iter().map(|w| w.spec.container_id.as_str()).collect();
    wep_ids.sort();
    let mut want = ids.iter().map(String::as_str).collect::<Vec<_>>();
    want.sort();
    assert_eq!(wep_ids, want, "endpoints vs podman's container IDs");
    for (id, ip) in ids.iter().zip(&ips) {
        assert!(lab.handles().contains(&handle_of(id)), "no handle for {id}");
        let veth = format!("cali{}", &id[..11]);
        assert!(
            lab.host_veths().contains(&veth),
            "{veth}: {:?}",
            lab.host_veths()
        );
        let wep = weps.iter().find(|w| &w.spec.container_id == id).unwrap();
        assert_eq!(wep.spec.ip_networks, vec![format!("{ip}/32")]);
        assert_eq!(wep.spec.interface_name, veth);
    }
    let report = lab.rt.block_on(lab.ipam().check(&lab.live())).unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());

    // Container to container through the node namespace.
    let ping = podman.cmd(&["exec", "calico-c1", "ping", "-c", "3", "-W", "5", &ips[1]]);
    assert!(
        ping.status.success(),
        "ping calico-c1 -> {}: {}{}",
        ips[1],
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );

    // `podman rm -f` runs DEL: the first container's address, endpoint and veth go, the
    // second's stay.
    podman.ok(&["rm", "--force", "--time", "1", "calico-c1"]);
    assert_eq!(
        lab.handles().into_iter().collect::<Vec<_>>(),
        vec![handle_of(&ids[1])]
    );
    assert_eq!(lab.weps().len(), 1);
    assert_eq!(
        lab.host_veths().into_iter().collect::<Vec<_>>(),
        vec![format!("cali{}", &ids[1][..11])]
    );
    podman.ok(&["rm", "--force", "--time", "1", "calico-c2"]);
    assert!(
        lab.handles().is_empty(),
        "handles left: {:?}",
        lab.handles()
    );
    assert!(lab.weps().is_empty(), "endpoints left");
    assert!(
        lab.host_veths().is_empty(),
        "veths left: {:?}",
        lab.host_veths()
    );
    let report = lab.rt.block_on(lab.ipam().check(&lab.live())).unwrap();
    assert_eq!(report.problem_count(), 0, "{}", report.to_json_pretty());
    let log = podman.plugin_log();
    assert!(
        log.matches("workload networked").count() == 2,
        "plugin log: {log}"
    );
    drop(podman);
    drop(lab);
}

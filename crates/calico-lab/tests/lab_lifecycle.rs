//! A lab comes up, carries pods made by the real CNI plugin, and leaves nothing behind:
//! after `down`, after a panicking test, and after a SIGKILLed `up` followed by `sweep`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use calico_lab::lab::{Lab, LabSpec};
use calico_lab::names;

#[test]
fn up_pods_down_leaves_nothing() {
    if !common::lab_available("up_pods_down_leaves_nothing") {
        return;
    }
    common::build_binaries();
    let name = names::ephemeral_lab_name();
    let mut lab = Lab::up(&LabSpec::new(&name, 2)).expect("lab up");
    assert_eq!(lab.state.nodes.len(), 2);
    let a = lab.add_pod("x", "a", Some("node-1")).expect("pod x/a");
    let b = lab.add_pod("x", "b", Some("node-2")).expect("pod x/b");
    assert_ne!(a.ip, b.ip);
    assert!(a.ip.starts_with("10.244."), "{a:?}");
    // The pod's eth0 carries the address the CNI result named, with Calico's default route.
    let out = Command::new("ip")
        .args(["-n", &a.netns, "-4", "addr", "show", "eth0"])
        .output()
        .expect("ip addr");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&a.ip));
    let out = Command::new("ip")
        .args(["-n", &a.netns, "route"])
        .output()
        .expect("ip route");
    assert!(String::from_utf8_lossy(&out.stdout).contains("default via 169.254.1.1"));
    // The state file lets another invocation find the pods.
    let again = Lab::open(&name).expect("open by name");
    assert_eq!(again.state.pods.len(), 2);
    drop(again);
    lab.del_pod("x/b").expect("pod del");
    assert!(!std::path::Path::new("/run/netns").join(&b.netns).exists());
    lab.down().expect("down");
    common::assert_nothing_left(&name);
}

#[test]
fn a_panicking_test_leaves_nothing() {
    if !common::lab_available("a_panicking_test_leaves_nothing") {
        return;
    }
    common::build_binaries();
    let name = names::ephemeral_lab_name();
    let n2 = name.clone();
    let r = std::panic::catch_unwind(move || {
        let mut lab = Lab::up(&LabSpec::new(&n2, 1)).expect("lab up");
        lab.add_pod("x", "a", None).expect("pod");
        panic!("test body fails with the lab up");
    });
    assert!(r.is_err());
    common::assert_nothing_left(&name);
}

#[test]
fn sigkilled_up_is_swept() {
    if !common::lab_available("sigkilled_up_is_swept") {
        return;
    }
    common::build_binaries();
    let name = format!("k{:x}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_calico-lab"))
        .args(["up", "--name", &name, "--nodes", "3"])
        .spawn()
        .expect("spawn calico-lab up");
    // Kill it once it has started making namespaces (mid-up).
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20)
        && calico_lab::sweep::lab_namespaces(&name).len() < 2
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (ns, _, _) = calico_lab::sweep::leftovers(&name);
    assert!(
        !ns.is_empty(),
        "the killed up left nothing to sweep; kill came too late"
    );
    sweep_until_gone(&name);
}

#[test]
fn cli_up_status_down() {
    if !common::lab_available("cli_up_status_down") {
        return;
    }
    common::build_binaries();
    let name = format!("c{:x}", std::process::id());
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_calico-lab"))
            .args(args)
            .output()
            .expect("run calico-lab");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["up", "--name", &name, "--nodes", "1"]);
    assert!(ok, "up: {out}{err}");
    // A finished CLI lab persists: sweep leaves it alone.
    let (ok, _, err) = run(&["sweep"]);
    assert!(ok, "{err}");
    assert!(!calico_lab::sweep::lab_namespaces(&name).is_empty());
    let (ok, out, err) = run(&["status", "--name", &name]);
    assert!(ok && out.contains("node-1"), "status: {out}{err}");
    let (ok, out, err) = run(&["down", "--name", &name]);
    assert!(ok, "down: {out}{err}");
    common::assert_nothing_left(&name);
}

/// A scenario run killed while its lab is up (pods, servers, calico-node, BIRD running) leaves
/// an ephemeral lab whose owner is gone: `sweep` removes all of it.
#[test]
fn sigkilled_scenario_run_is_swept() {
    if !common::lab_available("sigkilled_scenario_run_is_swept") {
        return;
    }
    common::build_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("slow.yaml");
    std::fs::write(
        &file,
        "id: killed\ntopology: {nodes: 2}\nsetup:\n  pods:\n  - {name: x/a}\n  - {name: x/b}\n  server_ports:\n  - {port: 80}\nsteps:\n- expect:\n  - {port: 80, protocol: TCP, reachability: {x/a: {x/b: allowed}}}\n",
    )
    .expect("write scenario");
    let mut child = Command::new(env!("CARGO_BIN_EXE_calico-lab"))
        .arg("scenario")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn calico-lab scenario");
    // The runner's lab is named after its pid (names::ephemeral_lab_name).
    let name = format!("r{:x}x0", child.id());
    let t0 = Instant::now();
    let pods_up = || {
        calico_lab::sweep::lab_namespaces(&name)
            .iter()
            .filter(|n| n.contains("-p-"))
            .count()
            >= 2
    };
    while t0.elapsed() < Duration::from_secs(60) && !pods_up() {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pods_up(), "the scenario run never got its pods up");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let (_, pids, _) = calico_lab::sweep::leftovers(&name);
    assert!(
        !pids.is_empty(),
        "nothing running after the kill: the test proves nothing"
    );
    sweep_until_gone(&name);
}

/// `calico-lab sweep`, then nothing of `name` may be left. A child the killed runner had just
/// forked holds a copy of the lab's lock until it execs (the lock file is close-on-exec), so a
/// sweep in that instant sees the lab busy and leaves it; an operator's second sweep removes
/// it. Allow three, a moment apart.
fn sweep_until_gone(name: &str) {
    for attempt in 1..=3 {
        let out = Command::new(env!("CARGO_BIN_EXE_calico-lab"))
            .arg("sweep")
            .output()
            .expect("calico-lab sweep");
        assert!(
            out.status.success(),
            "sweep: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (ns, pids, dir) = calico_lab::sweep::leftovers(name);
        if ns.is_empty() && pids.is_empty() && !dir {
            break;
        }
        eprintln!("sweep {attempt}: lab {name} still has {ns:?} {pids:?}; sweeping again");
        std::thread::sleep(Duration::from_millis(300));
    }
    common::assert_nothing_left(name);
}

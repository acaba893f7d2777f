//! `calico-lab`: namespace clusters and the scenario runner (see the crate docs).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calico_lab::lab::{DatastoreKind, Lab, LabSpec, Routing};
use calico_lab::probe::Proto;
use calico_lab::scenario::{self, RunOptions};
use calico_lab::{bench, names, sweep};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "calico-lab",
    about = "Calico clusters in network namespaces, and the scenario runner"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring up a lab: fabric bridge, N node namespaces each running calico-node, a datastore.
    Up {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "bgp-mesh", value_parser = parse_routing)]
        routing: Routing,
        #[arg(long, default_value = "embedded", value_parser = parse_datastore)]
        datastore: DatastoreKind,
        /// With `--routing bgp-route-reflector`: how many nodes (the first) reflect routes.
        #[arg(long, default_value_t = 1)]
        route_reflectors: usize,
    },
    /// Stop everything of a lab and remove it.
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Nodes (agent status), pods and addresses of a lab.
    Status {
        #[arg(long, default_value = "lab")]
        name: String,
    },
    /// Add or delete pods.
    Pod {
        #[command(subcommand)]
        cmd: PodCmd,
    },
    /// Run a command inside a pod's network namespace: `exec x/a -- ip addr`.
    Exec {
        #[arg(long, default_value = "lab")]
        name: String,
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Probe from one pod to another: `probe x/a x/b 80/TCP` (ICMP: `0/ICMP`).
    Probe {
        #[arg(long, default_value = "lab")]
        name: String,
        from: String,
        to: String,
        target: String,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Connectivity matrix of all pods on one port/protocol.
    Matrix {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(default_value = "80/TCP")]
        target: String,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// calicoctl against the lab's datastore: `calicoctl -- apply -f policy.yaml`.
    Calicoctl {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Wait until every node's Felix has applied the datastore's current revision and every
    /// node routes every other node's pods.
    Wait {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Remove leftovers of dead labs (killed `up`, killed test runs); `--all`: every lab.
    Sweep {
        #[arg(long)]
        all: bool,
    },
    /// Run scenario files (FORMAT.md); prints mismatches and `N passed, M failed`.
    Scenario {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_parser = parse_datastore)]
        datastore: Option<DatastoreKind>,
        #[arg(long)]
        nodes: Option<usize>,
        #[arg(long, value_parser = parse_routing)]
        routing: Option<Routing>,
        #[arg(long, default_value_t = 3)]
        jobs: usize,
        #[arg(long, default_value_t = 1000)]
        probe_timeout_ms: u64,
    },
    /// Benchmarks: policy applied -> converged over a scenario corpus, whole-corpus time, `up`
    /// of N nodes.
    Bench {
        #[arg(long)]
        corpus: Option<PathBuf>,
        #[arg(long, default_value_t = 10)]
        up_nodes: usize,
        #[arg(long, value_parser = parse_datastore, default_value = "embedded")]
        datastore: DatastoreKind,
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Node counts for "up started -> full pod mesh reachable", comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "3,10")]
        mesh_sizes: Vec<usize>,
        /// Length of each iperf3 run in seconds; 0 skips the throughput figures.
        #[arg(long, default_value_t = 5)]
        iperf_secs: u64,
    },
    /// (internal) The pod server: TCP, UDP and SCTP on the given ports.
    #[command(hide = true)]
    Serve {
        #[arg(long = "port")]
        ports: Vec<u16>,
    },
}

#[derive(Subcommand)]
enum PodCmd {
    /// `pod add x/a [--node node-2] [--label k=v]...`
    Add {
        #[arg(long, default_value = "lab")]
        name: String,
        pod: String,
        #[arg(long)]
        node: Option<String>,
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// `pod del x/a`
    Del {
        #[arg(long, default_value = "lab")]
        name: String,
        pod: String,
    },
}

fn parse_routing(s: &str) -> Result<Routing, String> {
    s.parse()
}

fn parse_datastore(s: &str) -> Result<DatastoreKind, String> {
    s.parse()
}

fn split_pod(p: &str) -> Result<(String, String)> {
    match p.split_once('/') {
        Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() => Ok((ns.into(), pod.into())),
        _ => bail!("pod {p:?}: expected namespace/pod"),
    }
}

fn parse_target(t: &str) -> Result<(u16, Proto)> {
    let (port, proto) = t
        .split_once('/')
        .with_context(|| format!("target {t:?}: expected <port>/<protocol>, e.g. 80/TCP"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("target {t:?}: invalid port {port:?}"))?;
    let proto: Proto = proto.parse().map_err(anyhow::Error::msg)?;
    Ok((port, proto))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.cmd, Cmd::Serve { .. });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CALICO_LAB_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })
            }),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calico-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Up {
            name,
            nodes,
            routing,
            datastore,
            route_reflectors,
        } => {
            let t0 = Instant::now();
            let mut spec = LabSpec::new(&name, nodes);
            spec.routing = routing;
            spec.route_reflectors = route_reflectors;
            spec.datastore = datastore;
            spec.persistent = true;
            let lab = Lab::up(&spec)?;
            println!(
                "lab {name} up in {:.2}s: {} nodes, {}, {} datastore (state: {})",
                t0.elapsed().as_secs_f64(),
                lab.state.nodes.len(),
                routing.as_str(),
                datastore.as_str(),
                lab.state.dir().display()
            );
        }
        Cmd::Down { name } => {
            names::validate_lab_name(&name)?;
            let r = sweep::teardown(&name)?;
            println!(
                "lab {name} down: {} namespaces, {} processes removed",
                r.namespaces.len(),
                r.processes.len()
            );
        }
        Cmd::Status { name } => status(&name)?,
        Cmd::Pod { cmd } => match cmd {
            PodCmd::Add {
                name,
                pod,
                node,
                labels,
            } => {
                let (ns, p) = split_pod(&pod)?;
                let mut lab = Lab::open(&name)?;
                let mut l = BTreeMap::new();
                for kv in &labels {
                    let (k, v) = kv
                        .split_once('=')
                        .with_context(|| format!("label {kv:?}: expected key=value"))?;
                    l.insert(k.to_string(), v.to_string());
                }
                let st = lab.add_pod_k8s(&ns, &p, node.as_deref(), &l)?;
                println!("pod {pod} on {}: {}", st.node, st.ip);
            }
            PodCmd::Del { name, pod } => {
                let mut lab = Lab::open(&name)?;
                lab.del_pod(&pod)?;
                println!("pod {pod} deleted");
            }
        },
        Cmd::Exec { name, pod, command } => {
            let lab = Lab::open(&name)?;
            let st = lab
                .state
                .pods
                .get(&pod)
                .with_context(|| format!("lab {name}: no pod {pod}"))?;
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &st.netns])
                .args(&command)
                .env(names::LAB_TAG_ENV, &name)
                .status()
                .context("ip netns exec")?;
            return Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ));
        }
        Cmd::Probe {
            name,
            from,
            to,
            target,
            timeout_ms,
        } => {
            let lab = Lab::open(&name)?;
            let (port, proto) = parse_target(&target)?;
            let src = lab
                .state
                .pods
                .get(&from)
                .with_context(|| format!("no pod {from}"))?;
            let dst = lab
                .state
                .pods
                .get(&to)
                .with_context(|| format!("no pod {to}"))?;
            let ip: Ipv4Addr = dst.ip.parse().context("pod address")?;
            let ok = scenario::probe_many(
                &[(src.netns.clone(), ip, port, proto)],
                Duration::from_millis(timeout_ms),
            )?;
            let ok = ok.first().copied().unwrap_or(false);
            println!(
                "{from} -> {to} ({ip}) {target}: {}",
                if ok { "allowed" } else { "blocked" }
            );
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Cmd::Matrix {
            name,
            target,
            timeout_ms,
        } => {
            let lab = Lab::open(&name)?;
            let (port, proto) = parse_target(&target)?;
            print!(
                "{}",
                bench::render_matrix(&lab, port, proto, Duration::from_millis(timeout_ms))?
            );
        }
        Cmd::Calicoctl { name, args } => {
            let lab = Lab::open(&name)?;
            // calicoctl runs inside the lab's fabric namespace; the file system is the same.
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            print!("{}", lab.calicoctl(&argv, None)?);
        }
        Cmd::Wait { name, timeout_secs } => {
            let lab = Lab::open(&name)?;
            let t0 = Instant::now();
            let timeout = Duration::from_secs(timeout_secs);
            lab.wait_converged(timeout)?;
            lab.wait_pod_routes(timeout)?;
            println!(
                "converged: every node's Felix applied revision {} and routes every other node's pods ({} ms)",
                lab.datastore_revision()?,
                t0.elapsed().as_millis()
            );
        }
        Cmd::Sweep { all } => {
            let removed = sweep::sweep(all)?;
            for (lab, r) in &removed {
                println!(
                    "swept lab {lab}: {} namespaces, {} processes",
                    r.namespaces.len(),
                    r.processes.len()
                );
            }
            println!("{} labs swept", removed.len());
        }
        Cmd::Scenario {
            paths,
            datastore,
            nodes,
            routing,
            jobs,
            probe_timeout_ms,
        } => {
            let files = scenario::collect_files(&paths)?;
            let opts = RunOptions {
                datastore,
                nodes,
                routing,
                jobs,
                probe_timeout: Duration::from_millis(probe_timeout_ms),
                ..RunOptions::default()
            };
            let results = scenario::run_files(&files, &opts, |r| {
                print!("{}", scenario::render_case(r));
            });
            let failed = results.iter().filter(|r| !r.passed()).count();
            println!("{} passed, {} failed", results.len() - failed, failed);
            return Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Cmd::Bench {
            corpus,
            up_nodes,
            datastore,
            jobs,
            mesh_sizes,
            iperf_secs,
        } => {
            let net = bench::NetBench {
                mesh_sizes,
                iperf_secs,
            };
            print!(
                "{}",
                bench::run(corpus.as_deref(), up_nodes, datastore, jobs, &net)?
            );
        }
        Cmd::Serve { ports } => {
            calico_lab::probe::serve(&ports)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(name: &str) -> Result<()> {
    let lab = Lab::open(name)?;
    let st = &lab.state;
    let live = sweep::lab_alive(name);
    println!(
        "lab {} ({:?}{}): {} routing, {} datastore, nodes on {}, pods from {}",
        st.name,
        st.phase,
        if live {
            ""
        } else {
            ", DEAD: run calico-lab sweep"
        },
        st.routing,
        st.datastore,
        st.subnet,
        st.pool_cidr
    );
    for n in &st.nodes {
        let agent = match n.pid {
            Some(pid) if calico_lab::procs::alive(pid) => match lab.felix_status(n) {
                Ok(s) => format!(
                    "{} pid {pid}: ready={} in_sync={} applied_revision={}",
                    n.agent, s.ready, s.in_sync, s.applied_revision
                ),
                Err(e) => format!("{} pid {pid}: status unavailable ({e})", n.agent),
            },
            Some(pid) => format!("{} pid {pid}: NOT RUNNING", n.agent),
            None => "no agent".into(),
        };
        println!("  node {:<8} {:<12} {agent}", n.name, n.ip);
    }
    if let Ok(rev) = lab.datastore_revision() {
        println!("  datastore revision {rev}");
    }
    for (k, p) in &st.pods {
        println!("  pod  {k:<16} {:<14} on {}", p.ip, p.node);
    }
    Ok(())
}

//! `calicoctl ipam`: show, check, release and configure, with upstream's flags and output.
//!
//! The IPAM logic lives in `calico-ipam`; this module only gathers what is alive (workload
//! endpoints and node tunnel addresses), calls the library and renders its answers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use calico_datastore::client::Client;
use calico_ipam::check::PoolUsage;
use calico_ipam::{
    BlockError, CheckReport, IpamClient, IpamError, IpamSnapshot, LiveWorkloads, PoolConfig,
};
use calico_model::KindInfo;
use clap::{Args, Subcommand};
use ipnet::IpNet;

/// `calicoctl ipam <command>`.
#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Show details of a Calico assigned IP address, or of overall IP usage.
    Show(ShowArgs),
    /// Check the integrity of the IPAM datastructures.
    Check(CheckArgs),
    /// Release a Calico assigned IP address, or the leaks found by `ipam check`.
    Release(ReleaseArgs),
    /// Configure IPAM.
    Configure(ConfigureArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Report whether this specific IP address is in use.
    #[arg(long)]
    pub ip: Option<String>,
    /// Show detailed information for IP blocks as well as pools.
    #[arg(long = "show-blocks")]
    pub show_blocks: bool,
    /// Show detailed information for "borrowed" IP addresses.
    #[arg(long = "show-borrowed")]
    pub show_borrowed: bool,
    /// Show current Calico IPAM configuration.
    #[arg(long = "show-configuration")]
    pub show_configuration: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Write a JSON report to this file.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Print all IPs that are checked.
    #[arg(long = "show-all-ips")]
    pub show_all_ips: bool,
    /// Print all IPs that are leaked or not allocated properly.
    #[arg(long = "show-problem-ips")]
    pub show_problem_ips: bool,
    /// Accepted for compatibility; unused by this datastore.
    #[arg(long, hide = true)]
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// IP address to release.
    #[arg(
        long,
        conflicts_with = "from_report",
        required_unless_present = "from_report"
    )]
    pub ip: Option<String>,
    /// Report file(s) from `ipam check -o`; only what every report calls leaked is released.
    #[arg(long = "from-report")]
    pub from_report: Vec<PathBuf>,
    /// Accepted for compatibility (reports carry sequence numbers, which guard each release).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Set StrictAffinity to true/false.
    #[arg(long = "strictaffinity", value_parser = parse_bool_flag("--strictaffinity"))]
    pub strict_affinity: Option<bool>,
    /// Maximum number of blocks one host may claim (0: the default).
    #[arg(long = "max-blocks-per-host")]
    pub max_blocks_per_host: Option<u32>,
}

fn parse_bool_flag(flag: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone {
    move |s: &str| match s.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{flag} must be true or false, got {s:?}")),
    }
}

/// Runs one `ipam` subcommand; returns the exit code.
pub async fn run(client: &Client, cmd: IpamCommand) -> anyhow::Result<i32> {
    let ipam = IpamClient::new(client.kv().clone());
    ipam.load_pools_from_store()
        .await
        .context("load ip pools")?;
    match cmd {
        IpamCommand::Show(a) => show(&ipam, a).await,
        IpamCommand::Check(a) => check(client, &ipam, a).await,
        IpamCommand::Release(a) => release(&ipam, a).await,
        IpamCommand::Configure(a) => configure(&ipam, a).await,
    }
}

// ----- show -----

async fn show(ipam: &IpamClient, a: ShowArgs) -> anyhow::Result<i32> {
    if let Some(ip) = &a.ip {
        let addr = parse_ip(ip)?;
        match ipam.get_assignment_attributes(addr).await? {
            None => println!("IP {addr} is not assigned"),
            Some((attrs, handle)) => {
                println!("IP {addr} is in use");
                if let Some(h) = handle {
                    println!("Handle: {h}");
                }
                if !attrs.is_empty() {
                    println!("Attributes:");
                    for (k, v) in &attrs {
                        println!("  {k}: {v}");
                    }
                }
            }
        }
        return Ok(0);
    }
    if a.show_configuration {
        let cfg = ipam.get_config().await?;
        let rows = vec![
            vec!["StrictAffinity".into(), cfg.strict_affinity.to_string()],
            vec![
                "AutoAllocateBlocks".into(),
                cfg.auto_allocate_blocks.to_string(),
            ],
            vec![
                "MaxBlocksPerHost".into(),
                cfg.max_blocks_per_host.to_string(),
            ],
        ];
        print!("{}", render_table(&["PROPERTY", "VALUE"], &rows));
        return Ok(0);
    }
    if a.show_borrowed {
        let snap = ipam.snapshot().await?;
        print!(
            "{}",
            render_table(
                &[
                    "IP",
                    "BORROWING-NODE",
                    "BLOCK",
                    "BLOCK OWNER",
                    "TYPE",
                    "ALLOCATED-TO"
                ],
                &borrowed_rows(&snap)
            )
        );
        return Ok(0);
    }
    let usage = ipam.utilization().await?;
    print!(
        "{}",
        render_table(
            &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
            &usage_rows(&usage, a.show_blocks)
        )
    );
    Ok(0)
}

/// `5 (8%)`, as upstream prints usage.
fn with_percent(n: u128, total: u128) -> String {
    if total == 0 {
        return format!("{n}");
    }
    format!("{n} ({:.0}%)", 100.0 * n as f64 / total as f64)
}

fn usage_rows(usage: &[PoolUsage], show_blocks: bool) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for p in usage {
        let grouping = if p.name == "orphaned allocation blocks" {
            "Orphaned"
        } else {
            "IP Pool"
        };
        rows.push(vec![
            grouping.to_string(),
            p.cidr.to_string(),
            p.total.to_string(),
            with_percent(p.in_use, p.total),
            with_percent(p.total.saturating_sub(p.in_use), p.total),
        ]);
        if show_blocks {
            for b in &p.blocks {
                rows.push(vec![
                    "Block".to_string(),
                    b.cidr.to_string(),
                    b.total.to_string(),
                    with_percent(b.in_use, b.total),
                    with_percent(b.total.saturating_sub(b.in_use), b.total),
                ]);
            }
        }
    }
    rows
}

/// Addresses allocated from a block affine to one node on behalf of another.
fn borrowed_rows(snap: &IpamSnapshot) -> Vec<Vec<String>> {
    let mut rows = BTreeMap::new();
    for b in &snap.blocks {
        let Some(owner) = b.host() else { continue };
        for (_, ip, attr) in b.allocated() {
            let attrs = attr.secondary.clone().unwrap_or_default();
            let Some(node) = attrs.get(calico_ipam::attrs::NODE) else {
                continue;
            };
            if node == owner {
                continue;
            }
            let (kind, to) = allocation_kind(&attrs, attr.handle_id.as_deref());
            rows.insert(
                ip,
                vec![
                    ip.to_string(),
                    node.clone(),
                    b.cidr.to_string(),
                    owner.to_string(),
                    kind,
                    to,
                ],
            );
        }
    }
    rows.into_values().collect()
}

/// Upstream's TYPE and ALLOCATED-TO columns.
fn allocation_kind(attrs: &BTreeMap<String, String>, handle: Option<&str>) -> (String, String) {
    use calico_ipam::attrs as a;
    let get = |k: &str| attrs.get(k).cloned().unwrap_or_default();
    match attrs.get(a::TYPE).map(String::as_str) {
        Some(a::TYPE_IPIP) => ("IPIP Tunnel".into(), get(a::NODE)),
        Some(a::TYPE_VXLAN) | Some(a::TYPE_VXLAN_V6) => ("VXLAN Tunnel".into(), get(a::NODE)),
        Some(a::TYPE_WIREGUARD) | Some(a::TYPE_WIREGUARD_V6) => {
            ("Wireguard Tunnel".into(), get(a::NODE))
        }
        _ if attrs.contains_key(a::POD) => (
            "pod".into(),
            format!("{}/{}", get(a::NAMESPACE), get(a::POD)),
        ),
        _ if attrs.contains_key(a::SERVICE) => (
            "service".into(),
            format!("{}/{}", get(a::NAMESPACE), get(a::SERVICE)),
        ),
        _ => ("unknown".into(), handle.unwrap_or_default().to_string()),
    }
}

// ----- check -----

/// What is alive in the cluster, gathered from WorkloadEndpoints and Nodes.
struct Live {
    live: LiveWorkloads,
    workload_ips: usize,
    tunnel_ips: usize,
}

async fn check(client: &Client, ipam: &IpamClient, a: CheckArgs) -> anyhow::Result<i32> {
    println!("Checking IPAM for inconsistencies...");
    println!();
    let snap = ipam.snapshot().await?;
    println!("Loading all IPAM blocks...");
    println!("Found {} IPAM blocks.", snap.blocks.len());
    for b in &snap.blocks {
        println!(
            " IPAM block {} affinity={}:",
            b.cidr,
            b.affinity.as_deref().unwrap_or("<none>")
        );
    }
    println!("Loading all IPAM pools...");
    let pools: Vec<PoolConfig> = ipam.pools().iter().cloned().collect();
    let active: Vec<&PoolConfig> = pools.iter().filter(|p| !p.disabled).collect();
    for p in &active {
        println!("  {}", p.cidr);
    }
    println!("Found {} active IP pools.", active.len());
    println!();

    let live = gather_live(client, &snap).await?;
    println!("Loading all nodes.");
    println!("Found {} node tunnel IPs.", live.tunnel_ips);
    println!();
    println!("Loading all workload endpoints.");
    println!("Found {} workload IPs.", live.workload_ips);
    println!("Workloads and nodes are using {} IPs.", live.live.ips.len());
    println!();

    let report = calico_ipam::check::check(&snap, &live.live);
    println!("Looking up all IPAM handles...");
    println!("Found {} handles.", snap.handles.len());
    println!();
    print!("{}", render_check(&report, &active, &live.live, &a));
    if let Some(path) = &a.output {
        std::fs::write(path, report.to_json_pretty() + "\n")
            .with_context(|| format!("write report {}", path.display()))?;
        println!("Report written to {}", path.display());
    }
    Ok(0)
}

fn render_check(
    r: &CheckReport,
    active: &[&PoolConfig],
    live: &LiveWorkloads,
    a: &CheckArgs,
) -> String {
    let mut o = String::new();
    let in_pool = |ip: &IpAddr| active.iter().any(|p| p.cidr.contains(ip));
    let (in_pools, outside): (Vec<_>, Vec<_>) = r
        .in_use_without_allocation
        .iter()
        .partition(|x| in_pool(&x.ip));
    let leaked: BTreeSet<IpAddr> = r.leaked_ips.iter().map(|l| l.ip).collect();

    if a.show_all_ips {
        let _ = writeln!(o, "All IPs in use by workloads and nodes:");
        for (ip, users) in &live.ips {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            let _ = writeln!(o, "  {ip} used by {}", users.join(", "));
        }
        for l in &r.leaked_ips {
            let _ = writeln!(
                o,
                "  {} allocated in {} to {} but not in use",
                l.ip,
                l.block,
                l.handle.as_deref().unwrap_or("<no handle>")
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(
        o,
        "Scanning for IPs that are allocated but not actually in use..."
    );
    if a.show_problem_ips || a.show_all_ips {
        for l in &r.leaked_ips {
            let _ = writeln!(
                o,
                "  {} leaked; handle {} attrs {}",
                l.ip,
                l.handle.as_deref().unwrap_or("<none>"),
                attrs_text(&l.attributes)
            );
        }
    }
    let _ = writeln!(
        o,
        "Found {} IPs that are allocated in IPAM but not actually in use.",
        leaked.len()
    );
    let _ = writeln!(
        o,
        "Scanning for IPs that are in use by a workload or node but not allocated in IPAM..."
    );
    if a.show_problem_ips || a.show_all_ips {
        for x in r.in_use_without_allocation.iter() {
            let _ = writeln!(
                o,
                "  {} in use by {} but not allocated to it",
                x.ip,
                x.handle.as_deref().unwrap_or("<unknown>")
            );
        }
    }
    let _ = writeln!(
        o,
        "Found {} in-use IPs that are not in active IP pools.",
        outside.len()
    );
    let _ = writeln!(
        o,
        "Found {} in-use IPs that are in active IP pools but have no corresponding IPAM allocation.",
        in_pools.len()
    );
    let _ = writeln!(o);

    let _ = writeln!(o, "Scanning for IPAM handles with no matching IPs...");
    list_problems(&mut o, a, &r.handles_without_ips);
    let _ = writeln!(
        o,
        "Found {} handles with no matching IPs.",
        r.handles_without_ips.len()
    );
    let _ = writeln!(o, "Scanning for IPAM handles that belong to no workload...");
    list_problems(&mut o, a, &r.orphaned_handles);
    let _ = writeln!(
        o,
        "Found {} handles that belong to no workload or node.",
        r.orphaned_handles.len()
    );
    let mismatches: Vec<String> = r
        .handle_count_mismatches
        .iter()
        .map(|m| {
            format!(
                "{} block {}: recorded {} actual {}",
                m.handle, m.block, m.recorded, m.actual
            )
        })
        .collect();
    list_problems(&mut o, a, &mismatches);
    let _ = writeln!(
        o,
        "Found {} handles whose IP counts disagree with the blocks.",
        mismatches.len()
    );
    let no_object: Vec<String> = r
        .allocations_without_handle_object
        .iter()
        .map(|x| format!("{} handle {}", x.ip, x.handle.as_deref().unwrap_or("")))
        .collect();
    list_problems(&mut o, a, &no_object);
    let _ = writeln!(
        o,
        "Found {} allocations that refer to missing handles.",
        no_object.len()
    );
    let _ = writeln!(o);

    let _ = writeln!(o, "Scanning for IPs with multiple owners...");
    let multi: Vec<String> = r
        .multiple_owners
        .iter()
        .map(|m| format!("{} owned by {}", m.ip, m.owners.join(", ")))
        .collect();
    list_problems(&mut o, a, &multi);
    let _ = writeln!(o, "Found {} IPs with multiple owners.", multi.len());
    let _ = writeln!(o, "Scanning blocks and affinities...");
    let claimed: Vec<String> = r
        .blocks_claimed_by_multiple_hosts
        .iter()
        .map(|m| format!("{} claimed by {}", m.block, m.claimants.join(", ")))
        .collect();
    list_problems(&mut o, a, &claimed);
    let _ = writeln!(
        o,
        "Found {} blocks claimed by more than one host.",
        claimed.len()
    );
    let aff: Vec<String> = r
        .affinity_mismatches
        .iter()
        .map(|m| {
            format!(
                "{} affinity object {} block affinity {}",
                m.block,
                m.affinity_object.as_deref().unwrap_or("<none>"),
                m.block_affinity.as_deref().unwrap_or("<none>")
            )
        })
        .collect();
    list_problems(&mut o, a, &aff);
    let _ = writeln!(
        o,
        "Found {} blocks whose affinity disagrees with the affinity objects.",
        aff.len()
    );
    let overlaps: Vec<String> = r
        .overlapping_blocks
        .iter()
        .map(|x| format!("{} overlaps {}", x.a, x.b))
        .collect();
    list_problems(&mut o, a, &overlaps);
    let _ = writeln!(o, "Found {} overlapping blocks.", overlaps.len());
    let invalid: Vec<String> = r
        .invalid_blocks
        .iter()
        .map(|x| format!("{}: {}", x.key, x.reason))
        .collect();
    list_problems(&mut o, a, &invalid);
    let _ = writeln!(o, "Found {} invalid blocks.", invalid.len());
    let _ = writeln!(o);
    let _ = writeln!(o, "Check complete; found {} problems.", r.problem_count());
    o
}

fn list_problems(o: &mut String, a: &CheckArgs, items: &[String]) {
    if a.show_problem_ips || a.show_all_ips {
        for i in items {
            let _ = writeln!(o, "  {i}");
        }
    }
}

fn attrs_text(attrs: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// Tunnel address fields of a Node and the handle upstream allocates each under.
const TUNNEL_FIELDS: &[(&[&str], &str)] = &[
    (&["bgp", "ipv4IPIPTunnelAddr"], "ipip-tunnel-addr-"),
    (&["ipv4VXLANTunnelAddr"], "vxlan-tunnel-addr-"),
    (&["ipv6VXLANTunnelAddr"], "vxlan-v6-tunnel-addr-"),
    (
        &["wireguard", "interfaceIPv4Address"],
        "wireguard-tunnel-addr-",
    ),
    (
        &["wireguard", "interfaceIPv6Address"],
        "wireguard-v6-tunnel-addr-",
    ),
];

/// Live handles and addresses: every WorkloadEndpoint (its CNI handle is
/// `<network>.<containerID>`, so any handle ending in `.<containerID>` is its) and every Node's
/// tunnel addresses (valid as long as the node exists).
async fn gather_live(client: &Client, snap: &IpamSnapshot) -> anyhow::Result<Live> {
    let mut live = LiveWorkloads::default();
    // Every handle known to IPAM, and the handle each address is allocated to.
    let mut known: BTreeSet<String> = snap.handles.keys().cloned().collect();
    let mut allocated_to: BTreeMap<IpAddr, String> = BTreeMap::new();
    for b in &snap.blocks {
        for (_, ip, attr) in b.allocated() {
            if let Some(h) = &attr.handle_id {
                known.insert(h.clone());
                allocated_to.insert(ip, h.clone());
            }
        }
    }

    let node_kind = KindInfo::lookup("Node").ok_or_else(|| anyhow!("unknown kind Node"))?;
    let mut tunnel_ips = 0;
    for n in client.list(node_kind, None).await?.items {
        let v = n.to_value();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for (path, prefix) in TUNNEL_FIELDS {
            let handle = format!("{prefix}{name}");
            live.handles.insert(handle.clone());
            let field = path.iter().fold(&v["spec"], |acc, k| &acc[*k]);
            if let Some(ip) = field.as_str().and_then(parse_addr_or_net) {
                tunnel_ips += 1;
                live.add_ip(ip, &handle);
            }
        }
    }

    let wep_kind = KindInfo::lookup("WorkloadEndpoint")
        .ok_or_else(|| anyhow!("unknown kind WorkloadEndpoint"))?;
    let mut workload_ips = 0;
    for w in client.list(wep_kind, None).await?.items {
        let v = w.to_value();
        let cid = v["spec"]["containerID"].as_str().unwrap_or_default();
        let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = v["metadata"]["name"].as_str().unwrap_or_default();
        let mine = |h: &str| !cid.is_empty() && (h == cid || h.ends_with(&format!(".{cid}")));
        let handles: Vec<&String> = known.iter().filter(|h| mine(h)).collect();
        for h in &handles {
            live.handles.insert((*h).clone());
        }
        let fallback = if cid.is_empty() {
            format!("workload:{ns}/{name}")
        } else {
            format!("k8s-pod-network.{cid}")
        };
        for net in v["spec"]["ipNetworks"].as_array().into_iter().flatten() {
            let Some(ip) = net.as_str().and_then(parse_addr_or_net) else {
                continue;
            };
            workload_ips += 1;
            let handle = match allocated_to.get(&ip) {
                Some(h) if mine(h) || cid.is_empty() => h.clone(),
                _ => handles
                    .first()
                    .map(|h| (*h).clone())
                    .unwrap_or_else(|| fallback.clone()),
            };
            live.add_ip(ip, &handle);
        }
    }
    Ok(Live {
        live,
        workload_ips,
        tunnel_ips,
    })
}

fn parse_addr_or_net(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<IpNet>().ok().map(|n| n.addr()))
}

// ----- release -----

async fn release(ipam: &IpamClient, a: ReleaseArgs) -> anyhow::Result<i32> {
    if let Some(ip) = &a.ip {
        let addr = parse_ip(ip)?;
        let r = ipam
            .release_ips(vec![calico_ipam::ReleaseOptions::ip(addr)])
            .await?;
        if let Some((_, e)) = r.failed.first() {
            bail!("failed to release IP address {addr}: {e}");
        }
        if r.released.contains(&addr) {
            println!("Successfully released IP address {addr}");
            return Ok(0);
        }
        bail!("IP address {addr} is not assigned");
    }
    let mut reports = Vec::new();
    for path in &a.from_report {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read report {}", path.display()))?;
        let report = CheckReport::from_json(&text)
            .map_err(|e| anyhow!("report {}: not an ipam check report: {e}", path.display()))?;
        reports.push(report);
    }
    let r = ipam.release_from_reports(&reports).await?;
    for ip in &r.ips.released {
        println!("Released leaked IP {ip}");
    }
    for ip in &r.ips.not_allocated {
        println!("Skipped {ip}: no longer allocated");
    }
    // A changed sequence number or handle means the address was released and re-allocated
    // after the report was taken: skipping it is the guard working, not a failure.
    let (stale, failed): (Vec<_>, Vec<_>) = r.ips.failed.iter().partition(|(_, e)| {
        matches!(
            e,
            IpamError::Block(BlockError::BadSequenceNumber { .. } | BlockError::BadHandle { .. })
        )
    });
    for (ip, _) in &stale {
        println!("Skipped {ip}: re-allocated since the report was taken");
    }
    for (ip, e) in &failed {
        eprintln!("Failed to release {ip}: {e}");
    }
    for h in &r.handles_deleted {
        println!("Deleted handle {h} with no IPs");
    }
    println!(
        "Released {} IPs and {} handles ({} skipped).",
        r.ips.released.len(),
        r.handles_deleted.len(),
        r.ips.not_allocated.len() + r.ips.failed.len()
    );
    Ok(if failed.is_empty() { 0 } else { 1 })
}

// ----- configure -----

async fn configure(ipam: &IpamClient, a: ConfigureArgs) -> anyhow::Result<i32> {
    if a.strict_affinity.is_none() && a.max_blocks_per_host.is_none() {
        bail!(
            "ipam configure: nothing to set; give --strictaffinity=<true|false> and/or --max-blocks-per-host=<N>"
        );
    }
    let mut cfg = ipam.get_config().await?;
    if let Some(s) = a.strict_affinity {
        cfg.strict_affinity = s;
    }
    if let Some(n) = a.max_blocks_per_host {
        cfg.max_blocks_per_host = n;
    }
    ipam.set_config(cfg).await?;
    if let Some(s) = a.strict_affinity {
        println!("Successfully set StrictAffinity to: {s}");
    }
    if let Some(n) = a.max_blocks_per_host {
        println!("Successfully set MaxBlocksPerHost to: {n}");
    }
    Ok(0)
}

fn parse_ip(s: &str) -> anyhow::Result<IpAddr> {
    s.parse::<IpAddr>()
        .map_err(|_| anyhow!("invalid IP address {s:?} given to --ip"))
}

// ----- tables -----

/// A bordered table as upstream's tablewriter draws it: headers centred, numbers right-aligned,
/// other cells left-aligned.
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let sep: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = sep.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let pad = w - h.len();
        // tablewriter's Pad: the smaller half of an odd gap goes on the left.
        let left = pad / 2;
        let _ = write!(
            out,
            "| {}{}{} ",
            " ".repeat(left),
            h,
            " ".repeat(pad - left)
        );
    }
    out.push_str("|\n");
    out.push_str(&sep);
    for r in rows {
        for (c, w) in r.iter().zip(&widths) {
            if c.parse::<f64>().is_ok() {
                let _ = write!(out, "| {c:>w$} ");
            } else {
                let _ = write!(out, "| {c:<w$} ");
            }
        }
        out.push_str("|\n");
    }
    out.push_str(&sep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_centres_headers_and_aligns_numbers() {
        let t = render_table(
            &["GROUPING", "IPS TOTAL"],
            &[vec!["IP Pool".into(), "64".into()]],
        );
        assert_eq!(
            t,
            "+----------+-----------+\n\
             | GROUPING | IPS TOTAL |\n\
             +----------+-----------+\n\
             | IP Pool  |        64 |\n\
             +----------+-----------+\n"
        );
    }

    #[test]
    fn odd_header_gap_puts_the_extra_space_on_the_right() {
        let t = render_table(&["AB"], &[vec!["12345".into()]]);
        assert_eq!(t.lines().nth(1), Some("|  AB   |"));
    }

    #[test]
    fn percent_rounds_like_go() {
        assert_eq!(with_percent(5, 64), "5 (8%)");
        assert_eq!(with_percent(0, 65536), "0 (0%)");
        assert_eq!(with_percent(65531, 65536), "65531 (100%)");
    }
}

//! calicoctl: manage Calico resources in the datastore, compatible with upstream's commands,
//! flags and output. The binary (`main.rs`) only calls [`run`].

pub mod cli;
pub mod input;
pub mod ipam;
pub mod k8s;
pub mod node;
pub mod output;
pub mod patch;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use calico_datastore::client::{Client, ClientError};
use calico_datastore::config::{DatastoreConfig, connect};
use calico_model::{AnyResource, KindInfo};
use clap::Parser;
use serde_json::Value;

use crate::cli::{BenchCommand, Cli, Command, SelectorCommand};
use crate::input::Doc;
use crate::output::TableStyle;

/// This client's version as `calicoctl version` prints it.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Parses `args` (including the program name), runs the command and returns the exit code.
/// `env` is the process environment (datastore settings are read from it).
pub fn run(args: Vec<OsString>, env: BTreeMap<String, String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
        }
    };
    init_logging(&cli.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(dispatch(cli, env)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}

fn init_logging(level: &str) {
    let filter = match level.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "none" => "off",
        "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => "off",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(cli: Cli, env: BTreeMap<String, String>) -> anyhow::Result<i32> {
    let ctx = Ctx {
        config: cli.config.clone(),
        env,
        allow_mismatch: cli.allow_version_mismatch,
    };
    match cli.command {
        Command::Create(a) => {
            write_command(
                &ctx,
                &a.file,
                Action::Create {
                    skip_exists: a.skip_exists,
                },
            )
            .await
        }
        Command::Apply(a) => write_command(&ctx, &a, Action::Apply).await,
        Command::Replace(a) => write_command(&ctx, &a, Action::Replace).await,
        Command::Delete(a) => delete_command(&ctx, a).await,
        Command::Get(a) => get_command(&ctx, a).await,
        Command::Patch(a) => patch_command(&ctx, a).await,
        Command::Label(a) => label_command(&ctx, a).await,
        Command::Validate(a) => validate_command(&a.filename, a.recursive, a.skip_empty),
        Command::Version(a) => version_command(&ctx, a.client).await,
        Command::Ipam(c) => ipam::run(&ctx.client().await?, c).await,
        Command::Node(node::NodeCommand::Status(a)) => {
            node::status(&a, ctx.env.get("CALICO_RUN_DIR").map(String::as_str))
        }
        Command::Selector(s) => selector_command(s),
        Command::Bench(BenchCommand::Generate { count, out }) => {
            std::fs::write(&out, bench_policies(count, 0))
                .with_context(|| format!("write {}", out.display()))?;
            Ok(0)
        }
    }
}

struct Ctx {
    config: Option<std::path::PathBuf>,
    env: BTreeMap<String, String>,
    allow_mismatch: bool,
}

impl Ctx {
    async fn client(&self) -> anyhow::Result<Client> {
        let cfg = DatastoreConfig::load(self.config.as_deref(), &self.env)
            .map_err(|e| anyhow!("Failed to create Calico API client: {e}"))?;
        let kv = connect(&cfg)
            .await
            .map_err(|e| anyhow!("Failed to create Calico API client: {e}"))?;
        let client = Client::new(kv);
        if !self.allow_mismatch {
            check_version_mismatch(&client).await?;
        }
        Ok(client)
    }
}

/// Upstream's guard: a cluster whose ClusterInformation names another Calico version is refused
/// unless --allow-version-mismatch is given.
async fn check_version_mismatch(client: &Client) -> anyhow::Result<()> {
    let Some(kind) = KindInfo::lookup("ClusterInformation") else {
        return Ok(());
    };
    let Ok(ci) = client.get(kind, "", "default").await else {
        return Ok(());
    };
    let cluster = ci
        .to_value()
        .get("spec")
        .and_then(|s| s.get("calicoVersion"))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if cluster.is_empty() {
        return Ok(());
    }
    let core = |v: &str| {
        let v = v.trim_start_matches('v');
        v.split('-').next().unwrap_or(v).to_string()
    };
    if core(&cluster) != core(VERSION) {
        bail!(
            "Version mismatch.\nClient Version:   {VERSION}\nCluster Version:  {cluster}\nUse --allow-version-mismatch to override."
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Create { skip_exists: bool },
    Apply,
    Replace,
}

impl Action {
    fn verb(self) -> (&'static str, &'static str) {
        match self {
            Action::Create { .. } => ("create", "created"),
            Action::Apply => ("apply", "applied"),
            Action::Replace => ("replace", "replaced"),
        }
    }
}

/// Loads every document named by `-f`. A file-level problem fails the whole command before
/// anything is written, as upstream does.
fn load_all(filename: &str, recursive: bool, skip_empty: bool) -> anyhow::Result<Vec<Doc>> {
    let files = input::expand(filename, recursive)
        .map_err(|e| anyhow!("Failed to execute command: {e}"))?;
    let mut docs = Vec::new();
    for f in &files {
        let d = input::load_file(f).map_err(|e| anyhow!("Failed to execute command: {e}"))?;
        if d.is_empty() && !skip_empty {
            bail!("No resources specified in file {}", f.display());
        }
        docs.extend(d);
    }
    if docs.is_empty() && !skip_empty && Path::new(filename).is_dir() {
        bail!("No resources specified in directory {filename}");
    }
    Ok(docs)
}

/// Upstream's namespace rules for a resource read from a file.
fn handle_namespace(
    res: &mut AnyResource,
    cli_ns: Option<&str>,
    all_ns: bool,
) -> Result<(), String> {
    let info = res.info();
    let cli_ns = cli_ns.unwrap_or_default();
    let res_ns = res.metadata().namespace.clone();
    if info.namespaced {
        if all_ns && !cli_ns.is_empty() {
            return Err(
                "cannot use both --namespace and --all-namespaces flags at the same time"
                    .to_string(),
            );
        }
        if res_ns.is_empty() && !cli_ns.is_empty() {
            res.metadata_mut().namespace = cli_ns.to_string();
        } else if all_ns {
            res.metadata_mut().namespace.clear();
        } else if res_ns.is_empty() {
            res.metadata_mut().namespace = "default".to_string();
        } else if !cli_ns.is_empty() && res_ns != cli_ns {
            return Err(format!(
                "resource namespace does not match client namespace. {res_ns} != {cli_ns}"
            ));
        }
        Ok(())
    } else if !res_ns.is_empty() {
        Err(format!(
            "namespace should not be specified for a non-namespaced resource. {} is not a namespaced resource",
            info.kind
        ))
    } else if all_ns || !cli_ns.is_empty() {
        Err(format!("{} is not namespaced", info.kind))
    } else {
        Ok(())
    }
}

/// The single kind of a batch, if there is one.
fn single_kind<'a>(kinds: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut set: Vec<&str> = kinds.collect();
    set.sort_unstable();
    set.dedup();
    if set.len() == 1 {
        Some(set[0].to_string())
    } else {
        None
    }
}

/// `[err1 err2]`, as Go prints a slice of errors.
fn go_errs(errs: &[String]) -> String {
    format!("[{}]", errs.join(" "))
}

async fn write_command(ctx: &Ctx, args: &cli::FileArgs, action: Action) -> anyhow::Result<i32> {
    let docs = load_all(&args.filename, args.recursive, args.skip_empty)?;
    let (verb, past) = action.verb();
    if docs.is_empty() {
        println!("No resources specified");
        return Ok(0);
    }
    let total = docs.len();
    let kind = single_kind(docs.iter().map(doc_kind));

    // Decode/namespace problems are per resource; the rest still go ahead.
    let mut errs: Vec<(usize, String)> = Vec::new();
    let mut todo: Vec<(usize, AnyResource)> = Vec::new();
    let mut k8s_todo: Vec<(usize, calico_k8s::K8sObject)> = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        if let Some(k) = d.k8s {
            match k.and_then(|mut o| {
                k8s::handle_namespace(&mut o, args.namespace.as_deref()).map(|()| o)
            }) {
                Ok(o) => k8s_todo.push((i, o)),
                Err(e) => errs.push((i, format!("{}: {e}", d.source))),
            }
            continue;
        }
        match d.result {
            Ok(mut r) => match handle_namespace(&mut r, args.namespace.as_deref(), false) {
                Ok(()) => todo.push((i, r)),
                Err(e) => errs.push((i, e)),
            },
            Err(e) => errs.push((i, format!("{}: {e}", d.source))),
        }
    }
    let mut handled = 0usize;
    if !todo.is_empty() || !k8s_todo.is_empty() {
        let client = ctx.client().await?;
        if let Err(e) = client.ensure_initialized().await {
            tracing::info!(error = %e, "unable to initialize datastore");
        }
        match action {
            Action::Apply => {
                let (idx, res): (Vec<usize>, Vec<AnyResource>) = todo.into_iter().unzip();
                for (i, r) in idx.into_iter().zip(client.apply_many(res).await) {
                    match r {
                        Ok(_) => handled += 1,
                        Err(e) => errs.push((i, e.to_string())),
                    }
                }
            }
            Action::Create { skip_exists } => {
                let (idx, res): (Vec<usize>, Vec<AnyResource>) = todo.into_iter().unzip();
                for (i, r) in idx.into_iter().zip(client.create_many(res).await) {
                    match r {
                        Ok(_) => handled += 1,
                        Err(e) if skip_exists && e.is_already_exists() => handled += 1,
                        Err(e) => errs.push((i, e.to_string())),
                    }
                }
            }
            Action::Replace => {
                // Upstream stops at the first failure of a replace.
                for (i, r) in todo {
                    match client.update(r).await {
                        Ok(_) => handled += 1,
                        Err(e) => {
                            errs.push((i, e.to_string()));
                            break;
                        }
                    }
                }
            }
        }
        // Kubernetes objects after the Calico resources of the same input, in input order.
        let op = match action {
            Action::Create { .. } => k8s::Write::Create,
            Action::Apply => k8s::Write::Apply,
            Action::Replace => k8s::Write::Replace,
        };
        for (i, o) in k8s_todo {
            match k8s::write(&client, &o, op).await {
                Ok(()) => handled += 1,
                Err(k8s::OpError::AlreadyExists(_))
                    if matches!(action, Action::Create { skip_exists: true }) =>
                {
                    handled += 1
                }
                Err(e) => errs.push((i, e.to_string())),
            }
        }
    }
    errs.sort_by_key(|(i, _)| *i);
    let errs: Vec<String> = errs.into_iter().map(|(_, e)| e).collect();
    report(verb, past, &kind, total, handled, &errs)
}

/// The kind a document names, for the summary line (`""` when it did not decode).
fn doc_kind(d: &Doc) -> &'static str {
    match (&d.k8s, &d.result) {
        (Some(Ok(o)), _) => o.kind(),
        (Some(Err(_)), _) => "",
        (None, Ok(r)) => r.kind(),
        (None, Err(_)) => "",
    }
}

/// Prints the outcome the way upstream's create/apply/replace do.
fn report(
    verb: &str,
    past: &str,
    kind: &Option<String>,
    total: usize,
    handled: usize,
    errs: &[String],
) -> anyhow::Result<i32> {
    if handled == 0 {
        if total == 1 {
            bail!(
                "Failed to {verb} '{}' resource: {}",
                kind.clone().unwrap_or_default(),
                go_errs(errs)
            );
        } else if let Some(k) = kind {
            bail!("Failed to {verb} any '{k}' resources: {}", go_errs(errs));
        } else {
            bail!("Failed to {verb} any resources: {}", go_errs(errs));
        }
    }
    if errs.is_empty() {
        match kind {
            Some(k) => println!("Successfully {past} {handled} '{k}' resource(s)"),
            None => println!("Successfully {past} {handled} resource(s)"),
        }
        return Ok(0);
    }
    match kind {
        Some(k) => println!("Partial success: {past} {handled} out of {total} '{k}' resources:"),
        None => println!("Partial success: {past} {handled} out of {total} resources:"),
    }
    let head = if verb == "apply" {
        "Hit error(s)"
    } else {
        "Hit error"
    };
    bail!("{head}: {}", go_errs(errs))
}

fn lookup_kind(kind: &str) -> anyhow::Result<&'static KindInfo> {
    KindInfo::lookup(kind).ok_or_else(|| anyhow!("resource type '{kind}' is not supported"))
}

/// A resource carrying only its identity (for delete/get by name).
fn identity(kind: &KindInfo, namespace: &str, name: &str) -> anyhow::Result<AnyResource> {
    let mut meta = serde_json::json!({ "name": name });
    if kind.namespaced && !namespace.is_empty() {
        meta["namespace"] = Value::String(namespace.to_string());
    }
    Ok(AnyResource::from_value(serde_json::json!({
        "apiVersion": calico_model::API_VERSION,
        "kind": kind.kind,
        "metadata": meta,
    }))?)
}

/// Resources named on the command line (`KIND NAME...`) or in `-f`.
fn targets(
    kind: Option<&str>,
    names: &[String],
    filename: Option<&str>,
    recursive: bool,
    skip_empty: bool,
) -> anyhow::Result<(Vec<Doc>, bool)> {
    if let Some(f) = filename {
        return Ok((load_all(f, recursive, skip_empty)?, false));
    }
    let Some(kind) = kind else {
        bail!("No resources specified")
    };
    let info = lookup_kind(kind)?;
    if names.iter().any(String::is_empty) {
        bail!("resource name may not be empty");
    }
    let mut docs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        docs.push(Doc {
            source: "<args>".to_string(),
            index: i + 1,
            result: identity(info, "", n).map_err(|e| e.to_string()),
            k8s: None,
        });
    }
    Ok((docs, true))
}

async fn delete_command(ctx: &Ctx, a: cli::DeleteArgs) -> anyhow::Result<i32> {
    let (docs, from_args) = targets(
        a.kind.as_deref(),
        &a.names,
        a.filename.as_deref(),
        a.recursive,
        a.skip_empty,
    )?;
    if docs.is_empty() {
        if from_args {
            bail!("No resources specified");
        }
        println!("No resources specified");
        return Ok(0);
    }
    let kind = if from_args {
        a.kind
            .as_deref()
            .and_then(KindInfo::lookup)
            .map(|k| k.kind.to_string())
    } else {
        single_kind(docs.iter().map(doc_kind).filter(|k| !k.is_empty()))
    };
    let client = ctx.client().await?;
    let mut handled = 0;
    let mut errs: Vec<(usize, String)> = Vec::new();
    let mut batch = Vec::new();
    let mut batch_index = Vec::new();
    let mut k8s_todo = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        if let Some(k) = d.k8s {
            match k
                .and_then(|mut o| k8s::handle_namespace(&mut o, a.namespace.as_deref()).map(|()| o))
            {
                Ok(o) => k8s_todo.push((i, o)),
                Err(e) => errs.push((i, format!("{}: {e}", d.source))),
            }
            continue;
        }
        let mut r = match d.result {
            Ok(r) => r,
            Err(e) => {
                errs.push((i, format!("{}: {e}", d.source)));
                continue;
            }
        };
        if let Err(e) = handle_namespace(&mut r, a.namespace.as_deref(), false) {
            errs.push((i, e));
            continue;
        }
        let m = r.metadata();
        let rv = (!m.resource_version.is_empty()).then(|| m.resource_version.clone());
        batch.push((r.info(), m.namespace.clone(), m.name.clone(), rv));
        batch_index.push(i);
    }
    for (i, res) in batch_index.into_iter().zip(client.delete_many(batch).await) {
        match res {
            Ok(_) => handled += 1,
            Err(e) if a.skip_not_exists && e.is_not_found() => handled += 1,
            Err(e) => errs.push((i, e.to_string())),
        }
    }
    // Namespaces last: deleting one deletes what is stored in it, which the same input may
    // name too.
    k8s_todo.sort_by_key(|(_, o)| !o.namespaced());
    for (i, o) in k8s_todo {
        match k8s::delete(&client, &o).await {
            Ok(()) => handled += 1,
            Err(k8s::OpError::NotFound(_)) if a.skip_not_exists => handled += 1,
            Err(e) => errs.push((i, e.to_string())),
        }
    }
    errs.sort_by_key(|(i, _)| *i);
    let errs: Vec<String> = errs.into_iter().map(|(_, e)| e).collect();
    if handled > 0 {
        match &kind {
            Some(k) => println!("Successfully deleted {handled} '{k}' resource(s)"),
            None => println!("Successfully deleted {handled} resource(s)"),
        }
    }
    if errs.is_empty() {
        return Ok(0);
    }
    let mut msg = String::new();
    for e in &errs {
        match &kind {
            Some(k) => msg.push_str(&format!("Failed to delete '{k}' resource: {e}\n")),
            None => msg.push_str(&format!("Failed to delete resource: {e}\n")),
        }
    }
    eprint!("{msg}");
    Ok(1)
}

/// What `get` prints for one request: a listing of a kind or one resource.
enum Got {
    List {
        kind: &'static KindInfo,
        items: Vec<AnyResource>,
        revision: i64,
    },
    One(Box<AnyResource>),
}

async fn get_command(ctx: &Ctx, a: cli::GetArgs) -> anyhow::Result<i32> {
    let style = match a.output.as_str() {
        "ps" => Some(TableStyle::Ps),
        "wide" => Some(TableStyle::Wide),
        "yaml" | "yml" | "json" => None,
        other => match other.split_once('=') {
            Some(("custom-columns", "")) => bail!("need to specify at least one column"),
            Some(("custom-columns", cols)) => Some(TableStyle::Custom(
                cols.split(',').map(str::to_string).collect(),
            )),
            Some(("go-template" | "go-template-file", _)) => {
                bail!("output format '{other}' is not supported by this calicoctl")
            }
            _ => bail!("unrecognized output format '{other}'"),
        },
    };
    let print_namespace = a.all_namespaces || a.namespace.is_some();
    if a.all_namespaces && a.namespace.is_some() {
        bail!("cannot use both --namespace and --all-namespaces flags at the same time");
    }
    if a.filename.is_none() && a.kind.is_none() {
        bail!("No resources specified");
    }
    let client = ctx.client().await?;
    let mut got: Vec<Got> = Vec::new();
    let mut errs: Vec<String> = Vec::new();

    if a.filename.is_none() && a.names.is_empty() {
        let info = lookup_kind(a.kind.as_deref().unwrap_or_default())?;
        if !info.namespaced && (a.all_namespaces || a.namespace.is_some()) {
            bail!("Failed to get resources: {} is not namespaced", info.kind);
        }
        let ns = if a.all_namespaces || !info.namespaced {
            None
        } else {
            Some(a.namespace.clone().unwrap_or_else(|| "default".to_string()))
        };
        let list = client
            .list(info, ns.as_deref())
            .await
            .map_err(|e| anyhow!("Failed to get resources: {e}"))?;
        let mut items = list.items;
        if info.kind == "Tier" {
            sort_tiers(&mut items);
        }
        got.push(Got::List {
            kind: info,
            items,
            revision: list.revision,
        });
    } else {
        let (docs, _) = targets(
            a.kind.as_deref(),
            &a.names,
            a.filename.as_deref(),
            a.recursive,
            a.skip_empty,
        )?;
        for d in docs {
            let mut r = match d.result {
                Ok(r) => r,
                Err(e) => {
                    errs.push(format!("{}: {e}", d.source));
                    continue;
                }
            };
            if let Err(e) = handle_namespace(&mut r, a.namespace.as_deref(), a.all_namespaces) {
                bail!("Failed to get resources: {e}");
            }
            let info = r.info();
            let m = r.metadata();
            if info.namespaced && a.all_namespaces {
                // By name across every namespace.
                match client.list(info, None).await {
                    Ok(l) => {
                        let items: Vec<AnyResource> = l
                            .items
                            .into_iter()
                            .filter(|x| x.metadata().name == m.name)
                            .collect();
                        got.push(Got::List {
                            kind: info,
                            items,
                            revision: l.revision,
                        });
                    }
                    Err(e) => errs.push(e.to_string()),
                }
                continue;
            }
            match client.get(info, &m.namespace, &m.name).await {
                Ok(x) => got.push(Got::One(Box::new(x))),
                Err(e) => errs.push(e.to_string()),
            }
        }
    }

    if a.export {
        for g in got.iter_mut() {
            if let Got::One(r) = g {
                let m = r.metadata_mut();
                m.uid.clear();
                m.resource_version.clear();
                m.creation_timestamp = None;
                m.deletion_timestamp = None;
                m.deletion_grace_period_seconds = None;
                m.namespace.clear();
            }
        }
    }

    let mut out = String::new();
    match &style {
        Some(style) => {
            for g in &got {
                let (kind, values): (&KindInfo, Vec<Value>) = match g {
                    Got::List { kind, items, .. } => {
                        (kind, items.iter().map(|r| r.to_value()).collect())
                    }
                    Got::One(r) => (r.info(), vec![r.to_value()]),
                };
                out.push_str(
                    &output::table(kind, &values, style, print_namespace)
                        .map_err(|e| anyhow!(e))?,
                );
            }
        }
        None => {
            let value = if got.len() == 1 {
                got_value(&got[0])
            } else {
                serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": got.iter().map(got_value).collect::<Vec<_>>(),
                })
            };
            if !got.is_empty() {
                if a.output == "json" {
                    out.push_str(&output::to_json(&value));
                    out.push('\n');
                } else {
                    out.push_str(&output::to_yaml(&value));
                }
            }
        }
    }
    print!("{out}");
    if errs.is_empty() {
        Ok(0)
    } else {
        eprintln!("{}", errs.join("\n"));
        Ok(1)
    }
}

/// Tiers are listed by order, unset orders last (stable), as upstream's `get tiers`.
fn sort_tiers(items: &mut [AnyResource]) {
    let order = |r: &AnyResource| r.to_value()["spec"]["order"].as_f64();
    items.sort_by(|a, b| match (order(a), order(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

fn got_value(g: &Got) -> Value {
    match g {
        Got::One(r) => r.to_value(),
        Got::List {
            kind,
            items,
            revision,
        } => serde_json::json!({
            "apiVersion": calico_model::API_VERSION,
            "kind": format!("{}List", kind.kind),
            "metadata": { "resourceVersion": revision.to_string() },
            "items": items.iter().map(|r| r.to_value()).collect::<Vec<_>>(),
        }),
    }
}

fn resolve_ns(info: &KindInfo, ns: Option<&str>) -> anyhow::Result<String> {
    match (info.namespaced, ns) {
        (true, Some(n)) => Ok(n.to_string()),
        (true, None) => Ok("default".to_string()),
        (false, Some(_)) => bail!("{} is not namespaced", info.kind),
        (false, None) => Ok(String::new()),
    }
}

async fn patch_command(ctx: &Ctx, a: cli::PatchArgs) -> anyhow::Result<i32> {
    let info = lookup_kind(&a.kind)?;
    let ns = resolve_ns(info, a.namespace.as_deref())?;
    let patch_value = patch::parse_patch(&a.patch)
        .map_err(|e| anyhow!("Failed to patch '{}' resource: {e}", info.kind))?;
    let client = ctx.client().await?;
    let fail = |e: String| anyhow!("Failed to patch '{}' resource: {e}", info.kind);
    let current = client
        .get(info, &ns, &a.name)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut v = current.to_value();
    match a.patch_type.as_str() {
        "merge" | "strategic" => patch::merge_patch(&mut v, &patch_value),
        "json" => patch::json_patch(&mut v, &patch_value).map_err(fail)?,
        other => bail!("unsupported patch type {other:?} (use strategic, merge or json)"),
    }
    // The patched object keeps the identity and the revision it was read at.
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.insert("name".into(), Value::String(a.name.clone()));
        if info.namespaced {
            m.insert("namespace".into(), Value::String(ns.clone()));
        }
        m.insert(
            "resourceVersion".into(),
            Value::String(current.metadata().resource_version.clone()),
        );
    }
    let patched = AnyResource::from_value(v).map_err(|e| fail(e.to_string()))?;
    client
        .update(patched)
        .await
        .map_err(|e| fail(e.to_string()))?;
    println!("Successfully patched 1 '{}' resource", info.kind);
    Ok(0)
}

async fn label_command(ctx: &Ctx, a: cli::LabelArgs) -> anyhow::Result<i32> {
    let (kind, name) = (a.kind.as_str(), a.name.as_str());
    let info = lookup_kind(kind)?;
    let ns = resolve_ns(info, a.namespace.as_deref())?;
    let (key, value) = if a.remove {
        (a.label.clone(), String::new())
    } else {
        let parts: Vec<&str> = a.label.split('=').collect();
        if parts.len() != 2 {
            bail!("invalid label {}", a.label);
        }
        (parts[0].to_string(), parts[1].to_string())
    };
    let client = ctx.client().await?;
    // Retry on a concurrent update so the label is never silently lost.
    for _ in 0..5 {
        let mut r = client
            .get(info, &ns, name)
            .await
            .map_err(|e| anyhow!("failed to get {kind} {name}, error {e}"))?;
        let labels = &mut r.metadata_mut().labels;
        let mut overwritten = false;
        if a.remove {
            if labels.remove(&key).is_none() {
                bail!("cannot remove label of {kind} {name}, key {key} does not exist");
            }
        } else if let Some(old) = labels.get(&key) {
            if a.overwrite || *old == value {
                labels.insert(key.clone(), value.clone());
                overwritten = true;
            } else {
                bail!(
                    "failed to update label of {kind} {name}, key {key} is already present. please use '--overwrite' to set a new value."
                );
            }
        } else {
            labels.insert(key.clone(), value.clone());
        }
        match client.update(r).await {
            Ok(_) => {
                if a.remove {
                    println!("Successfully removed label {key} from {kind} {name}");
                } else if overwritten {
                    println!("Successfully updated label {key} on {kind} {name}");
                } else {
                    println!("Successfully set label {key} on {kind} {name}");
                }
                return Ok(0);
            }
            Err(ClientError::Conflict { .. }) => continue,
            Err(e) => bail!("failed to update {kind} {name}, label not changed: {e}"),
        }
    }
    bail!("failed to update {kind} {name}, label not changed: the resource kept changing")
}

/// Validates offline; prints one line per resource and the upstream-style summary. Any invalid
/// document (or unreadable file) makes the exit code non-zero, without hiding the others.
fn validate_command(filename: &str, recursive: bool, skip_empty: bool) -> anyhow::Result<i32> {
    let files = input::expand(filename, recursive)
        .map_err(|e| anyhow!("failed to execute command: {e}"))?;
    let mut total = 0usize;
    let mut valid = 0usize;
    let mut errs: Vec<String> = Vec::new();
    let mut kinds: Vec<&'static str> = Vec::new();
    for f in &files {
        let docs = match input::load_file(f) {
            Ok(d) => d,
            Err(e) => {
                total += 1;
                println!("{}: invalid: {e}", e.source);
                errs.push(e.to_string());
                continue;
            }
        };
        if docs.is_empty() && !skip_empty {
            total += 1;
            let msg = format!("No resources specified in file {}", f.display());
            println!("{}: invalid: {msg}", f.display());
            errs.push(msg);
        }
        for d in docs {
            total += 1;
            let origin = d.origin();
            if let Some(k) = d.k8s {
                match k.and_then(|mut o| k8s::validate(&mut o).map(|()| o)) {
                    Ok(o) => {
                        valid += 1;
                        kinds.push(o.kind());
                        println!("{origin}: {}: valid", o.id());
                    }
                    Err(e) => {
                        println!("{origin}: invalid: {e}");
                        errs.push(format!("{origin}: {e}"));
                    }
                }
                continue;
            }
            let checked = d.result.and_then(|mut r| {
                r.apply_defaults();
                r.validate().map(|()| r).map_err(|e| e.to_string())
            });
            match checked {
                Ok(r) => {
                    valid += 1;
                    kinds.push(r.kind());
                    println!("{origin}: {}: valid", r.id());
                }
                Err(e) => {
                    println!("{origin}: invalid: {e}");
                    errs.push(format!("{origin}: {e}"));
                }
            }
        }
    }
    let kind = if errs.is_empty() {
        single_kind(kinds.into_iter())
    } else {
        None
    };
    if total == 0 {
        println!("No resources specified");
        return Ok(0);
    }
    if errs.is_empty() {
        match kind {
            Some(k) => println!("Successfully validated {valid} '{k}' resource(s)"),
            None => println!("Successfully validated {valid} resource(s)"),
        }
        return Ok(0);
    }
    if valid > 0 {
        println!("Partial success: validated {valid} out of {total} resources:");
    }
    if valid == 0 && total == 1 {
        eprintln!("failed to validate resource: {}", go_errs(&errs));
    } else if valid == 0 {
        eprintln!("failed to validate any resources: {}", go_errs(&errs));
    } else {
        eprintln!("hit error(s): {}", go_errs(&errs));
    }
    Ok(1)
}

async fn version_command(ctx: &Ctx, client_only: bool) -> anyhow::Result<i32> {
    println!("Client Version:    {VERSION}");
    println!(
        "Git commit:        {}",
        option_env!("CALICO_GIT_COMMIT").unwrap_or("unknown")
    );
    if client_only {
        return Ok(0);
    }
    let cluster = async {
        let cfg = DatastoreConfig::load(ctx.config.as_deref(), &ctx.env)?;
        let kv = connect(&cfg).await?;
        let client = Client::new(kv);
        let info = KindInfo::lookup("ClusterInformation").ok_or_else(|| anyhow!("unknown kind"))?;
        let ci = client.get(info, "", "default").await?;
        anyhow::Ok(ci.to_value())
    }
    .await;
    match cluster {
        Ok(v) => {
            let field = |f: &str| {
                v.get("spec")
                    .and_then(|s| s.get(f))
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            println!("Cluster Version:   {}", field("calicoVersion"));
            println!("Cluster Type:      {}", field("clusterType"));
        }
        Err(e) => println!("Unable to retrieve Cluster Version or Type: {e:#}"),
    }
    Ok(0)
}

fn selector_command(cmd: SelectorCommand) -> anyhow::Result<i32> {
    let parse = |s: &str| match calico_model::selector::parse(s) {
        Ok(sel) => Ok(sel),
        Err(e) => {
            eprintln!(
                "invalid selector {:?}: {} at column {}\n  {}\n  {}^",
                e.input,
                e.message,
                e.column,
                s,
                " ".repeat(s[..e.column.min(s.len())].chars().count())
            );
            Err(())
        }
    };
    match cmd {
        SelectorCommand::Eval { selector, labels } => {
            let v: Value = serde_json::from_str(&labels)
                .map_err(|e| anyhow!("--labels: not a JSON object: {e}"))?;
            let obj = v
                .as_object()
                .ok_or_else(|| anyhow!("--labels: must be a JSON object"))?;
            let mut map = BTreeMap::new();
            for (k, v) in obj {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(_) | Value::Number(_) => v.to_string(),
                    other => bail!("--labels: value of {k:?} must be a string, got {other}"),
                };
                map.insert(k.clone(), s);
            }
            let Ok(sel) = parse(&selector) else {
                return Ok(2);
            };
            println!("{}", sel.evaluate(&map));
            Ok(0)
        }
        SelectorCommand::Parse { selector } => {
            let Ok(sel) = parse(&selector) else {
                return Ok(2);
            };
            println!("{sel}");
            println!("{}", sel.unique_id());
            Ok(0)
        }
    }
}

/// A YAML stream of `count` GlobalNetworkPolicies with realistic specs, for the apply
/// benchmark. `generation` changes every policy's order so a second file updates them all.
pub fn bench_policies(count: usize, generation: usize) -> String {
    let mut s = String::with_capacity(count * 400);
    for i in 0..count {
        s.push_str(&format!(
            "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: bench-{i:05}\n  labels:\n    bench: \"true\"\nspec:\n  order: {order}\n  selector: app == 'bench-{app}'\n  types:\n  - Ingress\n  ingress:\n  - action: Allow\n    protocol: TCP\n    source:\n      selector: role == 'client'\n    destination:\n      ports:\n      - 80\n      - 443\n",
            order = i + generation * 10_000,
            app = i % 50,
        ));
    }
    s
}
